//! Extended services end to end: the example services, built from Rust
//! and C by `./scripts/guests`, published to a real gateway running the
//! simulated campus, through the CLI and the REST API.
//!
//! Needs the built examples in `$FOGBANK_GUESTS_DIR` (`./scripts/test`
//! builds them first).

use fogbank_testkit as testkit;

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value as Json, json};
use testkit::{Gateway, binary, component, guests, keygen, manifest, publish};

/// A campus that ticks ten times a second, so motion and averages come
/// quickly.
fn campus() -> Gateway {
    campus_with(&[])
}

fn campus_with(env: &[(&str, &str)]) -> Gateway {
    let gw = simulating("", env);
    gw.wait_for_campus("gw-s");
    gw
}

/// Gateway `gw-s` simulating a campus, with `sim` (TOML lines) added to
/// its `[sim]` table; not waited for.
fn simulating(sim: &str, env: &[(&str, &str)]) -> Gateway {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("fogbank.toml");
    std::fs::write(
        &config,
        format!("[sim]\nenabled = true\ninterval_ms = 100\n{sim}"),
    )
    .unwrap();
    let mut env = env.to_vec();
    env.push(("FOGBANK_GATEWAY_ID", "gw-s"));
    Gateway::start(&["--config", config.to_str().unwrap()], &env)
}

/// `fogbank service ...` against the gateway, with its admin token.
fn cli(gw: &Gateway, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("service")
        .args(args)
        .args(["--url", &gw.url(""), "--token", &gw.token()])
        .output()
        .unwrap()
}

fn latest(gw: &Gateway, id: &str) -> Option<Json> {
    let answer = gw.get(&format!("/api/v1/things/{id}/reading"));
    (answer.status == 200).then(|| answer.json()[0].clone())
}

/// Whether a line of the service's log (level, message) passes `check`.
fn logged(gw: &Gateway, service: &str, check: impl Fn(&str, &str) -> bool) -> bool {
    logged_times(gw, service, check) > 0
}

/// How many lines of the service's log (level, message) pass `check`.
fn logged_times(gw: &Gateway, service: &str, check: impl Fn(&str, &str) -> bool) -> usize {
    let logs = gw.get(&format!("/api/v1/services/{service}/logs")).json();
    logs.as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            check(
                l["level"].as_str().unwrap_or(""),
                l["message"].as_str().unwrap_or(""),
            )
        })
        .count()
}

fn wait_until(what: &str, check: impl FnMut() -> bool) {
    wait_within(Duration::from_secs(20), what, check);
}

