//! End-to-end gateway benchmark, driving a real `fogbank` process with real
//! clients (not a timed test: it reports, it does not assert).
//!
//!   cargo bench -p fogbank --bench gateway            (or ./scripts/bench)
//!
//! 1. Idle RSS after start-up.
//! 2. Persisted readings/s: client threads POST SenML packs (each reading
//!    validated, written to RocksDB's WAL, cached and published) while one
//!    SSE client streams one of the things.
//! 3. `GET /things/{id}/reading` requests/s with `wrk` (Debian's `wrk`),
//!    beside nginx serving the same bytes as a static file with the same
//!    number of workers, driven by the same wrk command: the peer ratio.
//!
//! 4. The scale curve: readings/s and p99 of a POST as the devices grow
//!    from 10 to 10,000 (`BENCH_DEVICES`), each POST one device's pack of
//!    10 readings, the clients spread over every device.
//!
//! Settings: BENCH_SECS (default 10), BENCH_CLIENTS (4), BENCH_PACK (1000),
//! BENCH_DEVICES (10,100,1000,10000); a quick run (`scripts/bench
//! --quick`) takes 3 s and 10,1000.

use fogbank_testkit as testkit;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::bench::{Better::*, Chart, Figure, percentile, record_series, setting};

fn rss_kib(pid: u32) -> u64 {
    testkit::bench::status_kib(pid, "VmRSS:")
}

/// `wrk -t2 -c32` against `url` for `secs`; requests/s.
fn wrk(url: &str, secs: u64) -> Option<f64> {
    let out = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{secs}s"), url])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
}

