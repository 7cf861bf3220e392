//! Local-cloud benchmark against real peers, in one run:
//!
//! 1. Cross-gateway delivery: a device publishes at gateway A, a subscriber
//!    at gateway B receives. Latency p50/p99 at a paced 1000 messages/s,
//!    then throughput with the publisher sending back to back, for
//!    - fogbank: an MQTT device (rumqttc, QoS 1) at A's embedded broker;
//!      an application reading B's SSE stream of that thing service;
//!    - two Mosquitto brokers joined by a bridge (`topic bench/# in 1`):
//!      the same publisher at A, a QoS 1 subscriber at B; the bridge in
//!      the clear, and over TLS with a pre-shared key — what the cluster
//!      key gives the local cloud: only a holder of the key gets in, and
//!      what passes between the gateways is encrypted;
//!    - Zenoh (`eclipse-zenoh`, `node/benches/zenoh_peer.py`) in the
//!      topology of the gateways: two routers joined, a Python publisher
//!      a client of one, a Python subscriber a client of the other; with
//!      scouting off and blocking congestion control, carrying the same
//!      payloads. For reference, the same publisher and subscriber as two
//!      peers with nothing between them;
//!    - at equal guarantees: fogbank has each reading in A's WAL before
//!      it leaves A, the peers above store nothing. So the TLS-PSK bridge
//!      and the Zenoh routers again, with a subscriber at B that appends
//!      each message to a file (one `write`, no fsync, as a WAL append
//!      without sync) before it counts it. And since a Zenoh put is not
//!      acknowledged to its publisher, fogbank once more with the device
//!      at QoS 0 (A still stores each reading before it leaves), against
//!      the Zenoh routers with the storing subscriber.
//!
//!    Payloads are the sequence number as text. Latency is receive time
//!    minus send time of each message on one host's monotonic clock. The
//!    same device and an SSE subscriber at A alone show what the hop
//!    between gateways adds.
//! 2. Catalog convergence: N gateways (3, 5, 10) of which one owns K thing
//!    services (1 000, 10 000, from the campus simulator): how long after
//!    that gateway starts every other one lists all K, and how long one new
//!    thing service then takes to appear on every gateway.
//!
//!   cargo bench -p fogbank --bench cloud        (or ./scripts/bench)
//!
//! Each system runs once per round, round after round, and the median of
//! each figure is reported (ratios are of medians), so that a noisy moment
//! on a small machine does not decide a ratio.
//!
//! Settings: BENCH_CLOUD_ROUNDS (default 3), BENCH_CLOUD_LATENCY
//! (messages, default 2000), BENCH_CLOUD_BURST (default 20000),
//! BENCH_CLOUD_SIZES (default
//! "3x1000,5x1000,10x1000,3x10000,5x10000,10x10000"), FOGBANK_PYTHON (a
//! Python with eclipse-zenoh; scripts/bench sets it up).

use fogbank_testkit as testkit;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use testkit::bench::{Better::*, Chart, Figure, Process, record_series, setting, status_kib};
use testkit::{free_port, wait, wait_port};

/// How often the benchmark looks at the gateways while it waits for them.
const POLL: Duration = Duration::from_millis(10);

const PACE: Duration = Duration::from_millis(1);
/// A receiver gives up this long after the last message it got.
const IDLE: Duration = Duration::from_secs(5);

// ------------------------------------------------------------ measuring

/// What one system did with one run of messages.
struct Outcome {
    p50_ms: f64,
    p99_ms: f64,
    delivered: usize,
    sent: usize,
    per_second: f64,
    /// (quantile, ms) at p50, p75, p90, p95, p99, p99.9 and the maximum.
    quantiles: Vec<(f64, f64)>,
}

const QUANTILES: [f64; 7] = [0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0];

