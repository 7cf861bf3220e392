//! S-MANAGE federation benchmark: a release `fogbank controller` with
//! 1,000 SDVSs — one release gateway whose campus simulator runs 25
//! buildings of 40 floors, each floor a device — and applications' requests
//! over REST.
//!
//!   cargo bench -p fogbank --bench smanage   (or ./scripts/bench)
//!
//! Figures: how long the controller takes to know all 1,000 SDVSs; request
//! to first Response at the controller, p50/p99, beside a direct REST read
//! of the same gateway in the same run (what the detour through S-MANAGE
//! costs); request answers per second with BENCH_CLIENTS clients beside
//! the gateway's own reading answers per second with as many; peak memory
//! of both processes. Settings: BENCH_SECS (5), BENCH_CLIENTS (4),
//! BENCH_REQUESTS (200, for the latency).

use fogbank_testkit as testkit;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use testkit::bench::{
    Better::*, Chart, Figure, Process, percentile, record_latencies, setting, status_kib,
};

const TOKEN: &str = "bench-token-0123456789";
const BUILDINGS: u32 = 25;
const FLOORS: u32 = 40;

fn free_port() -> u16 {
    testkit::free_port()
}

fn get(url: &str) -> Option<serde_json::Value> {
    ureq::get(url).call().ok()?.into_json().ok()
}

fn post(url: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
    match ureq::post(url)
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .send_json(body.clone())
    {
        Ok(response) => response.into_json().map_err(|e| e.to_string()),
        Err(ureq::Error::Status(status, response)) => Err(format!(
            "{status}: {}",
            response.into_string().unwrap_or_default()
        )),
        Err(error) => Err(error.to_string()),
    }
}

fn location(i: u64) -> String {
    let building = (b'a' + (i % u64::from(BUILDINGS)) as u8) as char;
    let floor = (i / u64::from(BUILDINGS)) % u64::from(FLOORS) + 1;
    format!("campus/building-{building}/floor-{floor}")
}

