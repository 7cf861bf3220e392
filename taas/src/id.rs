//! Thing-service identifiers: `{gateway}.{adapter}.{device}.{resource}`.
//!
//! Ids travel in URLs, MQTT topics, SIP URIs and RocksDB keys, so every
//! segment is restricted to `[a-z0-9_-]`. [`sanitize_segment`] is the one
//! place that maps arbitrary device-provided names into that alphabet; the
//! strict [`ThingId::parse`] accepts only ids that are already clean.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest id accepted, in bytes. Keeps ids usable as CoAP Uri-Path options
/// and SIP user parts.
pub const MAX_ID_LEN: usize = 255;

/// Why a string is not a thing-service id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "a thing-service id has four dot-separated segments (gateway.adapter.device.resource), found {0}"
    )]
    SegmentCount(usize),
    #[error("segment {0} of the id is empty")]
    EmptySegment(usize),
    #[error("segment {index} holds {found:?}; only lower-case a-z, 0-9, '_' and '-' are allowed")]
    BadCharacter { index: usize, found: char },
    #[error("the id is {0} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong(usize),
}

/// Maps any name to the id alphabet: ASCII letters are lower-cased, every
/// other character outside `[a-z0-9_-]` becomes `-`. Idempotent. An empty
/// name stays empty (callers reject it).
pub fn sanitize_segment(raw: &str) -> String {
    raw.chars().map(sanitize_char).collect()
}

/// [`sanitize_segment`] without a copy of a name that is already clean.
pub fn sanitized(raw: &str) -> Cow<'_, str> {
    if raw.chars().all(is_segment_char) {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(sanitize_segment(raw))
    }
}

fn sanitize_char(c: char) -> char {
    let c = c.to_ascii_lowercase();
    if is_segment_char(c) { c } else { '-' }
}

fn is_segment_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
}

/// A validated thing-service id. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThingId(Arc<str>);

impl ThingId {
    /// Builds an id from raw parts, sanitising each one.
    pub fn new(
        gateway: &str,
        adapter: &str,
        device: &str,
        resource: &str,
    ) -> Result<Self, IdError> {
        // Built in one string, and not parsed again: ids are made for every
        // message a device sends, and sanitised parts hold no dot and no
        // character outside the alphabet, so only length and emptiness are
        // left to check (in `parse`'s order, for the same errors).
        let parts = [gateway, adapter, device, resource];
        let mut joined = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
        for (index, part) in parts.iter().enumerate() {
            if index > 0 {
                joined.push('.');
            }
            joined.extend(part.chars().map(sanitize_char));
        }
        if joined.len() > MAX_ID_LEN {
            return Err(IdError::TooLong(joined.len()));
        }
        if let Some(index) = parts.iter().position(|part| part.is_empty()) {
            return Err(IdError::EmptySegment(index));
        }
        Ok(Self(Arc::from(joined)))
    }

    /// Accepts only an already clean id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() > MAX_ID_LEN {
            return Err(IdError::TooLong(s.len()));
        }
        let count = s.split('.').count();
        if count != 4 {
            return Err(IdError::SegmentCount(count));
        }
        for (index, segment) in s.split('.').enumerate() {
            if segment.is_empty() {
                return Err(IdError::EmptySegment(index));
            }
            if let Some(found) = segment.chars().find(|c| !is_segment_char(*c)) {
                return Err(IdError::BadCharacter { index, found });
            }
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn segment(&self, index: usize) -> &str {
        // Invariant from `parse`: exactly four segments.
        self.0.split('.').nth(index).unwrap_or_default()
    }

    pub fn gateway(&self) -> &str {
        self.segment(0)
    }
    pub fn adapter(&self) -> &str {
        self.segment(1)
    }
    pub fn device(&self) -> &str {
        self.segment(2)
    }
    pub fn resource(&self) -> &str {
        self.segment(3)
    }
}

impl fmt::Display for ThingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ThingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ThingId({})", self.0)
    }
}

impl FromStr for ThingId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ThingId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ThingId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn design_example_parses() {
        let id = ThingId::parse("gw-a.mqtt.sensor-7.temperature").unwrap();
        assert_eq!(id.gateway(), "gw-a");
        assert_eq!(id.adapter(), "mqtt");
        assert_eq!(id.device(), "sensor-7");
        assert_eq!(id.resource(), "temperature");
    }

    #[test]
    fn new_sanitises_each_part() {
        let id = ThingId::new("GW A", "mqtt", "Kitchen/Sensor#7", "température").unwrap();
        assert_eq!(id.as_str(), "gw-a.mqtt.kitchen-sensor-7.temp-rature");
    }

    #[test]
    fn parse_rejects_bad_ids() {
        assert_eq!(ThingId::parse("a.b.c"), Err(IdError::SegmentCount(3)));
        assert_eq!(ThingId::parse("a..c.d"), Err(IdError::EmptySegment(1)));
        assert_eq!(
            ThingId::parse("a.B.c.d"),
            Err(IdError::BadCharacter {
                index: 1,
                found: 'B'
            })
        );
        assert!(matches!(
            ThingId::parse(&"a".repeat(300)),
            Err(IdError::TooLong(300))
        ));
        assert!(ThingId::new("", "a", "b", "c").is_err());
    }

    proptest! {
        #[test]
        fn sanitize_is_idempotent_and_clean(raw in ".{0,40}") {
            let once = sanitize_segment(&raw);
            prop_assert_eq!(sanitize_segment(&once), once.clone());
            prop_assert!(once.chars().all(is_segment_char));
            prop_assert_eq!(once.chars().count(), raw.chars().count());
        }

        /// `new` skips `parse`, so it must agree with it on every input.
        #[test]
        fn new_is_parse_of_the_sanitised_parts(parts in proptest::array::uniform4("(.{0,3}|.{60,90})")) {
            let joined = parts.iter().map(|p| sanitize_segment(p)).collect::<Vec<_>>().join(".");
            prop_assert_eq!(
                ThingId::new(&parts[0], &parts[1], &parts[2], &parts[3]),
                ThingId::parse(&joined)
            );
        }

        #[test]
        fn built_ids_roundtrip(parts in proptest::array::uniform4("[^.]{1,20}")) {
            let id = ThingId::new(&parts[0], &parts[1], &parts[2], &parts[3]).unwrap();
            let again = ThingId::parse(id.as_str()).unwrap();
            prop_assert_eq!(&again, &id);
            prop_assert_eq!(again.resource(), sanitize_segment(&parts[3]));
        }

        #[test]
        fn parse_never_panics(raw in ".{0,80}") {
            let _ = ThingId::parse(&raw);
        }
    }
}
