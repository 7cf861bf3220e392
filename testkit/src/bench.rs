//! Pieces the benchmarks measure with.

use std::process::{Child, Command};

/// A peer or gateway process, stopped with SIGTERM (so that it can clean
/// up) when the benchmark is done with it.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
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
