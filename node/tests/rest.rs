//! The REST API of a real gateway process, through a real HTTP client.

use fogbank_testkit as testkit;

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{Gateway, read_events};

const LAMP: &str = "gw-t.sim.building-a-floor-2.lamp";
const LIGHT: &str = "gw-t.sim.building-a-floor-2.light";
const TEMPERATURE: &str = "gw-t.sim.building-b-floor-3.temperature";

fn ids(things: &Value) -> Vec<String> {
    things
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_demo_campus_is_listed_and_filtered() {
    let gw = Gateway::demo();
    let all = gw.get("/api/v1/things").json();
    assert_eq!(
        ids(&all).len(),
        2 * 4 * 5,
        "two buildings, four floors, five thing services each"
    );
    let mut sorted = ids(&all);
    sorted.sort();
    assert_eq!(ids(&all), sorted, "ordered by id");

    let lamps = gw.get("/api/v1/things?type=switch").json();
    assert_eq!(ids(&lamps).len(), 8);
    assert!(
        lamps
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["kind"] == "actuator" && t["data_type"] == "boolean")
    );
    assert_eq!(
        ids(&gw.get("/api/v1/things?kind=actuator").json()),
        ids(&lamps)
    );

    let floor = gw
        .get("/api/v1/things?location=campus/building-b/floor-3")
        .json();
    assert_eq!(ids(&floor).len(), 5);
    assert!(ids(&floor).contains(&TEMPERATURE.to_owned()));
    assert_eq!(
        ids(&gw.get("/api/v1/things?location=campus/building-b").json()).len(),
        20
    );
    assert!(
        ids(&gw.get("/api/v1/things?location=campus/building").json()).is_empty(),
        "prefixes match whole segments"
    );
    assert_eq!(
        ids(&gw
            .get("/api/v1/things?gateway=gw-t&available=true&type=temperature")
            .json())
        .len(),
        8
    );
    assert!(ids(&gw.get("/api/v1/things?gateway=elsewhere").json()).is_empty());
    assert!(ids(&gw.get("/api/v1/things?available=false").json()).is_empty());

    gw.get("/api/v1/things?kind=robot").assert_problem(400);
    gw.get("/api/v1/things?available=maybe").assert_problem(400);
    gw.get("/api/v1/things?colour=red").assert_problem(400);
}

