//! Federation to the SD-IoT controller with real processes: one
//! `fogbank controller` and two gateways running the campus simulator,
//! each with its own S-MANAGE address block, on loopback.

use fogbank_testkit as testkit;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::{Controller, Gateway};

const FAST: &str = "hello_interval_secs = 1\n";

fn gateway(tmp: &std::path::Path, id: &str, controller: &Controller, block: &str) -> Gateway {
    let config = tmp.join(format!("{id}.toml"));
    std::fs::write(&config, format!("[smanage]\n{FAST}")).unwrap();
    let sdvs_port = testkit::free_udp_port().to_string();
    Gateway::start_in(
        &tmp.join(id),
        &["--demo", "--config", config.to_str().unwrap()],
        &[
            ("FOGBANK_GATEWAY_ID", id),
            ("FOGBANK_SMANAGE_CONTROLLER", &controller.smanage()),
            ("FOGBANK_SMANAGE_LISTEN", &format!("127.0.0.1:{sdvs_port}")),
            ("FOGBANK_SMANAGE_ADDRESSES", block),
        ],
    )
}

fn request(controller: &Controller, body: Value) -> Value {
    let answer = controller.write("POST", "/api/v1/requests", &body);
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()
}

fn wait_state(controller: &Controller, id: u64, state: &str, limit: Duration) -> Value {
    controller
        .wait_for(
            &format!("/api/v1/requests/{id}"),
            limit,
            &format!("request {id} {state}"),
            |a| a.status == 200 && a.json()["state"] == state,
        )
        .json()
}

fn sdvs_up(controller: &Controller) -> Vec<Value> {
    controller
        .get("/api/v1/sdvs")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["up"] == true)
        .cloned()
        .collect()
}

