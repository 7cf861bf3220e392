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

    // One local cloud: every gateway sees the other two up.
    for port in [8081, 8082, 8083] {
        wait_until(
            &format!("the cloud from :{port}"),
            Duration::from_secs(30),
            || {
                let peers = get(&format!("http://127.0.0.1:{port}/api/v1/peers"), &token);
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
        let sdvs = get("http://127.0.0.1:8090/api/v1/sdvs", &token);
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
                    &token,
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

    Command::new("kill")
        .args(["-TERM", &site.id().to_string()])
        .status()
        .unwrap();
    assert!(
        site.wait().unwrap().success(),
        "the site stops cleanly on SIGTERM"
    );
    for port in [8081, 8090] {
        assert_ne!(
            http("GET", &format!("http://127.0.0.1:{port}/health"), &[], None).status,
            200,
            "nothing of the site is left running"
        );
    }
}
