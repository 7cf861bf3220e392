//! Durability, restarts, shutdown, configuration and the CLI, each against
//! the real binary.

use fogbank_testkit as testkit;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{Gateway, binary};

/// N readings acknowledged over HTTP, `kill -9`, restart: all N are there.
#[test]
fn acknowledged_readings_survive_kill_9() {
    const BATCHES: usize = 50;
    const PER_BATCH: usize = 100;
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let env = [("FOGBANK_GATEWAY_ID", "gw-d")];
    let mut gw = Gateway::start_in(&data_dir, &[], &env);
    let path = "/api/v1/things/gw-d.http.meter-1.energy/readings";
    // Recent times: the default retention keeps 30 days.
    let base = (testkit::now_secs() - 3600.0).floor();
    for batch in 0..BATCHES {
        let pack: Vec<_> = (0..PER_BATCH)
            .map(|i| {
                let n = batch * PER_BATCH + i;
                json!({"t": base + n as f64 * 0.001, "v": n as f64 * 0.5})
            })
            .collect();
        let answer = gw.post_senml(path, &json!(pack));
        assert_eq!(answer.status, 200, "batch {batch} acknowledged");
    }
    gw.kill9();

    let gw = Gateway::start_in(&data_dir, &[], &env);
    let history = gw.get(&format!("{path}?from=0&limit=100000")).json();
    let records = history.as_array().unwrap();
    assert_eq!(
        records.len(),
        BATCHES * PER_BATCH,
        "every acknowledged reading is back"
    );
    for (n, record) in records.iter().enumerate() {
        assert_eq!(record["v"].as_f64().unwrap(), n as f64 * 0.5);
        assert!((record["t"].as_f64().unwrap() - (base + n as f64 * 0.001)).abs() < 1e-6);
    }
    let thing = gw.get("/api/v1/things/gw-d.http.meter-1.energy").json();
    assert_eq!(thing["type"], "energy");
    // The latest reading is known at once after the restart.
    let latest = gw
        .get("/api/v1/things/gw-d.http.meter-1.energy/reading")
        .json();
    assert_eq!(
        latest[0]["v"].as_f64().unwrap(),
        (BATCHES * PER_BATCH - 1) as f64 * 0.5
    );
}

/// `fogbank backup` copies a running gateway's store while it writes;
/// `fogbank restore` makes a data directory of the copy, and a gateway
/// started on it has every reading acknowledged before the backup.
#[test]
fn a_backup_under_load_restores_every_acknowledged_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [("FOGBANK_GATEWAY_ID", "gw-k")];
    let gw = Gateway::start_in(&tmp.path().join("data"), &["--demo"], &env);
    let path = "/api/v1/things/gw-k.http.meter-1.energy/readings";
    let base = (testkit::now_secs() - 3600.0).floor();
    let post = |n: usize| {
        let answer = gw.post_senml(path, &json!([{"t": base + n as f64, "v": n as f64}]));
        assert_eq!(answer.status, 200, "reading {n} acknowledged");
    };
    for n in 0..200 {
        post(n);
    }
    let (url, data_dir) = (gw.url(""), gw.data_dir.clone());
    let cli = |args: &[&str]| {
        let out = Command::new(binary())
            .args(args)
            .env("FOGBANK_URL", &url)
            .env("FOGBANK_DATA_DIR", &data_dir)
            .env_remove("FOGBANK_TOKEN")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), said)
    };
    // Readings keep coming (and the simulator's 40 a second) while it copies.
    let backup = tmp.path().join("backup");
    let writing = std::sync::atomic::AtomicBool::new(true);
    let (ok, said) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut n = 200;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                post(n);
                n += 1;
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let result = cli(&["backup", "--to", backup.to_str().unwrap()]);
        writing.store(false, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        result
    });
    assert!(ok, "{said}");
    assert!(said.contains("backed up to"), "{said}");
    // Nothing is overwritten, and a relative path means nothing to the gateway.
    let answer = gw.write(
        "POST",
        "/api/v1/backup",
        "application/json",
        json!({"to": backup}).to_string().as_bytes(),
    );
    answer.assert_problem(409);
    gw.write(
        "POST",
        "/api/v1/backup",
        "application/json",
        br#"{"to": "here"}"#,
    )
    .assert_problem(400);
    drop(gw);

    let restored_dir = tmp.path().join("restored");
    let restore = |from: &std::path::Path| {
        let from = from.to_str().unwrap();
        cli(&[
            "restore",
            "--from",
            from,
            "--data-dir",
            restored_dir.to_str().unwrap(),
        ])
    };
    let (ok, said) = restore(tmp.path().join("nothing-here").as_path());
    assert!(!ok && said.contains("is not a fogbank backup"), "{said}");
    let (ok, said) = restore(&backup);
    assert!(ok, "{said}");
    // A second restore would overwrite the store it made: refused.
    let (ok, said) = restore(&backup);
    assert!(!ok && said.contains("holds a store already"), "{said}");

    let gw = Gateway::start_in(&restored_dir, &[], &env);
    let values = gw
        .get(&format!("{path}?from=0&limit=100000"))
        .senml_numbers();
    assert!(values.len() >= 200, "{} readings", values.len());
    for (n, v) in values.iter().enumerate() {
        assert_eq!(*v, n as f64, "no reading lost or out of place");
    }
}

