//! MQTT ingest benchmark against real peers, in one run:
//!
//! 1. Mosquitto's own pub→sub: one publisher, one QoS 1 subscriber;
//! 2. fogbank as a client of that Mosquitto: published → persisted;
//! 3. fogbank's embedded broker: published → persisted.
//!
//! The same publisher (rumqttc, QoS 1) sends the same SenML payloads each
//! time; "persisted" means counted in `fogbank_readings_ingested_total`,
//! i.e. in the WAL. Peak RSS of the gateway is its VmHWM.
//!
//!   cargo bench -p fogbank --bench mqtt        (or ./scripts/bench)
//!
//! Mosquitto runs with `max_inflight_messages 100` for both: fogbank
//! acknowledges only after the WAL write, so Mosquitto's default window of
//! 20 unacknowledged messages per client bounds it by latency rather than
//! by work; the peer subscriber gets the same window.
//!
//! Settings: BENCH_MQTT_MESSAGES (default 50000), BENCH_MQTT_ROUNDS
//! (default 3): the three are measured in turn, round after round, and the
//! median of each is reported, so that a noisy moment on a small machine
//! does not decide the ratio.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use fogbank_testkit as testkit;
use testkit::bench::{Better::*, Figure, median, status_kib};
use testkit::{free_port, wait_port};

fn payloads(n: usize) -> Vec<Vec<u8>> {
    let base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 3600.0;
    (0..n)
        .map(|i| {
            format!(
                "[{{\"v\":{}.5,\"t\":{:.6}}}]",
                i % 1000,
                base + i as f64 * 1e-5
            )
            .into_bytes()
        })
        .collect()
}

/// Publishes every payload at QoS 1 as fast as the broker acknowledges.
fn publish(port: u16, topic: &str, payloads: &[Vec<u8>]) {
    testkit::bench::block_on(async {
        let mut options = MqttOptions::new(format!("bench-pub-{port}"), "127.0.0.1", port);
        options
            .set_inflight(200)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let total = payloads.len();
        let feeder = {
            let client = client.clone();
            let payloads = payloads.to_vec();
            let topic = topic.to_owned();
            tokio::spawn(async move {
                for payload in payloads {
                    client
                        .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                        .await
                        .unwrap();
                }
            })
        };
        let mut acked = 0;
        while acked < total {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                acked += 1;
            }
        }
        feeder.await.unwrap();
    });
}

/// Mosquitto alone: messages/s from the first publish to the last delivery.
fn mosquitto_pub_sub(port: u16, payloads: &[Vec<u8>]) -> f64 {
    let n = payloads.len();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let subscriber = std::thread::spawn(move || {
        testkit::bench::block_on(async {
            let options = MqttOptions::new("bench-sub", "127.0.0.1", port);
            let (client, mut eventloop) = AsyncClient::new(options, 100);
            client.subscribe("bench/#", QoS::AtLeastOnce).await.unwrap();
            let mut received = 0;
            let mut last = Instant::now();
            while received < n {
                match eventloop.poll().await.unwrap() {
                    Event::Incoming(Packet::SubAck(_)) => ready_tx.send(()).unwrap(),
                    Event::Incoming(Packet::Publish(_)) => {
                        received += 1;
                        last = Instant::now();
                    }
                    _ => {}
                }
            }
            last
        })
    });
    ready_rx.recv().unwrap();
    let start = Instant::now();
    publish(port, "bench/level", payloads);
    let last = subscriber.join().unwrap();
    n as f64 / (last - start).as_secs_f64()
}

