//! The host against components written in WAT: well-behaved ones for the
//! lifecycle and the grants, hostile ones for the sandbox. No guest
//! toolchain is needed; the examples built from Rust and C are exercised
//! by the node's integration tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fogbank_taas::{Hub, HubOptions, Kind, ThingId, ThingReading, ThingService, Value};

use super::*;
use crate::fixtures::*;

/// A manifest subscribing to temperatures in `campus/a`, with one output
/// "out"; `extra` is TOML that goes before the tables.
fn manifest(name: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"
version = "1.0.0"
subscriptions = [{{ type = "temperature", location = "campus/a" }}]
{extra}
[[outputs]]
name = "out"
type = "temperature"
unit = "Cel"
location = "campus/svc"
"#
    )
}

struct Gateway {
    _dir: tempfile::TempDir,
    hub: Arc<Hub>,
    services: Arc<Services>,
    sensor: ThingId,
}

fn gateway() -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
    let sensor = ThingId::parse("gw.sim.t1.temperature").unwrap();
    hub.announce(
        ThingService::new(sensor.clone(), Kind::Sensor, "temperature", Some("Cel")).at("campus/a"),
    )
    .unwrap();
    let services = Services::open(hub.clone(), Some(&dir.path().join("cache"))).unwrap();
    Gateway {
        _dir: dir,
        hub,
        services,
        sensor,
    }
}

impl Gateway {
    fn feed(&self, value: f64) {
        self.hub
            .ingest(vec![ThingReading {
                thing: self.sensor.clone(),
                reading: fogbank_taas::Reading {
                    time: self.hub.arrival_time(),
                    value: Value::Number(value),
                },
            }])
            .unwrap();
    }

    fn output(&self, name: &str) -> Option<Value> {
        let id = ThingId::parse(&format!("gw.service.{name}.out")).unwrap();
        self.hub.latest(&id).flatten().map(|r| r.value)
    }
}

/// Polls until `check` holds; the tests wait on behaviour, not on time.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out waiting for {what}");
}

fn echo() -> String {
    component(LOG_HELLO, PUBLISH_READING_VALUE, "")
}

#[test]
fn a_service_turns_readings_into_readings_of_its_output() {
    let gw = gateway();
    let published = gw
        .services
        .publish(&manifest("echo", ""), echo().as_bytes())
        .unwrap();
    assert!(published.created);
    assert_eq!(published.info.outputs, ["gw.service.echo.out"]);
    eventually("running", || {
        gw.services.info("echo").unwrap().state == State::Running
    });
    let output = gw
        .hub
        .thing(&ThingId::parse("gw.service.echo.out").unwrap())
        .unwrap();
    assert!(output.available);
    assert_eq!(output.location.as_str(), "campus/svc");
    gw.feed(21.5);
    eventually("the output", || {
        gw.output("echo") == Some(Value::Number(21.5))
    });
    let info = gw.services.info("echo").unwrap();
    assert!(info.calls >= 2, "init and one reading: {info:?}");
    assert_eq!(info.published, 1);
    assert!(info.memory_bytes >= 64 << 10);
    let logs = gw.services.logs("echo").unwrap();
    assert!(logs.iter().any(|l| l.message == "hello"), "{logs:?}");
}

