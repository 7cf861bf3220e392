//! One real gateway: the `fogbank` binary in a fresh data dir on a free
//! HTTP port, its log forwarded to the test's output, and an HTTP client's
//! view of its answers.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

pub struct Gateway {
    pub child: Child,
    /// The address its HTTP listens on (loopback, or a namespace's).
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    log_errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _tmp: Option<tempfile::TempDir>,
}

pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub location: Option<String>,
    pub www_authenticate: Option<String>,
    pub allow: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// The numbers (`v`) of a SenML JSON pack, in its order.
    pub fn senml_numbers(&self) -> Vec<f64> {
        self.json()
            .as_array()
            .unwrap_or_else(|| panic!("not a SenML pack: {}", String::from_utf8_lossy(&self.body)))
            .iter()
            .map(|r| r["v"].as_f64().unwrap())
            .collect()
    }
    /// Asserts an RFC 9457 problem with this status.
    pub fn assert_problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.content_type, "application/problem+json");
        let problem = self.json();
        assert_eq!(problem["status"], status);
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:fogbank:problem:")
        );
        assert!(!problem["detail"].as_str().unwrap().is_empty());
        problem
    }
}

impl Gateway {
    /// A demo gateway `gw-t` in a fresh data dir.
    pub fn demo() -> Self {
        let gateway = Self::start(&["--demo"], &[("FOGBANK_GATEWAY_ID", "gw-t")]);
        gateway.wait_for_campus("gw-t");
        gateway
    }

