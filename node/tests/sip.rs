//! The gateway as a SIP user agent under a real IMS core: Debian's
//! Kamailio as registrar, proxy and presence server with db_text digest
//! authentication (`deploy/kamailio/kamailio.cfg`, its bindings read with
//! `kamcmd`), and SIPp scenarios (`tests/peers/sipp/`) as the IMS
//! applications.

use fogbank_testkit as testkit;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testkit::{Gateway, Kamailio, Sipp};

const LAMP: &str = "gw-s.sim.building-a-floor-1.lamp";
const ALICE: (&str, &str) = ("alice", "wonderland");
const BOB: (&str, &str) = ("bob", "builder");

fn sip_gateway(dir: &Path, id: &str, kamailio: &Kamailio, password: &str) -> Gateway {
    sip_gateway_with(dir, id, kamailio, password, &[])
}

fn sip_gateway_with(
    dir: &Path,
    id: &str,
    kamailio: &Kamailio,
    password: &str,
    extra: &[(&str, &str)],
) -> Gateway {
    gateway_under(dir, &["--demo"], id, &kamailio.registrar(), password, extra)
}

/// A gateway `id` started with `args`, under the registrar (a SIP URI) of
/// domain iot.local, on a free SIP port, with `extra` settings.
fn gateway_under(
    dir: &Path,
    args: &[&str],
    id: &str,
    registrar: &str,
    password: &str,
    extra: &[(&str, &str)],
) -> Gateway {
    let listen = format!("127.0.0.1:{}", testkit::free_udp_port());
    let mut env = vec![
        ("FOGBANK_GATEWAY_ID", id),
        ("FOGBANK_SIP_REGISTRAR", registrar),
        ("FOGBANK_SIP_DOMAIN", "iot.local"),
        ("FOGBANK_SIP_PASSWORD", password),
        ("FOGBANK_SIP_LISTEN", listen.as_str()),
    ];
    env.extend_from_slice(extra);
    Gateway::start_in(dir, args, &env)
}

/// A gateway `id` without things, registering only itself (password
/// `secret`) at 127.0.0.1:`registrar`.
fn lone_gateway(dir: &Path, id: &str, registrar: u16) -> Gateway {
    gateway_under(
        dir,
        &[],
        id,
        &format!("sip:127.0.0.1:{registrar}"),
        "secret",
        &[("FOGBANK_SIP_REGISTER_THINGS", "none")],
    )
}

fn scenario(name: &str) -> PathBuf {
    testkit::package_file("tests/peers/sipp").join(name)
}

fn kamailio_address(kamailio: &Kamailio) -> String {
    format!("127.0.0.1:{}", kamailio.port)
}

