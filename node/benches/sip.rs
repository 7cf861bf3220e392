//! SIP federation benchmark: a release gateway under Debian's Kamailio
//! (registrar, proxy, presence server) with 1,000 thing services — its
//! campus simulator runs 20 buildings of 10 floors, each floor a device of
//! five thing services reading every second — and SIPp as the IMS
//! applications.
//!
//!   cargo bench -p fogbank --bench sip   (or ./scripts/bench)
//!
//! Figures: time until all 1,001 addresses of record are registered
//! (paced at 100 per second by design), beside SIPp registering 1,000
//! addresses itself as fast as it can; SUBSCRIBE → first NOTIFY through
//! Kamailio, p50/p99 (with BENCH_PRESENCE=1, beside the same fetch
//! answered by Kamailio's own presence server from what a second gateway
//! PUBLISHed); NOTIFYs per second with 1,000 held subscriptions (one reading
//! per second each), the gateway's CPU and memory.
//! Settings: BENCH_SECS (10), BENCH_FETCHES (300), BENCH_PRESENCE (0).

use fogbank_testkit as testkit;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::Kamailio;
use testkit::bench::{Better::*, Chart, Figure, Process, record_latencies, setting, status_kib};

const BUILDINGS: u32 = 20;
const FLOORS: u32 = 10;
const KINDS: [&str; 5] = ["temperature", "humidity", "light", "motion", "lamp"];

fn get(url: &str) -> serde_json::Value {
    ureq::get(url)
        .call()
        .ok()
        .and_then(|r| r.into_json().ok())
        .unwrap_or_default()
}

fn things() -> Vec<String> {
    let mut all = Vec::new();
    for b in 0..BUILDINGS {
        let building = (b'a' + b as u8) as char;
        for floor in 1..=FLOORS {
            for kind in KINDS {
                all.push(format!(
                    "bench.sim.building-{building}-floor-{floor}.{kind}"
                ));
            }
        }
    }
    all
}

fn scenario(name: &str) -> PathBuf {
    testkit::package_file("benches/sipp").join(name)
}

