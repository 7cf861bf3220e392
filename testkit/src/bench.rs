//! Pieces the benchmarks measure with.

use std::process::{Child, Command};

/// A peer or gateway process, stopped with SIGTERM (so that it can clean
/// up) when the benchmark is done with it.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        // One the bench killed and reaped itself has no pid to signal.
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
        }
        let _ = self.0.wait();
    }
}

/// A release gateway `bench` without MQTT, CoAP or the local cloud, REST at
/// 127.0.0.1:`http`, logging warnings: the command, for the caller to add
/// what it measures (`--config`, `--serial154`) and spawn.
pub fn gateway_command(http: u16, data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(crate::binary());
    command
        .args([
            "run",
            "--gateway-id",
            "bench",
            "--mqtt",
            "off",
            "--coap",
            "off",
            "--p2p",
            "off",
        ])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env("FOGBANK_LOG", "warn")
        .stdout(std::process::Stdio::null());
    command
}

/// A `/proc/PID/status` field in KiB (`VmHWM:`, `VmRSS:`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The cores benchmarks share with the peers they measure against.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(0)
}

/// Runs `future` on a runtime of its own, on this thread: each client of a
/// benchmark keeps to its thread.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for a benchmark client")
        .block_on(future)
}

/// The middle value of a benchmark's rounds (the upper one of an even
/// count): a noisy moment on a small machine does not decide a figure.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The value at quantile `q` (0..=1) of `sorted` samples, nearest rank.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

// ------------------------------------------------------------ the record
//
// Every bench prints its own table for the person watching, and also
// appends what it measured, one JSON object a line, to the file named by
// `FOGBANK_BENCH_RESULTS` (`scripts/bench` sets it). `bench-report` turns
// those lines into `bench-results.json`, BENCHMARKS.md's generated tables
// and the plots. A bench run by hand, without the variable, records
// nothing.

/// Which way a figure is better, so that a ratio can be oriented: above 1
/// always means fogbank ahead of its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One measured figure, with the peer measured beside it in the same run.
#[derive(Clone, Debug)]
pub struct Figure {
    /// The bench's area, a table of its own: "MQTT ingest".
    pub area: String,
    /// What was measured: "readings/s, embedded broker".
    pub measure: String,
    pub value: f64,
    /// "readings/s", "ms", "MiB".
    pub unit: String,
    pub better: Better,
    /// The peer's name and its figure, same unit, same run.
    pub peer: Option<(String, f64)>,
}

impl Figure {
    pub fn new(area: &str, measure: &str, value: f64, unit: &str, better: Better) -> Self {
        Figure {
            area: area.to_owned(),
            measure: measure.to_owned(),
            value,
            unit: unit.to_owned(),
            better,
            peer: None,
        }
    }

    /// The same figure measured on `peer` in the same run.
    pub fn against(mut self, peer: &str, value: f64) -> Self {
        self.peer = Some((peer.to_owned(), value));
        self
    }

    /// Appends the figure to the run's record.
    pub fn record(self) {
        let (peer, peer_value) = match &self.peer {
            Some((name, value)) => (serde_json::json!(name), finite(*value)),
            None => (serde_json::Value::Null, serde_json::Value::Null),
        };
        append(serde_json::json!({
            "kind": "figure",
            "area": self.area,
            "measure": self.measure,
            "value": finite(self.value),
            "unit": self.unit,
            "better": match self.better { Better::Higher => "higher", Better::Lower => "lower" },
            "peer": peer,
            "peer_value": peer_value,
        }));
    }
}

/// Records one series of a chart: a latency distribution (`x` the
/// quantile) or a scale curve (`x` devices, gateways). Series of the same
/// `chart` are drawn together.
pub fn record_series(chart: &Chart, series: &str, points: &[(f64, f64)]) {
    let points: Vec<_> = points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| serde_json::json!([x, y]))
        .collect();
    append(serde_json::json!({
        "kind": "series",
        "chart": chart.title,
        "x": chart.x,
        "y": chart.y,
        "x_scale": chart.x_scale,
        "series": series,
        "points": points,
    }));
}

/// A chart's title and axes. `x_scale` is "quantile" (a distribution:
/// the axis spreads the nines), "log" or "linear".
pub struct Chart {
    pub title: &'static str,
    pub x: &'static str,
    pub y: &'static str,
    pub x_scale: &'static str,
}

/// Records the latency distribution of `samples` (any order) in
/// milliseconds as a series of `chart`.
pub fn record_latencies(chart: &Chart, series: &str, samples_ms: &[f64]) {
    let mut sorted = samples_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let points: Vec<_> = [0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]
        .iter()
        .map(|&q| (q, percentile(&sorted, q)))
        .collect();
    record_series(chart, series, &points);
}

fn finite(value: f64) -> serde_json::Value {
    if value.is_finite() {
        serde_json::json!(value)
    } else {
        serde_json::Value::Null
    }
}

fn append(line: serde_json::Value) {
    use std::io::Write;
    let Ok(path) = std::env::var("FOGBANK_BENCH_RESULTS") else {
        return;
    };
    let bench = std::env::var("FOGBANK_BENCH_NAME").unwrap_or_default();
    let mut line = line;
    line["bench"] = serde_json::json!(bench);
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{line}"));
    if let Err(e) = written {
        eprintln!("could not record a bench figure in {path}: {e}");
    }
}

/// Whether `scripts/bench --quick` asked for a developer's short run: each
/// bench takes fewer rounds and smaller sizes where it has no knob of its
/// own set.
pub fn quick() -> bool {
    std::env::var("FOGBANK_BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// A bench's knob: the variable `name` if set, else `full`, or `quick` in
/// a quick run.
pub fn setting<T: std::str::FromStr>(name: &str, full: T, quick_value: T) -> T {
    match std::env::var(name).ok().and_then(|v| v.parse().ok()) {
        Some(value) => value,
        None if quick() => quick_value,
        None => full,
    }
}
