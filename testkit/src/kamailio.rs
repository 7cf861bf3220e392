//! A real Kamailio as the IMS core: `deploy/kamailio/kamailio.cfg`
//! (registrar, proxy, presence server) with its address, db_text
//! directory and control socket moved to a temporary directory, the
//! subscribers a test names, and `kamcmd` to read its bindings.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The db_text tables the configuration uses; their header lines come
/// from Kamailio's own files.
const TABLES: [&str; 5] = [
    "subscriber",
    "presentity",
    "active_watchers",
    "watchers",
    "xcap",
];

pub struct Kamailio {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    config: PathBuf,
}

impl Kamailio {
    /// Starts on a free port with these subscribers (`user`, `password`)
    /// and digest `algorithm` (`MD5`, `SHA-256`).
    pub fn start(dir: &Path, subscribers: &[(&str, &str)], algorithm: &str) -> Self {
        Self::start_on(crate::free_udp_tcp_port(), dir, subscribers, algorithm)
    }

    /// The same on a given port (a registrar that comes up late).
    pub fn start_on(port: u16, dir: &Path, subscribers: &[(&str, &str)], algorithm: &str) -> Self {
        let db = dir.join("db");
        std::fs::create_dir_all(&db).unwrap();
        let headers = Path::new("/usr/share/kamailio/dbtext/kamailio");
        let read = |table: &str| {
            std::fs::read_to_string(headers.join(table)).unwrap_or_else(|e| {
                panic!("Kamailio's db_text tables ({table}): {e}; apt-get install kamailio")
            })
        };
        let header = |table: &str| read(table).lines().next().unwrap_or_default().to_owned();
        // Every table's version, as Kamailio ships them.
        std::fs::write(db.join("version"), read("version")).unwrap();
        for table in TABLES {
            let mut text = header(table) + "\n";
            if table == "subscriber" {
                for (id, (user, password)) in subscribers.iter().enumerate() {
                    text += &format!("{}:{user}:iot.local:{password}:x:x\n", id + 1);
                }
            }
            std::fs::write(db.join(table), text).unwrap();
        }
        let ctl = dir.join("ctl");
        let config = include_str!("../../deploy/kamailio/kamailio.cfg")
            .replace("127.0.0.1:5060", &format!("127.0.0.1:{port}"))
            .replace(
                "text:///etc/kamailio/fogbank-db",
                &format!("text://{}", db.display()),
            )
            .replace(
                "unix:/run/kamailio/kamailio_ctl",
                &format!("unix:{}", ctl.display()),
            )
            .replace(
                "modparam(\"auth\", \"algorithm\", \"MD5\")",
                &format!("modparam(\"auth\", \"algorithm\", \"{algorithm}\")"),
            );
        let config_path = dir.join("kamailio.cfg");
        std::fs::write(&config_path, config).unwrap();
        Self::run(port, dir, config_path)
    }

    fn run(port: u16, dir: &Path, config: PathBuf) -> Self {
        use std::os::unix::process::CommandExt;
        let child = Command::new("kamailio")
            .args([
                "-f",
                config.to_str().unwrap(),
                "-DD",
                "-E",
                "-Y",
                dir.to_str().unwrap(),
            ])
            // Kamailio forks its workers: a group of their own is killed
            // as one.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("kamailio.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("kamailio starts (scripts/test installs it)");
        let kamailio = Kamailio {
            child,
            port,
            dir: dir.to_owned(),
            config,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while kamailio.ctl(&["core.version"]).is_none() {
            assert!(
                Instant::now() < deadline,
                "Kamailio did not come up: {}",
                std::fs::read_to_string(dir.join("kamailio.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        kamailio
    }

    /// Kills it (every binding is lost: they live in memory).
    pub fn kill(mut self) -> (u16, PathBuf, PathBuf) {
        self.stop();
        let _ = std::fs::remove_file(self.dir.join("ctl"));
        (self.port, self.dir.clone(), self.config.clone())
    }

    /// Starts again what [`kill`](Self::kill) stopped.
    pub fn restart((port, dir, config): (u16, PathBuf, PathBuf)) -> Self {
        Self::run(port, &dir, config)
    }

    fn ctl(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("kamcmd")
            .arg("-s")
            .arg(format!("unix:{}", self.dir.join("ctl").display()))
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The seconds left of each binding, by address of record.
    pub fn expires(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut aor = String::new();
        for line in self.ctl(&["ul.dump"]).unwrap_or_default().lines() {
            let line = line.trim();
            if let Some(a) = line.strip_prefix("AoR: ") {
                aor = a.to_owned();
            } else if let Some(e) = line.strip_prefix("Expires: ")
                && let Ok(secs) = e.parse()
            {
                out.push((aor.clone(), secs));
            }
        }
        out
    }

    /// The Contact of every binding.
    pub fn contacts(&self) -> Vec<String> {
        self.ctl(&["ul.dump"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Address: ").map(str::to_owned))
            .collect()
    }

    /// The addresses of record it holds bindings for.
    pub fn aors(&self) -> Vec<String> {
        let mut aors: Vec<String> = self
            .ctl(&["ul.dump"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("AoR: ").map(str::to_owned))
            .collect();
        aors.sort();
        aors
    }

    pub fn registrar(&self) -> String {
        format!("sip:127.0.0.1:{}", self.port)
    }
}

impl Kamailio {
    /// SIGKILL to the main process and every worker.
    fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
}
