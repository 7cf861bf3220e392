//! The fault campaign: a real gateway under load while something breaks,
//! and what the devices were told checked against what the gateway holds
//! afterwards. The goal in every case is that nothing acknowledged is lost
//! or doubled, and that the gateway carries on without an operator.
//!
//! Each case's load is numbered: reading `n` carries the value `n` and a
//! time of its own, so that the history shows exactly which were kept, and
//! how often.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fogbank_testkit::netns::Lan;
use fogbank_testkit::{
    self as testkit, Gateway, Member, Mosquitto, as_root, free_port, gateway::http, within,
};
use serde_json::json;

/// What a loader was told was stored: each acknowledged sequence number.
type Acknowledged = Vec<u64>;

/// A device publishing numbered SenML packs at QoS 1 on `things/{device}`,
/// one at a time (at most one per `pace`, if given), until `stop`; when
/// its connection breaks it connects again and goes on with the next
/// number. A number is acknowledged when its PUBACK (0x40, 2, packet id)
/// came.
fn mqtt_load(
    port: u16,
    device: &str,
    base: f64,
    stop: Arc<AtomicBool>,
    pace: Option<Duration>,
) -> JoinHandle<Acknowledged> {
    let device = device.to_owned();
    std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        let topic = format!("things/{device}");
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut connack = [0u8; 4];
            if stream
                .write_all(&testkit::mqtt_connect(4, &format!("fault-{device}")))
                .and_then(|()| stream.read_exact(&mut connack))
                .is_err()
            {
                continue;
            }
            while !stop.load(Ordering::Relaxed) {
                if let Some(pace) = pace {
                    std::thread::sleep(pace);
                }
                let pack = json!([{"n": "count", "t": base + n as f64 * 0.001, "v": n}]);
                let id = (n % 65_535 + 1) as u16;
                let mut puback = [0u8; 4];
                let answered = stream
                    .write_all(&testkit::mqtt::publish_qos1(
                        &topic,
                        id,
                        pack.to_string().as_bytes(),
                    ))
                    .and_then(|()| stream.read_exact(&mut puback));
                n += 1;
                if answered.is_err() {
                    break;
                }
                assert_eq!(
                    puback,
                    [0x40, 2, (id >> 8) as u8, id as u8],
                    "a PUBACK for {}",
                    n - 1
                );
                acknowledged.push(n - 1);
            }
        }
        acknowledged
    })
}

/// An application posting numbered readings over REST, one at a time,
/// until `stop` or until the gateway stops answering. A number is
/// acknowledged by a 200.
fn http_load(
    gateway: &Gateway,
    id: &str,
    base: f64,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Acknowledged> {
    let url = gateway.url(&format!("/api/v1/things/{id}/readings"));
    let auth = format!("Bearer {}", gateway.token());
    std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        for n in 0u64.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let pack = json!([{"t": base + n as f64 * 0.001, "v": n}]).to_string();
            let answer = http(
                "POST",
                &url,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/senml+json"),
                ],
                Some(pack.as_bytes()),
            );
            if answer.status != 200 {
                break;
            }
            acknowledged.push(n);
        }
        acknowledged
    })
}

/// The sequence numbers `id`'s history holds between `from` and `to`
/// (Unix seconds), each with how often.
fn held_between(gateway: &Gateway, id: &str, from: f64, to: f64) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for value in gateway.history_values(id, from, to) {
        *counts.entry(value as u64).or_insert(0) += 1;
    }
    counts
}

/// The sequence numbers `id`'s whole history holds, each with how often.
fn held(gateway: &Gateway, id: &str) -> BTreeMap<u64, usize> {
    held_between(gateway, id, 0.0, testkit::now_secs() + 60.0)
}

/// Every acknowledged number is held exactly once, and nothing is held
/// twice; returns how many were acknowledged.
fn exactly_once(what: &str, acknowledged: &[u64], held: &BTreeMap<u64, usize>) -> usize {
    let doubled: Vec<_> = held.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        doubled.is_empty(),
        "{what}: {} held more than once, the first: {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(30)]
    );
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|n| !held.contains_key(n))
        .collect();
    assert!(
        lost.is_empty(),
        "{what}: {} of {} acknowledged but lost, the first: {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(30)]
    );
    acknowledged.len()
}

