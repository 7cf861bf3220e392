//! Device payloads to readings, by content format: text/plain, SenML JSON
//! (110), SenML CBOR (112), a CBOR data item (60) and LWM2M TLV (11542).
//! Pure: no I/O.

use fogbank_taas::{Timestamp, Value, senml};

use crate::lwm2m;
use crate::message::format;

/// One value a device sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub value: Value,
    /// The device's unit, when the format carries one (SenML).
    pub unit: Option<String>,
    pub time: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("content format {0} is not understood")]
    Format(u16),
    #[error("the payload is empty")]
    Empty,
    #[error("text payload is not UTF-8")]
    NotText,
    #[error("SenML: {0}")]
    Senml(String),
    #[error("CBOR: {0}")]
    Cbor(String),
    #[error("TLV: {0}")]
    Tlv(String),
    #[error("TLV holds no value resource {0}")]
    NoResource(u16),
}

/// The value in `payload`. For TLV, `resource` says which LWM2M resource
/// holds it (and so its data type).
pub fn decode(
    content_format: Option<u16>,
    payload: &[u8],
    resource: Option<u16>,
    now: Timestamp,
) -> Result<Sample, PayloadError> {
    if payload.is_empty() {
        return Err(PayloadError::Empty);
    }
    let sample = |value| Sample {
        value,
        unit: None,
        time: now,
    };
    match content_format.unwrap_or(format::TEXT) {
        format::TEXT => {
            let text = std::str::from_utf8(payload)
                .map_err(|_| PayloadError::NotText)?
                .trim();
            // LWM2M's plain text (1.1, 7.4.1) writes a boolean resource
            // (on/off 5850) as 1 or 0.
            let value = match (resource.is_some_and(lwm2m::resource_is_bool), text) {
                (true, "1") => Value::Bool(true),
                (true, "0") => Value::Bool(false),
                _ => Value::from_plain(text),
            };
            Ok(sample(value))
        }
        format::SENML_JSON => senml_sample(senml::parse_json(payload), resource.is_some(), now),
        format::SENML_CBOR => senml_sample(senml::parse_cbor(payload), resource.is_some(), now),
        format::CBOR => {
            let item: ciborium::Value = ciborium::de::from_reader(payload)
                .map_err(|e| PayloadError::Cbor(e.to_string()))?;
            Ok(sample(cbor_value(item)?))
        }
        format::LWM2M_TLV => {
            let resource = resource.unwrap_or(5700);
            let entries =
                lwm2m::decode_tlv(payload).map_err(|e| PayloadError::Tlv(e.to_string()))?;
            let bytes = lwm2m::find_resource(&entries, resource)
                .ok_or(PayloadError::NoResource(resource))?;
            let value = lwm2m::tlv_value(
                bytes,
                lwm2m::resource_is_float(resource),
                lwm2m::resource_is_bool(resource),
            )
            .ok_or_else(|| PayloadError::Tlv(format!("resource {resource} is malformed")))?;
            Ok(sample(value))
        }
        other => Err(PayloadError::Format(other)),
    }
}

/// LWM2M (1.1 §7.4.4, and Leshan) names resources by path with a leading
/// slash (`/3303/0/5700`), which RFC 8428 does not allow a name to start
/// with: from an LWM2M resource, the slash is dropped before the names
/// are resolved.
pub(crate) fn lwm2m_names(records: &mut [senml::Record]) {
    let mut named = false;
    for record in records {
        if let Some(bn) = &mut record.bn {
            if let Some(rest) = bn.strip_prefix('/') {
                *bn = rest.to_owned();
            }
            named |= !bn.is_empty();
        }
        if !named
            && let Some(n) = &mut record.n
            && let Some(rest) = n.strip_prefix('/')
        {
            *n = rest.to_owned();
        }
    }
}

fn senml_sample(
    records: Result<Vec<senml::Record>, senml::SenmlError>,
    lwm2m: bool,
    now: Timestamp,
) -> Result<Sample, PayloadError> {
    let error = |e: senml::SenmlError| PayloadError::Senml(e.to_string());
    let mut records = records.map_err(error)?;
    if lwm2m {
        lwm2m_names(&mut records);
    }
    let resolved = senml::resolve(&records, now).map_err(error)?;
    // A resource's own pack: its newest record is its current value.
    let newest = resolved
        .into_iter()
        .max_by_key(|r| r.time)
        .ok_or(PayloadError::Empty)?;
    Ok(Sample {
        value: newest.value,
        unit: newest.unit,
        time: newest.time,
    })
}

