//! The MQTT adapter as a client of a real Mosquitto broker (external
//! mode): readings, actuation, restarts of either side, discovery,
//! topic mappings, rate limits and TLS. The embedded broker's tests are in
//! `mqtt_embedded.rs`.

use fogbank_testkit as testkit;

use std::time::Duration;

use serde_json::json;
use testkit::{Gateway, Mosquitto};

/// A gateway `gw-m` that is a client of `broker`, on `data_dir`.
fn gateway(broker: &Mosquitto, data_dir: &std::path::Path) -> Gateway {
    gateway_with(broker, data_dir, "")
}

/// Like [`gateway`], with more `[mqtt]` settings.
fn gateway_with(broker: &Mosquitto, data_dir: &std::path::Path, mqtt: &str) -> Gateway {
    testkit::external_gateway(broker, data_dir, "gw-m", mqtt)
}

/// A gateway `gw-m` in external mode with these `[mqtt]` settings.
fn start_external(data_dir: &std::path::Path, mqtt: &str) -> Gateway {
    testkit::mqtt::start_external(data_dir, "gw-m", mqtt)
}

fn wait_until_subscribed(broker: &Mosquitto, gw: Gateway) -> Gateway {
    testkit::mqtt::wait_until_subscribed(broker, "gw-m", gw)
}

/// Publishes until `path` on the gateway satisfies `check`: a subscription
/// the gateway just asked the broker for may take a moment to be in place.
fn publish_until(
    broker: &Mosquitto,
    topic: &str,
    payload: &[u8],
    gw: &Gateway,
    path: &str,
    check: impl Fn(&testkit::Answer) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        broker.publish(topic, payload);
        for _ in 0..10 {
            if check(&gw.get(path)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never showed what {topic} published"
        );
    }
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
    // Over max_message_bytes (256 KiB): dropped and acknowledged, so the
    // broker does not resend it to the session for ever.
    let oversized = format!(
        "[{{\"n\":\"temperature\",\"v\":1,\"vs\":\"{}\"}}]",
        "x".repeat(300_000)
    );
    broker.publish("things/sensor-7", oversized.as_bytes());
    broker.publish("things/sensor-7/temperature", b"22.25");
    gw.wait_for(
        "/api/v1/things/gw-m.mqtt.sensor-7.temperature/reading",
        "the next good reading",
        |a| a.json()[0]["v"] == 22.25,
    );
    assert_eq!(
        gw.history_len("gw-m.mqtt.sensor-7.temperature"),
        2,
        "nothing of the garbage was stored"
    );
    let metrics = String::from_utf8_lossy(&gw.get("/metrics").body).into_owned();
    for event in ["mqtt_malformed", "mqtt_oversized"] {
        assert!(
            metrics.contains(&format!(
                "fogbank_adapter_events_total{{adapter=\"mqtt\",event=\"{event}\"}}"
            )),
            "{event} counted: {metrics}"
        );
    }

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
    let seen = gw.actuate_until_seen(
        "/api/v1/things/gw-m.mqtt.plug-1.relay/actuation",
        br#"{"value": true}"#,
        commands,
    );
    assert_eq!(seen, vec!["things/plug-1/relay/set on".to_owned()]);
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
    let base = (testkit::now_secs() - 600.0).floor();
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
    gw.wait_for("/health", "all 400 readings", |_| gw.history_len(ID) >= 400);
    drop(gw);

    // A broker restart, with the gateway down and then up again.
    broker.restart();
    broker.publish_lines("things/meter/energy", &packs(400, 500));
    let gw = gateway(&broker, &data_dir);
    gw.wait_for("/health", "all 500 readings", |_| gw.history_len(ID) >= 500);
    broker.restart();
    broker.publish_lines("things/meter/energy", &packs(500, 600));
    gw.wait_for(
        "/health",
        "all 600 readings after the broker came back",
        |_| gw.history_len(ID) >= 600,
    );

    std::thread::sleep(Duration::from_millis(500)); // anything doubled would show by now
    let values = gw
        .get(&format!("/api/v1/things/{ID}/readings?from=0&limit=100000"))
        .senml_numbers();
    assert_eq!(
        values,
        (0..600).map(|n| n as f64).collect::<Vec<_>>(),
        "each reading exactly once, in order"
    );
}