fn mqtt_gateway(data_dir: &Path, port: u16) -> Gateway {
    Gateway::start_in(
        data_dir,
        &["--mqtt", &format!("127.0.0.1:{port}")],
        &[("FOGBANK_GATEWAY_ID", "gw-f"), ("FOGBANK_MQTT", "")],
    )
}

/// A gateway `gw-f` with MQTT on `mqtt` and CoAP on `coap`.
fn device_gateway(data_dir: &Path, mqtt: u16, coap: u16) -> Gateway {
    let coap = format!("127.0.0.1:{coap}");
    Gateway::start_in(
        data_dir,
        &["--mqtt", &format!("127.0.0.1:{mqtt}")],
        &[
            ("FOGBANK_GATEWAY_ID", "gw-f"),
            ("FOGBANK_MQTT", ""),
            ("FOGBANK_COAP", &coap),
        ],
    )
}

/// `kill -9` of a gateway while a device publishes over MQTT, another
/// sends CoAP notifications and an application posts over REST, then a
/// restart on the same data directory: every acknowledged reading is in
/// the history exactly once, and every kind of client is served again.
#[test]
fn kill_9_under_mqtt_coap_and_http_load_loses_and_doubles_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let (port, coap_port) = (free_port(), testkit::free_udp_port());
    let coap_address: std::net::SocketAddr = ([127, 0, 0, 1], coap_port).into();
    let mut gateway = device_gateway(&data_dir, port, coap_port);
    let (mqtt_id, http_id) = ("gw-f.mqtt.meter.count", "gw-f.http.meter.count");
    // A CoAP device of its own each round, numbered from round × 10⁶.
    let coap_id = |round: u32| format!("gw-f.coap.meter-{round}.count");

    // Three in the suite; `scripts/soak` asks for more.
    let rounds: u32 = testkit::bench::setting("FOGBANK_FAULT_ROUNDS", 3, 3);
    // Each round's numbers get 100 s of their own, in the past.
    let base = (testkit::now_secs() - f64::from(rounds + 2) * 100.0).floor();
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let round_base = base + f64::from(round) * 100.0;
        let mqtt = mqtt_load(port, "meter", round_base, stop.clone(), None);
        let rest = http_load(&gateway, http_id, round_base, stop.clone());
        let coap = testkit::coap::observed_counter(
            coap_address,
            &format!("meter-{round}"),
            u64::from(round) * 1_000_000,
            stop.clone(),
        );
        // Let all three get going, then kill the gateway in the middle of it.
        std::thread::sleep(Duration::from_millis(2000));
        gateway.kill9();
        stop.store(true, Ordering::Relaxed);
        let (mqtt, rest, coap) = (
            mqtt.join().unwrap(),
            rest.join().unwrap(),
            coap.join().unwrap(),
        );
        assert!(
            mqtt.len() > 10 && rest.len() > 10 && coap.len() > 10,
            "the load ran: {} {} {}",
            mqtt.len(),
            rest.len(),
            coap.len()
        );

        gateway = device_gateway(&data_dir, port, coap_port);
        // Each round's numbers sit in a time window of their own.
        let from = |id: &str| held_between(&gateway, id, round_base, round_base + 99.0);
        let m = exactly_once("MQTT", &mqtt, &from(mqtt_id));
        let h = exactly_once("REST", &rest, &from(http_id));
        let c = exactly_once("CoAP", &coap, &held(&gateway, &coap_id(round)));
        eprintln!(
            "round {round}: {m} MQTT, {c} CoAP and {h} REST readings acknowledged before kill -9, all held once"
        );
    }
    // And it carries on: every client is served after the last restart.
    let stop = Arc::new(AtomicBool::new(false));
    let later = base + f64::from(rounds) * 100.0;
    let mqtt = mqtt_load(port, "meter", later, stop.clone(), None);
    let rest = http_load(&gateway, http_id, later, stop.clone());
    let coap = testkit::coap::observed_counter(coap_address, "meter-after", 0, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    assert!(!mqtt.join().unwrap().is_empty() && !rest.join().unwrap().is_empty());
    assert!(!coap.join().unwrap().is_empty());
    assert!(held(&gateway, mqtt_id).len() > 30);
}