#[test]
fn a_reading_after_the_start_reaches_the_service_however_late_its_feeder_first_runs() {
    let gw = gateway();
    let component = echo();
    let digest = engine::digest(component.as_bytes());
    let pre = gw.services.prepare(&digest, component.as_bytes()).unwrap();
    let manifest = Manifest::parse(&manifest("echo", "")).unwrap();
    let shared = Arc::new(crate::shared::Shared::new(manifest, digest, "gw".into()));
    for output in crate::hosting::output_things(&shared, true).unwrap() {
        gw.hub.announce(output).unwrap();
    }
    // A runtime nobody drives yet: the feeder task is not polled until
    // the reading has gone by.
    let stalled = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let worker = Worker::start(
        shared.clone(),
        pre,
        gw.hub.clone(),
        stalled.handle().clone(),
    )
    .unwrap();
    eventually("running", || shared.status().state == State::Running);
    gw.feed(21.5);
    stalled.block_on(async {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while gw.output("echo") != Some(Value::Number(21.5)) && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert_eq!(gw.output("echo"), Some(Value::Number(21.5)));
    worker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn requests_reach_on_request() {
    let gw = gateway();
    gw.services
        .publish(&manifest("echo", ""), echo().as_bytes())
        .unwrap();
    let response = gw
        .services
        .call("echo", "POST", "/x", b"ping".to_vec())
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.content_type, "hello");
    assert_eq!(response.body, b"ping");
    assert!(matches!(
        gw.services.call("nobody", "GET", "/", vec![]).await,
        Err(ServiceError::Unknown(_))
    ));
}

#[test]
fn a_component_that_does_not_fit_the_world_is_refused_whole() {
    let gw = gateway();
    let not_wasm = gw.services.publish(&manifest("x", ""), b"hello");
    assert!(
        matches!(&not_wasm, Err(ServiceError::Invalid(m)) if m.contains("not a WebAssembly component")),
        "{not_wasm:?}"
    );
    let missing_exports = gw.services.publish(&manifest("x", ""), b"(component)");
    assert!(
        matches!(&missing_exports, Err(ServiceError::Invalid(m)) if m.contains("init")),
        "{missing_exports:?}"
    );
    let foreign_import = gw.services.publish(
        &manifest("x", ""),
        br#"(component (import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func)))))"#,
    );
    assert!(
        matches!(&foreign_import, Err(ServiceError::Invalid(m)) if m.contains("wasi:http")),
        "{foreign_import:?}"
    );
    let bad_manifest = gw.services.publish("name = 1", echo().as_bytes());
    assert!(matches!(bad_manifest, Err(ServiceError::Manifest(_))));
    assert!(gw.services.list().is_empty());
    assert!(gw.hub.store().load_services().unwrap().is_empty());
}

#[test]
fn services_of_one_component_share_its_compilation() {
    let gw = gateway();
    let echo = echo();
    for name in ["one", "two", "three"] {
        gw.services
            .publish(&manifest(name, ""), echo.as_bytes())
            .unwrap();
    }
    assert_eq!(gw.services.compilations(), 1);
    gw.services
        .publish(&manifest("four", ""), component("", "", "").as_bytes())
        .unwrap();
    assert_eq!(gw.services.compilations(), 2);
}

#[test]
fn the_instance_pool_takes_a_python_sized_component_and_names_its_limit() {
    let gw = gateway();
    // componentize-py's components hold ~40 core instances.
    let python_sized = with_core_instances(&echo(), 40);
    gw.services
        .publish(&manifest("py", ""), python_sized.as_bytes())
        .unwrap();
    let too_many = with_core_instances(
        &echo(),
        crate::engine::MAX_CORE_INSTANCES_PER_COMPONENT as usize,
    );
    let refused = gw
        .services
        .publish(&manifest("big", ""), too_many.as_bytes());
    assert!(
        matches!(&refused, Err(ServiceError::Invalid(m))
            if m.contains("too large for this gateway's instance pool") && !m.contains("not a WebAssembly component")),
        "{refused:?}"
    );
}

#[test]
fn a_memory_limit_below_the_components_initial_memory_is_refused_at_publish() {
    let gw = gateway();
    // 300 pages of 64 KiB: 18.75 MiB, over the default 16.
    let big_memory = wat::parse_str(echo().replacen(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 300)",
        1,
    ))
    .unwrap();
    let refused = gw.services.publish(&manifest("big", ""), &big_memory);
    assert!(
        matches!(&refused, Err(ServiceError::Invalid(m)) if m.contains("memory-mib to at least 19")),
        "{refused:?}"
    );
    assert!(gw.services.list().is_empty());
    let limits = "[limits]\nmemory-mib = 19";
    gw.services
        .publish(&manifest("big", limits), &big_memory)
        .unwrap();
}

/// Installs a hostile service and waits until the host has given up on it.
fn gives_up_on(entry: (&str, &str, &str), limits: &str, expected: &str) {
    let gw = gateway();
    gw.services
        .publish(&manifest("echo", ""), echo().as_bytes())
        .unwrap();
    let (init, on_reading, on_timer) = entry;
    let hostile = component(init, on_reading, on_timer);
    gw.services
        .publish(
            &manifest("hostile", &format!("timer = \"20ms\"\n{limits}")),
            hostile.as_bytes(),
        )
        .unwrap();
    let started = Instant::now();
    // The well-behaved service keeps working meanwhile (fed 20 readings a
    // second, well below its publishing limit).
    let mut n = 0;
    eventually("the hostile service to be given up", || {
        n += 1;
        if n % 10 == 0 {
            gw.feed(f64::from(n));
        }
        gw.services.info("hostile").unwrap().state == State::Failed
    });
    let info = gw.services.info("hostile").unwrap();
    let reason = info.reason.clone().unwrap_or_default();
    assert!(reason.contains(expected), "{expected:?} not in {reason:?}");
    let last_error = info.last_error.clone().unwrap_or_default();
    assert!(
        last_error.contains(expected),
        "{expected:?} not in {last_error:?}"
    );
    assert_eq!(info.restarts, MAX_RESTARTS, "{info:?}");
    assert!(
        !gw.hub
            .thing(&ThingId::parse("gw.service.hostile.out").unwrap())
            .unwrap()
            .available
    );
    // Backoff: 0.2 + 0.4 + 0.8 + 1.6 + 3.2 s between the six attempts.
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    gw.feed(1234.0);
    eventually("the neighbour to carry on", || {
        gw.output("echo") == Some(Value::Number(1234.0))
    });
    assert_eq!(gw.services.info("echo").unwrap().restarts, 0);
    // An operator can try again: it starts afresh (and fails again).
    let restarted = gw.services.start("hostile").unwrap();
    assert_eq!(restarted.restarts, 0);
    assert_ne!(restarted.state, State::Failed);
}

#[test]
fn a_trapping_service_is_restarted_with_backoff_then_given_up() {
    gives_up_on(("", TRAP, ""), "", "unreachable");
}

#[test]
fn a_looping_service_is_stopped_at_its_cpu_deadline() {
    gives_up_on(
        ("", "", SPIN),
        "[limits]\ncpu-ms = 30",
        "CPU deadline of 30 ms",
    );
}

#[test]
fn a_service_that_eats_memory_is_stopped_at_its_limit() {
    gives_up_on(
        ("", "", GROW_FOREVER),
        "[limits]\nmemory-mib = 4",
        "memory limit of 4 MiB",
    );
}

#[test]
fn a_service_that_floods_its_outputs_is_stopped() {
    gives_up_on(
        ("", "", PUBLISH_FOREVER),
        "[limits]\npublish-per-second = 10\ncpu-ms = 1000",
        "flooded its outputs",
    );
}

#[test]
fn a_service_that_loops_in_init_never_runs() {
    gives_up_on((SPIN, "", ""), "[limits]\ncpu-ms = 10", "CPU deadline");
}

#[test]
fn services_persist_stop_start_upgrade_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let sensor = ThingId::parse("gw.sim.t1.temperature").unwrap();
    {
        let hub = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
        hub.announce(ThingService::new(
            sensor.clone(),
            Kind::Sensor,
            "temperature",
            None,
        ))
        .unwrap();
        let services = Services::open(hub.clone(), None).unwrap();
        services
            .publish(&manifest("echo", ""), echo().as_bytes())
            .unwrap();
        services
            .publish(&manifest("idle", ""), echo().as_bytes())
            .unwrap();
        let stopped = services.stop("idle").unwrap();
        assert_eq!(stopped.state, State::Stopped);
        assert!(!stopped.enabled);
        hub.store().put_service_value("echo", "kept", b"1").unwrap();
    }
    // The gateway restarts: what ran runs again, what was stopped is not.
    let hub = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
    let services = Services::open(hub.clone(), None).unwrap();
    eventually("echo running again", || {
        services.info("echo").unwrap().state == State::Running
    });
    assert_eq!(services.info("idle").unwrap().state, State::Stopped);
    assert!(
        !hub.thing(&ThingId::parse("gw.service.idle.out").unwrap())
            .unwrap()
            .available
    );

    // An upgrade replaces the component and the manifest, keeps the state.
    let upgraded = services
        .publish(
            &format!(
                "{}[[outputs]]\nname = \"second\"\ntype = \"count\"\n",
                manifest("echo", "").replace("1.0.0", "2.0.0")
            ),
            echo().as_bytes(),
        )
        .unwrap();
    assert!(!upgraded.created);
    assert_eq!(upgraded.info.version, "2.0.0");
    assert_eq!(upgraded.info.outputs.len(), 2);
    assert_eq!(
        hub.store().service_value("echo", "kept").unwrap(),
        Some(b"1".to_vec())
    );
    // A bad upgrade leaves the running version alone.
    eventually("echo 2.0.0 running", || {
        services.info("echo").unwrap().state == State::Running
    });
    let calls = services.info("echo").unwrap().calls;
    assert!(
        services
            .publish(&manifest("echo", ""), b"(component)")
            .is_err()
    );
    let still = services.info("echo").unwrap();
    assert_eq!(
        (still.version.as_str(), still.state),
        ("2.0.0", State::Running)
    );
    // Starting what runs changes nothing (no restart, no second init).
    let started = services.start("echo").unwrap();
    assert_eq!((started.state, started.calls), (State::Running, calls));

    services.start("idle").unwrap();
    eventually("idle running", || {
        services.info("idle").unwrap().state == State::Running
    });
    services.remove("echo").unwrap();
    assert!(matches!(
        services.info("echo"),
        Err(ServiceError::Unknown(_))
    ));
    assert!(
        hub.thing(&ThingId::parse("gw.service.echo.out").unwrap())
            .is_none()
    );
    assert_eq!(hub.store().service_value("echo", "kept").unwrap(), None);
    assert_eq!(services.list().len(), 1);
}