    /// The simulator announces its 40 thing services and first readings
    /// (one batch) right after start-up; HTTP may answer before that.
    pub fn wait_for_campus(&self, gateway: &str) {
        self.wait_for(
            "/api/v1/things?available=true",
            "the simulated campus",
            |a| a.status == 200 && a.json().as_array().is_some_and(|t| t.len() == 40),
        );
        let lamp = format!("/api/v1/things/{gateway}.sim.building-b-floor-4.lamp/reading");
        self.wait_for(&lamp, "the first readings", |a| a.status == 200);
    }

    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let mut gateway = Self::start_in(&data_dir, args, env);
        gateway._tmp = Some(tmp);
        gateway
    }

    /// Starts on `data_dir`, retrying if the chosen port was taken meanwhile.
    pub fn start_in(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on(None, data_dir, args, env)
    }

    /// [`Gateway::start_in`] on `host` (a network namespace of a
    /// [`crate::netns::Lan`]), or on this host's loopback.
    pub fn start_on(
        host: Option<&crate::netns::Host>,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let ip = host.map_or("127.0.0.1", |h| h.ip.as_str());
        for _ in 0..5 {
            let port = free_port();
            let listen = format!("{ip}:{port}");
            let mut command = match host {
                Some(host) => host.command(crate::binary()),
                None => Command::new(crate::binary()),
            };
            command
                .arg("run")
                .args(["--data-dir", data_dir.to_str().unwrap(), "--http", &listen])
                .args(args)
                .env_remove("FOGBANK_ADMIN_TOKEN")
                .env("FOGBANK_LOG", "info,rumqttd=warn")
                // No embedded broker on 1883 and no CoAP on 5683 unless a
                // test asks for them.
                .env("FOGBANK_MQTT", "off")
                .env("FOGBANK_COAP", "off")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            // An empty value removes the variable (e.g. the default FOGBANK_MQTT=off).
            for (k, v) in env {
                if v.is_empty() {
                    command.env_remove(k);
                } else {
                    command.env(k, v);
                }
            }
            let mut child = command.spawn().expect("fogbank starts");
            let stderr = child.stderr.take().unwrap();
            let name = env
                .iter()
                .find(|(k, _)| *k == "FOGBANK_GATEWAY_ID")
                .map_or("gateway", |(_, v)| v);
            let log = forward_log(stderr, name);
            let mut gateway = Gateway {
                child,
                host: ip.to_owned(),
                port,
                data_dir: data_dir.to_owned(),
                log_errors: log.errors,
                _tmp: None,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if log.cannot_listen.try_recv().is_ok() {
                    break;
                }
                if let Ok(Some(status)) = gateway.child.try_wait() {
                    panic!("fogbank exited early: {status}");
                }
                if gateway.get("/health").status == 200 {
                    return gateway;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = gateway.child.kill();
            let _ = gateway.child.wait();
        }
        panic!("fogbank did not come up");
    }

    /// The lines this gateway has logged at ERROR so far.
    pub fn logged_errors(&self) -> Vec<String> {
        self.log_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Answer {
        http(method, &self.url(path), headers, body)
    }

    /// An authorised write that may take up to `limit` to be answered.
    pub fn write_within(
        &self,
        limit: Duration,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Answer {
        let auth = format!("Bearer {}", self.token());
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", content_type),
        ];
        http_within(limit, method, &self.url(path), &headers, Some(body))
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, &[], None)
    }

    /// An authorised write with a JSON or SenML body.
    pub fn write(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Answer {
        self.write_within(HTTP_TIMEOUT, method, path, content_type, body)
    }

    /// Posts a SenML JSON pack with the admin token.
    pub fn post_senml(&self, path: &str, pack: &serde_json::Value) -> Answer {
        self.write(
            "POST",
            path,
            "application/senml+json",
            pack.to_string().as_bytes(),
        )
    }

    /// Waits until `check` passes on a GET of `path`.
    pub fn wait_for(&self, path: &str, what: &str, check: impl Fn(&Answer) -> bool) -> Answer {
        wait_for_answer(|| self.get(path), Duration::from_secs(10), what, check)
    }

    /// How many readings of `id` the gateway holds (0 while it is unknown).
    pub fn history_len(&self, id: &str) -> usize {
        let answer = self.get(&format!("/api/v1/things/{id}/readings?from=0&limit=100000"));
        if answer.status != 200 {
            return 0;
        }
        answer.json().as_array().map_or(0, Vec::len)
    }

    /// The values (`v`) of `id`'s readings from `from` to `to` (Unix
    /// seconds), in time order, read in pages of 100,000 — the API's
    /// largest.
    pub fn history_values(&self, id: &str, from: f64, to: f64) -> Vec<f64> {
        let mut values = Vec::new();
        let mut from = from;
        loop {
            let answer = self.get(&format!(
                "/api/v1/things/{id}/readings?from={from:.6}&to={to:.6}&limit=100000"
            ));
            assert_eq!(
                answer.status,
                200,
                "{id}'s history: {}",
                String::from_utf8_lossy(&answer.body)
            );
            let page = answer.json();
            let records = page.as_array().expect("a SenML pack");
            values.extend(records.iter().map(|r| r["v"].as_f64().expect("a number")));
            match records.last() {
                Some(last) if records.len() == 100_000 => {
                    from = last["t"].as_f64().expect("a time") + 1e-6;
                }
                _ => return values,
            }
        }
    }

    /// Sends an actuation (a JSON `body` PUT to `path`) until `seen` — a
    /// watcher such as `mosquitto_sub`, just started and maybe not yet
    /// subscribed — has seen one command; returns what it saw.
    pub fn actuate_until_seen(
        &self,
        path: &str,
        body: &[u8],
        seen: std::thread::JoinHandle<Vec<String>>,
    ) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !seen.is_finished() {
            let answer = self.write("PUT", path, "application/json", body);
            assert_eq!(
                answer.status,
                200,
                "{}",
                String::from_utf8_lossy(&answer.body)
            );
            assert!(Instant::now() < deadline, "no command reached the device");
            std::thread::sleep(Duration::from_millis(200));
        }
        seen.join().expect("the watcher thread finishes")
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGHUP: the gateway reads its config again.
    pub fn hangup(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success(), "SIGHUP to {pid}");
    }

    /// SIGTERM, then the exit status (within `limit`).
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "fogbank did not stop within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP exchange, whatever the status; a transport failure is status 0.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Answer {
    http_within(HTTP_TIMEOUT, method, url, headers, body)
}

/// How long an exchange may take before the test calls the gateway stuck.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// [`http`] with its own time limit, for an exchange that is slow by nature.
pub fn http_within(
    limit: Duration,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Answer {
    let mut request = ureq::request(method, url).timeout(limit);
    for (k, v) in headers {
        request = request.set(k, v);
    }
    let result = match body {
        Some(body) => request.send_bytes(body),
        None => request.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => {
            return Answer {
                status: 0,
                content_type: String::new(),
                location: None,
                www_authenticate: None,
                allow: None,
                body: t.to_string().into_bytes(),
            };
        }
    };
    let status = response.status();
    let content_type = response.header("content-type").unwrap_or("").to_owned();
    let location = response.header("location").map(str::to_owned);
    let www_authenticate = response.header("www-authenticate").map(str::to_owned);
    let allow = response.header("allow").map(str::to_owned);
    let mut body = Vec::new();
    // An event stream never ends: take the headers only.
    if content_type != "text/event-stream" {
        response.into_reader().read_to_end(&mut body).unwrap();
    }
    Answer {
        status,
        content_type,
        location,
        www_authenticate,
        allow,
        body,
    }
}

/// Asks again until `check` passes, for at most `limit`.
pub fn wait_for_answer(
    mut ask: impl FnMut() -> Answer,
    limit: Duration,
    what: &str,
    check: impl Fn(&Answer) -> bool,
) -> Answer {
    let deadline = Instant::now() + limit;
    loop {
        let answer = ask();
        if check(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Forwards a process's log to the test output, each line named after
/// the process (the logs of several are interleaved). The log's ERROR
/// lines are kept; the receiver hears of a failure to listen.
pub struct ForwardedLog {
    pub cannot_listen: std::sync::mpsc::Receiver<()>,
    pub errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub fn forward_log(stderr: std::process::ChildStderr, name: &str) -> ForwardedLog {
    let name = name.to_owned();
    let (tx, cannot_listen) = std::sync::mpsc::channel();
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = errors.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[{name}] {line}");
            if line.contains("cannot listen") || line.contains("cannot bind") {
                let _ = tx.send(());
            }
            // tracing's text format: "{time} ERROR {target}: ..." (no
            // colours: stderr is a pipe).
            if line.split_whitespace().nth(1) == Some("ERROR") {
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        }
    });
    ForwardedLog {
        cannot_listen,
        errors,
    }
}

/// The value of the sample `name` (with its labels, as exposed:
/// `fogbank_heap_bytes{state="free"}`) in a Prometheus exposition `text`,
/// if it is there.
pub fn metric_sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
