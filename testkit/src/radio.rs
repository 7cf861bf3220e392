//! A radio's serial line: two pseudo-terminals joined by `socat`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `socat` joining two ptys, linked at `radio` (the gateway's end) and
/// `sim` (the simulator's).
pub struct PtyPair {
    child: Child,
    pub radio: PathBuf,
    pub sim: PathBuf,
}

impl PtyPair {
    pub fn start(dir: &Path) -> PtyPair {
        let (radio, sim) = (dir.join("radio"), dir.join("sim"));
        let child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", radio.display()))
            .arg(format!("pty,raw,echo=0,link={}", sim.display()))
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is installed (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(radio.exists() && sim.exists()) {
            assert!(Instant::now() < deadline, "socat made no ptys");
            std::thread::sleep(Duration::from_millis(20));
        }
        PtyPair { child, radio, sim }
    }

    /// Unplugs the dongle: both ptys go away.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.radio);
        let _ = std::fs::remove_file(&self.sim);
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        self.stop();
    }
}
