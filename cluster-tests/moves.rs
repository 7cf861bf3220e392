//! Devices that move between the gateways of one local cloud, as an
//! operator moves them: `POST /api/v1/devices/{device}/transport` at the
//! owner, a real aiocoap device (`examples/devices/movable_device.py`,
//! written from the LWM2M and RFC 9176 specifications) that takes the
//! Transport Management Policy write and registers at the target, and an
//! application on a third gateway that follows the device's thing services
//! by their ids throughout.

use fogbank_testkit as testkit;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use testkit::{LinePeer, Member, acquainted, cluster_key, start_cloud, within};

const LINE_WAIT: Duration = Duration::from_secs(20);

/// The reference device, registered at the CoAP endpoint on `rd_port`.
fn movable_device(rd_port: u16, endpoint: &str, extra: &[&str]) -> LinePeer {
    let script = testkit::package_file("../examples/devices/movable_device.py");
    for _ in 0..5 {
        let mut command = Command::new(testkit::python());
        command
            .arg(&script)
            .args(["--rd", &format!("coap://127.0.0.1:{rd_port}")])
            .args(["--ep", endpoint])
            .args(["--port", &testkit::free_udp_port().to_string()])
            .args(extra);
        let device = LinePeer::spawn(command);
        // A port taken meanwhile by a parallel test: the device exits.
        if device.wait_for_line("registered at", LINE_WAIT).is_ok() {
            return device;
        }
    }
    panic!("the device {endpoint} never registered");
}

/// `POST …/transport` at `member`: the answer's status and body.
fn move_device(member: &Member, device: &str, body: &Json) -> (u16, Json) {
    let answer = member.gateway.write(
        "POST",
        &format!("/api/v1/devices/{device}/transport"),
        "application/json",
        body.to_string().as_bytes(),
    );
    (answer.status, answer.json())
}

/// Polls a move at `member` until it is no longer pending.
fn finished_move(member: &Member, id: &Json) -> Json {
    finished_move_at(member, id, &member.id)
}

/// Polls at `member` a move gateway `at` runs until it is no longer pending.
fn finished_move_at(member: &Member, id: &Json, at: &str) -> Json {
    let mut status = Json::Null;
    within(Duration::from_secs(40), "the move finishes", || {
        let answer = member.gateway.get(&format!("/api/v1/moves/{id}?at={at}"));
        assert!(matches!(answer.status, 200 | 202), "{}", answer.status);
        status = answer.json();
        status["state"] != "pending"
    });
    status
}

/// (time, value) of each reading in a SenML history.
fn readings(records: &Json) -> Vec<(f64, f64)> {
    records
        .as_array()
        .expect("a SenML array")
        .iter()
        .map(|r| (r["t"].as_f64().unwrap(), r["v"].as_f64().unwrap()))
        .collect()
}

fn history(member: &Member, id: &str) -> Vec<(f64, f64)> {
    readings(&member.get_json(&format!("/api/v1/things/{id}/readings?from=0&limit=100000")))
}