/// The external broker restarted under load, again and again: a device
/// publishes numbered readings at QoS 1 to Mosquitto (reconnecting when it
/// goes), the gateway is Mosquitto's client. Everything Mosquitto
/// acknowledged to the device reaches the history exactly once: the
/// gateway's session outlives the broker's restarts (Mosquitto saves it,
/// with what it still had to deliver, on SIGTERM) and its adapter
/// reconnects by itself.
#[test]
fn an_external_mosquitto_restarted_under_load_loses_and_doubles_nothing() {
    let mut broker = Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let gateway = testkit::external_gateway(&broker, &tmp.path().join("data"), "gw-x", "");
    let id = "gw-x.mqtt.meter.count";
    let restarts: u32 = testkit::bench::setting("FOGBANK_FAULT_ROUNDS", 3, 3);
    let base = (testkit::now_secs() - 3600.0).floor();

    let stop = Arc::new(AtomicBool::new(false));
    // A device at a steady 1,000 messages/s. Flat out, it would outrun
    // what Mosquitto delivers from a long queue (each restart leaves one)
    // and the test would measure Mosquitto's queue, not the gateway.
    let pace = Some(Duration::from_millis(1));
    let load = mqtt_load(broker.port, "meter", base, stop.clone(), pace);
    // The newest number the gateway holds (the device counts up).
    let newest = || {
        let answer = gateway.get(&format!("/api/v1/things/{id}/reading"));
        (answer.status == 200).then(|| answer.json()[0]["v"].as_f64().unwrap_or(-1.0))
    };
    let mut seen_before = -1.0;
    for restart in 0..restarts {
        std::thread::sleep(Duration::from_millis(1500));
        broker.restart();
        // The gateway is back on the broker and newer readings arrive.
        let took = within(
            Duration::from_secs(20),
            "the gateway takes readings after the restart",
            || newest().is_some_and(|v| v > seen_before),
        );
        seen_before = newest().unwrap_or(seen_before);
        eprintln!("restart {restart}: readings flow again after {took:?}");
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let acknowledged = load.join().unwrap();
    assert!(
        acknowledged.len() > 100,
        "the load ran: {}",
        acknowledged.len()
    );

    // Everything Mosquitto acknowledged reaches the gateway, in time.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let counts = held(&gateway, id);
        if acknowledged.iter().all(|n| counts.contains_key(n)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500)); // anything doubled would show by now
    let n = exactly_once("through Mosquitto", &acknowledged, &held(&gateway, id));
    eprintln!("{n} readings acknowledged by Mosquitto across {restarts} restarts, all held once");
}

/// Debian's libfaketime: the wall clock of one process moved by an offset
/// read from a file, the monotonic clock left alone, as a step of the
/// system clock (NTP correcting it) looks to a program.
struct SteppedClock {
    file: std::path::PathBuf,
}

impl SteppedClock {
    const LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

    fn new(dir: &Path) -> SteppedClock {
        assert!(
            Path::new(Self::LIBRARY).exists(),
            "libfaketime is installed (scripts/test installs faketime)"
        );
        let clock = SteppedClock {
            file: dir.join("clock-offset"),
        };
        clock.step_to("+0");
        clock
    }

    /// The environment that puts a process on this clock.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", Self::LIBRARY.to_owned()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_CACHE_DURATION", "1".to_owned()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ]
    }

    /// Moves the clock to `offset` from the real time ("-5", "+400", in
    /// seconds); the process sees it within a second.
    fn step_to(&self, offset: &str) {
        std::fs::write(&self.file, format!("{offset}\n")).unwrap();
    }
}

