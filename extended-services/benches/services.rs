//! The Service layer's costs, on this machine, in one run:
//!
//! - dispatch: one reading handed to a service's `on-reading` (the host's
//!   share: lowering the reading, the CPU deadline, the call);
//! - instantiation of a service from the pool (`init` included);
//! - resident memory per idle service, with 100 installed;
//! - readings per second through a chain of two services (sensor →
//!   service A → its output → service B → its output), each reading
//!   stored by the hub at every step.
//!
//! Beside them, as the reference measured in the same run: one reading
//! ingested by the hub with no service listening.
//!
//! `cargo bench -p fogbank-services --bench services`; with
//! `FOGBANK_GUESTS_DIR` set (./scripts/guests) the real Rust example
//! `floor-average` is measured too, and the three languages side by side
//! (Rust `floor-average`, C `occupancy-light`, Python `rolling-stats`):
//! component size, compilation (a publish on a gateway that never saw the
//! component), instantiation, dispatch, and memory per running service.

#[path = "../src/fixtures.rs"]
mod fixtures;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fogbank_services::Services;
use fogbank_taas::{Hub, HubOptions, Kind, Reading, ThingId, ThingReading, ThingService, Value};
use fogbank_testkit as testkit;
use testkit::bench::{Better::*, Figure};

const READINGS: usize = 200_000;
const CHAIN: usize = 50_000;

fn manifest(name: &str, subscribe_id: &str) -> String {
    format!(
        r#"name = "{name}"
version = "1"
subscriptions = [{{ id = "{subscribe_id}" }}]
[[outputs]]
name = "out"
type = "level"
[limits]
publish-per-second = 10000000
"#
    )
}

fn reading(hub: &Hub, thing: &ThingId, value: f64) -> ThingReading {
    ThingReading {
        thing: thing.clone(),
        reading: Reading {
            time: hub.arrival_time(),
            value: Value::Number(value),
        },
    }
}

fn resident_kib() -> u64 {
    testkit::bench::status_kib(std::process::id(), "VmRSS:")
}

/// Waits for the services, looking often: the chain is kept fed by it.
fn wait(what: &str, done: impl FnMut() -> bool) {
    testkit::wait(
        what,
        Duration::from_secs(120),
        Duration::from_micros(200),
        done,
    );
}

