//! The LWM2M Device object (3): who made a device and what it runs.
//!
//! An LWM2M device lists `</3/0>` in its registration; the gateway reads
//! the instance once per registration (TRESCIMO's "read device info") and
//! keeps the four identifying resources in the device's thing services, so
//! an operator sees which model and firmware each sensor is without asking
//! the device. The rest of the object (battery, time, error codes) is left
//! to the device's own resources.
//!
//! The instance comes whole, as OMA-TLV (11542, LWM2M 1.0's default) or
//! SenML JSON / CBOR (110 / 112, LWM2M 1.1), with names relative to
//! `/3/0/` or absolute. The strings are the device's: each is cut to
//! [`MAX_CHARS`] and stripped of control characters before it is kept.
//!
//! Pure: no I/O.

use fogbank_taas::{Timestamp, Value, senml};

use crate::lwm2m::{self, Tlv};
use crate::message::format;
use crate::payload::{self, PayloadError};

/// The object's id.
pub const OBJECT: u16 = 3;
/// Resource 0: manufacturer.
pub const MANUFACTURER: u16 = 0;
/// Resource 1: model number.
pub const MODEL: u16 = 1;
/// Resource 2: serial number.
pub const SERIAL: u16 = 2;
/// Resource 3: firmware version.
pub const FIRMWARE: u16 = 3;
/// The longest string kept from a device, in characters.
pub const MAX_CHARS: usize = 128;

/// The path of the instance the gateway reads.
pub fn instance_path() -> String {
    format!("/{OBJECT}/0")
}

/// Whether a registration link names the instance (`/3/0`).
pub fn is_device_link(path: &str) -> bool {
    let mut segments = path.trim_matches('/').split('/');
    segments.next() == Some("3") && segments.next() == Some("0") && segments.next().is_none()
}

/// What a device says of itself; a resource it left out is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub firmware: Option<String>,
}

impl DeviceInfo {
    fn set(&mut self, resource: u16, text: &str) {
        let slot = match resource {
            MANUFACTURER => &mut self.manufacturer,
            MODEL => &mut self.model,
            SERIAL => &mut self.serial,
            FIRMWARE => &mut self.firmware,
            _ => return,
        };
        let kept: String = text
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_CHARS)
            .collect();
        *slot = Some(kept.trim().to_owned()).filter(|s| !s.is_empty());
    }

    /// The resources the device named, by name, as JSON.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        [
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
            ("firmware", &self.firmware),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value.clone()?.into())))
        .collect()
    }
}

/// The instance in `payload`, by its content format.
pub fn decode(content_format: Option<u16>, payload: &[u8]) -> Result<DeviceInfo, PayloadError> {
    if payload.is_empty() {
        return Err(PayloadError::Empty);
    }
    let mut info = DeviceInfo::default();
    match content_format.unwrap_or(format::LWM2M_TLV) {
        format::LWM2M_TLV => {
            let entries =
                lwm2m::decode_tlv(payload).map_err(|e| PayloadError::Tlv(e.to_string()))?;
            for entry in flatten(&entries) {
                if let Tlv::Resource(id, bytes) = entry {
                    info.set(*id, &String::from_utf8_lossy(bytes));
                }
            }
        }
        format @ (format::SENML_JSON | format::SENML_CBOR) => {
            let parsed = match format {
                format::SENML_JSON => senml::parse_json(payload),
                _ => senml::parse_cbor(payload),
            };
            let error = |e: senml::SenmlError| PayloadError::Senml(e.to_string());
            let mut records = parsed.map_err(error)?;
            payload::lwm2m_names(&mut records);
            // Times are not read here; any anchor will do.
            for record in senml::resolve(&records, Timestamp(0)).map_err(error)? {
                if let (Some(resource), Value::String(text)) =
                    (resource_of(&record.name), &record.value)
                {
                    info.set(resource, text);
                }
            }
        }
        other => return Err(PayloadError::Format(other)),
    }
    Ok(info)
}

/// The resources of the instance: at the top level, or inside its one
/// object-instance entry.
fn flatten(entries: &[Tlv]) -> Vec<&Tlv> {
    entries
        .iter()
        .flat_map(|entry| match entry {
            Tlv::ObjectInstance(_, inner) => inner.iter().collect(),
            other => vec![other],
        })
        .collect()
}

