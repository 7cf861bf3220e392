//! A real Kamailio registrar: `deploy/kamailio/registrar.cfg` with its
//! listen address, db_text directory and control socket moved to a
//! temporary directory, one subscriber, and `kamcmd` to read its bindings.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Kamailio {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Kamailio {
    /// Starts with one subscriber and digest `algorithm` (`MD5`, `SHA-256`).
    pub fn start(dir: &Path, username: &str, password: &str, algorithm: &str) -> Self {
        Self::start_on(crate::free_udp_port(), dir, username, password, algorithm)
    }

    /// The same on a given UDP port (a registrar that comes up late).
    pub fn start_on(
        port: u16,
        dir: &Path,
        username: &str,
        password: &str,
        algorithm: &str,
    ) -> Self {
        let db = dir.join("db");
        std::fs::create_dir_all(&db).unwrap();
        let headers = Path::new("/usr/share/kamailio/dbtext/kamailio");
        let header = |table: &str| {
            std::fs::read_to_string(headers.join(table))
                .unwrap_or_else(|e| {
                    panic!("Kamailio's db_text headers ({table}): {e}; apt-get install kamailio")
                })
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        std::fs::write(
            db.join("version"),
            format!(
                "{}\n0:subscriber:7\n0:location:9\n0:location_attrs:1\n",
                header("version")
            ),
        )
        .unwrap();
        std::fs::write(
            db.join("subscriber"),
            format!(
                "{}\n1:{username}:iot.local:{password}:x:x\n",
                header("subscriber")
            ),
        )
        .unwrap();
        let ctl = dir.join("ctl");
        let config = include_str!("../../deploy/kamailio/registrar.cfg")
            .replace(
                "listen=udp:127.0.0.1:5060",
                &format!("listen=udp:127.0.0.1:{port}"),
            )
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
        let child = Command::new("kamailio")
            .args([
                "-f",
                config_path.to_str().unwrap(),
                "-DD",
                "-E",
                "-Y",
                dir.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kamailio starts (scripts/test installs it)");
        let kamailio = Kamailio {
            child,
            port,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while kamailio.ctl(&["core.version"]).is_none() {
            assert!(Instant::now() < deadline, "Kamailio did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        kamailio
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

impl Drop for Kamailio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
