//! The MQTT topic conventions devices follow (the README documents them
//! for device makers), as a pure decoder from a topic and payload to what
//! they mean:
//!
//! - `things/{device}/{resource}`: a plain value (`21.5`, `true`, `on`) or a
//!   SenML JSON pack about that resource;
//! - `things/{device}`: a SenML JSON pack whose record names are resources;
//! - `things/{device}/status`: `online` / `offline` (usable as a last will);
//! - `things/{device}/{resource}/set`: commands, which the gateway publishes
//!   and ignores when they come back;
//! - `things/{device}/policy`: the device follows a transport-management
//!   policy (`crate::transport`): a JSON object, or empty when it leaves.

use fogbank_taas::id::sanitize_segment;
use fogbank_taas::senml;
use fogbank_taas::{Timestamp, Value};

/// The subscription that covers the conventions.
pub const SUBSCRIPTION: &str = "things/#";
const ROOT: &str = "things";

/// One value a device reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The resource, in id form.
    pub resource: String,
    pub unit: Option<String>,
    pub value: Value,
    pub time: Timestamp,
}

/// What a message means.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Samples {
        device: String,
        samples: Vec<Sample>,
    },
    Status {
        device: String,
        online: bool,
    },
    /// The device follows (`true`) a transport-management policy, or no
    /// longer here (an empty payload).
    Policy {
        device: String,
        follows: bool,
    },
    /// A command echo or a topic outside the conventions.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("the device or resource name is empty")]
    EmptyName,
    #[error("the payload is not UTF-8 text")]
    NotText,
    #[error("the payload is empty")]
    Empty,
    #[error("status is online or offline, not {0:?}")]
    BadStatus(String),
    #[error("bad SenML: {0}")]
    Senml(#[from] senml::SenmlError),
    #[error("a pack on things/{{device}} must name each record's resource")]
    UnnamedRecord,
    #[error("a pack on a resource topic names another resource, {0:?}")]
    ForeignRecord(String),
}

fn segment(raw: &str) -> Result<String, DecodeError> {
    let clean = sanitize_segment(raw);
    if clean.is_empty() {
        Err(DecodeError::EmptyName)
    } else {
        Ok(clean)
    }
}

/// Decodes one message received at `now`.
pub fn decode(topic: &str, payload: &[u8], now: Timestamp) -> Result<Inbound, DecodeError> {
    let mut levels = topic.split('/');
    if levels.next() != Some(ROOT) {
        return Ok(Inbound::Ignored);
    }
    let levels: Vec<&str> = levels.collect();
    match levels.as_slice() {
        [device] => {
            let device = segment(device)?;
            let samples = pack(payload, now, None)?;
            Ok(Inbound::Samples { device, samples })
        }
        [device, "status"] => {
            let device = segment(device)?;
            let text = text(payload)?;
            let online = match text.to_ascii_lowercase().as_str() {
                "online" | "true" | "1" | "on" => true,
                "offline" | "false" | "0" | "off" => false,
                _ => return Err(DecodeError::BadStatus(text.chars().take(32).collect())),
            };
            Ok(Inbound::Status { device, online })
        }
        [device, "policy"] => Ok(Inbound::Policy {
            device: segment(device)?,
            follows: payload.iter().any(|b| !b.is_ascii_whitespace()),
        }),
        [device, resource] => {
            let device = segment(device)?;
            let resource = segment(resource)?;
            let text = text(payload)?;
            let samples = if text.starts_with('[') {
                pack(text.as_bytes(), now, Some(&resource))?
            } else {
                vec![Sample {
                    resource,
                    unit: None,
                    value: plain_value(text),
                    time: now,
                }]
            };
            Ok(Inbound::Samples { device, samples })
        }
        [_, _, "set"] => Ok(Inbound::Ignored),
        _ => Ok(Inbound::Ignored),
    }
}

fn text(payload: &[u8]) -> Result<&str, DecodeError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| DecodeError::NotText)?
        .trim();
    if text.is_empty() {
        Err(DecodeError::Empty)
    } else {
        Ok(text)
    }
}

/// A plain payload: booleans in their common spellings, numbers, else text.
pub fn plain_value(text: &str) -> Value {
    Value::from_plain(text)
}

/// A SenML pack; on a resource topic records may omit the name.
fn pack(
    payload: &[u8],
    now: Timestamp,
    resource: Option<&str>,
) -> Result<Vec<Sample>, DecodeError> {
    let records = senml::resolve(&senml::parse_json(payload)?, now)?;
    records
        .into_iter()
        .map(|r| {
            let resource = match (resource, r.name.as_str()) {
                (Some(resource), "") => resource.to_owned(),
                (Some(resource), name) if sanitize_segment(name) == resource => resource.to_owned(),
                (Some(_), name) => return Err(DecodeError::ForeignRecord(name.to_owned())),
                (None, "") => return Err(DecodeError::UnnamedRecord),
                (None, name) => segment(name)?,
            };
            Ok(Sample {
                resource,
                unit: r.unit,
                value: r.value,
                time: r.time,
            })
        })
        .collect()
}

