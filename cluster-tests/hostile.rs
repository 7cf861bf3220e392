//! Every port of a real gateway under the input an outsider on the site
//! network can send: malformed, truncated, oversized and never-finished
//! messages, and floods, on MQTT, CoAP, HTTP, libp2p and the serial line
//! of an 802.15.4 radio — while a device keeps writing readings over HTTP.
//!
//! After each group of attacks the gateway must answer `/health` within a
//! second and hold less than [`RSS_BOUND_MIB`] of memory; at the end every
//! reading acknowledged to the writer must be in the history, and no HTTP
//! answer to anyone may have been a 5xx. The bytes are written by hand,
//! from the protocols' specifications, over raw sockets: no well-behaved
//! client sends them. The bounds themselves are in `docs/bounds.md`.
//!
//! Run with `cargo test -p fogbank-cluster-tests --test hostile`.

use fogbank_testkit as testkit;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testkit::mqtt::remaining_length;
use testkit::{Gateway, PtyPair, free_port, free_udp_port};

/// The memory a demo gateway may hold at any point of the attacks.
const RSS_BOUND_MIB: u64 = 150;
const GATEWAY: &str = "gw-h";
const WRITER: &str = "gw-h.http.writer.level";
const TEMPERATURE: &str = "gw-h.sim.building-a-floor-1.temperature";

struct Site {
    gateway: Gateway,
    mqtt: u16,
    coap: u16,
    p2p: u16,
    /// The radio's serial line: the gateway holds one end, the test
    /// writes to the other.
    serial: PtyPair,
    _dir: tempfile::TempDir,
}

impl Site {
    fn start() -> Site {
        let (mqtt, coap, p2p) = (free_port(), free_udp_port(), free_port());
        let key = "5a".repeat(32);
        let dir = tempfile::tempdir().unwrap();
        let serial = PtyPair::start(dir.path());
        let radio = serial.radio.to_str().unwrap().to_owned();
        let gateway = Gateway::start(
            &["--demo", "--no-mdns", "--serial154", &radio],
            &[
                ("FOGBANK_GATEWAY_ID", GATEWAY),
                ("FOGBANK_MQTT", &format!("127.0.0.1:{mqtt}")),
                ("FOGBANK_COAP", &format!("127.0.0.1:{coap}")),
                ("FOGBANK_P2P", &format!("/ip4/127.0.0.1/tcp/{p2p}")),
                ("FOGBANK_CLUSTER_KEY", &key),
            ],
        );
        gateway.wait_for_campus(GATEWAY);
        Site {
            gateway,
            mqtt,
            coap,
            p2p,
            serial,
            _dir: dir,
        }
    }

    /// What holds after every group: health answers within a second, and
    /// the memory is under the bound.
    fn checkpoint(&self, group: &str) {
        let asked = Instant::now();
        let health = self.gateway.get("/health");
        let took = asked.elapsed();
        assert_eq!(health.status, 200, "after {group}");
        assert!(
            took < Duration::from_secs(1),
            "health took {took:?} after {group}"
        );
        let rss = resident_mib(self.gateway.child.id());
        eprintln!("after {group}: RSS {rss} MiB, health in {took:?}");
        assert!(rss < RSS_BOUND_MIB, "{rss} MiB after {group}");
    }

    /// The value of a counter or gauge in `/metrics` (summed over the
    /// series whose labels contain `labels`).
    fn metric(&self, name: &str, labels: &str) -> f64 {
        metric_in(&self.gateway.get("/metrics").body, name, labels)
    }

    fn mqtt_event(&self, event: &str) -> f64 {
        self.metric(
            "fogbank_adapter_events_total",
            &format!("event=\"{event}\""),
        )
    }
}

/// The sum of the series of `name` whose labels contain `labels`, in a
/// Prometheus text exposition.
fn metric_in(exposition: &[u8], name: &str, labels: &str) -> f64 {
    String::from_utf8_lossy(exposition)
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| line[name.len()..].starts_with([' ', '{']))
        .filter(|line| line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib / 1024
}