/// A restart keeps the catalog; things come back unavailable until their
/// adapter announces them again.
#[test]
fn the_catalog_survives_a_restart_and_availability_follows_the_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let env = [("FOGBANK_GATEWAY_ID", "gw-r")];
    let lamp = "/api/v1/things/gw-r.sim.building-b-floor-1.lamp";
    let mut gw = Gateway::start_in(&data_dir, &["--demo"], &env);
    gw.wait_for_campus("gw-r");
    assert_eq!(
        gw.write(
            "PUT",
            &format!("{lamp}/actuation"),
            "application/json",
            br#"{"value": true}"#
        )
        .status,
        200
    );
    assert_eq!(gw.terminate(Duration::from_secs(10)).code(), Some(0));

    // Without the simulator the things are known but unavailable.
    let mut gw = Gateway::start_in(&data_dir, &[], &env);
    let things = gw.get("/api/v1/things").json();
    assert_eq!(things.as_array().unwrap().len(), 40);
    assert!(
        things
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["available"] == false)
    );
    assert_eq!(
        gw.get(&format!("{lamp}/reading")).json()[0]["vb"],
        true,
        "the last state is still there"
    );
    gw.write(
        "PUT",
        &format!("{lamp}/actuation"),
        "application/json",
        br#"{"value": false}"#,
    )
    .assert_problem(409);
    assert_eq!(gw.terminate(Duration::from_secs(10)).code(), Some(0));

    // With it they are available again and the lamp kept its state.
    let gw = Gateway::start_in(&data_dir, &["--demo"], &env);
    gw.wait_for_campus("gw-r");
    assert!(
        gw.get("/api/v1/things?available=false")
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(gw.get(&format!("{lamp}/reading")).json()[0]["vb"], true);
}

