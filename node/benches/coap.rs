//! CoAP benchmark against a real peer, in one run, with one client:
//!
//! 1. requests/s: confirmable GETs from 4 client threads (one outstanding
//!    request each) for 3 s, to libcoap's `coap-server-notls` serving its
//!    static `/` and to the gateway's `GET /things/{id}` (SenML JSON);
//! 2. latency on loopback, p50 and p99: a device registering at `/rd`; an
//!    application reading `/things/{id}` of a registered device; an
//!    application writing (`PUT /things/{id}`) to a registered device, which
//!    the gateway forwards to the device and answers when it has the
//!    device's answer.
//!
//!   cargo bench -p fogbank --bench coap        (or ./scripts/bench)

use fogbank_testkit as testkit;

use std::net::UdpSocket;
use std::process::{Command, Stdio};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use testkit::bench::{Better::*, Chart, Figure, Process, record_latencies};
use testkit::coap::request;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};

/// One confirmable exchange: sends until the matching ACK arrives.
fn exchange(socket: &UdpSocket, bytes: &[u8]) -> Packet {
    let mid = u16::from_be_bytes([bytes[2], bytes[3]]);
    let mut buffer = [0u8; 2048];
    loop {
        socket.send(bytes).unwrap();
        while let Ok(n) = socket.recv(&mut buffer) {
            if let Ok(packet) = Packet::from_bytes(&buffer[..n])
                && packet.header.message_id == mid
                && packet.header.get_type() == MessageType::Acknowledgement
            {
                return packet;
            }
        }
    }
}

fn client_socket(port: u16) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    socket
}