/// A device writing readings over HTTP the whole time; returns the
/// values acknowledged (2xx) and whether any answer was a 5xx.
fn writer(site: &Site, stop: Arc<AtomicBool>) -> JoinHandle<(Vec<u64>, Vec<u16>)> {
    let url = site
        .gateway
        .url(&format!("/api/v1/things/{WRITER}/readings"));
    let token = site.gateway.token();
    std::thread::spawn(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let (mut acknowledged, mut server_errors) = (Vec::new(), Vec::new());
        let mut value = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let pack = format!(r#"[{{"u":"%","v":{value}}}]"#);
            let answer = agent
                .post(&url)
                .set("Authorization", &format!("Bearer {token}"))
                .set("Content-Type", "application/senml+json")
                .send_string(&pack);
            match answer {
                Ok(response) if response.status() < 300 => acknowledged.push(value),
                Ok(response) => server_errors.push(response.status()),
                Err(ureq::Error::Status(status, _)) if status >= 500 => server_errors.push(status),
                Err(_) => {}
            }
            value += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        (acknowledged, server_errors)
    })
}

/// Whether the gateway closes `stream` within `limit` (reading and
/// dropping whatever it sends first).
fn closed_within(stream: &TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut sink = [0u8; 4096];
    let mut stream = stream;
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(deadline - Instant::now() + Duration::from_millis(1)))
            .unwrap();
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
    false
}

/// Opens `crowd` connections to `port` that send nothing, and tells how
/// many of the last `excess` the gateway closes at once.
fn silent_crowd(port: u16, crowd: usize, excess: usize) -> usize {
    let idle: Vec<TcpStream> = (0..crowd)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    idle.iter()
        .rev()
        .take(excess)
        .filter(|s| closed_within(s, Duration::from_millis(300)))
        .count()
}

// ------------------------------------------------------------------ MQTT

fn attack_mqtt(site: &Site) {
    let port = site.mqtt;
    // A CONNECT claiming 256 MiB, and the start of its body: refused from
    // its fixed header, not read whole.
    let giants: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(&[0x10, 0xff, 0xff, 0xff, 0x7f, 0, 4]).unwrap();
            let _ = s.write_all(b"MQTT\x04\x02\x00\x3c");
            let _ = s.write_all(&vec![b'w'; 64 << 10]);
            s
        })
        .collect();
    for giant in &giants {
        assert!(
            closed_within(giant, Duration::from_secs(2)),
            "a 256 MiB CONNECT is refused at once"
        );
    }
    assert!(site.mqtt_event("mqtt_connect_oversized") >= 8.0);

    // More connections than may wait for their CONNECT: the excess is
    // closed at once.
    let closed = silent_crowd(port, 320, 64);
    assert!(closed >= 32, "only {closed} of the excess closed");
    assert!(site.mqtt_event("mqtt_handshakes_refused") >= 32.0);

    // A second CONNECT, and a CONNACK, from a connected 3.1.1 client close
    // its connection (3.1.1 §3.1.0-2; a packet only a server sends).
    for (name, packet) in [
        ("second-connect", testkit::mqtt_connect(4, "second-connect")),
        ("connack", vec![0x20, 0x02, 0x00, 0x00]),
        ("suback", vec![0x90, 0x03, 0x00, 0x01, 0x00]),
    ] {
        let mut session = testkit::mqtt_session(port, 4, name);
        session.write_all(&packet).unwrap();
        assert!(
            closed_within(&session, Duration::from_secs(2)),
            "{name} closes the connection"
        );
    }
    assert!(site.mqtt_event("mqtt_protocol_violations") >= 3.0);

    // A topic of 65 535 bytes, many times: dropped, logged in excerpt.
    let mut session = testkit::mqtt_session(port, 4, "long-topic");
    let topic = format!("things/{}", "t".repeat(65_535 - 7));
    for pkid in 1..=20u16 {
        let body = [
            &(topic.len() as u16).to_be_bytes()[..],
            topic.as_bytes(),
            &pkid.to_be_bytes(),
            b"1",
        ]
        .concat();
        let packet = [&[0x32][..], &remaining_length(body.len()), &body].concat();
        session.write_all(&packet).unwrap();
    }
    drop(session);

    // Large publishes that never finish, from many connections: together
    // they may hold no more than the budget; the rest are closed.
    let claimed = 300_000;
    let mut trickles: Vec<TcpStream> = (0..260)
        .map(|i| {
            let mut s = testkit::mqtt_session(port, 4, &format!("trickle-{i}"));
            let head = [
                &[0x32][..],
                &remaining_length(claimed),
                &[0, 12],
                b"things/big/x",
                &[0, 1],
            ]
            .concat();
            let _ = s.write_all(&head);
            let _ = s.write_all(&vec![b'0'; 70_000]);
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        site.mqtt_event("mqtt_memory_budget") >= 1.0,
        "partial packets past the budget are refused"
    );
    site.checkpoint("MQTT partial packets held");
    for t in &mut trickles {
        let _ = t.shutdown(std::net::Shutdown::Both);
    }
    drop(trickles);

    // Garbage that is not MQTT at all, and a device that carries on.
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xff; 100],
        &[0x10, 0x80, 0x80, 0x80, 0x80, 0x01],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(junk);
        assert!(closed_within(&s, Duration::from_secs(2)));
    }
    testkit::mqtt_publish(port, "things/after-mqtt/level", b"7");
    site.gateway.wait_for(
        "/api/v1/things/gw-h.mqtt.after-mqtt.level/reading",
        "a device after the MQTT attacks",
        |a| a.status == 200,
    );
}

