//! LWM2M-style devices: IPSO Smart Objects mapped to thing services, and
//! the OMA-TLV content format (11542) their values may come in.
//!
//! An object instance link such as `</3303/0>` in a registration becomes
//! one thing service; its value is read from the object's value resource
//! (`/3303/0/5700`) and an actuator is written at its command resource
//! (`/3311/0/5850`). Pure: no I/O.

use fogbank_taas::{Kind, Value};

/// What the gateway knows of one IPSO object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpsoObject {
    pub object: u16,
    /// The thing service's type and default unit.
    pub semantic_type: &'static str,
    pub unit: Option<&'static str>,
    pub kind: Kind,
    /// The resource holding the current value.
    pub value_resource: u16,
}

/// The IPSO objects understood (OMA LWM2M registry).
pub const OBJECTS: &[IpsoObject] = &[
    ipso(3303, "temperature", Some("Cel"), Kind::Sensor, 5700),
    ipso(3304, "humidity", Some("%RH"), Kind::Sensor, 5700),
    ipso(3301, "light", Some("lx"), Kind::Sensor, 5700),
    ipso(3302, "presence", None, Kind::Sensor, 5500),
    ipso(3315, "pressure", Some("Pa"), Kind::Sensor, 5700),
    ipso(3305, "power", Some("W"), Kind::Sensor, 5800),
    ipso(3311, "switch", None, Kind::Actuator, 5850),
    ipso(3312, "switch", None, Kind::Actuator, 5850),
];

const fn ipso(
    object: u16,
    semantic_type: &'static str,
    unit: Option<&'static str>,
    kind: Kind,
    value_resource: u16,
) -> IpsoObject {
    IpsoObject {
        object,
        semantic_type,
        unit,
        kind,
        value_resource,
    }
}

/// The object instance a registration link names, if it is one we map:
/// `/3303/0` (or `/3303/0/5700`) → (object, instance).
pub fn object_instance(path: &str) -> Option<(&'static IpsoObject, u16)> {
    let mut segments = path.trim_matches('/').split('/');
    let object: u16 = segments.next()?.parse().ok()?;
    let instance: u16 = segments.next()?.parse().ok()?;
    let known = OBJECTS.iter().find(|o| o.object == object)?;
    Some((known, instance))
}