#[test]
fn a_chatty_service_cannot_flood_the_log() {
    let gw = gateway();
    gw.services
        .publish(
            &manifest("chatty", "timer = \"50ms\""),
            component("", "", LOG_FLOOD).as_bytes(),
        )
        .unwrap();
    eventually("a suppression notice", || {
        gw.services
            .logs("chatty")
            .unwrap()
            .iter()
            .any(|l| l.message.contains("lines suppressed) hello"))
    });
    let info = gw.services.info("chatty").unwrap();
    assert_eq!(info.state, State::Running, "talking is not failing");
    let kept = gw.services.logs("chatty").unwrap();
    assert!(kept.len() <= 200);
    // Each tick writes 1000 lines; at most 20 a second are kept.
    let hellos = kept.iter().filter(|l| l.message.ends_with("hello")).count();
    assert!(hellos < 100, "{hellos} lines kept");
}

#[test]
fn reading_a_thing_needs_a_grant() {
    let gw = gateway();
    gw.feed(20.0);
    let reader = component("", "", READ_SENSOR);
    gw.services
        .publish(&manifest("nosy", "timer = \"20ms\""), reader.as_bytes())
        .unwrap();
    gw.services
        .publish(
            &manifest(
                "granted",
                "timer = \"20ms\"\n[grants]\nread = [{ type = \"temperature\", location = \"campus/a\" }]",
            ),
            reader.as_bytes(),
        )
        .unwrap();
    let said = |name: &str, what: &str| {
        gw.services
            .logs(name)
            .unwrap()
            .iter()
            .any(|l| l.message == what)
    };
    eventually("the grant to be honoured", || said("granted", "allowed"));
    eventually("the missing grant to be refused", || {
        said("nosy", "refused")
    });
    assert!(!said("nosy", "allowed"));
    assert!(!said("granted", "refused"));
    assert_eq!(gw.services.info("nosy").unwrap().state, State::Running);
}