/// The system clock stepped back and forth under a gateway taking readings
/// that carry no time of their own. The history keeps their arrival order,
/// exactly once each; across the step back their times slew rather than
/// bunching up in one microsecond; and retention removes what is older than
/// its age by the gateway's clock, before and after the steps.
#[test]
fn a_stepped_clock_keeps_arrival_order_and_retention_follows_the_clock() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = SteppedClock::new(tmp.path());
    let config = tmp.path().join("store.toml");
    std::fs::write(
        &config,
        "[store]\nmax_age_secs = 600\nretention_interval_secs = 1\n",
    )
    .unwrap();
    let env = clock.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("FOGBANK_GATEWAY_ID", "gw-t"));
    let gateway = Gateway::start_in(
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &env,
    );
    let (id, aged) = ("gw-t.http.meter.count", "gw-t.http.meter.aged");
    let aged_path = format!("/api/v1/things/{aged}/readings");
    let real = testkit::now_secs();
    // One reading past the age, one well inside it.
    for (t, v) in [(real - 900.0, 900), (real - 300.0, 300)] {
        let answer = gateway.post_senml(&aged_path, &json!([{"t": t, "v": v}]));
        assert_eq!(answer.status, 200);
    }
    let aged_values = || held(&gateway, aged).into_keys().collect::<Vec<_>>();
    within(
        Duration::from_secs(10),
        "retention removes the old one",
        || aged_values() == [300],
    );

    // Numbered readings without a time, through the steps.
    let mut acknowledged = Vec::new();
    let mut n = 0u64;
    let mut post_for = |secs: f64| {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until {
            let answer =
                gateway.post_senml(&format!("/api/v1/things/{id}/readings"), &json!([{"v": n}]));
            assert_eq!(
                answer.status,
                200,
                "{}",
                String::from_utf8_lossy(&answer.body)
            );
            acknowledged.push(n);
            n += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    post_for(1.0);
    clock.step_to("-5");
    post_for(4.0);
    clock.step_to("+0");
    post_for(2.0);
    // Stepped back and forth, retention still keeps what is young.
    assert_eq!(aged_values(), [300], "the young reading is kept");
    // A step forward past its age: by the gateway's clock it is old now.
    clock.step_to("+400");
    post_for(1.0);
    within(
        Duration::from_secs(10),
        "retention follows the clock",
        || aged_values().is_empty(),
    );

    // Exactly once each, and in time order the history is arrival order.
    let times: Vec<(f64, u64)> = gateway
        .get(&format!("/api/v1/things/{id}/readings?from=0&limit=100000"))
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["t"].as_f64().unwrap(), r["v"].as_f64().unwrap() as u64))
        .collect();
    let values: Vec<u64> = times.iter().map(|(_, v)| *v).collect();
    assert_eq!(values, acknowledged, "each reading once, in arrival order");
    // Spaced as they arrived: across the step back the times slew at half
    // pace, they do not all sit a microsecond apart.
    let bunched = times.windows(2).filter(|w| w[1].0 - w[0].0 < 5e-6).count();
    assert!(
        bunched * 20 < times.len(),
        "{bunched} of {} readings a microsecond after the one before",
        times.len()
    );
    let logged = gateway.logged_errors();
    assert!(logged.is_empty(), "{logged:#?}");
}

/// A partition: three gateways on hosts of their own (network namespaces
/// on one bridge); gw-a is cut off from gw-b and gw-c for 30 s
/// (`FOGBANK_PARTITION_SECS`) while applications post numbered readings
/// to gw-a and to gw-b and each side adds a thing service. Healed, the
/// catalogs are equal again and every reading acknowledged on either side
/// is readable, once, from every gateway.
#[test]
fn a_partition_heals_with_every_reading_readable_everywhere() {
    let secs: u64 = testkit::bench::setting("FOGBANK_PARTITION_SECS", 30, 30);
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new(3);
    let key = testkit::cluster_key();
    let mut members: Vec<Member> = Vec::new();
    for (i, id) in ["gw-a", "gw-b", "gw-c"].into_iter().enumerate() {
        let peers: Vec<String> = members.first().map(Member::address).into_iter().collect();
        members.push(Member::start_on(
            Some(&lan.hosts[i]),
            dir.path(),
            id,
            &key,
            &peers,
            &[],
            &[],
        ));
    }
    testkit::acquainted(&members, Duration::from_secs(20));

    let ids = ["gw-a.http.partition.count", "gw-b.http.partition.count"];
    let base = (testkit::now_secs() - 3600.0).floor();
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = ids
        .iter()
        .zip(&members)
        .map(|(id, member)| http_load(&member.gateway, id, base, stop.clone()))
        .collect();
    testkit::converged(&members, 2, Duration::from_secs(20));

    let started = Instant::now();
    lan.cut(0, 1);
    lan.cut(0, 2);
    // Each side sees the other down, and changes the catalog meanwhile.
    for (member, other) in [(&members[0], "gw-b"), (&members[1], "gw-a")] {
        within(Duration::from_secs(secs), "the other side is down", || {
            member
                .peers()
                .contains(&(other.to_owned(), "down".to_owned()))
        });
    }
    members[0].create_thing("during-a", 21.0);
    members[1].create_thing("during-b", 61.0);
    std::thread::sleep(Duration::from_secs(secs).saturating_sub(started.elapsed()));
    lan.heal(0, 1);
    lan.heal(0, 2);

    let took = testkit::converged(&members, 4, Duration::from_secs(60));
    eprintln!("catalogs identical {took:?} after a {secs} s partition healed");
    stop.store(true, Ordering::Relaxed);
    let acknowledged: Vec<Acknowledged> = loads.into_iter().map(|l| l.join().unwrap()).collect();
    for (id, acknowledged) in ids.iter().zip(&acknowledged) {
        assert!(acknowledged.len() > 100, "the load on {id} ran");
        for member in &members {
            let what = format!("{id} read at {}", member.id);
            let n = exactly_once(&what, acknowledged, &held(&member.gateway, id));
            eprintln!("{what}: all {n} acknowledged, once");
        }
    }
    for member in &members {
        let errors = member.logged_errors();
        assert!(errors.is_empty(), "{}: {errors:#?}", member.id);
    }
}

