//! The local harness (`fogbank service test`): a service run against a
//! script of readings, without a gateway, the same way every time.
//!
//! The script is a SenML pack (RFC 8428) whose names are thing-service
//! ids. A record with a value is a reading at its time; every thing named
//! is in the catalog, a sensor of the type its id ends with, in `campus`,
//! unless the record says otherwise with the extension fields `type_`,
//! `location_` and `kind_` (`sensor` or `actuator`; a record with only
//! these declares a thing).
//!
//! The service is compiled and linked as on a gateway and runs on the
//! gateway's host code, in a store of its own, with one difference: the
//! clock is the readings' clock. Before each reading, the timer ticks that
//! fall due by its time are given; its `clock.now()`, the time of what it
//! publishes and of its log lines are that time. Its commands are recorded
//! and go nowhere. So a run's report — outputs, commands, grants tried,
//! logs — depends on the script alone, and an author can assert on it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fogbank_taas::{
    Hub, HubOptions, Kind, Reading, ThingId, ThingReading, ThingService, Timestamp, Value, Window,
};
use serde::Serialize;

use crate::engine::Runtime;
use crate::service::Runner;
use crate::shared::{Attempt, Command, Rehearsal, Shared};
use crate::{LogLine, Manifest, ServiceError};

/// The gateway id outputs are named under in the harness.
pub const GATEWAY: &str = "harness";

/// What the script gives: the catalog and the readings in time order.
#[derive(Debug, Default)]
pub struct Script {
    pub things: Vec<ThingService>,
    pub readings: Vec<ThingReading>,
}

#[derive(Debug, thiserror::Error)]
#[error("the script: {0}")]
pub struct ScriptError(String);

impl Script {
    /// Reads a SenML pack (JSON).
    pub fn from_senml(text: &str) -> Result<Script, ScriptError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Record {
            bn: Option<String>,
            bt: Option<f64>,
            n: Option<String>,
            t: Option<f64>,
            u: Option<String>,
            v: Option<f64>,
            vs: Option<String>,
            vb: Option<bool>,
            type_: Option<String>,
            location_: Option<String>,
            kind_: Option<String>,
        }
        let records: Vec<Record> = serde_json::from_str(text)
            .map_err(|e| ScriptError(format!("not a SenML pack: {e}")))?;
        let (mut base_name, mut base_time) = (String::new(), 0.0);
        let mut things: BTreeMap<String, ThingService> = BTreeMap::new();
        let mut readings = Vec::new();
        for (index, record) in records.into_iter().enumerate() {
            let at = |what: String| ScriptError(format!("record {index}: {what}"));
            if let Some(bn) = record.bn {
                base_name = bn;
            }
            if let Some(bt) = record.bt {
                base_time = bt;
            }
            let name = format!("{base_name}{}", record.n.as_deref().unwrap_or(""));
            let id = ThingId::parse(&name)
                .map_err(|e| at(format!("{name:?} is not a thing-service id: {e}")))?;
            let kind = match record.kind_.as_deref() {
                None | Some("sensor") => Kind::Sensor,
                Some("actuator") => Kind::Actuator,
                Some(other) => return Err(at(format!("kind_ {other:?} is sensor or actuator"))),
            };
            let semantic_type = record.type_.unwrap_or_else(|| id.resource().to_owned());
            let location = record.location_.unwrap_or_else(|| "campus".to_owned());
            let thing = things.entry(name.clone()).or_insert_with(|| {
                ThingService::new(id.clone(), kind, &semantic_type, record.u.as_deref())
                    .at(&location)
            });
            thing.kind = kind;
            let value = match (record.v, record.vs, record.vb) {
                (Some(v), None, None) => Value::Number(v),
                (None, Some(s), None) => Value::String(s),
                (None, None, Some(b)) => Value::Bool(b),
                (None, None, None) => continue,
                _ => return Err(at("more than one of v, vs, vb".into())),
            };
            let seconds = base_time + record.t.unwrap_or(0.0);
            if !seconds.is_finite() || seconds < 0.0 {
                return Err(at(format!("time {seconds} is not a time since the epoch")));
            }
            readings.push(ThingReading {
                thing: id,
                reading: Reading {
                    time: Timestamp((seconds * 1e6).round() as u64),
                    value,
                },
            });
        }
        readings.sort_by_key(|r| r.reading.time);
        Ok(Script {
            things: things.into_values().collect(),
            readings,
        })
    }
}