// ------------------------------------------------------------------ CoAP

/// A confirmable request (RFC 7252 §3): version 1, CON, `code`, message
/// id, a 2-byte token, then options in order and the payload.
fn coap_request(
    code: u8,
    mid: u16,
    token: u16,
    options: &[(u16, Vec<u8>)],
    payload: &[u8],
) -> Vec<u8> {
    let mut out = vec![0x42, code];
    out.extend_from_slice(&mid.to_be_bytes());
    out.extend_from_slice(&token.to_be_bytes());
    let mut last = 0u16;
    for (number, value) in options {
        let delta = number - last;
        last = *number;
        let nibble = |n: u16| match n {
            0..=12 => (n as u8, Vec::new()),
            13..=268 => (13, vec![(n - 13) as u8]),
            _ => (14, (n - 269).to_be_bytes().to_vec()),
        };
        let (d, dext) = nibble(delta);
        let (l, lext) = nibble(value.len() as u16);
        out.push(d << 4 | l);
        out.extend(dext);
        out.extend(lext);
        out.extend_from_slice(value);
    }
    if !payload.is_empty() {
        out.push(0xff);
        out.extend_from_slice(payload);
    }
    out
}

const URI_PATH: u16 = 11;
const OBSERVE: u16 = 6;
const BLOCK1: u16 = 27;
const PUT: u8 = 0x03;
const GET: u8 = 0x01;

/// Block1 block 0, more to come, 1 KiB blocks (RFC 7959 §2.2: NUM 0, M 1,
/// SZX 6).
fn first_block() -> Vec<u8> {
    vec![0x0e]
}

/// The piggybacked answer (an ACK) to message `mid`: its code, and
/// whether it carries Observe (the first option, number 6, when present).
/// Waits at most `wait`; notifications and other answers are skipped.
fn answer_to(socket: &UdpSocket, mid: u16, wait: Duration) -> Option<(u8, bool)> {
    let deadline = Instant::now() + wait;
    let mut buffer = [0u8; 2048];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let length = socket.recv(&mut buffer).ok()?;
        let acknowledgement = buffer[0] & 0x30 == 0x20;
        if length >= 4 && acknowledgement && u16::from_be_bytes([buffer[2], buffer[3]]) == mid {
            let options_at = 4 + usize::from(buffer[0] & 0x0f);
            let observed = length > options_at && buffer[options_at] >> 4 == 6;
            return Some((buffer[1], observed));
        }
    }
    None
}

