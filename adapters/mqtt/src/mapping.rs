//! Configurable topic mappings for devices that follow none of the built-in
//! layouts:
//!
//! ```toml
//! [[mqtt.mappings]]
//! topic = "sensors/{device}/{resource}"   # also + and # wildcards
//! decoder = "plain"                       # or "senml", or "json:/a/b" (a JSON pointer)
//! type = "temperature"                    # optional: else guessed from the resource
//! unit = "Cel"                            # optional
//! ```
//!
//! `{device}` and `{resource}` each stand for one topic level; a mapping
//! without `{resource}` uses its `type` (or `value`) as the resource.

use serde::{Deserialize, Serialize};

use fogbank_taas::Value;
use fogbank_taas::id::sanitize_segment;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub topic: String,
    #[serde(default = "plain")]
    pub decoder: String,
    #[serde(rename = "type")]
    pub semantic_type: Option<String>,
    pub unit: Option<String>,
}

fn plain() -> String {
    "plain".into()
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    #[error("mapping {0:?}: a topic needs {{device}}")]
    NoDevice(String),
    #[error("mapping {0:?}: '#' must be the last level")]
    Hash(String),
    #[error("mapping {topic:?}: decoder is plain, senml or json:/pointer, not {decoder:?}")]
    Decoder { topic: String, decoder: String },
}

/// What a mapped message is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    pub device: String,
    pub resource: String,
}

impl Mapping {
    pub fn validate(&self) -> Result<(), MappingError> {
        let levels: Vec<&str> = self.topic.split('/').collect();
        if !levels.contains(&"{device}") {
            return Err(MappingError::NoDevice(self.topic.clone()));
        }
        if levels
            .iter()
            .position(|l| *l == "#")
            .is_some_and(|i| i + 1 != levels.len())
        {
            return Err(MappingError::Hash(self.topic.clone()));
        }
        let decoder_ok = matches!(self.decoder.as_str(), "plain" | "senml")
            || self.decoder.starts_with("json:/");
        if !decoder_ok {
            return Err(MappingError::Decoder {
                topic: self.topic.clone(),
                decoder: self.decoder.clone(),
            });
        }
        Ok(())
    }

    /// The MQTT subscription filter of this mapping.
    pub fn filter(&self) -> String {
        self.topic
            .split('/')
            .map(|level| {
                if level == "{device}" || level == "{resource}" {
                    "+"
                } else {
                    level
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The device and resource a topic names, if it matches.
    pub fn matches(&self, topic: &str) -> Option<Matched> {
        let mut device = None;
        let mut resource = None;
        let mut actual = topic.split('/');
        for pattern in self.topic.split('/') {
            if pattern == "#" {
                break;
            }
            let level = actual.next()?;
            match pattern {
                "{device}" => device = Some(level),
                "{resource}" => resource = Some(level),
                "+" => {}
                literal if literal == level => {}
                _ => return None,
            }
        }
        if !self.topic.ends_with('#') && actual.next().is_some() {
            return None;
        }
        let device = sanitize_segment(device?);
        let resource = match resource {
            Some(r) => sanitize_segment(r),
            None => self.semantic_type.clone().unwrap_or_else(|| "value".into()),
        };
        (!device.is_empty() && !resource.is_empty()).then_some(Matched { device, resource })
    }

    /// The value of a plain or JSON-pointer payload; `None` if it has none.
    /// (SenML payloads go through the SenML decoder instead.)
    pub fn value(&self, payload: &[u8]) -> Option<Value> {
        let text = std::str::from_utf8(payload).ok()?.trim();
        let raw = match self.decoder.strip_prefix("json:") {
            Some(pointer) => serde_json::from_str::<serde_json::Value>(text)
                .ok()?
                .pointer(pointer)?
                .clone(),
            None => return Some(crate::convention::plain_value(text)),
        };
        match raw {
            serde_json::Value::Number(n) => n.as_f64().map(Value::Number),
            serde_json::Value::Bool(b) => Some(Value::Bool(b)),
            serde_json::Value::String(s) => Some(crate::convention::plain_value(&s)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(topic: &str, decoder: &str) -> Mapping {
        Mapping {
            topic: topic.into(),
            decoder: decoder.into(),
            semantic_type: None,
            unit: None,
        }
    }

    #[test]
    fn placeholders_and_wildcards() {
        let m = mapping("sensors/{device}/{resource}", "plain");
        assert_eq!(m.filter(), "sensors/+/+");
        assert_eq!(
            m.matches("sensors/Kitchen/Temp"),
            Some(Matched {
                device: "kitchen".into(),
                resource: "temp".into()
            })
        );
        assert_eq!(m.matches("sensors/kitchen"), None);
        assert_eq!(m.matches("sensors/kitchen/temp/extra"), None);
        assert_eq!(m.matches("other/kitchen/temp"), None);
        let m = Mapping {
            semantic_type: Some("energy".into()),
            ..mapping("site/+/{device}/#", "json:/ENERGY/Total")
        };
        assert_eq!(m.filter(), "site/+/+/#");
        assert_eq!(
            m.matches("site/a/meter-1/x/y"),
            Some(Matched {
                device: "meter-1".into(),
                resource: "energy".into()
            })
        );
    }

    #[test]
    fn decoders() {
        assert_eq!(
            mapping("a/{device}", "plain").value(b" 21.5 "),
            Some(Value::Number(21.5))
        );
        assert_eq!(
            mapping("a/{device}", "plain").value(b"ON"),
            Some(Value::Bool(true))
        );
        let json = mapping("a/{device}", "json:/ENERGY/Total");
        assert_eq!(
            json.value(br#"{"ENERGY":{"Total":12.25}}"#),
            Some(Value::Number(12.25))
        );
        assert_eq!(json.value(br#"{"ENERGY":{}}"#), None);
        assert_eq!(json.value(b"not json"), None);
    }

    #[test]
    fn validation() {
        assert!(mapping("a/{device}/{resource}", "plain").validate().is_ok());
        assert!(mapping("a/{resource}", "plain").validate().is_err());
        assert!(mapping("a/#/{device}", "plain").validate().is_err());
        assert!(mapping("a/{device}", "xml").validate().is_err());
    }
}