/// The resource name of an object instance's thing service:
/// `temperature`, or `temperature-1` for instance 1.
pub fn resource_name(object: &IpsoObject, instance: u16) -> String {
    let base = match object.object {
        3311 => "light-control",
        3312 => "power-control",
        3305 => "power",
        _ => object.semantic_type,
    };
    match instance {
        0 => base.to_owned(),
        n => format!("{base}-{n}"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlvError {
    #[error("TLV entry truncated at byte {0}")]
    Truncated(usize),
    #[error("TLV nesting deeper than 3 levels")]
    TooDeep,
}

/// One OMA-TLV entry (LWM2M 1.0 §6.4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tlv {
    ObjectInstance(u16, Vec<Tlv>),
    MultipleResource(u16, Vec<Tlv>),
    ResourceInstance(u16, Vec<u8>),
    Resource(u16, Vec<u8>),
}

/// Decodes a TLV payload into its entries.
pub fn decode_tlv(bytes: &[u8]) -> Result<Vec<Tlv>, TlvError> {
    decode_level(bytes, 0, 0)
}

fn decode_level(bytes: &[u8], offset: usize, depth: u8) -> Result<Vec<Tlv>, TlvError> {
    if depth > 2 {
        return Err(TlvError::TooDeep);
    }
    let mut entries = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let truncated = || TlvError::Truncated(offset + at);
        let kind = bytes[at];
        let id_length = if kind & 0x20 != 0 { 2 } else { 1 };
        let length_bytes = usize::from((kind >> 3) & 0x3);
        let mut cursor = at + 1;
        let id_bytes = bytes
            .get(cursor..cursor + id_length)
            .ok_or_else(truncated)?;
        let id = id_bytes.iter().fold(0u16, |n, b| (n << 8) | u16::from(*b));
        cursor += id_length;
        let length = if length_bytes == 0 {
            usize::from(kind & 0x7)
        } else {
            let raw = bytes
                .get(cursor..cursor + length_bytes)
                .ok_or_else(truncated)?;
            cursor += length_bytes;
            raw.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
        };
        let value = bytes.get(cursor..cursor + length).ok_or_else(truncated)?;
        entries.push(match kind >> 6 {
            0 => Tlv::ObjectInstance(id, decode_level(value, offset + cursor, depth + 1)?),
            1 => Tlv::ResourceInstance(id, value.to_vec()),
            2 => Tlv::MultipleResource(id, decode_level(value, offset + cursor, depth + 1)?),
            _ => Tlv::Resource(id, value.to_vec()),
        });
        at = cursor + length;
    }
    Ok(entries)
}

/// The raw bytes of resource `id` anywhere in `entries` (first instance).
pub fn find_resource(entries: &[Tlv], id: u16) -> Option<&[u8]> {
    entries.iter().find_map(|entry| match entry {
        Tlv::Resource(rid, value) if *rid == id => Some(value.as_slice()),
        Tlv::ObjectInstance(_, inner) => find_resource(inner, id),
        Tlv::MultipleResource(rid, inner) if *rid == id => inner.iter().find_map(|i| match i {
            Tlv::ResourceInstance(_, value) => Some(value.as_slice()),
            _ => None,
        }),
        _ => None,
    })
}

/// A TLV resource value as the object's data type says: booleans are one
/// byte; floats are 4 or 8 bytes; integers 1, 2, 4 or 8 bytes (signed).
/// Floats and integers of the same width cannot be told apart by the
/// bytes, so the caller says which the resource is.
pub fn tlv_value(bytes: &[u8], is_float: bool, is_bool: bool) -> Option<Value> {
    if is_bool {
        return match bytes {
            [0] => Some(Value::Bool(false)),
            [1] => Some(Value::Bool(true)),
            _ => None,
        };
    }
    let number = match (is_float, bytes.len()) {
        (true, 4) => f64::from(f32::from_be_bytes(bytes.try_into().ok()?)),
        (true, 8) => f64::from_be_bytes(bytes.try_into().ok()?),
        (false, 1) => f64::from(bytes[0] as i8),
        (false, 2) => f64::from(i16::from_be_bytes(bytes.try_into().ok()?)),
        (false, 4) => f64::from(i32::from_be_bytes(bytes.try_into().ok()?)),
        (false, 8) => i64::from_be_bytes(bytes.try_into().ok()?) as f64,
        _ => return None,
    };
    number.is_finite().then_some(Value::Number(number))
}

/// Whether an IPSO resource is a float (sensor values, 5700/5800) or a
/// boolean (on/off 5850, digital input state 5500).
pub fn resource_is_float(resource: u16) -> bool {
    matches!(resource, 5700 | 5800 | 5601 | 5602 | 5603 | 5604)
}

pub fn resource_is_bool(resource: u16) -> bool {
    matches!(resource, 5850 | 5500)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ipso_links_map_to_thing_services() {
        let (object, instance) = object_instance("/3303/0").unwrap();
        assert_eq!(
            (object.semantic_type, object.unit, instance),
            ("temperature", Some("Cel"), 0)
        );
        assert_eq!(resource_name(object, 0), "temperature");
        let (switch, instance) = object_instance("3311/2").unwrap();
        assert_eq!(switch.kind, Kind::Actuator);
        assert_eq!(resource_name(switch, instance), "light-control-2");
        assert!(
            object_instance("/1/0").is_none(),
            "the server object is not a thing"
        );
        assert!(object_instance("/3/0").is_none());
        assert!(object_instance("/3303").is_none());
    }

    #[test]
    fn a_temperature_object_instance_in_tlv() {
        // Object instance 0 holding 5700 = 21.5 (float32) and 5701 = "Cel".
        let bytes = [
            0x08, 0x00, 0x0d, // instance 0, 13 bytes follow
            0xe4, 0x16, 0x44, 0x41, 0xac, 0x00, 0x00, // 5700: 4 bytes
            0xe3, 0x16, 0x45, b'C', b'e', b'l', // 5701: 3 bytes
        ];
        let entries = decode_tlv(&bytes).unwrap();
        let value = find_resource(&entries, 5700).unwrap();
        assert_eq!(tlv_value(value, true, false), Some(Value::Number(21.5)));
        assert_eq!(find_resource(&entries, 5701), Some(b"Cel".as_slice()));
    }

    #[test]
    fn a_single_boolean_resource_in_tlv() {
        let entries = decode_tlv(&[0xe1, 0x16, 0xda, 0x01]).unwrap();
        assert_eq!(
            tlv_value(find_resource(&entries, 5850).unwrap(), false, true),
            Some(Value::Bool(true))
        );
    }

    #[test]
    fn truncated_tlv_is_an_error() {
        assert_eq!(
            decode_tlv(&[0xe4, 0x16, 0x44, 0x41]),
            Err(TlvError::Truncated(0))
        );
        assert!(decode_tlv(&[0x08, 0x00, 0x05, 0xc1]).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(entries) = decode_tlv(&bytes) {
                let _ = find_resource(&entries, 5700);
            }
        }

        #[test]
        fn integers_of_every_width(n: i32) {
            let bytes = n.to_be_bytes();
            prop_assert_eq!(tlv_value(&bytes, false, false), Some(Value::Number(f64::from(n))));
        }
    }
}