/// Sets the lamp and waits until its latest reading says so.
fn set_lamp(gw: &Gateway, on: bool) {
    let answer = gw.write(
        "PUT",
        &format!("/api/v1/things/{LAMP}/actuation"),
        "application/json",
        format!("{{\"value\": {on}}}").as_bytes(),
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    gw.wait_for(
        &format!("/api/v1/things/{LAMP}/reading"),
        "the lamp's new state",
        |a| a.status == 200 && a.json()[0]["vb"] == on,
    );
}

/// Alice's inbox: a SIPp server for `messages` MESSAGEs, at the contact
/// she registers with the core (another SIPp, before this returns).
fn alice_inbox(core: &str, messages: u32, sipp: &Path) -> Sipp {
    let port = testkit::free_udp_port();
    let inbox = Sipp::start(
        &scenario("inbox.xml"),
        core,
        port,
        "alice",
        &[],
        &["-m", &messages.to_string()],
        sipp,
    );
    let run = Sipp::run(
        &scenario("register.xml"),
        core,
        "alice",
        &[("contact_port", &port.to_string())],
        &[],
        sipp,
    );
    assert!(run.passed, "{}", run.messages);
    inbox
}

/// A core (Kamailio, MD5) with gateway gw-s and `users` as subscribers,
/// and gw-s under it with `extra` settings, its 41 bindings made.
fn core_and_gateway(
    tmp: &Path,
    users: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> (Gateway, Kamailio) {
    let mut subscribers = vec![("gw-s", "secret")];
    subscribers.extend_from_slice(users);
    let kamailio = Kamailio::start(&tmp.join("kamailio"), &subscribers, "MD5");
    let gw = sip_gateway_with(&tmp.join("gw"), "gw-s", &kamailio, "secret", extra);
    wait(Duration::from_secs(15), "41 bindings", || {
        kamailio.aors().len() == 41
    });
    (gw, kamailio)
}

/// Switches the lamp on and has an IMS application watch it through the
/// core (`watch_thing.xml`): the watcher, and the gateway's status once
/// the first NOTIFY is answered.
fn watch_lamp(gw: &Gateway, kamailio: &Kamailio, sipp: &Path) -> (Sipp, testkit::Answer) {
    set_lamp(gw, true);
    let watcher = Sipp::start(
        &scenario("watch_thing.xml"),
        &kamailio_address(kamailio),
        testkit::free_udp_port(),
        LAMP,
        &[],
        &["-aa"],
        sipp,
    );
    let status = gw.wait_for("/api/v1/federation/sip", "the subscription", |a| {
        a.json()["subscriptions"].as_array().is_some_and(|all| {
            all.iter()
                .any(|s| s["notifications_sent"].as_u64() >= Some(1))
        })
    });
    (watcher, status)
}

/// Runs a scenario about the lamp through the core, to its passing end.
fn lamp_scenario(name: &str, kamailio: &Kamailio, sipp: &Path) -> testkit::SippRun {
    let run = Sipp::run(
        &scenario(name),
        &kamailio_address(kamailio),
        LAMP,
        &[],
        &[],
        sipp,
    );
    assert!(run.passed, "{}", run.messages);
    run
}

fn sip_status(gw: &Gateway) -> serde_json::Value {
    gw.get("/api/v1/federation/sip").json()
}

fn wait(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_gateway_registers_itself_and_its_things_and_unregisters_on_shutdown() {
    for algorithm in ["MD5", "SHA-256"] {
        let tmp = tempfile::tempdir().unwrap();
        let kamailio = Kamailio::start(
            &tmp.path().join("kamailio"),
            &[("gw-s", "secret")],
            algorithm,
        );
        let mut gw = sip_gateway(&tmp.path().join("gw"), "gw-s", &kamailio, "secret");
        gw.wait_for_campus("gw-s");
        // The gateway's AoR and one per thing service: 41 bindings.
        wait(
            Duration::from_secs(15),
            &format!("41 bindings ({algorithm})"),
            || kamailio.aors().len() == 41,
        );
        let aors = kamailio.aors();
        assert!(aors.contains(&"gw-s".to_owned()));
        assert!(aors.contains(&"gw-s.sim.building-a-floor-1.lamp".to_owned()));
        // The expiry asked for is the configured one (600 s by default).
        let expires = kamailio.expires();
        assert_eq!(expires.len(), 41, "{expires:?}");
        assert!(
            expires.iter().all(|(_, s)| (500..=600).contains(s)),
            "{expires:?}"
        );
        let status = gw.get("/api/v1/federation/sip").json();
        assert_eq!(status["enabled"], true);
        let registrations = status["registrations"].as_array().unwrap();
        assert_eq!(registrations.len(), 41);
        assert!(
            registrations.iter().all(|r| r["state"] == "registered"),
            "{status}"
        );
        // Shut down: every binding removed.
        assert!(gw.terminate(Duration::from_secs(15)).success());
        wait(Duration::from_secs(5), "no binding left", || {
            kamailio.aors().is_empty()
        });
    }
}

#[test]
fn a_wrong_password_is_reported_and_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let kamailio = Kamailio::start(&tmp.path().join("kamailio"), &[("gw-w", "secret")], "MD5");
    let gw = sip_gateway(&tmp.path().join("gw"), "gw-w", &kamailio, "not-the-secret");
    let status = gw.wait_for("/api/v1/federation/sip", "failed registrations", |a| {
        a.json()["registrations"].as_array().is_some_and(|all| {
            all.iter().any(|r| {
                r["aor"] == "gw-w" && r["state"] == "failed" && r["attempts"].as_u64() >= Some(2)
            })
        })
    });
    let gateway = status.json()["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["aor"] == "gw-w")
        .cloned()
        .unwrap();
    assert!(!gateway["reason"].as_str().unwrap().is_empty());
    assert!(kamailio.aors().is_empty());
    assert_eq!(gw.get("/health").status, 200);
}

/// A registrar that is down when the gateway starts: the gateway runs on,
/// shows its bindings as not yet made, and makes them when it comes up.
#[test]
fn a_registrar_that_comes_up_late_gets_the_bindings() {
    let tmp = tempfile::tempdir().unwrap();
    let port = testkit::free_udp_tcp_port();
    let gw = lone_gateway(&tmp.path().join("gw"), "gw-l", port);
    std::thread::sleep(Duration::from_secs(2));
    let status = gw.get("/api/v1/federation/sip").json();
    assert_ne!(
        status["registrations"][0]["state"], "registered",
        "{status}"
    );
    assert_eq!(gw.get("/health").status, 200);
    let kamailio = Kamailio::start_on(
        port,
        &tmp.path().join("kamailio"),
        &[("gw-l", "secret")],
        "MD5",
    );
    wait(
        Duration::from_secs(30),
        "the late registrar's binding",
        || kamailio.aors() == ["gw-l"],
    );
    gw.wait_for("/api/v1/federation/sip", "registered", |a| {
        a.json()["registrations"][0]["state"] == "registered"
    });
}

/// The core forgets every binding when it restarts; the gateway notices
/// the registrar went quiet and binds everything again once it answers,
/// not at the next refresh minutes later.
#[test]
fn registrations_come_back_after_the_registrar_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let (gw, kamailio) = core_and_gateway(tmp.path(), &[], &[]);
    let stopped = kamailio.kill();
    gw.wait_for(
        "/api/v1/federation/sip",
        "the registrar seen as gone",
        |a| a.json()["registrar_reachable"] == false,
    );
    let kamailio = Kamailio::restart(stopped);
    assert!(
        kamailio.aors().is_empty(),
        "a restarted Kamailio has no bindings"
    );
    wait(Duration::from_secs(20), "41 bindings again", || {
        kamailio.aors().len() == 41
    });
    assert_eq!(sip_status(&gw)["registrar_reachable"], true);
}

/// An IMS application (SIPp) subscribes to a lamp through the core: 200,
/// a first NOTIFY with the lamp on, a NOTIFY with it off after it is
/// switched, and a final `terminated` NOTIFY when it unsubscribes.
#[test]
fn an_ims_application_watches_a_thing_through_the_core() {
    let tmp = tempfile::tempdir().unwrap();
    let (gw, kamailio) = core_and_gateway(tmp.path(), &[ALICE], &[]);
    let (watcher, status) = watch_lamp(&gw, &kamailio, &tmp.path().join("sipp"));
    let subscription = &status.json()["subscriptions"][0];
    assert_eq!(subscription["thing"], LAMP);
    assert_eq!(subscription["format"], "senml+json");
    assert!(
        subscription["watcher"]
            .as_str()
            .unwrap()
            .contains("alice@iot.local")
    );
    assert!((100..=120).contains(&subscription["expires_in_s"].as_u64().unwrap()));
    set_lamp(&gw, false);
    let run = watcher.finish(Duration::from_secs(30));
    assert!(run.passed, "{}", run.messages);
    let answer = run
        .received()
        .into_iter()
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains("CSeq: 2 SUBSCRIBE"))
        .unwrap();
    assert!(answer.contains("Expires: 120"), "{answer}");
    let notifies = run.requests("NOTIFY");
    assert!(notifies.len() >= 3, "{}", run.messages);
    let first = &notifies[0];
    assert!(
        first.contains("Subscription-State: active;expires="),
        "{first}"
    );
    assert!(first.contains("Event: fogbank-thing"), "{first}");
    assert!(
        first.contains("Content-Type: application/senml+json"),
        "{first}"
    );
    assert!(first.contains(&format!("\"bn\":\"{LAMP}\"")), "{first}");
    assert!(first.contains("\"vb\":true"), "{first}");
    assert!(
        notifies.iter().any(|n| n.contains("\"vb\":false")),
        "{}",
        run.messages
    );
    let last = notifies.last().unwrap();
    assert!(last.contains("Subscription-State: terminated"), "{last}");
    // The NOTIFYs came back through the core (it record-routed them).
    assert!(answer.contains("Record-Route:"), "{answer}");
    assert!(
        first.lines().filter(|l| l.starts_with("Via:")).count() == 2,
        "{first}"
    );
    gw.wait_for("/api/v1/federation/sip", "no subscription left", |a| {
        a.json()["subscriptions"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    let counters = &sip_status(&gw)["counters"];
    assert!(counters["notifications"].as_u64() >= Some(3), "{counters}");
    let metrics = String::from_utf8(gw.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("fogbank_sip_events_total{kind=\"notifications\"}"),
        "{metrics}"
    );
}

/// A watcher that answers a NOTIFY with 481 has forgotten the
/// subscription: the gateway drops it at once, not when it expires.
#[test]
fn a_subscription_the_watcher_forgot_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (gw, kamailio) = core_and_gateway(tmp.path(), &[ALICE], &[]);
    lamp_scenario("forget.xml", &kamailio, &tmp.path().join("sipp"));
    gw.wait_for("/api/v1/federation/sip", "the subscription dropped", |a| {
        let status = a.json();
        status["subscriptions"]
            .as_array()
            .is_some_and(Vec::is_empty)
            && status["counters"]["notifications_failed"].as_u64() >= Some(1)
    });
}

/// A NOTIFY answered with a Retry-After (here a watcher's 500) has not
/// failed: the subscription stays, and the same state goes again once the
/// time is up, not before.
#[test]
fn a_notify_told_to_retry_later_is_sent_again_and_the_subscription_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (gw, kamailio) = core_and_gateway(tmp.path(), &[ALICE], &[]);
    set_lamp(&gw, true);
    let watcher = Sipp::start(
        &scenario("busy.xml"),
        &kamailio_address(&kamailio),
        testkit::free_udp_port(),
        LAMP,
        &[],
        &["-aa"],
        &tmp.path().join("sipp"),
    );
    let counter = |name: &str| sip_status(&gw)["counters"][name].as_u64().unwrap_or(0);
    wait(Duration::from_secs(20), "the NOTIFY deferred", || {
        counter("notifications_deferred") == 1
    });
    let deferred = Instant::now();
    wait(Duration::from_secs(20), "the NOTIFY sent again", || {
        counter("notifications") >= 1
    });
    assert!(
        deferred.elapsed() >= Duration::from_millis(1500),
        "sent again after {:?}, before its Retry-After of 2 s",
        deferred.elapsed()
    );
    let status = sip_status(&gw);
    assert_eq!(
        status["subscriptions"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(status["counters"]["notifications_failed"], 0, "{status}");
    let run = watcher.finish(Duration::from_secs(30));
    assert!(run.passed, "{}", run.messages);
    gw.wait_for(
        "/api/v1/federation/sip",
        "the watcher's own unsubscribe",
        |a| {
            a.json()["subscriptions"]
                .as_array()
                .is_some_and(Vec::is_empty)
        },
    );
}

/// What a subscription the gateway cannot serve gets: 489 with
/// Allow-Events for another package, 406 with Accept for a body it cannot
/// write, 404 for a thing it does not know. And a request that did not
/// come through the core gets 403.
#[test]
fn subscriptions_it_cannot_serve_are_refused_and_the_core_cannot_be_bypassed() {
    let tmp = tempfile::tempdir().unwrap();
    let sip_port = testkit::free_udp_port();
    let listen = format!("127.0.0.1:{sip_port}");
    let (gw, kamailio) = core_and_gateway(tmp.path(), &[ALICE], &[("FOGBANK_SIP_LISTEN", &listen)]);
    // The final answer to the authenticated SUBSCRIBE.
    let refused = |service: &str, event: &str, accept: &str| {
        let run = Sipp::run(
            &scenario("refused.xml"),
            &kamailio_address(&kamailio),
            service,
            &[("event", event), ("accept", accept)],
            &[],
            &tmp.path().join("sipp"),
        );
        assert!(run.passed, "{}", run.messages);
        run.received().pop().unwrap()
    };
    let answer = refused(LAMP, "presence.winfo", "application/senml+json");
    assert!(answer.starts_with("SIP/2.0 489"), "{answer}");
    assert!(answer.contains("Allow-Events: fogbank-thing"), "{answer}");
    let answer = refused(LAMP, "fogbank-thing", "text/html");
    assert!(answer.starts_with("SIP/2.0 406"), "{answer}");
    assert!(answer.contains("application/pidf+xml"), "{answer}");
    // Registered, but not a thing: the gateway's own address of record.
    let answer = refused("gw-s", "fogbank-thing", "application/senml+json");
    assert!(answer.starts_with("SIP/2.0 404"), "{answer}");

    let run = Sipp::run(
        &scenario("direct.xml"),
        &listen,
        LAMP,
        &[],
        &[],
        &tmp.path().join("sipp"),
    );
    assert!(run.passed, "{}", run.messages);
    let counters = &sip_status(&gw)["counters"];
    assert!(counters["forbidden"].as_u64() >= Some(1), "{counters}");
    assert!(counters["rejected"].as_u64() >= Some(3), "{counters}");
}

/// The gateway PUBLISHes each thing's state to the core's presence
/// server; a standard presence watcher gets it as PIDF with the reading
/// as SenML XML.
#[test]
fn a_presence_watcher_sees_what_the_gateway_published() {
    let tmp = tempfile::tempdir().unwrap();
    let kamailio = Kamailio::start(
        &tmp.path().join("kamailio"),
        &[("gw-s", "secret"), ALICE],
        "MD5",
    );
    let mut gw = sip_gateway_with(
        &tmp.path().join("gw"),
        "gw-s",
        &kamailio,
        "secret",
        &[("FOGBANK_SIP_PRESENCE_SERVER", &kamailio.registrar())],
    );
    gw.wait_for("/api/v1/federation/sip", "40 publications", |a| {
        a.json()["counters"]["publications"].as_u64() >= Some(40)
    });
    // A new state is published again (after the minimum interval).
    set_lamp(&gw, true);
    gw.wait_for(
        "/api/v1/federation/sip",
        "the lamp's new state published",
        |a| a.json()["counters"]["publications"].as_u64() >= Some(41),
    );
    // One presence watcher's fetch of the lamp's state.
    let fetch_presence =
        || lamp_scenario("watch_presence.xml", &kamailio, &tmp.path().join("sipp"));
    let run = fetch_presence();
    let notify = run
        .requests("NOTIFY")
        .into_iter()
        .find(|n| n.contains("<presence"))
        .unwrap();
    assert!(
        notify.contains("Content-Type: application/pidf+xml"),
        "{notify}"
    );
    assert!(
        notify.contains(&format!("entity=\"sip:{LAMP}@iot.local\"")),
        "{notify}"
    );
    assert!(
        notify.contains(&format!("<senml bn=\"{LAMP}\"")),
        "{notify}"
    );
    assert!(notify.contains("vb=\"true\""), "{notify}");
    assert_eq!(sip_status(&gw)["counters"]["publications_failed"], 0);
    // Stopping withdraws what was published (Expires: 0): a watcher then
    // gets no reading, where the state would otherwise live until it
    // expired.
    assert!(gw.terminate(Duration::from_secs(15)).success());
    let run = fetch_presence();
    let notifies = run.requests("NOTIFY");
    assert!(!notifies.is_empty(), "{}", run.messages);
    assert!(
        notifies.iter().all(|n| !n.contains("<senml")),
        "{}",
        run.messages
    );
}

/// MESSAGE: `GET` to a thing is answered with a MESSAGE carrying its
/// reading; SenML to an actuator from an identity allowed to actuate
/// switches it (and the outcome comes back); from another, 403.
#[test]
fn ims_users_read_and_switch_a_thing_by_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (gw, kamailio) = core_and_gateway(
        tmp.path(),
        &[ALICE, BOB],
        &[("FOGBANK_SIP_ALLOW_ACTUATE", "alice@iot.local")],
    );
    set_lamp(&gw, true);
    let sipp = tmp.path().join("sipp");
    let core = kamailio_address(&kamailio);
    let inbox = alice_inbox(&core, 2, &sipp);
    let message_to = |service: &str, user: (&str, &str), content_type: &str, body: &str| {
        let run = Sipp::run(
            &scenario("message.xml"),
            &core,
            service,
            &[("user", user.0), ("type", content_type), ("body", body)],
            &["-au", user.0, "-ap", user.1],
            &sipp,
        );
        assert!(run.passed, "{}", run.messages);
        // The final answer.
        run.received().pop().unwrap()
    };
    let message = |user, content_type, body| message_to(LAMP, user, content_type, body);
    let answer = message(ALICE, "text/plain", "GET");
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    // Bob may read but not switch.
    let answer = message(BOB, "application/senml+json", r#"[{"vb":false}]"#);
    assert!(answer.starts_with("SIP/2.0 403"), "{answer}");
    // Nor may he pass himself off as Alice: the core refuses the From.
    let spoofed = Sipp::run(
        &scenario("message.xml"),
        &core,
        LAMP,
        &[
            ("user", "alice"),
            ("type", "application/senml+json"),
            ("body", r#"[{"vb":false}]"#),
        ],
        &["-au", BOB.0, "-ap", BOB.1],
        &sipp,
    );
    let answer = spoofed.received().pop().unwrap();
    assert!(answer.starts_with("SIP/2.0 403 From is not"), "{answer}");
    let answer = message(ALICE, "application/senml+json", r#"[{"vb":false}]"#);
    assert!(answer.starts_with("SIP/2.0 202"), "{answer}");
    gw.wait_for(
        &format!("/api/v1/things/{LAMP}/reading"),
        "the lamp off",
        |a| a.status == 200 && a.json()[0]["vb"] == false,
    );
    let inbox = inbox.finish(Duration::from_secs(20));
    assert!(inbox.passed, "{}", inbox.messages);
    let received = inbox.requests("MESSAGE");
    assert_eq!(received.len(), 2, "{}", inbox.messages);
    assert!(
        received.iter().all(|m| !m.contains("\nContact:")),
        "a MESSAGE carries no Contact: {received:?}"
    );
    let reading = received
        .iter()
        .find(|m| m.contains("application/senml+json"))
        .unwrap();
    assert!(
        reading.contains(&format!("sip:{LAMP}@iot.local")),
        "{reading}"
    );
    assert!(reading.contains(&format!("\"bn\":\"{LAMP}\"")), "{reading}");
    assert!(reading.contains("\"vb\":true"), "{reading}");
    let outcome = received
        .iter()
        .find(|m| m.contains("application/json"))
        .unwrap();
    assert!(outcome.contains("\"state\":\"succeeded\""), "{outcome}");
    let counters = &sip_status(&gw)["counters"];
    assert_eq!(counters["messages_received"], 3, "{counters}");
    assert_eq!(counters["messages_sent"], 2, "{counters}");
    // A reading too long for a MESSAGE over UDP (RFC 3428 §4: 1300 bytes)
    // is not sent in pieces or cut: the reply fails, and says why.
    let note = "gw-s.http.note.text";
    let long = "x".repeat(1500);
    let posted = gw.post_senml(
        &format!("/api/v1/things/{note}/readings"),
        &serde_json::json!([{ "vs": long }]),
    );
    assert_eq!(posted.status, 200);
    wait(Duration::from_secs(10), "the note's binding", || {
        kamailio.aors().contains(&note.to_owned())
    });
    let answer = message_to(note, ALICE, "text/plain", "GET");
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    gw.wait_for("/api/v1/federation/sip", "the reply refused", |a| {
        a.json()["counters"]["messages_failed"] == 1
    });
    assert_eq!(sip_status(&gw)["counters"]["messages_sent"], 2);
}

/// The thing the forwarding tests forward.
const TEMPERATURE: &str = "gw-s.sim.building-a-floor-1.temperature";

/// A core (Kamailio, MD5) with gw-s and Alice, and Alice's inbox waiting
/// for `messages` MESSAGEs.
fn core_with_alice_inbox(tmp: &Path, messages: u32) -> (Kamailio, Sipp) {
    let kamailio = Kamailio::start(&tmp.join("kamailio"), &[("gw-s", "secret"), ALICE], "MD5");
    let inbox = alice_inbox(&kamailio_address(&kamailio), messages, &tmp.join("sipp"));
    (kamailio, inbox)
}

/// `[[sip.forward]]`: the readings of the selected thing go to an IMS
/// identity as SenML MESSAGEs from the thing's address, no more often
/// than the minimum interval (the simulator reads every second).
#[test]
fn forwarding_rules_send_readings_to_an_ims_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let (kamailio, inbox) = core_with_alice_inbox(tmp.path(), 2);
    let config = tmp.path().join("fogbank.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nmin_interval_ms = 3000\n[[sip.forward]]\nids = [\"{TEMPERATURE}\"]\nto = [\"sip:alice@iot.local\"]\n"
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", testkit::free_udp_port());
    let registrar = kamailio.registrar();
    let _gw = Gateway::start_in(
        &tmp.path().join("gw"),
        &["--demo", "--config", config.to_str().unwrap()],
        &[
            ("FOGBANK_GATEWAY_ID", "gw-s"),
            ("FOGBANK_SIP_REGISTRAR", &registrar),
            ("FOGBANK_SIP_DOMAIN", "iot.local"),
            ("FOGBANK_SIP_PASSWORD", "secret"),
            ("FOGBANK_SIP_LISTEN", &listen),
        ],
    );
    let inbox = inbox.finish(Duration::from_secs(30));
    assert!(inbox.passed, "{}", inbox.messages);
    let received = inbox.requests("MESSAGE");
    assert_eq!(received.len(), 2, "{}", inbox.messages);
    let mut times = Vec::new();
    for message in &received {
        assert!(
            message.contains(&format!("From: <sip:{TEMPERATURE}@iot.local>")),
            "{message}"
        );
        assert!(
            message.contains("Content-Type: application/senml+json"),
            "{message}"
        );
        let body = message
            .split("\r\n\r\n")
            .nth(1)
            .or_else(|| message.split("\n\n").nth(1))
            .unwrap();
        let pack: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
        assert_eq!(pack[0]["bn"], TEMPERATURE);
        assert_eq!(pack[0]["bu"], "Cel");
        times.push(pack[0]["t"].as_f64().unwrap());
    }
    assert!(times[1] - times[0] >= 2.5, "{times:?}");
}

/// SIGHUP replaces the `[[sip.forward]]` rules without a restart: a
/// gateway started without one forwards nothing; given one, it forwards
/// that thing's readings to Alice.
#[test]
fn a_reload_starts_forwarding_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (kamailio, inbox) = core_with_alice_inbox(tmp.path(), 2);
    let config = tmp.path().join("fogbank.toml");
    std::fs::write(&config, "[sip]\nmin_interval_ms = 3000\n").unwrap();
    let gw = gateway_under(
        &tmp.path().join("gw"),
        &["--demo", "--config", config.to_str().unwrap()],
        "gw-s",
        &kamailio.registrar(),
        "secret",
        &[],
    );
    let sent = || gw.get("/api/v1/federation/sip").json()["counters"]["messages_sent"].clone();
    // Readings come every second or so: none of them is forwarded.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sent(), 0, "no rule, no MESSAGE");

    std::fs::write(
        &config,
        format!(
            "[sip]\nmin_interval_ms = 3000\n[[sip.forward]]\nids = [\"{TEMPERATURE}\"]\nto = [\"sip:alice@iot.local\"]\n"
        ),
    )
    .unwrap();
    gw.hangup();
    let inbox = inbox.finish(Duration::from_secs(30));
    assert!(inbox.passed, "{}", inbox.messages);
    let received = inbox.requests("MESSAGE");
    assert_eq!(received.len(), 2, "{}", inbox.messages);
    for message in &received {
        assert!(
            message.contains(&format!("From: <sip:{TEMPERATURE}@iot.local>")),
            "{message}"
        );
    }
}

/// `transport = "tcp"`: the bindings are made and removed over TCP, with a
/// TCP Contact, and a subscription's NOTIFYs reach the core over TCP.
#[test]
fn the_gateway_speaks_sip_over_tcp() {
    let tmp = tempfile::tempdir().unwrap();
    let kamailio = Kamailio::start(
        &tmp.path().join("kamailio"),
        &[("gw-s", "secret"), ALICE],
        "MD5",
    );
    let listen = format!("127.0.0.1:{}", testkit::free_udp_tcp_port());
    let mut gw = sip_gateway_with(
        &tmp.path().join("gw"),
        "gw-s",
        &kamailio,
        "secret",
        &[
            ("FOGBANK_SIP_TRANSPORT", "tcp"),
            ("FOGBANK_SIP_LISTEN", &listen),
        ],
    );
    wait(Duration::from_secs(15), "41 bindings", || {
        kamailio.aors().len() == 41
    });
    assert!(
        kamailio
            .contacts()
            .iter()
            .all(|c| c.contains("transport=tcp")),
        "{:?}",
        kamailio.contacts()
    );
    // A subscription through the core: its NOTIFYs go to the core over TCP.
    let (watcher, _) = watch_lamp(&gw, &kamailio, &tmp.path().join("sipp"));
    set_lamp(&gw, false);
    let run = watcher.finish(Duration::from_secs(30));
    assert!(run.passed, "{}", run.messages);
    let notifies = run.requests("NOTIFY");
    assert!(
        notifies.iter().any(|n| n.contains("\"vb\":false")),
        "{}",
        run.messages
    );
    assert!(
        notifies.iter().all(|n| n.contains("SIP/2.0/TCP")),
        "{}",
        run.messages
    );
    // Removed on shutdown over TCP too.
    assert!(gw.terminate(Duration::from_secs(15)).success());
    wait(Duration::from_secs(5), "no binding left", || {
        kamailio.aors().is_empty()
    });
}

/// A registrar that challenges, then calls the nonce stale, then wants a
/// longer expiry (SIPp, checking each digest with its own verifier): the
/// gateway answers each in turn and ends up bound for the expiry given.
#[test]
fn a_stale_nonce_and_a_too_brief_expiry_are_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let port = testkit::free_udp_port();
    let registrar = Sipp::start(
        &scenario("registrar.xml"),
        "127.0.0.1:9",
        port,
        "gw-r",
        &[],
        &["-m", "1000"],
        &tmp.path().join("sipp"),
    );
    let gw = lone_gateway(&tmp.path().join("gw"), "gw-r", port);
    let status = gw.wait_for("/api/v1/federation/sip", "the binding", |a| {
        a.json()["registrations"][0]["state"] == "registered"
    });
    let binding = &status.json()["registrations"][0];
    assert!(
        (1100..=1200).contains(&binding["expires_in_s"].as_u64().unwrap()),
        "{binding}"
    );
    let run = registrar.finish(Duration::from_secs(10));
    assert!(run.passed, "{}", run.messages);
    let registers = run.requests("REGISTER");
    assert_eq!(registers.len(), 4, "{}", run.messages);
    assert!(registers[0].contains("Expires: 600"), "{}", registers[0]);
    assert!(registers[3].contains("Expires: 1200"), "{}", registers[3]);
    // One registration: one Call-ID, the CSeq counting up.
    let call_id = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("Call-ID:"))
            .map(str::to_owned)
    };
    assert!(
        registers
            .iter()
            .all(|r| call_id(r) == call_id(&registers[0]))
    );
}

/// Things that appear while the gateway runs get their binding, and lose
/// it when they go: a Home Assistant entity announced to the embedded
/// broker (mosquitto_pub, a retained config), then removed.
#[test]
fn things_that_come_and_go_are_bound_and_unbound() {
    let tmp = tempfile::tempdir().unwrap();
    let kamailio = Kamailio::start(&tmp.path().join("kamailio"), &[("gw-d", "secret")], "MD5");
    let mqtt = testkit::free_port();
    let _gw = gateway_under(
        &tmp.path().join("gw"),
        &["--mqtt", &format!("127.0.0.1:{mqtt}")],
        "gw-d",
        &kamailio.registrar(),
        "secret",
        &[("FOGBANK_MQTT", "")],
    );
    wait(Duration::from_secs(10), "the gateway's binding", || {
        kamailio.aors() == ["gw-d"]
    });
    let config = "homeassistant/sensor/cellar/flood/config";
    testkit::mosquitto_pub(
        mqtt,
        &["-r", "-t", config, "-s"],
        br#"{"name":"Flood","stat_t":"cellar/flood/state","unit_of_meas":"cm","uniq_id":"cellar-flood","dev":{"ids":"cellar","name":"cellar"}}"#,
    );
    let flood = "gw-d.mqtt.cellar.flood";
    wait(Duration::from_secs(10), "the new thing's binding", || {
        kamailio.aors().contains(&flood.to_owned())
    });
    testkit::mosquitto_pub(mqtt, &["-r", "-t", config, "-n"], b"");
    wait(
        Duration::from_secs(10),
        "the thing's binding removed",
        || kamailio.aors() == ["gw-d"],
    );
}