#[test]
fn a_thing_its_description_reading_and_history() {
    let gw = Gateway::demo();
    let thing = gw.get(&format!("/api/v1/things/{TEMPERATURE}")).json();
    assert_eq!(thing["unit"], "Cel");
    assert_eq!(thing["location"], "campus/building-b/floor-3");
    assert_eq!(thing["gateway"], "gw-t");
    assert_eq!(thing["adapter"], "sim");

    let td = gw.get(&format!("/api/v1/things/{LAMP}/td"));
    assert_eq!(td.content_type, "application/td+json");
    let td = td.json();
    assert_eq!(td["id"], format!("urn:fogbank:{LAMP}"));
    assert_eq!(
        td["actions"]["actuate"]["forms"][0]["href"],
        format!("/api/v1/things/{LAMP}/actuation")
    );
    // A Host header is not where the forms point.
    let spoofed = gw.request(
        "GET",
        &format!("/api/v1/things/{LAMP}/td"),
        &[("Host", "attacker.example")],
        None,
    );
    assert!(
        !String::from_utf8_lossy(&spoofed.body).contains("attacker.example"),
        "{}",
        String::from_utf8_lossy(&spoofed.body)
    );
    // An independent WoT consumer validates the TDs against the W3C TD 1.1
    // schema, their terms against their @context, and what each read form
    // returns against its property's schema.
    for thing in [LAMP, TEMPERATURE] {
        let consumer = std::process::Command::new(testkit::python())
            .arg(testkit::package_file("tests/peers/wot_consumer.py"))
            .arg(gw.url(&format!("/api/v1/things/{thing}/td")))
            .arg(gw.token())
            .output()
            .expect("the WoT consumer runs");
        assert!(
            consumer.status.success(),
            "{thing}: {}{}",
            String::from_utf8_lossy(&consumer.stdout),
            String::from_utf8_lossy(&consumer.stderr)
        );
    }

    let reading = gw.get(&format!("/api/v1/things/{TEMPERATURE}/reading"));
    assert_eq!(reading.content_type, "application/senml+json");
    let pack = reading.json();
    assert_eq!(pack[0]["bn"], TEMPERATURE);
    assert_eq!(pack[0]["bu"], "Cel");
    let celsius = pack[0]["v"].as_f64().unwrap();
    assert!((10.0..35.0).contains(&celsius), "{celsius}");

    let cbor = gw.request(
        "GET",
        &format!("/api/v1/things/{TEMPERATURE}/reading"),
        &[("Accept", "application/senml+cbor")],
        None,
    );
    assert_eq!(cbor.content_type, "application/senml+cbor");
    assert_eq!(cbor.body[0] & 0xE0, 0x80, "a CBOR array");
    gw.request(
        "GET",
        &format!("/api/v1/things/{TEMPERATURE}/reading"),
        &[("Accept", "text/html")],
        None,
    )
    .assert_problem(406);

    // The simulator samples every second: wait for three readings.
    let history = gw.wait_for(
        &format!("/api/v1/things/{TEMPERATURE}/readings"),
        "three readings",
        |a| a.status == 200 && a.json().as_array().is_some_and(|p| p.len() >= 3),
    );
    let pack = history.json();
    let times: Vec<f64> = pack
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["t"].as_f64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {times:?}"
    );
    let newest_two = gw
        .get(&format!("/api/v1/things/{TEMPERATURE}/readings?limit=2"))
        .json();
    assert_eq!(newest_two.as_array().unwrap().len(), 2);
    let (older, newer) = (
        newest_two[0]["t"].as_f64().unwrap(),
        newest_two[1]["t"].as_f64().unwrap(),
    );
    assert!(
        older < newer && newer >= times[times.len() - 1],
        "the newest two, in order: {older} {newer}"
    );
    let from_second = gw
        .get(&format!(
            "/api/v1/things/{TEMPERATURE}/readings?from={}&to={}",
            times[1], times[2]
        ))
        .json();
    let window: Vec<f64> = from_second
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["t"].as_f64().unwrap())
        .collect();
    assert_eq!(window, times[1..3].to_vec());
    let rfc3339 = gw
        .get(&format!(
            "/api/v1/things/{TEMPERATURE}/readings?from=2000-01-01T00:00:00Z&limit=1"
        ))
        .json();
    assert_eq!(rfc3339[0]["t"].as_f64().unwrap(), times[0]);

    gw.get(&format!("/api/v1/things/{TEMPERATURE}/readings?limit=0"))
        .assert_problem(400);
    gw.get(&format!(
        "/api/v1/things/{TEMPERATURE}/readings?from=yesterday"
    ))
    .assert_problem(400);
    gw.get(&format!(
        "/api/v1/things/{TEMPERATURE}/readings?from=20&to=10"
    ))
    .assert_problem(400);
    gw.get("/api/v1/things/gw-t.sim.nowhere.temperature")
        .assert_problem(404);
    gw.get("/api/v1/things/not-an-id/reading")
        .assert_problem(404);
    assert_eq!(
        gw.get("/api/v1/no/such/route").assert_problem(404)["type"],
        "urn:fogbank:problem:no-route"
    );
    let delete = gw.request(
        "DELETE",
        &format!("/api/v1/things/{TEMPERATURE}"),
        &[],
        None,
    );
    delete.assert_problem(405);
    assert_eq!(delete.allow.as_deref(), Some("GET"));
    let readings = gw.request(
        "PUT",
        &format!("/api/v1/things/{TEMPERATURE}/readings"),
        &[],
        None,
    );
    readings.assert_problem(405);
    assert_eq!(readings.allow.as_deref(), Some("GET, POST"));
    // An empty filter is no filter.
    assert_eq!(
        gw.get("/api/v1/things?kind=&available=&type=")
            .json()
            .as_array()
            .unwrap()
            .len(),
        40
    );
}

