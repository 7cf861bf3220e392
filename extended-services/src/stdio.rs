//! A guest's standard output and error, as lines of its service log.
//!
//! Languages with a runtime of their own print rather than call `log`: a
//! Python service's uncaught exception is a traceback on stderr, and then
//! the call traps with nothing more useful than `unreachable`. So what a
//! guest writes is split into lines and kept like its `log` calls (stdout
//! at info, stderr at error), through the same gate: each line cut, at
//! most [`STDIO_LINES_PER_SECOND`], the rest counted. A line still open
//! when the instance goes is kept then.

use std::sync::Arc;

use parking_lot::Mutex;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::rate::{LogGate, MAX_LOG_BYTES};
use crate::shared::{LogLevel, Shared};

/// Lines a second of each stream: a Python traceback is ~10–40 lines,
/// which must come through whole.
pub const STDIO_LINES_PER_SECOND: u32 = 64;

/// One of the guest's two output streams; every handle the guest opens on
/// it writes to the same line buffer.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    lines: Arc<Mutex<Lines>>,
}

struct Lines {
    shared: Arc<Shared>,
    level: LogLevel,
    gate: LogGate,
    partial: Vec<u8>,
}

impl GuestOutput {
    pub(crate) fn new(shared: Arc<Shared>, level: LogLevel) -> Self {
        GuestOutput {
            lines: Arc::new(Mutex::new(Lines {
                shared,
                level,
                gate: LogGate::new(STDIO_LINES_PER_SECOND),
                partial: Vec::new(),
            })),
        }
    }
}

impl Lines {
    fn write(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&bytes[..end]);
            self.emit();
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
        // A guest that never ends its line does not grow the buffer.
        if self.partial.len() > MAX_LOG_BYTES {
            self.emit();
        }
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.partial)
            .trim_end_matches('\r')
            .to_owned();
        self.partial.clear();
        if let Some(line) = self.gate.admit(line, self.shared.steady_micros()) {
            self.shared.log(self.level, line);
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    /// The host links WASI 0.2 only (`add_to_linker_sync`); the 0.3 path
    /// that asks for this writes nowhere.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.lines.lock().write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    fn shared() -> Arc<Shared> {
        let manifest = Manifest::parse("name = \"py\"\nversion = \"1.0.0\"\n").unwrap();
        Arc::new(Shared::new(manifest, "sha256:00".into(), "gw".into()))
    }

    #[test]
    fn lines_split_across_writes_and_the_last_open_one_are_kept() {
        let shared = shared();
        let mut stderr = GuestOutput::new(shared.clone(), LogLevel::Error);
        stderr
            .write("Traceback (most recent call last):\n  File \"app.py\", line 3\n".into())
            .unwrap();
        stderr.write("ZeroDivision".into()).unwrap();
        stderr
            .write("Error: division by zero\r\nno newline".into())
            .unwrap();
        drop(stderr);
        let lines: Vec<_> = shared
            .logs()
            .into_iter()
            .map(|l| (l.level, l.message))
            .collect();
        assert_eq!(
            lines,
            [
                (
                    LogLevel::Error,
                    "Traceback (most recent call last):".to_owned()
                ),
                (LogLevel::Error, "  File \"app.py\", line 3".to_owned()),
                (
                    LogLevel::Error,
                    "ZeroDivisionError: division by zero".to_owned()
                ),
                (LogLevel::Error, "no newline".to_owned()),
            ]
        );
    }

    #[test]
    fn a_flood_is_cut_and_counted() {
        let shared = shared();
        let mut stdout = GuestOutput::new(shared.clone(), LogLevel::Info);
        stdout.write("x".repeat(10 * MAX_LOG_BYTES).into()).unwrap();
        stdout.write("line\n".repeat(1000).into()).unwrap();
        let logs = shared.logs();
        assert!(logs.iter().all(|l| l.message.len() <= MAX_LOG_BYTES + 3));
        assert!(
            logs.len() <= STDIO_LINES_PER_SECOND as usize + 1,
            "{}",
            logs.len()
        );
    }
}