#[test]
fn a_coap_device_moves_to_another_gateway_and_keeps_its_ids_stream_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    let coap_a = testkit::free_udp_port();
    let coap_b = testkit::free_udp_port();
    let members = start_cloud(dir.path(), &key, &["gw-a", "gw-b", "gw-c"], |id| {
        let port = match id {
            "gw-a" => coap_a,
            "gw-b" => coap_b,
            _ => testkit::free_udp_port(),
        };
        (
            Vec::new(),
            vec![("FOGBANK_COAP".into(), format!("127.0.0.1:{port}"))],
        )
    });
    let (a, b, c) = (&members[0], &members[1], &members[2]);
    acquainted(&members, Duration::from_secs(15));

    // One device writes the policy in SenML JSON, the other takes only TLV.
    let senml_device = movable_device(coap_a, "mover-1", &[]);
    let tlv_device = movable_device(coap_a, "mover-2", &["--tlv-only"]);
    let temperature = "gw-a.coap.mover-1.temperature";
    let lamp = "gw-a.coap.mover-1.light-control";
    within(
        Duration::from_secs(15),
        "gw-c sees the device's readings",
        || c.gateway.history_len(temperature) >= 5,
    );

    // An application on gw-c follows the temperature by its id.
    let stream = testkit::follow_events(
        &c.gateway
            .url(&format!("/api/v1/things/{temperature}/stream")),
        "reading",
        Duration::from_secs(30),
    );
    stream
        .recv_timeout(Duration::from_secs(10))
        .expect("the stream's first reading");

    // What an operator gets wrong is refused with a reason.
    let (status, _) = move_device(a, "gw-a.coap.nobody", &json!({"gateway": "gw-b"}));
    assert_eq!(status, 404);
    let (status, _) = move_device(a, "gw-a.coap.mover-1", &json!({"gateway": "gw-z"}));
    assert_eq!(status, 409);
    let (status, _) = move_device(a, "not a device", &json!({"gateway": "gw-b"}));
    assert_eq!(status, 400);
    let (status, _) = move_device(
        a,
        "gw-a.coap.mover-1",
        &json!({"gateway": "gw-b", "port": 1}),
    );
    assert_eq!(status, 400);

    // gw-a read the device's /3/0 when it registered.
    let device_read_at = |member: &Member| {
        let thing = member.get_json(&format!("/api/v1/things/{temperature}"));
        thing["metadata"]["device"]["read_at"].as_f64()
    };
    within(Duration::from_secs(5), "gw-a reads the device info", || {
        device_read_at(a).is_some()
    });
    let first_read = device_read_at(a);

    // The move, by any of the device's ids.
    let moved_at = testkit::now_secs();
    let (status, started) = move_device(a, temperature, &json!({"gateway": "gw-b"}));
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["device"], "gw-a.coap.mover-1");
    // Asked at gw-c, which passes it to the owner; followed from gw-c.
    let (status, second) = move_device(c, "gw-a.coap.mover-2", &json!({"gateway": "gw-b"}));
    assert_eq!(status, 202, "{second}");
    assert_eq!(second["at"], "gw-a", "gw-a runs it: {second}");
    let done = finished_move(a, &started["id"]);
    assert_eq!(done["state"], "arrived", "{done}");
    assert!(done["readings_handed"].as_u64().unwrap() >= 5, "{done}");
    assert!(done["repoint_ms"].as_f64().unwrap() > 0.0, "{done}");
    senml_device.expect_line("policy gw-b 127.0.0.1", LINE_WAIT);
    senml_device.expect_line(&format!("registered at 127.0.0.1:{coap_b}"), LINE_WAIT);
    let done = finished_move_at(c, &second["id"], "gw-a");
    assert_eq!(
        done["state"], "arrived",
        "the TLV-only device moves too: {done}"
    );
    tlv_device.expect_line(&format!("registered at 127.0.0.1:{coap_b}"), LINE_WAIT);

    // Every gateway sees the same ids, owned by gw-b now.
    for member in &members {
        within(
            Duration::from_secs(5),
            "the owner changes everywhere",
            || {
                let thing = member.get_json(&format!("/api/v1/things/{temperature}"));
                thing["gateway"] == "gw-b" && thing["moves"] == 1 && thing["available"] == true
            },
        );
        // gw-b read /3/0 again when the device registered there.
        within(
            Duration::from_secs(5),
            "the device info read at gw-b reaches every gateway",
            || device_read_at(member).is_some_and(|t| Some(t) != first_read && t >= moved_at),
        );
        let thing = member.get_json(&format!("/api/v1/things/{temperature}"));
        assert_eq!(
            thing["metadata"]["device"]["model"], "movable-device",
            "{thing}"
        );
        assert_eq!(thing["metadata"]["device"]["serial"], "mover-1");
        let ids: Vec<String> = member
            .catalog()
            .iter()
            .filter_map(|t| t["id"].as_str().map(str::to_owned))
            .filter(|id| id.contains(".coap.mover-"))
            .collect();
        assert!(
            ids.iter().all(|id| id.starts_with("gw-a.coap.mover-")),
            "no id changed on {}: {ids:?}",
            member.id
        );
    }

    // The stream on gw-c goes on across the move, without a gap.
    let mut times = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let event = stream
            .recv_timeout(Duration::from_secs(5))
            .expect("the stream goes on after the move");
        let record: Json = serde_json::from_str(&event).unwrap();
        let t = record[0]["t"].as_f64().or(record["t"].as_f64()).unwrap();
        times.push(t);
        if t > moved_at + 5.0 {
            break;
        }
    }
    assert!(
        times.last().is_some_and(|t| *t > moved_at + 5.0),
        "readings well after the move: {times:?}"
    );
    let widest = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(widest < 3.0, "a gap of {widest:.2} s in the stream");

    // One history under one id, from any gateway: before the move (kept
    // by gw-a, handed to gw-b) and after; each reading once.
    within(Duration::from_secs(5), "the history is whole", || {
        let from_c = history(c, temperature);
        from_c.first().is_some_and(|(t, _)| *t < moved_at)
            && from_c.last().is_some_and(|(t, _)| *t > moved_at + 5.0)
    });
    let from_c = history(c, temperature);
    let times: BTreeSet<u64> = from_c.iter().map(|(t, _)| (t * 1e6) as u64).collect();
    assert_eq!(times.len(), from_c.len(), "no reading twice");
    // The device's value rises by 0.01 a step: none may be missing. (A
    // value may repeat: the new gateway's first read of the resource.)
    let values: Vec<f64> = from_c.iter().map(|(_, v)| *v).collect();
    assert!(
        values.windows(2).all(|w| {
            let step = ((w[1] - w[0]) * 100.0).round();
            step == 0.0 || step == 1.0
        }),
        "every value of the device, in order: {values:?}"
    );
    assert_eq!(history(a, temperature), from_c, "gw-a reads it from gw-b");
    assert_eq!(history(b, temperature), from_c);

    // Commands from gw-c reach the device at its new gateway.
    let answer = c.gateway.write(
        "PUT",
        &format!("/api/v1/things/{lamp}/actuation?wait=10000"),
        "application/json",
        br#"{"value": true}"#,
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    senml_device.expect_line("lamp on", LINE_WAIT);

    // gw-a keeps nothing of the device: not a catalog entry of its own, no history.
    let own_of_a = a.get_json("/api/v1/things?gateway=gw-a");
    assert!(
        own_of_a
            .as_array()
            .unwrap()
            .iter()
            .all(|t| !t["id"].as_str().unwrap().contains("mover")),
        "{own_of_a}"
    );
}

