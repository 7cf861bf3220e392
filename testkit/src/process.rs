//! A peer process the tests drive by its output: an aiocoap device, say,
//! that prints one line per event (`registered at …`, `lamp on`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process whose stdout lines arrive on a channel; killed on drop.
pub struct LinePeer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl LinePeer {
    /// Starts `command` with its stdout piped to [`next_line`](Self::next_line).
    pub fn spawn(mut command: Command) -> LinePeer {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        LinePeer { child, lines }
    }

    /// Waits for a line that starts with `wanted`, skipping the others;
    /// the line, or why none came (it exited: `Disconnected`).
    pub fn wait_for_line(
        &self,
        wanted: &str,
        limit: Duration,
    ) -> Result<String, mpsc::RecvTimeoutError> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(wanted) => return Ok(line),
                Ok(_) => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Like [`wait_for_line`](Self::wait_for_line), failing the test if
    /// the line does not come within `limit`.
    pub fn expect_line(&self, wanted: &str, limit: Duration) -> String {
        self.wait_for_line(wanted, limit)
            .unwrap_or_else(|error| panic!("the peer never said {wanted:?}: {error}"))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LinePeer {
    fn drop(&mut self) {
        self.kill();
    }
}