fn coap_socket(host: [u8; 4], gateway: u16) -> UdpSocket {
    let socket = UdpSocket::bind(SocketAddr::from((host, 0))).unwrap();
    socket.connect(("127.0.0.1", gateway)).unwrap();
    socket
}

fn attack_coap(site: &Site) {
    let socket = coap_socket([127, 0, 0, 1], site.coap);
    // The report's attack: 1 KiB blocks declared, 64 000 bytes carried,
    // each to its own path. Each is refused with 4.00, none kept. (One at
    // a time: the gateway's socket buffer holds only a few such datagrams,
    // and the kernel would drop the rest before the gateway saw them.)
    let mut bad_requests = 0;
    for i in 0..2000u16 {
        let options = [
            (URI_PATH, format!("big-{i}").into_bytes()),
            (BLOCK1, first_block()),
        ];
        socket
            .send(&coap_request(PUT, i, i, &options, &vec![b'x'; 64_000]))
            .unwrap();
        bad_requests += answer_to(&socket, i, Duration::from_millis(500))
            .is_some_and(|(code, _)| code == 0x80) as usize;
    }
    assert!(bad_requests >= 1990, "{bad_requests} of 2000 got 4.00");
    assert_eq!(site.metric("fogbank_coap_uploads", ""), 0.0);

    // Honest 1 KiB blocks, never finished: 8 per host are continued, then
    // 4.29; past 256 in all, 4.29 to everyone.
    let mut codes = Vec::new();
    for i in 0..20u16 {
        let options = [
            (URI_PATH, format!("slow-{i}").into_bytes()),
            (BLOCK1, first_block()),
        ];
        socket
            .send(&coap_request(PUT, 10_000 + i, i, &options, &[b'y'; 1024]))
            .unwrap();
        codes.extend(answer_to(&socket, 10_000 + i, Duration::from_millis(500)).map(|(c, _)| c));
    }
    let continued = codes.iter().filter(|&&c| c == 0x5f).count();
    let too_many = codes.iter().filter(|&&c| c == 0x9d).count();
    assert_eq!((continued, too_many), (8, 12), "{codes:x?}");
    for host in 2..=60u8 {
        let other = coap_socket([127, 0, 0, host], site.coap);
        for i in 0..8u16 {
            let options = [
                (URI_PATH, format!("slow-{i}").into_bytes()),
                (BLOCK1, first_block()),
            ];
            other
                .send(&coap_request(PUT, i, i, &options, &[b'z'; 1024]))
                .unwrap();
        }
        answer_to(&other, 7, Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(site.metric("fogbank_coap_uploads", ""), 256.0);
    assert!(site.metric("fogbank_coap_refused_total", "block1_full") >= 1.0);

    // Observations: 64 from one host, the rest answered without Observe.
    let path = [
        (URI_PATH, b"things".to_vec()),
        (URI_PATH, TEMPERATURE.as_bytes().to_vec()),
    ];
    let observer = coap_socket([127, 0, 0, 1], site.coap);
    let mut observed = 0;
    for i in 0..300u16 {
        let options = [vec![(OBSERVE, Vec::new())], path.to_vec()].concat();
        observer
            .send(&coap_request(GET, 20_000 + i, i, &options, &[]))
            .unwrap();
        let answer = answer_to(&observer, 20_000 + i, Duration::from_millis(500));
        assert_eq!(answer.map(|(code, _)| code), Some(0x45), "2.05 Content");
        observed += answer.is_some_and(|(_, observe)| observe) as usize;
    }
    assert_eq!(observed, 64);
    assert!(site.metric("fogbank_coap_observers", "") <= 64.0);

    // Datagrams that are not CoAP.
    for i in 0..2000u32 {
        let junk: Vec<u8> = (0..(i % 97)).map(|b| (b * 31 + i) as u8).collect();
        socket.send(&junk).unwrap();
    }
}

// ------------------------------------------------------------------ HTTP

/// Sends `request` as is and reads the answer until the server closes:
/// its status, content type and body.
fn raw_http(port: u16, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let _ = stream.write_all(request);
    read_http_answer(&mut stream)
}

fn read_http_answer(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.as_bytes().to_vec())
}

/// An RFC 9457 problem with a 4xx status.
fn assert_client_problem((status, content_type, body): &(u16, String, Vec<u8>), what: &str) {
    assert!((400..500).contains(status), "{what}: {status}");
    assert_eq!(content_type, "application/problem+json", "{what}");
    let problem: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(problem["status"], *status, "{what}");
    assert!(
        problem["title"].is_string() && problem["detail"].is_string(),
        "{what}"
    );
}

fn attack_http(site: &Site) {
    let port = site.gateway.port;
    let long_url = format!(
        "GET /api/v1/things?type={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(64 << 10)
    );
    assert_client_problem(&raw_http(port, long_url.as_bytes()), "a 64 KiB URL");
    let mut many_headers = String::from("GET /health HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many_headers.push_str(&format!("X-Header-{i}: {i}\r\n"));
    }
    many_headers.push_str("\r\n");
    let answer = raw_http(port, many_headers.as_bytes());
    assert_eq!(answer.0, 431);
    assert_client_problem(&answer, "200 headers");
    assert_client_problem(
        &raw_http(
            port,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        ),
        "not HTTP",
    );
    assert_client_problem(
        &raw_http(
            port,
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        ),
        "a bad length",
    );

    // Times that do not exist.
    for from in [
        "2024-01-01T00:00:00%2B99:99",
        "2024-02-31T00:00:00Z",
        "2024-%2B1-01T00:00:00Z",
    ] {
        site.gateway
            .get(&format!(
                "/api/v1/things/{TEMPERATURE}/readings?from={from}"
            ))
            .assert_problem(400);
    }

    // A body larger than allowed, of which only the start is sent: refused
    // on its declared length.
    let token = site.gateway.token();
    let request = format!(
        "POST /api/v1/things/{WRITER}/readings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/senml+json\r\nContent-Length: 104857600\r\n\r\n[{{\"v\":1}}"
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let answer = read_http_answer(&mut stream);
    assert_eq!(answer.0, 413);
    assert_client_problem(&answer, "a 100 MB body");

    // Heads that never finish: each gets a 408 problem when its time is up.
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            s
        })
        .collect();
    site.checkpoint("HTTP unfinished heads held");
    let answer = read_http_answer(&mut slow[0]);
    assert_eq!(answer.0, 408);
    assert_client_problem(&answer, "an unfinished head");
    // Answered before the API saw them, and counted all the same.
    for (reason, at_least) in [
        ("head_too_large", 1.0),
        ("unparsable", 2.0),
        ("head_timeout", 1.0),
    ] {
        let refused = site.metric(
            "fogbank_http_refused_total",
            &format!("reason=\"{reason}\""),
        );
        assert!(refused >= at_least, "{reason}: {refused}");
    }
}

