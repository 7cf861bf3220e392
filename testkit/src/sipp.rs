//! SIPp (`sip-tester`) playing an IMS application: one scenario file, one
//! call, against a host:port. Every message it sent and received is kept
//! (its message trace) for the test to read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sipp {
    child: Child,
    messages: PathBuf,
}

/// How a SIPp run ended.
pub struct SippRun {
    pub passed: bool,
    /// Every message sent and received.
    pub messages: String,
}

impl Sipp {
    /// Runs `scenario` (`calls` times; a server scenario waits for them)
    /// from 127.0.0.1:`port` towards `remote`, with `-s service`,
    /// `-key name value` for each of `keys`, and `args`.
    pub fn start(
        scenario: &Path,
        remote: &str,
        port: u16,
        service: &str,
        keys: &[(&str, &str)],
        args: &[&str],
        dir: &Path,
    ) -> Sipp {
        std::fs::create_dir_all(dir).unwrap();
        let name = scenario.file_stem().unwrap().to_string_lossy().into_owned();
        let messages = dir.join(format!("{name}-{port}.messages"));
        let mut command = Command::new("sipp");
        command
            .arg(remote)
            .arg("-sf")
            .arg(scenario)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "-s",
                service,
                "-timeout",
                "40s",
                "-timeout_error",
                "-nostdin",
            ])
            .args(["-trace_msg", "-message_file"])
            .arg(&messages)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !args.contains(&"-m") {
            command.args(["-m", "1"]);
        }
        command.args(args);
        for (key, value) in keys {
            command.args(["-key", key, value]);
        }
        let child = command
            .spawn()
            .expect("sipp starts (scripts/test installs sip-tester)");
        Sipp { child, messages }
    }

    /// [`start`](Self::start) from a free port, and
    /// [`finish`](Self::finish) within 20 s.
    pub fn run(
        scenario: &Path,
        remote: &str,
        service: &str,
        keys: &[(&str, &str)],
        args: &[&str],
        dir: &Path,
    ) -> SippRun {
        Self::start(
            scenario,
            remote,
            crate::free_udp_port(),
            service,
            keys,
            args,
            dir,
        )
        .finish(Duration::from_secs(20))
    }

    /// Waits for the call to end (within `limit`).
    pub fn finish(mut self, limit: Duration) -> SippRun {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        SippRun {
            passed: status.is_some_and(|s| s.success()),
            messages: std::fs::read_to_string(&self.messages).unwrap_or_default(),
        }
    }
}

impl SippRun {
    /// The messages SIPp received, in order, from its message trace
    /// (blocks headed by a dashed line, then "… message received …").
    pub fn received(&self) -> Vec<String> {
        self.messages
            .split("-----------------------------------------------")
            .filter_map(|block| {
                let (head, message) = block.split_once("\n\n")?;
                head.contains("message received")
                    .then(|| message.trim().to_owned())
            })
            .collect()
    }

    /// The received requests of `method`.
    pub fn requests(&self, method: &str) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|m| m.starts_with(&format!("{method} ")))
            .collect()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