impl Outcome {
    /// From send and receive times in nanoseconds, by sequence number.
    fn of(sent: &[u64], received: &[Option<u64>]) -> Outcome {
        let mut latencies: Vec<u64> = sent
            .iter()
            .zip(received)
            .filter_map(|(s, r)| r.map(|r| r.saturating_sub(*s)))
            .collect();
        latencies.sort_unstable();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(f64::NAN, |ns| *ns as f64 / 1e6)
        };
        let first = sent.iter().min().copied().unwrap_or(0);
        let last = received.iter().flatten().max().copied().unwrap_or(first);
        Outcome {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            delivered: latencies.len(),
            sent: sent.len(),
            per_second: latencies.len() as f64 / ((last - first) as f64 / 1e9),
            quantiles: QUANTILES.iter().map(|&q| (q, at(q))).collect(),
        }
    }

    /// Each figure's median over rounds; what was sent and delivered,
    /// summed.
    fn median(rounds: &[Outcome]) -> Outcome {
        let of = |figure: fn(&Outcome) -> f64| {
            testkit::bench::median(rounds.iter().map(figure).collect())
        };
        Outcome {
            p50_ms: of(|o| o.p50_ms),
            p99_ms: of(|o| o.p99_ms),
            per_second: of(|o| o.per_second),
            delivered: rounds.iter().map(|o| o.delivered).sum(),
            sent: rounds.iter().map(|o| o.sent).sum(),
            quantiles: QUANTILES
                .iter()
                .enumerate()
                .map(|(i, &q)| (q, of_quantile(rounds, i)))
                .collect(),
        }
    }
}

fn of_quantile(rounds: &[Outcome], index: usize) -> f64 {
    testkit::bench::median(
        rounds
            .iter()
            .map(|o| o.quantiles.get(index).map_or(f64::NAN, |q| q.1))
            .collect(),
    )
}

/// Nanoseconds on the host's monotonic clock (as Python's monotonic_ns).
fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// Publishes `count` sequence numbers at QoS 1, one every `interval` (or
/// back to back); returns each one's send time.
fn publish(
    port: u16,
    topic: &str,
    count: usize,
    interval: Option<Duration>,
    epoch: Instant,
) -> Vec<u64> {
    publish_at(port, topic, count, interval, epoch, QoS::AtLeastOnce)
}

/// [`publish`] at `qos`. At QoS 0 nothing is acknowledged: a QoS 1 message
/// on `{topic}-end` after the last one, acknowledged in order, tells that
/// the broker has taken them all.
fn publish_at(
    port: u16,
    topic: &str,
    count: usize,
    interval: Option<Duration>,
    epoch: Instant,
    qos: QoS,
) -> Vec<u64> {
    testkit::bench::block_on(async {
        let mut options = MqttOptions::new(format!("bench-pub-{port}"), "127.0.0.1", port);
        options.set_inflight(200);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        if qos == QoS::AtMostOnce {
            // With nothing coming back to carry the TCP acknowledgements,
            // Nagle's algorithm holds a message until the receiver's
            // delayed ACK (40 ms): a device that wants its messages to go
            // at once turns it off, as Zenoh's links do.
            let mut network = NetworkOptions::new();
            network.set_tcp_nodelay(true);
            eventloop.set_network_options(network);
        }
        let topic = topic.to_owned();
        let feeder = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut sent = Vec::with_capacity(count);
            for seq in 0..count {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(start + interval * seq as u32).await;
                }
                sent.push(now_ns(epoch));
                client
                    .publish(topic.clone(), qos, false, seq.to_string())
                    .await
                    .unwrap();
            }
            if qos == QoS::AtMostOnce {
                let end = format!("{topic}-end");
                client
                    .publish(end, QoS::AtLeastOnce, false, "0")
                    .await
                    .unwrap();
            }
            sent
        });
        let acknowledged = match qos {
            QoS::AtMostOnce => 1,
            _ => count,
        };
        let mut acked = 0;
        while acked < acknowledged {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                acked += 1;
            }
        }
        feeder.await.unwrap()
    })
}

/// An MQTT subscriber on `port`; `ready` fires once it is subscribed.
/// A QoS 1 subscriber at `port` recording each message by its sequence
/// number; with `persist`, it first appends each message to that file (one
/// `write` each, no fsync: what fogbank's WAL gives a reading at A before
/// it leaves) and counts it only then.
fn mqtt_receiver(
    port: u16,
    count: usize,
    epoch: Instant,
    ready: mpsc::Sender<()>,
    persist: Option<std::path::PathBuf>,
) -> std::thread::JoinHandle<Vec<Option<u64>>> {
    std::thread::spawn(move || {
        let mut store = persist.map(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap()
        });
        testkit::bench::block_on(async {
            let options = MqttOptions::new(format!("bench-sub-{port}"), "127.0.0.1", port);
            let (client, mut eventloop) = AsyncClient::new(options, 1000);
            client.subscribe("bench/#", QoS::AtLeastOnce).await.unwrap();
            let mut received = vec![None; count];
            let mut got = 0;
            while got < count {
                let Ok(event) = tokio::time::timeout(IDLE, eventloop.poll()).await else {
                    break;
                };
                match event.unwrap() {
                    Event::Incoming(Packet::SubAck(_)) => {
                        let _ = ready.send(());
                    }
                    Event::Incoming(Packet::Publish(p)) if p.topic == "bench/level" => {
                        if let Some(store) = store.as_mut() {
                            std::io::Write::write_all(store, &[&p.payload[..], b"\n"].concat())
                                .unwrap();
                        }
                        let at = now_ns(epoch);
                        if let Some(slot) = std::str::from_utf8(&p.payload)
                            .ok()
                            .and_then(|s| s.parse::<usize>().ok())
                            .and_then(|seq| received.get_mut(seq))
                            && slot.is_none()
                        {
                            *slot = Some(at);
                            got += 1;
                        }
                    }
                    _ => {}
                }
            }
            received
        })
    })
}