fn wait_up(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(url).call().is_err() {
        assert!(Instant::now() < deadline, "{url} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Requests per second from `clients` threads for `secs`, each calling
/// `one(i)` until the time is up.
fn rate(clients: u64, secs: u64, one: impl Fn(u64) -> bool + Send + Sync + 'static) -> f64 {
    let one = Arc::new(one);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (one, done) = (one.clone(), done.clone());
            std::thread::spawn(move || {
                let mut i = c * 1_000_000;
                while start.elapsed() < Duration::from_secs(secs) {
                    if one(i) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("smanage: bench");
        return;
    }
    let secs: u64 = setting("BENCH_SECS", 5, 3);
    let clients: u64 = setting("BENCH_CLIENTS", 4, 4);
    let requests: u64 = setting("BENCH_REQUESTS", 200, 100);
    let dir = tempfile::tempdir().unwrap();
    let (controller_http, controller_udp) = (free_port(), testkit::free_udp_port());
    let (gateway_http, gateway_udp) = (free_port(), testkit::free_udp_port());

    let controller = Process(
        Command::new(testkit::binary())
            .args(["controller", "--data-dir"])
            .arg(dir.path().join("controller"))
            .args(["--http", &format!("127.0.0.1:{controller_http}")])
            .args(["--listen", &format!("127.0.0.1:{controller_udp}")])
            .env("FOGBANK_ADMIN_TOKEN", TOKEN)
            .env("FOGBANK_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[sim]\nenabled = true\nbuildings = {BUILDINGS}\nfloors = {FLOORS}\ninterval_ms = 5000\n\
             [smanage]\ncontroller = \"127.0.0.1:{controller_udp}\"\nlisten = \"127.0.0.1:{gateway_udp}\"\n\
             addresses = \"0x0100-0x04ff\"\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let gateway = Process(
        testkit::bench::gateway_command(gateway_http, &dir.path().join("gateway"))
            .arg("--config")
            .arg(&config)
            .env("FOGBANK_ADMIN_TOKEN", TOKEN)
            .spawn()
            .unwrap(),
    );
    let controller_url = format!("http://127.0.0.1:{controller_http}");
    let gateway_url = format!("http://127.0.0.1:{gateway_http}");
    wait_up(&format!("{controller_url}/health"));
    wait_up(&format!("{gateway_url}/health"));
    let want = (BUILDINGS * FLOORS) as usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let known = get(&format!("{controller_url}/api/v1/sdvs"))
            .and_then(|v| v.as_array().cloned())
            .map_or(0, |all| {
                all.iter()
                    .filter(|s| s["services"].as_array().is_some_and(|s| s.len() == 5))
                    .count()
            });
        if known >= want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the controller knows {known} of {want} SDVSs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let learnt = started.elapsed();

    // Request to first Response, beside a direct read of one thing.
    let mut through = Vec::new();
    for i in 0..requests {
        let begin = Instant::now();
        let body = serde_json::json!({"type": "temperature", "location": location(i), "frequency_s": 0, "period_s": 1, "action": "read"});
        let placed = post(&format!("{controller_url}/api/v1/requests"), &body)
            .unwrap_or_else(|e| panic!("request {body} not placed: {e}"));
        let id = placed["id"].as_u64().unwrap();
        loop {
            let r = get(&format!("{controller_url}/api/v1/requests/{id}")).unwrap_or_default();
            if r["readings"].as_u64().unwrap_or(0) >= 1 {
                break;
            }
            assert!(
                begin.elapsed() < Duration::from_secs(10),
                "no Response for request {id}"
            );
        }
        through.push(begin.elapsed().as_secs_f64() * 1000.0);
    }
    let mut direct = Vec::new();
    for i in 0..requests {
        let building = (b'a' + (i % u64::from(BUILDINGS)) as u8) as char;
        let floor = (i / u64::from(BUILDINGS)) % u64::from(FLOORS) + 1;
        let begin = Instant::now();
        get(&format!("{gateway_url}/api/v1/things/bench.sim.building-{building}-floor-{floor}.temperature/reading"))
            .expect("a reading");
        direct.push(begin.elapsed().as_secs_f64() * 1000.0);
    }
    through.sort_by(f64::total_cmp);
    direct.sort_by(f64::total_cmp);

    // Answers per second: placed requests, and direct readings.
    let url = controller_url.clone();
    let placed = rate(clients, secs, move |i| {
        let body = serde_json::json!({"type": "humidity", "location": location(i), "frequency_s": 0, "period_s": 1, "action": "read"});
        post(&format!("{url}/api/v1/requests"), &body).is_ok()
    });
    let url = gateway_url.clone();
    let read = rate(clients, secs, move |i| {
        let building = (b'a' + (i % u64::from(BUILDINGS)) as u8) as char;
        let floor = (i / u64::from(BUILDINGS)) % u64::from(FLOORS) + 1;
        get(&format!(
            "{url}/api/v1/things/bench.sim.building-{building}-floor-{floor}.humidity/reading"
        ))
        .is_some()
    });

    let (p50, p99) = (percentile(&through, 0.5), percentile(&through, 0.99));
    let (d50, d99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
    println!(
        "smanage: {want} SDVSs known to the controller {:.1} s after the gateway started",
        learnt.as_secs_f64()
    );
    println!(
        "smanage: request -> first Response p50 {p50:.2} ms p99 {p99:.2} ms ({requests} requests); direct REST read p50 {d50:.2} ms p99 {d99:.2} ms; ratio p50 {:.1}",
        p50 / d50
    );
    println!(
        "smanage: {placed:.0} requests placed/s ({clients} clients, {secs} s); direct readings {read:.0}/s; ratio {:.3}",
        placed / read
    );
    println!(
        "smanage: peak RSS controller {:.1} MiB, gateway {:.1} MiB ({} cores)",
        status_kib(controller.0.id(), "VmHWM:") as f64 / 1024.0,
        status_kib(gateway.0.id(), "VmHWM:") as f64 / 1024.0,
        testkit::bench::cores()
    );
    const AREA: &str = "Federation: S-MANAGE";
    const DIRECT: &str = "the same gateway read directly over REST";
    Figure::new(
        AREA,
        "request placed → first Response, p50",
        p50,
        "ms",
        Lower,
    )
    .against(DIRECT, d50)
    .record();
    Figure::new(
        AREA,
        "request placed → first Response, p99",
        p99,
        "ms",
        Lower,
    )
    .against(DIRECT, d99)
    .record();
    Figure::new(
        AREA,
        "answers per second, 4 clients",
        placed,
        "requests/s",
        Higher,
    )
    .against(DIRECT, read)
    .record();
    Figure::new(
        AREA,
        &format!("all {want} SDVSs known to the controller, from the gateway's start"),
        learnt.as_secs_f64(),
        "s",
        Lower,
    )
    .record();
    Figure::new(
        AREA,
        "controller peak RSS",
        status_kib(controller.0.id(), "VmHWM:") as f64 / 1024.0,
        "MiB",
        Lower,
    )
    .record();
    let chart = Chart {
        title: "S-MANAGE: request to first Response",
        x: "quantile",
        y: "ms",
        x_scale: "quantile",
    };
    record_latencies(&chart, "through the controller", &through);
    record_latencies(&chart, "direct REST read of the gateway", &direct);
}