#[test]
fn sigterm_stops_promptly_even_with_open_streams() {
    let mut gw = Gateway::demo();
    let url = gw.url("/api/v1/things/gw-t.sim.building-a-floor-1.motion/stream");
    let reader = std::thread::spawn(move || {
        testkit::read_events(&url, "reading", 1_000_000, Duration::from_secs(30)).len()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let status = gw.terminate(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "a clean exit");
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "took {:?}",
        started.elapsed()
    );
    let received = reader.join().unwrap();
    assert!(received >= 1, "the stream delivered before it was closed");
}

#[test]
fn flags_override_environment_which_overrides_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("fogbank.toml");
    let token = "cfg-token-0123456789abcdef";
    std::fs::write(
        &config,
        format!(
            "gateway_id = \"from-file\"\n[auth]\nread_requires_token = true\n[[auth.tokens]]\nname = \"ops\"\ntoken = \"{token}\"\nscopes = [\"write\"]\n[sim]\nenabled = true\nfloors = 1\n"
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();

    let gw = Gateway::start(&["--config", config_arg], &[]);
    let auth = format!("Bearer {token}");
    gw.get("/api/v1/things").assert_problem(401);
    // One floor per building, from the file; the simulator announces
    // them shortly after start-up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let things = loop {
        let things = gw
            .request("GET", "/api/v1/things", &[("Authorization", &auth)], None)
            .json();
        if things.as_array().unwrap().len() == 2 * 5 {
            break things;
        }
        assert!(
            Instant::now() < deadline,
            "expected 10 thing services: {things}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(things[0]["id"].as_str().unwrap().starts_with("from-file."));
    assert!(
        !gw.data_dir.join("admin.token").exists(),
        "configured tokens need no generated one"
    );
    drop(gw);

    let gw = Gateway::start(
        &["--config", config_arg],
        &[("FOGBANK_GATEWAY_ID", "from-env")],
    );
    let health = gw.request("GET", "/health", &[], None).json();
    assert_eq!(health["gateway"], "from-env");
    drop(gw);

    let gw = Gateway::start(
        &["--config", config_arg, "--gateway-id", "From Flag"],
        &[("FOGBANK_GATEWAY_ID", "from-env")],
    );
    assert_eq!(
        gw.get("/health").json()["gateway"],
        "from-flag",
        "flags win, and ids are sanitised"
    );
}

#[test]
fn bad_configuration_is_a_clear_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("bad.toml");
    std::fs::write(&config, "[http]\nlisen = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(binary())
        .args(["run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lisen"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = Command::new(binary())
        .args(["run", "--http", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap rejects it");

    let gw = Gateway::demo();
    let data_dir = gw.data_dir.to_str().unwrap().to_owned();
    let out = Command::new(binary())
        .args(["run", "--data-dir", &data_dir, "--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another fogbank"),
        "a locked data dir is explained"
    );

    // A taken HTTP port, with adapters configured that would otherwise
    // have started already.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["run", "--demo", "--http", &address, "--data-dir"])
        .arg(tmp.path())
        .env("FOGBANK_MQTT", "off")
        .env("FOGBANK_COAP", "off")
        .env("FOGBANK_P2P", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot listen for HTTP") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// `fogbank config check` names every problem of a file with its line and
/// key, and passes the shipped examples; `fogbank config show` prints what
/// `run` would use, with the environment and flags over the file and the
/// secrets masked.
#[test]
fn config_check_names_every_problem_and_show_masks_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "gateway_id = \"gw-a\"\ncolour = \"blue\"\n\n[http]\nmax_body_bytes = \"big\"\n\n\
         [log]\nformat = \"xml\"\n\n[[auth.tokens]]\nname = \"ops\"\ntoken = \"short\"\nscopes = [\"read\"]\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.split_once(": line "))
        .map(|(_, problem)| problem)
        .collect();
    assert_eq!(named.len(), 4, "{stderr}");
    for (problem, line_and_key) in named.iter().zip([
        "2: colour: unknown field",
        "5: http.max_body_bytes: invalid type",
        "8: log.format: \"xml\"",
        "12: auth.tokens.0.token: token \"ops\" is shorter",
    ]) {
        assert!(
            problem.starts_with(line_and_key),
            "{problem:?} is not {line_and_key:?}"
        );
    }

    for (example, flag) in [
        ("fogbank.example.toml", None),
        ("controller.example.toml", Some("--controller")),
    ] {
        let out = Command::new(binary())
            .args(["config", "check"])
            .args(flag)
            .arg(testkit::package_file(&format!("../deploy/{example}")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{example}: {out:?}");
    }

    let good = tmp.path().join("good.toml");
    std::fs::write(
        &good,
        "gateway_id = \"from-file\"\n[http]\nlisten = \"127.0.0.1:8000\"\n[mqtt]\nmode = \"external\"\n\
         password = \"broker-secret-1\"\n[[auth.tokens]]\nname = \"ops\"\ntoken = \"token-secret-123456\"\nscopes = [\"admin\"]\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["config", "show", "--config"])
        .arg(&good)
        .args(["--gateway-id", "from-flag"])
        .env("FOGBANK_HTTP", "127.0.0.1:9001")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    let config: toml::Value = toml::from_str(&shown).unwrap();
    assert_eq!(config["gateway_id"].as_str(), Some("from-flag"));
    assert_eq!(config["http"]["listen"].as_str(), Some("127.0.0.1:9001"));
    assert_eq!(config["mqtt"]["mode"].as_str(), Some("external"));
    assert_eq!(
        config["auth"]["tokens"][0]["token"].as_str(),
        Some("********")
    );
    assert_eq!(config["mqtt"]["password"].as_str(), Some("********"));
    assert!(!shown.contains("secret"), "{shown}");
}

/// SIGHUP takes new tokens without a restart; a config with problems
/// changes nothing (counted as refused) and the gateway serves on.
#[test]
fn sighup_reloads_tokens_and_refuses_a_broken_config() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("fogbank.toml");
    let write = |tokens: &[&str], extra: &str| {
        let mut text = format!("[auth]\nread_requires_token = true\n{extra}");
        for (i, token) in tokens.iter().enumerate() {
            text += &format!(
                "[[auth.tokens]]\nname = \"t{i}\"\ntoken = \"{token}\"\nscopes = [\"read\"]\n"
            );
        }
        std::fs::write(&config, text).unwrap();
    };
    let first = "first-token-0123456789";
    let second = "second-token-0123456789";
    write(&[first], "");
    let gw = Gateway::start(&["--config", config.to_str().unwrap()], &[]);
    let status = |token: &str| {
        gw.request(
            "GET",
            "/api/v1/things",
            &[("Authorization", &format!("Bearer {token}"))],
            None,
        )
        .status
    };
    let reloads = |outcome: &str| -> u64 {
        let metrics = gw.request(
            "GET",
            "/metrics",
            &[("Authorization", &format!("Bearer {first}"))],
            None,
        );
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        let sample = format!("fogbank_config_reloads_total{{outcome=\"{outcome}\"}}");
        testkit::metric_sample(&text, &sample).unwrap_or_else(|| panic!("no {sample} in {text}"))
            as u64
    };
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!((status(first), status(second)), (200, 401));

    // A config with problems: nothing changes.
    write(&[first, second, "short"], "");
    gw.hangup();
    wait_until("the broken config was refused", &|| reloads("refused") == 1);
    assert_eq!((status(first), status(second)), (200, 401));
    assert_eq!(reloads("reloaded"), 0);

    // The first token goes, the second comes: no restart.
    write(&[first, second], "");
    gw.hangup();
    wait_until("the new tokens were taken", &|| status(second) == 200);
    assert_eq!(reloads("reloaded"), 1);
    write(&[second], "[log]\nfilter = \"debug\"\n");
    gw.hangup();
    wait_until("the first token was dropped", &|| status(first) == 401);
    assert_eq!(status(second), 200);
    assert!(gw.get("/health").status == 200);
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): READY=1 once it serves,
/// watchdog pings while it runs, RELOADING=1 then READY=1 around a
/// SIGHUP, STOPPING=1 at SIGTERM — datagrams to `$NOTIFY_SOCKET`, read
/// here as systemd reads them.
#[test]
fn systemd_hears_ready_watchdog_reload_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let socket_path = tmp.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut next = || {
        let mut buffer = [0u8; 512];
        let n = socket
            .recv(&mut buffer)
            .expect("a notification within 10 s");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    let mut gw = Gateway::start(
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    assert_eq!(next(), "READY=1");
    assert_eq!((next(), next()), ("WATCHDOG=1".into(), "WATCHDOG=1".into()));

    gw.hangup();
    let around_reload: Vec<String> = std::iter::repeat_with(&mut next)
        .filter(|state| state != "WATCHDOG=1")
        .take(2)
        .collect();
    assert_eq!(around_reload, ["RELOADING=1", "READY=1"]);

    assert!(gw.terminate(Duration::from_secs(10)).success());
    let last = std::iter::repeat_with(&mut next)
        .find(|state| state != "WATCHDOG=1")
        .unwrap();
    assert_eq!(last, "STOPPING=1");
}

#[test]
fn the_cli_is_a_client_of_a_running_gateway() {
    let gw = Gateway::demo();
    let cli = |args: &[&str]| {
        let out = Command::new(binary())
            .args(args)
            .env("FOGBANK_URL", gw.url(""))
            .env("FOGBANK_DATA_DIR", &gw.data_dir)
            .env_remove("FOGBANK_TOKEN")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = cli(&["things", "--type", "switch"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.lines().filter(|l| l.contains(".lamp")).count(),
        8,
        "{out}"
    );

    let (code, out, _) = cli(&[
        "things",
        "--location",
        "campus/building-a/floor-1",
        "--json",
    ]);
    assert_eq!(code, Some(0));
    let things: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(things.as_array().unwrap().len(), 5);

    let (code, out, _) = cli(&["things", "show", "gw-t.sim.building-a-floor-1.temperature"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"unit\": \"Cel\""), "{out}");

    let (code, out, _) = cli(&["reading", "gw-t.sim.building-a-floor-1.temperature"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("Cel"), "{out}");

    let (code, out, err) = cli(&["actuate", "gw-t.sim.building-a-floor-1.lamp", "true"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("succeeded"), "{out}");

    let (code, _, err) = cli(&["reading", "gw-t.sim.nowhere.temperature"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "{err}");

    let (code, out, _) = cli(&["new-token"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim().len(), 64);
}

#[test]
fn an_admin_token_from_the_environment_replaces_the_generated_one() {
    let token = "env-admin-token-0123456789";
    let gw = Gateway::start(
        &["--demo"],
        &[
            ("FOGBANK_ADMIN_TOKEN", token),
            ("FOGBANK_GATEWAY_ID", "gw-e"),
        ],
    );
    assert!(!gw.data_dir.join("admin.token").exists());
    gw.wait_for_campus("gw-e");
    let path = "/api/v1/things/gw-e.sim.building-a-floor-1.lamp/actuation";
    let auth = format!("Bearer {token}");
    let answer = gw.request(
        "PUT",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(br#"{"value": true}"#),
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    gw.request(
        "PUT",
        path,
        &[("Content-Type", "application/json")],
        Some(br#"{"value": true}"#),
    )
    .assert_problem(401);
}
