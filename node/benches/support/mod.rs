//! Pieces the benchmarks share.

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
