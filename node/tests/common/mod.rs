//! Starts the real `fogbank` binary on a free port and talks to it over
//! HTTP with an independent client (ureq).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
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

/// The Python with the test peers' packages (scripts/test sets it up).
pub fn python() -> String {
    std::env::var("FOGBANK_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A UDP port nobody holds at the moment, on loopback.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_fogbank")
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
        for _ in 0..5 {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let mut command = Command::new(binary());
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
            // Forward the gateway's log to the test output, named after the
            // gateway when the test names it (the logs of several are
            // interleaved), and notice a bind failure.
            let name = env
                .iter()
                .find(|(k, _)| *k == "FOGBANK_GATEWAY_ID")
                .map_or("gateway", |(_, v)| v)
                .to_owned();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[{name}] {line}");
                    if line.contains("cannot listen") {
                        let _ = tx.send(());
                    }
                }
            });
            let mut gateway = Gateway {
                child,
                port,
                data_dir: data_dir.to_owned(),
                _tmp: None,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if rx.try_recv().is_ok() {
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

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
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
        let mut request = ureq::request(method, &self.url(path)).timeout(Duration::from_secs(30));
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

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, &[], None)
    }

    /// An authorised write with a JSON or SenML body.
    pub fn write(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Answer {
        let auth = format!("Bearer {}", self.token());
        self.request(
            method,
            path,
            &[("Authorization", &auth), ("Content-Type", content_type)],
            Some(body),
        )
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
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = self.get(path);
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

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
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

/// Now, in Unix seconds.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Reads Server-Sent Events from a stream until `count` events of `kind` arrived.
pub fn read_events(url: &str, kind: &str, count: usize, timeout: Duration) -> Vec<String> {
    let response = ureq::get(url)
        .timeout(timeout)
        .call()
        .expect("stream opens");
    let mut events = Vec::new();
    each_event(response, kind, |data| {
        events.push(data);
        events.len() < count
    });
    events
}

/// Follows a stream in the background: the data of each event of `kind`,
/// as it comes, until the stream ends or stays silent for `idle`.
pub fn follow_events(url: &str, kind: &str, idle: Duration) -> std::sync::mpsc::Receiver<String> {
    let response = ureq::AgentBuilder::new()
        .timeout_read(idle)
        .build()
        .get(url)
        .call()
        .expect("stream opens");
    let (tx, rx) = std::sync::mpsc::channel();
    let kind = kind.to_owned();
    std::thread::spawn(move || each_event(response, &kind, |data| tx.send(data).is_ok()));
    rx
}

/// Hands the data of each event of `kind` to `more` while it says so.
fn each_event(response: ureq::Response, kind: &str, mut more: impl FnMut(String) -> bool) {
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let mut current_kind = String::new();
    for line in BufReader::new(response.into_reader()).lines() {
        let Ok(line) = line else { break };
        if let Some(k) = line.strip_prefix("event: ") {
            current_kind = k.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ")
            && current_kind == kind
            && !more(data.to_owned())
        {
            break;
        }
    }
}

/// A real Mosquitto broker on a free loopback port, with persistence, so
/// that sessions and queued messages survive its restarts.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    /// A second listener with TLS, if asked for: its port.
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Also listens with TLS on `tls_port`, with a server certificate for
    /// `localhost` and `127.0.0.1` issued by the CA in [`Self::ca_file`].
    pub fn start_with_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if tls {
            issue_certificates(dir.path());
        }
        let mut broker = Mosquitto {
            child: None,
            port: free_port(),
            tls_port: tls.then(free_port),
            dir,
        };
        broker.launch();
        broker
    }

    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn launch(&mut self) {
        let config = self.dir.path().join("mosquitto.conf");
        let dir = self.dir.path().display();
        // `user root`: when started as root, Mosquitto would otherwise
        // switch to its own user and could not write the session file
        // into our private temporary directory.
        let mut text = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence true\npersistence_location {dir}/\nuser root\nlog_dest stderr\nlistener {} 127.0.0.1\n",
            self.port,
        );
        if let Some(port) = self.tls_port {
            text.push_str(&format!(
                "listener {port} 127.0.0.1\ncafile {dir}/ca.pem\ncertfile {dir}/server.pem\nkeyfile {dir}/server.key\n"
            ));
        }
        std::fs::write(&config, text).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in std::iter::once(self.port).chain(self.tls_port) {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "mosquitto did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGTERM (Mosquitto saves its persistence file), then start again.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            child.wait().unwrap();
        }
    }

    /// `mosquitto_pub` of one message at QoS 1.
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        mqtt_publish(self.port, topic, payload);
    }

    /// `mosquitto_pub -l`: each line one QoS 1 message, on one connection.
    pub fn publish_lines(&self, topic: &str, lines: &[String]) {
        let mut input = lines.join("\n");
        input.push('\n');
        mosquitto_pub(self.port, &["-t", topic, "-l"], input.as_bytes());
    }

    /// Starts `mosquitto_sub` for `count` messages on `topic`; join for
    /// the lines it printed (`topic payload`).
    pub fn subscribe(&self, topic: &str, count: usize) -> std::thread::JoinHandle<Vec<String>> {
        mqtt_subscribe(self.port, topic, count)
    }
}

