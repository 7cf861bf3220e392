//! Federation to the SD-IoT controller with real processes: one
//! `fogbank controller` and two gateways running the campus simulator,
//! each with its own S-MANAGE address block, on loopback.

use fogbank_testkit as testkit;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::{Controller, Gateway};

const FAST: &str = "hello_interval_secs = 1\n";

fn gateway(tmp: &std::path::Path, id: &str, controller: &Controller, block: &str) -> Gateway {
    let config = tmp.join(format!("{id}.toml"));
    std::fs::write(&config, format!("[smanage]\n{FAST}")).unwrap();
    let sdvs_port = testkit::free_udp_port().to_string();
    Gateway::start_in(
        &tmp.join(id),
        &["--demo", "--config", config.to_str().unwrap()],
        &[
            ("FOGBANK_GATEWAY_ID", id),
            ("FOGBANK_SMANAGE_CONTROLLER", &controller.smanage()),
            ("FOGBANK_SMANAGE_LISTEN", &format!("127.0.0.1:{sdvs_port}")),
            ("FOGBANK_SMANAGE_ADDRESSES", block),
        ],
    )
}

fn request(controller: &Controller, body: Value) -> Value {
    let answer = controller.write("POST", "/api/v1/requests", &body);
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()
}

fn wait_state(controller: &Controller, id: u64, state: &str, limit: Duration) -> Value {
    controller
        .wait_for(
            &format!("/api/v1/requests/{id}"),
            limit,
            &format!("request {id} {state}"),
            |a| a.status == 200 && a.json()["state"] == state,
        )
        .json()
}

fn sdvs_up(controller: &Controller) -> Vec<Value> {
    controller
        .get("/api/v1/sdvs")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["up"] == true)
        .cloned()
        .collect()
}

