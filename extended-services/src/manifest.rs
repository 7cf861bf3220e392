//! `service.toml`: what a service is, what it listens to, what it may do.
//!
//! The manifest is the whole of a service's rights: the host grants nothing
//! it does not name. Parsing is a pure function of the text so that a bad
//! manifest is refused, with every reason at once, before anything is
//! installed.

use std::collections::BTreeMap;
use std::time::Duration;

use fogbank_taas::{DataType, Location, ThingService};
use serde::{Deserialize, Serialize};

/// The largest memory a service may ask for; the pooling allocator reserves
/// address space for this much per instance slot.
pub const MAX_MEMORY_MIB: u64 = 256;
/// The longest CPU deadline a call may have.
pub const MAX_CPU_MS: u64 = 10_000;
/// The shortest timer period.
pub const MIN_TIMER: Duration = Duration::from_millis(10);

/// A parsed and checked manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// `[a-z0-9_-]`, at most 48 characters: it becomes a thing-id segment.
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// Readings of matching thing services are handed to `on-reading`.
    #[serde(default)]
    pub subscriptions: Vec<Selector>,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default)]
    pub outputs: Vec<Output>,
    /// `on-timer` period: `"500ms"`, `"10s"`, `"5m"`; none without it.
    #[serde(default, with = "duration_text")]
    pub timer: Option<Duration>,
    /// Handed to `init` as a JSON object.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub limits: Limits,
    /// Where in the local cloud it runs; by default next to most of its
    /// inputs (`crate::placement`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Pin>,
}

/// `placement = { gateway = "gw-b" }` or `placement = { location =
/// "campus/building-a" }`: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// Runs on this gateway only (and waits while it is down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Runs on the gateway that owns most thing services within this
    /// location prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// Selects thing services; every field given must match, none given
/// selects all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub semantic_type: Option<String>,
    /// A location prefix, whole segments only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl Selector {
    pub fn matches(&self, thing: &ThingService) -> bool {
        self.id.as_ref().is_none_or(|id| id == thing.id.as_str())
            && self
                .semantic_type
                .as_ref()
                .is_none_or(|t| *t == thing.semantic_type)
            && self
                .location
                .as_ref()
                .is_none_or(|l| thing.location.is_within(&Location::new(l)))
    }

    /// Whether only an id decides, so a reading can be matched without
    /// looking the thing up.
    pub fn exact_id(&self) -> Option<&str> {
        match self {
            Selector {
                id: Some(id),
                semantic_type: None,
                location: None,
            } => Some(id),
            _ => None,
        }
    }
}

/// What the service may touch beyond its own outputs and store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Thing services it may read (latest and history).
    #[serde(default)]
    pub read: Vec<Selector>,
    /// Actuators it may command.
    #[serde(default)]
    pub actuate: Vec<Selector>,
}

impl Grants {
    pub fn may_read(&self, thing: &ThingService) -> bool {
        self.read.iter().any(|s| s.matches(thing))
    }
    pub fn may_actuate(&self, thing: &ThingService) -> bool {
        self.actuate.iter().any(|s| s.matches(thing))
    }
}

/// A virtual thing service the service publishes readings on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Output {
    /// The last segment of the id `{gateway}.service.{name}.{output}`.
    pub name: String,
    #[serde(rename = "type")]
    pub semantic_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default)]
    pub location: String,
    /// `number`, `boolean` or `string`; by default what the type implies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<DataType>,
}

impl Output {
    pub fn data_type(&self) -> DataType {
        self.data_type
            .unwrap_or_else(|| DataType::for_semantic_type(&self.semantic_type))
    }
}