/// The reference MQTT device (`examples/devices/mqtt_movable_device.py`),
/// connected to the embedded broker on `port`.
fn mqtt_movable_device(port: u16, device: &str) -> LinePeer {
    let script = testkit::package_file("../examples/devices/mqtt_movable_device.py");
    let mut command = Command::new(testkit::python());
    command
        .arg(&script)
        .args(["--broker", &format!("127.0.0.1:{port}")])
        .args(["--device", device]);
    let peer = LinePeer::spawn(command);
    peer.wait_for_line("connected to", LINE_WAIT)
        .expect("the MQTT device connects");
    peer
}

#[test]
fn an_mqtt_device_that_follows_its_policy_topic_moves_and_keeps_its_ids() {
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    let (mqtt_a, mqtt_b) = (testkit::free_port(), testkit::free_port());
    let members = start_cloud(dir.path(), &key, &["gw-a", "gw-b", "gw-c"], |id| {
        let port = match id {
            "gw-a" => mqtt_a,
            "gw-b" => mqtt_b,
            _ => testkit::free_port(),
        };
        (
            Vec::new(),
            vec![("FOGBANK_MQTT".into(), format!("127.0.0.1:{port}"))],
        )
    });
    let (a, b, c) = (&members[0], &members[1], &members[2]);
    acquainted(&members, Duration::from_secs(15));
    let device = mqtt_movable_device(mqtt_a, "mover-3");
    let temperature = "gw-a.mqtt.mover-3.temperature";
    within(Duration::from_secs(15), "gw-c sees its readings", || {
        c.gateway.history_len(temperature) >= 5
    });
    // A device that publishes no policy cannot be told another broker.
    testkit::mqtt_publish(mqtt_a, "things/boiler-2/temperature", b"60");
    within(Duration::from_secs(10), "the boiler is known", || {
        a.gateway.history_len("gw-a.mqtt.boiler-2.temperature") == 1
    });
    let (status, refused) = move_device(a, "gw-a.mqtt.boiler-2", &json!({"gateway": "gw-b"}));
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains("policy"),
        "{refused}"
    );

    // Moved from gw-c, which passes it to the owner.
    let (status, started) = move_device(c, "gw-a.mqtt.mover-3", &json!({"gateway": "gw-b"}));
    assert_eq!(status, 202, "{started}");
    let finished = finished_move_at(c, &started["id"], "gw-a");
    assert_eq!(finished["state"], "arrived", "{finished}");
    device
        .wait_for_line(&format!("policy gw-b 127.0.0.1:{mqtt_b} mqtt"), LINE_WAIT)
        .unwrap();
    // The same id, owned by gw-b, with its history before and after.
    let before = history(c, temperature);
    within(Duration::from_secs(10), "readings go on at gw-b", || {
        history(c, temperature).len() > before.len() + 5
    });
    let thing = c.get_json(&format!("/api/v1/things/{temperature}"));
    assert_eq!(thing["gateway"], "gw-b", "{thing}");
    assert_eq!(thing["moves"], 1, "{thing}");
    let after = history(b, temperature);
    assert!(
        before.iter().all(|r| after.contains(r)),
        "gw-b holds the history from before the move"
    );
    // Values rise by 0.01 per reading: none was stored twice.
    let values: Vec<f64> = after.iter().map(|(_, v)| *v).collect();
    assert!(values.windows(2).all(|w| w[1] > w[0]), "{values:?}");
}