/// Confirmable GETs of `path` per second, from 4 threads for 3 s.
fn requests_per_second(port: u16, path: &str) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4u16)
        .map(|t| {
            let (done, stop, path) = (done.clone(), stop.clone(), path.to_owned());
            std::thread::spawn(move || {
                let socket = client_socket(port);
                let mut mid = t.wrapping_mul(16_000);
                while !stop.load(Ordering::Relaxed) {
                    mid = mid.wrapping_add(1);
                    let answer =
                        exchange(&socket, &request(RequestType::Get, &path, &[], b"", mid));
                    assert_eq!(
                        answer.header.code,
                        MessageClass::Response(ResponseType::Content)
                    );
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let start_count = done.load(Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let count = done.load(Ordering::Relaxed) - start_count;
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    count as f64 / elapsed.as_secs_f64()
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.5).as_secs_f64() * 1e3, at(0.99).as_secs_f64() * 1e3)
}

/// A device that answers GETs with `21.5` (`false` for its lamp; Observe 0
/// where asked) and every PUT with 2.04, on its own thread.
fn device(socket: UdpSocket) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 2048];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buffer) else {
                continue;
            };
            let Ok(packet) = Packet::from_bytes(&buffer[..n]) else {
                continue;
            };
            let code = match packet.header.code {
                MessageClass::Request(RequestType::Get) => ResponseType::Content,
                MessageClass::Request(RequestType::Put) => ResponseType::Changed,
                _ => continue,
            };
            let mut reply = Packet::new();
            reply.header.set_type(MessageType::Acknowledgement);
            reply.header.message_id = packet.header.message_id;
            reply.header.code = MessageClass::Response(code);
            reply.set_token(packet.get_token().to_vec());
            if code == ResponseType::Content {
                if packet.get_observe_value().is_some() {
                    reply.set_observe_value(0);
                }
                let lamp = packet
                    .get_option(CoapOption::UriPath)
                    .is_some_and(|p| p.iter().any(|s| s == b"lamp"));
                reply.payload = if lamp {
                    b"false".to_vec()
                } else {
                    b"21.5".to_vec()
                };
            }
            let _ = socket.send_to(&reply.to_bytes_unlimited().unwrap(), peer);
        }
    });
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("coap: bench");
        return;
    }
    let libcoap_port = testkit::free_udp_port();
    let _libcoap = Process(
        Command::new("coap-server-notls")
            .args(["-A", "127.0.0.1", "-p", &libcoap_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coap-server-notls (libcoap3-bin)"),
    );

    let dir = tempfile::tempdir().unwrap();
    let coap_port = testkit::free_udp_port();
    let http_port = testkit::free_port();
    let gateway = Process(
        Command::new(testkit::binary())
            .args(["run", "--gateway-id", "bench", "--mqtt", "off"])
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(["--coap", &format!("127.0.0.1:{coap_port}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("FOGBANK_LOG", "warn")
            .env("FOGBANK_ADMIN_TOKEN", "bench-token-0123456789abcdef")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait for the endpoint, and give libcoap a moment too.
    let probe = client_socket(coap_port);
    exchange(
        &probe,
        &request(RequestType::Get, ".well-known/core", &[], b"", 1),
    );
    exchange(
        &client_socket(libcoap_port),
        &request(RequestType::Get, "", &[], b"", 1),
    );

    // A registered device with a sensor and an actuator.
    let device_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    device(device_socket.try_clone().unwrap());
    let links = br#"</temp>;rt="temperature";obs,</lamp>;rt="switch";if="core.a""#;
    let registration = request(
        RequestType::Post,
        "rd",
        &["ep=bench-device", "lt=3600"],
        links,
        2,
    );
    // Registered from the device's own socket (the gateway talks back to
    // that address); the device thread ignores the 2.01.
    device_socket
        .send_to(&registration, ("127.0.0.1", coap_port))
        .unwrap();
    let thing = "things/bench.coap.bench-device.temp";
    let reader = client_socket(coap_port);
    let mut mid = 100u16;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut registered_at = Instant::now();
    loop {
        // The registration is one datagram the device thread does not
        // retransmit: sent again until the gateway has the reading (a
        // quick run once lost it), as a device's CoAP stack would.
        // A new message id each time: the same one would be taken for a
        // duplicate and only answered again.
        if registered_at.elapsed() > Duration::from_millis(500) {
            mid += 1;
            let again = request(
                RequestType::Post,
                "rd",
                &["ep=bench-device", "lt=3600"],
                links,
                mid,
            );
            device_socket
                .send_to(&again, ("127.0.0.1", coap_port))
                .unwrap();
            registered_at = Instant::now();
        }
        mid += 1;
        let answer = exchange(&reader, &request(RequestType::Get, thing, &[], b"", mid));
        if answer.payload.windows(4).any(|w| w == b"21.5") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the device's reading never arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let peer = requests_per_second(libcoap_port, "");
    let ours = requests_per_second(coap_port, thing);

    // Registration latency: fresh endpoints, from one client socket.
    let registrar = client_socket(coap_port);
    let mut registrations = Vec::new();
    for i in 0..500u16 {
        let ep = format!("ep=bench-{i}");
        let bytes = request(
            RequestType::Post,
            "rd",
            &[&ep, "lt=3600"],
            b"</temp>;rt=\"temperature\"",
            1000 + i,
        );
        let start = Instant::now();
        let answer = exchange(&registrar, &bytes);
        registrations.push(start.elapsed());
        assert_eq!(
            answer.header.code,
            MessageClass::Response(ResponseType::Created)
        );
    }
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for i in 0..500u16 {
        let start = Instant::now();
        exchange(
            &reader,
            &request(RequestType::Get, thing, &[], b"", 5000 + i),
        );
        reads.push(start.elapsed());
        let payload = if i % 2 == 0 {
            b"on".as_slice()
        } else {
            b"off".as_slice()
        };
        let start = Instant::now();
        let answer = exchange(
            &reader,
            &request(
                RequestType::Put,
                "things/bench.coap.bench-device.lamp",
                &[],
                payload,
                6000 + i,
            ),
        );
        writes.push(start.elapsed());
        assert_eq!(
            answer.header.code,
            MessageClass::Response(ResponseType::Changed)
        );
    }
    let rss = std::fs::read_to_string(format!("/proc/{}/status", gateway.0.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_owned())
        })
        .unwrap_or_default();

    let chart = Chart {
        title: "CoAP latency on loopback",
        x: "quantile",
        y: "ms",
        x_scale: "quantile",
    };
    let ms = |samples: &[Duration]| -> Vec<f64> {
        samples.iter().map(|d| d.as_secs_f64() * 1e3).collect()
    };
    record_latencies(&chart, "registration (POST /rd)", &ms(&registrations));
    record_latencies(&chart, "read (GET /things/{id})", &ms(&reads));
    record_latencies(&chart, "write (PUT to the device)", &ms(&writes));
    let (reg50, reg99) = percentiles(registrations);
    let (read50, read99) = percentiles(reads);
    let (write50, write99) = percentiles(writes);
    println!(
        "CoAP, confirmable requests on loopback, 4 client threads, {} cores",
        testkit::bench::cores()
    );
    println!("  coap-server-notls GET / (peer)            {peer:>9.0} req/s");
    println!(
        "  fogbank GET /things/{{id}}                  {ours:>9.0} req/s  ratio {:.2}",
        ours / peer
    );
    println!(
        "  registration (POST /rd)        p50 {reg50:.3} ms  p99 {reg99:.3} ms   (TRESCIMO: 138 ms)"
    );
    println!(
        "  read  (GET /things/{{id}})       p50 {read50:.3} ms  p99 {read99:.3} ms   (TRESCIMO: 5.9 ms)"
    );
    println!(
        "  write (PUT to the device)      p50 {write50:.3} ms  p99 {write99:.3} ms   (TRESCIMO: 8.4 ms)"
    );
    println!(
        "  gateway peak RSS: {}",
        rss.trim_start_matches("VmHWM:").trim()
    );
    const AREA: &str = "CoAP";
    const PAPER: &str = "TRESCIMO's gateway, table III (paper, not this run)";
    Figure::new(
        AREA,
        "GET requests/s, confirmable, 4 clients",
        ours,
        "requests/s",
        Higher,
    )
    .against("libcoap coap-server-notls, static /", peer)
    .record();
    for (what, p50, p99, paper) in [
        ("registration (POST /rd)", reg50, reg99, 138.0),
        ("read (GET /things/{id})", read50, read99, 5.9),
        ("write (PUT to the device and back)", write50, write99, 8.4),
    ] {
        Figure::new(AREA, &format!("{what} p50"), p50, "ms", Lower)
            .against(PAPER, paper)
            .record();
        Figure::new(AREA, &format!("{what} p99"), p99, "ms", Lower).record();
    }
    let peak_kib: f64 = rss
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    Figure::new(AREA, "gateway peak RSS", peak_kib / 1024.0, "MiB", Lower).record();
}