struct Gateway {
    child: Child,
    http: u16,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start(args: &[&str], config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let http = free_port();
        let config_path = dir.path().join("fogbank.toml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(testkit::binary())
            .args([
                "run",
                "--gateway-id",
                "bench",
                "--http",
                &format!("127.0.0.1:{http}"),
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("FOGBANK_LOG", "warn")
            .env_remove("FOGBANK_MQTT")
            .env("FOGBANK_COAP", "off")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(http);
        Gateway {
            child,
            http,
            _dir: dir,
        }
    }

    fn ingested(&self) -> u64 {
        let mut text = String::new();
        if let Ok(response) = ureq::get(&format!("http://127.0.0.1:{}/metrics", self.http)).call() {
            let _ = response.into_reader().read_to_string(&mut text);
        }
        text.lines()
            .find(|l| l.starts_with("fogbank_readings_ingested_total "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    }

    /// Publishes one message until the gateway has stored it: subscribed.
    fn wait_subscribed(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.ingested() == 0 {
            publish(port, "things/warmup/level", &[b"1".to_vec()]);
            assert!(Instant::now() < deadline, "the gateway never subscribed");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Persisted readings/s for `payloads` published to `port`.
    fn persisted_rate(&self, port: u16, payloads: &[Vec<u8>]) -> f64 {
        self.wait_subscribed(port);
        let before = self.ingested();
        let target = before + payloads.len() as u64;
        let start = Instant::now();
        publish(port, "things/bench/level", payloads);
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.ingested() < target {
            assert!(
                Instant::now() < deadline,
                "only {} of {} persisted",
                self.ingested() - before,
                payloads.len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        payloads.len() as f64 / start.elapsed().as_secs_f64()
    }

    fn peak_rss_mib(&self) -> f64 {
        status_kib(self.child.id(), "VmHWM:") as f64 / 1024.0
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("mqtt: bench");
        return;
    }
    let n: usize = testkit::bench::setting("BENCH_MQTT_MESSAGES", 50_000, 20_000);
    let payloads = payloads(n);

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 100\nuser root\n"
        ),
    )
    .unwrap();
    let mut mosquitto = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto");
    wait_port(port);

    let rounds: usize = testkit::bench::setting("BENCH_MQTT_ROUNDS", 3, 1).max(1);
    let external = Gateway::start(
        &[],
        &format!("[mqtt]\nmode = \"external\"\nbroker = \"127.0.0.1:{port}\"\n"),
    );
    let embedded_port = free_port();
    let embedded = Gateway::start(&["--mqtt", &format!("127.0.0.1:{embedded_port}")], "");
    let (mut peer, mut external_rate, mut embedded_rate) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        peer.push(mosquitto_pub_sub(port, &payloads));
        external_rate.push(external.persisted_rate(port, &payloads));
        embedded_rate.push(embedded.persisted_rate(embedded_port, &payloads));
    }
    let (peer, external_rate, embedded_rate) =
        (median(peer), median(external_rate), median(embedded_rate));
    let external_rss = external.peak_rss_mib();
    let embedded_rss = embedded.peak_rss_mib();
    drop(external);
    drop(embedded);

    let _ = Command::new("kill")
        .args(["-TERM", &mosquitto.id().to_string()])
        .status();
    let _ = mosquitto.wait();

    println!(
        "MQTT ingest, {n} QoS 1 SenML messages from one rumqttc publisher, median of {rounds} rounds, {} cores",
        testkit::bench::cores()
    );
    println!("  Mosquitto pub→sub (peer)                 {peer:>9.0} msg/s");
    println!(
        "  fogbank via Mosquitto, persisted         {external_rate:>9.0} readings/s  ratio {:.2}  peak RSS {external_rss:.1} MiB",
        external_rate / peer
    );
    println!(
        "  fogbank embedded broker, persisted       {embedded_rate:>9.0} readings/s  ratio {:.2}  peak RSS {embedded_rss:.1} MiB",
        embedded_rate / peer
    );
    const AREA: &str = "MQTT ingest (QoS 1, persisted)";
    const PEER: &str = "Mosquitto's own pub→sub";
    Figure::new(AREA, "embedded broker", embedded_rate, "readings/s", Higher)
        .against(PEER, peer)
        .record();
    Figure::new(
        AREA,
        "as a client of Mosquitto",
        external_rate,
        "readings/s",
        Higher,
    )
    .against(PEER, peer)
    .record();
    Figure::new(
        AREA,
        "peak RSS, embedded broker",
        embedded_rss,
        "MiB",
        Lower,
    )
    .record();
    Figure::new(
        AREA,
        "peak RSS, client of Mosquitto",
        external_rss,
        "MiB",
        Lower,
    )
    .record();
}