fn cbor_value(item: ciborium::Value) -> Result<Value, PayloadError> {
    use ciborium::Value as C;
    match item {
        C::Bool(b) => Ok(Value::Bool(b)),
        C::Float(f) if f.is_finite() => Ok(Value::Number(f)),
        C::Integer(i) => Ok(Value::Number(i128::from(i) as f64)),
        C::Text(text) => Ok(Value::String(text)),
        C::Bytes(bytes) => Ok(Value::Data(bytes)),
        _ => Err(PayloadError::Cbor(
            "not a number, boolean, text or bytes".into(),
        )),
    }
}

/// A value as text/plain for a device or a client: `21.5`, `true`, text.
pub fn plain_text(value: &Value) -> Vec<u8> {
    match value {
        Value::Number(n) => n.to_string().into_bytes(),
        Value::Bool(b) => b.to_string().into_bytes(),
        Value::String(s) => s.clone().into_bytes(),
        Value::Data(d) => d.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Timestamp = Timestamp(1_800_000_000_000_000);

    #[test]
    fn lwm2m_resources_may_name_themselves_by_path() {
        let by_name = br#"[{"n":"/3303/0/5700","v":21.5}]"#;
        let by_base = br#"[{"bn":"/3303/0/","n":"5700","v":21.5}]"#;
        for pack in [&by_name[..], &by_base[..]] {
            let sample = decode(Some(format::SENML_JSON), pack, Some(5700), NOW).unwrap();
            assert_eq!(sample.value, Value::Number(21.5));
            // From a device that is not LWM2M, the name stays refused.
            assert!(decode(Some(format::SENML_JSON), pack, None, NOW).is_err());
        }
    }

    #[test]
    fn lwm2m_plain_text_writes_a_boolean_resource_as_1_or_0() {
        for (text, on) in [(&b"1"[..], true), (&b"0\n"[..], false)] {
            let sample = decode(Some(format::TEXT), text, Some(5850), NOW).unwrap();
            assert_eq!(sample.value, Value::Bool(on));
        }
        // A number resource's 1 is the number 1.
        let sample = decode(Some(format::TEXT), b"1", Some(5700), NOW).unwrap();
        assert_eq!(sample.value, Value::Number(1.0));
    }

    #[test]
    fn every_format_gives_its_value() {
        let number = |n| Value::Number(n);
        assert_eq!(
            decode(None, b"21.5\n", None, NOW).unwrap().value,
            number(21.5)
        );
        assert_eq!(
            decode(Some(0), b"on", None, NOW).unwrap().value,
            Value::Bool(true)
        );
        let senml = decode(
            Some(110),
            br#"[{"n":"t","u":"Cel","v":20.25,"t":1.8e9}]"#,
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(
            (senml.value, senml.unit.as_deref()),
            (number(20.25), Some("Cel"))
        );
        // SenML CBOR [{0: "t", 2: 19.5}]
        let cbor_pack = [0x81, 0xa2, 0x00, 0x61, b't', 0x02, 0xf9, 0x4c, 0xe0];
        assert_eq!(
            decode(Some(112), &cbor_pack, None, NOW).unwrap().value,
            number(19.5)
        );
        assert_eq!(
            decode(Some(60), &[0x18, 42], None, NOW).unwrap().value,
            number(42.0)
        );
        assert_eq!(
            decode(Some(60), &[0xf5], None, NOW).unwrap().value,
            Value::Bool(true)
        );
        let tlv = [0xe4, 0x16, 0x44, 0x41, 0xac, 0x00, 0x00];
        assert_eq!(
            decode(Some(11542), &tlv, Some(5700), NOW).unwrap().value,
            number(21.5)
        );
    }

    #[test]
    fn what_cannot_be_read_is_an_error() {
        assert_eq!(
            decode(Some(50), b"{}", None, NOW),
            Err(PayloadError::Format(50))
        );
        assert_eq!(decode(None, b"", None, NOW), Err(PayloadError::Empty));
        assert_eq!(
            decode(None, &[0xff, 0xfe], None, NOW),
            Err(PayloadError::NotText)
        );
        assert!(decode(Some(110), b"[{", None, NOW).is_err());
        assert!(decode(Some(60), &[0xa0], None, NOW).is_err());
        assert_eq!(
            decode(Some(11542), &[0xe1, 0x16, 0xda, 0x01], Some(5700), NOW),
            Err(PayloadError::NoResource(5700))
        );
    }

    proptest! {
        #[test]
        fn any_bytes_in_any_format_decode_or_fail_cleanly(
            format in prop::sample::select(vec![0u16, 60, 110, 112, 11542, 42]),
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = decode(Some(format), &bytes, Some(5700), NOW);
        }
    }
}
