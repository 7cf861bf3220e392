//! One real SD-IoT controller: `fogbank controller` in its own data dir on
//! free ports (REST over TCP, S-MANAGE over UDP), with a fixed admin token.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::gateway::{Answer, forward_log, http, wait_for_answer};
use crate::{free_port, free_udp_port};

/// The admin token every test controller is started with.
pub const CONTROLLER_TOKEN: &str = "controller-test-token-0123";

pub struct Controller {
    child: Child,
    pub http_port: u16,
    pub udp_port: u16,
    pub data_dir: PathBuf,
    config: PathBuf,
}

impl Controller {
    /// Starts on `data_dir` with `config` (TOML) beside it.
    pub fn start_in(data_dir: &Path, config: &str) -> Self {
        let config_path = data_dir.with_extension("toml");
        std::fs::write(&config_path, config).unwrap();
        Self::launch(data_dir, &config_path, free_udp_port())
    }

    fn launch(data_dir: &Path, config: &Path, udp_port: u16) -> Self {
        for _ in 0..5 {
            let http_port = free_port();
            let mut child = Command::new(crate::binary())
                .arg("controller")
                .args(["--config", config.to_str().unwrap()])
                .args(["--data-dir", data_dir.to_str().unwrap()])
                .args(["--http", &format!("127.0.0.1:{http_port}")])
                .args(["--listen", &format!("127.0.0.1:{udp_port}")])
                .env("FOGBANK_ADMIN_TOKEN", CONTROLLER_TOKEN)
                .env("FOGBANK_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("fogbank controller starts");
            let failed = forward_log(child.stderr.take().unwrap(), "controller").cannot_listen;
            let mut controller = Controller {
                child,
                http_port,
                udp_port,
                data_dir: data_dir.to_owned(),
                config: config.to_owned(),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if failed.try_recv().is_ok() {
                    break;
                }
                if let Ok(Some(status)) = controller.child.try_wait() {
                    panic!("fogbank controller exited early: {status}");
                }
                if controller.get("/health").status == 200 {
                    return controller;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = controller.child.kill();
            let _ = controller.child.wait();
        }
        panic!("fogbank controller did not come up");
    }

    /// `kill -9`, then the same controller again: same data dir, same
    /// S-MANAGE port (the gateways know it).
    pub fn restart_after_kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let again = Self::launch(&self.data_dir, &self.config, self.udp_port);
        *self = again;
    }

    /// `host:port` for the gateways' `FOGBANK_SMANAGE_CONTROLLER`.
    pub fn smanage(&self) -> String {
        format!("127.0.0.1:{}", self.udp_port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn get(&self, path: &str) -> Answer {
        http("GET", &self.url(path), &[], None)
    }

    /// An authorised write with a JSON body.
    pub fn write(&self, method: &str, path: &str, body: &serde_json::Value) -> Answer {
        let auth = format!("Bearer {CONTROLLER_TOKEN}");
        let body = body.to_string();
        http(
            method,
            &self.url(path),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
        )
    }

    pub fn wait_for(
        &self,
        path: &str,
        limit: Duration,
        what: &str,
        check: impl Fn(&Answer) -> bool,
    ) -> Answer {
        wait_for_answer(|| self.get(path), limit, what, check)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