/// Simulated floors on gw-a, one reading each 200 ms per resource.
fn fast_campus(dir: &std::path::Path) -> String {
    let config = dir.join("campus.toml");
    std::fs::write(&config, "[sim]\ninterval_ms = 200\n").unwrap();
    config.to_str().unwrap().to_owned()
}

/// The times of a thing's readings (µs), as `member` serves them.
fn times(member: &Member, id: &str) -> Vec<u64> {
    member
        .get_json(&format!("/api/v1/things/{id}/readings?from=0&limit=100000"))
        .as_array()
        .expect("a SenML array")
        .iter()
        .map(|r| (r["t"].as_f64().expect("a time") * 1e6).round() as u64)
        .collect()
}

/// Polls a drain at `member` until it is no longer running.
fn finished_drain(member: &Member) -> Json {
    let mut status = Json::Null;
    within(Duration::from_secs(60), "the drain finishes", || {
        let answer = member.gateway.get("/api/v1/drain");
        assert!(matches!(answer.status, 200 | 202), "{}", answer.status);
        status = answer.json();
        status["state"] != "running"
    });
    status
}

#[test]
fn a_drained_gateway_can_stop_without_losing_a_reading_and_undrain_brings_its_devices_back() {
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    let mqtt_a = testkit::free_port();
    let campus = fast_campus(dir.path());
    let mut members = start_cloud(dir.path(), &key, &["gw-a", "gw-b", "gw-c"], |id| match id {
        "gw-a" => (
            vec!["--demo".into(), "--config".into(), campus.clone()],
            vec![("FOGBANK_MQTT".into(), format!("127.0.0.1:{mqtt_a}"))],
        ),
        _ => (Vec::new(), Vec::new()),
    });
    acquainted(&members, Duration::from_secs(15));
    // A third-party MQTT device on gw-a: it cannot be told another broker.
    testkit::mqtt_publish(mqtt_a, "things/boiler-1/temperature", b"61.5");
    let campus_ids: Vec<String> = members[0]
        .get_json("/api/v1/things?gateway=gw-a")
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .filter(|id| id.starts_with("gw-a.sim."))
        .collect();
    assert_eq!(campus_ids.len(), 40);
    within(Duration::from_secs(10), "the boiler is known", || {
        members[0]
            .gateway
            .history_len("gw-a.mqtt.boiler-1.temperature")
            == 1
    });
    // An extended service runs at gw-a, next to the floors it averages.
    testkit::publish_example(&members[0].gateway, "floor-average");
    let average = "gw-a.service.floor-average.floor-1";
    within(Duration::from_secs(15), "the average runs at gw-a", || {
        members[0].gateway.history_len(average) >= 1
    });
    std::thread::sleep(Duration::from_secs(1));
    let before: Vec<Vec<u64>> = campus_ids.iter().map(|id| times(&members[0], id)).collect();
    assert!(before.iter().all(|t| t.len() >= 3), "the campus runs");

    // Drain, from the CLI as an operator would.
    let drain = Command::new(testkit::binary())
        .args(["drain", "--url", &members[0].gateway.url("")])
        .env("FOGBANK_TOKEN", members[0].gateway.token())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&drain.stdout);
    assert!(
        drain.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&drain.stderr)
    );
    // The boiler cannot move: the drain says so, and why.
    assert!(said.contains("8 devices moved"), "{said}");
    assert!(
        said.contains("cannot move: gw-a.mqtt.boiler-1: MQTT device boiler-1 publishes no things/boiler-1/policy"),
        "{said}"
    );
    let status = finished_drain(&members[0]);
    assert!(said.contains("1 extended services moved"), "{said}");
    assert_eq!(status["kind"], "drain");
    assert_eq!(status["moved"].as_object().unwrap().len(), 9, "{status}");
    let service_went = status["moved"]["gw-a.service.floor-average"]
        .as_str()
        .unwrap();
    assert_ne!(service_went, "gw-a", "{status}");
    assert!(status["failed"].as_object().unwrap().is_empty(), "{status}");
    let spread: BTreeSet<&str> = status["moved"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| !name.contains(".service."))
        .filter_map(|(_, to)| to.as_str())
        .collect();
    assert_eq!(spread, BTreeSet::from(["gw-b", "gw-c"]), "spread by load");

    // gw-a stops; its campus lives on at gw-b and gw-c under the same ids.
    let drained_at = testkit::now_secs();
    members[0].gateway.terminate(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let c = &members[2];
    for (id, old) in campus_ids.iter().zip(&before) {
        let thing = c.get_json(&format!("/api/v1/things/{id}"));
        assert!(
            thing["gateway"] == "gw-b" || thing["gateway"] == "gw-c",
            "{thing}"
        );
        assert_eq!(thing["available"], true, "{thing}");
        let now = times(c, id);
        let kept: BTreeSet<u64> = now.iter().copied().collect();
        assert!(
            old.iter().all(|t| kept.contains(t)),
            "{id}: every reading gw-a stored before the drain is in the history"
        );
        assert!(
            now.last().is_some_and(|t| *t as f64 / 1e6 > drained_at),
            "{id}: readings go on after gw-a stopped"
        );
        let widest = now.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        assert!(
            widest < 2_000_000,
            "{id}: a gap of {widest} µs across the drain"
        );
    }

    // The service runs on, under the same ids, where it went.
    let owner = c.get_json(&format!("/api/v1/things/{average}"));
    assert_eq!(owner["gateway"], service_went, "{owner}");
    let placed = c.get_json("/api/v1/services/floor-average");
    assert_eq!(placed["gateway"], service_went, "{placed}");
    within(
        Duration::from_secs(10),
        "the average goes on after gw-a stopped",
        || {
            times(c, average)
                .last()
                .is_some_and(|t| *t as f64 / 1e6 > drained_at + 1.0)
        },
    );

    // gw-a comes back: it does not run the floors that left, until undrain.
    members[0].restart();
    acquainted(&members, Duration::from_secs(15));
    let a = &members[0];
    within(
        Duration::from_secs(5),
        "gw-a knows who owns its campus",
        || {
            a.get_json("/api/v1/things?gateway=gw-a")
                .as_array()
                .unwrap()
                .iter()
                .all(|t| !t["id"].as_str().unwrap().starts_with("gw-a.sim."))
                && a.catalog().len() >= 40
        },
    );
    let answer = a
        .gateway
        .write("POST", "/api/v1/undrain", "application/json", b"");
    assert_eq!(
        answer.status,
        202,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let status = finished_drain(a);
    assert_eq!(status["kind"], "undrain");
    assert_eq!(status["state"], "done", "{status}");
    // With its inputs home, the service follows them.
    within(Duration::from_secs(10), "the average back at gw-a", || {
        members[2].get_json("/api/v1/services/floor-average")["gateway"] == "gw-a"
    });
    assert_eq!(status["moved"].as_object().unwrap().len(), 8, "{status}");
    for member in [&members[0], &members[1], &members[2]] {
        within(Duration::from_secs(5), "the campus is gw-a's again", || {
            campus_ids.iter().all(|id| {
                let thing = member.get_json(&format!("/api/v1/things/{id}"));
                thing["gateway"] == "gw-a" && thing["moves"] == 2
            })
        });
    }
    // And its whole history came home with it.
    for (id, old) in campus_ids.iter().zip(&before) {
        let now: BTreeSet<u64> = times(&members[0], id).into_iter().collect();
        assert!(old.iter().all(|t| now.contains(t)), "{id}");
    }
}