fn wait_within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_threshold_alarm_switches_a_lamp_and_keeps_its_state_across_upgrade_and_restart() {
    let mut gw = campus();
    // Below every simulated temperature: the first reading sets it off.
    let cold = manifest("threshold-alarm").replace("threshold = 22.0", "threshold = -50.0");
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = dir.path().join("service.toml");
    std::fs::write(&manifest_path, &cold).unwrap();
    let component_path = guests().join("threshold-alarm.wasm");

    // One command publishes it.
    let out = cli(
        &gw,
        &[
            "publish",
            manifest_path.to_str().unwrap(),
            component_path.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("installed threshold-alarm 1.0.0"));

    let lamp = "gw-s.sim.building-a-floor-1.lamp";
    wait_until("the alarm output", || {
        latest(&gw, "gw-s.service.threshold-alarm.alarm").is_some_and(|r| r["vb"] == true)
    });
    wait_until("the lamp to go on", || {
        latest(&gw, lamp).is_some_and(|r| r["vb"] == true)
    });
    let output = gw
        .get("/api/v1/things/gw-s.service.threshold-alarm.alarm")
        .json();
    assert_eq!(output["available"], true);
    assert_eq!(output["location"], "campus/building-a/floor-1");
    assert_eq!(output["type"], "alarm");

    let state = gw.get("/api/v1/services/threshold-alarm/call/state");
    assert_eq!(state.status, 200);
    assert_eq!(state.content_type, "application/json");
    assert_eq!(state.json()["alarm"], true);
    assert_eq!(state.json()["lamp"], lamp);
    assert_eq!(
        gw.get("/api/v1/services/threshold-alarm/call/nothing")
            .status,
        404
    );

    let info = gw.get("/api/v1/services/threshold-alarm").json();
    assert_eq!(info["state"], "running");
    assert!(info["calls"].as_u64().unwrap() >= 2, "{info}");
    assert!(info["cpu_time_ms"].as_f64().unwrap() > 0.0);
    assert!(info["memory_bytes"].as_u64().unwrap() > 0);
    assert!(info["digest"].as_str().unwrap().starts_with("sha256:"));

    // Upgrade in place: same state, the lamp is not switched again.
    let upgraded = publish(
        &gw,
        &cold.replace("version = \"1.0.0\"", "version = \"1.1.0\""),
        &component("threshold-alarm"),
    );
    assert_eq!(
        upgraded.status,
        200,
        "{}",
        String::from_utf8_lossy(&upgraded.body)
    );
    assert_eq!(upgraded.json()["version"], "1.1.0");
    wait_until("the new version", || {
        gw.get("/api/v1/services/threshold-alarm").json()["state"] == "running"
    });
    assert_eq!(
        gw.get("/api/v1/services/threshold-alarm/call/state").json()["alarm"],
        true
    );
    let logs = cli(&gw, &["logs", "threshold-alarm"]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("upgraded to version 1.1.0"), "{logs}");
    assert_eq!(logs.matches("alarm on").count(), 1, "switched once: {logs}");

    // A restart of the gateway brings it back, still running.
    assert!(gw.terminate(Duration::from_secs(10)).success());
    let data_dir = gw.data_dir.clone();
    let gw = Gateway::start_in(&data_dir, &["--demo"], &[("FOGBANK_GATEWAY_ID", "gw-s")]);
    wait_until("the service after the restart", || {
        gw.get("/api/v1/services/threshold-alarm").json()["state"] == "running"
    });
    assert_eq!(
        gw.get("/api/v1/services/threshold-alarm").json()["version"],
        "1.1.0"
    );
    assert_eq!(
        gw.get("/api/v1/services/threshold-alarm/call/state").json()["alarm"],
        true,
        "the key-value state survived"
    );

    // Stop, start, remove through the CLI.
    let stopped = cli(&gw, &["stop", "threshold-alarm"]);
    assert!(String::from_utf8_lossy(&stopped.stdout).contains("stopped"));
    assert_eq!(
        gw.get("/api/v1/things/gw-s.service.threshold-alarm.alarm")
            .json()["available"],
        false
    );
    assert_eq!(
        gw.get("/api/v1/services/threshold-alarm/call/state")
            .assert_problem(503)["type"]
            .as_str()
            .map(|t| t.ends_with("service-unavailable")),
        Some(true)
    );
    assert!(cli(&gw, &["start", "threshold-alarm"]).status.success());
    let list = cli(&gw, &["list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("threshold-alarm"));
    assert!(cli(&gw, &["remove", "threshold-alarm"]).status.success());
    assert_eq!(gw.get("/api/v1/services/threshold-alarm").status, 404);
    assert_eq!(
        gw.get("/api/v1/things/gw-s.service.threshold-alarm.alarm")
            .status,
        404
    );
}

#[test]
fn floor_averages_and_occupancy_lights_run_on_the_campus() {
    let coap_port = testkit::free_udp_port();
    let gw = campus_with(&[("FOGBANK_COAP", &format!("127.0.0.1:{coap_port}"))]);
    assert_eq!(
        publish(&gw, &manifest("floor-average"), &component("floor-average")).status,
        201
    );
    // The C example, with a short hold so the lamps also go off again even
    // in the simulator's busy daytime (motion on 30 % of ticks).
    let occupancy = manifest("occupancy-light").replace("hold-seconds = 30", "hold-seconds = 0.3");
    let answer = publish(&gw, &occupancy, &component("occupancy-light"));
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );

    // Each floor's average is a thing service with plausible readings.
    for floor in 1..=4 {
        let id = format!("gw-s.service.floor-average.floor-{floor}");
        wait_until("a floor average", || latest(&gw, &id).is_some());
        let v = latest(&gw, &id).unwrap()["v"].as_f64().unwrap();
        assert!((10.0..35.0).contains(&v), "{id} = {v}");
    }
    let listed = gw
        .get("/api/v1/things?type=temperature&location=campus/building-a/floor-2")
        .json();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"gw-s.service.floor-average.floor-2"),
        "{ids:?}"
    );
    // Over CoAP (libcoap's client) and live over SSE like any thing service.
    let coap = Command::new("coap-client-notls")
        .args([
            "-m",
            "get",
            "-A",
            "0",
            &format!("coap://127.0.0.1:{coap_port}/things/gw-s.service.floor-average.floor-1"),
        ])
        .output()
        .expect("coap-client-notls is installed (scripts/test installs libcoap3-bin)");
    let text = String::from_utf8_lossy(&coap.stdout);
    assert!(
        text.trim()
            .parse::<f64>()
            .is_ok_and(|v| (10.0..35.0).contains(&v)),
        "{text:?}"
    );
    let events = testkit::read_events(
        &gw.url("/api/v1/things/gw-s.service.floor-average.floor-3/stream"),
        "reading",
        2,
        Duration::from_secs(10),
    );
    assert_eq!(events.len(), 2);

    // Motion in building B lights lamps and is counted; stillness for
    // 0.3 s switches them off again.
    wait_until("an occupied floor", || {
        latest(&gw, "gw-s.service.occupancy-light.occupied")
            .is_some_and(|r| r["v"].as_f64().unwrap_or(0.0) >= 1.0)
    });
    assert!(logged(&gw, "occupancy-light", |level, line| {
        level == "info"
            && line.starts_with("gw-s.sim.building-b-floor-")
            && line.ends_with(".lamp switched on")
    }));
    wait_until("a lamp switched off after stillness", || {
        logged(&gw, "occupancy-light", |_, line| {
            line.ends_with("switched off")
        })
    });
    let status = gw.get("/api/v1/services/occupancy-light/call/").json();
    assert!(status["floors"].as_u64().unwrap() >= 1, "{status}");

    let metrics = String::from_utf8(gw.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("fogbank_services{state=\"running\"} 2"),
        "{metrics}"
    );
}

