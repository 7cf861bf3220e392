//! Moving devices between two release gateways of one local cloud, with
//! the clients an operator and a device would use:
//!
//! 1. one CoAP device, moved back and forth 100 times by `POST
//!    /api/v1/devices/{device}/transport` — the time until the move is
//!    `arrived` (the offer, the Transport Management Policy write, the
//!    device's registration at the other gateway, the release and the
//!    history handed over), p50 and p99, beside the registration,
//!    device-info read (`/3/0`) and policy write TRESCIMO's table III
//!    reports for its emulated devices. The device
//!    is written here from RFC 7252, RFC 9176 and the object's definition
//!    (`docs/lwm2m/31024.xml`): it registers, answers reads, and on a policy
//!    write answers 2.04 and registers where it is told;
//! 2. a drain of 1,000 simulated devices (5,000 thing services) from one
//!    gateway to the other, and the undrain that brings them back;
//! 3. the death of a gateway (`kill -9`) that runs 10 extended services
//!    next to their inputs: the time until the other gateway runs them,
//!    from their last checkpoints (the example `floor-average`, built by
//!    `./scripts/guests`).
//!
//!   cargo bench -p fogbank --bench moves        (or ./scripts/bench)

use fogbank_testkit as testkit;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use serde_json::{Value as Json, json};
use testkit::bench::{Better::*, Figure, Process, percentile, status_kib};
use testkit::coap::request;

const TOKEN: &str = "bench-token-0123456789abcdef";
const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const MOVES: usize = 100;
const DEVICE: &str = "bench-mover";
const SERVICES: usize = 10;

struct Member {
    http: u16,
    coap: u16,
    p2p: u16,
    process: Process,
}

fn start(id: &str, dir: &std::path::Path, peer: Option<u16>, config: &str) -> Member {
    let (http, coap, p2p) = (
        testkit::free_port(),
        testkit::free_udp_port(),
        testkit::free_port(),
    );
    let config_path = dir.join(format!("{id}.toml"));
    std::fs::write(&config_path, config).unwrap();
    let mut command = Command::new(testkit::binary());
    command
        .args(["run", "--gateway-id", id, "--mqtt", "off", "--no-mdns"])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--coap", &format!("127.0.0.1:{coap}")])
        .args(["--p2p", &format!("/ip4/127.0.0.1/tcp/{p2p}")])
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(dir.join(id))
        .env("FOGBANK_CLUSTER_KEY", KEY)
        .env("FOGBANK_ADMIN_TOKEN", TOKEN)
        .env("FOGBANK_LOG", "warn")
        .stdout(Stdio::null());
    if let Some(peer) = peer {
        command.args(["--peer", &format!("/ip4/127.0.0.1/tcp/{peer}")]);
    }
    let process = Process(command.spawn().expect("the release gateway starts"));
    let member = Member {
        http,
        coap,
        p2p,
        process,
    };
    while get(&member, "/health").is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    member
}

fn get(member: &Member, path: &str) -> Option<Json> {
    ureq::get(&format!("http://127.0.0.1:{}{path}", member.http))
        .call()
        .ok()?
        .into_json()
        .ok()
}

fn post(member: &Member, path: &str, body: &Json) -> Json {
    ureq::post(&format!("http://127.0.0.1:{}{path}", member.http))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .send_json(body.clone())
        .unwrap_or_else(|error| match error {
            ureq::Error::Status(code, answer) => panic!(
                "POST {path}: {code} {}",
                answer.into_string().unwrap_or_default()
            ),
            other => panic!("POST {path}: {other}"),
        })
        .into_json()
        .unwrap()
}

/// Waits until `check` holds, polling every `every`.
fn until(limit: Duration, every: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(every);
    }
}

// ------------------------------------------------------------ the device

fn answer(to: &Packet, code: ResponseType, (format, payload): (u16, &[u8])) -> Vec<u8> {
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Acknowledgement);
    packet.header.code = MessageClass::Response(code);
    packet.header.message_id = to.header.message_id;
    packet.set_token(to.get_token().to_vec());
    if !payload.is_empty() {
        // A CoAP uint option: big-endian, without leading zero bytes.
        let bytes = format.to_be_bytes();
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        packet.add_option(CoapOption::ContentFormat, bytes[first..].to_vec());
    }
    packet.payload = payload.to_vec();
    packet.to_bytes_unlimited().unwrap()
}

/// `/3/0`, the LWM2M Device object, in OMA-TLV (content format 11542):
/// manufacturer (0), model number (1), serial number (2) and firmware
/// version (3), each a resource TLV of type 11 with an 8-bit id and an
/// 8-bit length (LWM2M 1.0, 6.4.3).
const DEVICE_OBJECT: (u16, &[u8]) = (
    11542,
    b"\xC8\x00\x05bench\xC8\x01\x06mover1\xC8\x02\x01\x31\xC8\x03\x031.0",
);

