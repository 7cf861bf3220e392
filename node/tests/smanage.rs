//! The gateway's S-MANAGE agent from the controller's side of the wire.
//! This test is the controller: a plain UDP socket. Every packet it sends
//! is built here from the byte tables of the protocol (docs/smanage.md),
//! and every answer is read and checked byte by byte the same way. No
//! fogbank codec is used, so the test and the agent cannot share a mistake.

use fogbank_testkit as testkit;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use testkit::Gateway;

/// The header of the protocol's table: source, destination, next hop (u16
/// each), type, length, TTL, message id.
fn packet(source: u16, destination: u16, next_hop: u16, kind: u8, id: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&source.to_be_bytes());
    bytes.extend_from_slice(&destination.to_be_bytes());
    bytes.extend_from_slice(&next_hop.to_be_bytes());
    bytes.extend_from_slice(&[kind, (10 + body.len()) as u8, 16, id]);
    bytes.extend_from_slice(body);
    bytes
}

/// A packet as received: header fields and body.
#[derive(Debug, Clone)]
struct Seen {
    bytes: Vec<u8>,
}

impl Seen {
    fn source(&self) -> u16 {
        u16::from_be_bytes([self.bytes[0], self.bytes[1]])
    }
    fn destination(&self) -> u16 {
        u16::from_be_bytes([self.bytes[2], self.bytes[3]])
    }
    fn next_hop(&self) -> u16 {
        u16::from_be_bytes([self.bytes[4], self.bytes[5]])
    }
    fn kind(&self) -> u8 {
        self.bytes[6]
    }
    fn ttl(&self) -> u8 {
        self.bytes[8]
    }
    fn id(&self) -> u8 {
        self.bytes[9]
    }
    fn body(&self) -> &[u8] {
        &self.bytes[10..]
    }
}

struct Controller {
    socket: UdpSocket,
    gateway: std::net::SocketAddr,
}

impl Controller {
    fn send(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.gateway).unwrap();
    }

    /// The next packet for which `pick` holds, within `limit`; others are
    /// passed over.
    fn expect(&self, limit: Duration, what: &str, mut pick: impl FnMut(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Ok((len, from)) = self.socket.recv_from(&mut buf) {
                assert_eq!(from, self.gateway, "packets come from the gateway's socket");
                let seen = Seen {
                    bytes: buf[..len].to_vec(),
                };
                assert_eq!(usize::from(seen.bytes[7]), len, "length byte of {seen:?}");
                if pick(&seen) {
                    return seen;
                }
            }
        }
        panic!("no {what} within {limit:?}");
    }

    /// Collects packets for `period`.
    fn collect(&self, period: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + period;
        let mut buf = [0u8; 2048];
        let mut all = Vec::new();
        while Instant::now() < deadline {
            if let Ok((len, _)) = self.socket.recv_from(&mut buf) {
                all.push(Seen {
                    bytes: buf[..len].to_vec(),
                });
            }
        }
        all
    }
}

/// One sensor service of a features list: id, on, type, driver.
type Service = (u8, bool, String, String);

/// A features body: location, then each service.
fn parse_features(body: &[u8]) -> (String, Vec<Service>) {
    let mut at = 0;
    let text = |at: &mut usize| {
        let len = usize::from(body[*at]);
        let s = String::from_utf8(body[*at + 1..*at + 1 + len].to_vec()).unwrap();
        *at += 1 + len;
        s
    };
    let location = text(&mut at);
    let count = body[at];
    at += 1;
    let mut services = Vec::new();
    for _ in 0..count {
        let (id, on) = (body[at], body[at + 1]);
        assert!(on <= 1);
        at += 2;
        let kind = text(&mut at);
        let driver = text(&mut at);
        services.push((id, on == 1, kind, driver));
    }
    assert_eq!(at, body.len(), "nothing after the last service");
    (location, services)
}

fn start(data_dir: &std::path::Path, controller_port: u16, sdvs_port: u16) -> Gateway {
    let config = data_dir.with_file_name("fogbank.toml");
    std::fs::write(
        &config,
        "[smanage]\nhello_interval_secs = 1\nmax_instructions = 4\n",
    )
    .unwrap();
    Gateway::start_in(
        data_dir,
        &["--demo", "--config", config.to_str().unwrap()],
        &[
            ("FOGBANK_GATEWAY_ID", "gw-s"),
            (
                "FOGBANK_SMANAGE_CONTROLLER",
                &format!("127.0.0.1:{controller_port}"),
            ),
            ("FOGBANK_SMANAGE_LISTEN", &format!("127.0.0.1:{sdvs_port}")),
            ("FOGBANK_SMANAGE_ADDRESSES", "0x0200-0x02ff"),
        ],
    )
}

