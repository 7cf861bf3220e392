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
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fogbank_testkit::{self as testkit, Gateway, free_port, gateway::http, within};
use serde_json::json;

/// What a loader was told was stored: each acknowledged sequence number.
type Acknowledged = Vec<u64>;

/// A device publishing numbered SenML packs at QoS 1 on `things/{device}`,
/// one at a time, until `stop` or until its connection breaks. A number is
/// acknowledged when its PUBACK (0x40, 2, packet id) came.
fn mqtt_load(
    port: u16,
    device: &str,
    base: f64,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Acknowledged> {
    let device = device.to_owned();
    std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return acknowledged;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut connack = [0u8; 4];
        if stream
            .write_all(&testkit::mqtt_connect(4, &format!("fault-{device}")))
            .and_then(|()| stream.read_exact(&mut connack))
            .is_err()
        {
            return acknowledged;
        }
        let topic = format!("things/{device}");
        for n in 0u64.. {
            if stop.load(Ordering::Relaxed) {
                break;
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
            if answered.is_err() {
                break;
            }
            assert_eq!(
                puback,
                [0x40, 2, (id >> 8) as u8, id as u8],
                "a PUBACK for {n}"
            );
            acknowledged.push(n);
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
        "{what}: held more than once: {doubled:?}"
    );
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|n| !held.contains_key(n))
        .collect();
    assert!(lost.is_empty(), "{what}: acknowledged but lost: {lost:?}");
    acknowledged.len()
}

fn mqtt_gateway(data_dir: &Path, port: u16) -> Gateway {
    Gateway::start_in(
        data_dir,
        &["--mqtt", &format!("127.0.0.1:{port}")],
        &[("FOGBANK_GATEWAY_ID", "gw-f"), ("FOGBANK_MQTT", "")],
    )
}

/// `kill -9` of a gateway while a device publishes over MQTT and an
/// application posts over REST, then a restart on the same data
/// directory: every acknowledged reading is in the history exactly once,
/// and both kinds of client are served again.
#[test]
fn kill_9_under_mqtt_and_http_load_loses_and_doubles_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let mut gateway = mqtt_gateway(&data_dir, port);
    let (mqtt_id, http_id) = ("gw-f.mqtt.meter.count", "gw-f.http.meter.count");

    // Three in the suite; `scripts/soak` asks for more.
    let rounds: u32 = testkit::bench::setting("FOGBANK_FAULT_ROUNDS", 3, 3);
    // Each round's numbers get 100 s of their own, in the past.
    let base = (testkit::now_secs() - f64::from(rounds + 2) * 100.0).floor();
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let round_base = base + f64::from(round) * 100.0;
        let mqtt = mqtt_load(port, "meter", round_base, stop.clone());
        let rest = http_load(&gateway, http_id, round_base, stop.clone());
        // Let both get going, then kill the gateway in the middle of it.
        std::thread::sleep(Duration::from_millis(1500));
        gateway.kill9();
        stop.store(true, Ordering::Relaxed);
        let (mqtt, rest) = (mqtt.join().unwrap(), rest.join().unwrap());
        assert!(
            mqtt.len() > 10 && rest.len() > 10,
            "the load ran: {} {}",
            mqtt.len(),
            rest.len()
        );

        gateway = mqtt_gateway(&data_dir, port);
        // Each round's numbers sit in a time window of their own.
        let from = |id: &str| held_between(&gateway, id, round_base, round_base + 99.0);
        let m = exactly_once("MQTT", &mqtt, &from(mqtt_id));
        let h = exactly_once("REST", &rest, &from(http_id));
        eprintln!(
            "round {round}: {m} MQTT and {h} REST readings acknowledged before kill -9, all held once"
        );
    }
    // And it carries on: both clients are served after the last restart.
    let stop = Arc::new(AtomicBool::new(false));
    let later = base + f64::from(rounds) * 100.0;
    let mqtt = mqtt_load(port, "meter", later, stop.clone());
    let rest = http_load(&gateway, http_id, later, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    assert!(!mqtt.join().unwrap().is_empty() && !rest.join().unwrap().is_empty());
    assert!(held(&gateway, mqtt_id).len() > 30);
}

/// Runs a command as root (the test suite runs as root or with sudo).
fn as_root(args: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let mut command = if root {
        Command::new(args[0])
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", args[0]]);
        sudo
    };
    command.args(&args[1..]).status().is_ok_and(|s| s.success())
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