#[test]
fn requests_run_on_two_gateways_through_conflicts_failures_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut controller = Controller::start_in(&tmp.path().join("controller"), FAST);
    let mut gw_a = gateway(tmp.path(), "gw-a", &controller, "0x0100-0x01ff");
    let mut gw_b = gateway(tmp.path(), "gw-b", &controller, "0x0200-0x02ff");

    // Both gateways' 16 devices, each an SDVS with its 5 sensor services.
    controller.wait_for("/api/v1/sdvs", Duration::from_secs(15), "16 SDVSs", |a| {
        a.json().as_array().is_some_and(|all| {
            all.len() == 16
                && all
                    .iter()
                    .all(|s| s["up"] == true && s["services"].as_array().map_or(0, Vec::len) == 5)
        })
    });
    let events = testkit::follow_events(
        &controller.url("/api/v1/events"),
        "completion",
        Duration::from_secs(60),
    );

    // Temperature every second for 10 s in building A: full, on 8 SDVSs
    // (4 per gateway); the data streams to the controller.
    let temperature = request(
        &controller,
        json!({"type": "temperature", "location": "campus/building-a", "frequency_s": 1, "period_s": 10, "action": "read"}),
    );
    assert_eq!(temperature["outcome"], "full");
    assert_eq!(temperature["state"], "running");
    let assigned = temperature["assigned"].as_array().unwrap();
    assert_eq!(assigned.len(), 8);
    let id = temperature["id"].as_u64().unwrap();
    let samples = testkit::read_events(
        &controller.url(&format!("/api/v1/requests/{id}/stream")),
        "reading",
        8,
        Duration::from_secs(10),
    );
    for sample in &samples {
        let record: Value = serde_json::from_str(sample).unwrap();
        let v = record[0]["v"].as_f64().unwrap();
        assert!((5.0..40.0).contains(&v), "a room temperature: {sample}");
    }

    // Lamps read for 4 s, then switched off: the switch-off conflicts and
    // is queued with the reads' remaining time, then runs.
    let reads = request(
        &controller,
        json!({"type": "switch", "location": "campus/building-a", "frequency_s": 1, "period_s": 4, "action": "read"}),
    );
    assert_eq!(reads["outcome"], "full");
    let off = request(
        &controller,
        json!({"type": "switch", "location": "campus/building-a", "frequency_s": 0, "period_s": 1, "action": "off"}),
    );
    assert_eq!(off["outcome"], "partial");
    assert_eq!(off["state"], "queued");
    assert_eq!(off["assigned"].as_array().unwrap().len(), 0);
    assert_eq!(off["pending"].as_array().unwrap().len(), 8);
    assert!(
        off["pending"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["waiting_for"] == "conflict")
    );
    let waiting = off["waiting_s"].as_u64().unwrap();
    assert!((1..=4).contains(&waiting), "waiting {waiting} s");
    let queue = controller.get("/api/v1/requests?state=queued").json();
    assert!(
        queue
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == off["id"])
    );
    let off_id = off["id"].as_u64().unwrap();
    wait_state(
        &controller,
        reads["id"].as_u64().unwrap(),
        "completed",
        Duration::from_secs(10),
    );
    let done = wait_state(&controller, off_id, "completed", Duration::from_secs(10));
    assert!(
        done["assignments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["state"] == "completed")
    );
    gw_a.wait_for(
        "/api/v1/things/gw-a.sim.building-a-floor-2.lamp/reading",
        "the lamp off",
        |r| r.status == 200 && r.json()[0]["vb"] == false,
    );

    // Nobody has CO2: unable. More temperatures than exist: partial.
    let unable = controller.write(
        "POST",
        "/api/v1/requests",
        &json!({"type": "co2", "location": "campus", "frequency_s": 1, "period_s": 5, "action": "read"}),
    );
    assert_eq!(unable.status, 422);
    let problem = unable.assert_problem(422);
    assert_eq!(problem["outcome"], "unable");
    let too_many = request(
        &controller,
        json!({"type": "humidity", "location": "campus", "frequency_s": 5, "period_s": 60, "action": "read", "count": 20}),
    );
    assert_eq!(too_many["outcome"], "partial");
    assert_eq!(too_many["missing"], 4);
    let cancelled = controller.write(
        "DELETE",
        &format!("/api/v1/requests/{}", too_many["id"]),
        &json!(null),
    );
    assert_eq!(cancelled.json()["state"], "cancelled");

    // The temperature request completes: ReportCompletion from its SDVSs,
    // 10 samples from each of 8 services in its SenML data.
    let done = wait_state(&controller, id, "completed", Duration::from_secs(15));
    assert!(done["readings"].as_u64().unwrap() >= 72, "{done}");
    let completion: Value =
        serde_json::from_str(&events.recv_timeout(Duration::from_secs(5)).unwrap()).unwrap();
    assert!(completion["sdvs"].as_str().unwrap().starts_with("0x0"));
    let pack = controller.get(&format!("/api/v1/requests/{id}/readings"));
    assert_eq!(pack.content_type, "application/senml+json");
    let records = pack.json();
    assert!(records.as_array().unwrap().len() >= 72);
    assert_eq!(records[0]["bn"], format!("urn:fogbank:request:{id}:"));

    // The controller killed and restarted mid-request carries on with it.
    let long = request(
        &controller,
        json!({"type": "light", "location": "campus/building-b", "frequency_s": 1, "period_s": 6, "action": "read"}),
    );
    let long_id = long["id"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    controller.restart_after_kill9();
    let before = controller
        .get(&format!("/api/v1/requests/{long_id}"))
        .json();
    assert_eq!(before["state"], "running");
    let after = wait_state(&controller, long_id, "completed", Duration::from_secs(15));
    assert!(after["readings"].as_u64().unwrap() > before["readings"].as_u64().unwrap());

    // Data for an SDVS of the other gateway goes through the controller,
    // which relays it to that gateway's endpoint.
    let relayed = request(
        &controller,
        json!({"type": "temperature", "location": "campus/building-a/floor-1", "frequency_s": 1, "period_s": 2, "action": "read", "count": 1, "destination": "0x0200"}),
    );
    assert_eq!(relayed["assigned"][0]["sdvs"], "0x0100");
    gw_b.wait_for(
        "/api/v1/federation/smanage",
        "a Response relayed to gw-b",
        |a| {
            a.json()["counters"]["received"]["Response"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        },
    );
    let metrics = controller.get("/metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    let relayed_total = text
        .lines()
        .find_map(|l| l.strip_prefix("fogbank_controller_relayed_total "))
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(relayed_total >= 1.0, "{text}");

    // A gateway killed: its SDVSs go down, and a request on two of its
    // services moves to the other gateway's.
    controller.wait_for(
        "/api/v1/sdvs",
        Duration::from_secs(10),
        "every SDVS up again",
        |a| {
            a.json()
                .as_array()
                .is_some_and(|all| all.iter().filter(|s| s["up"] == true).count() == 16)
        },
    );
    let moving = request(
        &controller,
        json!({"type": "temperature", "location": "campus/building-a", "frequency_s": 1, "period_s": 30, "action": "read", "count": 2}),
    );
    let moving_id = moving["id"].as_u64().unwrap();
    let on_a = moving["assigned"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["sdvs"].as_str().unwrap().starts_with("0x01"));
    assert!(on_a, "the least busy first: gw-a's SDVSs {moving}");
    let started = Instant::now();
    gw_a.kill9();
    controller.wait_for(
        "/api/v1/sdvs",
        Duration::from_secs(10),
        "gw-a's SDVSs down",
        |_| sdvs_up(&controller).len() == 8,
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "down after three silent seconds"
    );
    let moved = controller.wait_for(
        &format!("/api/v1/requests/{moving_id}"),
        Duration::from_secs(5),
        "re-planned",
        |a| {
            let r = a.json();
            let assignments = r["assignments"].as_array().cloned().unwrap_or_default();
            assignments.iter().filter(|a| a["state"] == "lost").count() == 2
                && assignments
                    .iter()
                    .filter(|a| {
                        a["state"] == "programmed"
                            && a["sdvs"].as_str().unwrap().starts_with("0x02")
                    })
                    .count()
                    == 2
        },
    );
    assert_eq!(moved.json()["state"], "running");

    // With the other gateway gone too, nothing can take it: it fails, and
    // says why.
    gw_b.kill9();
    let failed = wait_state(&controller, moving_id, "failed", Duration::from_secs(10));
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("went down"), "{reason}");
}
