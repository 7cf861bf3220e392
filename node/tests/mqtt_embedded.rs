//! The embedded MQTT broker (the default mode) against real clients:
//! Mosquitto's and paho's for 3.1.1 and 5, and raw sockets for what no
//! well-behaved client sends.

use fogbank_testkit as testkit;

use std::time::Duration;

use serde_json::json;

/// The embedded broker: `mosquitto_pub` and `mosquitto_sub` talk to the
/// gateway directly, with nothing else installed on the site.
#[test]
fn devices_talk_to_the_embedded_broker() {
    let (gw, port) = testkit::embedded_gateway("gw-e");
    testkit::mqtt_publish(port, "things/plug-2/relay", b"off");
    testkit::mqtt_publish(port, "things/plug-2/power", b"12.5");
    gw.wait_for(
        "/api/v1/things/gw-e.mqtt.plug-2.relay/reading",
        "the relay state",
        |a| a.status == 200,
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

    let commands = testkit::mqtt_subscribe(port, "things/plug-2/relay/set", 1);
    let seen = gw.actuate_until_seen(
        "/api/v1/things/gw-e.mqtt.plug-2.relay/actuation",
        br#"{"value": true}"#,
        commands,
    );
    assert_eq!(seen, vec!["things/plug-2/relay/set on".to_owned()]);

    // MQTT 5 devices use the same port.
    testkit::mqtt5_publish(port, "things/plug-5/power", b"7.5");
    let reading = gw.wait_for(
        "/api/v1/things/gw-e.mqtt.plug-5.power/reading",
        "the MQTT 5 reading",
        |a| a.status == 200,
    );
    assert_eq!(reading.json()[0]["v"], 7.5);
    testkit::mqtt5_publish(port, "things/plug-5/relay", b"on");
    gw.wait_for(
        "/api/v1/things/gw-e.mqtt.plug-5.relay/reading",
        "the MQTT 5 relay state",
        |a| a.status == 200,
    );
    let commands =
        testkit::mqtt_subscribe_with(port, "things/plug-5/relay/set", 1, &["-V", "mqttv5"]);
    let seen = gw.actuate_until_seen(
        "/api/v1/things/gw-e.mqtt.plug-5.relay/actuation",
        br#"{"value": false}"#,
        commands,
    );
    assert_eq!(seen, vec!["things/plug-5/relay/set off".to_owned()]);
}

/// The embedded broker acknowledges a QoS 1 publish only once it is
/// stored: the moment `mosquitto_pub` has its PUBACK and exits, the reading
/// is there to read, every time. MQTT 5 devices that name the topic by a
/// topic alias after the first message (`mosquitto_pub -D publish
/// topic-alias` does) are understood too, and an MQTT 3.1.1 subscriber
/// gets their messages with the topic in full.
#[test]
fn an_acknowledged_publish_is_already_stored() {
    let (gw, port) = testkit::embedded_gateway("gw-k");
    for value in 0..20 {
        testkit::mqtt_publish(port, "things/meter-1/energy", value.to_string().as_bytes());
        let answer = gw.get("/api/v1/things/gw-k.mqtt.meter-1.energy/reading");
        assert_eq!(
            answer.status, 200,
            "reading {value} not stored when acknowledged"
        );
        assert_eq!(answer.json()[0]["v"], f64::from(value), "reading {value}");
    }

    let args = [
        "-V",
        "mqttv5",
        "-t",
        "things/alias-1/temperature",
        "-D",
        "publish",
        "topic-alias",
        "3",
        "-l",
    ];
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    let subscriber =
        std::thread::spawn(move || v4_subscriber(port, "things/alias-1/#", 3, subscribed_tx));
    subscribed.recv().unwrap();
    testkit::mosquitto_pub(port, &args, b"1.5\n2.5\n3.5\n");
    assert_eq!(
        subscriber.join().unwrap(),
        ["1.5", "2.5", "3.5"].map(|v| ("things/alias-1/temperature".to_owned(), v.to_owned()))
    );
    let values: Vec<f64> = gw
        .get("/api/v1/things/gw-k.mqtt.alias-1.temperature/readings?from=0")
        .json()
        .as_array()
        .expect("a SenML pack")
        .iter()
        .filter_map(|r| r["v"].as_f64())
        .collect();
    assert_eq!(values, vec![1.5, 2.5, 3.5]);
}

/// The front door passes to the broker only what some client may want,
/// and acknowledges the rest itself once stored. Whatever a subscriber
/// asks for, whenever it asks, still reaches it: a device connected before
/// anyone subscribed, a persistent session that was away when the message
/// came, a retained message published to nobody, an MQTT 5 shared
/// subscription; and QoS 2 publishes to nobody are stored and completed.
#[test]
fn subscribers_get_what_they_ask_for_whenever_they_ask() {
    use std::io::Write;
    let (gw, port) = testkit::embedded_gateway("gw-w");
    let stored = |device: &str| {
        gw.get(&format!(
            "/api/v1/things/gw-w.mqtt.{device}.temperature/readings?from=0"
        ))
        .json()
        .as_array()
        .map_or(0, Vec::len)
    };

    // A device connected while nobody listens; a subscriber comes.
    let mut device = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", "things/early/temperature", "-l"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = device.stdin.take().unwrap();
    lines.write_all(b"1\n").unwrap();
    gw.wait_for(
        "/api/v1/things/gw-w.mqtt.early.temperature/reading",
        "the reading sent before anyone subscribed",
        |a| a.status == 200,
    );
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    let subscriber =
        std::thread::spawn(move || v4_subscriber(port, "things/early/#", 1, subscribed_tx));
    subscribed.recv().unwrap();
    lines.write_all(b"2\n").unwrap();
    assert_eq!(
        subscriber.join().unwrap(),
        [("things/early/temperature".to_owned(), "2".to_owned())]
    );
    drop(lines);
    assert!(device.wait().unwrap().success());
    assert_eq!(stored("early"), 2);

    // A persistent session that went away gets what came meanwhile.
    let keeper = || {
        std::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-c", "-i", "keeper", "-t", "things/away/#", "-v"])
            .args(["-C", "1", "-W", "2"])
            .output()
            .unwrap()
    };
    let first = keeper();
    assert!(first.stdout.is_empty(), "nothing was published yet");
    testkit::mqtt_publish(port, "things/away/temperature", b"3.5");
    assert_eq!(
        String::from_utf8_lossy(&keeper().stdout),
        "things/away/temperature 3.5\n"
    );

    // Retained, published to nobody: a later subscriber gets it.
    testkit::mosquitto_pub(port, &["-t", "things/kept/temperature", "-r", "-s"], b"4.5");
    let retained = testkit::mqtt_subscribe(port, "things/kept/#", 1)
        .join()
        .unwrap();
    assert_eq!(retained, ["things/kept/temperature 4.5"]);

    // QoS 2 to nobody: stored, and the exchange completes.
    testkit::mosquitto_pub(
        port,
        &["-q", "2", "-t", "things/q2/temperature", "-s"],
        b"5.5",
    );
    assert_eq!(stored("q2"), 1);

    // An MQTT 5 shared subscription.
    let shared =
        testkit::mqtt_subscribe_with(port, "$share/apps/things/shared/#", 1, &["-V", "mqttv5"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !shared.is_finished() && std::time::Instant::now() < deadline {
        testkit::mqtt5_publish(port, "things/shared/temperature", b"6.5");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(shared.join().unwrap(), ["things/shared/temperature 6.5"]);
}

/// Acknowledgements reach a device in the order of its publishes (MQTT
/// 3.1.1 §4.6), whether the front door gives them (nobody wants the topic)
/// or the broker does (someone subscribed): one burst of a SUBSCRIBE to
/// `wanted/#` and QoS 1 publishes to unwanted, wanted and unwanted topics.
#[test]
fn acknowledgements_keep_the_order_of_the_publishes() {
    let (gw, port) = testkit::embedded_gateway("gw-o");
    for level in [4u8, 5] {
        let v5 = level == 5;
        // MQTT 5: an empty property list.
        let properties: &[u8] = if v5 { &[0] } else { &[] };
        let filter = format!("things/wanted{level}/#");
        let mut subscribe = 1u16.to_be_bytes().to_vec();
        if v5 {
            subscribe.push(0);
        }
        subscribe.extend_from_slice(&(filter.len() as u16).to_be_bytes());
        subscribe.extend_from_slice(filter.as_bytes());
        subscribe.push(1);
        let mut burst = [&[0x82, subscribe.len() as u8][..], &subscribe].concat();
        for (pkid, topic) in [
            (2, "things/unwanted/a"),
            (3, "things/wanted/b"),
            (4, "things/unwanted/c"),
            (5, "things/unwanted/d"),
        ] {
            let topic = topic.replace("wanted/", &format!("wanted{level}/"));
            burst.extend(qos1_publish(topic.as_bytes(), pkid, properties));
        }
        let acknowledged = |answer: &[u8]| -> Vec<u16> {
            fogbank_mqtt::packet::complete(answer)
                .expect("whole packets")
                .into_iter()
                .filter(|p| fogbank_mqtt::packet::kind(p) == Some(fogbank_mqtt::packet::PUBACK))
                .filter_map(fogbank_mqtt::packet::acknowledged)
                .collect()
        };
        let answer = raw_session(port, level, &format!("orderly-{level}"), &burst, |a| {
            acknowledged(a).len() >= 4
        });
        assert_eq!(
            acknowledged(&answer),
            [2, 3, 4, 5],
            "MQTT {level}: {answer:x?}"
        );
        for device in ["a", "c", "d"] {
            let id = format!("gw-o.mqtt.unwanted{level}.{device}");
            assert_eq!(
                gw.get(&format!("/api/v1/things/{id}/reading")).status,
                200,
                "{id}"
            );
        }
    }
}

/// An MQTT 3.1.1 subscriber (rumqttc) that says when it is subscribed and
/// returns the first `count` messages (topic, payload) it gets.
fn v4_subscriber(
    port: u16,
    filter: &str,
    count: usize,
    subscribed: std::sync::mpsc::Sender<()>,
) -> Vec<(String, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = rumqttc::MqttOptions::new("v4-subscriber", "127.0.0.1", port);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < count {
            let event = tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await;
            match event {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => {
                    let _ = subscribed.send(());
                }
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => got.push((
                    p.topic.clone(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                )),
                Ok(Ok(_)) => {}
                // The broker dropped the subscriber, or nothing came.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        got
    })
}

/// An MQTT 5 message with properties (a user property, a content type)
/// reaches a persistent MQTT 5 subscriber with them and a persistent MQTT
/// 3.1.1 subscriber without them, which 3.1.1 cannot carry. Neither that
/// message nor a client reconnecting under the same id afterwards stops
/// the broker from taking 3.1.1 connections. (Unpatched, rumqttd 0.20
/// panics writing the properties to the 3.1.1 subscriber, and again when it
/// reconnects, which poisons a lock and refuses every later 3.1.1 client.)
#[test]
fn mqtt5_properties_reach_both_protocols_and_break_nothing() {
    let (gw, port) = testkit::embedded_gateway("gw-p");
    let filter = "things/props-1/#";
    let v4 = ["-V", "mqttv311", "-c", "-i", "keeper-4"];
    let v5 = ["-V", "mqttv5", "-c", "-x", "600", "-i", "keeper-5"];
    // Subscribed, then away: the broker keeps what comes for them.
    for session in [&v4[..], &v5[..]] {
        let subscribed = std::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(session)
            .args(["-t", filter, "-E"])
            .status()
            .unwrap();
        assert!(subscribed.success(), "{session:?} could not subscribe");
    }
    let properties = [
        "-V",
        "mqttv5",
        "-t",
        "things/props-1/level",
        "-D",
        "publish",
        "user-property",
        "site",
        "north",
        "-D",
        "publish",
        "content-type",
        "text/plain",
        "-s",
    ];
    testkit::mosquitto_pub(port, &properties, b"4.5");
    let first = testkit::mqtt_subscribe_with(port, filter, 1, &v4)
        .join()
        .unwrap();
    assert_eq!(first, ["things/props-1/level 4.5"]);

    testkit::mqtt_publish(port, "things/props-1/level", b"5.5");
    let reading = gw.get("/api/v1/things/gw-p.mqtt.props-1.level/reading");
    assert_eq!(
        reading.json()[0]["v"],
        5.5,
        "a 3.1.1 device after the properties"
    );
    let v4_later = testkit::mqtt_subscribe_with(port, filter, 1, &v4)
        .join()
        .unwrap();
    assert_eq!(v4_later, ["things/props-1/level 5.5"]);
    let with_format = [&v5[..], &["-F", "%t %p %P"]].concat();
    let v5_all = testkit::mqtt_subscribe_with(port, filter, 2, &with_format)
        .join()
        .unwrap();
    assert_eq!(
        v5_all,
        [
            "things/props-1/level 4.5 site:north",
            "things/props-1/level 5.5 "
        ]
    );
}

/// Keep Alive 0 turns keep-alive off (MQTT 3.1.1 §3.1.2.10, MQTT 5
/// §3.1.2.10), and small device libraries (MicroPython's umqtt.simple)
/// connect with it by default: an independent client (paho-mqtt) so
/// connected is accepted and its QoS 1 publish stored, in both protocols.
/// (rumqttd 0.20 closes such a connection without a CONNACK.)
#[test]
fn a_client_with_keep_alive_off_is_served() {
    let (gw, port) = testkit::embedded_gateway("gw-ka");
    let script = testkit::package_file("tests/peers/mqtt_keepalive0.py");
    for (level, device) in [("4", "ka-311"), ("5", "ka-5")] {
        let topic = format!("things/{device}/level");
        let status = std::process::Command::new(testkit::python())
            .arg(&script)
            .args([&port.to_string(), level, &topic, "9.5"])
            .status()
            .unwrap();
        assert!(status.success(), "MQTT level {level} with Keep Alive 0");
        let reading = gw.get(&format!("/api/v1/things/gw-ka.mqtt.{device}.level/reading"));
        assert_eq!(reading.json()[0]["v"], 9.5);
    }
}

/// A client that sends what only a server may send (CONNACK) is
/// disconnected, and the broker still serves the next client under that
/// id and everyone after. (Unpatched, rumqttd 0.20's MQTT 5 listener panics
/// on it and then refuses every connection.)
#[test]
fn a_server_packet_from_a_client_only_closes_its_connection() {
    let (gw, port) = testkit::embedded_gateway("gw-q");
    for _ in 0..2 {
        let answer = raw_client(port, 5, "rogue", &[0x20, 3, 0, 0, 0]);
        assert!(answer.is_empty(), "the CONNACK was answered: {answer:?}");
    }
    testkit::mqtt5_publish(port, "things/after-rogue/level", b"8");
    let reading = gw.get("/api/v1/things/gw-q.mqtt.after-rogue.level/reading");
    assert_eq!(reading.json()[0]["v"], 8.0);
}

/// A PUBLISH to what is not a topic name — a wildcard, nothing, U+0000, an
/// MQTT 5 alias never set — or with a subscription identifier, which only
/// a server sends, is a protocol error: it closes the client's
/// connection unacknowledged. Subscribers never see it. (rumqttd passes
/// wildcard and empty topics on, and an empty one makes subscribers'
/// clients drop their connections.)
#[test]
fn a_publish_to_no_topic_closes_only_its_connection() {
    let (gw, port) = testkit::embedded_gateway("gw-r");
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    let subscriber = std::thread::spawn(move || v4_subscriber(port, "#", 1, subscribed_tx));
    subscribed.recv().unwrap();
    let qos1 = |topic: &[u8], properties: &[u8]| qos1_publish(topic, 1, properties);
    for (i, (level, publish)) in [
        (4, qos1(b"things/#", b"")),
        (4, qos1(b"things/+/level", b"")),
        (4, qos1(b"", b"")),
        (4, qos1(b"things/a\0b/level", b"")),
        (5, qos1(b"things/c/level", &[2, 0x0b, 1])),
        (5, qos1(b"", &[3, 0x23, 0, 9])),
    ]
    .into_iter()
    .enumerate()
    {
        // One client id each: a takeover of a session the front door is
        // still closing is not what this test is about.
        let answer = raw_client(port, level, &format!("sloppy-{i}"), &publish);
        assert!(answer.is_empty(), "{publish:?} was answered: {answer:?}");
    }
    testkit::mqtt_publish(port, "things/ok-1/level", b"6");
    assert_eq!(
        subscriber.join().unwrap(),
        [("things/ok-1/level".to_owned(), "6".to_owned())]
    );
    let reading = gw.get("/api/v1/things/gw-r.mqtt.ok-1.level/reading");
    assert_eq!(reading.json()[0]["v"], 6.0);
}

/// Two thousand hostile clients (`node/tests/peers/mqtt_hostile.py`: after
/// a good CONNECT, random packets of every kind, odd topics and MQTT 5
/// properties, taking over each other's sessions) neither stop the
/// embedded broker nor drop its `#` subscribers of either protocol, and
/// devices carry on.
#[test]
fn hostile_clients_stop_no_one() {
    let (gw, port) = testkit::embedded_gateway("gw-h");
    testkit::mosquitto_pub(port, &["-r", "-t", "ready/probe", "-s"], b"1");
    let watchers = ["mqttv311", "mqttv5"].map(|version| Watcher::start(port, version));
    for watcher in &watchers {
        assert!(
            watcher.saw("ready/probe 1"),
            "{} never subscribed",
            watcher.version
        );
    }
    let hostile = std::process::Command::new(testkit::python())
        .arg(testkit::package_file("tests/peers/mqtt_hostile.py"))
        .args([&port.to_string(), "2000", "7"])
        .output()
        .unwrap();
    assert!(hostile.status.success(), "{hostile:?}");

    testkit::mqtt_publish(port, "things/after-hostile/level", b"3");
    for watcher in &watchers {
        assert!(
            watcher.saw("things/after-hostile/level 3"),
            "the {} subscriber was dropped",
            watcher.version
        );
    }
    let reading = gw.get("/api/v1/things/gw-h.mqtt.after-hostile.level/reading");
    assert_eq!(reading.json()[0]["v"], 3.0);
}

/// `mosquitto_sub -t '#'` speaking `version`, read as it prints.
struct Watcher {
    version: &'static str,
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Watcher {
    fn start(port: u16, version: &'static str) -> Watcher {
        use std::io::BufRead;
        let mut child = std::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-V", version, "-t", "#", "-v"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watcher {
            version,
            child,
            lines,
        }
    }

    /// Whether `line` comes within 10 s (and the subscriber is still on).
    fn saw(&self, line: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(seen) if seen == line => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A QoS 1 PUBLISH of the payload `1` to `topic`, written by hand as MQTT
/// 3.1.1 §3.3 and MQTT 5 §3.3 lay it out; `properties` with its length
/// (MQTT 5) or empty (3.1.1).
fn qos1_publish(topic: &[u8], pkid: u16, properties: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic);
    body.extend_from_slice(&pkid.to_be_bytes());
    body.extend_from_slice(properties);
    body.extend_from_slice(b"1");
    [&[0x32, body.len() as u8][..], &body].concat()
}

/// Connects to the broker on `port` as MQTT `level` (4 or 5) by hand,
/// sends `packets`, and returns what came back after the CONNACK until the
/// connection closed.
fn raw_client(port: u16, level: u8, client_id: &str, packets: &[u8]) -> Vec<u8> {
    raw_session(port, level, client_id, packets, |_| false)
}

/// [`raw_client`], reading only until what came back is `enough`.
fn raw_session(
    port: u16,
    level: u8,
    client_id: &str,
    packets: &[u8],
    enough: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut client = testkit::mqtt_session(port, level, client_id);
    client.write_all(packets).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    // Ends when the broker closes the connection (or the timeout does).
    while !enough(&answer) {
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => answer.extend_from_slice(&chunk[..read]),
        }
    }
    answer
}

/// A packet far over `max_message_bytes` (256 KiB) closes that device's
/// connection at the front door, before it is held whole in memory; the
/// broker and everyone else carry on.
#[test]
fn an_oversized_packet_closes_only_its_connection() {
    let (gw, port) = testkit::embedded_gateway("gw-o");
    let huge = vec![b'7'; 1 << 20];
    let sent = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", "things/big-1/level", "-s"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&huge)?;
            child.wait()
        })
        .unwrap();
    assert!(!sent.success(), "a 1 MiB message was acknowledged");
    assert_eq!(gw.get("/api/v1/things/gw-o.mqtt.big-1.level").status, 404);
    testkit::mqtt_publish(port, "things/small-1/level", b"3");
    let reading = gw.get("/api/v1/things/gw-o.mqtt.small-1.level/reading");
    assert_eq!(reading.json()[0]["v"], 3.0);
}

#[test]
fn a_taken_mqtt_port_stops_the_gateway_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(testkit::binary())
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

/// A fast burst from a publisher with a wide in-flight window (rumqttc,
/// not mosquitto_pub, which paces itself): every message is stored once.
#[test]
fn a_burst_through_the_embedded_broker_is_stored_whole() {
    let (gw, port) = testkit::embedded_gateway("gw-b");
    let base = (testkit::now_secs() - 600.0).floor();
    let lines: Vec<String> = (0..5000)
        .map(|n| json!([{"v": n as f64, "t": base + n as f64 * 0.001}]).to_string())
        .collect();
    // mosquitto_pub paces itself; rumqttc with a wide in-flight window
    // delivers the burst as fast as the broker takes it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut options = rumqttc::MqttOptions::new("burst", "127.0.0.1", port);
        options.set_inflight(500);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1000);
        let feeder = tokio::spawn(async move {
            for line in lines {
                client
                    .publish("things/burst/level", rumqttc::QoS::AtLeastOnce, false, line)
                    .await
                    .unwrap();
            }
        });
        let mut acked = 0;
        while acked < 5000 {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) =
                eventloop.poll().await.unwrap()
            {
                acked += 1;
            }
        }
        feeder.await.unwrap();
    });
    gw.wait_for("/health", "all 5000 readings", |_| {
        gw.history_len("gw-b.mqtt.burst.level") >= 5000
    });
    assert_eq!(gw.history_len("gw-b.mqtt.burst.level"), 5000);
}
