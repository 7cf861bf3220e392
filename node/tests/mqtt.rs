//! The MQTT adapter against a real Mosquitto broker and its clients.

mod common;

use std::time::Duration;

use common::{Gateway, Mosquitto};
use serde_json::json;

/// A gateway `gw-m` that is a client of `broker`, on `data_dir`.
fn gateway(broker: &Mosquitto, data_dir: &std::path::Path) -> Gateway {
    let config = data_dir.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nmode = \"external\"\nbroker = \"{}\"\n",
            broker.address()
        ),
    )
    .unwrap();
    // Without FOGBANK_MQTT the config file chooses the mode.
    let env = [("FOGBANK_GATEWAY_ID", "gw-m"), ("FOGBANK_MQTT", "")];
    let gw = Gateway::start_in(data_dir, &["--config", config.to_str().unwrap()], &env);
    // Ready once subscribed: a probe published until it arrives shows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        broker.publish("things/probe/ready", b"1");
        if gw
            .get("/api/v1/things/gw-m.mqtt.probe.ready/reading")
            .status
            == 200
        {
            return gw;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never subscribed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn history_len(gw: &Gateway, id: &str) -> usize {
    let answer = gw.get(&format!("/api/v1/things/{id}/readings?from=0&limit=100000"));
    if answer.status != 200 {
        return 0;
    }
    answer.json().as_array().map_or(0, Vec::len)
}

#[test]
fn mosquitto_pub_readings_become_thing_services_and_bad_input_is_dropped() {
    let broker = Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let gw = gateway(&broker, &tmp.path().join("data"));

    broker.publish("things/sensor-7/temperature", b"21.5");
    let reading = gw.wait_for(
        "/api/v1/things/gw-m.mqtt.sensor-7.temperature/reading",
        "the reading",
        |a| a.status == 200,
    );
    assert_eq!(reading.json()[0]["v"], 21.5);
    let thing = gw
        .get("/api/v1/things/gw-m.mqtt.sensor-7.temperature")
        .json();
    assert_eq!(
        (
            thing["type"].as_str(),
            thing["unit"].as_str(),
            thing["kind"].as_str()
        ),
        (Some("temperature"), Some("Cel"), Some("sensor"))
    );

    // A SenML pack on the device topic: one thing service per record name.
    broker.publish(
        "things/multi",
        br#"[{"bn":"","n":"co2","u":"ppm","v":612},{"n":"humidity","u":"%RH","v":41.5}]"#,
    );
    gw.wait_for(
        "/api/v1/things/gw-m.mqtt.multi.humidity/reading",
        "the pack",
        |a| a.status == 200,
    );
    assert_eq!(
        gw.get("/api/v1/things/gw-m.mqtt.multi.co2").json()["unit"],
        "ppm"
    );

    // Hostile payloads are dropped; the adapter carries on.
    broker.publish("things/sensor-7/temperature", &[0xff, 0x00, 0xfe]);
    broker.publish("things/sensor-7/temperature", br#"[{"v":"#);
    broker.publish("things/multi", br#"[{"v":1}]"#);
    broker.publish("things//temperature", b"1");
    broker.publish("things/sensor-7/status", b"sleepy");
    broker.publish("things/sensor-7/temperature", b"22.25");
    gw.wait_for(
        "/api/v1/things/gw-m.mqtt.sensor-7.temperature/reading",
        "the next good reading",
        |a| a.json()[0]["v"] == 22.25,
    );
    assert_eq!(
        history_len(&gw, "gw-m.mqtt.sensor-7.temperature"),
        2,
        "nothing of the garbage was stored"
    );

    // Availability follows the status topic.
    broker.publish("things/sensor-7/status", b"offline");
    gw.wait_for(
        "/api/v1/things/gw-m.mqtt.sensor-7.temperature",
        "unavailable",
        |a| a.json()["available"] == false,
    );
    broker.publish("things/sensor-7/status", b"online");
    gw.wait_for(
        "/api/v1/things/gw-m.mqtt.sensor-7.temperature",
        "available",
        |a| a.json()["available"] == true,
    );
}

#[test]
fn an_actuation_over_rest_is_published_on_the_set_topic() {
    let broker = Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let gw = gateway(&broker, &tmp.path().join("data"));
    broker.publish("things/plug-1/relay", b"off");
    let thing = gw
        .wait_for("/api/v1/things/gw-m.mqtt.plug-1.relay", "the relay", |a| {
            a.status == 200
        })
        .json();
    assert_eq!(thing["kind"], "actuator");

    let commands = broker.subscribe("things/plug-1/relay/set", 1);
    std::thread::sleep(Duration::from_millis(300)); // let mosquitto_sub subscribe
    let answer = gw.write(
        "PUT",
        "/api/v1/things/gw-m.mqtt.plug-1.relay/actuation",
        "application/json",
        br#"{"value": true}"#,
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        commands.join().unwrap(),
        vec!["things/plug-1/relay/set on".to_owned()]
    );
}

/// QoS 1 readings survive a gateway `kill -9` and a broker restart: what
/// was published while the gateway was away arrives when it returns, and
/// nothing is stored twice.
#[test]
fn nothing_is_lost_or_doubled_across_gateway_and_broker_restarts() {
    const ID: &str = "gw-m.mqtt.meter.energy";
    let mut broker = Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let base = (common::now_secs() - 600.0).floor();
    let packs = |from: usize, to: usize| -> Vec<String> {
        (from..to)
            .map(|n| json!([{"u": "J", "v": n as f64, "t": base + n as f64 * 0.01}]).to_string())
            .collect()
    };

    let mut gw = gateway(&broker, &data_dir);
    broker.publish_lines("things/meter/energy", &packs(0, 200));
    gw.wait_for(
        &format!("/api/v1/things/{ID}/reading"),
        "the first readings",
        |a| a.status == 200,
    );
    gw.kill9();

    // Published while the gateway is dead: the broker queues them.
    broker.publish_lines("things/meter/energy", &packs(200, 400));
    let gw = gateway(&broker, &data_dir);
    gw.wait_for("/health", "all 400 readings", |_| {
        history_len(&gw, ID) >= 400
    });
    drop(gw);

    // A broker restart, with the gateway down and then up again.
    broker.restart();
    broker.publish_lines("things/meter/energy", &packs(400, 500));
    let gw = gateway(&broker, &data_dir);
    gw.wait_for("/health", "all 500 readings", |_| {
        history_len(&gw, ID) >= 500
    });
    broker.restart();
    broker.publish_lines("things/meter/energy", &packs(500, 600));
    gw.wait_for(
        "/health",
        "all 600 readings after the broker came back",
        |_| history_len(&gw, ID) >= 600,
    );

    std::thread::sleep(Duration::from_millis(500)); // anything doubled would show by now
    let history = gw
        .get(&format!("/api/v1/things/{ID}/readings?from=0&limit=100000"))
        .json();
    let values: Vec<f64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["v"].as_f64().unwrap())
        .collect();
    assert_eq!(
        values,
        (0..600).map(|n| n as f64).collect::<Vec<_>>(),
        "each reading exactly once, in order"
    );
}

/// The embedded broker: `mosquitto_pub` and `mosquitto_sub` talk to the
/// gateway directly, with nothing else installed on the site.
#[test]
fn devices_talk_to_the_embedded_broker() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let gw = Gateway::start(
        &["--mqtt", &listen],
        &[("FOGBANK_GATEWAY_ID", "gw-e"), ("FOGBANK_MQTT", "")],
    );
    let client = |tool: &str, args: &[&str]| {
        std::process::Command::new(tool)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(args)
            .output()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw
        .get("/api/v1/things/gw-e.mqtt.plug-2.relay/reading")
        .status
        != 200
    {
        assert!(
            client("mosquitto_pub", &["-t", "things/plug-2/relay", "-m", "off"])
                .status
                .success()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the embedded broker never delivered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        client(
            "mosquitto_pub",
            &["-t", "things/plug-2/power", "-m", "12.5"]
        )
        .status
        .success()
    );
    gw.wait_for(
        "/api/v1/things/gw-e.mqtt.plug-2.power/reading",
        "the power reading",
        |a| a.status == 200,
    );
    assert_eq!(
        gw.get("/api/v1/things/gw-e.mqtt.plug-2.power").json()["unit"],
        "W"
    );

    let sub = std::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            "things/plug-2/relay/set",
            "-v",
            "-C",
            "1",
            "-W",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let answer = gw.write(
        "PUT",
        "/api/v1/things/gw-e.mqtt.plug-2.relay/actuation",
        "application/json",
        br#"{"value": true}"#,
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let out = sub.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "things/plug-2/relay/set on"
    );
}

#[test]
fn a_taken_mqtt_port_stops_the_gateway_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::binary())
        .args([
            "run",
            "--http",
            "127.0.0.1:0",
            "--mqtt",
            &address,
            "--data-dir",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot listen for MQTT") && stderr.contains("--mqtt off"),
        "{stderr}"
    );
}