#[test]
fn a_floor_without_an_output_is_said_once_not_every_tick() {
    // A fifth floor in building A: floor-average declares outputs for four.
    let gw = simulating("floors = 5\n", &[]);
    assert_eq!(
        publish(&gw, &manifest("floor-average"), &component("floor-average")).status,
        201
    );
    let about_floor_5 = |gw: &Gateway| {
        logged_times(gw, "floor-average", |level, line| {
            level == "warn" && line.contains("floor-5")
        })
    };
    wait_until("the warning about floor 5", || about_floor_5(&gw) > 0);
    // Three more ticks (one a second) of the floors that have outputs.
    let time_of = |gw: &Gateway| {
        latest(gw, "gw-s.service.floor-average.floor-1").and_then(|r| r["t"].as_f64())
    };
    for _ in 0..3 {
        let before = time_of(&gw);
        wait_until("the next average of floor 1", || time_of(&gw) != before);
    }
    assert_eq!(about_floor_5(&gw), 1, "said once");
    assert_eq!(
        gw.get("/api/v1/services/floor-average").json()["state"],
        "running"
    );
}

#[test]
fn the_manifest_is_the_whole_of_a_services_rights() {
    let gw = campus();
    // The alarm without its actuate grant: the host refuses the command and
    // the guest hears why; the lamp is untouched.
    let ungranted = manifest("threshold-alarm")
        .replace("threshold = 22.0", "threshold = -50.0")
        .replace(
            "actuate = [{ type = \"switch\", location = \"campus/building-a/floor-1\" }]",
            "actuate = []",
        );
    assert_eq!(
        publish(&gw, &ungranted, &component("threshold-alarm")).status,
        201
    );
    wait_until("the refusal in the log", || {
        logged(&gw, "threshold-alarm", |level, line| {
            level == "error" && line.contains("the manifest grants no actuation")
        })
    });
    assert_eq!(
        latest(&gw, "gw-s.sim.building-a-floor-1.lamp").unwrap()["vb"],
        false
    );
    assert!(latest(&gw, "gw-s.service.threshold-alarm.alarm").is_none());
    assert_eq!(
        gw.get("/api/v1/services/threshold-alarm").json()["state"],
        "running",
        "a refused call is an answer, not a failure"
    );
}

