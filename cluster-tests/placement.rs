//! Extended services across one local cloud of three real gateways: a
//! service published at any gateway is known to all and runs on one — next
//! to its inputs — and when that gateway is killed it runs on another
//! within seconds, with its key-value store, under the same output ids.
//! The service is the example threshold alarm (`scripts/guests`), which
//! keeps its alarm's state in its store and shows it at `/call/state`;
//! every gateway trusts only its publisher's key, so it is signed, and the
//! signature travels with it to each gateway that runs it.

use fogbank_testkit as testkit;

use std::time::{Duration, Instant};

use serde_json::Value as Json;
use testkit::{
    Member, acquainted, binary, cluster_key, component, guests, keygen, manifest, publish,
    start_cloud, within,
};

const SERVICE: &str = "threshold-alarm";
/// Published at gw-c: its outputs' ids start with gw-c wherever it runs.
const ALARM: &str = "gw-c.service.threshold-alarm.alarm";

/// The service as `member` describes it (null while it does not know it).
fn service(member: &Member) -> Json {
    let answer = member.gateway.get(&format!("/api/v1/services/{SERVICE}"));
    if answer.status == 200 {
        answer.json()
    } else {
        Json::Null
    }
}

/// The gateway that runs the service as `member` sees it, once it says so
/// itself (its own view: running).
fn runner(members: &[Member], asked: &Member) -> Option<String> {
    let info = service(asked);
    let gateway = info["gateway"].as_str()?.to_owned();
    let at = members.iter().find(|m| m.id == gateway)?;
    (service(at)["state"] == "running").then_some(gateway)
}

fn alarm_state(member: &Member) -> Json {
    let answer = member
        .gateway
        .get(&format!("/api/v1/services/{SERVICE}/call/state"));
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()
}

#[test]
fn a_service_runs_next_to_its_inputs_and_moves_with_its_state_when_its_gateway_dies() {
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    // Every gateway takes only services its publisher signed: the
    // signature travels with the service to the gateways that run it.
    let (key_file, public) = keygen(dir.path(), "publisher.key");
    let trusted = vec![("FOGBANK_TRUSTED_KEYS".to_owned(), public.clone())];
    // Only gw-a has things: the simulated campus.
    let mut members = start_cloud(dir.path(), &key, &["gw-a", "gw-b", "gw-c"], |id| {
        let args = if id == "gw-a" {
            vec!["--demo".to_owned()]
        } else {
            Vec::new()
        };
        (args, trusted.clone())
    });
    acquainted(&members, Duration::from_secs(15));
    within(Duration::from_secs(15), "gw-c sees gw-a's lamp", || {
        members[2]
            .gateway
            .get("/api/v1/things/gw-a.sim.building-a-floor-1.lamp")
            .status
            == 200
    });

    // Published at gw-c; below every simulated temperature, so the first
    // reading turns the alarm on.
    let cold = manifest(SERVICE).replace("threshold = 22.0", "threshold = -50.0");
    let unsigned = publish(&members[2].gateway, &cold, &component(SERVICE));
    assert_eq!(unsigned.status, 403, "an unsigned service is refused");
    let cold_file = dir.path().join("cold.toml");
    std::fs::write(&cold_file, &cold).unwrap();
    let published = std::process::Command::new(binary())
        .args(["service", "publish"])
        .arg(&cold_file)
        .arg(guests().join(format!("{SERVICE}.wasm")))
        .arg("--sign")
        .arg(&key_file)
        .args([
            "--url",
            &members[2].gateway.url(""),
            "--token",
            &members[2].gateway.token(),
        ])
        .output()
        .unwrap();
    assert!(published.status.success(), "{published:?}");

    // Known everywhere, run at gw-a, which owns its inputs.
    within(Duration::from_secs(20), "the service runs at gw-a", || {
        members
            .iter()
            .all(|m| runner(&members, m).as_deref() == Some("gw-a"))
    });
    let info = service(&members[1]);
    assert_eq!(info["signed_by"], public.as_str(), "{info}");
    assert_eq!(info["state"], "elsewhere", "{info}");
    assert_eq!(info["home"], "gw-c");
    let why = info["placement"].as_str().unwrap();
    assert!(why.starts_with("owns "), "{why}");
    let listed = members[1].get_json("/api/v1/services");
    assert_eq!(listed[0]["gateway"], "gw-a", "{listed}");
    // A call at a gateway that does not run it says which one does.
    let elsewhere = members[1]
        .gateway
        .get(&format!("/api/v1/services/{SERVICE}/call/state"));
    assert_eq!(elsewhere.status, 409);
    assert!(String::from_utf8_lossy(&elsewhere.body).contains("gw-a"));

    within(
        Duration::from_secs(20),
        "the alarm on, seen from gw-b",
        || {
            members[1]
                .gateway
                .get(&format!("/api/v1/things/{ALARM}/reading"))
                .json()[0]["vb"]
                == true
        },
    );
    assert_eq!(alarm_state(&members[0])["alarm"], true);
    // Its store, checkpointed to the cloud after the alarm went on.
    let alarm_on = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    within(
        Duration::from_secs(10),
        "a checkpoint with the alarm on",
        || {
            service(&members[1])["checkpointed_at"]
                .as_u64()
                .is_some_and(|t| t > alarm_on)
        },
    );

    // gw-a dies: the service runs on another gateway within 5 s.
    members[0].kill();
    let died = Instant::now();
    let mut taken_by = String::new();
    within(
        Duration::from_secs(5),
        "the service runs elsewhere",
        || match runner(&members, &members[1]) {
            Some(gateway) if gateway != "gw-a" => {
                taken_by = gateway;
                true
            }
            _ => false,
        },
    );
    let failover = died.elapsed();
    eprintln!("the service ran at {taken_by} {failover:?} after gw-a died");
    let new = members.iter().find(|m| m.id == taken_by).unwrap();
    // With its state: the alarm is still on there.
    assert_eq!(alarm_state(new)["alarm"], true, "the store came with it");
    // Under the same output id, owned by its new gateway.
    let output = new.get_json(&format!("/api/v1/things/{ALARM}"));
    assert_eq!(output["gateway"], taken_by, "{output}");
    assert_eq!(output["available"], true, "{output}");
    let logs = new.get_json(&format!("/api/v1/services/{SERVICE}/logs"));
    assert!(
        logs.as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"] == "taken over from gateway gw-a"),
        "{logs}"
    );

    // gw-a comes back with its inputs: the service goes back to it (handed
    // over, not taken), still with its state, and runs only there.
    members[0].restart();
    within(Duration::from_secs(30), "the service back at gw-a", || {
        members
            .iter()
            .all(|m| runner(&members, m).as_deref() == Some("gw-a"))
    });
    assert_eq!(alarm_state(&members[0])["alarm"], true);
    for member in &members[1..] {
        assert_eq!(service(member)["state"], "elsewhere", "{}", member.id);
    }
    // Its output's history is read through the same id from any gateway.
    within(
        Duration::from_secs(20),
        "the alarm's history at gw-a",
        || {
            members[1]
                .get_json(&format!("/api/v1/things/{ALARM}/readings?from=0"))
                .as_array()
                .is_some_and(|r| !r.is_empty())
        },
    );
}