/// Reads a gateway's SSE stream of one thing, recording each reading by
/// its value (the sequence number). The stream's first event is the state
/// before the run and is skipped.
fn sse_receiver(
    url: String,
    count: usize,
    epoch: Instant,
    ready: mpsc::Sender<()>,
) -> std::thread::JoinHandle<Vec<Option<u64>>> {
    std::thread::spawn(move || {
        // A read timeout, not a deadline for the whole stream: a run of
        // more than IDLE's worth of paced messages must not be cut short.
        let response = ureq::AgentBuilder::new()
            .timeout_read(IDLE)
            .build()
            .get(&url)
            .call()
            .expect("the stream opens");
        let _ = ready.send(());
        let mut received = vec![None; count];
        let mut got = 0;
        let mut first = true;
        for line in BufReader::new(response.into_reader()).lines() {
            let Ok(line) = line else { break };
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let at = now_ns(epoch);
            if std::mem::take(&mut first) {
                continue;
            }
            let pack: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            if let Some(slot) = pack[0]["v"]
                .as_f64()
                .and_then(|v| received.get_mut(v as usize))
                && slot.is_none()
            {
                *slot = Some(at);
                got += 1;
                if got == count {
                    break;
                }
            }
        }
        received
    })
}

// ------------------------------------------------------------ the systems

fn fogbank(key: &str, args: &[String], config: &str, dir: &std::path::Path) -> (Process, u16) {
    std::fs::create_dir_all(dir).unwrap();
    let http = free_port();
    let config_path = dir.join("fogbank.toml");
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new(testkit::binary())
        .args(["run", "--no-mdns", "--http", &format!("127.0.0.1:{http}")])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&config_path)
        .args(args)
        .env("FOGBANK_LOG", "warn")
        .env("FOGBANK_CLUSTER_KEY", key)
        .env("FOGBANK_COAP", "off")
        .env("FOGBANK_MQTT", "off")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(http);
    (Process(child), http)
}

fn get(http: u16, path: &str) -> Option<String> {
    let response = ureq::get(&format!("http://127.0.0.1:{http}{path}"))
        .call()
        .ok()?;
    let mut text = String::new();
    response.into_reader().read_to_string(&mut text).ok()?;
    Some(text)
}