#[test]
fn publishing_needs_an_admin_and_a_component_that_fits() {
    let gw = Gateway::start(&[], &[("FOGBANK_GATEWAY_ID", "gw-p")]);
    let body = json!({"manifest": manifest("floor-average"), "component": base64::engine::general_purpose::STANDARD.encode(component("floor-average"))}).to_string();
    let anonymous = gw.request(
        "POST",
        "/api/v1/services",
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    );
    anonymous.assert_problem(401);

    let not_a_component = publish(&gw, &manifest("floor-average"), b"\0asm\x01\0\0\0");
    let problem = not_a_component.assert_problem(400);
    assert!(
        problem["detail"].as_str().unwrap().contains("component"),
        "{problem}"
    );
    let bad_manifest = publish(
        &gw,
        "name = \"Bad\"\nversion = \"1\"",
        &component("floor-average"),
    );
    let problem = bad_manifest.assert_problem(400);
    assert!(
        problem["detail"].as_str().unwrap().contains("lower-case"),
        "{problem}"
    );
    let not_json = gw.write("POST", "/api/v1/services", "application/json", b"{");
    not_json.assert_problem(400);
    assert_eq!(gw.get("/api/v1/services").json(), json!([]));
    gw.get("/api/v1/services/nobody").assert_problem(404);
    gw.get("/api/v1/services/nobody/call/x").assert_problem(404);
}

#[test]
fn a_gateway_with_trusted_keys_runs_only_what_they_signed() {
    let keys = tempfile::tempdir().unwrap();
    let (publisher, public) = keygen(keys.path(), "publisher.key");
    let (stranger, stranger_public) = keygen(keys.path(), "stranger.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&publisher).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = Command::new(binary())
        .args(["service", "keygen", "--to"])
        .arg(&publisher)
        .output()
        .unwrap();
    assert!(!again.status.success(), "a key was overwritten");

    let config = keys.path().join("fogbank.toml");
    std::fs::write(
        &config,
        format!("[services]\ntrusted_keys = [\"{public}\"]\n"),
    )
    .unwrap();
    let gw = Gateway::start(
        &["--config", config.to_str().unwrap()],
        &[("FOGBANK_GATEWAY_ID", "gw-t")],
    );
    let guest = guests();
    let (toml, wasm) = (
        guest.join("floor-average.toml"),
        guest.join("floor-average.wasm"),
    );
    let (toml, wasm) = (toml.to_str().unwrap(), wasm.to_str().unwrap());

    let unsigned = cli(&gw, &["publish", toml, wasm]);
    assert!(!unsigned.status.success());
    assert!(
        String::from_utf8_lossy(&unsigned.stderr).contains("not signed"),
        "{unsigned:?}"
    );
    let by_stranger = cli(
        &gw,
        &["publish", toml, wasm, "--sign", stranger.to_str().unwrap()],
    );
    assert!(
        String::from_utf8_lossy(&by_stranger.stderr).contains("does not trust"),
        "{by_stranger:?}"
    );
    // Signed, then given more rights than were signed for.
    let key = fogbank_services::PublisherKey::from_file_text(
        &std::fs::read_to_string(&publisher).unwrap(),
    )
    .unwrap();
    let signed_manifest = manifest("floor-average");
    let signature =
        fogbank_services::sign(&key, &signed_manifest, &component("floor-average")).unwrap();
    let widened = signed_manifest.replace("[grants]", "[grants]\nactuate = [{ type = \"lamp\" }]");
    assert_ne!(
        widened, signed_manifest,
        "the manifest has a [grants] table"
    );
    let body = json!({
        "manifest": widened,
        "component": base64::engine::general_purpose::STANDARD.encode(component("floor-average")),
        "signature": {"key": signature.key, "value": signature.value},
    });
    let tampered = gw.write(
        "POST",
        "/api/v1/services",
        "application/json",
        body.to_string().as_bytes(),
    );
    let problem = tampered.assert_problem(403);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("changed after signing"),
        "{problem}"
    );
    assert_eq!(gw.get("/api/v1/services").json(), json!([]));

    let signed = cli(
        &gw,
        &["publish", toml, wasm, "--sign", publisher.to_str().unwrap()],
    );
    assert!(signed.status.success(), "{signed:?}");
    let info = gw.get("/api/v1/services/floor-average").json();
    assert_eq!(info["signed_by"], json!(public));
    wait_until("the signed service runs", || {
        gw.get("/api/v1/services/floor-average").json()["state"] == "running"
    });

    // The operator trusts only the other key now: a reload stops running
    // what the old one signed, and says why.
    std::fs::write(
        &config,
        format!("[services]\ntrusted_keys = [\"{stranger_public}\"]\n"),
    )
    .unwrap();
    gw.hangup();
    wait_until("the service no longer runs here", || {
        let info = gw.get("/api/v1/services/floor-average").json();
        info["state"] != "running"
            && info["placement"]
                .as_str()
                .unwrap_or("")
                .contains("does not trust")
    });
}

