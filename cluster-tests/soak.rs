//! The soak: three gateways of one local cloud under steady load for a
//! while, one of them restarted again and again, and the one that is not
//! watched for memory that keeps growing. An extended service runs on
//! it throughout; no gateway may log an error.
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
    // floor-average keeps every floor's readings of its window: 200 floors
    // × 60 s at 10 readings/s would outgrow its 4 MiB limit (and the host
    // rightly stops it, with an error); 10 s fit.
    let manifest =
        testkit::manifest("floor-average").replace("window-seconds = 60", "window-seconds = 10");
    assert!(manifest.contains("window-seconds = 10"));
    let published = testkit::publish(
        &members[0].gateway,
        &manifest,
        &testkit::component("floor-average"),
    );
    assert_eq!(
        published.status,
        201,
        "{}",
        String::from_utf8_lossy(&published.body)
    );

    // An application posts numbered readings to gw-a, which is never
    // restarted, and reads them back from every gateway at the end.
    let id = "gw-a.http.soak.count";
    let base = (testkit::now_secs() - 1800.0).floor();
    let mut acknowledged = Vec::new();
    let mut rss_mib = Vec::new();
    // The store's share of it, by part (fogbank_store_memory_bytes).
    let parts = ["memtables", "table_readers", "block_cache"];
    let mut store_mib: Vec<Vec<(f64, f64)>> = vec![Vec::new(); parts.len()];
    // The heap: in use, and held beyond it (fogbank_heap_bytes), which
    // tells something kept from the allocator keeping it.
    let heap_states = ["in_use", "free"];
    let mut heap_mib: Vec<Vec<(f64, f64)>> = vec![Vec::new(); heap_states.len()];
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
            let at = started.elapsed().as_secs_f64();
            rss_mib.push((at, status_kib(pid, "VmRSS:") as f64 / 1024.0));
            for (part, samples) in parts.iter().zip(&mut store_mib) {
                let bytes =
                    members[0].metric(&format!("fogbank_store_memory_bytes{{part=\"{part}\"}}"));
                samples.push((at, bytes / f64::from(1 << 20)));
            }
            for (state, samples) in heap_states.iter().zip(&mut heap_mib) {
                let bytes = members[0].metric(&format!("fogbank_heap_bytes{{state=\"{state}\"}}"));
                samples.push((at, bytes / f64::from(1 << 20)));
            }
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

    // Memory. The store's write buffers fill and flush (a saw of up to
    // 16 MiB) and its block cache fills to its size as the history grows:
    // both bounded by configuration, both checked against their bounds.
    // The rest of the resident size must be flat: after the warm-up (the
    // first quarter), its median over the last quarter no more than 10 %
    // above its median over the second (2 MiB to spare in a short run).
    let chart = Chart {
        title: "Soak: resident memory of the gateway that is never restarted",
        x: "seconds",
        y: "MiB",
        x_scale: "linear",
    };
    record_series(&chart, "gw-a (simulator, REST writes)", &rss_mib);
    for (part, samples) in parts.iter().zip(&store_mib) {
        record_series(&chart, &format!("gw-a store: {part}"), samples);
    }
    for (state, samples) in heap_states.iter().zip(&heap_mib) {
        record_series(&chart, &format!("gw-a heap: {state}"), samples);
    }
    let store_total: Vec<f64> = (0..rss_mib.len())
        .map(|i| store_mib.iter().map(|part| part[i].1).sum())
        .collect();
    let outside_store: Vec<f64> = rss_mib
        .iter()
        .zip(&store_total)
        .map(|(rss, store)| rss.1 - store)
        .collect();
    record_series(
        &chart,
        "gw-a outside the store",
        &rss_mib
            .iter()
            .zip(&outside_store)
            .map(|(rss, rest)| (rss.0, *rest))
            .collect::<Vec<_>>(),
    );
    let quarter = outside_store.len() / 4;
    let median = |samples: &[f64]| {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let (settled, last) = (
        median(&outside_store[quarter..2 * quarter]),
        median(&outside_store[outside_store.len() - quarter..]),
    );
    // 2 × 16 MiB for the history's write buffers, 2 × 1 MiB for each of
    // the six small column families; the block cache's 8 MiB.
    let (memtables_bound, cache_bound) = (44.0, 8.0);
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
    let heap_quarters: Vec<String> = heap_states
        .iter()
        .zip(&heap_mib)
        .map(|(state, samples)| {
            let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
            format!(
                "heap {state} {:.1} -> {:.1} MiB",
                median(&values[quarter..2 * quarter]),
                median(&values[values.len() - quarter..])
            )
        })
        .collect();
    eprintln!(
        "soak memory: outside the store {settled:.1} MiB after the warm-up, {last:.1} MiB at the end ({}); RSS at most {:.1} MiB",
        heap_quarters.join(", "),
        rss_mib.iter().map(|s| s.1).fold(0.0, f64::max)
    );
    // A short run (the suite's) gets 2 MiB for noise; a long one none.
    let slack = if secs < 300 { 2.0 } else { 0.0 };
    assert!(
        last <= settled * 1.10 + slack,
        "memory outside the store grew from {settled:.1} to {last:.1} MiB ({}): {outside_store:?}",
        heap_quarters.join(", ")
    );
    for (part, bound) in [(0, memtables_bound), (2, cache_bound)] {
        let peak = store_mib[part].iter().map(|s| s.1).fold(0.0, f64::max);
        assert!(
            peak <= bound + 0.5,
            "the store's {} reached {peak:.1} MiB, over its {bound} MiB",
            parts[part]
        );
    }

    // The service ran throughout: running, and its average is fresh.
    let service = members[0].get_json("/api/v1/services/floor-average");
    assert_eq!(service["state"], "running", "{service}");
    let average = members[0]
        .gateway
        .get("/api/v1/things/gw-a.service.floor-average.floor-1/reading")
        .json();
    let age = testkit::now_secs() - average[0]["t"].as_f64().unwrap_or(0.0);
    assert!(age < 10.0, "the floor average is {age:.0} s old: {average}");

    for member in &members {
        let errors = member.logged_errors();
        assert!(
            errors.is_empty(),
            "{} logged {} errors: {:#?}",
            member.id,
            errors.len(),
            &errors[..errors.len().min(20)]
        );
    }
}