#[test]
fn requests_run_on_two_gateways_through_conflicts_failures_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut controller = Controller::start_in(&tmp.path().join("controller"), FAST);
    let mut gw_a = gateway(tmp.path(), "gw-a", &controller, "0x0100-0x01ff");
    let mut gw_b = gateway(tmp.path(), "gw-b", &controller, "0x0200-0x02ff");

    // Both gateways' 16 devices, each an SDVS with its 5 sensor services.
    controller.wait_for("/api/v1/sdvs", Duration::from_secs(15), "16 SDVSs", |a| {
        a.json().as_array().is_some_and(|all| {
            all.len() == 16
                && all
                    .iter()
                    .all(|s| s["up"] == true && s["services"].as_array().map_or(0, Vec::len) == 5)
        })
    });
    // A forged Hello for a live SDVS, from elsewhere, does not move it.
    let endpoint = controller.get("/api/v1/sdvs/0x0100").json()["gateway"].clone();
    let forger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    forger
        .send_to(
            &[0x01, 0x00, 0, 0, 0, 0, 0x01, 12, 16, 0, 0, 255],
            controller.smanage(),
        )
        .unwrap();
    controller.wait_for(
        "/metrics",
        Duration::from_secs(5),
        "the forged Hello refused",
        |a| {
            String::from_utf8_lossy(&a.body)
                .contains("fogbank_controller_dropped_total{reason=\"endpoint_pinned\"} 1")
        },
    );
    assert_eq!(
        controller.get("/api/v1/sdvs/0x0100").json()["gateway"],
        endpoint
    );

    let events = testkit::follow_events(
        &controller.url("/api/v1/events"),
        "completion",
        Duration::from_secs(60),
    );

    // Temperature every second for 10 s in building A: full, on 8 SDVSs
    // (4 per gateway); the data streams to the controller.
    let temperature = request(
        &controller,
        json!({"type": "temperature", "location": "campus/building-a", "frequency_s": 1, "period_s": 10, "action": "read"}),
    );
    assert_eq!(temperature["outcome"], "full");
    assert_eq!(temperature["state"], "running");
    let assigned = temperature["assigned"].as_array().unwrap();
    assert_eq!(assigned.len(), 8);
    let id = temperature["id"].as_u64().unwrap();
    let samples = testkit::read_events(
        &controller.url(&format!("/api/v1/requests/{id}/stream")),
        "reading",
        8,
        Duration::from_secs(10),
    );
    for sample in &samples {
        let record: Value = serde_json::from_str(sample).unwrap();
        let v = record[0]["v"].as_f64().unwrap();
        assert!((5.0..40.0).contains(&v), "a room temperature: {sample}");
    }

    // Lamps read for 4 s, then switched off: the switch-off conflicts and
    // is queued with the reads' remaining time, then runs.
    let reads = request(
        &controller,
        json!({"type": "switch", "location": "campus/building-a", "frequency_s": 1, "period_s": 4, "action": "read"}),
    );
    assert_eq!(reads["outcome"], "full");
    let off = request(
        &controller,
        json!({"type": "switch", "location": "campus/building-a", "frequency_s": 0, "period_s": 1, "action": "off"}),
    );
    assert_eq!(off["outcome"], "partial");
    assert_eq!(off["state"], "queued");
    assert_eq!(off["assigned"].as_array().unwrap().len(), 0);
    assert_eq!(off["pending"].as_array().unwrap().len(), 8);
    assert!(
        off["pending"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["waiting_for"] == "conflict")
    );
    let waiting = off["waiting_s"].as_u64().unwrap();
    assert!((1..=4).contains(&waiting), "waiting {waiting} s");
    let queue = controller.get("/api/v1/requests?state=queued").json();
    assert!(
        queue
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == off["id"])
    );
    let off_id = off["id"].as_u64().unwrap();
    wait_state(
        &controller,
        reads["id"].as_u64().unwrap(),
        "completed",
        Duration::from_secs(10),
    );
    let done = wait_state(&controller, off_id, "completed", Duration::from_secs(10));
    assert!(
        done["assignments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["state"] == "completed")
    );
    gw_a.wait_for(
        "/api/v1/things/gw-a.sim.building-a-floor-2.lamp/reading",
        "the lamp off",
        |r| r.status == 200 && r.json()[0]["vb"] == false,
    );

    // Nobody has CO2: unable. More temperatures than exist: partial.
    let unable = controller.write(
        "POST",
        "/api/v1/requests",
        &json!({"type": "co2", "location": "campus", "frequency_s": 1, "period_s": 5, "action": "read"}),
    );
    assert_eq!(unable.status, 422);
    let problem = unable.assert_problem(422);
    assert_eq!(problem["outcome"], "unable");
    let too_many = request(
        &controller,
        json!({"type": "humidity", "location": "campus", "frequency_s": 5, "period_s": 60, "action": "read", "count": 20}),
    );
    assert_eq!(too_many["outcome"], "partial");
    assert_eq!(too_many["missing"], 4);
    // The CLI speaks to the controller like any application.
    let sd = |args: &[&str]| {
        std::process::Command::new(testkit::binary())
            .arg("sd")
            .args(args)
            .args(["--url", &controller.url("")])
            .env("FOGBANK_ADMIN_TOKEN", testkit::CONTROLLER_TOKEN)
            .output()
            .unwrap()
    };
    let placed = sd(&[
        "request",
        "--type",
        "motion",
        "--location",
        "campus/building-b",
        "--period",
        "2",
        "--frequency",
        "1",
    ]);
    assert!(
        placed.status.success(),
        "{}",
        String::from_utf8_lossy(&placed.stderr)
    );
    assert!(
        String::from_utf8_lossy(&placed.stdout).contains("full (running), 8 assigned"),
        "{}",
        String::from_utf8_lossy(&placed.stdout)
    );
    let refused = sd(&[
        "request",
        "--type",
        "co2",
        "--location",
        "campus",
        "--period",
        "2",
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("422"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let listed = sd(&["requests"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("motion"));
    let sdvs: Value = serde_json::from_slice(&sd(&["sdvs", "--json"]).stdout).unwrap();
    assert_eq!(sdvs.as_array().unwrap().len(), 16);

    let cancelled = controller.write(
        "DELETE",
        &format!("/api/v1/requests/{}", too_many["id"]),
        &json!(null),
    );
    assert_eq!(cancelled.json()["state"], "cancelled");

    // The temperature request completes: ReportCompletion from its SDVSs,
    // 10 samples from each of 8 services in its SenML data.
    let done = wait_state(&controller, id, "completed", Duration::from_secs(15));
    assert!(done["readings"].as_u64().unwrap() >= 72, "{done}");
    let completion: Value =
        serde_json::from_str(&events.recv_timeout(Duration::from_secs(5)).unwrap()).unwrap();
    assert!(completion["sdvs"].as_str().unwrap().starts_with("0x0"));
    let pack = controller.get(&format!("/api/v1/requests/{id}/readings"));
    assert_eq!(pack.content_type, "application/senml+json");
    let records = pack.json();
    assert!(records.as_array().unwrap().len() >= 72);
    assert_eq!(records[0]["bn"], format!("urn:fogbank:request:{id}:"));

    // The controller killed and restarted mid-request carries on with it.
    let long = request(
        &controller,
        json!({"type": "light", "location": "campus/building-b", "frequency_s": 1, "period_s": 6, "action": "read"}),
    );
    let long_id = long["id"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    controller.restart_after_kill9();
    let before = controller
        .get(&format!("/api/v1/requests/{long_id}"))
        .json();
    assert_eq!(before["state"], "running");
    let after = wait_state(&controller, long_id, "completed", Duration::from_secs(15));
    assert!(after["readings"].as_u64().unwrap() > before["readings"].as_u64().unwrap());

    // Data for an SDVS of the other gateway goes through the controller,
    // which relays it to that gateway's endpoint.
    let relayed = request(
        &controller,
        json!({"type": "temperature", "location": "campus/building-a/floor-1", "frequency_s": 1, "period_s": 2, "action": "read", "count": 1, "destination": "0x0200"}),
    );
    assert_eq!(relayed["assigned"][0]["sdvs"], "0x0100");
    gw_b.wait_for(
        "/api/v1/federation/smanage",
        "a Response relayed to gw-b",
        |a| {
            a.json()["counters"]["received"]["Response"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        },
    );
    let metrics = controller.get("/metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    let relayed_total = text
        .lines()
        .find_map(|l| l.strip_prefix("fogbank_controller_relayed_total "))
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(relayed_total >= 1.0, "{text}");

    // A gateway killed: its SDVSs go down, and a request on two of its
    // services moves to the other gateway's. (Its SDVSs fall silent one by
    // one, each at its own tick: the request may pass through another of
    // them first.)
    controller.wait_for(
        "/api/v1/sdvs",
        Duration::from_secs(10),
        "every SDVS up again",
        |a| {
            a.json()
                .as_array()
                .is_some_and(|all| all.iter().filter(|s| s["up"] == true).count() == 16)
        },
    );
    let moving = request(
        &controller,
        json!({"type": "temperature", "location": "campus/building-a", "frequency_s": 1, "period_s": 30, "action": "read", "count": 2}),
    );
    let moving_id = moving["id"].as_u64().unwrap();
    let on_a = moving["assigned"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["sdvs"].as_str().unwrap().starts_with("0x01"));
    assert!(on_a, "the least busy first: gw-a's SDVSs {moving}");
    let started = Instant::now();
    gw_a.kill9();
    controller.wait_for(
        "/api/v1/sdvs",
        Duration::from_secs(10),
        "gw-a's SDVSs down",
        |_| sdvs_up(&controller).len() == 8,
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "down after three silent seconds"
    );
    let moved = controller.wait_for(
        &format!("/api/v1/requests/{moving_id}"),
        Duration::from_secs(5),
        "re-planned",
        |a| {
            let r = a.json();
            let assignments = r["assignments"].as_array().cloned().unwrap_or_default();
            assignments.iter().filter(|a| a["state"] == "lost").count() >= 2
                && assignments
                    .iter()
                    .filter(|a| {
                        a["state"] == "programmed"
                            && a["sdvs"].as_str().unwrap().starts_with("0x02")
                    })
                    .count()
                    == 2
                && assignments.iter().all(|a| {
                    a["state"] != "programmed" || a["sdvs"].as_str().unwrap().starts_with("0x02")
                })
        },
    );
    assert_eq!(moved.json()["state"], "running");

    // With the other gateway gone too, nothing can take it: it fails, and
    // says why.
    gw_b.kill9();
    let failed = wait_state(&controller, moving_id, "failed", Duration::from_secs(10));
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("went down"), "{reason}");
}

/// Datagrams as a capture holds them: when, from, to, bytes.
type Frames = std::sync::Arc<
    std::sync::Mutex<
        Vec<(
            std::time::SystemTime,
            std::net::SocketAddr,
            std::net::SocketAddr,
            Vec<u8>,
        )>,
    >,
>;

/// A UDP relay between one gateway and the controller that records every
/// datagram both ways: the gateway is told the relay is its controller.
fn recording_relay(controller: std::net::SocketAddr) -> (std::net::SocketAddr, Frames) {
    use std::net::UdpSocket;
    let towards_gateway = UdpSocket::bind("127.0.0.1:0").unwrap();
    let towards_controller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let facing = towards_gateway.local_addr().unwrap();
    let frames: Frames = Default::default();
    let gateway: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>> =
        Default::default();
    {
        let (inbound, outbound) = (
            towards_gateway.try_clone().unwrap(),
            towards_controller.try_clone().unwrap(),
        );
        let (frames, gateway) = (frames.clone(), gateway.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((len, from)) = inbound.recv_from(&mut buf) {
                *gateway.lock().unwrap() = Some(from);
                frames.lock().unwrap().push((
                    std::time::SystemTime::now(),
                    from,
                    controller,
                    buf[..len].to_vec(),
                ));
                let _ = outbound.send_to(&buf[..len], controller);
            }
        });
    }
    {
        let frames = frames.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((len, from)) = towards_controller.recv_from(&mut buf) {
                let Some(to) = *gateway.lock().unwrap() else {
                    continue;
                };
                frames.lock().unwrap().push((
                    std::time::SystemTime::now(),
                    from,
                    to,
                    buf[..len].to_vec(),
                ));
                let _ = towards_gateway.send_to(&buf[..len], to);
            }
        });
    }
    (facing, frames)
}

/// The frames as a pcap file of raw IPv4 (link type 101) UDP datagrams.
fn pcap(
    frames: &[(
        std::time::SystemTime,
        std::net::SocketAddr,
        std::net::SocketAddr,
        Vec<u8>,
    )],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for word in [0u32, 0, 65535, 101] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    let octets = |a: &std::net::SocketAddr| match a.ip() {
        std::net::IpAddr::V4(ip) => ip.octets(),
        std::net::IpAddr::V6(_) => [127, 0, 0, 1],
    };
    for (time, from, to, payload) in frames {
        let mut udp = Vec::new();
        udp.extend_from_slice(&from.port().to_be_bytes());
        udp.extend_from_slice(&to.port().to_be_bytes());
        udp.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&(20 + udp.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
        ip.extend_from_slice(&octets(from));
        ip.extend_from_slice(&octets(to));
        let sum: u32 = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        ip[10..12].copy_from_slice(&(!((folded & 0xffff) + (folded >> 16)) as u16).to_be_bytes());
        ip.extend_from_slice(&udp);
        let since = time.duration_since(std::time::UNIX_EPOCH).unwrap();
        out.extend_from_slice(&(since.as_secs() as u32).to_le_bytes());
        out.extend_from_slice(&since.subsec_micros().to_le_bytes());
        out.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        out.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        out.extend_from_slice(&ip);
    }
    out
}

/// The Wireshark dissector reads a capture of a gateway and the controller
/// talking through a request: every header field and packet type by name,
/// the tables decoded, nothing malformed.
#[test]
fn wireshark_reads_a_capture_of_gateway_and_controller() {
    let tmp = tempfile::tempdir().unwrap();
    let controller = Controller::start_in(&tmp.path().join("controller"), FAST);
    let (relay, frames) = recording_relay(controller.smanage().parse().unwrap());
    let config = tmp.path().join("gw.toml");
    std::fs::write(&config, format!("[smanage]\n{FAST}")).unwrap();
    let _gw = Gateway::start_in(
        &tmp.path().join("gw"),
        &["--demo", "--config", config.to_str().unwrap()],
        &[
            ("FOGBANK_GATEWAY_ID", "gw-w"),
            ("FOGBANK_SMANAGE_CONTROLLER", &relay.to_string()),
            (
                "FOGBANK_SMANAGE_LISTEN",
                &format!("127.0.0.1:{}", testkit::free_udp_port()),
            ),
        ],
    );
    controller.wait_for("/api/v1/sdvs", Duration::from_secs(15), "8 SDVSs", |a| {
        a.json().as_array().is_some_and(|all| {
            all.len() == 8
                && all
                    .iter()
                    .all(|s| !s["services"].as_array().unwrap().is_empty())
        })
    });
    let placed = request(
        &controller,
        json!({"type": "temperature", "location": "campus/building-a/floor-1", "frequency_s": 1, "period_s": 2, "action": "read"}),
    );
    wait_state(
        &controller,
        placed["id"].as_u64().unwrap(),
        "completed",
        Duration::from_secs(10),
    );
    let service = &placed["assigned"][0]["service"];
    std::thread::sleep(Duration::from_millis(1500)); // a stats poll
    let capture = tmp.path().join("smanage.pcap");
    std::fs::write(&capture, pcap(&frames.lock().unwrap())).unwrap();

    let dissector = testkit::package_file("../deploy/wireshark/smanage.lua");
    let output = std::process::Command::new("tshark")
        .args([
            "-r",
            capture.to_str().unwrap(),
            "-X",
            &format!("lua_script:{}", dissector.display()),
            "-V",
        ])
        .output()
        .expect("tshark runs (scripts/test installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "S-MANAGE, Hello",
        "Source address: 0x0100",
        "Destination address: 0x0000",
        "Next-hop address: 0x0000",
        "Packet length: 12",
        "TTL: 16",
        "Message id:",
        "State (busy level): 0",
        "Battery %: mains (255)",
        "Report kind: ReportFeatures (0x01)",
        "Location: campus/building-a/floor-1",
        "Type: temperature",
        "Driver: sim",
        "Source address: 0x0000",
        "S-MANAGE, SetConfiguringInstruction",
        "S-MANAGE, Response",
        "Decimal exponent:",
        "Report kind: ReportCompletion (0x05)",
        "S-MANAGE, RequestConfigStats",
        "S-MANAGE, ResponseConfigStats",
        "Executed: ",
        "Running time (s):",
    ] {
        assert!(text.contains(expected), "no {expected:?} in the dissection");
    }
    let entry = format!("Configuring entry: request 1, service {service}, read every 1 s for 2 s");
    assert!(text.contains(&entry), "no {entry:?} in the dissection");
    assert!(
        !text.contains("Malformed"),
        "a malformed packet in the capture"
    );
}

/// With `gateways` listed, the controller takes datagrams from those only.
#[test]
fn a_controller_takes_only_the_gateways_it_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let controller = Controller::start_in(
        &tmp.path().join("controller"),
        &format!("{FAST}gateways = [\"127.0.0.1:1\"]\n"),
    );
    let _gw = gateway(tmp.path(), "gw-x", &controller, "0x0100-0x01ff");
    controller.wait_for(
        "/metrics",
        Duration::from_secs(10),
        "strangers counted",
        |a| {
            String::from_utf8_lossy(&a.body)
                .contains("fogbank_controller_dropped_total{reason=\"stranger\"}")
        },
    );
    assert_eq!(controller.get("/api/v1/sdvs").json(), serde_json::json!([]));
}