/// nginx (the peer) serving `body` as a static file with `workers` worker
/// processes; requests/s under the same wrk load. `None` without nginx.
fn nginx_get_rate(body: &[u8], workers: usize, secs: u64) -> Option<f64> {
    let dir = tempfile::tempdir().ok()?;
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).ok()?;
    std::fs::write(root.join("reading"), body).ok()?;
    let d = dir.path().display();
    let config = format!(
        "daemon off; worker_processes {workers}; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
         server {{ listen 127.0.0.1:{port}; location / {{ root {}; default_type application/senml+json; }} }} }}\n",
        root.display()
    );
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, config).ok()?;
    let mut nginx = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // SIGTERM lets the master stop its workers; SIGKILL would orphan them.
    let stop = |nginx: &mut std::process::Child| {
        let _ = Command::new("kill")
            .args(["-TERM", &nginx.id().to_string()])
            .status();
        let _ = nginx.wait();
    };
    let url = format!("http://127.0.0.1:{port}/reading");
    let deadline = Instant::now() + Duration::from_secs(5);
    while ureq::get(&url).call().is_err() {
        if Instant::now() > deadline {
            stop(&mut nginx);
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rate = wrk(&url, secs);
    stop(&mut nginx);
    rate
}

/// `clients` threads posting packs of 10 readings for `secs`, each POST to
/// the next of `devices` thing services (created first): readings/s and
/// the p99 of a POST in ms.
fn scale_point(
    agent: &ureq::Agent,
    base: &str,
    auth: &str,
    devices: usize,
    clients: usize,
    secs: u64,
) -> (f64, f64) {
    let url = |d: usize| {
        format!("{base}/api/v1/things/gw-b.http.scale-{devices}-{d}.temperature/readings")
    };
    let post = |url: &str, body: &str| {
        agent
            .post(url)
            .set("Authorization", auth)
            .set("Content-Type", "application/senml+json")
            .send_string(body)
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    };
    for d in 0..devices {
        assert!(
            post(&url(d), r#"[{"u":"Cel","v":20,"t":-3600}]"#),
            "creating device {d}"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let stop = stop.clone();
            let urls: Vec<String> = (c..devices).step_by(clients).map(url).collect();
            let (agent, auth) = (agent.clone(), auth.to_owned());
            std::thread::spawn(move || {
                let (mut latencies, mut readings) = (Vec::new(), 0u64);
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) && !urls.is_empty() {
                    for url in &urls {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let t = -3000.0 + round as f64 * 1e-2;
                        let body = format!(
                            "[{}]",
                            (0..10)
                                .map(|i| format!("{{\"t\":{:.4},\"v\":{i}}}", t + i as f64 * 1e-3))
                                .collect::<Vec<_>>()
                                .join(",")
                        );
                        let sent = Instant::now();
                        let ok = agent
                            .post(url)
                            .set("Authorization", &auth)
                            .set("Content-Type", "application/senml+json")
                            .send_string(&body)
                            .map(|r| r.status() == 200)
                            .unwrap_or(false);
                        assert!(ok, "a POST of the scale curve failed");
                        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                        readings += 10;
                    }
                    round += 1;
                }
                (latencies, readings)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let (mut latencies, mut readings) = (Vec::new(), 0);
    for worker in workers {
        let (l, r) = worker.join().unwrap();
        latencies.extend(l);
        readings += r;
    }
    latencies.sort_by(f64::total_cmp);
    (
        readings as f64 / started.elapsed().as_secs_f64(),
        percentile(&latencies, 0.99),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("gateway: bench");
        return;
    }
    let secs: u64 = setting("BENCH_SECS", 10, 3);
    let clients: usize = setting("BENCH_CLIENTS", 4, 4);
    let pack: usize = setting("BENCH_PACK", 1000, 1000);
    let device_counts: String = setting(
        "BENCH_DEVICES",
        "10,100,1000,10000".to_owned(),
        "10,1000".to_owned(),
    );

    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let token = "bench-token-0123456789abcdef";
    let mut child = Command::new(testkit::binary())
        .args([
            "run",
            "--gateway-id",
            "gw-b",
            "--http",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("FOGBANK_ADMIN_TOKEN", token)
        .env("FOGBANK_LOG", "warn")
        .env("FOGBANK_MQTT", "off")
        .env("FOGBANK_COAP", "off")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    while agent.get(&format!("{base}/health")).call().is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_kib(child.id());

    // One thing per client; the first post creates it.
    let ids: Vec<String> = (0..clients)
        .map(|c| format!("gw-b.http.bench-{c}.temperature"))
        .collect();
    let auth = format!("Bearer {token}");
    for id in &ids {
        agent
            .post(&format!("{base}/api/v1/things/{id}/readings"))
            .set("Authorization", &auth)
            .set("Content-Type", "application/senml+json")
            .send_string(r#"[{"u":"Cel","v":20,"t":-3600}]"#)
            .unwrap();
    }

    // The SSE subscriber.
    let stop = Arc::new(AtomicBool::new(false));
    let streamed = Arc::new(AtomicU64::new(0));
    let lagged = Arc::new(AtomicU64::new(0));
    {
        let url = format!("{base}/api/v1/things/{}/stream", ids[0]);
        let (streamed, lagged) = (streamed.clone(), lagged.clone());
        std::thread::spawn(move || {
            let response = ureq::get(&url).call().unwrap();
            let mut kind = String::new();
            for line in BufReader::new(response.into_reader())
                .lines()
                .map_while(Result::ok)
            {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k.to_owned();
                } else if let Some(data) = line.strip_prefix("data: ") {
                    if kind == "reading" {
                        streamed.fetch_add(1, Ordering::Relaxed);
                    } else if kind == "lagged" {
                        let missed = data
                            .trim_matches(|c: char| !c.is_ascii_digit())
                            .parse()
                            .unwrap_or(0);
                        lagged.fetch_add(missed, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    std::thread::sleep(Duration::from_millis(300));

    // Ingest: each client posts packs with distinct times, as fast as acknowledged.
    let start_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 1800.0;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let (acknowledged, stop, agent, auth, base) = (
                acknowledged.clone(),
                stop.clone(),
                agent.clone(),
                auth.clone(),
                base.clone(),
            );
            std::thread::spawn(move || {
                let url = format!("{base}/api/v1/things/{id}/readings");
                let mut batch = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let bt = start_time + batch as f64 * pack as f64 * 1e-5;
                    let mut body = format!("[{{\"bt\":{bt:.6},\"t\":0,\"v\":20.0}}");
                    for i in 1..pack {
                        body.push_str(&format!(
                            ",{{\"t\":{:.5},\"v\":{:.2}}}",
                            i as f64 * 1e-5,
                            20.0 + (i % 100) as f64 * 0.01
                        ));
                    }
                    body.push(']');
                    let answer = agent
                        .post(&url)
                        .set("Authorization", &auth)
                        .set("Content-Type", "application/senml+json")
                        .send_string(&body);
                    match answer {
                        Ok(r) if r.status() == 200 => {
                            acknowledged.fetch_add(pack as u64, Ordering::Relaxed);
                        }
                        other => panic!("ingest failed: {other:?}"),
                    }
                    batch += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ingested = acknowledged.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    let loaded_rss = rss_kib(child.id());

    // Check: what was acknowledged is what is stored.
    let mut stored = 0u64;
    for id in &ids {
        let mut from = String::from("0");
        loop {
            let mut body = String::new();
            agent
                .get(&format!(
                    "{base}/api/v1/things/{id}/readings?from={from}&limit=100000"
                ))
                .call()
                .unwrap()
                .into_reader()
                .read_to_string(&mut body)
                .unwrap();
            let records: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
            let n = records.len() as u64;
            stored += n;
            if n < 100_000 {
                break;
            }
            let last = records.last().and_then(|r| r["t"].as_f64()).unwrap();
            from = format!("{:.6}", last + 1e-6);
        }
    }
    stored -= clients as u64; // the creating readings

    // The scale curve, before the GET load so that its RSS is the ingest's.
    let mut curve = Vec::new();
    for devices in device_counts
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
    {
        curve.push((
            devices,
            scale_point(&agent, &base, &auth, devices, clients, secs.div_ceil(2)),
        ));
    }

    // GET /reading with wrk, then the same bytes from nginx. The resident
    // size before and after, with the store's part of it: what the GET
    // load itself costs, apart from what the ingest and the scale curve
    // left in the write buffers and the block cache.
    let before_get_rss = rss_kib(child.id());
    // One reading of /metrics, so that the three parts are of one moment.
    let mut metrics = String::new();
    agent
        .get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_reader()
        .read_to_string(&mut metrics)
        .unwrap();
    let store_before_get = ["memtables", "block_cache", "table_readers"]
        .iter()
        .map(|part| {
            let name = format!("fogbank_store_memory_bytes{{part=\"{part}\"}}");
            testkit::metric_sample(&metrics, &name).unwrap_or(0.0)
        })
        .sum::<f64>()
        / f64::from(1 << 20);
    let reading_url = format!("{base}/api/v1/things/{}/reading", ids[0]);
    let get_rate = wrk(&reading_url, secs);
    let after_get_rss = rss_kib(child.id());
    let mut reading_body = Vec::new();
    agent
        .get(&reading_url)
        .call()
        .unwrap()
        .into_reader()
        .read_to_end(&mut reading_body)
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    let peer_rate = nginx_get_rate(&reading_body, workers, secs);

    let rate = ingested as f64 / elapsed;
    println!(
        "fogbank gateway benchmark ({clients} ingest clients × packs of {pack}, {secs} s, {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "  idle RSS                      {:>10.1} MiB",
        idle_rss as f64 / 1024.0
    );
    println!(
        "  persisted readings/s          {rate:>10.0}   (acknowledged {ingested}, found in history {stored})"
    );
    println!(
        "  SSE subscriber received       {:>10}   (told of {} skipped)",
        streamed.load(Ordering::Relaxed),
        lagged.load(Ordering::Relaxed)
    );
    println!(
        "  RSS after ingest              {:>10.1} MiB",
        loaded_rss as f64 / 1024.0
    );
    match get_rate {
        Some(r) => println!("  GET /reading requests/s (wrk) {r:>10.0}   (wrk -t2 -c32 -d{secs}s)"),
        None => println!("  GET /reading requests/s       not measured: install wrk"),
    }
    match (get_rate, peer_rate) {
        (Some(ours), Some(peer)) => {
            println!(
                "  nginx, same bytes, static     {peer:>10.0}   ratio fogbank/nginx {:.2}",
                ours / peer
            )
        }
        _ => println!("  nginx peer                    not measured: install nginx and wrk"),
    }
    println!(
        "  RSS before / after GET load   {:>10.1} / {:.1} MiB   (the store's part before: {store_before_get:.1} MiB)",
        before_get_rss as f64 / 1024.0,
        after_get_rss as f64 / 1024.0
    );
    for (devices, (rate, p99)) in &curve {
        println!(
            "  {devices:>6} devices, packs of 10: {rate:>10.0} readings/s, p99 of a POST {p99:.2} ms"
        );
    }
    const AREA: &str = "HTTP ingest and reads";
    Figure::new(
        AREA,
        "persisted readings/s, SenML packs of 1 000, one SSE subscriber",
        rate,
        "readings/s",
        Higher,
    )
    .record();
    Figure::new(
        AREA,
        "`GET /things/{id}/reading`",
        get_rate.unwrap_or(f64::NAN),
        "requests/s",
        Higher,
    )
    .against(
        "nginx serving the same bytes",
        peer_rate.unwrap_or(f64::NAN),
    )
    .record();
    Figure::new(AREA, "idle RSS", idle_rss as f64 / 1024.0, "MiB", Lower).record();
    Figure::new(
        AREA,
        "RSS after ingest",
        loaded_rss as f64 / 1024.0,
        "MiB",
        Lower,
    )
    .record();
    Figure::new(
        AREA,
        "RSS before the GET load (after ingest and the scale curve)",
        before_get_rss as f64 / 1024.0,
        "MiB",
        Lower,
    )
    .record();
    Figure::new(
        AREA,
        "the store's memory then (write buffers, block cache, tables)",
        store_before_get,
        "MiB",
        Lower,
    )
    .record();
    Figure::new(
        AREA,
        "RSS after the GET load",
        after_get_rss as f64 / 1024.0,
        "MiB",
        Lower,
    )
    .record();
    for (devices, (rate, p99)) in &curve {
        Figure::new(
            AREA,
            &format!("{devices} devices, packs of 10: readings/s"),
            *rate,
            "readings/s",
            Higher,
        )
        .record();
        Figure::new(
            AREA,
            &format!("{devices} devices, packs of 10: p99 of a POST"),
            *p99,
            "ms",
            Lower,
        )
        .record();
    }
    let as_points = |pick: fn(&(f64, f64)) -> f64| -> Vec<(f64, f64)> {
        curve
            .iter()
            .map(|(d, point)| (*d as f64, pick(point)))
            .collect()
    };
    let x = "devices (HTTP, packs of 10 readings)";
    let rate_chart = Chart {
        title: "Ingest rate as devices grow",
        x,
        y: "readings/s",
        x_scale: "log",
    };
    record_series(&rate_chart, "fogbank, HTTP", &as_points(|p| p.0));
    let p99_chart = Chart {
        title: "Ingest p99 as devices grow",
        x,
        y: "p99 of a POST, ms",
        x_scale: "log",
    };
    record_series(&p99_chart, "fogbank, HTTP", &as_points(|p| p.1));
    if stored != ingested {
        eprintln!("MISMATCH: {ingested} acknowledged but {stored} stored");
        std::process::exit(1);
    }
}
