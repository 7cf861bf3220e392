//! MQTT peers: a real Mosquitto broker, its command-line clients against
//! any broker on loopback, a raw client for byte-level tests, and a
//! gateway whose embedded broker is ready.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Gateway, free_port};

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
        // into our private temporary directory. `max_queued_messages 0`:
        // by default Mosquitto drops QoS 1 messages beyond 1,000 queued
        // for a client, acknowledged to their publisher or not; the README
        // asks the same of an operator's broker.
        let mut text = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence true\npersistence_location {dir}/\nuser root\nlog_dest stderr\nmax_queued_messages 0\nlistener {} 127.0.0.1\n",
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

/// A fixed header's remaining length (MQTT 3.1.1 §2.2.3): seven bits a
/// byte, low bits first.
pub fn remaining_length(mut length: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if length == 0 {
            return out;
        }
    }
}

/// A QoS 1 PUBLISH (MQTT 3.1.1 §3.3): fixed header 0x32, remaining length,
/// topic, packet id, payload.
pub fn publish_qos1(topic: &str, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.extend_from_slice(payload);
    [vec![0x32], remaining_length(body.len()), body].concat()
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

/// A gateway `gateway_id` in external mode with these `[mqtt]` settings
/// (written to a config file beside `data_dir`), not yet subscribed.
pub fn start_external(data_dir: &Path, gateway_id: &str, mqtt: &str) -> Gateway {
    let config = data_dir.with_extension("toml");
    std::fs::write(&config, format!("[mqtt]\nmode = \"external\"\n{mqtt}\n")).unwrap();
    // Without FOGBANK_MQTT the config file chooses the mode.
    let env = [("FOGBANK_GATEWAY_ID", gateway_id), ("FOGBANK_MQTT", "")];
    Gateway::start_in(data_dir, &["--config", config.to_str().unwrap()], &env)
}

/// A gateway `gateway_id` that is a client of `broker` (with more `[mqtt]`
/// settings in `mqtt`), once it is subscribed: a probe published until it
/// arrives shows it.
pub fn external_gateway(
    broker: &Mosquitto,
    data_dir: &Path,
    gateway_id: &str,
    mqtt: &str,
) -> Gateway {
    let address = broker.address();
    let gw = start_external(
        data_dir,
        gateway_id,
        &format!("broker = \"{address}\"\n{mqtt}"),
    );
    wait_until_subscribed(broker, gateway_id, gw)
}

/// Waits until `gw` (gateway `gateway_id`) hears what `broker` carries.
pub fn wait_until_subscribed(broker: &Mosquitto, gateway_id: &str, gw: Gateway) -> Gateway {
    let probe = format!("/api/v1/things/{gateway_id}.mqtt.probe.ready/reading");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        broker.publish("things/probe/ready", b"1");
        if gw.get(&probe).status == 200 {
            return gw;
        }
        assert!(Instant::now() < deadline, "the gateway never subscribed");
        std::thread::sleep(Duration::from_millis(100));
    }
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