/// Home Assistant discovery with the payloads Zigbee2MQTT, Tasmota and
/// ESPHome really publish: entities appear, take readings and commands,
/// follow availability, and vanish when their config is removed.
#[test]
fn home_assistant_discovery_brings_devices_in_without_configuration() {
    let broker = Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let gw = gateway(&broker, &tmp.path().join("data"));

    // Zigbee2MQTT: a temperature sensor behind a JSON state topic.
    broker.publish(
        "homeassistant/sensor/0x00158d0001a2b3c4/temperature/config",
        r#"{"availability":[{"topic":"zigbee2mqtt/bridge/state"}],"device":{"identifiers":["zigbee2mqtt_0x00158d0001a2b3c4"],"manufacturer":"Xiaomi","model":"WSDCGQ11LM","name":"living_room"},"device_class":"temperature","enabled_by_default":true,"name":"living_room temperature","state_class":"measurement","state_topic":"zigbee2mqtt/living_room","unique_id":"0x00158d0001a2b3c4_temperature_zigbee2mqtt","unit_of_measurement":"°C","value_template":"{{ value_json.temperature }}"}"#.as_bytes(),
    );
    let id = "gw-m.mqtt.0x00158d0001a2b3c4.temperature";
    let thing = gw
        .wait_for(&format!("/api/v1/things/{id}"), "the Zigbee sensor", |a| {
            a.status == 200
        })
        .json();
    assert_eq!(
        (thing["type"].as_str(), thing["unit"].as_str()),
        (Some("temperature"), Some("Cel"))
    );
    publish_until(
        &broker,
        "zigbee2mqtt/living_room",
        br#"{"battery":97,"humidity":48.2,"linkquality":102,"pressure":1012,"temperature":21.37,"voltage":2995}"#,
        &gw,
        &format!("/api/v1/things/{id}/reading"),
        |a| a.status == 200 && a.json()[0]["v"] == 21.37,
    );

    // Tasmota: a relay with abbreviated keys, commands and a last will.
    broker.publish(
        "homeassistant/switch/ABC123_RL_1/config",
        br#"{"name":"Tasmota","stat_t":"tele/tasmota_ABC123/STATE","avty_t":"tele/tasmota_ABC123/LWT","pl_avail":"Online","pl_not_avail":"Offline","cmd_t":"cmnd/tasmota_ABC123/POWER","val_tpl":"{{value_json.POWER}}","pl_off":"OFF","pl_on":"ON","uniq_id":"ABC123_RL_1","dev":{"ids":["ABC123"]}}"#,
    );
    let relay = "gw-m.mqtt.abc123.rl_1";
    let thing = gw
        .wait_for(
            &format!("/api/v1/things/{relay}"),
            "the Tasmota relay",
            |a| a.status == 200,
        )
        .json();
    assert_eq!(thing["kind"], "actuator");
    publish_until(
        &broker,
        "tele/tasmota_ABC123/STATE",
        br#"{"Time":"2026-11-23T10:00:00","Uptime":"0T01:00:00","POWER":"ON","Wifi":{"RSSI":80}}"#,
        &gw,
        &format!("/api/v1/things/{relay}/reading"),
        |a| a.status == 200 && a.json()[0]["vb"] == true,
    );
    let commands = broker.subscribe("cmnd/tasmota_ABC123/POWER", 1);
    let seen = gw.actuate_until_seen(
        &format!("/api/v1/things/{relay}/actuation"),
        br#"{"value": false}"#,
        commands,
    );
    assert_eq!(seen, vec!["cmnd/tasmota_ABC123/POWER OFF".to_owned()]);
    broker.publish("tele/tasmota_ABC123/LWT", b"Offline");
    gw.wait_for(
        &format!("/api/v1/things/{relay}"),
        "the relay offline",
        |a| a.json()["available"] == false,
    );

    // ESPHome: a binary sensor, then its removal by an empty config.
    let config = "homeassistant/binary_sensor/hallway/motion/config";
    broker.publish(config, br#"{"dev_cla":"motion","name":"Motion","stat_t":"hallway/binary_sensor/motion/state","avty_t":"hallway/status","uniq_id":"ESPbinary_sensormotion","dev":{"ids":"8c4b14a1b2c3","name":"hallway","sw":"esphome v2024.6.0","mdl":"esp32dev","mf":"espressif"}}"#);
    let motion = "gw-m.mqtt.hallway.motion";
    gw.wait_for(
        &format!("/api/v1/things/{motion}"),
        "the ESPHome sensor",
        |a| a.status == 200,
    );
    publish_until(
        &broker,
        "hallway/binary_sensor/motion/state",
        b"ON",
        &gw,
        &format!("/api/v1/things/{motion}/reading"),
        |a| a.status == 200 && a.json()[0]["vb"] == true,
    );
    let status = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-q",
            "1",
            "-t",
            config,
            "-n",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    gw.wait_for(
        &format!("/api/v1/things/{motion}"),
        "the sensor removed",
        |a| a.status == 404,
    );

    // A broken config is dropped; the adapter carries on.
    broker.publish("homeassistant/sensor/broken/config", b"{not json");
    broker.publish("zigbee2mqtt/living_room", br#"{"temperature":22.5}"#);
    gw.wait_for(
        &format!("/api/v1/things/{id}/reading"),
        "the next reading",
        |a| a.json()[0]["v"] == 22.5,
    );
}

/// One device flooding the broker is held to its rate; the others are not,
/// and /metrics counts what was dropped.
#[test]
fn a_flooding_device_is_rate_limited_and_counted() {
    let broker = Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let gw = gateway_with(
        &broker,
        &tmp.path().join("data"),
        "max_rate_per_device = 5.0",
    );
    let base = (testkit::now_secs() - 60.0).floor();
    let flood: Vec<String> = (0..300)
        .map(|n| json!([{"v": n as f64, "t": base + n as f64 * 0.001}]).to_string())
        .collect();
    broker.publish_lines("things/flood/level", &flood);
    broker.publish("things/quiet/level", b"7");
    gw.wait_for(
        "/api/v1/things/gw-m.mqtt.quiet.level/reading",
        "the quiet device",
        |a| a.status == 200,
    );
    let metrics = gw.wait_for("/metrics", "rate-limited messages counted", |a| {
        String::from_utf8_lossy(&a.body).contains("event=\"mqtt_rate_limited\"")
    });
    let text = String::from_utf8(metrics.body).unwrap();
    let limited: f64 = text
        .lines()
        .find(|l| l.contains("event=\"mqtt_rate_limited\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let stored = gw.history_len("gw-m.mqtt.flood.level");
    assert!(
        (10..300).contains(&stored),
        "the burst got through, the rest did not: {stored}"
    );
    // The counter also holds any other device's drops (the readiness probe).
    assert!(
        stored as f64 + limited >= 300.0,
        "every flood message was either stored or counted: {stored} + {limited}"
    );
    broker.publish("things/broken/level", br#"[{"v":"#);
    gw.wait_for("/metrics", "malformed messages counted", |a| {
        String::from_utf8_lossy(&a.body).contains("event=\"mqtt_malformed\"")
    });
}

/// Configured topic mappings bring in devices with layouts of their own.
#[test]
fn topic_mappings_decode_other_layouts() {
    let broker = Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let mappings = r#"
[[mqtt.mappings]]
topic = "sensors/{device}/{resource}"

[[mqtt.mappings]]
topic = "tele/{device}/SENSOR"
decoder = "json:/ENERGY/Power"
type = "power"
unit = "W"
"#;
    let gw = gateway_with(&broker, &tmp.path().join("data"), mappings);
    publish_until(
        &broker,
        "sensors/Boiler/flow_temp",
        b"55.5",
        &gw,
        "/api/v1/things/gw-m.mqtt.boiler.flow_temp/reading",
        |a| a.status == 200 && a.json()[0]["v"] == 55.5,
    );
    assert_eq!(
        gw.get("/api/v1/things/gw-m.mqtt.boiler.flow_temp").json()["unit"],
        "Cel"
    );
    broker.publish(
        "tele/plug9/SENSOR",
        br#"{"Time":"2026-11-23T10:00:00","ENERGY":{"Total":1.5,"Power":42}}"#,
    );
    let thing = gw
        .wait_for(
            "/api/v1/things/gw-m.mqtt.plug9.power",
            "the mapped power",
            |a| a.status == 200,
        )
        .json();
    assert_eq!(
        (thing["type"].as_str(), thing["unit"].as_str()),
        (Some("power"), Some("W"))
    );
    // The thing service is announced before its first reading is stored.
    gw.wait_for(
        "/api/v1/things/gw-m.mqtt.plug9.power/reading",
        "the first power reading",
        |a| a.status == 200 && a.json()[0]["v"] == 42.0,
    );
    // A payload without the pointed-to value is dropped; the next one is taken.
    broker.publish("tele/plug9/SENSOR", br#"{"ENERGY":{}}"#);
    broker.publish("tele/plug9/SENSOR", br#"{"ENERGY":{"Power":43.5}}"#);
    gw.wait_for(
        "/api/v1/things/gw-m.mqtt.plug9.power/reading",
        "the next power",
        |a| a.json()[0]["v"] == 43.5,
    );
}

#[test]
fn external_mode_speaks_tls_and_checks_the_broker_certificate() {
    let broker = Mosquitto::start_with_tls();
    let tls_port = broker.tls_port.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ca = broker.ca_file();
    let gw = start_external(
        &tmp.path().join("data"),
        &format!(
            "broker = \"mqtts://localhost:{tls_port}\"\nca_file = \"{}\"",
            ca.display()
        ),
    );
    let gw = wait_until_subscribed(&broker, gw);
    // A device that itself speaks TLS to the broker.
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &tls_port.to_string(), "-q", "1"])
        .args(["--cafile", ca.to_str().unwrap()])
        .args(["-t", "things/secure-1/temperature", "-m", "19.25"])
        .status()
        .unwrap();
    assert!(status.success());
    let reading = gw.wait_for(
        "/api/v1/things/gw-m.mqtt.secure-1.temperature/reading",
        "the reading sent over TLS",
        |a| a.status == 200,
    );
    assert_eq!(reading.json()[0]["v"], 19.25);

    // A gateway trusting another CA refuses the broker and says so.
    let other_ca = tempfile::tempdir().unwrap();
    testkit::issue_certificates(other_ca.path());
    let impostor = start_external(
        &tmp.path().join("data-2"),
        &format!(
            "broker = \"mqtts://localhost:{tls_port}\"\nca_file = \"{}\"\nclient_id = \"wrong-ca\"",
            other_ca.path().join("ca.pem").display()
        ),
    );
    impostor.wait_for("/metrics", "a refused TLS handshake", |a| {
        String::from_utf8_lossy(&a.body).lines().any(|line| {
            line.starts_with(
                "fogbank_adapter_events_total{adapter=\"mqtt\",event=\"mqtt_connection_errors\"}",
            )
        })
    });

    // A missing CA file stops start-up with a clear error.
    let output = std::process::Command::new(testkit::binary())
        .args(["run", "--data-dir", tmp.path().join("data-3").to_str().unwrap()])
        .args(["--http", "127.0.0.1:0"])
        .env_remove("FOGBANK_MQTT")
        .env("FOGBANK_LOG", "error")
        .env_remove("FOGBANK_CONFIG")
        .arg("--config")
        .arg({
            let path = tmp.path().join("missing-ca.toml");
            std::fs::write(
                &path,
                "[mqtt]\nmode = \"external\"\nbroker = \"mqtts://localhost:8883\"\nca_file = \"/nonexistent/ca.pem\"\n",
            )
            .unwrap();
            path
        })
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}
