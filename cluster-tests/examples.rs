//! The example sites of `deploy/examples/`, started as an operator starts
//! them, so that they never rot: the single gateway with the simulator,
//! and the three-gateway local cloud with its SD-IoT controller and
//! Kamailio. One test, the sites in turn: they use the same fixed ports.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fogbank_testkit::gateway::http;
use fogbank_testkit::{binary, package_file};
use serde_json::Value as Json;

fn get(url: &str, token: &str) -> Json {
    let answer = http(
        "GET",
        url,
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    );
    assert_eq!(
        answer.status,
        200,
        "{url}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_example_sites_start_with_one_command_each() {
    single_gateway();
    three_gateways();
    three_gateways_in_containers();
}

fn single_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let config = package_file("../deploy/examples/single-gateway/fogbank.toml");
    let mut gateway = Command::new(binary())
        .args(["run", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .env_remove("FOGBANK_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the single gateway answers",
        Duration::from_secs(20),
        || http("GET", "http://127.0.0.1:8080/health", &[], None).status == 200,
    );
    let token_file = dir.path().join("site-gateway/admin.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    wait_until("the simulated campus", Duration::from_secs(20), || {
        get("http://127.0.0.1:8080/api/v1/things", token.trim())
            .as_array()
            .is_some_and(|things| things.len() == 40)
    });
    Command::new("kill")
        .args(["-TERM", &gateway.id().to_string()])
        .status()
        .unwrap();
    assert!(gateway.wait().unwrap().success());
}

fn three_gateways() {
    let state = tempfile::tempdir().unwrap();
    let mut site = Command::new(package_file("../deploy/examples/three-gateways/run"))
        .arg(state.path())
        .env("FOGBANK", binary())
        .env_remove("FOGBANK_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut said = String::new();
    let mut lines = BufReader::new(site.stdout.take().unwrap()).lines();
    let token = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the site stopped before it was up: {said}"))
            .unwrap();
        said += &line;
        said.push('\n');
        if let Some(token) = line.strip_prefix("admin token (every gateway and the controller): ") {
            break token.to_owned();
        }
    };
    assert!(said.contains("site up"), "{said}");
    // The rest of what it says is not read: drain it so it never blocks.
    std::thread::spawn(move || lines.for_each(drop));

    check_three_gateway_site(&token);

    Command::new("kill")
        .args(["-TERM", &site.id().to_string()])
        .status()
        .unwrap();
    assert!(
        site.wait().unwrap().success(),
        "the site stops cleanly on SIGTERM"
    );
    assert_site_gone();
}

/// The same site from the container images and its compose file, as its
/// header says to start it (with this machine's podman flags, PEERS.md).
fn three_gateways_in_containers() {
    let image = Command::new(package_file("../scripts/image"))
        .arg("--binary")
        .arg(binary())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(image.status.success(), "the gateway's image was not built");
    let said = |args: &[&str]| {
        let out = Command::new(binary()).args(args).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines().last().unwrap().trim().to_owned()
    };
    let site = ComposeSite {
        env: vec![
            ("FOGBANK_CLUSTER_KEY", said(&["cluster-key"])),
            ("FOGBANK_ADMIN_TOKEN", said(&["new-token"])),
            ("KAMAILIO_BASE", "localhost/fogbank-base:bookworm".into()),
        ],
    };
    site.compose(&["down", "-v"]);
    let up = site.compose(&["up", "-d", "--build"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    check_three_gateway_site(&site.env[1].1);
    let down = site.compose(&["down", "-v"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_site_gone();
}

/// A compose project, taken down with its volumes however the test ends.
struct ComposeSite {
    env: Vec<(&'static str, String)>,
}

impl ComposeSite {
    fn compose(&self, args: &[&str]) -> std::process::Output {
        Command::new("podman-compose")
            .args([
                "--podman-args=--storage-driver vfs --runtime runc",
                "--podman-build-args=--isolation chroot",
                "--project-name=fogbank-examples",
                "--file",
            ])
            .arg(package_file(
                "../deploy/examples/three-gateways/compose.yaml",
            ))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("podman-compose runs")
    }
}

impl Drop for ComposeSite {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.compose(&["logs"]);
            eprintln!("{}", String::from_utf8_lossy(&logs.stdout));
            self.compose(&["down", "-v"]);
        }
    }
}

/// What both forms of the three-gateway site must be: one local cloud,
/// federated to the controller, registered with the IMS core.
fn check_three_gateway_site(token: &str) {
    // One local cloud: every gateway sees the other two up.
    for port in [8081, 8082, 8083] {
        wait_until(
            &format!("the cloud from :{port}"),
            Duration::from_secs(30),
            || {
                let peers = get(&format!("http://127.0.0.1:{port}/api/v1/peers"), token);
                peers.as_array().is_some_and(|peers| {
                    peers.len() == 3
                        && peers
                            .iter()
                            .all(|p| matches!(p["state"].as_str(), Some("up" | "local")))
                })
            },
        );
    }
    // Federated: the controller knows SDVSs of all three gateways.
    wait_until("the controller's SDVSs", Duration::from_secs(30), || {
        let sdvs = get("http://127.0.0.1:8090/api/v1/sdvs", token);
        let gateways: std::collections::BTreeSet<&str> = sdvs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["gateway"].as_str())
            .collect();
        gateways.len() == 3
    });
    // Registered with the IMS core: each gateway's own address of record.
    for (gateway, port) in [("gw-a", 8081), ("gw-b", 8082), ("gw-c", 8083)] {
        wait_until(
            &format!("{gateway} registered"),
            Duration::from_secs(30),
            || {
                let sip = get(
                    &format!("http://127.0.0.1:{port}/api/v1/federation/sip"),
                    token,
                );
                sip["registrations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| {
                        r["aor"].as_str() == Some(gateway)
                            && r["state"].as_str() == Some("registered")
                    })
            },
        );
    }
}

fn assert_site_gone() {
    for port in [8081, 8090] {
        assert_ne!(
            http("GET", &format!("http://127.0.0.1:{port}/health"), &[], None).status,
            200,
            "nothing of the site is left running"
        );
    }
}