// ---------------------------------------------------------------- libp2p

fn attack_p2p(site: &Site) {
    let port = site.p2p;
    let refused_before = site.metric("fogbank_cloud_connections_refused_total", "");
    // Not the cluster key: a nonce (pnet's 24 bytes), then noise.
    for i in 0..100u8 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(&[i; 24]);
        let _ = s.write_all(&[i.wrapping_mul(7); 4096]);
        assert!(
            closed_within(&s, Duration::from_secs(3)),
            "stranger {i} refused"
        );
    }
    // Connections that send nothing: past the bound on handshakes under
    // way, refused at once.
    let closed = silent_crowd(port, 200, 40);
    assert!(closed >= 20, "only {closed} of the excess closed");
    assert!(site.metric("fogbank_cloud_connections_refused_total", "") >= refused_before + 100.0);
    site.checkpoint("libp2p handshakes held");
}

// ----------------------------------------------------------- serial line

/// SLIP (RFC 1055) bytes no radio sends: a frame that never ends, frames
/// of noise, bad escapes, and 802.15.4 fragments of more datagrams than
/// are reassembled at once.
fn attack_serial(site: &Site) {
    const END: u8 = 0xc0;
    let serial154 = "adapter=\"serial154\"";
    let broken_before = site.metric("fogbank_adapter_events_total", serial154);
    let mut line = std::fs::OpenOptions::new()
        .write(true)
        .open(&site.serial.sim)
        .unwrap();
    // One frame of 1 MiB: cut at 2 KiB and skipped to the next END.
    let mut endless = vec![0x41; 1 << 20];
    endless.push(END);
    line.write_all(&endless).unwrap();
    // Noise, and escapes that escape nothing.
    for i in 0..2000u32 {
        let frame: Vec<u8> = (0..(i % 120 + 1)).map(|b| (b * 13 + i) as u8).collect();
        line.write_all(&frame).unwrap();
        line.write_all(&[0xdb, 0x00, END]).unwrap();
    }
    // RFC 4944 first fragments (dispatch 11000, size 1280, a new tag each)
    // inside 802.15.4-2006 data frames (short addresses, PAN id
    // compression) of datagrams that never complete: the gateway holds 16
    // at most (docs/bounds.md).
    for tag in 0..200u16 {
        let mut mac = vec![0x41, 0x98, tag as u8, 0xcd, 0xab, 0x00, 0x00, 0x02, 0x00];
        mac.extend_from_slice(&[0xc5, 0x00]);
        mac.extend_from_slice(&tag.to_be_bytes());
        mac.extend_from_slice(&[0x7a; 40]);
        mac.push(END);
        line.write_all(&mac).unwrap();
    }
    line.flush().unwrap();
    site.gateway
        .wait_for("/metrics", "the broken frames counted", |a| {
            metric_in(&a.body, "fogbank_adapter_events_total", serial154) >= broken_before + 2000.0
        });
}

