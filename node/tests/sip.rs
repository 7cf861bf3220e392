//! The gateway as a SIP user agent against a real registrar: Debian's
//! Kamailio with db_text digest authentication (`deploy/kamailio/`), its
//! bindings read with `kamcmd`.

use fogbank_testkit as testkit;

use std::time::{Duration, Instant};

use testkit::{Gateway, Kamailio};

fn sip_gateway(dir: &std::path::Path, id: &str, kamailio: &Kamailio, password: &str) -> Gateway {
    Gateway::start_in(
        dir,
        &["--demo"],
        &[
            ("FOGBANK_GATEWAY_ID", id),
            ("FOGBANK_SIP_REGISTRAR", &kamailio.registrar()),
            ("FOGBANK_SIP_DOMAIN", "iot.local"),
            ("FOGBANK_SIP_PASSWORD", password),
            (
                "FOGBANK_SIP_LISTEN",
                &format!("127.0.0.1:{}", testkit::free_udp_port()),
            ),
        ],
    )
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
        let kamailio = Kamailio::start(&tmp.path().join("kamailio"), "gw-s", "secret", algorithm);
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
    let kamailio = Kamailio::start(&tmp.path().join("kamailio"), "gw-w", "secret", "MD5");
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
    let port = testkit::free_udp_port();
    let gw = Gateway::start_in(
        &tmp.path().join("gw"),
        &[],
        &[
            ("FOGBANK_GATEWAY_ID", "gw-l"),
            ("FOGBANK_SIP_REGISTRAR", &format!("sip:127.0.0.1:{port}")),
            ("FOGBANK_SIP_DOMAIN", "iot.local"),
            ("FOGBANK_SIP_PASSWORD", "secret"),
            (
                "FOGBANK_SIP_LISTEN",
                &format!("127.0.0.1:{}", testkit::free_udp_port()),
            ),
            ("FOGBANK_SIP_REGISTER_THINGS", "none"),
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let status = gw.get("/api/v1/federation/sip").json();
    assert_ne!(
        status["registrations"][0]["state"], "registered",
        "{status}"
    );
    assert_eq!(gw.get("/health").status, 200);
    let kamailio = Kamailio::start_on(port, &tmp.path().join("kamailio"), "gw-l", "secret", "MD5");
    wait(
        Duration::from_secs(30),
        "the late registrar's binding",
        || kamailio.aors() == ["gw-l"],
    );
    gw.wait_for("/api/v1/federation/sip", "registered", |a| {
        a.json()["registrations"][0]["state"] == "registered"
    });
}