#[test]
fn a_damaged_compilation_cache_is_compiled_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let hub = Hub::open("gw", &dir.path().join("db"), HubOptions::default()).unwrap();
    {
        let services = Services::open(hub.clone(), Some(&cache)).unwrap();
        services
            .publish(&manifest("echo", ""), echo().as_bytes())
            .unwrap();
    }
    let artifacts: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(artifacts.len(), 1, "one compiled component, by digest");
    assert!(
        artifacts[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with(".cwasm")
    );
    std::fs::write(&artifacts[0], b"not a compiled component").unwrap();
    let services = Services::open(hub, Some(&cache)).unwrap();
    eventually("echo running again", || {
        services.info("echo").unwrap().state == State::Running
    });
    assert_ne!(
        std::fs::read(&artifacts[0]).unwrap(),
        b"not a compiled component",
        "the cache was rewritten"
    );
}

/// The owner of a thing that takes its time to answer.
struct SlowOwner;

impl fogbank_taas::Remote for SlowOwner {
    fn latest(
        &self,
        _: &ThingService,
    ) -> fogbank_taas::remote::RemoteFuture<Option<fogbank_taas::Reading>> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(None)
        })
    }
    fn history(
        &self,
        _: &ThingService,
        _: fogbank_taas::Window,
    ) -> fogbank_taas::remote::RemoteFuture<Vec<fogbank_taas::Reading>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn actuate(&self, _: &str, _: fogbank_taas::Command) -> fogbank_taas::ActuationFuture {
        Box::pin(async { Ok(None) })
    }
    fn is_reachable(&self, _: &str) -> bool {
        true
    }
    fn interest(&self, _: &ThingId, _: bool) {}
}