#[test]
fn every_port_stays_bounded_under_hostile_input() {
    let site = Site::start();
    let stop = Arc::new(AtomicBool::new(false));
    let writing = writer(&site, stop.clone());
    site.checkpoint("start");

    attack_mqtt(&site);
    site.checkpoint("MQTT");
    attack_coap(&site);
    site.checkpoint("CoAP");
    attack_http(&site);
    site.checkpoint("HTTP");
    attack_p2p(&site);
    site.checkpoint("libp2p");
    attack_serial(&site);
    site.checkpoint("serial line");

    stop.store(true, Ordering::Relaxed);
    let (acknowledged, server_errors) = writing.join().unwrap();
    assert!(
        server_errors.is_empty(),
        "5xx to the writer: {server_errors:?}"
    );
    assert!(
        acknowledged.len() > 100,
        "the writer got {} readings in",
        acknowledged.len()
    );
    // Every value acknowledged is stored, once. (A request whose answer was
    // lost on the way may be stored too: that is no loss.)
    let history = site.gateway.get(&format!(
        "/api/v1/things/{WRITER}/readings?limit={}",
        acknowledged.len() + server_errors.len() + 1000
    ));
    let stored: Vec<u64> = history
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["v"].as_f64().unwrap() as u64)
        .collect();
    let distinct: std::collections::BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(distinct.len(), stored.len(), "a reading stored twice");
    let missing: Vec<&u64> = acknowledged
        .iter()
        .filter(|v| !distinct.contains(v))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    assert_eq!(
        site.metric("fogbank_http_responses_total", "code=\"5xx\""),
        0.0,
        "no 5xx to anyone"
    );
}