/// The topic and payload of a command for a device's resource.
pub fn command(device: &str, resource: &str, value: &Value) -> (String, Vec<u8>) {
    let payload = match value {
        Value::Bool(true) => b"on".to_vec(),
        Value::Bool(false) => b"off".to_vec(),
        Value::Number(n) => n.to_string().into_bytes(),
        Value::String(s) => s.clone().into_bytes(),
        Value::Data(d) => d.clone(),
    };
    (format!("{ROOT}/{device}/{resource}/set"), payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Timestamp = Timestamp(1_800_000_000_000_000);

    fn one(device: &str, resource: &str, value: Value) -> Inbound {
        Inbound::Samples {
            device: device.into(),
            samples: vec![Sample {
                resource: resource.into(),
                unit: None,
                value,
                time: NOW,
            }],
        }
    }

    #[test]
    fn plain_values() {
        assert_eq!(
            decode("things/sensor-7/temperature", b"21.5", NOW),
            Ok(one("sensor-7", "temperature", Value::Number(21.5)))
        );
        assert_eq!(
            decode("things/plug/relay", b"ON", NOW),
            Ok(one("plug", "relay", Value::Bool(true)))
        );
        assert_eq!(
            decode("things/plug/relay", b" false\n", NOW),
            Ok(one("plug", "relay", Value::Bool(false)))
        );
        assert_eq!(
            decode("things/door/state", b"ajar", NOW),
            Ok(one("door", "state", Value::String("ajar".into())))
        );
        assert_eq!(
            decode("things/Kitchen Sensor/Temp", b"1", NOW),
            Ok(one("kitchen-sensor", "temp", Value::Number(1.0)))
        );
    }

    #[test]
    fn senml_on_both_topics() {
        let on_resource = decode(
            "things/s/temperature",
            br#"[{"u":"Cel","v":20,"t":1.8e9}]"#,
            NOW,
        )
        .unwrap();
        assert_eq!(
            on_resource,
            Inbound::Samples {
                device: "s".into(),
                samples: vec![Sample {
                    resource: "temperature".into(),
                    unit: Some("Cel".into()),
                    value: Value::Number(20.0),
                    time: Timestamp(1_800_000_000_000_000)
                }]
            }
        );
        let Inbound::Samples { samples, .. } = decode(
            "things/s",
            br#"[{"n":"temperature","u":"Cel","v":20},{"n":"humidity","u":"%RH","v":40}]"#,
            NOW,
        )
        .unwrap() else {
            panic!("a pack")
        };
        assert_eq!(
            samples
                .iter()
                .map(|s| s.resource.as_str())
                .collect::<Vec<_>>(),
            ["temperature", "humidity"]
        );
        assert_eq!(
            decode("things/s", br#"[{"v":1}]"#, NOW),
            Err(DecodeError::UnnamedRecord)
        );
        assert!(matches!(
            decode("things/s/a", br#"[{"n":"b","v":1}]"#, NOW),
            Err(DecodeError::ForeignRecord(_))
        ));
        assert!(matches!(
            decode("things/s/a", br#"[{"v":"#, NOW),
            Err(DecodeError::Senml(_))
        ));
    }

    #[test]
    fn status_commands_and_strangers() {
        assert_eq!(
            decode("things/s/status", b"offline", NOW),
            Ok(Inbound::Status {
                device: "s".into(),
                online: false
            })
        );
        assert_eq!(
            decode("things/s/status", b"online", NOW),
            Ok(Inbound::Status {
                device: "s".into(),
                online: true
            })
        );
        assert!(matches!(
            decode("things/s/status", b"sleepy", NOW),
            Err(DecodeError::BadStatus(_))
        ));
        assert_eq!(
            decode("things/s/relay/set", b"on", NOW),
            Ok(Inbound::Ignored)
        );
        assert_eq!(decode("tele/s/STATE", b"{}", NOW), Ok(Inbound::Ignored));
        assert_eq!(decode("things/s/a/b/c", b"1", NOW), Ok(Inbound::Ignored));
        assert_eq!(decode("things/s/a", b"", NOW), Err(DecodeError::Empty));
        assert_eq!(
            decode("things/s/a", &[0xff, 0xfe], NOW),
            Err(DecodeError::NotText)
        );
        assert_eq!(decode("things//a", b"1", NOW), Err(DecodeError::EmptyName));
        assert_eq!(
            command("plug", "relay", &Value::Bool(true)),
            ("things/plug/relay/set".into(), b"on".to_vec())
        );
    }

    proptest! {
        #[test]
        fn decoding_never_panics(topic in "things(/[^/]{0,8}){0,4}", payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&topic, &payload, NOW);
        }

        #[test]
        fn numbers_roundtrip_through_plain_payloads(n in -1e9f64..1e9) {
            let (_, payload) = command("d", "r", &Value::Number(n));
            prop_assert_eq!(decode("things/d/r", &payload, NOW), Ok(one("d", "r", Value::Number(n))));
        }

        #[test]
        fn commands_decode_to_their_value(b in any::<bool>()) {
            let (topic, payload) = command("d", "r", &Value::Bool(b));
            prop_assert_eq!(decode(&topic, &payload, NOW), Ok(Inbound::Ignored));
            prop_assert_eq!(decode("things/d/r", &payload, NOW), Ok(one("d", "r", Value::Bool(b))));
        }
    }

    #[test]
    fn a_policy_says_whether_the_device_follows_one() {
        assert_eq!(
            decode(
                "things/s/policy",
                br#"{"address":"10.0.0.2","port":1883}"#,
                NOW
            ),
            Ok(Inbound::Policy {
                device: "s".into(),
                follows: true
            })
        );
        assert_eq!(
            decode("things/s/policy", b"", NOW),
            Ok(Inbound::Policy {
                device: "s".into(),
                follows: false
            })
        );
        // The gateway's own policy, coming back through things/#.
        assert_eq!(
            decode("things/s/policy/set", b"{}", NOW),
            Ok(Inbound::Ignored)
        );
    }
}
