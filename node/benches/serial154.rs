//! 802.15.4 ingest benchmark: compact SenML frames written as fast as a
//! pseudo-terminal takes them (socat pair) into a release gateway's radio
//! adapter; frames/s decoded end to end into the store (counted in
//! `fogbank_readings_ingested_total`). A 250 kbit/s radio carries at most
//! a few hundred frames per second; the target is 100 times that.
//!
//!   cargo bench -p fogbank --bench serial154   (or ./scripts/bench)
//!
//! Settings: BENCH_FRAMES (default 100000). The frames are built with the
//! gateway's own encoders: this measures speed, the tests check meaning.

use fogbank_testkit as testkit;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};
use testkit::bench::{Better::*, Figure, Process};

use fogbank_serial154::mac::{self, Address};
use fogbank_serial154::slip::{Framing, Slip};
use fogbank_taas::{Timestamp, Value, senml};

fn ingested(http: u16) -> u64 {
    let mut text = String::new();
    if let Ok(response) = ureq::get(&format!("http://127.0.0.1:{http}/metrics")).call() {
        let _ = response.into_reader().read_to_string(&mut text);
    }
    text.lines()
        .find(|l| l.starts_with("fogbank_readings_ingested_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("serial154: bench");
        return;
    }
    let n: u64 = testkit::bench::setting("BENCH_FRAMES", 100_000, 20_000);
    let dir = tempfile::tempdir().unwrap();
    let (radio, sim) = (dir.path().join("radio"), dir.path().join("sim"));
    let _socat = Process(
        Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", radio.display()))
            .arg(format!("pty,raw,echo=0,link={}", sim.display()))
            .stderr(Stdio::null())
            .spawn()
            .expect("socat"),
    );
    wait_for(&radio);
    wait_for(&sim);
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway = Process(
        testkit::bench::gateway_command(http, &dir.path().join("data"))
            .arg("--serial154")
            .arg(&radio)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while ureq::get(&format!("http://127.0.0.1:{http}/health"))
        .call()
        .is_err()
    {
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&sim)
        .unwrap();
    // Drain what the gateway sends (`?M`), so that the pty never fills.
    let mut reader = port.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        while reader.read(&mut sink).is_ok_and(|n| n > 0) {}
    });

    // 50 devices, one temperature record each frame; a plausible 40-byte frame.
    let slip = Slip::default();
    let base = Timestamp::now().0 - 3_600_000_000;
    let frame = |i: u64| {
        let record = senml::Record::with_value(
            Some("temperature".into()),
            None,
            &Value::Number(20.0 + (i % 100) as f64 / 10.0),
            Timestamp(base + i),
        );
        let mut payload = vec![0x01];
        payload.extend(senml::to_cbor(&[record]));
        let source = Address::Extended(0x0012_4b00_0000_0000 + i % 50);
        slip.encode(&mac::data_frame(
            i as u8,
            0xabcd,
            Address::Short(0),
            source,
            &payload,
        ))
    };
    // Warm-up: the 50 thing services are announced.
    let warm: Vec<u8> = (0..50).flat_map(frame).collect();
    port.write_all(&warm).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ingested(http) < 50 {
        assert!(Instant::now() < deadline, "no frame arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = ingested(http);
    let bytes: Vec<u8> = (50..50 + n).flat_map(frame).collect();
    let frame_bytes = bytes.len() as f64 / n as f64;
    let start = Instant::now();
    port.write_all(&bytes).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while ingested(http) < before + n {
        assert!(Instant::now() < deadline, "frames were lost");
        std::thread::sleep(Duration::from_millis(5));
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let rss = std::fs::read_to_string(format!("/proc/{}/status", gateway.0.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_default();
    // 250 kbit/s with 6 bytes of PHY overhead per frame, no gaps at all.
    let radio_ceiling = 250_000.0 / 8.0 / (frame_bytes + 6.0);
    println!(
        "802.15.4 ingest, {n} compact SenML frames (~{frame_bytes:.0} bytes on the line) through a pty"
    );
    println!(
        "  decoded and stored                {rate:>9.0} frames/s   {:.0}x a saturated 250 kbit/s radio (~{radio_ceiling:.0} frames/s)",
        rate / radio_ceiling
    );
    println!("  gateway peak RSS: {rss}");
    const AREA: &str = "IEEE 802.15.4 over a serial line";
    Figure::new(
        AREA,
        "compact SenML frames decoded and stored",
        rate,
        "frames/s",
        Higher,
    )
    .against("a saturated 250 kbit/s radio (computed)", radio_ceiling)
    .record();
    let peak_kib: f64 = rss
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    Figure::new(AREA, "gateway peak RSS", peak_kib / 1024.0, "MiB", Lower).record();
}