/// The sandbox of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Limits {
    /// Linear memory, tables and instances together.
    pub memory_mib: u64,
    /// How long one call (init, on-reading, on-timer, on-request) may run
    /// in the guest; time spent waiting on the host does not count.
    pub cpu_ms: u64,
    /// Readings per second over all outputs; more is flooding, and the
    /// service is stopped.
    pub publish_per_second: u32,
    /// Commands per second; more are refused (`failure::limit`), so a
    /// runaway loop cannot hammer a device.
    pub actuate_per_second: u32,
    /// Total size of the key-value store.
    pub store_kib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 16,
            cpu_ms: 100,
            publish_per_second: 100,
            actuate_per_second: 10,
            store_kib: 1024,
        }
    }
}

impl Limits {
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib << 20).unwrap_or(usize::MAX)
    }
    pub fn cpu_deadline(&self) -> Duration {
        Duration::from_millis(self.cpu_ms)
    }
}

/// Everything wrong with a manifest, one reason per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ManifestError(pub Vec<String>);

impl Manifest {
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestError(vec![e.message().to_owned()]))?;
        manifest.check()?;
        Ok(manifest)
    }

    /// The manifest as TOML again (what is stored and shown).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// The `[config]` table as a JSON object.
    pub fn config_json(&self) -> String {
        serde_json::to_string(&self.config).unwrap_or_else(|_| "{}".into())
    }

    pub fn output(&self, name: &str) -> Option<&Output> {
        self.outputs.iter().find(|o| o.name == name)
    }

    fn check(&self) -> Result<(), ManifestError> {
        let mut problems = Vec::new();
        if let Err(e) = check_segment("name", &self.name) {
            problems.push(e);
        }
        if self.name.len() > 48 {
            problems.push(format!(
                "name is longer than 48 characters: {:?}",
                self.name
            ));
        }
        if self.version.trim().is_empty() {
            problems.push("version is empty".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for output in &self.outputs {
            if let Err(e) = check_segment("output name", &output.name) {
                problems.push(e);
            }
            if !seen.insert(&output.name) {
                problems.push(format!("output {:?} is declared twice", output.name));
            }
            if output.semantic_type.trim().is_empty() {
                problems.push(format!("output {:?} has no type", output.name));
            }
            if output.data_type == Some(DataType::Data) {
                problems.push(format!(
                    "output {:?}: data-type is number, boolean or string",
                    output.name
                ));
            }
        }
        if let Some(period) = self.timer
            && period < MIN_TIMER
        {
            problems.push(format!("timer is shorter than {MIN_TIMER:?}"));
        }
        let limits = &self.limits;
        if limits.memory_mib == 0 || limits.memory_mib > MAX_MEMORY_MIB {
            problems.push(format!("limits.memory-mib is 1 to {MAX_MEMORY_MIB}"));
        }
        if limits.cpu_ms == 0 || limits.cpu_ms > MAX_CPU_MS {
            problems.push(format!("limits.cpu-ms is 1 to {MAX_CPU_MS}"));
        }
        if limits.publish_per_second == 0 {
            problems.push("limits.publish-per-second is at least 1".into());
        }
        if limits.actuate_per_second == 0 {
            problems.push("limits.actuate-per-second is at least 1".into());
        }
        match &self.placement {
            Some(Pin {
                gateway: Some(gateway),
                location: None,
            }) if gateway.trim().is_empty() => problems.push("placement.gateway is empty".into()),
            Some(Pin {
                gateway: None,
                location: Some(location),
            }) if location.trim().is_empty() => problems.push("placement.location is empty".into()),
            Some(Pin {
                gateway: Some(_),
                location: None,
            })
            | Some(Pin {
                gateway: None,
                location: Some(_),
            })
            | None => {}
            Some(_) => problems.push("placement names either a gateway or a location".into()),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ManifestError(problems))
        }
    }
}

/// Names become id segments as they are: refused rather than rewritten, so
/// the id a developer reads in the manifest is the id applications use.
fn check_segment(what: &str, value: &str) -> Result<(), String> {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "{what} {value:?} must be lower-case letters, digits, '-' or '_'"
        ))
    }
}