/// Streams that stop reading and a peer that stops answering cost a
/// gateway bounded memory: ten SSE clients at gw-a read one event and
/// stall, gw-b follows gw-a's thing and is then frozen (SIGSTOP), and
/// 300,000 readings are posted to gw-a. Its resident memory grows by less
/// than one reading's copy per stalled queue would take; what was not
/// delivered is counted; every reading is stored; and gw-b, thawed, is
/// served again.
#[test]
fn stalled_streams_and_a_stalled_peer_cost_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let members = testkit::start_cloud(
        dir.path(),
        &testkit::cluster_key(),
        &["gw-a", "gw-b"],
        |_| (Vec::new(), Vec::new()),
    );
    testkit::acquainted(&members, Duration::from_secs(20));
    let (a, b) = (&members[0], &members[1]);
    let id = "gw-a.http.flood.count";
    let path = format!("/api/v1/things/{id}/readings");
    assert_eq!(a.gateway.post_senml(&path, &json!([{"v": -1}])).status, 200);
    testkit::converged(&members, 1, Duration::from_secs(10));

    // Ten streams that read their first event and then nothing.
    let stalled: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", a.gateway.port)).unwrap();
            write!(
                stream,
                "GET /api/v1/things/{id}/stream HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            .unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut first = [0u8; 256];
            assert!(stream.read(&mut first).unwrap() > 0);
            stream
        })
        .collect();
    // gw-b follows the thing for a reader of its own, then stops answering.
    let follower = testkit::follow_events(
        &b.gateway.url(&format!("/api/v1/things/{id}/stream")),
        "reading",
        Duration::from_secs(60),
    );
    within(Duration::from_secs(10), "gw-b follows", || {
        a.gateway.post_senml(&path, &json!([{"v": -2}])).status == 200
            && follower.recv_timeout(Duration::from_millis(200)).is_ok()
    });
    b.freeze(true);

    let pid = a.gateway.child.id();
    let resident_mib = || testkit::bench::status_kib(pid, "VmRSS:") as f64 / 1024.0;
    let before = resident_mib();
    let base = (testkit::now_secs() - 3600.0).floor();
    const PACKS: u64 = 300;
    const PER_PACK: u64 = 1000;
    for pack in 0..PACKS {
        let records: Vec<_> = (0..PER_PACK)
            .map(|i| {
                let n = pack * PER_PACK + i;
                json!({"t": base + n as f64 * 1e-3, "v": n})
            })
            .collect();
        let answer = a.gateway.post_senml(&path, &json!(records));
        assert_eq!(answer.status, 200, "ingest goes on");
    }
    let grown = resident_mib() - before;
    let missed = a.metric("fogbank_bus_missed_total") + a.metric("fogbank_bus_disconnected_total");
    let dropped = a.metric("fogbank_cloud_readings_dropped_total");
    eprintln!(
        "{} readings with 10 stalled streams and a frozen peer: RSS +{grown:.1} MiB, {missed} missed or cut off on the bus, {dropped} dropped for gw-b",
        PACKS * PER_PACK
    );
    // Queued copies of every reading for 11 stalled readers would be
    // hundreds of MiB; the write buffers alone may take 32.
    assert!(grown < 64.0, "RSS grew {grown:.1} MiB");
    assert!(missed > 0.0, "the stalled streams' losses are counted");
    assert!(dropped > 0.0, "what gw-b did not take is counted");
    assert_eq!(
        held_between(&a.gateway, id, base, base + 1000.0).len() as u64,
        PACKS * PER_PACK,
        "every reading stored"
    );

    // Thawed, gw-b is served again.
    b.freeze(false);
    within(
        Duration::from_secs(20),
        "gw-b reads gw-a's thing again",
        || {
            b.gateway
                .get(&format!("/api/v1/things/{id}/reading"))
                .status
                == 200
        },
    );
    drop(stalled);
}