/// What the device reports: the time each registration took.
enum Event {
    Registered { took: Duration },
}

/// A registration in flight, sent again every 500 ms until answered.
struct Registration {
    to: SocketAddr,
    mid: u16,
    bytes: Vec<u8>,
    first: Instant,
    last: Option<Instant>,
}

/// Runs the device on its own thread: registered at `rd`, it re-registers
/// wherever a policy write sends it.
fn device(rd: SocketAddr, events: mpsc::Sender<Event>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let endpoint = format!("ep={DEVICE}");
    let queries = [endpoint.as_str(), "lt=600", "lwm2m=1.1"];
    let mut mid: u16 = 1;
    let register = |mid: u16, to: SocketAddr| Registration {
        to,
        mid,
        bytes: request(
            RequestType::Post,
            "/rd",
            &queries,
            b"</3/0>,</3303/0>,</31024/0>",
            mid,
        ),
        first: Instant::now(),
        last: None,
    };
    let mut registering = Some(register(mid, rd));
    let mut buffer = [0u8; 2048];
    loop {
        if let Some(r) = &mut registering
            && r.last
                .is_none_or(|l| l.elapsed() > Duration::from_millis(500))
        {
            socket.send_to(&r.bytes, r.to).unwrap();
            r.last = Some(Instant::now());
        }
        let Ok((n, from)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let Ok(packet) = Packet::from_bytes(&buffer[..n]) else {
            continue;
        };
        let object = packet
            .get_option(CoapOption::UriPath)
            .and_then(|path| path.front())
            .map(|first| first.as_slice());
        let is_policy = object == Some(b"31024");
        match packet.header.code {
            MessageClass::Response(_) => {
                if let Some(r) = &registering
                    && packet.header.message_id == r.mid
                {
                    let _ = events.send(Event::Registered {
                        took: r.first.elapsed(),
                    });
                    registering = None;
                }
            }
            MessageClass::Request(RequestType::Put) if is_policy => {
                let pack: Json = serde_json::from_slice(&packet.payload).unwrap_or(Json::Null);
                let (mut host, mut port) = (None, None);
                for record in pack.as_array().into_iter().flatten() {
                    match record["n"].as_str() {
                        Some("1") => host = record["vs"].as_str().map(str::to_owned),
                        Some("2") => port = record["v"].as_u64(),
                        _ => {}
                    }
                }
                let target = host
                    .zip(port)
                    .and_then(|(h, p)| format!("{h}:{p}").parse::<SocketAddr>().ok());
                let code = match target {
                    Some(_) => ResponseType::Changed,
                    None => ResponseType::BadRequest,
                };
                socket
                    .send_to(&answer(&packet, code, (0, b"")), from)
                    .unwrap();
                if let Some(target) = target {
                    mid = mid.wrapping_add(1);
                    registering = Some(register(mid, target));
                }
            }
            MessageClass::Request(RequestType::Get) if object == Some(b"3") => {
                socket
                    .send_to(&answer(&packet, ResponseType::Content, DEVICE_OBJECT), from)
                    .unwrap();
            }
            MessageClass::Request(_) => {
                socket
                    .send_to(&answer(&packet, ResponseType::Content, (0, b"21.5")), from)
                    .unwrap();
            }
            _ => {}
        }
    }
}

// ------------------------------------------------------------ the runs

fn main() {
    let dir = tempfile::tempdir().unwrap();
    // gw-a runs 1,000 simulated floors for the drain (a reading of each
    // resource every 5 s: 1,000 readings/s), gw-b none.
    let campus = "[sim]\nenabled = true\ninterval_ms = 5000\nbuildings = 10\nfloors = 100\n";
    let a = start("gw-a", dir.path(), None, campus);
    let b = start("gw-b", dir.path(), Some(a.p2p), "");
    until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        "gw-b sees gw-a's campus",
        || {
            get(&b, "/api/v1/things?gateway=gw-a").and_then(|t| t.as_array().map(Vec::len))
                == Some(5000)
        },
    );
    // A move is refused until the target is an up member at the owner:
    // gw-b knowing gw-a does not yet say that gw-a knows gw-b.
    until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        "gw-a sees gw-b up",
        || {
            get(&a, "/api/v1/peers")
                .and_then(|peers| {
                    peers.as_array().map(|all| {
                        all.iter()
                            .any(|p| p["gateway"] == "gw-b" && p["state"] == "up")
                    })
                })
                .unwrap_or(false)
        },
    );

    // 1. One CoAP device moved back and forth.
    let (events_tx, events) = mpsc::channel();
    let rd: SocketAddr = format!("127.0.0.1:{}", a.coap).parse().unwrap();
    std::thread::spawn(move || device(rd, events_tx));
    let mut registrations = Vec::new();
    match events.recv_timeout(Duration::from_secs(10)) {
        Ok(Event::Registered { took }) => registrations.push(took.as_secs_f64() * 1e3),
        _ => panic!("the device did not register"),
    }
    let id = format!("gw-a.coap.{DEVICE}");
    until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "the device is known",
        || get(&a, &format!("/api/v1/things/{id}.temperature")).is_some(),
    );
    // The device-info read each registration makes, as the gateway that
    // made it timed it: one read after `since` (seconds since the epoch).
    let device_info_read = |at: &Member, since: f64| {
        let mut read_ms = None;
        until(
            Duration::from_secs(10),
            Duration::from_millis(1),
            "the device info is read",
            || {
                let thing = get(at, &format!("/api/v1/things/{id}.temperature"));
                let device = thing.as_ref().map(|t| &t["metadata"]["device"]);
                read_ms = device
                    .filter(|d| d["read_at"].as_f64().is_some_and(|t| t >= since))
                    .and_then(|d| d["read_ms"].as_f64());
                read_ms.is_some()
            },
        );
        read_ms.expect("read_ms")
    };
    let mut reads = vec![device_info_read(&a, 0.0)];
    let mut moves = Vec::with_capacity(MOVES);
    let mut writes = Vec::with_capacity(MOVES);
    let (mut owner, mut other) = (&a, &b);
    for n in 0..MOVES {
        let to = if n % 2 == 0 { "gw-b" } else { "gw-a" };
        let since = testkit::now_secs();
        let started = Instant::now();
        let status = post(
            owner,
            &format!("/api/v1/devices/{id}/transport"),
            &json!({"gateway": to}),
        );
        let path = format!("/api/v1/moves/{}", status["id"]);
        let mut status = status;
        while status["state"] == "pending" {
            std::thread::sleep(Duration::from_micros(500));
            status = get(owner, &path).unwrap_or(Json::Null);
        }
        moves.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status["state"], "arrived", "move {n}: {status}");
        writes.push(status["repoint_ms"].as_f64().expect("repoint_ms"));
        reads.push(device_info_read(other, since));
        for Event::Registered { took } in events.try_iter() {
            registrations.push(took.as_secs_f64() * 1e3);
        }
        std::mem::swap(&mut owner, &mut other);
    }
    for Event::Registered { took } in events.try_iter() {
        registrations.push(took.as_secs_f64() * 1e3);
    }
    moves.sort_by(f64::total_cmp);
    writes.sort_by(f64::total_cmp);
    reads.sort_by(f64::total_cmp);
    registrations.sort_by(f64::total_cmp);

    // 2. Drain gw-a's 1,000 floors to gw-b, and back.
    let started = Instant::now();
    let drained = post(&a, "/api/v1/drain", &json!({"to": "gw-b"}));
    assert_eq!(drained["kind"], "drain");
    let mut status = Json::Null;
    until(
        Duration::from_secs(600),
        Duration::from_millis(50),
        "the drain",
        || {
            status = get(&a, "/api/v1/drain").unwrap_or(Json::Null);
            status["state"] != "running"
        },
    );
    let drain = started.elapsed();
    let drained_devices = status["moved"].as_object().map_or(0, |m| m.len());
    assert_eq!(status["state"], "done", "{}", status["failed"]);
    let started = Instant::now();
    post(&a, "/api/v1/undrain", &json!({}));
    until(
        Duration::from_secs(600),
        Duration::from_millis(50),
        "the undrain",
        || {
            status = get(&a, "/api/v1/drain").unwrap_or(Json::Null);
            status["kind"] == "undrain" && status["state"] != "running"
        },
    );
    let undrain = started.elapsed();
    let undrained_devices = status["moved"].as_object().map_or(0, |m| m.len());
    assert_eq!(status["state"], "done", "{}", status["failed"]);

    // 3. gw-a, back with its campus, runs SERVICES services; it dies.
    let manifest = testkit::manifest("floor-average");
    let component =
        base64::engine::general_purpose::STANDARD.encode(testkit::component("floor-average"));
    for n in 0..SERVICES {
        let text = manifest.replace(
            "name = \"floor-average\"",
            &format!("name = \"average-{n}\""),
        );
        post(
            &a,
            "/api/v1/services",
            &json!({"manifest": text, "component": component}),
        );
    }
    // As gw-b sees them: (placed at gw-a, running at gw-b).
    let placed = |at: &str| {
        get(&b, "/api/v1/services")
            .and_then(|all| all.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|s| s["gateway"] == at && (at != "gw-b" || s["state"] == "running"))
            .count()
    };
    until(
        Duration::from_secs(120),
        Duration::from_millis(50),
        "the services run at gw-a",
        || placed("gw-a") == SERVICES,
    );
    // Their stores checkpointed, as a service that ran a while has them.
    std::thread::sleep(Duration::from_secs(2));
    let rss_a = status_kib(a.process.0.id(), "VmHWM:") as f64 / 1024.0;
    let mut a = a;
    a.process.0.kill().expect("gw-a is killed");
    let died = Instant::now();
    let mut first = None;
    until(
        Duration::from_secs(60),
        Duration::from_millis(2),
        "the services run at gw-b",
        || {
            let running = placed("gw-b");
            if running > 0 && first.is_none() {
                first = Some(died.elapsed());
            }
            running == SERVICES
        },
    );
    let all = died.elapsed();
    let first = first.unwrap_or(all);
    let _ = a.process.0.wait();

    let rss = |m: &Member| status_kib(m.process.0.id(), "VmHWM:") as f64 / 1024.0;
    println!(
        "moves ({} cores shared by both gateways and the clients)",
        testkit::bench::cores()
    );
    println!(
        "  move of a CoAP device, request to arrived, p50 / p99: {:.1} / {:.1} ms ({MOVES} moves; TRESCIMO table III, the policy write alone: 8.4 ms)",
        percentile(&moves, 0.5),
        percentile(&moves, 0.99)
    );
    println!(
        "  device-info read (GET /3/0 to 2.05, OMA-TLV), the gateway's side, p50 / p99: {:.2} / {:.2} ms ({} reads; TRESCIMO: 5.9 ms)",
        percentile(&reads, 0.5),
        percentile(&reads, 0.99),
        reads.len()
    );
    println!(
        "  policy write (PUT /31024/0 to 2.04), the gateway's side, p50 / p99: {:.2} / {:.2} ms (TRESCIMO: 8.4 ms)",
        percentile(&writes, 0.5),
        percentile(&writes, 0.99)
    );
    println!(
        "  registration at the target, the device's side, p50 / p99: {:.2} / {:.2} ms ({} registrations; TRESCIMO: 138.5 ms)",
        percentile(&registrations, 0.5),
        percentile(&registrations, 0.99),
        registrations.len()
    );
    println!(
        "  drain of {drained_devices} devices (1,000 simulated floors, 5,000 thing services, and the CoAP device): {:.1} s, {:.0} devices/s",
        drain.as_secs_f64(),
        drained_devices as f64 / drain.as_secs_f64()
    );
    println!(
        "  undrain of {undrained_devices}: {:.1} s, {:.0} devices/s",
        undrain.as_secs_f64(),
        undrained_devices as f64 / undrain.as_secs_f64()
    );
    println!(
        "  death of a gateway to its {SERVICES} extended services running at the other: first {:.0} ms, all {:.0} ms (from their last checkpoints)",
        first.as_secs_f64() * 1e3,
        all.as_secs_f64() * 1e3
    );
    println!("  peak RSS: gw-a {rss_a:.1} MiB, gw-b {:.1} MiB", rss(&b));
    const AREA: &str = "Moving devices between gateways";
    const PAPER: &str = "TRESCIMO, table III (paper, not this run)";
    for (what, samples, paper) in [
        ("move of a CoAP device, request → arrived", &moves, None),
        (
            "device-info read (GET /3/0), gateway side",
            &reads,
            Some(5.9),
        ),
        (
            "policy write (PUT /31024/0), gateway side",
            &writes,
            Some(8.4),
        ),
        (
            "registration at the new gateway, device side",
            &registrations,
            Some(138.5),
        ),
    ] {
        let p50 = Figure::new(
            AREA,
            &format!("{what}, p50"),
            percentile(samples, 0.5),
            "ms",
            Lower,
        );
        match paper {
            Some(figure) => p50.against(PAPER, figure).record(),
            None => p50.record(),
        }
        Figure::new(
            AREA,
            &format!("{what}, p99"),
            percentile(samples, 0.99),
            "ms",
            Lower,
        )
        .record();
    }
    Figure::new(
        AREA,
        &format!("drain of {drained_devices} devices"),
        drained_devices as f64 / drain.as_secs_f64(),
        "devices/s",
        Higher,
    )
    .record();
    Figure::new(
        AREA,
        &format!("undrain of {undrained_devices} devices"),
        undrained_devices as f64 / undrain.as_secs_f64(),
        "devices/s",
        Higher,
    )
    .record();
    Figure::new(
        AREA,
        &format!("a gateway's death → all its {SERVICES} services running at the other"),
        all.as_secs_f64() * 1e3,
        "ms",
        Lower,
    )
    .record();
    Figure::new(AREA, "peak RSS of the drained gateway", rss_a, "MiB", Lower).record();
}