/// One reading of one of the service's outputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Published {
    /// Microseconds since the epoch.
    pub time: u64,
    pub output: String,
    #[serde(serialize_with = "plain")]
    pub value: Value,
}

/// A value in a report as SenML's JSON has it: a number, a string or a
/// boolean (data as the hex of its bytes).
pub(crate) fn plain<S: serde::Serializer>(value: &Value, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Value::Number(n) => serializer.serialize_f64(*n),
        Value::Bool(b) => serializer.serialize_bool(*b),
        Value::String(s) => serializer.serialize_str(s),
        Value::Data(bytes) => {
            serializer.serialize_str(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outputs: Vec<Published>,
    pub commands: Vec<Command>,
    pub grants_tried: Vec<Attempt>,
    pub logs: Vec<LogLine>,
    /// Readings handed to `on-reading` (those its subscriptions select).
    pub readings: u64,
    pub ticks: u64,
    /// Why the run stopped early: `init` refused, or a call failed.
    pub failure: Option<String>,
}

/// Runs the service of `manifest` and `component` through `script`.
pub fn rehearse(manifest: &str, component: &[u8], script: &Script) -> Result<Report, ServiceError> {
    let manifest = Manifest::parse(manifest)?;
    let data = tempfile::tempdir()
        .map_err(|e| ServiceError::Engine(format!("no directory for the harness's store: {e}")))?;
    let hub = Hub::open(GATEWAY, data.path(), HubOptions::default())?;
    for thing in &script.things {
        hub.announce(thing.clone())?;
    }
    let runtime = Runtime::new(None)?;
    let pre = runtime.prepare(&runtime.compile(component)?)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .map_err(|e| ServiceError::Engine(format!("cannot start a runtime: {e}")))?;
    let rehearsal = Arc::new(Rehearsal::default());
    let start = script.readings.first().map_or(0, |r| r.reading.time.0);
    rehearsal.now.store(start, Ordering::Relaxed);
    let mut shared = Shared::new(manifest.clone(), crate::digest(component), GATEWAY.into());
    shared.rehearsal = Some(rehearsal.clone());
    let shared = Arc::new(shared);
    for output in crate::hosting::output_things(&shared, true)? {
        hub.announce(output)?;
    }
    let runner = Runner::new(shared.clone(), pre, hub.clone(), tokio.handle().clone());

    let (mut readings, mut ticks) = (0u64, 0u64);
    let failure = match runner.instantiate() {
        Err(reason) => Some(reason),
        Ok(mut instance) => {
            let period = manifest
                .timer
                .map(|p| p.as_micros() as u64)
                .filter(|&p| p > 0);
            let mut next_tick = period.map(|p| start + p);
            let mut failure = None;
            for reading in &script.readings {
                let due = reading.reading.time.0;
                while let (Some(at), Some(p)) = (next_tick, period) {
                    if at > due {
                        break;
                    }
                    rehearsal.now.store(at, Ordering::Relaxed);
                    ticks += 1;
                    next_tick = Some(at + p);
                    if let Err(reason) = runner.tick(&mut instance) {
                        failure = Some(reason);
                        break;
                    }
                }
                if failure.is_some() {
                    break;
                }
                rehearsal.now.store(due, Ordering::Relaxed);
                hub.ingest(vec![reading.clone()]).map_err(|e| {
                    ServiceError::Invalid(format!("the script's reading of {}: {e}", reading.thing))
                })?;
                let subscribed = hub
                    .thing(&reading.thing)
                    .is_some_and(|thing| manifest.subscriptions.iter().any(|s| s.matches(&thing)));
                if subscribed {
                    readings += 1;
                    if let Err(reason) = runner.deliver(&mut instance, reading) {
                        failure = Some(reason);
                        break;
                    }
                }
            }
            failure
        }
    };

    let mut outputs = Vec::new();
    for output in &manifest.outputs {
        let id = crate::output_id(GATEWAY, &manifest.name, &output.name)?;
        let window = Window {
            from: Timestamp(0),
            to: Timestamp(u64::MAX),
            limit: usize::MAX,
            newest_first: false,
        };
        let history = tokio.block_on(hub.read_history(&id, window)).map_err(|e| {
            ServiceError::Engine(format!("cannot read the output {}: {e}", output.name))
        })?;
        outputs.extend(history.into_iter().map(|r| Published {
            time: r.time.0,
            output: output.name.clone(),
            value: r.value,
        }));
    }
    outputs.sort_by(|a, b| (a.time, &a.output).cmp(&(b.time, &b.output)));
    let report = Report {
        outputs,
        commands: rehearsal.commands.lock().clone(),
        grants_tried: rehearsal.attempts.lock().clone(),
        logs: shared.logs(),
        readings,
        ticks,
        failure,
    };
    drop(runner);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    const MANIFEST: &str = r#"name = "echo"
version = "1.0.0"
subscriptions = [{ type = "temperature" }]
timer = "1s"
[[outputs]]
name = "out"
type = "temperature"
location = "services/echo"
"#;

    const SCRIPT: &str = r#"[
        {"bn": "gw.sim.room-1.", "bt": 1700000000, "n": "temperature", "t": 0, "v": 20.5, "u": "Cel"},
        {"n": "temperature", "t": 2.5, "v": 21.0},
        {"n": "humidity", "t": 3, "v": 40},
        {"n": "temperature", "t": 3.25, "v": 21.5},
        {"bn": "", "n": "gw.sim.room-1.lamp", "kind_": "actuator", "type_": "switch", "location_": "campus/room-1"},
        {"n": "gw.sim.t1.temperature"}
    ]"#;

    #[test]
    fn a_run_follows_the_scripts_clock_and_is_the_same_every_time() {
        let script = Script::from_senml(SCRIPT).unwrap();
        assert_eq!(script.things.len(), 4);
        assert_eq!(script.readings.len(), 4);
        let component =
            wat::parse_str(component(LOG_HELLO, PUBLISH_READING_VALUE, LOG_HELLO)).unwrap();
        let report = rehearse(MANIFEST, &component, &script).unwrap();
        assert_eq!(report.failure, None);
        // Humidity is not subscribed to.
        assert_eq!(report.readings, 3);
        // Ticks at +1 s, +2 s and +3 s, each before the reading after it.
        assert_eq!(report.ticks, 3);
        let base = 1_700_000_000_000_000u64;
        assert_eq!(
            report.outputs,
            [0, 2_500_000, 3_250_000]
                .iter()
                .zip([20.5, 21.0, 21.5])
                .map(|(dt, v)| Published {
                    time: base + dt,
                    output: "out".into(),
                    value: Value::Number(v),
                })
                .collect::<Vec<_>>()
        );
        // init's line and one per tick, at the script's times.
        let hello: Vec<u64> = report
            .logs
            .iter()
            .filter(|l| l.message == "hello")
            .map(|l| l.time)
            .collect();
        assert_eq!(
            hello,
            [base, base + 1_000_000, base + 2_000_000, base + 3_000_000]
        );
        let again = rehearse(MANIFEST, &component, &script).unwrap();
        assert_eq!(
            serde_json::to_string(&again).unwrap(),
            serde_json::to_string(&report).unwrap()
        );
    }

    #[test]
    fn grants_tried_are_reported_and_a_failure_ends_the_run() {
        let script = Script::from_senml(SCRIPT).unwrap();
        let reader = wat::parse_str(component("", READ_SENSOR, "")).unwrap();
        let report = rehearse(MANIFEST, &reader, &script).unwrap();
        assert!(!report.grants_tried.is_empty());
        assert!(
            report
                .grants_tried
                .iter()
                .all(|a| a.grant == "read" && !a.allowed)
        );

        let trapping = wat::parse_str(component("", TRAP, "")).unwrap();
        let report = rehearse(MANIFEST, &trapping, &script).unwrap();
        assert!(
            report
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("unreachable")),
            "{report:?}"
        );
        assert_eq!(report.readings, 1);
    }

    #[test]
    fn bad_scripts_are_named() {
        for (script, expected) in [
            ("{}", "not a SenML pack"),
            (r#"[{"n": "nope", "v": 1}]"#, "not a thing-service id"),
            (
                r#"[{"n": "gw.a.b.c", "v": 1, "vb": true}]"#,
                "more than one",
            ),
            (r#"[{"n": "gw.a.b.c", "v": 1, "t": -5}]"#, "not a time"),
            (
                r#"[{"n": "gw.a.b.c", "kind_": "robot"}]"#,
                "sensor or actuator",
            ),
        ] {
            let error = Script::from_senml(script).unwrap_err().to_string();
            assert!(error.contains(expected), "{script}: {error}");
        }
    }
}