/// `3/0/1` or `1` → 1; a name under another object → `None`.
fn resource_of(name: &str) -> Option<u16> {
    let segments: Vec<&str> = name.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        [resource] => resource.parse().ok(),
        ["3", "0", resource] => resource.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One resource TLV with a one-byte id and an 8-bit length
    /// (LWM2M 1.0 §6.4.3: type bits 11, length in the next byte).
    fn tlv(id: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![0b1100_1000, id, value.len() as u8];
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn tlv_instance_gives_the_four_strings() {
        let mut body = Vec::new();
        body.extend(tlv(0, b"Fogbank Labs"));
        body.extend(tlv(1, b"FB-T1"));
        body.extend(tlv(2, b"SN-0042"));
        body.extend(tlv(3, b"1.4.2"));
        body.extend(tlv(9, &[87])); // battery level: not kept
        let info = decode(Some(format::LWM2M_TLV), &body).unwrap();
        assert_eq!(
            info,
            DeviceInfo {
                manufacturer: Some("Fogbank Labs".into()),
                model: Some("FB-T1".into()),
                serial: Some("SN-0042".into()),
                firmware: Some("1.4.2".into()),
            }
        );
    }

    #[test]
    fn tlv_inside_an_object_instance_entry() {
        let inner = [tlv(0, b"Acme"), tlv(3, b"2.0")].concat();
        // Object instance 0, one-byte id, 8-bit length.
        let mut body = vec![0b0000_1000, 0, inner.len() as u8];
        body.extend(inner);
        let info = decode(Some(format::LWM2M_TLV), &body).unwrap();
        assert_eq!(info.manufacturer.as_deref(), Some("Acme"));
        assert_eq!(info.firmware.as_deref(), Some("2.0"));
        assert_eq!(info.model, None);
        assert_eq!(
            serde_json::Value::Object(info.to_json()),
            serde_json::json!({"manufacturer": "Acme", "firmware": "2.0"})
        );
    }

    #[test]
    fn senml_json_with_a_relative_base_name_as_lwm2m_writes_it() {
        let body = br#"[{"bn":"/3/0/","n":"0","vs":"Acme"},{"n":"1","vs":"M1"},{"n":"9","v":87},{"n":"3","vs":"0.9"}]"#;
        let info = decode(Some(format::SENML_JSON), body).unwrap();
        assert_eq!(info.manufacturer.as_deref(), Some("Acme"));
        assert_eq!(info.model.as_deref(), Some("M1"));
        assert_eq!(info.firmware.as_deref(), Some("0.9"));
        assert_eq!(info.serial, None);
    }

    #[test]
    fn senml_json_with_absolute_names() {
        let body = br#"[{"n":"/3/0/2","vs":"X-1"},{"n":"/3303/0/5700","v":21}]"#;
        let info = decode(Some(format::SENML_JSON), body).unwrap();
        assert_eq!(info.serial.as_deref(), Some("X-1"));
        assert_eq!(info.manufacturer, None);
    }

    #[test]
    fn a_device_cannot_write_a_long_or_forged_line() {
        let long = "A".repeat(10_000);
        let body = [tlv(0, b"Evil\nCorp\x1b[31m"), {
            // Two-byte length (type bits 11, length-of-length 2).
            let mut out = vec![0b1101_0000, 1];
            out.extend_from_slice(&(long.len() as u16).to_be_bytes());
            out.extend_from_slice(long.as_bytes());
            out
        }]
        .concat();
        let info = decode(Some(format::LWM2M_TLV), &body).unwrap();
        assert_eq!(info.manufacturer.as_deref(), Some("EvilCorp[31m"));
        assert_eq!(info.model.map(|m| m.chars().count()), Some(MAX_CHARS));
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert_eq!(
            decode(Some(format::LWM2M_TLV), b""),
            Err(PayloadError::Empty)
        );
        assert!(matches!(
            decode(Some(format::LWM2M_TLV), &[0b1100_1000, 0, 9, b'x']),
            Err(PayloadError::Tlv(_))
        ));
        assert!(matches!(
            decode(Some(format::SENML_JSON), b"{"),
            Err(PayloadError::Senml(_))
        ));
        assert_eq!(
            decode(Some(format::TEXT), b"Acme"),
            Err(PayloadError::Format(format::TEXT))
        );
    }

    #[test]
    fn only_the_instance_link_is_the_device_object() {
        assert!(is_device_link("/3/0"));
        assert!(is_device_link("3/0/"));
        assert!(!is_device_link("/3303/0"));
        assert!(!is_device_link("/3/0/0"));
        assert!(!is_device_link("/3"));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            format in prop_oneof![Just(format::LWM2M_TLV), Just(format::SENML_JSON), Just(format::SENML_CBOR)],
        ) {
            if let Ok(info) = decode(Some(format), &bytes) {
                for text in [info.manufacturer, info.model, info.serial, info.firmware].into_iter().flatten() {
                    prop_assert!(text.chars().count() <= MAX_CHARS);
                    prop_assert!(!text.chars().any(char::is_control));
                }
            }
        }
    }
}
