//! Thing services and the queries that select them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::ThingId;

/// Whether applications read it or command it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Sensor,
    Actuator,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sensor" => Ok(Kind::Sensor),
            "actuator" => Ok(Kind::Actuator),
            other => Err(format!("kind is 'sensor' or 'actuator', not {other:?}")),
        }
    }
}

/// The type of a thing service's values; readings and commands are checked
/// against it so that a store never holds a value of the wrong kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Number,
    Boolean,
    String,
    Data,
}

impl DataType {
    /// The usual data type of a semantic type: on/off things are boolean,
    /// the rest numbers.
    pub fn for_semantic_type(semantic_type: &str) -> Self {
        match semantic_type {
            "switch" | "motion" | "presence" | "occupancy" | "contact" | "door" | "window"
            | "button" => DataType::Boolean,
            "text" | "status" | "state" => DataType::String,
            _ => DataType::Number,
        }
    }

    /// JSON Schema / WoT data-schema name.
    pub fn schema_type(self) -> &'static str {
        match self {
            DataType::Number => "number",
            DataType::Boolean => "boolean",
            DataType::String | DataType::Data => "string",
        }
    }
}

/// A location path such as `campus/building-a/floor-2/room-201`.
/// Matching is by whole segments: `campus/building-a` contains
/// `campus/building-a/floor-2` but not `campus/building-ab`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Location(String);

impl Location {
    /// Normalises: no leading, trailing or doubled slashes.
    pub fn new(path: &str) -> Self {
        Location(
            path.split('/')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_within(&self, prefix: &Location) -> bool {
        prefix.0.is_empty()
            || self.0 == prefix.0
            || (self.0.starts_with(&prefix.0)
                && self.0.as_bytes().get(prefix.0.len()) == Some(&b'/'))
    }
}

/// One capability of one device, as applications see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThingService {
    pub id: ThingId,
    pub kind: Kind,
    /// A short semantic word: `temperature`, `humidity`, `light`, `switch`, …
    #[serde(rename = "type")]
    pub semantic_type: String,
    /// SenML unit name (`Cel`, `%RH`, `lx`, `W`), if the values have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub data_type: DataType,
    #[serde(default)]
    pub location: Location,
    /// The gateway that owns the device (the single writer of this entry).
    pub gateway: String,
    pub adapter: String,
    /// The device's address in its adapter's terms (topic, URI, EUI-64…).
    pub device_address: String,
    pub available: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// How many times the device moved to another gateway. The id keeps
    /// the gateway that first saw the device; `gateway` is its owner now,
    /// and the entry with more moves is the current one (see
    /// `hub::moves`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub moves: u32,
}

fn is_zero(moves: &u32) -> bool {
    *moves == 0
}

impl ThingService {
    /// A thing service with the attributes implied by its id and type:
    /// gateway and adapter from the id, data type from the semantic type,
    /// available, at no particular location.
    pub fn new(id: ThingId, kind: Kind, semantic_type: &str, unit: Option<&str>) -> Self {
        ThingService {
            gateway: id.gateway().to_owned(),
            adapter: id.adapter().to_owned(),
            device_address: id.device().to_owned(),
            id,
            kind,
            data_type: DataType::for_semantic_type(semantic_type),
            semantic_type: semantic_type.to_owned(),
            unit: unit.map(str::to_owned),
            location: Location::default(),
            available: true,
            metadata: BTreeMap::new(),
            moves: 0,
        }
    }

    pub fn at(mut self, location: &str) -> Self {
        self.location = Location::new(location);
        self
    }

    pub fn with_device_address(mut self, address: &str) -> Self {
        self.device_address = address.to_owned();
        self
    }
}

/// Guesses a semantic type and unit from a resource name, for devices
/// that announce nothing but a name (HTTP, plain MQTT topics).
pub fn guess_type(resource: &str) -> (&'static str, Option<&'static str>) {
    let r = resource.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| r.contains(w));
    if has(&["temp"]) {
        ("temperature", Some("Cel"))
    } else if has(&["humid", "rh"]) {
        ("humidity", Some("%RH"))
    } else if has(&["lux", "illum", "brightness"]) {
        ("light", Some("lx"))
    } else if has(&["motion", "pir"]) {
        ("motion", None)
    } else if has(&["presence", "occup"]) {
        ("presence", None)
    } else if has(&["power", "watt"]) {
        ("power", Some("W"))
    } else if has(&["energy", "kwh"]) {
        ("energy", Some("J"))
    } else if has(&["co2"]) {
        ("co2", Some("ppm"))
    } else if has(&["press"]) {
        ("pressure", Some("Pa"))
    } else if has(&["batt"]) {
        ("battery", Some("%EL"))
    } else if has(&["switch", "relay", "lamp", "plug"]) {
        ("switch", None)
    } else {
        ("value", None)
    }
}

/// Selects thing services; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub semantic_type: Option<String>,
    pub location: Option<Location>,
    pub gateway: Option<String>,
    pub kind: Option<Kind>,
    pub available: Option<bool>,
}

impl Query {
    pub fn matches(&self, thing: &ThingService) -> bool {
        self.semantic_type
            .as_ref()
            .is_none_or(|t| *t == thing.semantic_type)
            && self
                .location
                .as_ref()
                .is_none_or(|l| thing.location.is_within(l))
            && self.gateway.as_ref().is_none_or(|g| *g == thing.gateway)
            && self.kind.is_none_or(|k| k == thing.kind)
            && self.available.is_none_or(|a| a == thing.available)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thing(id: &str, location: &str) -> ThingService {
        ThingService::new(
            ThingId::parse(id).unwrap(),
            Kind::Sensor,
            "temperature",
            Some("Cel"),
        )
        .at(location)
    }

    #[test]
    fn location_prefix_is_segment_aware() {
        let floor = Location::new("/campus/building-a/floor-2/");
        assert_eq!(floor.as_str(), "campus/building-a/floor-2");
        assert!(floor.is_within(&Location::new("campus/building-a")));
        assert!(floor.is_within(&Location::new("campus/building-a/floor-2")));
        assert!(floor.is_within(&Location::new("")));
        assert!(!floor.is_within(&Location::new("campus/building-ab")));
        assert!(!floor.is_within(&Location::new("campus/building-a/floor-2/room-1")));
    }

    #[test]
    fn query_combines_filters() {
        let t = thing("gw-a.sim.dev.temperature", "campus/building-a");
        assert!(Query::default().matches(&t));
        let q = Query {
            semantic_type: Some("temperature".into()),
            gateway: Some("gw-a".into()),
            ..Default::default()
        };
        assert!(q.matches(&t));
        assert!(
            !Query {
                kind: Some(Kind::Actuator),
                ..q.clone()
            }
            .matches(&t)
        );
        assert!(
            !Query {
                available: Some(false),
                ..q.clone()
            }
            .matches(&t)
        );
        assert!(
            !Query {
                location: Some(Location::new("campus/building-b")),
                ..q
            }
            .matches(&t)
        );
    }

    #[test]
    fn attributes_follow_from_id_and_type() {
        let t = ThingService::new(
            ThingId::parse("gw.sim.f1.lamp").unwrap(),
            Kind::Actuator,
            "switch",
            None,
        );
        assert_eq!(t.gateway, "gw");
        assert_eq!(t.adapter, "sim");
        assert_eq!(t.data_type, DataType::Boolean);
        assert_eq!(guess_type("Temperature"), ("temperature", Some("Cel")));
        assert_eq!(guess_type("relay1"), ("switch", None));
    }
}
