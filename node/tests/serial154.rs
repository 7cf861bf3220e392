//! The 802.15.4 adapter through a real pseudo-terminal pair (socat), with
//! a radio simulator (node/tests/peers/radio_sim.py) that builds its frames
//! from the RFCs and the IEEE layout, sharing no code with the gateway.

use fogbank_testkit as testkit;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{Gateway, PtyPair};

/// The radio simulator, driven line by line.
struct Sim {
    child: Child,
    input: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Sim {
    fn start(port: &Path) -> Sim {
        let script = testkit::package_file("tests/peers/radio_sim.py");
        let mut child = Command::new(testkit::python())
            .arg(script)
            .arg("--port")
            .arg(port)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let sim = Sim {
            child,
            input,
            lines,
        };
        sim.expect(|l| l == "ready");
        sim
    }

    fn send(&mut self, command: &str) {
        writeln!(self.input, "{command}").unwrap();
        let word = command.split_whitespace().next().unwrap().to_owned();
        self.expect(|l| l == format!("done {word}"));
    }

    /// Waits for a line `matches` accepts; returns it.
    fn expect(&self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(_) => continue,
                Err(error) => panic!("the simulator did not say what was expected: {error}"),
            }
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const EUI: &str = "00124b0006142f9b";

#[test]
fn radio_traffic_becomes_thing_services_and_commands_go_over_the_air() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ptys = PtyPair::start(tmp.path());
    let gw = Gateway::start(
        &["--serial154", ptys.radio.to_str().unwrap()],
        &[("FOGBANK_GATEWAY_ID", "gw-s")],
    );
    let mut sim = Sim::start(&ptys.sim);
    sim.expect(|l| l == "asked M");

    // Compact SenML.
    sim.send(&format!("compact {EUI} temperature 21.5"));
    let thing = format!("/api/v1/things/gw-s.serial154.{EUI}.temperature");
    let reading = gw.wait_for(&format!("{thing}/reading"), "the compact reading", |a| {
        a.status == 200
    });
    assert_eq!(reading.json()[0]["v"], 21.5);
    assert_eq!(gw.get(&thing).json()["unit"], "Cel");

    // CoAP over 6LoWPAN, confirmable: stored, then acknowledged over the air.
    sim.send("coap abcd 0042 /sensors/humidity 41.5 con");
    let humidity = "/api/v1/things/gw-s.serial154.abcd-0042.sensors-humidity/reading";
    let reading = gw.wait_for(humidity, "the CoAP reading", |a| a.status == 200);
    assert_eq!(reading.json()[0]["v"], 41.5);
    let ack = sim.expect(|l| l.starts_with("coap abcd-0042 ACK"));
    assert!(ack.contains(" 2.04 "), "{ack}");
    // The same, in two 6LoWPAN fragments.
    sim.send("coap abcd 0042 /sensors/humidity 43.25 non frag");
    gw.wait_for(humidity, "the fragmented reading", |a| {
        a.json()[0]["v"] == json!(43.25)
    });

    // Actuation: a compact command frame, its transmit status the outcome.
    sim.send(&format!("compact {EUI} lamp false"));
    let lamp = format!("/api/v1/things/gw-s.serial154.{EUI}.lamp");
    gw.wait_for(&lamp, "the lamp", |a| a.status == 200);
    let answer = gw.write(
        "PUT",
        &format!("{lamp}/actuation"),
        "application/json",
        br#"{"value": true}"#,
    );
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert_eq!(answer.json()["state"], "succeeded");
    sim.expect(|l| l == format!("command {EUI} lamp true"));

    // ... and a CoAP PUT for a 6LoWPAN device.
    sim.send("coap abcd 0042 /actuators/relay off con");
    let relay = "/api/v1/things/gw-s.serial154.abcd-0042.actuators-relay";
    gw.wait_for(relay, "the relay", |a| a.status == 200);
    let answer = gw.write(
        "PUT",
        &format!("{relay}/actuation"),
        "application/json",
        br#"{"value": true}"#,
    );
    assert_eq!(answer.status, 200);
    let put = sim.expect(|l| l.starts_with("coap abcd-0042 CON 0.03"));
    assert!(put.ends_with("/actuators/relay true"), "{put}");

    // Garbage of every kind is counted and dropped; the radio carries on.
    sim.send("garbage");
    sim.send("debug hello from the radio");
    sim.send(&format!("compact {EUI} temperature 22.5"));
    gw.wait_for(
        &format!("{thing}/reading"),
        "a reading after the garbage",
        |a| a.json()[0]["v"] == json!(22.5),
    );
    let metrics = String::from_utf8_lossy(&gw.get("/metrics").body).into_owned();
    for event in ["serial154_bad_framing", "serial154_malformed"] {
        assert!(
            metrics.contains(&format!(
                "fogbank_adapter_events_total{{adapter=\"serial154\",event=\"{event}\"}}"
            )),
            "{event} counted"
        );
    }

    // The dongle unplugged: its devices become unavailable ...
    drop(sim);
    ptys.stop();
    gw.wait_for(&thing, "the device unavailable", |a| {
        a.json()["available"] == false
    });
    // ... and plugged in again: the gateway reopens the port and carries on.
    let ptys = PtyPair::start(tmp.path());
    let mut sim = Sim::start(&ptys.sim);
    sim.expect(|l| l == "asked M");
    sim.send(&format!("compact {EUI} temperature 23.5"));
    gw.wait_for(&thing, "the device back", |a| a.json()["available"] == true);
    gw.wait_for(&format!("{thing}/reading"), "readings again", |a| {
        a.json()[0]["v"] == json!(23.5)
    });
}

#[test]
fn frames_with_an_fcs_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let ptys = PtyPair::start(tmp.path());
    let config = tmp.path().join("fogbank.toml");
    std::fs::write(
        &config,
        format!(
            "[[serial154.radios]]\npath = \"{}\"\nfcs = true\n",
            ptys.radio.display()
        ),
    )
    .unwrap();
    let gw = Gateway::start(
        &["--config", config.to_str().unwrap()],
        &[("FOGBANK_GATEWAY_ID", "gw-s")],
    );
    let script = testkit::package_file("tests/peers/radio_sim.py");
    let mut child = Command::new(testkit::python())
        .arg(script)
        .arg("--port")
        .arg(&ptys.sim)
        .arg("--fcs")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    writeln!(input, "garbage").unwrap();
    writeln!(input, "compact {EUI} temperature 19.75").unwrap();
    gw.wait_for(
        &format!("/api/v1/things/gw-s.serial154.{EUI}.temperature/reading"),
        "a reading with a good FCS",
        |a| a.status == 200 && a.json()[0]["v"] == json!(19.75),
    );
    gw.wait_for("/metrics", "the bad FCS counted", |a| {
        String::from_utf8_lossy(&a.body).contains(
            "fogbank_adapter_events_total{adapter=\"serial154\",event=\"serial154_bad_fcs\"}",
        )
    });
    let _ = child.kill();
    let _ = child.wait();
}
