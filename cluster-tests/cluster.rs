//! The local cloud as its users meet it: several real `fogbank` processes
//! on loopback forming one cloud by themselves, serving every thing from
//! every gateway, and surviving `kill -9`, partitions and intruders.
//!
//! Run with `cargo test -p fogbank-cluster-tests --test cluster`; each
//! test starts its own cloud on free ports.

use fogbank_testkit as testkit;

use std::time::{Duration, Instant};

use testkit::{Member, acquainted, cluster_key, converged, mdns_lan, start_cloud, within};
use testkit::{mqtt_publish, read_events};

/// The campus simulator's thing services.
const CAMPUS: usize = 40;
const TEMPERATURE: &str = "gw-a.sim.building-a-floor-1.temperature";
const LAMP: &str = "gw-a.sim.building-a-floor-1.lamp";

fn plain(_: &str) -> (Vec<String>, Vec<(String, String)>) {
    (Vec::new(), Vec::new())
}

fn campus_on_a(id: &str) -> (Vec<String>, Vec<(String, String)>) {
    match id {
        "gw-a" => (vec!["--demo".into()], Vec::new()),
        _ => (Vec::new(), Vec::new()),
    }
}

#[test]
fn one_local_cloud_sees_reads_streams_and_actuates_every_thing() {
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    let mqtt_port = testkit::free_port();
    let coap_port = testkit::free_udp_port();
    let members = start_cloud(dir.path(), &key, &["gw-a", "gw-b", "gw-c"], |id| match id {
        "gw-a" => (vec!["--demo".into()], Vec::new()),
        "gw-b" => (
            Vec::new(),
            vec![("FOGBANK_MQTT".into(), format!("127.0.0.1:{mqtt_port}"))],
        ),
        _ => (
            Vec::new(),
            vec![("FOGBANK_COAP".into(), format!("127.0.0.1:{coap_port}"))],
        ),
    });
    let (a, b, c) = (&members[0], &members[1], &members[2]);

    // A real MQTT client feeds a device into gw-b.
    within(
        Duration::from_secs(10),
        "gw-b's broker takes a device",
        || {
            mqtt_publish(mqtt_port, "things/boiler-1/temperature", b"61.5");
            b.gateway
                .get("/api/v1/things/gw-b.mqtt.boiler-1.temperature/reading")
                .status
                == 200
        },
    );
    let took = converged(&members, CAMPUS + 1, Duration::from_secs(10));
    eprintln!("three gateways converged {took:?} after the last change");

    // gw-c owns nothing: identical catalogs do not mean that everyone has
    // heard its beacon yet.
    for member in &members {
        within(Duration::from_secs(5), "everyone sees everyone", || {
            member.peers().len() == 3
        });
        let peers = member.peers();
        assert_eq!(peers[0], (member.id.clone(), "local".to_owned()));
        assert!(
            peers[1..].iter().all(|(_, state)| state == "up"),
            "{peers:?}"
        );
    }
    // Filters apply to the whole cloud.
    let from_b = c.get_json("/api/v1/things?gateway=gw-b");
    assert_eq!(from_b.as_array().unwrap().len(), 1);
    let lamps = c.get_json("/api/v1/things?type=switch&location=campus/building-a");
    assert!(!lamps.as_array().unwrap().is_empty());

    // Latest reading and history of another gateway's things.
    let boiler = c.get_json("/api/v1/things/gw-b.mqtt.boiler-1.temperature/reading");
    assert_eq!(boiler[0]["v"], 61.5);
    let latest = c.get_json(&format!("/api/v1/things/{TEMPERATURE}/reading"));
    assert_eq!(latest[0]["bn"], TEMPERATURE);
    let history = c.get_json(&format!("/api/v1/things/{TEMPERATURE}/readings?limit=5"));
    assert!(!history.as_array().unwrap().is_empty());

    // Readings belong to their owner: another gateway will not store them.
    b.gateway
        .post_senml(
            &format!("/api/v1/things/{TEMPERATURE}/readings"),
            &serde_json::json!([{ "v": 99.0 }]),
        )
        .assert_problem(409);

    // Actuation from gw-c reaches gw-a's simulated lamp.
    for wanted in [true, false] {
        let answer = c.gateway.write(
            "PUT",
            &format!("/api/v1/things/{LAMP}/actuation?wait=10000"),
            "application/json",
            serde_json::json!({ "value": wanted })
                .to_string()
                .as_bytes(),
        );
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.json()["state"], "succeeded");
        within(
            Duration::from_secs(5),
            "the lamp reports its new state",
            || a.get_json(&format!("/api/v1/things/{LAMP}/reading"))[0]["vb"] == wanted,
        );
    }

    // A live stream on gw-b of a gw-a thing: gw-b follows it only while
    // the stream is open.
    assert_eq!(a.metric("fogbank_cloud_followed"), 0.0);
    let url = b
        .gateway
        .url(&format!("/api/v1/things/{TEMPERATURE}/stream"));
    let reader =
        std::thread::spawn(move || read_events(&url, "reading", 3, Duration::from_secs(20)));
    within(
        Duration::from_secs(5),
        "gw-a learns that gw-b follows",
        || a.metric("fogbank_cloud_followed") == 1.0,
    );
    let events = reader.join().unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    for event in &events {
        let pack: serde_json::Value = serde_json::from_str(event).unwrap();
        assert_eq!(pack[0]["bn"], TEMPERATURE);
    }
    assert!(b.metric("fogbank_cloud_readings_received_total") >= 2.0);
    within(
        Duration::from_secs(5),
        "gw-b leaves the thing's topic",
        || a.metric("fogbank_cloud_followed") == 0.0 && b.metric("fogbank_cloud_following") == 0.0,
    );

    // CoAP on gw-c serves gw-a's thing too (libcoap's client).
    let output = std::process::Command::new("coap-client-notls")
        .args(["-m", "get", "-A", "110", "-B", "10"])
        .arg(format!("coap://127.0.0.1:{coap_port}/things/{TEMPERATURE}"))
        .output()
        .expect("coap-client-notls is installed (scripts/test installs libcoap3-bin)");
    let body = String::from_utf8_lossy(&output.stdout);
    assert!(body.contains(TEMPERATURE), "CoAP answered {body:?}");
    // ... and observes it: gw-c follows it while observed, and every
    // reading becomes a notification.
    let output = std::process::Command::new("coap-client-notls")
        .args(["-m", "get", "-A", "110", "-s", "5", "-B", "6"])
        .arg(format!("coap://127.0.0.1:{coap_port}/things/{TEMPERATURE}"))
        .output()
        .unwrap();
    let notifications = String::from_utf8_lossy(&output.stdout);
    let times: std::collections::BTreeSet<&str> = notifications
        .split("\"t\":")
        .skip(1)
        .map(|rest| rest.split(['}', ',']).next().unwrap_or(""))
        .collect();
    assert!(
        times.len() >= 3,
        "the initial state and at least two new readings: {notifications:?}"
    );
    // ... and switches gw-a's lamp with a CoAP PUT on gw-c.
    let output = std::process::Command::new("coap-client-notls")
        .args(["-m", "put", "-t", "0", "-e", "on", "-B", "10"])
        .arg(format!("coap://127.0.0.1:{coap_port}/things/{LAMP}"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    within(Duration::from_secs(5), "the lamp is on again", || {
        a.get_json(&format!("/api/v1/things/{LAMP}/reading"))[0]["vb"] == true
    });
}

#[test]
fn a_killed_gateway_is_noticed_within_3_s_and_back_within_3_s_of_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    let mut members = start_cloud(dir.path(), &key, &["gw-a", "gw-b", "gw-c"], campus_on_a);
    converged(&members, CAMPUS, Duration::from_secs(10));
    // gw-b and gw-c bootstrapped from gw-a only; they must know each other
    // directly, or gw-a's death would cut them apart.
    let took = acquainted(&members, Duration::from_secs(5));
    eprintln!("members acquainted after {took:?}");
    let unavailable = |m: &Member| {
        m.things()
            .iter()
            .filter(|(id, up)| id.starts_with("gw-a.") && !up)
            .count()
    };

    // An application follows a gw-a thing on gw-c through all of it.
    let stream = testkit::follow_events(
        &members[2]
            .gateway
            .url(&format!("/api/v1/things/{TEMPERATURE}/stream")),
        "reading",
        Duration::from_secs(10),
    );
    stream
        .recv_timeout(Duration::from_secs(5))
        .expect("the stream's first reading");
    let identity = |m: &Member| m.get_json("/api/v1/peers")[0]["peer_id"].clone();
    let peer_id = identity(&members[0]);

    members[0].kill();
    for member in &members[1..] {
        let took = within(Duration::from_secs(3), "gw-a's things unavailable", || {
            unavailable(member) == CAMPUS
        });
        eprintln!("{} noticed gw-a's death after {took:?}", member.id);
        assert!(
            member
                .peers()
                .contains(&("gw-a".to_owned(), "down".to_owned()))
        );
        // An unreachable owner is a clear 502, at once, for reads and commands.
        let started = Instant::now();
        member
            .gateway
            .get(&format!("/api/v1/things/{TEMPERATURE}/reading"))
            .assert_problem(502);
        let problem = member
            .gateway
            .write(
                "PUT",
                &format!("/api/v1/things/{LAMP}/actuation"),
                "application/json",
                br#"{"value": true}"#,
            )
            .assert_problem(502);
        assert_eq!(problem["type"], "urn:fogbank:problem:owner-unreachable");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    members[0].restart();
    let restarted_at = testkit::now_secs();
    assert_eq!(
        identity(&members[0]),
        peer_id,
        "the same identity after a restart"
    );
    for member in &members[1..] {
        let took = within(Duration::from_secs(3), "gw-a's things back", || {
            unavailable(member) == 0 && member.things().len() == CAMPUS
        });
        eprintln!("{} saw gw-a back after {took:?}", member.id);
    }
    // The stream opened before the crash carries on with the new readings.
    let resumed = stream
        .iter()
        .map(|data| serde_json::from_str::<serde_json::Value>(&data).unwrap())
        .find(|pack| pack[0]["t"].as_f64().is_some_and(|t| t > restarted_at));
    assert!(
        resumed.is_some(),
        "the stream on gw-c ended with gw-a's crash"
    );
    let latest = members[2].get_json(&format!("/api/v1/things/{TEMPERATURE}/reading"));
    assert_eq!(latest[0]["bn"], TEMPERATURE);

    // A gateway stopped by its operator leaves cleanly, and at once.
    let status = members[0].gateway.terminate(Duration::from_secs(10));
    assert!(
        status.success(),
        "SIGTERM ends a cloud member with {status}"
    );
    within(Duration::from_secs(1), "gw-a seen leaving", || {
        members[1]
            .peers()
            .contains(&("gw-a".to_owned(), "down".to_owned()))
    });

    // Decommissioned: an operator makes gw-b forget it (only while it is down).
    let b = &members[1];
    let auth = format!("Bearer {}", b.gateway.token());
    let forget = |gateway: &str| {
        b.gateway.request(
            "DELETE",
            &format!("/api/v1/peers/{gateway}"),
            &[("Authorization", &auth)],
            None,
        )
    };
    forget("gw-c").assert_problem(409);
    assert_eq!(forget("gw-a").status, 204);
    assert!(b.things().iter().all(|(id, _)| !id.starts_with("gw-a.")));
    assert!(b.peers().iter().all(|(gateway, _)| gateway != "gw-a"));
    forget("gw-a").assert_problem(404);
}

#[test]
fn a_gateway_without_the_cluster_key_cannot_join() {
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    let members = start_cloud(dir.path(), &key, &["gw-a", "gw-b"], plain);
    let inside = members[0].create_thing("inside", 20.0);
    // It knows both members, as an operator's FOGBANK_PEERS list.
    let peers = format!("{},{}", members[0].address(), members[1].address());
    let intruder = Member::start(
        dir.path(),
        "gw-x",
        &cluster_key(),
        &[],
        &[],
        &[("FOGBANK_PEERS", &peers)],
    );
    let outside = intruder.create_thing("outside", 30.0);
    converged(&members, 1, Duration::from_secs(10));
    // Several of its attempts, each refused at once rather than at the
    // handshake's timeout.
    within(
        Duration::from_secs(5),
        "every member refused the intruder twice",
        || {
            members
                .iter()
                .all(|m| m.metric("fogbank_cloud_connections_refused_total") >= 2.0)
        },
    );
    for member in &members {
        assert!(
            member.peers().iter().all(|(gateway, _)| gateway != "gw-x"),
            "{}",
            member.id
        );
        assert!(member.things().iter().all(|(id, _)| *id != outside));
        member
            .gateway
            .get(&format!("/api/v1/things/{outside}/reading"))
            .assert_problem(404);
    }
    assert_eq!(intruder.peers().len(), 1, "the intruder is alone");
    assert!(intruder.things().iter().all(|(id, _)| *id != inside));
}

/// The README's LAN set-up: gateways started with the cluster key and
/// nothing else find each other by mDNS and form one cloud; a gateway with
/// another key is found too, and kept out.
#[test]
fn gateways_with_the_key_find_each_other_by_mdns() {
    let _lan = mdns_lan();
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    let members: Vec<Member> = ["gw-a", "gw-b", "gw-c"]
        .into_iter()
        .map(|id| Member::start_discovering(dir.path(), id, &key))
        .collect();
    let stranger = Member::start_discovering(dir.path(), "gw-x", &cluster_key());
    stranger.create_thing("outside", 30.0);
    let boiler = members[0].create_thing("boiler", 60.0);
    converged(&members, 1, Duration::from_secs(15));
    for member in &members {
        within(Duration::from_secs(10), "everyone sees everyone", || {
            let peers = member.peers();
            peers.len() == 3 && peers[1..].iter().all(|(_, state)| state == "up")
        });
    }
    let reading = members[2]
        .gateway
        .get(&format!("/api/v1/things/{boiler}/reading"));
    assert_eq!(reading.json()[0]["v"], 60.0);
    for member in &members {
        assert!(
            member.peers().iter().all(|(gateway, _)| gateway != "gw-x"),
            "{}",
            member.id
        );
    }
    assert_eq!(stranger.peers().len(), 1, "the stranger is alone");
}

/// mDNS tells of a gateway once, then only every few minutes: one that
/// could not be joined when found (here: started with another key, then
/// restarted with the right one, on the same port and without mDNS of its
/// own, so that nobody hears of it again) is dialed again until it is.
#[test]
fn a_gateway_found_by_mdns_is_dialed_until_it_is_joined() {
    let _lan = mdns_lan();
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    let early = Member::start_discovering(dir.path(), "gw-early", &key);
    let mut late = Member::start_discovering(dir.path(), "gw-late", &cluster_key());
    within(
        Duration::from_secs(5),
        "gw-early found gw-late and was refused",
        || late.metric("fogbank_cloud_connections_refused_total") >= 1.0,
    );
    late.kill();
    late.restart_with(&key, &["--no-mdns"]);
    acquainted(&[early, late], Duration::from_secs(15));
}

#[test]
fn peers_come_from_the_environment_and_by_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    let a = Member::start(dir.path(), "gw-a", &key, &[], &[], &[]);
    let port = a.p2p_port.to_string();
    // A host name resolved by the system resolver, with the peer id.
    let peer_id = a.get_json("/api/v1/peers")[0]["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let by_name = format!("/dns4/localhost/tcp/{port}/p2p/{peer_id}");
    let b = Member::start(dir.path(), "gw-b", &key, &[by_name], &[], &[]);
    // A comma-separated FOGBANK_PEERS, one entry of which is wrong.
    let list = format!("/ip4/127.0.0.1/tcp/1,{}", a.address());
    let c = Member::start(
        dir.path(),
        "gw-c",
        &key,
        &[],
        &[],
        &[("FOGBANK_PEERS", &list)],
    );
    a.create_thing("boiler", 60.0);
    let members = [a, b, c];
    converged(&members, 1, Duration::from_secs(10));
    for member in &members {
        within(Duration::from_secs(5), "everyone sees everyone", || {
            let peers = member.peers();
            peers.len() == 3 && peers[1..].iter().all(|(_, state)| state == "up")
        });
    }
}

#[test]
fn the_cluster_key_comes_from_a_file_or_the_environment_and_bad_settings_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(testkit::binary())
        .args(["run", "--no-mdns", "--data-dir"])
        .arg(dir.path().join("bad"))
        .env("FOGBANK_CLUSTER_KEY", "not-64-hex-digits")
        .env("FOGBANK_MQTT", "off")
        .env("FOGBANK_COAP", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FOGBANK_CLUSTER_KEY"), "{stderr}");

    // The same key as a key file (`fogbank cluster-key` writes one) joins
    // the cloud; a file named by flag wins over the variable.
    let key = cluster_key();
    let a = Member::start(dir.path(), "gw-a", &key, &[], &[], &[]);
    let file = dir.path().join("cluster.key");
    std::fs::write(&file, format!("/key/swarm/psk/1.0.0/\n/base16/\n{key}\n")).unwrap();
    let b = Member::start(
        dir.path(),
        "gw-b",
        "",
        &[a.address()],
        &["--cluster-key-file", file.to_str().unwrap()],
        &[("FOGBANK_CLUSTER_KEY", "not-64-hex-digits")],
    );
    a.create_thing("boiler", 60.0);

    // A second gateway on a taken libp2p port is refused, not let in to
    // share the first one's connections.
    let output = std::process::Command::new(testkit::binary())
        .args(["run", "--no-mdns", "--p2p", &a.address(), "--data-dir"])
        .arg(dir.path().join("twin"))
        .env("FOGBANK_CLUSTER_KEY", &key)
        .env("FOGBANK_MQTT", "off")
        .env("FOGBANK_COAP", "off")
        .env(
            "FOGBANK_HTTP",
            format!("127.0.0.1:{}", testkit::free_port()),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");

    converged(&[a, b], 1, Duration::from_secs(10));
}

#[test]
fn a_second_gateway_with_a_taken_id_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    let members = start_cloud(dir.path(), &key, &["gw-a", "gw-b"], plain);
    let genuine = members[0].create_thing("genuine", 20.0);
    converged(&members, 1, Duration::from_secs(10));
    let twin_dir = dir.path().join("twin");
    let twin = Member::start(&twin_dir, "gw-a", &key, &[members[1].address()], &[], &[]);
    let forged = twin.create_thing("forged", 99.0);
    std::thread::sleep(Duration::from_secs(2));
    let seen = members[1].things();
    assert!(seen.contains(&(genuine, true)), "{seen:?}");
    assert!(!seen.iter().any(|(id, _)| *id == forged), "{seen:?}");
    assert_eq!(
        members[1].get_json("/api/v1/peers")[1]["peer_id"],
        members[0].get_json("/api/v1/peers")[0]["peer_id"],
        "gw-a is still the first gateway of that name"
    );
}

#[test]
fn a_partition_heals_into_identical_catalogs() {
    let dir = tempfile::tempdir().unwrap();
    let key = cluster_key();
    let members = start_cloud(dir.path(), &key, &["gw-a", "gw-b", "gw-c"], plain);
    let b_thing = members[1].create_thing("boiler", 60.0);
    members[0].create_thing("before", 20.0);
    converged(&members, 2, Duration::from_secs(10));

    members[1].freeze(true);
    // A call to a silent owner ends in a problem, not a hang.
    let started = Instant::now();
    let answer = members[0]
        .gateway
        .get(&format!("/api/v1/things/{b_thing}/reading"));
    assert!(
        answer.status == 502 || answer.status == 504,
        "{} {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    assert!(started.elapsed() < Duration::from_secs(7));
    for member in [&members[0], &members[2]] {
        within(Duration::from_secs(5), "gw-b is down", || {
            member
                .peers()
                .contains(&("gw-b".to_owned(), "down".to_owned()))
        });
        assert!(member.things().contains(&(b_thing.clone(), false)));
    }
    // Both sides change while they cannot hear each other.
    members[0].create_thing("during-a", 21.0);
    members[2].create_thing("during-c", 22.0);
    members[1].freeze(false);
    members[1].create_thing("during-b", 61.0);

    let took = converged(&members, 5, Duration::from_secs(10));
    eprintln!("catalogs identical {took:?} after the partition healed");
    assert!(members[0].things().contains(&(b_thing, true)));
}

/// Extended services compose across the local cloud: an output published
/// on gw-a is a thing service on gw-b, read and streamed there, and a
/// service on gw-b that subscribes to gw-a's things switches gw-a's lamp.
#[test]
fn services_compose_across_the_local_cloud() {
    let dir = tempfile::tempdir().unwrap();
    let members = start_cloud(dir.path(), &cluster_key(), &["gw-a", "gw-b"], campus_on_a);
    let (a, b) = (&members[0], &members[1]);
    converged(&members, CAMPUS, Duration::from_secs(10));

    testkit::publish_example(&a.gateway, "floor-average");
    let average = "gw-a.service.floor-average.floor-1";
    let seen = converged(&members, CAMPUS + 4, Duration::from_secs(3));
    eprintln!("the outputs reached gw-b {seen:?} after publishing");
    within(Duration::from_secs(10), "gw-b reads gw-a's average", || {
        b.gateway
            .get(&format!("/api/v1/things/{average}/reading"))
            .status
            == 200
    });
    let events = read_events(
        &b.gateway.url(&format!("/api/v1/things/{average}/stream")),
        "reading",
        2,
        Duration::from_secs(10),
    );
    assert_eq!(events.len(), 2, "live at gw-b");

    // On gw-b, an alarm over gw-a's floor: it hears gw-a's temperatures
    // (the simulator's and the average) and commands gw-a's lamp. Left to
    // itself it would run at gw-a, next to its inputs: pinned to gw-b.
    let alarm = testkit::manifest("threshold-alarm")
        .replace("threshold = 22.0", "threshold = -50.0")
        .replace(
            "subscriptions =",
            "placement = { gateway = \"gw-b\" }\nsubscriptions =",
        );
    let answer = testkit::publish(&b.gateway, &alarm, &testkit::component("threshold-alarm"));
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let reads_true = |member: &Member, id: &str| {
        let answer = member.gateway.get(&format!("/api/v1/things/{id}/reading"));
        answer.status == 200 && answer.json()[0]["vb"] == true
    };
    within(
        Duration::from_secs(10),
        "gw-b's alarm goes off, seen at gw-a",
        || reads_true(a, "gw-b.service.threshold-alarm.alarm"),
    );
    within(Duration::from_secs(10), "gw-a's lamp goes on", || {
        reads_true(a, LAMP)
    });
    let info = b.get_json("/api/v1/services/threshold-alarm");
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(info["placement"], "pinned to gateway gw-b", "{info}");
    let seen_from_a = a.get_json("/api/v1/services/threshold-alarm");
    assert_eq!(seen_from_a["state"], "elsewhere", "{seen_from_a}");
    assert_eq!(seen_from_a["gateway"], "gw-b", "{seen_from_a}");
}