#[test]
fn live_readings_stream_as_server_sent_events() {
    let gw = Gateway::demo();
    let events = read_events(
        &gw.url(&format!("/api/v1/things/{TEMPERATURE}/stream")),
        "reading",
        3,
        Duration::from_secs(10),
    );
    assert_eq!(events.len(), 3);
    let times: Vec<f64> = events
        .iter()
        .map(|data| {
            let pack: Value = serde_json::from_str(data).unwrap();
            assert_eq!(pack[0]["bn"], TEMPERATURE);
            pack[0]["t"].as_f64().unwrap()
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    gw.get("/api/v1/things/gw-t.sim.nowhere.x/stream")
        .assert_problem(404);
}

/// `GET /api/v1/stream`: every thing service a filter matches, each
/// reading naming its thing; the latest of each comes first.
#[test]
fn one_stream_carries_every_thing_a_filter_matches() {
    let gw = Gateway::demo();
    let events = read_events(
        &gw.url("/api/v1/stream?type=temperature&location=campus/building-b"),
        "reading",
        12,
        Duration::from_secs(10),
    );
    let mut seen = std::collections::BTreeSet::new();
    for data in &events {
        let pack: Value = serde_json::from_str(data).unwrap();
        let id = pack[0]["bn"].as_str().unwrap().to_owned();
        assert!(
            id.starts_with("gw-t.sim.building-b-floor-") && id.ends_with(".temperature"),
            "{id}"
        );
        assert_eq!(pack[0]["bu"], "Cel");
        assert!(pack[0]["v"].is_number());
        seen.insert(id);
    }
    assert_eq!(seen.len(), 4, "the four floors of building b: {seen:?}");
    gw.get("/api/v1/stream?kind=sideways").assert_problem(400);
    gw.get("/api/v1/stream?colour=red").assert_problem(400);
}

#[test]
fn a_pack_of_readings_streams_as_one_event_per_reading_in_order() {
    use std::io::{BufRead, BufReader};
    let gw = Gateway::start(&[], &[("FOGBANK_GATEWAY_ID", "gw-p")]);
    let path = "/api/v1/things/gw-p.http.pack.level/readings";
    let now = testkit::now_secs() - 60.0;
    assert_eq!(
        gw.post_senml(path, &json!([{"t": now, "v": -1.0}])).status,
        200
    );
    let stream = ureq::AgentBuilder::new()
        .timeout_read(Duration::from_secs(10))
        .build()
        .get(&gw.url("/api/v1/things/gw-p.http.pack.level/stream"))
        .call()
        .unwrap();
    // Events as the SSE specification frames them: fields up to a blank
    // line, which dispatches the event.
    let mut lines = BufReader::new(stream.into_reader()).lines();
    let mut next_event = move || {
        let mut fields = Vec::new();
        for line in lines.by_ref() {
            let line = line.expect("the stream goes on");
            if line.is_empty() {
                return fields;
            }
            let (name, value) = line.split_once(": ").unwrap_or((&line, ""));
            fields.push((name.to_owned(), value.to_owned()));
        }
        panic!("the stream ended");
    };
    let value_of = |fields: &[(String, String)]| -> f64 {
        let [(event, kind), (id, time), (data, pack)] = fields else {
            panic!("an event of three fields, not {fields:?}");
        };
        assert_eq!((event.as_str(), kind.as_str()), ("event", "reading"));
        assert_eq!((id.as_str(), data.as_str()), ("id", "data"));
        let pack: Value = serde_json::from_str(pack).unwrap();
        assert_eq!(pack[0]["bn"], "gw-p.http.pack.level");
        let micros = (pack[0]["t"].as_f64().unwrap() * 1e6).round();
        assert!(
            (time.parse::<f64>().unwrap() - micros).abs() <= 1.0,
            "{time} {pack}"
        );
        pack[0]["v"].as_f64().unwrap()
    };
    assert_eq!(
        value_of(&next_event()),
        -1.0,
        "the stream opens with the latest reading"
    );

    // One ingest puts all of them on the bus at once: the stream sends
    // them in chunks of several events, each of which must stand alone.
    const COUNT: usize = 600;
    let pack: Vec<Value> = (0..COUNT)
        .map(|i| json!({"t": now + 1.0 + i as f64 * 1e-3, "v": i as f64}))
        .collect();
    assert_eq!(gw.post_senml(path, &json!(pack)).status, 200);
    let values: Vec<f64> = (0..COUNT).map(|_| value_of(&next_event())).collect();
    let expected: Vec<f64> = (0..COUNT).map(|i| i as f64).collect();
    assert_eq!(values, expected);
}

#[test]
fn switching_a_lamp_needs_a_token_and_takes_effect() {
    let gw = Gateway::demo();
    let path = format!("/api/v1/things/{LAMP}/actuation");
    let on = br#"{"value": true}"#;

    let anonymous = gw.request(
        "PUT",
        &path,
        &[("Content-Type", "application/json")],
        Some(on),
    );
    anonymous.assert_problem(401);
    assert!(anonymous.www_authenticate.unwrap().starts_with("Bearer"));
    gw.request(
        "PUT",
        &path,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer wrong-token-0123456789"),
        ],
        Some(on),
    )
    .assert_problem(401);

    gw.write(
        "PUT",
        &format!("/api/v1/things/{LIGHT}/actuation"),
        "application/json",
        on,
    )
    .assert_problem(409);
    gw.write("PUT", &path, "application/json", br#"{"value": 3}"#)
        .assert_problem(400);
    gw.write(
        "PUT",
        &path,
        "application/json",
        br#"{"value": {"on": true}}"#,
    )
    .assert_problem(400);
    gw.write("PUT", &path, "application/json", br#"{"valeur": true}"#)
        .assert_problem(400);
    gw.write("PUT", &path, "application/json", b"{not json")
        .assert_problem(400);
    gw.write("PUT", &path, "text/plain", b"true")
        .assert_problem(415);
    gw.write(
        "PUT",
        "/api/v1/things/gw-t.sim.nowhere.lamp/actuation",
        "application/json",
        on,
    )
    .assert_problem(404);

    let before = gw.get(&format!("/api/v1/things/{LIGHT}/reading")).json()[0]["v"]
        .as_f64()
        .unwrap();
    let done = gw.write("PUT", &path, "application/json", on);
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    let outcome = done.json();
    assert_eq!(outcome["state"], "succeeded");
    assert_eq!(outcome["confirmed"], true);
    assert_eq!(
        gw.get(&format!("/api/v1/things/{LAMP}/reading")).json()[0]["vb"],
        true
    );
    // The lamp lights the floor: the next light reading is ~350 lx higher.
    let brighter = gw.wait_for(
        &format!("/api/v1/things/{LIGHT}/reading"),
        "a brighter floor",
        |a| a.json()[0]["v"].as_f64().unwrap() > before + 250.0,
    );
    assert!(brighter.json()[0]["v"].as_f64().unwrap() < before + 450.0);

    // Not waiting gives a command id to poll.
    let pending = gw.write(
        "PUT",
        &format!("{path}?wait=0"),
        "application/json",
        br#"{"value": false}"#,
    );
    assert!(
        pending.status == 202 || pending.status == 200,
        "{}",
        pending.status
    );
    let id = pending.json()["id"].as_u64().unwrap();
    if pending.status == 202 {
        assert_eq!(
            pending.location.as_deref(),
            Some(format!("/api/v1/commands/{id}").as_str())
        );
    }
    let polled = gw.wait_for(
        &format!("/api/v1/commands/{id}"),
        "the command to finish",
        |a| a.json()["state"] != "pending",
    );
    assert_eq!(polled.json()["state"], "succeeded");
    assert_eq!(polled.json()["thing"], LAMP);
    gw.get("/api/v1/commands/999999").assert_problem(404);
    gw.write(
        "PUT",
        &format!("{path}?wait=999999"),
        "application/json",
        on,
    )
    .assert_problem(400);
}

#[test]
fn http_devices_post_senml_and_bad_bodies_are_refused() {
    let gw = Gateway::demo();
    let path = "/api/v1/things/gw-t.http.boiler-1.water_temp/readings";
    let now = testkit::now_secs();
    let pack = json!([{"bu": "Cel", "bt": now - 10.0, "v": 55.5}, {"t": 1, "v": 56.0}, {"t": 2, "v": 56.25}]);
    let anonymous = gw.request(
        "POST",
        path,
        &[("Content-Type", "application/senml+json")],
        Some(pack.to_string().as_bytes()),
    );
    anonymous.assert_problem(401);

    let stored = gw.write(
        "POST",
        path,
        "application/senml+json",
        pack.to_string().as_bytes(),
    );
    assert_eq!(
        stored.status,
        200,
        "{}",
        String::from_utf8_lossy(&stored.body)
    );
    assert_eq!(stored.json()["stored"], 3);
    let thing = gw
        .get("/api/v1/things/gw-t.http.boiler-1.water_temp")
        .json();
    assert_eq!(thing["type"], "temperature");
    assert_eq!(thing["unit"], "Cel");
    assert_eq!(thing["adapter"], "http");
    let values = gw.get(&format!("{path}?limit=10")).senml_numbers();
    assert_eq!(values, vec![55.5, 56.0, 56.25]);

    // SenML CBOR: [{2: 57.5}] — one record, value label 2.
    let cbor = [0x81, 0xA1, 0x02, 0xF9, 0x53, 0x30];
    assert_eq!(
        gw.write("POST", path, "application/senml+cbor", &cbor)
            .status,
        200
    );
    let latest = gw
        .get("/api/v1/things/gw-t.http.boiler-1.water_temp/reading")
        .json();
    assert_eq!(latest[0]["v"], 57.5);

    gw.write("POST", path, "text/plain", b"58")
        .assert_problem(415);
    gw.write("POST", path, "application/senml+json", b"[{\"v\": ")
        .assert_problem(400);
    gw.write("POST", path, "application/senml+json", br#"[{"vb": true}]"#)
        .assert_problem(400);
    gw.write(
        "POST",
        path,
        "application/senml+json",
        br#"[{"u": "K", "v": 300}]"#,
    )
    .assert_problem(400);
    gw.write(
        "POST",
        path,
        "application/senml+json",
        br#"[{"n": "other", "v": 1}]"#,
    )
    .assert_problem(400);
    gw.write("POST", path, "application/senml+json", br#"[]"#)
        .assert_problem(400);
    gw.write("POST", path, "application/senml+cbor", &[0xff, 0x00])
        .assert_problem(400);
    let huge = format!("[{}]", vec![r#"{"v": 1}"#; 200_000].join(","));
    gw.write("POST", path, "application/senml+json", huge.as_bytes())
        .assert_problem(413);
    gw.write(
        "POST",
        "/api/v1/things/gw-t.sim.nowhere.x/readings",
        "application/senml+json",
        br#"[{"v": 1}]"#,
    )
    .assert_problem(404);
    gw.write(
        "POST",
        "/api/v1/things/other-gw.http.dev.x/readings",
        "application/senml+json",
        br#"[{"v": 1}]"#,
    )
    .assert_problem(404);
    gw.write(
        "POST",
        &format!("/api/v1/things/{TEMPERATURE}/readings"),
        "application/senml+json",
        br#"[{"vs": "hot"}]"#,
    )
    .assert_problem(400);

    // A first post that is not self-consistent creates nothing.
    for pack in [
        r#"[{"v":1},{"vb":true}]"#,
        r#"[{"u":"W","v":1},{"u":"kW","v":2}]"#,
        r#"[{"v":1},{"n":"x","v":2}]"#,
    ] {
        gw.write(
            "POST",
            "/api/v1/things/gw-t.http.odd.thing/readings",
            "application/senml+json",
            pack.as_bytes(),
        )
        .assert_problem(400);
    }
    gw.get("/api/v1/things/gw-t.http.odd.thing")
        .assert_problem(404);

    // Nothing of the refused bodies was stored, and the gateway is healthy.
    let history = gw.get(&format!("{path}?limit=100")).json();
    assert_eq!(history.as_array().unwrap().len(), 4);
    assert_eq!(gw.get("/health").status, 200);
}

#[test]
fn operations_endpoints_and_an_openapi_document_that_matches_the_routes() {
    let gw = Gateway::demo();
    let health = gw.get("/health").json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["gateway"], "gw-t");
    assert_eq!(health["things"], 40);
    assert_eq!(gw.get("/api/v1/health").status, 200);

    gw.wait_for("/metrics", "ingested readings", |a| {
        String::from_utf8_lossy(&a.body)
            .lines()
            .any(|l| l.starts_with("fogbank_readings_ingested_total ") && !l.ends_with(" 0"))
    });
    let metrics = gw.get("/metrics");
    assert!(metrics.content_type.starts_with("text/plain"));
    let text = String::from_utf8(metrics.body).unwrap();
    for name in [
        "fogbank_things{available=\"true\"} 40",
        "fogbank_adapter_running{adapter=\"sim\"} 1",
        "fogbank_http_responses_total{code=\"2xx\"}",
        "fogbank_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    let sample = |name: &str| -> f64 {
        testkit::metric_sample(&text, name).unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    };
    // The store's memory by part: the simulator's readings are in a write
    // buffer, and the three parts are named.
    let store_part = |part: &str| sample(&format!("fogbank_store_memory_bytes{{part=\"{part}\"}}"));
    assert!(store_part("memtables") > 0.0);
    assert!(store_part("table_readers") >= 0.0);
    assert!(store_part("block_cache") >= 0.0);
    // The C heap, in use and held free: both named, something in use.
    let heap_in_use = sample("fogbank_heap_bytes{state=\"in_use\"}");
    assert!(heap_in_use > 1e5, "{heap_in_use}");
    assert!(sample("fogbank_heap_bytes{state=\"free\"}") >= 0.0);

    let doc = gw.get("/openapi.json").json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 11, "{:?}", paths.keys());
    // Every documented operation is routed: none answers "no resource" or 405.
    for (path, operations) in paths {
        let concrete = path.replace(
            "{id}",
            if path.starts_with("/api/v1/commands") {
                "1"
            } else {
                LAMP
            },
        );
        for method in operations.as_object().unwrap().keys() {
            let answer = gw.request(&method.to_uppercase(), &concrete, &[], None);
            if answer.status == 404 || answer.status == 405 {
                let problem = answer.json();
                assert_ne!(
                    problem["type"], "urn:fogbank:problem:no-route",
                    "{method} {path} is documented but not routed"
                );
                assert_ne!(
                    problem["type"], "urn:fogbank:problem:method-not-allowed",
                    "{method} {path}"
                );
            }
        }
    }
}

/// A client that opens a stream and stops reading never holds up ingest; it
/// is told what it missed and, once hopelessly behind, disconnected.
#[test]
fn a_stalled_stream_never_slows_ingest() {
    use std::io::{BufRead, BufReader};
    let gw = Gateway::start(&[], &[("FOGBANK_GATEWAY_ID", "gw-s")]);
    let path = "/api/v1/things/gw-s.http.flood.temperature/readings";
    assert_eq!(
        gw.write(
            "POST",
            path,
            "application/senml+json",
            br#"[{"u":"Cel","v":1}]"#
        )
        .status,
        200
    );

    // Open the stream, read its first event, then stop reading.
    let stream = ureq::get(&gw.url("/api/v1/things/gw-s.http.flood.temperature/stream"))
        .call()
        .unwrap();
    let mut reader = BufReader::new(stream.into_reader());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "event: reading\n");

    const BATCHES: usize = 100;
    const PER_BATCH: usize = 1000;
    let now = testkit::now_secs() - 600.0;
    for batch in 0..BATCHES {
        let pack: Vec<Value> = (0..PER_BATCH)
            .map(|i| json!({"t": now + (batch * PER_BATCH + i) as f64 * 1e-4, "v": i as f64}))
            .collect();
        let answer = gw.post_senml(path, &json!(pack));
        assert_eq!(
            answer.status, 200,
            "ingest went on while the stream was stalled"
        );
    }
    let history = gw.get(&format!("{path}?from={now}&limit=100000")).json();
    assert_eq!(
        history.as_array().unwrap().len(),
        BATCHES * PER_BATCH,
        "every reading of the flood is stored"
    );

    // Now drain: somewhere the stream says what was skipped, then it ends.
    let mut lagged = 0u64;
    let mut readings = 0usize;
    let mut kind = String::new();
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(k) = line.strip_prefix("event: ") {
            kind = k.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ") {
            match kind.as_str() {
                "lagged" => {
                    lagged += serde_json::from_str::<Value>(data).unwrap()["missed"]
                        .as_u64()
                        .unwrap()
                }
                "reading" => readings += 1,
                _ => {}
            }
        }
    }
    assert!(lagged > 0, "the client was told it missed readings");
    assert!(readings < BATCHES * PER_BATCH, "it did not get them all");
    let metrics = String::from_utf8(gw.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("fogbank_bus_disconnected_total 1"),
        "{metrics}"
    );
}