#[test]
fn the_agent_answers_the_controller_byte_by_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let controller_port = socket.local_addr().unwrap().port();
    let sdvs_port = testkit::free_udp_port();
    let mut gw = start(&data_dir, controller_port, sdvs_port);
    let controller = Controller {
        socket,
        gateway: format!("127.0.0.1:{sdvs_port}").parse().unwrap(),
    };

    // ReportFeatures (type 0x02, kind 0x01) from each of the 8 campus
    // devices, each from an address of the block, towards the controller.
    let mut devices: BTreeMap<String, (u16, Vec<Service>, Vec<u8>)> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while devices.len() < 8 && Instant::now() < deadline {
        let report = controller.expect(Duration::from_secs(15), "ReportFeatures", |p| {
            p.kind() == 0x02 && p.body()[0] == 0x01
        });
        assert!((0x0200..=0x02ff).contains(&report.source()));
        assert_eq!(
            (report.destination(), report.next_hop(), report.ttl()),
            (0, 0, 16)
        );
        let (location, services) = parse_features(&report.body()[1..]);
        devices.insert(
            location,
            (report.source(), services, report.body()[1..].to_vec()),
        );
    }
    assert_eq!(devices.len(), 8, "{devices:?}");
    let (a, services, features_body) = devices["campus/building-a/floor-1"].clone();
    let service = |kind: &str| {
        services
            .iter()
            .find(|s| s.2 == kind)
            .unwrap_or_else(|| panic!("no {kind} in {services:?}"))
            .0
    };
    let (temperature, lamp) = (service("temperature"), service("switch"));
    assert!(services.iter().all(|s| s.1 && s.3 == "sim"));
    let ids: Vec<u8> = services.iter().map(|s| s.0).collect();
    assert_eq!(ids, (1..=5).collect::<Vec<u8>>(), "services numbered 1-5");

    // Hello from A: state 0 (nothing running), battery 255 (mains).
    let hello = controller.expect(Duration::from_secs(3), "Hello", |p| {
        p.kind() == 0x01 && p.source() == a
    });
    assert_eq!(hello.body(), [0, 255]);

    // RequestFeatures (0x17), message id 0x42: ResponseFeatures (0x18)
    // echoes the id and carries the features body.
    controller.send(&packet(0, a, a, 0x17, 0x42, &[]));
    let features = controller.expect(Duration::from_secs(3), "ResponseFeatures", |p| {
        p.kind() == 0x18
    });
    assert_eq!(
        (features.source(), features.destination(), features.id()),
        (a, 0, 0x42)
    );
    assert_eq!(features.body(), features_body);

    // SetConfiguringInstruction (0x11): request 0x0107 reads temperature
    // every 1 s for 3 s, to the controller (0x0000), TTL 6 s.
    let mut entry = Vec::new();
    entry.extend_from_slice(&0x0107u16.to_be_bytes());
    entry.push(temperature);
    entry.extend_from_slice(&1u16.to_be_bytes());
    entry.extend_from_slice(&3u16.to_be_bytes());
    entry.extend_from_slice(&0u16.to_be_bytes());
    entry.push(0); // read
    entry.extend_from_slice(&0i16.to_be_bytes());
    entry.extend_from_slice(&6u16.to_be_bytes());
    let started = testkit::now_secs() as u32;
    controller.send(&packet(0, a, a, 0x11, 1, &entry));
    let mut responses = Vec::new();
    let completion = controller.expect(Duration::from_secs(8), "ReportCompletion", |p| {
        if p.kind() == 0x04 {
            responses.push(p.clone());
        }
        p.kind() == 0x02 && p.body() == [0x05, 0x01, 0x07]
    });
    assert_eq!(completion.source(), a);
    // Three samples (at 0, 1 and 2 s), each a Response of request 0x0107.
    assert_eq!(responses.len(), 3, "{responses:?}");
    for response in &responses {
        assert_eq!(
            (
                response.source(),
                response.destination(),
                response.next_hop()
            ),
            (a, 0, 0)
        );
        assert_eq!(&response.body()[0..3], [0x01, 0x07, temperature]);
    }

    // ResponseConfigStats for 0xFFFF: one entry, executed, 3 samples.
    controller.send(&packet(0, a, a, 0x14, 7, &[0xFF, 0xFF]));
    let stats = controller.expect(Duration::from_secs(3), "ResponseConfigStats", |p| {
        p.kind() == 0x16
    });
    assert_eq!(stats.id(), 7);
    let b = stats.body();
    assert_eq!(b.len(), 18, "one entry: {b:?}");
    assert_eq!(&b[0..3], [0x01, 0x07, temperature]);
    let ttl_left = u16::from_be_bytes([b[3], b[4]]);
    assert!((1..=3).contains(&ttl_left), "TTL left {ttl_left}");
    assert_eq!(
        u32::from_be_bytes([b[5], b[6], b[7], b[8]]),
        3,
        "three samples"
    );
    let start_time = u32::from_be_bytes([b[9], b[10], b[11], b[12]]);
    assert!(start_time.abs_diff(started) <= 1);
    assert_eq!(u32::from_be_bytes([b[13], b[14], b[15], b[16]]), 3);
    assert_eq!(b[17], b'Y');

    // TTL expiry: ReportConfigurationRemove (kind 0x02) for 0x0107.
    let removed = controller.expect(Duration::from_secs(6), "ReportConfigurationRemove", |p| {
        p.kind() == 0x02 && p.body()[0] == 0x02
    });
    assert_eq!(removed.body(), [0x02, 0x01, 0x07, temperature]);

    // A read every second: Responses (0x04) carry the temperature the
    // REST API shows, as value × 10^exponent at a Unix time.
    entry[0..2].copy_from_slice(&0x0108u16.to_be_bytes());
    entry[12..14].copy_from_slice(&30u16.to_be_bytes());
    controller.send(&packet(0, a, a, 0x11, 2, &entry));
    let response = controller.expect(Duration::from_secs(3), "Response", |p| p.kind() == 0x04);
    let b = response.body().to_vec();
    assert_eq!(response.bytes[7], 22);
    assert_eq!(&b[0..3], [0x01, 0x08, temperature]);
    let time = u32::from_be_bytes([b[3], b[4], b[5], b[6]]);
    assert!(f64::from(time) <= testkit::now_secs() && f64::from(time) > testkit::now_secs() - 60.0);
    let value = f64::from(i32::from_be_bytes([b[7], b[8], b[9], b[10]]))
        * 10f64.powi(i32::from(b[11] as i8));
    assert!((5.0..40.0).contains(&value), "a room temperature: {value}");

    // Forwarding (0x10): window 0, destination (1) = 0x0999 → drop (3).
    let mut fwd = vec![0, 1, 0];
    fwd.extend_from_slice(&0x0999u16.to_be_bytes());
    fwd.extend_from_slice(&[3, 0, 0, 0, 0]);
    fwd.extend_from_slice(&60u16.to_be_bytes());
    controller.send(&packet(0, a, a, 0x10, 3, &fwd));
    // Application data (0x80) for 0x0999 through A is dropped; for 0x0777
    // it matches nothing and comes back whole in a Request (0x03), its TTL
    // one less.
    controller.send(&packet(0x0300, 0x0999, a, 0x80, 4, b"drop me"));
    let data = packet(0x0300, 0x0777, a, 0x80, 5, b"ask");
    controller.send(&data);
    let request = controller.expect(Duration::from_secs(3), "Request", |p| p.kind() == 0x03);
    let mut expected = data.clone();
    expected[8] -= 1;
    assert_eq!((request.source(), request.destination()), (a, 0));
    assert_eq!(request.body(), expected);
    // ResponseFwdStats: entry 0 matched once, up to 60 s left.
    controller.send(&packet(0, a, a, 0x13, 9, &[0xFF]));
    let stats = controller.expect(Duration::from_secs(3), "ResponseFwdStats", |p| {
        p.kind() == 0x15
    });
    assert_eq!(stats.id(), 9);
    let b = stats.body();
    assert_eq!(b.len(), 7);
    assert_eq!(b[0], 0);
    assert!((55..=60).contains(&u16::from_be_bytes([b[1], b[2]])));
    assert_eq!(u32::from_be_bytes([b[3], b[4], b[5], b[6]]), 1);

    // Switch the lamp off (action 2): the thing service follows.
    let mut off = Vec::new();
    off.extend_from_slice(&0x0109u16.to_be_bytes());
    off.extend_from_slice(&[lamp, 0, 0, 0, 2, 0, 0, 2, 0, 0, 0, 30]);
    let lamp_reading = "/api/v1/things/gw-s.sim.building-a-floor-1.lamp/reading";
    // The simulated lamp starts on or off: switch it on first, then off.
    let mut on = off.clone();
    on[0..2].copy_from_slice(&0x010Au16.to_be_bytes());
    on[9] = 1;
    controller.send(&packet(0, a, a, 0x11, 10, &on));
    gw.wait_for(lamp_reading, "the lamp on", |r| {
        r.status == 200 && r.json()[0]["vb"] == true
    });
    controller.send(&packet(0, a, a, 0x11, 11, &off));
    gw.wait_for(lamp_reading, "the lamp off", |r| {
        r.status == 200 && r.json()[0]["vb"] == false
    });

    // A full table (4 instructions here) answers ReportFullTask (kind 4).
    let mut more = entry.clone();
    more[0..2].copy_from_slice(&0x0110u16.to_be_bytes());
    controller.send(&packet(0, a, a, 0x11, 12, &more));
    let full = controller.expect(Duration::from_secs(3), "ReportFullTask", |p| {
        p.kind() == 0x02 && p.body()[0] == 0x04
    });
    assert_eq!(full.source(), a);

    // Cancel with ModifyConfiguration (0x12) and TTL 0.
    let mut cancel = entry.clone();
    cancel[12..14].copy_from_slice(&0u16.to_be_bytes());
    controller.send(&packet(0, a, a, 0x12, 13, &cancel));
    let removed = controller.expect(Duration::from_secs(3), "cancel", |p| {
        p.kind() == 0x02 && p.body()[0] == 0x02
    });
    assert_eq!(removed.body(), [0x02, 0x01, 0x08, temperature]);

    // Malformed datagrams are dropped and counted by reason; a stranger
    // is not listened to.
    controller.send(&[0, 0, 1]);
    let mut lying = packet(0, a, a, 0x17, 14, &[]);
    lying[7] = 30;
    controller.send(&lying);
    controller.send(&packet(0, a, a, 0x01, 15, &[7]));
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger
        .send_to(&packet(0, a, a, 0x17, 16, &[]), controller.gateway)
        .unwrap();
    let metrics = gw.wait_for("/metrics", "the malformed packets counted", |r| {
        let text = String::from_utf8_lossy(&r.body);
        text.contains("fogbank_smanage_malformed_total{reason=\"short\"} 1")
            && text.contains("fogbank_smanage_malformed_total{reason=\"length\"} 1")
            && text.contains("fogbank_smanage_malformed_total{reason=\"body\"} 1")
            && text.contains("fogbank_smanage_dropped_total{reason=\"stranger\"} 1")
    });
    assert!(String::from_utf8_lossy(&metrics.body).contains("fogbank_smanage_sdvs 8"));

    // A packet whose TTL would reach 0 is dropped, not forwarded.
    let mut dying = packet(0x0300, 0x0777, a, 0x80, 18, b"late");
    dying[8] = 1;
    controller.send(&dying);
    gw.wait_for("/metrics", "the TTL drop counted", |r| {
        String::from_utf8_lossy(&r.body).contains("fogbank_smanage_dropped_total{reason=\"ttl\"} 1")
    });

    // A device with a battery thing service: its SDVS reports the level in
    // Hello, and ReportLowBatt once when it falls under 20 %, again only
    // after it has risen above.
    let battery = "/api/v1/things/gw-s.http.node-1.battery/readings";
    assert_eq!(
        gw.post_senml(battery, &serde_json::json!([{"v": 15.0}]))
            .status,
        200
    );
    // First its features (a new SDVS), then the low battery.
    let features = controller.expect(Duration::from_secs(5), "the node's features", |p| {
        p.kind() == 0x02
            && p.body()[0] == 0x01
            && parse_features(&p.body()[1..])
                .1
                .first()
                .is_some_and(|s| s.3 == "http")
    });
    let node = features.source();
    assert!((0x0200..=0x02ff).contains(&node) && node != a);
    assert_eq!(parse_features(&features.body()[1..]).1[0].2, "battery");
    let low = controller.expect(Duration::from_secs(3), "ReportLowBatt", |p| {
        p.kind() == 0x02 && p.body()[0] == 0x03
    });
    assert_eq!((low.source(), low.body()), (node, &[0x03, 15][..]));
    let hello = controller.expect(Duration::from_secs(3), "the node's Hello", |p| {
        p.kind() == 0x01 && p.source() == node
    });
    assert_eq!(hello.body(), [0, 15]);
    assert_eq!(
        gw.post_senml(battery, &serde_json::json!([{"v": 12.0}]))
            .status,
        200
    );
    assert_eq!(
        gw.post_senml(battery, &serde_json::json!([{"v": 80.0}]))
            .status,
        200
    );
    controller.expect(Duration::from_secs(3), "Hello at 80 %", |p| {
        p.kind() == 0x01 && p.source() == node && p.body() == [0, 80]
    });
    assert_eq!(
        gw.post_senml(battery, &serde_json::json!([{"v": 10.0}]))
            .status,
        200
    );
    let again = controller.expect(Duration::from_secs(5), "ReportLowBatt again", |p| {
        p.kind() == 0x02 && p.body()[0] == 0x03
    });
    assert_eq!((again.source(), again.body()), (node, &[0x03, 10][..]));

    // The REST view shows A's tables with their counters.
    let status = gw.get("/api/v1/federation/smanage").json();
    assert_eq!(status["enabled"], true);
    assert_eq!(status["addresses"], "0x0200-0x02ff");
    let view = status["sdvs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == format!("0x{a:04x}"))
        .unwrap()
        .clone();
    assert_eq!(view["location"], "campus/building-a/floor-1");
    assert_eq!(view["forwarding"][0]["action"], "drop");
    assert_eq!(view["forwarding"][0]["counter"], 1);
    assert_eq!(view["services"].as_array().unwrap().len(), 5);

    // An instruction running when the gateway is killed runs on after
    // its restart: request 0x0111 reads temperature every second for 60 s.
    let mut long = entry.clone();
    long[0..2].copy_from_slice(&0x0111u16.to_be_bytes());
    long[5..7].copy_from_slice(&60u16.to_be_bytes());
    long[12..14].copy_from_slice(&90u16.to_be_bytes());
    controller.send(&packet(0, a, a, 0x11, 17, &long));
    controller.expect(Duration::from_secs(3), "a Response of 0x0111", |p| {
        p.kind() == 0x04 && p.body()[0..2] == [0x01, 0x11]
    });

    // Restarted, every device keeps its address and services their ids.
    gw.kill9();
    drop(controller.collect(Duration::from_millis(300)));
    let _gw = start(&data_dir, controller_port, sdvs_port);
    // (Restored thing services are off until their device is back, so
    // the first report may show them off; then they come on.)
    let report = controller.expect(
        Duration::from_secs(15),
        "ReportFeatures after restart",
        |p| {
            p.kind() == 0x02
                && p.body()[0] == 0x01
                && parse_features(&p.body()[1..]).0 == "campus/building-a/floor-1"
                && parse_features(&p.body()[1..]).1.iter().all(|s| s.1)
        },
    );
    assert_eq!(report.source(), a);
    assert_eq!(&report.body()[1..], features_body);
    let response = controller.expect(Duration::from_secs(5), "0x0111 after the restart", |p| {
        p.kind() == 0x04 && p.body()[0..2] == [0x01, 0x11]
    });
    assert_eq!(response.source(), a);
}

