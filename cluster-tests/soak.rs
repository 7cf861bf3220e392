//! The soak: three gateways of one local cloud under steady load for a
//! while, one of them restarted again and again, and the one that is not
//! watched for memory that keeps growing.
//!
//! The suite runs it short (`FOGBANK_SOAK_SECS`, 40 s); `scripts/soak`
//! runs it for ten minutes with the simulator at 10,000 readings/s and a
//! restart every two minutes, and plots the resident memory it sampled.
//!
//! Settings: FOGBANK_SOAK_SECS (40), FOGBANK_SOAK_RESTART_SECS (12),
//! FOGBANK_SOAK_FLOORS (simulated floors at gw-a, 5 thing services each,
//! a reading each every 100 ms: 20 floors are 1,000 readings/s),
//! FOGBANK_SOAK_SAMPLE_SECS (5).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fogbank_testkit::bench::{Chart, record_series, setting, status_kib};
use fogbank_testkit::{self as testkit, acquainted, cluster_key, start_cloud};
use serde_json::json;

#[test]
fn three_gateways_under_load_with_restarts_keep_every_reading_and_a_flat_memory() {
    let secs = setting::<u64>("FOGBANK_SOAK_SECS", 40, 40);
    let restart_every = Duration::from_secs(setting::<u64>("FOGBANK_SOAK_RESTART_SECS", 12, 12));
    let floors = setting::<u64>("FOGBANK_SOAK_FLOORS", 20, 20);
    let sample_every = Duration::from_secs(setting::<u64>("FOGBANK_SOAK_SAMPLE_SECS", 5, 5));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("campus.toml");
    // Buildings of at most 255 floors, 5 thing services a floor.
    let buildings = floors.div_ceil(200).max(1);
    std::fs::write(
        &config,
        format!(
            "[sim]\nenabled = true\ninterval_ms = 100\nbuildings = {buildings}\nfloors = {}\n",
            floors.div_ceil(buildings)
        ),
    )
    .unwrap();
    let config_path = config.to_str().unwrap().to_owned();
    let mut members = start_cloud(
        dir.path(),
        &cluster_key(),
        &["gw-a", "gw-b", "gw-c"],
        |id| match id {
            "gw-a" => (vec!["--config".into(), config_path.clone()], Vec::new()),
            _ => (Vec::new(), Vec::new()),
        },
    );
    acquainted(&members, Duration::from_secs(20));

    // An application posts numbered readings to gw-a, which is never
    // restarted, and reads them back from every gateway at the end.
    let id = "gw-a.http.soak.count";
    let base = (testkit::now_secs() - 1800.0).floor();
    let mut acknowledged = Vec::new();
    let mut rss_mib = Vec::new();
    let pid = members[0].gateway.child.id();
    let started = Instant::now();
    let (mut next_restart, mut next_sample) = (restart_every, Duration::ZERO);
    let mut restarted = 0;
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let pack = json!([{"t": base + n as f64 * 0.001, "v": n}]);
        if members[0]
            .gateway
            .post_senml(&format!("/api/v1/things/{id}/readings"), &pack)
            .status
            == 200
        {
            acknowledged.push(n);
        }
        n += 1;
        if started.elapsed() >= next_sample {
            rss_mib.push((
                started.elapsed().as_secs_f64(),
                status_kib(pid, "VmRSS:") as f64 / 1024.0,
            ));
            next_sample += sample_every;
        }
        if started.elapsed() >= next_restart {
            // gw-b and gw-c in turn: kill -9, then back on the same store.
            let member = &mut members[1 + restarted % 2];
            member.kill();
            member.restart();
            restarted += 1;
            next_restart += restart_every;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    acquainted(&members, Duration::from_secs(20));

    let simulated = members[0].metric("fogbank_readings_ingested_total");
    eprintln!(
        "soak: {secs} s, {restarted} restarts, {} acknowledged posts, {simulated} readings ingested at gw-a; RSS (s, MiB): {rss_mib:?}",
        acknowledged.len()
    );

    // Memory: after the first quarter (the warm-up: memtables and the block
    // cache filling), no sample is more than 10 % above the first one, with
    // 2 MiB to spare for a short run's noise.
    let chart = Chart {
        title: "Soak: resident memory of the gateway that is never restarted",
        x: "seconds",
        y: "MiB",
        x_scale: "linear",
    };
    record_series(&chart, "gw-a (simulator, REST writes)", &rss_mib);
    let warm = rss_mib.len() / 4;
    let after_warm_up = rss_mib[warm..].iter().map(|s| s.1).collect::<Vec<_>>();
    let (first, peak) = (
        after_warm_up[0],
        after_warm_up.iter().copied().fold(0.0, f64::max),
    );
    // Every acknowledged reading, once, at gw-a and through the others.
    for member in &members {
        let values = member
            .gateway
            .history_values(id, base, testkit::now_secs() + 60.0);
        let distinct: BTreeSet<u64> = values.iter().map(|v| *v as u64).collect();
        assert_eq!(
            distinct.len(),
            values.len(),
            "no reading twice at {}",
            member.id
        );
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|n| !distinct.contains(n))
            .collect();
        assert!(
            lost.is_empty(),
            "{} lost at {}: {:?}",
            lost.len(),
            member.id,
            &lost[..lost.len().min(20)]
        );
    }
    assert!(
        peak <= first * 1.10 + 2.0,
        "RSS grew from {first:.1} to {peak:.1} MiB after the warm-up: {rss_mib:?}"
    );
}