#[test]
fn waiting_on_the_host_does_not_count_against_the_cpu_deadline() {
    // This gateway is "gx": the sensor belongs to gateway "gw", whose
    // answers take 100 ms, five times the service's CPU deadline.
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open("gx", dir.path(), HubOptions::default()).unwrap();
    hub.attach_remote(Arc::new(SlowOwner));
    let sensor = ThingId::parse("gw.sim.t1.temperature").unwrap();
    hub.replace_remote_catalog(
        "gw",
        vec![ThingService::new(sensor, Kind::Sensor, "temperature", None)],
    );
    let services = Services::open(hub, None).unwrap();
    services
        .publish(
            &manifest(
                "patient",
                "timer = \"200ms\"\n[grants]\nread = [{ id = \"gw.sim.t1.temperature\" }]\n[limits]\ncpu-ms = 20",
            ),
            component("", "", READ_SENSOR).as_bytes(),
        )
        .unwrap();
    // In a local cloud a gateway places nothing until it has settled.
    let allowed = || {
        services
            .logs("patient")
            .unwrap_or_default()
            .iter()
            .filter(|l| l.message == "allowed")
            .count()
    };
    eventually("two slow reads answered", || allowed() >= 2);
    let info = services.info("patient").unwrap();
    assert_eq!(
        (info.state, info.errors, info.restarts),
        (State::Running, 0, 0),
        "{info:?}"
    );
    assert!(info.cpu_time_ms < 20.0 * info.calls as f64, "{info:?}");
}

#[test]
fn services_stored_before_the_local_cloud_become_records_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
    hub.announce(ThingService::new(
        ThingId::parse("gw.sim.t1.temperature").unwrap(),
        Kind::Sensor,
        "temperature",
        None,
    ))
    .unwrap();
    // As an earlier version stored it: record and component in the
    // `services` column family, its data beside.
    let component = echo();
    let record = serde_json::json!({
        "manifest": Manifest::parse(&manifest("echo", "")).unwrap().to_toml(),
        "digest": engine::digest(component.as_bytes()),
        "enabled": true,
        "installed_at": 1,
    });
    hub.store()
        .put_service(
            "echo",
            record.to_string().as_bytes(),
            Some(component.as_bytes()),
        )
        .unwrap();
    hub.store().put_service_value("echo", "kept", b"1").unwrap();
    let services = Services::open(hub.clone(), None).unwrap();
    eventually("echo running", || {
        services
            .info("echo")
            .is_ok_and(|i| i.state == State::Running)
    });
    assert_eq!(services.info("echo").unwrap().home, "gw");
    assert!(
        hub.store().load_services().unwrap().is_empty(),
        "the old copy is gone"
    );
    assert_eq!(
        hub.store().service_value("echo", "kept").unwrap(),
        Some(b"1".to_vec())
    );
}