fn metric(http: u16, name: &str) -> f64 {
    get(http, "/metrics")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn cluster_key() -> String {
    let out = Command::new(testkit::binary())
        .arg("cluster-key")
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .nth(2)
        .unwrap()
        .to_owned()
}

fn p2p_args(id: &str, port: u16, peer: Option<u16>) -> Vec<String> {
    let mut args = vec![
        "--gateway-id".into(),
        id.into(),
        "--p2p".into(),
        format!("/ip4/127.0.0.1/tcp/{port}"),
    ];
    if let Some(peer) = peer {
        args.extend(["--peer".into(), format!("/ip4/127.0.0.1/tcp/{peer}")]);
    }
    args
}

/// Two gateways; the device at A, the SSE subscriber at B.
/// What fogbank did: across the cloud, and within gateway A alone (the
/// same device, an SSE subscriber at A) to show what the hop costs.
struct FogbankDelivery {
    paced: Outcome,
    burst: Outcome,
    /// The same across the cloud from a device at QoS 0: no acknowledgement
    /// to the device, as a Zenoh publisher's put (A still stores each
    /// reading before it leaves).
    unacknowledged_paced: Outcome,
    unacknowledged_burst: Outcome,
    local_paced: Outcome,
    local_burst: Outcome,
    rss_mib: f64,
    /// Readings the gateways dropped for a subscriber that fell behind,
    /// over all runs (the bounded queues: they never hold up ingest).
    dropped: Dropped,
}

/// Where readings were dropped, from the gateways' own counters.
#[derive(Default)]
struct Dropped {
    a_bus: f64,
    a_to_b: f64,
    b_bus: f64,
}

impl Dropped {
    fn count(a_http: u16, b_http: u16) -> Dropped {
        Dropped {
            a_bus: metric(a_http, "fogbank_bus_missed_total"),
            a_to_b: metric(a_http, "fogbank_cloud_readings_dropped_total"),
            b_bus: metric(b_http, "fogbank_bus_missed_total"),
        }
    }

    fn add(&mut self, other: &Dropped) {
        self.a_bus += other.a_bus;
        self.a_to_b += other.a_to_b;
        self.b_bus += other.b_bus;
    }
}

fn fogbank_delivery(latency: usize, burst: usize, epoch: Instant) -> FogbankDelivery {
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    let (pa, pb, mqtt) = (free_port(), free_port(), free_port());
    let mut a_args = p2p_args("gw-a", pa, None);
    a_args.extend(["--mqtt".into(), format!("127.0.0.1:{mqtt}")]);
    let (a, a_http) = fogbank(&key, &a_args, "", &dir.path().join("a"));
    let (_b, b_http) = fogbank(
        &key,
        &p2p_args("gw-b", pb, Some(pa)),
        "",
        &dir.path().join("b"),
    );
    let thing = "gw-a.mqtt.bench.level";
    wait(
        "the device's thing service on B",
        Duration::from_secs(20),
        POLL,
        || {
            publish(mqtt, "things/bench/level", 1, None, epoch);
            get(b_http, &format!("/api/v1/things/{thing}")).is_some()
        },
    );
    let run = |at: u16, count: usize, interval: Option<Duration>, qos: QoS| {
        let (ready_tx, ready) = mpsc::channel();
        let url = format!("http://127.0.0.1:{at}/api/v1/things/{thing}/stream");
        let receiver = sse_receiver(url, count, epoch, ready_tx);
        ready.recv().unwrap();
        let across = at == b_http;
        wait(
            "A sends the thing's readings to B",
            Duration::from_secs(10),
            POLL,
            || !across || metric(a_http, "fogbank_cloud_followed") == 1.0,
        );
        let sent = publish_at(mqtt, "things/bench/level", count, interval, epoch, qos);
        let received = receiver.join().unwrap();
        // A server notices a closed stream when it next writes to it: give
        // it readings (out of the runs' range) until B has left the topic.
        wait("B left the topic", Duration::from_secs(20), POLL, || {
            publish(mqtt, "things/bench/level", 1, None, epoch);
            metric(a_http, "fogbank_cloud_followed") == 0.0
        });
        Outcome::of(&sent, &received)
    };
    FogbankDelivery {
        local_paced: run(a_http, latency, Some(PACE), QoS::AtLeastOnce),
        local_burst: run(a_http, burst, None, QoS::AtLeastOnce),
        paced: run(b_http, latency, Some(PACE), QoS::AtLeastOnce),
        burst: run(b_http, burst, None, QoS::AtLeastOnce),
        unacknowledged_paced: run(b_http, latency, Some(PACE), QoS::AtMostOnce),
        unacknowledged_burst: run(b_http, burst, None, QoS::AtMostOnce),
        rss_mib: status_kib(a.0.id(), "VmHWM:") as f64 / 1024.0,
        dropped: Dropped::count(a_http, b_http),
    }
}

/// How the Mosquitto bridge between the two brokers runs.
#[derive(Clone, Copy, PartialEq)]
enum Bridge {
    Clear,
    /// TLS with a pre-shared key (TLS-PSK): the cluster key's guarantees.
    TlsPsk,
}

/// Two Mosquitto brokers, B bridged to A; with `persist`, the subscriber
/// at B stores each message before it counts it.
fn mosquitto_delivery(
    latency: usize,
    burst: usize,
    epoch: Instant,
    bridge: Bridge,
    persist: bool,
) -> (Outcome, Outcome) {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let broker = |name: &str, config: String| {
        let path = dir.path().join(format!("{name}.conf"));
        std::fs::write(&path, config).unwrap();
        Process(
            Command::new("mosquitto")
                .arg("-c")
                .arg(&path)
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto is installed (scripts/bench installs it)"),
        )
    };
    let common =
        "allow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 100\nuser root\n";
    // Devices and applications connect in the clear on loopback, as to
    // the gateways; only the link between the brokers changes.
    let (a_extra, link_port, link_secret) = match bridge {
        Bridge::Clear => (String::new(), pa, String::new()),
        Bridge::TlsPsk => {
            let port = free_port();
            let key = cluster_key();
            let psk_file = dir.path().join("psk");
            std::fs::write(&psk_file, format!("gw-b:{key}\n")).unwrap();
            (
                format!(
                    "listener {port} 127.0.0.1\npsk_hint fogbank-bench\npsk_file {}\n",
                    psk_file.display()
                ),
                port,
                format!("bridge_identity gw-b\nbridge_psk {key}\n"),
            )
        }
    };
    let _a = broker("a", format!("{common}listener {pa} 127.0.0.1\n{a_extra}"));
    wait_port(pa);
    wait_port(link_port);
    let _b = broker(
        "b",
        format!(
            "{common}listener {pb} 127.0.0.1\nconnection to-a\naddress 127.0.0.1:{link_port}\n{link_secret}topic bench/# in 1\n"
        ),
    );
    wait_port(pb);
    // The bridge subscribes at A in its own time: wait until it carries.
    let (ready_tx, ready) = mpsc::channel();
    let probe = mqtt_receiver(pb, 1, epoch, ready_tx, None);
    ready.recv().unwrap();
    while !probe.is_finished() {
        publish(pa, "bench/level", 1, None, epoch);
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = |count: usize, interval: Option<Duration>| {
        let (ready_tx, ready) = mpsc::channel();
        let store = persist.then(|| dir.path().join(format!("received-{count}")));
        let receiver = mqtt_receiver(pb, count, epoch, ready_tx, store);
        ready.recv().unwrap();
        let sent = publish(pa, "bench/level", count, interval, epoch);
        Outcome::of(&sent, &receiver.join().unwrap())
    };
    (run(latency, Some(PACE)), run(burst, None))
}

/// How the Zenoh publisher and subscriber meet.
#[derive(Clone, Copy, PartialEq)]
enum ZenohTopology {
    /// The topology of the gateways: two routers joined (gateways A and
    /// B), the publisher a client of A, the subscriber a client of B.
    ThroughRouters,
    /// Publisher and subscriber are the two peers, nothing between them.
    PeerToPeer,
}

/// Zenoh in its own processes (`zenoh_peer.py`); with `persist`, the
/// subscriber stores each sample before it counts it.
fn zenoh_delivery(
    latency: usize,
    burst: usize,
    topology: ZenohTopology,
    persist: bool,
) -> (Outcome, Outcome) {
    let python = std::env::var("FOGBANK_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = testkit::package_file("benches/zenoh_peer.py");
    let script = script.to_str().expect("a UTF-8 checkout path");
    let dir = tempfile::tempdir().unwrap();
    let until_ready = |child: &mut std::process::Child, what: &str| {
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the Zenoh {what} did not start");
    };
    let endpoint = || format!("tcp/127.0.0.1:{}", free_port());
    let run = |count: usize, interval_us: u64| {
        let (sub_out, pub_out) = (dir.path().join("sub"), dir.path().join("pub"));
        let mut routers = Vec::new();
        let (sub_at, pub_at, client) = match topology {
            ZenohTopology::PeerToPeer => {
                let at = endpoint();
                (at.clone(), at, None)
            }
            ZenohTopology::ThroughRouters => {
                let (a, b) = (endpoint(), endpoint());
                for args in [vec![a.clone()], vec![b.clone(), a.clone()]] {
                    let mut router = Command::new(&python)
                        .args([script, "router"])
                        .args(args)
                        .stdout(Stdio::piped())
                        .spawn()
                        .expect("a Python with eclipse-zenoh (scripts/bench installs it)");
                    until_ready(&mut router, "router");
                    routers.push(Process(router));
                }
                (b, a, Some("client"))
            }
        };
        let store = persist.then(|| format!("persist={}", dir.path().join("store").display()));
        let mut sub = Command::new(&python)
            .args([script, "sub", &sub_at, &count.to_string()])
            .arg(&sub_out)
            .args(client)
            .args(store)
            .stdout(Stdio::piped())
            .spawn()
            .expect("a Python with eclipse-zenoh (scripts/bench installs it)");
        until_ready(&mut sub, "subscriber");
        let status = Command::new(&python)
            .args([script, "pub", &pub_at, &count.to_string()])
            .arg(&pub_out)
            .arg(interval_us.to_string())
            .args(client)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(sub.wait().unwrap().success());
        drop(routers);
        let read = |path: &std::path::Path| -> Vec<(usize, u64)> {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .filter_map(|l| {
                    let (seq, ns) = l.split_once(' ')?;
                    Some((seq.parse().ok()?, ns.parse().ok()?))
                })
                .collect()
        };
        let mut sent = vec![0; count];
        for (seq, ns) in read(&pub_out) {
            sent[seq] = ns;
        }
        let mut received = vec![None; count];
        for (seq, ns) in read(&sub_out) {
            received[seq] = Some(ns);
        }
        Outcome::of(&sent, &received)
    };
    (run(latency, PACE.as_micros() as u64), run(burst, 0))
}

// ------------------------------------------------------------ catalog

struct Convergence {
    gateways: usize,
    things: usize,
    join: Duration,
    change: Duration,
    rss_mib: f64,
}

fn convergence(gateways: usize, things: usize) -> Convergence {
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    let first_port = free_port();
    let mut others = Vec::new();
    for i in 1..gateways {
        let port = if i == 1 { first_port } else { free_port() };
        let peer = (i > 1).then_some(first_port);
        let id = format!("gw-{i}");
        others.push(fogbank(
            &key,
            &p2p_args(&id, port, peer),
            "",
            &dir.path().join(&id),
        ));
    }
    // The campus simulator makes 5 thing services per floor, in at most
    // 26 buildings (a to z) of at most 255 floors.
    let (buildings, per_building) = (10, things / 50);
    assert!(
        per_building > 0 && per_building <= 255 && things.is_multiple_of(50),
        "thing counts are multiples of 50 up to 12 750"
    );
    let config = format!(
        "[sim]\nenabled = true\ninterval_ms = 3600000\nbuildings = {buildings}\nfloors = {per_building}\n"
    );
    let started = Instant::now();
    let (owner, owner_http) = fogbank(
        &key,
        &p2p_args("gw-a", free_port(), Some(first_port)),
        &config,
        &dir.path().join("gw-a"),
    );
    let everyone_has = |count: f64| {
        others
            .iter()
            .all(|(_, http)| metric(*http, "fogbank_things{available=\"true\"}") >= count)
    };
    wait(
        "every gateway lists the owner's catalog",
        Duration::from_secs(120),
        POLL,
        || everyone_has(things as f64),
    );
    let join = started.elapsed();
    let token = std::fs::read_to_string(dir.path().join("gw-a/data/admin.token")).unwrap();
    let id = "gw-a.http.new-device.temperature";
    let changed = Instant::now();
    ureq::post(&format!(
        "http://127.0.0.1:{owner_http}/api/v1/things/{id}/readings"
    ))
    .set("Authorization", &format!("Bearer {}", token.trim()))
    .set("Content-Type", "application/senml+json")
    .send_string(r#"[{"u":"Cel","v":21.5}]"#)
    .expect("the owner takes the new device");
    wait(
        "every gateway lists the new thing service",
        Duration::from_secs(30),
        POLL,
        || {
            others
                .iter()
                .all(|(_, http)| get(*http, &format!("/api/v1/things/{id}")).is_some())
        },
    );
    let change = changed.elapsed();
    let rss_mib = status_kib(others[0].0.0.id(), "VmHWM:") as f64 / 1024.0;
    drop(owner);
    Convergence {
        gateways,
        things,
        join,
        change,
        rss_mib,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("cloud: bench");
        return;
    }
    let latency: usize = setting("BENCH_CLOUD_LATENCY", 2000, 1000);
    let burst: usize = setting("BENCH_CLOUD_BURST", 20_000, 10_000);
    let sizes: Vec<(usize, usize)> = std::env::var("BENCH_CLOUD_SIZES")
        .unwrap_or_else(|_| {
            if testkit::bench::quick() {
                "3x1000,10x1000".into()
            } else {
                "3x1000,10x1000,30x1000,3x10000,10x10000".into()
            }
        })
        .split(',')
        .filter_map(|s| {
            let (n, k) = s.split_once('x')?;
            Some((n.trim().parse().ok()?, k.trim().parse().ok()?))
        })
        .collect();
    let rounds = setting("BENCH_CLOUD_ROUNDS", 3usize, 1).max(1);
    let epoch = Instant::now();

    // By system, in the order of `names` below; each round runs every
    // system in turn, so that a slow moment of the machine is shared.
    let mut paced: [Vec<Outcome>; SYSTEMS] = Default::default();
    let mut bursts: [Vec<Outcome>; SYSTEMS] = Default::default();
    let mut rss_mib = 0f64;
    let mut dropped = Dropped::default();
    for _ in 0..rounds {
        let fogbank = fogbank_delivery(latency, burst, epoch);
        rss_mib = rss_mib.max(fogbank.rss_mib);
        dropped.add(&fogbank.dropped);
        let round = [
            (fogbank.paced, fogbank.burst),
            mosquitto_delivery(latency, burst, epoch, Bridge::Clear, false),
            mosquitto_delivery(latency, burst, epoch, Bridge::TlsPsk, false),
            zenoh_delivery(latency, burst, ZenohTopology::ThroughRouters, false),
            mosquitto_delivery(latency, burst, epoch, Bridge::TlsPsk, true),
            zenoh_delivery(latency, burst, ZenohTopology::ThroughRouters, true),
            (fogbank.local_paced, fogbank.local_burst),
            zenoh_delivery(latency, burst, ZenohTopology::PeerToPeer, false),
            (fogbank.unacknowledged_paced, fogbank.unacknowledged_burst),
        ];
        for (system, (p, b)) in round.into_iter().enumerate() {
            paced[system].push(p);
            bursts[system].push(b);
        }
    }
    let paced = paced.map(|runs| Outcome::median(&runs));
    let bursts = bursts.map(|runs| Outcome::median(&runs));

    println!(
        "Cross-gateway delivery, device at A → subscriber at B, median of {rounds} rounds, {} cores",
        testkit::bench::cores()
    );
    let names = [
        "fogbank (MQTT in, SSE out)",
        "Mosquitto bridge",
        "Mosquitto bridge, TLS-PSK",
        "Zenoh, two routers (Python clients)",
        // Equal guarantees: fogbank has each reading in A's WAL before it
        // leaves; these store each message at B before they count it.
        "Mosquitto bridge, TLS-PSK, storing subscriber",
        "Zenoh, two routers, storing subscriber",
        "(fogbank, A alone, no hop)",
        "(Zenoh, two peers, no gateways)",
        // Zenoh's guarantee to its publisher: none (a put is not
        // acknowledged); fogbank still stores each reading at A.
        "fogbank, device at QoS 0",
    ];
    // Ratios are each system's figure over fogbank's, in the same run:
    // below 1 the other is faster at the median, above 1 it has more
    // throughput.
    println!(
        "  latency at 1000 msg/s ({latency} messages)      p50 ms   p99 ms  p50 ratio  delivered"
    );
    for (name, o) in names.iter().zip(&paced) {
        let ratio = o.p50_ms / paced[0].p50_ms;
        println!(
            "    {name:<34} {:>7.2}  {:>7.2}  {ratio:>9.2}  {}/{}",
            o.p50_ms, o.p99_ms, o.delivered, o.sent
        );
    }
    println!("  throughput, {burst} back to back                 msg/s    ratio  delivered");
    for (name, o) in names.iter().zip(&bursts) {
        let ratio = o.per_second / bursts[0].per_second;
        println!(
            "    {name:<34} {:>9.0}  {ratio:>5.2}  {}/{}",
            o.per_second, o.delivered, o.sent
        );
    }
    let Dropped {
        a_bus,
        a_to_b,
        b_bus,
    } = dropped;
    println!(
        "  fogbank dropped for subscribers behind: A's bus {a_bus}, A to B {a_to_b}, B's bus {b_bus}"
    );
    println!("  fogbank gateway A peak RSS {rss_mib:.1} MiB");
    record_delivery(&names, &paced, &bursts, rss_mib);

    println!("Catalog convergence (one gateway owns all thing services)");
    println!("  gateways  things   join (all listed)  one change  RSS of a member");
    let mut converged = Vec::new();
    for (n, k) in sizes {
        let c = convergence(n, k);
        println!(
            "  {:>8}  {:>6}   {:>14.0} ms  {:>7.0} ms  {:>8.1} MiB",
            c.gateways,
            c.things,
            c.join.as_secs_f64() * 1000.0,
            c.change.as_secs_f64() * 1000.0,
            c.rss_mib
        );
        converged.push(c);
    }
    record_convergence(&converged);
}

/// Systems of the delivery runs: fogbank, five peers, two references, and
/// fogbank with an unacknowledged device.
const SYSTEMS: usize = 9;
/// Zenoh's routers with a subscriber that stores each message.
const ZENOH_STORING: usize = 5;
/// fogbank, the device at QoS 0.
const UNACKNOWLEDGED: usize = 8;

/// The delivery figures against each peer (systems 1 to 5 of `names`),
/// fogbank's unacknowledged device against Zenoh with storage, and every
/// system's latency distribution.
fn record_delivery(
    names: &[&str; SYSTEMS],
    paced: &[Outcome; SYSTEMS],
    bursts: &[Outcome; SYSTEMS],
    rss_mib: f64,
) {
    const AREA: &str = "Local cloud: one reading from gateway A to gateway B";
    for peer in 1..=5 {
        let name = names[peer];
        Figure::new(
            AREA,
            "latency p50 at 1 000 msg/s",
            paced[0].p50_ms,
            "ms",
            Lower,
        )
        .against(name, paced[peer].p50_ms)
        .record();
        Figure::new(
            AREA,
            "latency p99 at 1 000 msg/s",
            paced[0].p99_ms,
            "ms",
            Lower,
        )
        .against(name, paced[peer].p99_ms)
        .record();
        Figure::new(
            AREA,
            &format!(
                "throughput, back to back, {}",
                delivery(&bursts[0], &bursts[peer])
            ),
            bursts[0].per_second,
            "msg/s",
            Higher,
        )
        .against(name, bursts[peer].per_second)
        .record();
    }
    // Equal guarantees to the publisher too: neither acknowledges the
    // device; fogbank stores at A, the peer at B.
    let zenoh_storing = names[ZENOH_STORING];
    Figure::new(
        AREA,
        "latency p50 at 1 000 msg/s, device at QoS 0 (unacknowledged, as a Zenoh put)",
        paced[UNACKNOWLEDGED].p50_ms,
        "ms",
        Lower,
    )
    .against(zenoh_storing, paced[ZENOH_STORING].p50_ms)
    .record();
    Figure::new(
        AREA,
        &format!(
            "throughput, device at QoS 0 (unacknowledged, as a Zenoh put), {}",
            delivery(&bursts[UNACKNOWLEDGED], &bursts[ZENOH_STORING])
        ),
        bursts[UNACKNOWLEDGED].per_second,
        "msg/s",
        Higher,
    )
    .against(zenoh_storing, bursts[ZENOH_STORING].per_second)
    .record();
    Figure::new(AREA, "gateway A peak RSS", rss_mib, "MiB", Lower).record();
    let chart = Chart {
        title: "Latency of one reading from gateway A to gateway B at 1 000 msg/s",
        x: "quantile",
        y: "ms",
        x_scale: "quantile",
    };
    for (name, outcome) in names.iter().zip(paced) {
        record_series(&chart, name, &outcome.quantiles);
    }
}

/// How much of the bursts arrived, for a throughput figure's name: a rate
/// counts what was delivered, and a run that left messages behind must say
/// so beside the rate.
fn delivery(fogbank: &Outcome, peer: &Outcome) -> String {
    if fogbank.delivered == fogbank.sent && peer.delivered == peer.sent {
        return "all delivered".to_owned();
    }
    format!(
        "delivered: fogbank {} of {}, the peer {} of {}",
        fogbank.delivered, fogbank.sent, peer.delivered, peer.sent
    )
}

/// Convergence figures, and curves of join time and a member's RSS against
/// the number of gateways, one series per catalog size.
fn record_convergence(converged: &[Convergence]) {
    const AREA: &str = "Local cloud: catalog convergence";
    for c in converged {
        let at = format!("{} gateways, {} things", c.gateways, c.things);
        Figure::new(
            AREA,
            &format!("{at}: join, until every gateway lists all"),
            c.join.as_secs_f64() * 1e3,
            "ms",
            Lower,
        )
        .record();
        Figure::new(
            AREA,
            &format!("{at}: one change, until every gateway lists it"),
            c.change.as_secs_f64() * 1e3,
            "ms",
            Lower,
        )
        .record();
        Figure::new(
            AREA,
            &format!("{at}: RSS of a member"),
            c.rss_mib,
            "MiB",
            Lower,
        )
        .record();
    }
    let mut sizes: Vec<usize> = converged.iter().map(|c| c.things).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let join = Chart {
        title: "Catalog join time as gateways grow",
        x: "gateways",
        y: "ms until every gateway lists the catalog",
        x_scale: "log",
    };
    let rss = Chart {
        title: "Member RSS as gateways grow",
        x: "gateways",
        y: "MiB",
        x_scale: "log",
    };
    for things in sizes {
        let of = |pick: fn(&Convergence) -> f64| -> Vec<(f64, f64)> {
            converged
                .iter()
                .filter(|c| c.things == things)
                .map(|c| (c.gateways as f64, pick(c)))
                .collect()
        };
        let series = format!("{things} thing services");
        record_series(&join, &series, &of(|c| c.join.as_secs_f64() * 1e3));
        record_series(&rss, &series, &of(|c| c.rss_mib));
    }
}