/// A tmpfs of `mib` MiB at `dir`, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, mib: u32) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let size = format!("size={mib}m");
        assert!(
            as_root(&[
                "mount",
                "-t",
                "tmpfs",
                "-o",
                &size,
                "tmpfs",
                dir.to_str().unwrap()
            ]),
            "mounting a tmpfs needs root or sudo"
        );
        SmallDisk(dir.to_owned())
    }

    fn grow(&self, mib: u32) {
        let options = format!("remount,size={mib}m");
        assert!(as_root(&[
            "mount",
            "-o",
            &options,
            self.0.to_str().unwrap()
        ]));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        as_root(&["umount", "-l", self.0.to_str().unwrap()]);
    }
}

/// The data directory's disk fills up under load: REST writes are refused
/// with a 503 problem that says so, an MQTT PUBACK is withheld, reads go
/// on; nothing acknowledged is lost or corrupted; and when space returns
/// the gateway takes writes again by itself.
#[test]
fn a_full_disk_refuses_writes_clearly_and_recovers_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&tmp.path().join("disk"), 24);
    let data_dir = tmp.path().join("disk/data");
    let port = free_port();
    let gateway = mqtt_gateway(&data_dir, port);
    let id = "gw-f.http.logger.count";
    let base = (testkit::now_secs() - 3600.0).floor();

    // Packs of 2,000 readings until the disk is full.
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    let started = Instant::now();
    for pack_number in 0u64.. {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the disk never filled"
        );
        let pack: Vec<_> = (0..2000)
            .map(|i| {
                let n = pack_number * 2000 + i;
                json!({"t": base + n as f64 * 0.0001, "v": n, "u": "count"})
            })
            .collect();
        let answer = gateway.post_senml(&format!("/api/v1/things/{id}/readings"), &json!(pack));
        if answer.status == 200 {
            acknowledged.extend(pack_number * 2000..(pack_number + 1) * 2000);
        } else {
            refusal = Some(answer);
            break;
        }
    }
    let refusal = refusal.unwrap();
    let problem = refusal.assert_problem(503);
    eprintln!("full after {} readings: {problem}", acknowledged.len());
    let detail = problem["detail"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        detail.contains("space") || detail.contains("full"),
        "the problem says the disk is full: {problem}"
    );

    // An MQTT device is not told its reading was stored.
    let mut stream = testkit::mqtt_session(port, 4, "full-disk");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream
        .write_all(&testkit::mqtt::publish_qos1(
            "things/logger",
            7,
            br#"[{"n":"mqtt","v":1}]"#,
        ))
        .unwrap();
    let mut puback = [0u8; 4];
    assert!(
        stream.read_exact(&mut puback).is_err(),
        "no PUBACK while the disk is full: {puback:?}"
    );

    // Reads go on, and everything acknowledged is there.
    assert_eq!(gateway.get("/health").status, 200);
    let counts = held(&gateway, id);
    exactly_once("full disk", &acknowledged, &counts);

    // Space returns: writes are taken again, by the gateway alone.
    disk.grow(256);
    let next = acknowledged.len() as u64 + 10_000;
    within(Duration::from_secs(30), "writes are taken again", || {
        gateway
            .post_senml(
                &format!("/api/v1/things/{id}/readings"),
                &json!([{"t": base + next as f64 * 0.0001, "v": next}]),
            )
            .status
            == 200
    });
    let mut counts = held(&gateway, id);
    assert_eq!(counts.remove(&next), Some(1));
    exactly_once("after recovery", &acknowledged, &counts);
    // And a restart finds the store whole.
    drop(gateway);
    let gateway = mqtt_gateway(&data_dir, port);
    let mut counts = held(&gateway, id);
    assert_eq!(counts.remove(&next), Some(1));
    exactly_once("after a restart", &acknowledged, &counts);
}