/// More devices than addresses: the ones without an address are an error
/// in the log and a metric; the others carry on, and nothing crashes.
#[test]
fn a_full_address_block_is_counted_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = tmp.path().join("fogbank.toml");
    std::fs::write(&config, "[smanage]\nhello_interval_secs = 1\n").unwrap();
    let gw = Gateway::start_in(
        &tmp.path().join("data"),
        &["--demo", "--config", config.to_str().unwrap()],
        &[
            ("FOGBANK_GATEWAY_ID", "gw-f"),
            (
                "FOGBANK_SMANAGE_CONTROLLER",
                &socket.local_addr().unwrap().to_string(),
            ),
            (
                "FOGBANK_SMANAGE_LISTEN",
                &format!("127.0.0.1:{}", testkit::free_udp_port()),
            ),
            ("FOGBANK_SMANAGE_ADDRESSES", "0x0300-0x0303"),
        ],
    );
    gw.wait_for("/metrics", "4 SDVSs and the rest counted", |r| {
        let text = String::from_utf8_lossy(&r.body);
        text.contains("fogbank_smanage_sdvs 4")
            && text.contains("fogbank_smanage_dropped_total{reason=\"address_block_full\"}")
    });
    let status = gw.get("/api/v1/federation/smanage").json();
    let addresses: Vec<&str> = status["sdvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["0x0300", "0x0301", "0x0302", "0x0303"]);
    assert_eq!(gw.get("/health").status, 200);
}