/// A SIPp injection file naming one user part per call.
fn injection(dir: &Path, name: &str, users: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::from("SEQUENTIAL\n");
    for user in users {
        text += &format!("{user};\n");
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs SIPp to the end; whether every call passed. (A fetch's NOTIFY
/// and 200 may cross in the core, and SIPp fails a call whose 200 comes
/// while it answers the NOTIFY: such calls are left out of the figures
/// and counted.)
fn sipp(dir: &Path, core: &str, scenario: &Path, args: &[&str]) -> bool {
    Command::new("sipp")
        .arg(core)
        .arg("-sf")
        .arg(scenario)
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &testkit::free_udp_port().to_string(),
        ])
        .args(["-timeout", "120s", "-nostdin"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sipp runs (apt-get install sip-tester)")
        .success()
}

/// From a SIPp message trace: for each call, milliseconds from the
/// authenticated SUBSCRIBE (CSeq 2) sent to the first NOTIFY received.
fn subscribe_to_notify(trace: &str) -> Vec<f64> {
    use std::collections::HashMap;
    let seconds = |stamp: &str| -> Option<f64> {
        // "2026-12-04 20:53:22.028120": the time of day is enough.
        let time = stamp.split_whitespace().nth(1)?;
        let mut parts = time.split(':');
        let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
        Some(
            h.parse::<f64>().ok()? * 3600.0
                + m.parse::<f64>().ok()? * 60.0
                + s.parse::<f64>().ok()?,
        )
    };
    let mut sent: HashMap<String, f64> = HashMap::new();
    let mut latencies = Vec::new();
    for block in trace
        .split("----------------------------------------------- ")
        .skip(1)
    {
        let Some((head, message)) = block.split_once("\n\n") else {
            continue;
        };
        let Some(at) = head.lines().next().and_then(seconds) else {
            continue;
        };
        let Some(call) = message
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID: "))
            .map(str::to_owned)
        else {
            continue;
        };
        if head.contains("message sent")
            && message.contains("CSeq: 2 SUBSCRIBE")
            && message.starts_with("SUBSCRIBE")
        {
            sent.insert(call, at);
        } else if head.contains("message received")
            && message.starts_with("NOTIFY")
            && let Some(start) = sent.remove(&call)
        {
            latencies.push((at - start) * 1000.0);
        }
    }
    latencies
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    testkit::bench::percentile(&values, p)
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ")".
    (ticks(11) + ticks(12)) / 100.0
}

/// A release gateway whose simulator runs the campus, under `kamailio`
/// with `sip_extra` in its `[sip]`; its SIP status URL.
fn start_gateway(
    dir: &Path,
    name: &str,
    kamailio: &Kamailio,
    sip_extra: &str,
) -> (Process, String) {
    let http = testkit::free_port();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[sim]\nenabled = true\nbuildings = {BUILDINGS}\nfloors = {FLOORS}\ninterval_ms = 1000\n\
             [sip]\nregistrar = \"{}\"\ndomain = \"iot.local\"\npassword = \"secret\"\n\
             listen = \"127.0.0.1:{}\"\n{sip_extra}",
            kamailio.registrar(),
            testkit::free_udp_port(),
        ),
    )
    .unwrap();
    let process = Process(
        testkit::bench::gateway_command(http, &dir.join(name))
            .arg("--config")
            .arg(&config)
            .spawn()
            .unwrap(),
    );
    (
        process,
        format!("http://127.0.0.1:{http}/api/v1/federation/sip"),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("sip: bench");
        return;
    }
    let secs: u64 = setting("BENCH_SECS", 10, 3);
    let fetches: u64 = setting("BENCH_FETCHES", 300, 100);
    let dir = tempfile::tempdir().unwrap();
    let kamailio = Kamailio::start(
        &dir.path().join("kamailio"),
        &[("bench", "secret"), ("alice", "wonderland")],
        "MD5",
    );
    let core = format!("127.0.0.1:{}", kamailio.port);
    let all = things();

    // The reference: SIPp registering 1,000 addresses as fast as it can.
    let sipp_dir = dir.path().join("sipp");
    std::fs::create_dir_all(&sipp_dir).unwrap();
    let users: Vec<String> = (0..1000).map(|i| format!("bench.sipp.{i}")).collect();
    let inf = injection(&sipp_dir, "users.csv", &users);
    let begin = Instant::now();
    let registered_all = sipp(
        &sipp_dir,
        &core,
        &scenario("register.xml"),
        &[
            "-inf",
            inf.to_str().unwrap(),
            "-m",
            "1000",
            "-r",
            "1000",
            "-l",
            "200",
        ],
    );
    let sipp_register = begin.elapsed();
    assert!(
        registered_all,
        "SIPp could not register its 1,000 addresses"
    );

    // The gateway registering its 1,001 addresses of record.
    let started = Instant::now();
    let (gateway, status_url) = start_gateway(dir.path(), "registering", &kamailio, "");
    let deadline = Instant::now() + Duration::from_secs(180);
    let want = all.len() + 1;
    loop {
        let registered = get(&status_url)["registrations"].as_array().map_or(0, |r| {
            r.iter().filter(|r| r["state"] == "registered").count()
        });
        if registered >= want {
            break;
        }
        if Instant::now() > deadline {
            let status = get(&status_url);
            let stuck: Vec<&serde_json::Value> = status["registrations"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter(|r| r["state"] != "registered")
                        .take(5)
                        .collect()
                })
                .unwrap_or_default();
            panic!("{registered} of {want} registered; for example {stuck:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let registered = started.elapsed();

    // SUBSCRIBE → first NOTIFY, the gateway as notifier.
    let sample: Vec<String> = all.iter().cycle().take(fetches as usize).cloned().collect();
    let fetch_inf = injection(&sipp_dir, "fetch.csv", &sample);
    let count = fetches.to_string();
    // SIPp's response-time trace counts whole milliseconds; its message
    // trace has microseconds.
    let fetch = |event: &str| {
        let trace = sipp_dir.join(format!("fetch-{event}.messages"));
        let passed = sipp(
            &sipp_dir,
            &core,
            &scenario("fetch.xml"),
            &[
                "-inf",
                fetch_inf.to_str().unwrap(),
                "-m",
                &count,
                "-r",
                "50",
                "-l",
                "20",
                "-key",
                "event",
                event,
                "-trace_msg",
                "-message_file",
                trace.to_str().unwrap(),
            ],
        );
        (
            subscribe_to_notify(&std::fs::read_to_string(&trace).unwrap_or_default()),
            passed,
        )
    };
    let (ours, _) = fetch("fogbank-thing");

    // 1,000 subscriptions held, a reading a second each.
    let inf = injection(&sipp_dir, "hold.csv", &all);
    let hold_deadline = Instant::now() + Duration::from_secs(120);
    let mut holder = Process(
        Command::new("sipp")
            .arg(&core)
            .arg("-sf")
            .arg(scenario("hold.xml"))
            .args([
                "-inf",
                inf.to_str().unwrap(),
                "-m",
                "1000",
                "-r",
                "200",
                "-l",
                "1000",
            ])
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &testkit::free_udp_port().to_string(),
                "-nostdin",
            ])
            .current_dir(&sipp_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    loop {
        let held = get(&status_url)["subscriptions"]
            .as_array()
            .map_or(0, Vec::len);
        if held >= all.len() {
            break;
        }
        assert!(
            holder.0.try_wait().unwrap().is_none(),
            "SIPp stopped holding subscriptions at {held}"
        );
        assert!(Instant::now() < hold_deadline, "{held} subscriptions");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let pid = gateway.0.id();
    let notifications = || {
        get(&status_url)["counters"]["notifications"]
            .as_u64()
            .unwrap_or(0)
    };
    let (n0, cpu0, t0) = (notifications(), cpu_secs(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (n1, cpu1, elapsed) = (notifications(), cpu_secs(pid), t0.elapsed().as_secs_f64());
    let notify_rate = (n1 - n0) as f64 / elapsed;
    let failed = get(&status_url)["counters"]["notifications_failed"]
        .as_u64()
        .unwrap_or(0);
    drop(holder);
    let ours_samples = ours.clone();
    let (n_ours, p50, p99) = (
        ours.len(),
        percentile(ours.clone(), 0.5),
        percentile(ours, 0.99),
    );
    // Read while the gateway runs: a process gone has no status.
    let peak_rss_mib = status_kib(pid, "VmHWM:") as f64 / 1024.0;
    println!(
        "SIP federation, {} cores, {} things (release):",
        testkit::bench::cores(),
        all.len()
    );
    println!(
        "  REGISTER {want} AoRs: all registered {:.1} s after start (paced 100/s) | SIPp registering 1,000 itself: {:.2} s",
        registered.as_secs_f64(),
        sipp_register.as_secs_f64()
    );
    println!(
        "  SUBSCRIBE -> first NOTIFY through Kamailio (fogbank-thing, {n_ours} of {fetches} fetches complete): p50 {p50:.2} ms, p99 {p99:.2} ms"
    );
    println!(
        "  1,000 subscriptions, a reading/s each: {notify_rate:.0} NOTIFY/s ({:.0} % of the readings), {failed} failed, gateway CPU {:.0} % of a core, RSS {} MiB (peak {peak_rss_mib:.0} MiB)",
        notify_rate / all.len() as f64 * 100.0,
        (cpu1 - cpu0) / elapsed * 100.0,
        status_kib(pid, "VmRSS:") / 1024,
    );
    drop(gateway);
    const AREA: &str = "Federation: IMS over SIP";
    Figure::new(
        AREA,
        &format!("{want} addresses of record registered, from the start (paced 100/s)"),
        registered.as_secs_f64(),
        "s",
        Lower,
    )
    .against(
        "SIPp registering 1 000 addresses itself",
        sipp_register.as_secs_f64(),
    )
    .record();
    Figure::new(
        AREA,
        "SUBSCRIBE → first NOTIFY through Kamailio, p50",
        p50,
        "ms",
        Lower,
    )
    .record();
    Figure::new(
        AREA,
        "SUBSCRIBE → first NOTIFY through Kamailio, p99",
        p99,
        "ms",
        Lower,
    )
    .record();
    Figure::new(
        AREA,
        &format!(
            "NOTIFY/s for {} held subscriptions, a reading/s each",
            all.len()
        ),
        notify_rate,
        "NOTIFY/s",
        Higher,
    )
    .record();
    Figure::new(AREA, "NOTIFYs failed", failed as f64, "NOTIFYs", Lower).record();
    Figure::new(
        AREA,
        "gateway CPU while notifying",
        (cpu1 - cpu0) / elapsed * 100.0,
        "% of a core",
        Lower,
    )
    .record();
    Figure::new(AREA, "gateway peak RSS", peak_rss_mib, "MiB", Lower).record();
    let chart = Chart {
        title: "SIP: SUBSCRIBE to first NOTIFY through Kamailio",
        x: "quantile",
        y: "ms",
        x_scale: "quantile",
    };
    record_latencies(&chart, "fogbank-thing", &ours_samples);

    // The reference: the same fetch answered by Kamailio's presence
    // server, from what a gateway (registering nothing) PUBLISHed. Off
    // unless BENCH_PRESENCE=1: Debian's Kamailio 5.6 with db_text presence
    // crashed here under these fetches.
    if setting("BENCH_PRESENCE", 0, 0) == 0 {
        return;
    }
    let presence = format!(
        "presence_server = \"{}\"\nregister_things = \"none\"\n",
        kamailio.registrar()
    );
    let (publisher, status_url) = start_gateway(dir.path(), "publishing", &kamailio, &presence);
    let deadline = Instant::now() + Duration::from_secs(180);
    while get(&status_url)["counters"]["publications"]
        .as_u64()
        .unwrap_or(0)
        < all.len() as u64
    {
        assert!(Instant::now() < deadline, "not all published");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (theirs, _) = fetch("presence");
    drop(publisher);
    assert!(!theirs.is_empty(), "no response times traced");
    let (k50, k99) = (percentile(theirs.clone(), 0.5), percentile(theirs, 0.99));
    println!(
        "  the same fetch from Kamailio's presence server: p50 {k50:.2} ms, p99 {k99:.2} ms | ratio p50 {:.2}, p99 {:.2}",
        p50 / k50,
        p99 / k99
    );
}