/// Parses `"250ms"`, `"10s"`, `"5m"`, `"1h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (ms, s, m or h)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => return Err(format!("{text:?}: the unit is ms, s, m or h")),
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogbank_taas::{Kind, ThingId};

    const ALARM: &str = r#"
        name = "threshold-alarm"
        version = "1.0.0"
        description = "Switches a lamp when it gets hot"
        subscriptions = [{ type = "temperature", location = "campus/building-a" }]
        timer = "10s"

        [grants]
        read = [{ type = "temperature" }]
        actuate = [{ id = "gw-a.sim.lamp-1.switch" }]

        [[outputs]]
        name = "alarm"
        type = "alarm"
        data-type = "boolean"
        location = "campus/building-a"

        [config]
        threshold = 25.5
        lamp = "gw-a.sim.lamp-1.switch"

        [limits]
        memory-mib = 8
        cpu-ms = 20
    "#;

    fn thing(id: &str, semantic_type: &str, location: &str) -> ThingService {
        ThingService::new(
            ThingId::parse(id).unwrap(),
            Kind::Sensor,
            semantic_type,
            None,
        )
        .at(location)
    }

    #[test]
    fn a_full_manifest_parses() {
        let m = Manifest::parse(ALARM).unwrap();
        assert_eq!(m.name, "threshold-alarm");
        assert_eq!(m.timer, Some(Duration::from_secs(10)));
        assert_eq!(m.outputs[0].data_type(), DataType::Boolean);
        assert_eq!(m.limits.memory_mib, 8);
        assert_eq!(
            m.limits.publish_per_second, 100,
            "unset limits keep defaults"
        );
        let config: serde_json::Value = serde_json::from_str(&m.config_json()).unwrap();
        assert_eq!(config["threshold"], 25.5);
        assert_eq!(config["lamp"], "gw-a.sim.lamp-1.switch");
        // What is stored parses back to the same manifest.
        assert_eq!(Manifest::parse(&m.to_toml()).unwrap(), m);
    }

    #[test]
    fn selectors_match_by_type_location_segments_and_id() {
        let m = Manifest::parse(ALARM).unwrap();
        let inside = thing(
            "gw-a.sim.t1.temperature",
            "temperature",
            "campus/building-a/f1",
        );
        let next_door = thing(
            "gw-a.sim.t2.temperature",
            "temperature",
            "campus/building-ab",
        );
        let humidity = thing("gw-a.sim.t1.humidity", "humidity", "campus/building-a");
        assert!(m.subscriptions[0].matches(&inside));
        assert!(!m.subscriptions[0].matches(&next_door));
        assert!(!m.subscriptions[0].matches(&humidity));
        assert!(m.grants.may_read(&next_door));
        assert!(!m.grants.may_read(&humidity));
        let lamp = thing("gw-a.sim.lamp-1.switch", "switch", "campus");
        assert!(m.grants.may_actuate(&lamp));
        assert!(!m.grants.may_actuate(&inside));
        assert_eq!(
            m.grants.actuate[0].exact_id(),
            Some("gw-a.sim.lamp-1.switch")
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Manifest::parse(
            r#"
            name = "Bad Name"
            version = ""
            timer = "1ms"
            [[outputs]]
            name = "x"
            type = "t"
            [[outputs]]
            name = "x"
            type = "t"
            [limits]
            memory-mib = 100000
            cpu-ms = 0
        "#,
        )
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "name \"Bad Name\"",
            "version is empty",
            "declared twice",
            "timer is shorter",
            "memory-mib",
            "cpu-ms",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from {text}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_durations_are_refused() {
        assert!(Manifest::parse("name = \"a\"\nversion = \"1\"\nwhatever = 1").is_err());
        assert!(Manifest::parse("name = \"a\"\nversion = \"1\"\ntimer = \"10 parsecs\"").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("99999999999999999999h").is_err());
        assert!(parse_duration("s").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in "\\PC{0,200}") {
            let _ = Manifest::parse(&text);
        }
    }
}
