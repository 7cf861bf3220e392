//! CoAP against real peers: aiocoap devices that register at `/rd`
//! (node/tests/peers/aiocoap_device.py), libcoap's `coap-server-notls` as
//! a configured device, and libcoap's `coap-client-notls` as the
//! application.

use fogbank_testkit as testkit;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{Gateway, LinePeer, free_udp_port, python};

/// A gateway `gw-c` with its CoAP endpoint on a free port, configured by
/// `extra` TOML; and that port.
fn coap_gateway(args: &[&str], extra: &str) -> (Gateway, u16) {
    let port = free_udp_port();
    let listen = format!("127.0.0.1:{port}");
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("fogbank.toml");
    std::fs::write(&config, extra).unwrap();
    let mut all = vec!["--coap", &listen, "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    // The config is read at start-up only.
    let gw = Gateway::start(&all, &[("FOGBANK_GATEWAY_ID", "gw-c")]);
    (gw, port)
}

/// An aiocoap device process, driven by the lines it prints.
struct Device(LinePeer);

impl Device {
    /// Starts a device on a free port; another port if that one was taken
    /// in the meantime (parallel tests bind ports too).
    fn start(gateway_port: u16, endpoint: &str, extra: &[&str]) -> Device {
        for _ in 0..5 {
            if let Some(device) = Self::try_start(gateway_port, endpoint, free_udp_port(), extra) {
                return device;
            }
        }
        panic!("the aiocoap device {endpoint} never registered");
    }

    /// The device process; `None` if it exited before registering.
    fn try_start(gateway_port: u16, endpoint: &str, port: u16, extra: &[&str]) -> Option<Device> {
        let script = testkit::package_file("tests/peers/aiocoap_device.py");
        let mut command = Command::new(python());
        command
            .arg(script)
            .args(["--rd", &format!("coap://127.0.0.1:{gateway_port}")])
            .args(["--ep", endpoint, "--port", &port.to_string()])
            .args(extra);
        let mut device = LinePeer::spawn(command);
        match device.wait_for_line("registered", LINE_WAIT) {
            Ok(_) => Some(Device(device)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                device.kill();
                None
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("the device never registered"),
        }
    }

    fn expect_line(&self, wanted: &str) {
        self.0.expect_line(wanted, LINE_WAIT);
    }

    fn kill(&mut self) {
        self.0.kill();
    }
}

/// How long a device may take to say what it does.
const LINE_WAIT: Duration = Duration::from_secs(15);

/// Runs `coap-client-notls` with `args`: (success, stdout).
fn coap_client(args: &[&str]) -> (bool, String) {
    let output = Command::new("coap-client-notls")
        .args(args)
        .output()
        .expect("coap-client-notls is installed (scripts/test installs libcoap3-bin)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn history(gw: &Gateway, id: &str) -> Vec<serde_json::Value> {
    let answer = gw.get(&format!("/api/v1/things/{id}/readings?from=0&limit=1000"));
    assert_eq!(answer.status, 200);
    answer.json().as_array().cloned().unwrap_or_default()
}

/// The numbers in a SenML JSON history, in time order.
fn values(records: &[serde_json::Value]) -> Vec<f64> {
    records.iter().filter_map(|r| r["v"].as_f64()).collect()
}

#[test]
fn an_aiocoap_device_registers_is_observed_and_actuated() {
    let (gw, port) = coap_gateway(&[], "");
    let _device = Device::start(port, "aio-1", &[]);
    let temperature = "gw-c.coap.aio-1.sensors-temp";
    let thing = gw
        .wait_for(
            &format!("/api/v1/things/{temperature}"),
            "the registration",
            |a| a.status == 200,
        )
        .json();
    assert_eq!(
        (thing["type"].as_str(), thing["unit"].as_str()),
        (Some("temperature"), Some("Cel"))
    );
    // Every notification is stored: the device's values rise by 0.5 each.
    gw.wait_for(
        &format!("/api/v1/things/{temperature}/readings?from=0&limit=1000"),
        "notifications",
        |a| a.json().as_array().is_some_and(|r| r.len() >= 6),
    );
    let seen = values(&history(&gw, temperature));
    assert!(
        seen.windows(2).all(|w| (w[1] - w[0] - 0.5).abs() < 1e-9),
        "a notification was lost or doubled: {seen:?}"
    );

    // Applications read it over CoAP too.
    let (ok, text) = coap_client(&[
        "-m",
        "get",
        "-A",
        "0",
        &format!("coap://127.0.0.1:{port}/things/{temperature}"),
    ]);
    assert!(ok);
    assert!(
        text.trim().parse::<f64>().is_ok_and(|v| v >= 20.0),
        "{text:?}"
    );

    // Actuation over REST and over CoAP reaches the device.
    let lamp = "gw-c.coap.aio-1.lamp";
    let answer = gw.write(
        "PUT",
        &format!("/api/v1/things/{lamp}/actuation"),
        "application/json",
        br#"{"value": true}"#,
    );
    assert!(
        answer.status == 200 || answer.status == 202,
        "{}",
        answer.status
    );
    _device.expect_line("lamp on");
    let (ok, _) = coap_client(&[
        "-m",
        "put",
        "-e",
        "off",
        &format!("coap://127.0.0.1:{port}/things/{lamp}"),
    ]);
    assert!(ok);
    _device.expect_line("lamp off");
    // The lamp is observed too: its state follows.
    gw.wait_for(
        &format!("/api/v1/things/{lamp}/reading"),
        "the lamp's state",
        |a| a.status == 200 && a.json()[0]["vb"] == json!(false),
    );
}

/// A device that deletes its registration is no longer followed: the
/// gateway ends its observations (the device's next notification is
/// answered with a reset, RFC 7641 §3.6, and aiocoap drops the observer)
/// and stores nothing more from it.
#[test]
fn a_deregistered_device_is_no_longer_observed() {
    let (gw, port) = coap_gateway(&[], "");
    let device = Device::start(port, "aio-d", &["--deregister-after", "1.5"]);
    let temperature = "gw-c.coap.aio-d.sensors-temp";
    gw.wait_for(
        &format!("/api/v1/things/{temperature}/reading"),
        "a notification",
        |a| a.status == 200,
    );
    device.expect_line("deregistered");
    device.expect_line("temperature observers 0");
    let stored = history(&gw, temperature).len();
    // The device goes on counting every 0.3 s; none of it arrives.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(history(&gw, temperature).len(), stored);
}

#[test]
fn a_lapsed_registration_makes_things_unavailable_until_the_device_returns() {
    let (gw, port) = coap_gateway(&[], "");
    let mut device = Device::start(port, "aio-2", &["--lifetime", "2"]);
    let thing = "/api/v1/things/gw-c.coap.aio-2.sensors-temp";
    gw.wait_for(thing, "the registration", |a| {
        a.status == 200 && a.json()["available"] == true
    });
    device.kill();
    gw.wait_for(thing, "the lapsed registration", |a| {
        a.json()["available"] == false
    });
    // The device restarts (at a new address, as after a DHCP lease) and
    // registers again.
    let _device = Device::start(port, "aio-2", &["--lifetime", "2"]);
    gw.wait_for(thing, "the device back", |a| a.json()["available"] == true);
    let before = history(&gw, "gw-c.coap.aio-2.sensors-temp").len();
    gw.wait_for(
        &format!("{thing}/readings?from=0&limit=1000"),
        "readings again",
        |a| a.json().as_array().is_some_and(|r| r.len() > before + 2),
    );
}

#[test]
fn lwm2m_objects_become_thing_services() {
    let (gw, port) = coap_gateway(&[], "");
    let device = Device::start(port, "lw-1", &["--lwm2m"]);
    let temperature = "gw-c.coap.lw-1.temperature";
    let reading = gw.wait_for(
        &format!("/api/v1/things/{temperature}/reading"),
        "a TLV reading",
        |a| a.status == 200,
    );
    let value = reading.json()[0]["v"].as_f64().unwrap();
    assert!((20.0..100.0).contains(&value), "{value}");
    let thing = gw.get(&format!("/api/v1/things/{temperature}")).json();
    assert_eq!(thing["unit"], "Cel");
    // The Device object, read once at registration, describes every
    // thing service of the device; the battery level is not kept.
    for id in [temperature, "gw-c.coap.lw-1.light-control"] {
        let described = gw.wait_for(&format!("/api/v1/things/{id}"), "the device info", |a| {
            a.json()["metadata"]["device"].is_object()
        });
        let device_info = &described.json()["metadata"]["device"];
        assert_eq!(
            device_info["manufacturer"], "Aiocoap Works",
            "{device_info}"
        );
        assert_eq!(device_info["model"], "AD-lw-1");
        assert!(device_info["serial"].as_str().unwrap().starts_with("SN-"));
        assert_eq!(device_info["firmware"], "1.0.7");
        assert!(device_info["read_ms"].as_f64().unwrap() > 0.0);
        assert!(device_info.get("battery").is_none() && device_info.get("9").is_none());
    }
    assert_eq!(
        metric(
            &gw,
            "fogbank_adapter_events_total{adapter=\"coap\",event=\"coap_device_info_read\"}"
        ),
        1.0
    );
    let answer = gw.write(
        "PUT",
        "/api/v1/things/gw-c.coap.lw-1.light-control/actuation",
        "application/json",
        br#"{"value": true}"#,
    );
    assert!(
        answer.status == 200 || answer.status == 202,
        "{}",
        answer.status
    );
    device.expect_line("lamp on");
}

/// An LWM2M device that answers in SenML names its resource by path,
/// with a leading slash (`/3303/0/5700`) that RFC 8428 names may not
/// start with: from a registered LWM2M device it is accepted.
#[test]
fn lwm2m_senml_named_by_path_is_accepted() {
    let (gw, port) = coap_gateway(&[], "");
    let _device = Device::start(port, "lw-s", &["--lwm2m", "--senml"]);
    let reading = gw.wait_for(
        "/api/v1/things/gw-c.coap.lw-s.temperature/reading",
        "a SenML reading",
        |a| a.status == 200,
    );
    let value = reading.json()[0]["v"].as_f64().unwrap();
    assert!((20.0..100.0).contains(&value), "{value}");
    // Its Device object comes in SenML too.
    let described = gw.wait_for(
        "/api/v1/things/gw-c.coap.lw-s.temperature",
        "the device info in SenML",
        |a| a.json()["metadata"]["device"]["model"] == "AD-lw-s",
    );
    assert_eq!(
        described.json()["metadata"]["device"]["firmware"],
        "1.0.7",
        "{}",
        described.json()
    );
}

#[test]
fn coap_clients_list_read_observe_and_actuate() {
    let (gw, port) = coap_gateway(&["--demo"], "");
    gw.wait_for_campus("gw-c");
    let base = format!("coap://127.0.0.1:{port}");

    // Discovery with RFC 6690 filtering, whole and block-wise.
    let (ok, links) = coap_client(&[
        "-m",
        "get",
        &format!("{base}/.well-known/core?rt=temperature"),
    ]);
    assert!(ok);
    let count = links.split(",<").count();
    assert_eq!(count, 8, "{links}");
    assert!(links.contains("</things/gw-c.sim.building-a-floor-1.temperature>;rt=\"temperature\""));
    let (_, building_b) = coap_client(&[
        "-m",
        "get",
        &format!("{base}/.well-known/core?rt=temperature&loc=campus/building-b*"),
    ]);
    assert_eq!(building_b.split(",<").count(), 4, "{building_b}");
    assert!(building_b.contains(";loc=\"campus/building-b/floor-1\""));
    let (_, whole) = coap_client(&["-m", "get", &format!("{base}/things")]);
    let (_, blocks) = coap_client(&["-m", "get", "-b", "64", &format!("{base}/things")]);
    assert!(whole.len() > 1024, "a listing long enough for Block2");
    assert_eq!(whole, blocks);
    let (_, rd) = coap_client(&["-m", "get", &format!("{base}/.well-known/core?rt=core.rd")]);
    assert_eq!(rd.trim(), "</rd>;rt=\"core.rd\";ct=40");

    // Every new reading reaches an observer.
    let id = "gw-c.http.boiler.temperature";
    let first = gw.post_senml(
        &format!("/api/v1/things/{id}/readings"),
        &json!([{"u": "Cel", "v": 1.0}]),
    );
    assert!(first.status < 300, "{}", first.status);
    let observer = {
        let uri = format!("{base}/things/{id}");
        std::thread::spawn(move || coap_client(&["-s", "4", "-A", "110", &uri]))
    };
    std::thread::sleep(Duration::from_millis(800));
    for v in 2..=6 {
        gw.post_senml(
            &format!("/api/v1/things/{id}/readings"),
            &json!([{"u": "Cel", "v": f64::from(v)}]),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, notifications) = observer.join().unwrap();
    for v in 1..=6 {
        assert!(
            notifications.contains(&format!("\"v\":{v}"))
                || notifications.contains(&format!("\"v\":{v}.0")),
            "value {v} not observed in {notifications}"
        );
    }

    // Formats: text, SenML CBOR; an unknown Accept is 4.06.
    let (ok, text) = coap_client(&["-A", "0", &format!("{base}/things/{id}")]);
    assert!(ok);
    assert_eq!(text.trim(), "6");
    let (ok, _) = coap_client(&["-A", "112", &format!("{base}/things/{id}")]);
    assert!(ok);
    let not_acceptable = Command::new("coap-client-notls")
        .args(["-A", "50", &format!("{base}/things/{id}")])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&not_acceptable.stdout).into_owned()
        + &String::from_utf8_lossy(&not_acceptable.stderr);
    assert!(said.contains("4.06"), "{said}");

    // PUT actuates a simulated lamp.
    let lamp = "gw-c.sim.building-a-floor-2.lamp";
    let (ok, _) = coap_client(&["-m", "put", "-e", "on", &format!("{base}/things/{lamp}")]);
    assert!(ok);
    gw.wait_for(
        &format!("/api/v1/things/{lamp}/reading"),
        "the lamp on",
        |a| a.json()[0]["vb"] == json!(true),
    );
}

#[test]
fn a_configured_libcoap_server_is_followed() {
    let server_port = free_udp_port();
    let mut server = Command::new("coap-server-notls")
        .args(["-A", "127.0.0.1", "-p", &server_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("coap-server-notls is installed (scripts/test installs libcoap3-bin)");
    let config =
        format!("[coap]\npoll_interval_secs = 1\ndevices = [\"coap://127.0.0.1:{server_port}\"]\n");
    let (gw, _) = coap_gateway(&[], &config);
    let device = format!("127-0-0-1-{server_port}");
    // /time is observable and says the time as text; /example_data is polled.
    let time = gw.wait_for(
        &format!("/api/v1/things/gw-c.coap.{device}.time/reading"),
        "the observed clock",
        |a| a.status == 200,
    );
    assert!(
        time.json()[0]["vs"].as_str().is_some_and(|s| !s.is_empty()),
        "{:?}",
        time.json()
    );
    gw.wait_for(
        &format!("/api/v1/things/gw-c.coap.{device}.example_data/reading"),
        "the polled resource",
        |a| a.status == 200,
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn bad_datagrams_get_the_rfc_answer_and_serving_goes_on() {
    let (_gw, port) = coap_gateway(&[], "");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    let exchange = |datagram: &[u8]| -> Option<Vec<u8>> {
        socket.send(datagram).unwrap();
        let mut buffer = [0u8; 1500];
        socket.recv(&mut buffer).ok().map(|n| buffer[..n].to_vec())
    };
    // A confirmable message with a truncated option: reset (RFC 7252 §4.2).
    assert_eq!(
        exchange(&[0x40, 0x01, 0x12, 0x34, 0xd5]),
        Some(vec![0x70, 0x00, 0x12, 0x34])
    );
    // An unknown critical option (9): 4.02 Bad Option, piggybacked.
    let reply = exchange(&[0x40, 0x01, 0x12, 0x35, 0x90]).unwrap();
    assert_eq!(&reply[..4], &[0x60, 0x82, 0x12, 0x35]);
    // A CoAP ping: reset.
    assert_eq!(
        exchange(&[0x40, 0x00, 0x12, 0x36]),
        Some(vec![0x70, 0x00, 0x12, 0x36])
    );
    // Garbage and another protocol version: silence.
    socket.send(&[0x01]).unwrap();
    socket.send(&[0x80, 0x01, 0x12, 0x37]).unwrap();
    // A repeated request gets the same answer again (deduplication).
    let get = [
        0x40, 0x01, 0x12, 0x38, 0xbb, b'.', b'w', b'e', b'l', b'l', b'-', b'k', b'n', b'o', b'w',
        b'n', 0x04, b'c', b'o', b'r', b'e',
    ];
    let first = exchange(&get).unwrap();
    let again = exchange(&get).unwrap();
    assert_eq!(first, again);
    assert_eq!(&first[..4], &[0x60, 0x45, 0x12, 0x38]);
    // And the endpoint still serves.
    let (ok, _) = coap_client(&[
        "-m",
        "get",
        &format!("coap://127.0.0.1:{port}/.well-known/core"),
    ]);
    assert!(ok);
}

/// A device made of one UDP socket, driven by the test: it registers
/// `/temp` (observable) and answers each Observe GET with Max-Age 1.
struct RawDevice {
    socket: UdpSocket,
    gateway: std::net::SocketAddr,
}

impl RawDevice {
    fn register(gateway_port: u16, endpoint: &str, links: &str, block: bool) -> RawDevice {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let device = RawDevice {
            socket,
            gateway: ([127, 0, 0, 1], gateway_port).into(),
        };
        let body = links.as_bytes();
        let chunks: Vec<&[u8]> = if block {
            body.chunks(32).collect()
        } else {
            vec![body]
        };
        for (num, chunk) in chunks.iter().enumerate() {
            let mut packet = coap_lite::Packet::new();
            packet.header.set_type(coap_lite::MessageType::Confirmable);
            packet.header.code = coap_lite::MessageClass::Request(coap_lite::RequestType::Post);
            packet.header.message_id = 100 + num as u16;
            packet.set_token(vec![1, num as u8]);
            packet.add_option(coap_lite::CoapOption::UriPath, b"rd".to_vec());
            packet.add_option(
                coap_lite::CoapOption::UriQuery,
                format!("ep={endpoint}").into_bytes(),
            );
            if block {
                let more = u32::from(num + 1 < chunks.len());
                // 32-byte blocks: szx 1.
                let value = ((num as u32) << 4) | (more << 3) | 1;
                let bytes: Vec<u8> = value
                    .to_be_bytes()
                    .iter()
                    .copied()
                    .skip_while(|b| *b == 0)
                    .collect();
                packet.add_option(coap_lite::CoapOption::Block1, bytes);
            }
            packet.payload = chunk.to_vec();
            let answer = device.exchange(&packet);
            let expected = if num + 1 < chunks.len() {
                coap_lite::ResponseType::Continue
            } else {
                coap_lite::ResponseType::Created
            };
            assert_eq!(
                answer.header.code,
                coap_lite::MessageClass::Response(expected)
            );
        }
        device
    }

    /// Sends a confirmable message and returns the ACK for it; requests the
    /// gateway sends meanwhile are answered.
    fn exchange(&self, packet: &coap_lite::Packet) -> coap_lite::Packet {
        self.socket
            .send_to(&packet.to_bytes().unwrap(), self.gateway)
            .unwrap();
        loop {
            let message = self.receive().expect("an answer from the gateway");
            if message.header.message_id == packet.header.message_id
                && message.header.get_type() == coap_lite::MessageType::Acknowledgement
            {
                return message;
            }
            self.serve(&message);
        }
    }

    fn receive(&self) -> Option<coap_lite::Packet> {
        let mut buffer = [0u8; 2048];
        let n = self.socket.recv(&mut buffer).ok()?;
        coap_lite::Packet::from_bytes(&buffer[..n]).ok()
    }

    /// Answers a GET (Observe or not) with 20 and Max-Age 1; `true` if it
    /// was an Observe registration.
    fn serve(&self, request: &coap_lite::Packet) -> bool {
        if request.header.code != coap_lite::MessageClass::Request(coap_lite::RequestType::Get) {
            return false;
        }
        let observe = request.get_observe_value().is_some();
        let mut reply = coap_lite::Packet::new();
        reply
            .header
            .set_type(coap_lite::MessageType::Acknowledgement);
        reply.header.message_id = request.header.message_id;
        reply.header.code = coap_lite::MessageClass::Response(coap_lite::ResponseType::Content);
        reply.set_token(request.get_token().to_vec());
        if observe {
            reply.set_observe_value(1);
        }
        reply.add_option(coap_lite::CoapOption::MaxAge, vec![1]);
        reply.payload = b"20".to_vec();
        self.socket
            .send_to(&reply.to_bytes().unwrap(), self.gateway)
            .unwrap();
        observe
    }

    /// Waits for the gateway's next Observe registration and answers it;
    /// its token.
    fn await_observe(&self) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(message) = self.receive()
                && self.serve(&message)
            {
                return message.get_token().to_vec();
            }
        }
        panic!("the gateway never observed the device");
    }
}

fn metric(gw: &Gateway, name: &str) -> f64 {
    let text = String::from_utf8_lossy(&gw.get("/metrics").body).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[test]
fn observations_are_renewed_and_repeated_notifications_stored_once() {
    let (gw, port) = coap_gateway(&[], "");
    let device = RawDevice::register(port, "raw-1", "</temp>;rt=\"temperature\";obs", false);
    let token = device.await_observe();
    let thing = "gw-c.coap.raw-1.temp";
    gw.wait_for(
        &format!("/api/v1/things/{thing}/reading"),
        "the first value",
        |a| a.status == 200,
    );

    // One confirmable notification, sent twice as if our ACK were lost.
    let mut notification = coap_lite::Packet::new();
    notification
        .header
        .set_type(coap_lite::MessageType::Confirmable);
    notification.header.code = coap_lite::MessageClass::Response(coap_lite::ResponseType::Content);
    notification.header.message_id = 4242;
    notification.set_token(token);
    notification.set_observe_value(2);
    notification.payload = b"23.5".to_vec();
    for _ in 0..2 {
        let ack = device.exchange(&notification);
        assert_eq!(ack.header.code, coap_lite::MessageClass::Empty);
    }
    gw.wait_for(
        &format!("/api/v1/things/{thing}/reading"),
        "the notified value",
        |a| a.json()[0]["v"] == json!(23.5),
    );
    let stored = values(&history(&gw, thing));
    assert_eq!(
        stored.iter().filter(|v| **v == 23.5).count(),
        1,
        "{stored:?}"
    );

    // Silence beyond Max-Age (1 s): the gateway observes again.
    device.await_observe();
}

#[test]
fn a_registration_sent_block_wise_is_reassembled() {
    let (gw, port) = coap_gateway(&[], "");
    let links: Vec<String> = (0..12)
        .map(|n| format!("</sensors/temperature-{n}>;rt=\"temperature\";obs"))
        .collect();
    let _device = RawDevice::register(port, "blocky", &links.join(","), true);
    for n in [0, 11] {
        gw.wait_for(
            &format!("/api/v1/things/gw-c.coap.blocky.sensors-temperature-{n}"),
            "a thing service from the last blocks",
            |a| a.status == 200,
        );
    }
}

#[test]
fn observers_that_reset_or_cancel_are_forgotten() {
    let (gw, port) = coap_gateway(&[], "");
    let id = "gw-c.http.meter.power";
    gw.post_senml(
        &format!("/api/v1/things/{id}/readings"),
        &json!([{"u": "W", "v": 1.0}]),
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    let observe = |mid: u16, register: bool| {
        let mut packet = coap_lite::Packet::new();
        packet.header.set_type(coap_lite::MessageType::Confirmable);
        packet.header.code = coap_lite::MessageClass::Request(coap_lite::RequestType::Get);
        packet.header.message_id = mid;
        packet.set_token(vec![7, 7]);
        packet.set_observe_value(if register { 0 } else { 1 });
        packet.add_option(coap_lite::CoapOption::UriPath, b"things".to_vec());
        packet.add_option(coap_lite::CoapOption::UriPath, id.as_bytes().to_vec());
        socket.send(&packet.to_bytes().unwrap()).unwrap();
        let mut buffer = [0u8; 1500];
        let n = socket.recv(&mut buffer).unwrap();
        coap_lite::Packet::from_bytes(&buffer[..n]).unwrap()
    };
    // Register, then cancel with Observe 1 (RFC 7641 §3.6).
    assert!(observe(1, true).get_observe_value().is_some());
    assert_eq!(metric(&gw, "fogbank_coap_observers"), 1.0);
    assert!(observe(2, false).get_observe_value().is_none());
    assert_eq!(metric(&gw, "fogbank_coap_observers"), 0.0);

    // Register again, and answer the first notification with RST.
    observe(3, true);
    gw.post_senml(
        &format!("/api/v1/things/{id}/readings"),
        &json!([{"u": "W", "v": 2.0}]),
    );
    let mut buffer = [0u8; 1500];
    let n = socket.recv(&mut buffer).unwrap();
    let notification = coap_lite::Packet::from_bytes(&buffer[..n]).unwrap();
    assert_eq!(notification.get_token(), &[7, 7]);
    let mut reset = coap_lite::Packet::new();
    reset.header.set_type(coap_lite::MessageType::Reset);
    reset.header.code = coap_lite::MessageClass::Empty;
    reset.header.message_id = notification.header.message_id;
    socket.send(&reset.to_bytes().unwrap()).unwrap();
    gw.wait_for("/metrics", "the observer forgotten", |a| {
        String::from_utf8_lossy(&a.body).contains("fogbank_coap_observers 0")
    });
}