/// For a Python service, whose restarts and first compile take longer.
fn wait_long(what: &str, check: impl FnMut() -> bool) {
    wait_within(Duration::from_secs(60), what, check);
}

#[test]
fn python_services_run_and_a_misbehaving_one_is_contained() {
    let gw = campus();
    let guest = guests();
    let published = cli(
        &gw,
        &[
            "publish",
            guest.join("rolling-stats.toml").to_str().unwrap(),
            guest.join("rolling-stats.wasm").to_str().unwrap(),
        ],
    );
    assert!(published.status.success(), "{published:?}");
    // CPython compiles for seconds: the CLI said how it went meanwhile.
    assert!(
        String::from_utf8_lossy(&published.stderr).contains("rolling-stats: compiling 18."),
        "{published:?}"
    );
    assert_eq!(gw.get("/api/v1/publications").json(), json!([]));
    let figure = |output: &str| {
        latest(&gw, &format!("gw-s.service.rolling-stats.{output}")).and_then(|r| r["v"].as_f64())
    };
    wait_long("the building's statistics", || {
        ["mean", "min", "max"].iter().all(|o| figure(o).is_some())
    });
    let (mean, min, max) = (
        figure("mean").unwrap(),
        figure("min").unwrap(),
        figure("max").unwrap(),
    );
    assert!(min <= mean && mean <= max, "{min} {mean} {max}");
    let stats = gw.get("/api/v1/services/rolling-stats/call/stats").json();
    let sensors: Vec<&String> = stats.as_object().unwrap().keys().collect();
    assert_eq!(
        sensors.len(),
        4,
        "one window a floor of building B: {stats}"
    );
    assert!(
        sensors.iter().all(|id| id.contains("building-b")),
        "{sensors:?}"
    );

    // Three misbehaving copies of one component (its limits: 64 MiB,
    // 100 ms of CPU a call): raising, spinning, hoarding. The hoarder gets
    // two seconds of CPU a call, so that its memory limit stops it however
    // slow the machine (filling 64 MiB costs CPython tens of milliseconds).
    let component = component("misbehaving-python");
    for mode in ["raise", "spin", "bomb"] {
        let mut manifest = manifest("misbehaving-python")
            .replace(
                "name = \"misbehaving-python\"",
                &format!("name = \"py-{mode}\""),
            )
            .replace("mode = \"raise\"", &format!("mode = \"{mode}\""));
        if mode == "bomb" {
            manifest = manifest.replace("cpu-ms = 100", "cpu-ms = 2000");
            assert!(manifest.contains("cpu-ms = 2000"), "{manifest}");
        }
        let answer = publish(&gw, &manifest, &component);
        assert_eq!(
            answer.status,
            201,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    // What Python printed and its traceback are in the service's log.
    wait_long("the traceback in the log", || {
        logged(&gw, "py-raise", |level, message| {
            level == "error" && message == "ZeroDivisionError: division by zero"
        }) && logged(&gw, "py-raise", |level, message| {
            level == "error" && message.starts_with("Traceback")
        }) && logged(&gw, "py-raise", |level, message| {
            level == "info" && message.starts_with("dividing ")
        })
    });
    for (mode, reason) in [
        ("spin", "CPU deadline of 100 ms"),
        ("bomb", "memory limit of 64 MiB"),
    ] {
        wait_long(&format!("py-{mode} given up"), || {
            let info = gw.get(&format!("/api/v1/services/py-{mode}")).json();
            info["state"] == "failed" && info["reason"].as_str().unwrap_or("").contains(reason)
        });
    }
    // The well-behaved one carried on meanwhile.
    let before = latest(&gw, "gw-s.service.rolling-stats.mean").unwrap()["t"]
        .as_f64()
        .unwrap();
    wait_long("a newer mean", || {
        latest(&gw, "gw-s.service.rolling-stats.mean")
            .and_then(|r| r["t"].as_f64())
            .is_some_and(|t| t > before)
    });
}

/// `fogbank service new|build` with the guests' toolchain on the PATH
/// (componentize-py from the test peers' virtualenv), building Rust with
/// the examples' target dir, whose standard library for wasm32 is built.
fn developer(args: &[&str]) -> std::process::Output {
    let venv = std::path::Path::new(&testkit::python())
        .parent()
        .map(std::path::Path::to_owned)
        .unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(venv).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let mut command = Command::new(binary());
    command.arg("service").args(args).env("PATH", path);
    if let Some(target) = std::env::var_os("FOGBANK_GUESTS_TARGET") {
        command.env("CARGO_TARGET_DIR", target);
    }
    command.output().unwrap()
}

#[test]
fn each_languages_template_builds_and_runs_on_a_gateway() {
    let projects = tempfile::tempdir().unwrap();
    let gw = campus();
    for language in ["rust", "c", "python"] {
        let name = format!("max-{language}");
        let made = developer(&[
            "new",
            &name,
            "--lang",
            language,
            "--to",
            projects.path().to_str().unwrap(),
        ]);
        assert!(made.status.success(), "{made:?}");
        let project = projects.path().join(&name);
        let built = developer(&["build", project.to_str().unwrap()]);
        assert!(built.status.success(), "{language}: {built:?}");
        // Its own test, in the harness: the outputs it expects.
        let tested = developer(&["test", project.to_str().unwrap()]);
        assert!(tested.status.success(), "{language}: {tested:?}");
        assert!(
            String::from_utf8_lossy(&tested.stdout).contains("outputs as expected"),
            "{language}: {tested:?}"
        );
        let component = project.join(format!("{name}.wasm"));
        let published = cli(
            &gw,
            &[
                "publish",
                project.join("service.toml").to_str().unwrap(),
                component.to_str().unwrap(),
            ],
        );
        assert!(published.status.success(), "{language}: {published:?}");
    }
    // Each publishes the highest temperature of the campus it hears, and
    // answers it at /call/.
    for language in ["rust", "c", "python"] {
        let output = format!("gw-s.service.max-{language}.max");
        wait_long(&format!("{output} published"), || {
            latest(&gw, &output).is_some()
        });
        let called = gw.get(&format!("/api/v1/services/max-{language}/call/"));
        assert_eq!(called.status, 200, "{language}");
        assert!(
            called.json()["highest"].as_f64().is_some(),
            "{language}: {:?}",
            called.json()
        );
    }

    // The harness's report is the same every run, and a wrong expectation
    // fails it.
    let python = projects.path().join("max-python");
    let report = |args: &[&str]| {
        let out = developer(&[&["test", python.to_str().unwrap()], args].concat());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, first, _) = report(&["--json"]);
    assert!(ok);
    let first: Json = serde_json::from_str(&first).unwrap();
    assert_eq!(first["readings"], 3, "{first}");
    let (_, second, _) = report(&["--json"]);
    assert_eq!(serde_json::from_str::<Json>(&second).unwrap(), first);
    let wrong = projects.path().join("wrong.json");
    std::fs::write(
        &wrong,
        r#"[{"time": 1700000000000000, "output": "max", "value": 99}]"#,
    )
    .unwrap();
    let (ok, _, stderr) = report(&["--expect", wrong.to_str().unwrap()]);
    assert!(!ok && stderr.contains("the outputs differ"), "{stderr}");

    // A project that exists is not overwritten; a bad name is refused.
    let again = developer(&[
        "new",
        "max-c",
        "--lang",
        "c",
        "--to",
        projects.path().to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists already"),
        "{again:?}"
    );
    let bad = developer(&[
        "new",
        "Bad Name",
        "--lang",
        "c",
        "--to",
        projects.path().to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    // Without its toolchain, the build says what to install.
    let no_tools = Command::new(binary())
        .args(["service", "build"])
        .arg(projects.path().join("max-python"))
        .env("PATH", "/usr/bin:/bin")
        .env("FOGBANK_TOOLS", projects.path())
        .output()
        .unwrap();
    assert!(!no_tools.status.success());
    assert!(
        String::from_utf8_lossy(&no_tools.stderr).contains("pip install componentize-py==0.25.0"),
        "{no_tools:?}"
    );
}