/// A test CA (`ca.pem`) and a server certificate it issued for `localhost`
/// and `127.0.0.1` (`server.pem`, `server.key`), made with `openssl`.
pub fn issue_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed (scripts/test installs it)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &key[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=fogbank test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &key[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

/// `mosquitto_pub` of one QoS 1 message to any broker on loopback.
pub fn mqtt_publish(port: u16, topic: &str, payload: &[u8]) {
    mosquitto_pub(port, &["-t", topic, "-s"], payload);
}

/// `mosquitto_pub` of one QoS 1 message, speaking MQTT 5.
pub fn mqtt5_publish(port: u16, topic: &str, payload: &[u8]) {
    mosquitto_pub(port, &["-V", "mqttv5", "-t", topic, "-s"], payload);
}

/// CONNECT (MQTT 3.1.1 §3.1 / 5 §3.1): protocol name "MQTT", `level`,
/// clean session, keep alive 60 s, (MQTT 5: no properties,) `client`.
pub fn mqtt_connect(level: u8, client: &str) -> Vec<u8> {
    let mut body = [&[0, 4][..], b"MQTT", &[level, 0x02, 0, 60]].concat();
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(&(client.len() as u16).to_be_bytes());
    body.extend_from_slice(client.as_bytes());
    [&[0x10, body.len() as u8][..], &body].concat()
}

/// A raw MQTT client connected to `port` at protocol `level`, its CONNACK
/// read; reads time out after 10 s.
pub fn mqtt_session(port: u16, level: u8, client: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&mqtt_connect(level, client)).unwrap();
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x20, "the CONNECT was answered with a CONNACK");
    let mut rest = vec![0u8; usize::from(head[1])];
    stream.read_exact(&mut rest).unwrap();
    stream
}

/// Runs `mosquitto_pub` at QoS 1 with `args`, feeding it `input`.
pub fn mosquitto_pub(port: u16, args: &[&str], input: &[u8]) {
    use std::io::Write;
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub is installed (scripts/test installs it)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "mosquitto_pub {args:?} failed"
    );
}

/// A gateway `gateway_id` with its embedded broker on a free port, once
/// that broker delivers to the adapter; returns the gateway and the port.
pub fn embedded_gateway(gateway_id: &str) -> (Gateway, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gw = Gateway::start(
        &["--mqtt", &listen],
        &[("FOGBANK_GATEWAY_ID", gateway_id), ("FOGBANK_MQTT", "")],
    );
    let probe = format!("/api/v1/things/{gateway_id}.mqtt.probe.ready/reading");
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.get(&probe).status != 200 {
        mqtt_publish(port, "things/probe/ready", b"1");
        assert!(
            Instant::now() < deadline,
            "the embedded broker never delivered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (gw, port)
}

/// `mosquitto_sub` against any broker on loopback (Mosquitto or the
/// gateway's embedded one).
pub fn mqtt_subscribe(
    port: u16,
    topic: &str,
    count: usize,
) -> std::thread::JoinHandle<Vec<String>> {
    mqtt_subscribe_with(port, topic, count, &[])
}

/// [`mqtt_subscribe`] with more `mosquitto_sub` arguments.
pub fn mqtt_subscribe_with(
    port: u16,
    topic: &str,
    count: usize,
    args: &[&str],
) -> std::thread::JoinHandle<Vec<String>> {
    let child = Command::new("mosquitto_sub")
        .args(args)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-v",
        ])
        .args(["-C", &count.to_string(), "-W", "30"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::spawn(move || {
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    })
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ------------------------------------------------------------ services

/// The example extended services that `./scripts/guests` built.
pub fn guests() -> PathBuf {
    let dir = std::env::var_os("FOGBANK_GUESTS_DIR")
        .map(PathBuf::from)
        .expect("FOGBANK_GUESTS_DIR names the built example services: run ./scripts/guests");
    assert!(
        dir.join("threshold-alarm.wasm").exists(),
        "no example services in {}: run ./scripts/guests",
        dir.display()
    );
    dir
}

/// An example service's manifest text.
pub fn manifest(name: &str) -> String {
    std::fs::read_to_string(guests().join(format!("{name}.toml"))).unwrap()
}

/// An example service's component.
pub fn component(name: &str) -> Vec<u8> {
    std::fs::read(guests().join(format!("{name}.wasm"))).unwrap()
}

/// Publishes a service with the admin token.
pub fn publish(gw: &Gateway, manifest: &str, component: &[u8]) -> Answer {
    let body = serde_json::json!({
        "manifest": manifest,
        "component": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, component),
    });
    gw.write(
        "POST",
        "/api/v1/services",
        "application/json",
        body.to_string().as_bytes(),
    )
}

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