const AREA: &str = "Extended services (WebAssembly)";

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
    let sensor = ThingId::parse("gw.bench.s1.level").unwrap();
    hub.announce(ThingService::new(
        sensor.clone(),
        Kind::Sensor,
        "level",
        None,
    ))
    .unwrap();
    let services = Services::open(hub.clone(), Some(&dir.path().join("cache"))).unwrap();
    println!(
        "Service layer on {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // The reference: the hub alone.
    let started = Instant::now();
    for n in 0..20_000 {
        hub.ingest(vec![reading(&hub, &sensor, n as f64)]).unwrap();
    }
    let ingest = started.elapsed() / 20_000;
    println!("reference  hub ingest of one reading (RocksDB WAL, bus): {ingest:?}");

    // Dispatch and instantiation on a component that does nothing.
    let noop = fixtures::component("", "", "");
    let readings: Vec<ThingReading> = (0..READINGS)
        .map(|n| reading(&hub, &sensor, n as f64))
        .collect();
    let probe = services
        .probe(
            &manifest("noop", sensor.as_str()),
            noop.as_bytes(),
            2_000,
            &readings,
        )
        .unwrap();
    println!(
        "dispatch   one reading into on-reading (WAT no-op guest): {:?} (target 2 µs; {:.2}× the hub's ingest)",
        probe.dispatch,
        probe.dispatch.as_secs_f64() / ingest.as_secs_f64()
    );
    println!(
        "instantiate from the pool, init included (WAT guest): {:?} (target 50 µs)",
        probe.instantiate
    );
    const REFERENCE: &str = "the hub's ingest of one reading (WAL, bus)";
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    Figure::new(
        AREA,
        "one reading into on-reading, WAT no-op guest",
        micros(probe.dispatch),
        "µs",
        Lower,
    )
    .against(REFERENCE, micros(ingest))
    .record();
    Figure::new(
        AREA,
        "instantiation from the pool, init included, WAT guest",
        micros(probe.instantiate),
        "µs",
        Lower,
    )
    .record();
    let guests = std::env::var_os("FOGBANK_GUESTS_DIR").map(std::path::PathBuf::from);
    let real = guests.as_ref().and_then(|dir| {
        Some((
            std::fs::read_to_string(dir.join("floor-average.toml")).ok()?,
            std::fs::read(dir.join("floor-average.wasm")).ok()?,
        ))
    });
    if let Some((manifest_text, component)) = &real {
        let probe = services
            .probe(manifest_text, component, 2_000, &readings[..20_000])
            .unwrap();
        println!(
            "dispatch   one reading into on-reading (Rust floor-average): {:?}",
            probe.dispatch
        );
        println!(
            "instantiate from the pool, init included (Rust floor-average, {} KiB): {:?}",
            component.len() >> 10,
            probe.instantiate
        );
    }

    // Resident memory of 100 idle services.
    let before = resident_kib();
    let (label, manifest_text, component): (&str, String, Vec<u8>) = match &real {
        Some((m, c)) => ("Rust floor-average", m.clone(), c.clone()),
        None => (
            "WAT no-op",
            manifest("idle", "gw.none.x.y"),
            noop.clone().into_bytes(),
        ),
    };
    for n in 0..100 {
        let named = manifest_text.replacen(
            &format!(
                "name = \"{}\"",
                if real.is_some() {
                    "floor-average"
                } else {
                    "idle"
                }
            ),
            &format!("name = \"idle-{n}\""),
            1,
        );
        services.publish(&named, &component).unwrap();
    }
    wait("100 services running", || {
        services
            .list()
            .iter()
            .filter(|s| s.state == fogbank_services::State::Running)
            .count()
            == 100
    });
    std::thread::sleep(Duration::from_millis(500));
    let per_service = (resident_kib().saturating_sub(before)) as f64 / 100.0;
    Figure::new(
        AREA,
        &format!("resident per idle service, 100 installed, {label}"),
        per_service,
        "KiB",
        Lower,
    )
    .record();
    println!(
        "memory     resident per idle service, 100 installed ({label}): {per_service:.0} KiB (target 1024 KiB)"
    );
    for n in 0..100 {
        services.remove(&format!("idle-{n}")).unwrap();
    }

    // A chain of two services.
    let echo = fixtures::component("", fixtures::PUBLISH_READING_VALUE, "");
    services
        .publish(&manifest("a", sensor.as_str()), echo.as_bytes())
        .unwrap();
    services
        .publish(&manifest("b", "gw.service.a.out"), echo.as_bytes())
        .unwrap();
    wait("the chain running", || {
        services
            .list()
            .iter()
            .all(|s| s.state == fogbank_services::State::Running)
    });
    let published = |name: &str| services.info(name).map(|i| i.published).unwrap_or(0);
    let started = Instant::now();
    let mut fed = 0;
    while fed < CHAIN {
        // Keep within the services' queues: a full queue drops readings.
        wait("the chain to keep up", || {
            fed - published("b") as usize <= 512
        });
        let batch: Vec<ThingReading> = (0..100)
            .map(|n| reading(&hub, &sensor, (fed + n) as f64))
            .collect();
        hub.ingest(batch).unwrap();
        fed += 100;
    }
    let until = Instant::now() + Duration::from_secs(60);
    while published("b") as usize != CHAIN && Instant::now() < until {
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = started.elapsed();
    let chain: Vec<_> = services.list();
    for s in &chain {
        assert_eq!(s.published as usize, CHAIN, "{s:?}");
    }
    let dropped: u64 = chain.iter().map(|s| s.dropped).sum();
    println!(
        "chain      {CHAIN} readings through two services: {:.0} readings/s ({} dropped)",
        CHAIN as f64 / elapsed.as_secs_f64(),
        dropped
    );
    Figure::new(
        AREA,
        "readings/s through a chain of two services",
        CHAIN as f64 / elapsed.as_secs_f64(),
        "readings/s",
        Higher,
    )
    .record();
    let last = hub
        .latest(&ThingId::parse("gw.service.b.out").unwrap())
        .flatten();
    assert_eq!(
        last.map(|r| r.value),
        Some(Value::Number((CHAIN - 1) as f64))
    );
    drop(services);
    let _ = Arc::strong_count(&hub);

    if let Some(dir) = &guests {
        println!(
            "languages  (size; publish with compilation; instantiate; dispatch; resident per running service, 10 of one component)"
        );
        for (language, name) in [
            ("Rust", "floor-average"),
            ("C", "occupancy-light"),
            ("Python", "rolling-stats"),
        ] {
            language_figures(language, name, dir, &readings[..2_000]);
        }
    }
}

/// One example service's costs, on a gateway of its own.
fn language_figures(language: &str, name: &str, dir: &std::path::Path, readings: &[ThingReading]) {
    let (Ok(manifest_text), Ok(component)) = (
        std::fs::read_to_string(dir.join(format!("{name}.toml"))),
        std::fs::read(dir.join(format!("{name}.wasm"))),
    ) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let hub = Hub::open("gw", data.path(), HubOptions::default()).unwrap();
    let services = Services::open(hub.clone(), Some(&data.path().join("cache"))).unwrap();
    let before = resident_kib();
    let started = Instant::now();
    services.publish(&manifest_text, &component).unwrap();
    let publish = started.elapsed();
    let after_publish = resident_kib();
    let probe = services
        .probe(&manifest_text, &component, 20, readings)
        .unwrap();
    let running = |n: usize| {
        wait(&format!("{n} {name} running"), || {
            services
                .list()
                .iter()
                .filter(|s| s.state == fogbank_services::State::Running)
                .count()
                == n
        })
    };
    running(1);
    std::thread::sleep(Duration::from_millis(300));
    let one = resident_kib();
    for n in 1..10 {
        let named = manifest_text.replacen(
            &format!("name = \"{name}\""),
            &format!("name = \"{name}-{n}\""),
            1,
        );
        services.publish(&named, &component).unwrap();
    }
    running(10);
    std::thread::sleep(Duration::from_millis(500));
    let per_service = resident_kib().saturating_sub(one) as f64 / 9.0;
    let what = format!("{language} {name}");
    Figure::new(
        AREA,
        &format!("{what}: publish, compilation included"),
        publish.as_secs_f64() * 1e3,
        "ms",
        Lower,
    )
    .record();
    Figure::new(
        AREA,
        &format!("{what}: instantiation, init included"),
        probe.instantiate.as_secs_f64() * 1e6,
        "µs",
        Lower,
    )
    .record();
    Figure::new(
        AREA,
        &format!("{what}: one reading into on-reading"),
        probe.dispatch.as_secs_f64() * 1e6,
        "µs",
        Lower,
    )
    .record();
    Figure::new(
        AREA,
        &format!("{what}: resident per further running service"),
        per_service / 1024.0,
        "MiB",
        Lower,
    )
    .record();
    println!(
        "{language:<7} {name}: {} KiB; publish {publish:.2?} (resident +{} MiB after it, the compiled code and the first instance); instantiate {:.2?}; dispatch {:.2?}; {:.1} MiB per running service; {} compilation(s)",
        component.len() >> 10,
        after_publish.saturating_sub(before) >> 10,
        probe.instantiate,
        probe.dispatch,
        per_service / 1024.0,
        services.compilations()
    );
    services.shutdown();
}
