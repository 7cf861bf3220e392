//! SenML (RFC 8428): the reading format on every wire.
//!
//! A pack is parsed into raw [`Record`]s (one decoder per encoding, each a
//! pure function of the bytes), then [`resolve`]d: base fields are applied,
//! relative times anchored to "now", names validated. Output goes the other
//! way through [`Record`] and the two encoders.

use std::fmt;

use base64::Engine;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::reading::{Timestamp, Value};

/// The SenML version this implementation understands (RFC 8428).
pub const VERSION: i64 = 10;
/// Times below 2**28 seconds are relative to now (RFC 8428 §4.5.3).
const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;

/// Why a pack was rejected. Each names the record (0-based) at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SenmlError {
    #[error("not a SenML JSON pack: {0}")]
    Json(String),
    #[error("not a SenML CBOR pack: {0}")]
    Cbor(String),
    #[error("record {0}: the resolved name {1:?} is not a valid SenML name")]
    BadName(usize, String),
    #[error("record {0}: has no value and no sum")]
    NoValue(usize),
    #[error("record {0}: has more than one of v, vs, vb, vd")]
    SeveralValues(usize),
    #[error("record {0}: field {1:?} must be understood and is not supported")]
    MustUnderstand(usize, String),
    #[error("record {0}: SenML version {1} is newer than the supported {VERSION}")]
    Version(usize, i64),
    #[error("record {0}: time is out of range")]
    BadTime(usize),
    #[error("record {0}: numeric value is not finite")]
    NotFinite(usize),
    #[error("the pack is empty")]
    Empty,
}

/// One SenML record as it appears on the wire, before resolution.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Record {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bu: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bv: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bver: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub u: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vb: Option<bool>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_data"
    )]
    pub vd: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub t: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ut: Option<f64>,
    /// The first unknown field whose label ends in `_` ("must understand").
    #[serde(skip)]
    pub must_understand: Option<String>,
}

fn serialize_data<S: serde::Serializer>(data: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match data {
        Some(d) => s.serialize_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)),
        None => s.serialize_none(),
    }
}

impl Record {
    /// A record carrying one value, named and timed absolutely.
    pub fn with_value(
        name: Option<String>,
        unit: Option<String>,
        value: &Value,
        time: Timestamp,
    ) -> Self {
        let mut record = Record {
            n: name,
            u: unit,
            t: Some(time.as_secs_f64()),
            ..Default::default()
        };
        match value {
            Value::Number(n) => record.v = Some(*n),
            Value::Bool(b) => record.vb = Some(*b),
            Value::String(s) => record.vs = Some(s.clone()),
            Value::Data(d) => record.vd = Some(d.clone()),
        }
        record
    }
}

/// A record after resolution: what a reading is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Base name + name; may be empty when the pack names nothing.
    pub name: String,
    pub unit: Option<String>,
    pub value: Value,
    pub time: Timestamp,
}

// ---------------------------------------------------------------- JSON

/// Parses a SenML JSON pack (RFC 8428 §5).
pub fn parse_json(bytes: &[u8]) -> Result<Vec<Record>, SenmlError> {
    let pack: JsonPack =
        serde_json::from_slice(bytes).map_err(|e| SenmlError::Json(e.to_string()))?;
    Ok(pack.0)
}

/// Encodes records as SenML JSON.
pub fn to_json(records: &[Record]) -> Vec<u8> {
    // Serialising plain structs of strings and finite floats cannot fail;
    // non-finite floats are written as null by serde_json.
    serde_json::to_vec(records).unwrap_or_else(|_| b"[]".to_vec())
}

struct JsonPack(Vec<Record>);

impl<'de> Deserialize<'de> for JsonPack {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PackVisitor;
        impl<'de> Visitor<'de> for PackVisitor {
            type Value = JsonPack;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of SenML records")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonPack, A::Error> {
                let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(JsonRecord(record)) = seq.next_element()? {
                    records.push(record);
                }
                Ok(JsonPack(records))
            }
        }
        deserializer.deserialize_seq(PackVisitor)
    }
}

struct JsonRecord(Record);

impl<'de> Deserialize<'de> for JsonRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RecordVisitor;
        impl<'de> Visitor<'de> for RecordVisitor {
            type Value = JsonRecord;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a SenML record (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonRecord, A::Error> {
                let mut r = Record::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    // A JSON null counts as an absent field (tolerant reader).
                    fn set<T, E: de::Error>(
                        slot: &mut Option<T>,
                        key: &str,
                        value: Option<T>,
                    ) -> Result<(), E> {
                        let Some(value) = value else { return Ok(()) };
                        if slot.replace(value).is_some() {
                            return Err(E::custom(format!("duplicate field {key:?}")));
                        }
                        Ok(())
                    }
                    match key.as_ref() {
                        "bn" => set(&mut r.bn, "bn", map.next_value()?)?,
                        "bt" => set(&mut r.bt, "bt", map.next_value()?)?,
                        "bu" => set(&mut r.bu, "bu", map.next_value()?)?,
                        "bv" => set(&mut r.bv, "bv", map.next_value()?)?,
                        "bs" => set(&mut r.bs, "bs", map.next_value()?)?,
                        "bver" => set(&mut r.bver, "bver", map.next_value()?)?,
                        "n" => set(&mut r.n, "n", map.next_value()?)?,
                        "u" => set(&mut r.u, "u", map.next_value()?)?,
                        "v" => set(&mut r.v, "v", map.next_value()?)?,
                        "vs" => set(&mut r.vs, "vs", map.next_value()?)?,
                        "vb" => set(&mut r.vb, "vb", map.next_value()?)?,
                        "vd" => {
                            let text: Option<std::borrow::Cow<'de, str>> = map.next_value()?;
                            let data = text
                                .map(|text| {
                                    decode_base64url(&text).ok_or_else(|| {
                                        <A::Error as de::Error>::custom("vd is not base64url")
                                    })
                                })
                                .transpose()?;
                            set(&mut r.vd, "vd", data)?
                        }
                        "s" => set(&mut r.s, "s", map.next_value()?)?,
                        "t" => set(&mut r.t, "t", map.next_value()?)?,
                        "ut" => set(&mut r.ut, "ut", map.next_value()?)?,
                        other => {
                            if other.ends_with('_') && r.must_understand.is_none() {
                                r.must_understand = Some(other.to_owned());
                            }
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(JsonRecord(r))
            }
        }
        deserializer.deserialize_map(RecordVisitor)
    }
}

fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    // RFC 8428 §4.3: base64url without padding; accept padding too.
    let trimmed = text.trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()
}

// ---------------------------------------------------------------- CBOR

/// CBOR labels of RFC 8428 §6, table 6.
mod label {
    pub const BVER: i64 = -1;
    pub const BN: i64 = -2;
    pub const BT: i64 = -3;
    pub const BU: i64 = -4;
    pub const BV: i64 = -5;
    pub const BS: i64 = -6;
    pub const N: i64 = 0;
    pub const U: i64 = 1;
    pub const V: i64 = 2;
    pub const VS: i64 = 3;
    pub const VB: i64 = 4;
    pub const S: i64 = 5;
    pub const T: i64 = 6;
    pub const UT: i64 = 7;
    pub const VD: i64 = 8;
}

/// Parses a SenML CBOR pack (RFC 8428 §6).
pub fn parse_cbor(bytes: &[u8]) -> Result<Vec<Record>, SenmlError> {
    use ciborium::Value as C;
    let err = |m: &str| SenmlError::Cbor(m.to_owned());
    let value: C = ciborium::de::from_reader(bytes).map_err(|e| SenmlError::Cbor(e.to_string()))?;
    let C::Array(items) = value else {
        return Err(err("the pack is not an array"));
    };
    let mut records = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let C::Map(entries) = item else {
            return Err(SenmlError::Cbor(format!("record {index} is not a map")));
        };
        let mut r = Record::default();
        for (key, value) in entries {
            let bad = |field: &str| {
                SenmlError::Cbor(format!("record {index}: field {field} has the wrong type"))
            };
            match key {
                C::Integer(i) => {
                    let label = i64::try_from(i).map_err(|_| bad("label"))?;
                    let text = |v: C, f: &str| match v {
                        C::Text(s) => Ok(s),
                        _ => Err(bad(f)),
                    };
                    let number = |v: C, f: &str| cbor_number(&v).ok_or_else(|| bad(f));
                    match label {
                        label::BVER => {
                            r.bver = Some(match value {
                                C::Integer(i) => i64::try_from(i).map_err(|_| bad("bver"))?,
                                _ => return Err(bad("bver")),
                            })
                        }
                        label::BN => r.bn = Some(text(value, "bn")?),
                        label::BT => r.bt = Some(number(value, "bt")?),
                        label::BU => r.bu = Some(text(value, "bu")?),
                        label::BV => r.bv = Some(number(value, "bv")?),
                        label::BS => r.bs = Some(number(value, "bs")?),
                        label::N => r.n = Some(text(value, "n")?),
                        label::U => r.u = Some(text(value, "u")?),
                        label::V => r.v = Some(number(value, "v")?),
                        label::VS => r.vs = Some(text(value, "vs")?),
                        label::VB => {
                            r.vb = Some(match value {
                                C::Bool(b) => b,
                                _ => return Err(bad("vb")),
                            })
                        }
                        label::S => r.s = Some(number(value, "s")?),
                        label::T => r.t = Some(number(value, "t")?),
                        label::UT => r.ut = Some(number(value, "ut")?),
                        label::VD => {
                            r.vd = Some(match value {
                                C::Bytes(b) => b,
                                _ => return Err(bad("vd")),
                            })
                        }
                        _ => {} // unknown integer labels are extensions we ignore
                    }
                }
                C::Text(name) => {
                    if name.ends_with('_') && r.must_understand.is_none() {
                        r.must_understand = Some(name);
                    }
                }
                _ => {
                    return Err(SenmlError::Cbor(format!(
                        "record {index}: a label is neither integer nor text"
                    )));
                }
            }
        }
        records.push(r);
    }
    Ok(records)
}

fn cbor_number(value: &ciborium::Value) -> Option<f64> {
    match value {
        ciborium::Value::Integer(i) => Some(i128::from(*i) as f64),
        ciborium::Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// Encodes records as SenML CBOR.
pub fn to_cbor(records: &[Record]) -> Vec<u8> {
    use ciborium::Value as C;
    let num = |n: f64| {
        // Integral values go out as CBOR integers: smaller, and what
        // constrained decoders expect.
        if n.fract() == 0.0 && n.abs() < 9.0e15 {
            C::Integer((n as i64).into())
        } else {
            C::Float(n)
        }
    };
    let items = records
        .iter()
        .map(|r| {
            let mut m: Vec<(C, C)> = Vec::new();
            let mut put = |label: i64, value: C| m.push((C::Integer(label.into()), value));
            if let Some(x) = r.bver {
                put(label::BVER, C::Integer(x.into()))
            }
            if let Some(x) = &r.bn {
                put(label::BN, C::Text(x.clone()))
            }
            if let Some(x) = r.bt {
                put(label::BT, num(x))
            }
            if let Some(x) = &r.bu {
                put(label::BU, C::Text(x.clone()))
            }
            if let Some(x) = r.bv {
                put(label::BV, num(x))
            }
            if let Some(x) = r.bs {
                put(label::BS, num(x))
            }
            if let Some(x) = &r.n {
                put(label::N, C::Text(x.clone()))
            }
            if let Some(x) = &r.u {
                put(label::U, C::Text(x.clone()))
            }
            if let Some(x) = r.v {
                put(label::V, num(x))
            }
            if let Some(x) = &r.vs {
                put(label::VS, C::Text(x.clone()))
            }
            if let Some(x) = r.vb {
                put(label::VB, C::Bool(x))
            }
            if let Some(x) = r.s {
                put(label::S, num(x))
            }
            if let Some(x) = r.t {
                put(label::T, num(x))
            }
            if let Some(x) = r.ut {
                put(label::UT, num(x))
            }
            if let Some(x) = &r.vd {
                put(label::VD, C::Bytes(x.clone()))
            }
            C::Map(m)
        })
        .collect();
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&C::Array(items), &mut out);
    out
}

// ---------------------------------------------------------------- resolution

/// RFC 8428 §4.5.1: starts with a letter or digit, then `A-Za-z0-9:./_-`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '/' | '_' | '-'))
}

/// Applies base fields and anchors relative times to `now` (RFC 8428 §4.6).
/// An empty resolved name is allowed (the caller knows what the pack is
/// about, e.g. it was posted to one thing); a non-empty one must be valid.
pub fn resolve(records: &[Record], now: Timestamp) -> Result<Vec<Resolved>, SenmlError> {
    if records.is_empty() {
        return Err(SenmlError::Empty);
    }
    let mut base_name = String::new();
    let mut base_time = 0.0;
    let mut base_unit: Option<&str> = None;
    let mut base_value = 0.0;
    let mut base_sum = 0.0;
    let mut out = Vec::with_capacity(records.len());
    for (index, r) in records.iter().enumerate() {
        if let Some(field) = &r.must_understand {
            return Err(SenmlError::MustUnderstand(index, field.clone()));
        }
        if let Some(version) = r.bver
            && version > VERSION
        {
            return Err(SenmlError::Version(index, version));
        }
        if let Some(bn) = &r.bn {
            base_name.clone_from(bn);
        }
        if let Some(bt) = r.bt {
            base_time = bt;
        }
        if let Some(bu) = &r.bu {
            base_unit = Some(bu);
        }
        if let Some(bv) = r.bv {
            base_value = bv;
        }
        if let Some(bs) = r.bs {
            base_sum = bs;
        }

        let name = match &r.n {
            Some(n) => format!("{base_name}{n}"),
            None => base_name.clone(),
        };
        if !name.is_empty() && !is_valid_name(&name) {
            return Err(SenmlError::BadName(index, name));
        }

        let values = [
            r.v.is_some(),
            r.vs.is_some(),
            r.vb.is_some(),
            r.vd.is_some(),
        ];
        let value = match values.iter().filter(|present| **present).count() {
            0 => match r.s {
                Some(s) => Value::Number(base_sum + s),
                None => return Err(SenmlError::NoValue(index)),
            },
            1 => {
                if let Some(v) = r.v {
                    Value::Number(base_value + v)
                } else if let Some(vs) = &r.vs {
                    Value::String(vs.clone())
                } else if let Some(vb) = r.vb {
                    Value::Bool(vb)
                } else {
                    Value::Data(r.vd.clone().unwrap_or_default())
                }
            }
            _ => return Err(SenmlError::SeveralValues(index)),
        };
        if let Value::Number(n) = value
            && !n.is_finite()
        {
            return Err(SenmlError::NotFinite(index));
        }

        let time = base_time + r.t.unwrap_or(0.0);
        let time = if time < RELATIVE_TIME_LIMIT {
            let offset = time * 1e6;
            if !offset.is_finite() {
                return Err(SenmlError::BadTime(index));
            }
            let resolved = now.0 as f64 + offset;
            Timestamp::from_secs_f64(resolved / 1e6).ok_or(SenmlError::BadTime(index))?
        } else {
            Timestamp::from_secs_f64(time).ok_or(SenmlError::BadTime(index))?
        };

        out.push(Resolved {
            name,
            unit: r.u.clone().or_else(|| base_unit.map(str::to_owned)),
            value,
            time,
        });
    }
    Ok(out)
}

/// Wraps records in a pack whose first record carries `bn`/`bu`, so that
/// output for one thing service names it once.
pub fn pack_for(
    name: &str,
    unit: Option<&str>,
    readings: impl IntoIterator<Item = (Timestamp, Value)>,
) -> Vec<Record> {
    let mut records: Vec<Record> = readings
        .into_iter()
        .map(|(time, value)| Record::with_value(None, None, &value, time))
        .collect();
    if let Some(first) = records.first_mut() {
        first.bn = Some(name.to_owned());
        first.bu = unit.map(str::to_owned);
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Timestamp = Timestamp(1_700_000_000_000_000);

    #[test]
    fn rfc8428_multiple_datapoints_example() {
        // RFC 8428 §5.1.2.
        let pack = br#"[
            {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
            {"n":"current","u":"A","v":1.2}
        ]"#;
        let resolved = resolve(&parse_json(pack).unwrap(), NOW).unwrap();
        assert_eq!(resolved.len(), 2);
        assert_eq!(resolved[0].name, "urn:dev:ow:10e2073a01080063:voltage");
        assert_eq!(resolved[1].name, "urn:dev:ow:10e2073a01080063:current");
        assert_eq!(resolved[1].unit.as_deref(), Some("A"));
        assert_eq!(resolved[1].value, Value::Number(1.2));
        assert_eq!(resolved[0].time, NOW, "no time means now");
    }

    #[test]
    fn base_time_value_and_relative_times() {
        let pack = br#"[
            {"bn":"dev:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"x","v":120.1},
            {"n":"x","t":-5,"v":1},
            {"bt":-10,"n":"x","bv":100,"v":1.5}
        ]"#;
        let resolved = resolve(&parse_json(pack).unwrap(), NOW).unwrap();
        assert_eq!(resolved[0].time, Timestamp(1_276_020_076_001_000));
        assert_eq!(resolved[1].time, Timestamp(1_276_020_071_001_000));
        assert_eq!(resolved[1].unit.as_deref(), Some("A"));
        // bt -10 is relative to now.
        assert_eq!(resolved[2].time, Timestamp(NOW.0 - 10_000_000));
        assert_eq!(resolved[2].value, Value::Number(101.5));
    }

    #[test]
    fn value_kinds_and_sum() {
        let pack =
            br#"[{"n":"a","vb":true},{"n":"b","vs":"on"},{"n":"c","vd":"AQID"},{"n":"d","s":42}]"#;
        let values: Vec<Value> = resolve(&parse_json(pack).unwrap(), NOW)
            .unwrap()
            .into_iter()
            .map(|r| r.value)
            .collect();
        assert_eq!(
            values,
            vec![
                Value::Bool(true),
                Value::String("on".into()),
                Value::Data(vec![1, 2, 3]),
                Value::Number(42.0)
            ]
        );
    }

    #[test]
    fn rejections() {
        let check = |json: &str| resolve(&parse_json(json.as_bytes())?, NOW);
        assert_eq!(check("[]"), Err(SenmlError::Empty));
        assert_eq!(check(r#"[{"n":"a"}]"#), Err(SenmlError::NoValue(0)));
        assert_eq!(
            check(r#"[{"n":"a","v":1,"vb":true}]"#),
            Err(SenmlError::SeveralValues(0))
        );
        assert_eq!(
            check(r#"[{"n":"-a","v":1}]"#),
            Err(SenmlError::BadName(0, "-a".into()))
        );
        assert_eq!(
            check(r#"[{"n":"a","v":1,"x_":1}]"#),
            Err(SenmlError::MustUnderstand(0, "x_".into()))
        );
        assert_eq!(
            check(r#"[{"n":"a","v":1,"bver":11}]"#),
            Err(SenmlError::Version(0, 11))
        );
        assert_eq!(
            check(r#"[{"n":"a","v":1,"t":1e300}]"#),
            Err(SenmlError::BadTime(0))
        );
        assert!(matches!(
            check(r#"[{"n":"a","v":"1"}]"#),
            Err(SenmlError::Json(_))
        ));
        assert!(matches!(
            check(r#"[{"n":"a","v":1,"v":2}]"#),
            Err(SenmlError::Json(_))
        ));
        assert!(matches!(check(r#"{"n":"a"}"#), Err(SenmlError::Json(_))));
        // Unknown fields without the trailing underscore are ignored.
        assert!(check(r#"[{"n":"a","v":1,"foo":{"x":[1]}}]"#).is_ok());
        // A null is an absent field.
        assert_eq!(
            check(r#"[{"n":"a","v":1,"vs":null,"t":null}]"#).unwrap()[0].value,
            Value::Number(1.0)
        );
    }

    #[test]
    fn cbor_rfc_example_decodes() {
        // RFC 8428 §6 example: [{-2: "urn:dev:ow:10e2073a01080063:", -3: 1.276020076001e+09, -4: "A", -1: 5, 0: "voltage", 1: "V", 2: 120.1}, {0: "current", 6: -5, 2: 1.2}]
        let records = vec![
            Record {
                bn: Some("urn:dev:ow:10e2073a01080063:".into()),
                bt: Some(1.276020076001e9),
                bu: Some("A".into()),
                bver: Some(5),
                n: Some("voltage".into()),
                u: Some("V".into()),
                v: Some(120.1),
                ..Default::default()
            },
            Record {
                n: Some("current".into()),
                t: Some(-5.0),
                v: Some(1.2),
                ..Default::default()
            },
        ];
        let bytes = to_cbor(&records);
        assert_eq!(parse_cbor(&bytes).unwrap(), records);
        // The integer label for `n` is 0 and for `v` is 2 (RFC 8428 table 6).
        let raw: ciborium::Value = ciborium::de::from_reader(&bytes[..]).unwrap();
        let first = &raw.as_array().unwrap()[1].as_map().unwrap()[0];
        assert_eq!(first.0, ciborium::Value::Integer(0.into()));
    }

    fn record_strategy() -> impl Strategy<Value = Record> {
        let finite = || prop_oneof![(-1e6f64..1e6f64), (-1000i32..1000).prop_map(f64::from)];
        (
            proptest::option::of("[a-z][a-z0-9:/._-]{0,10}"),
            proptest::option::of("[a-z]{1,5}"),
            proptest::option::of("[A-Za-z%]{1,4}"),
            prop_oneof![
                finite().prop_map(|v| Record {
                    v: Some(v),
                    ..Default::default()
                }),
                any::<bool>().prop_map(|b| Record {
                    vb: Some(b),
                    ..Default::default()
                }),
                "[ -~]{0,12}".prop_map(|s| Record {
                    vs: Some(s),
                    ..Default::default()
                }),
                proptest::collection::vec(any::<u8>(), 0..12).prop_map(|d| Record {
                    vd: Some(d),
                    ..Default::default()
                }),
            ],
            proptest::option::of(1.0e9f64..2.0e9f64),
        )
            .prop_map(|(bn, n, u, mut r, t)| {
                r.bn = bn;
                r.n = n;
                r.u = u;
                r.t = t;
                r
            })
    }

    proptest! {
        #[test]
        fn json_roundtrip(records in proptest::collection::vec(record_strategy(), 1..6)) {
            prop_assert_eq!(parse_json(&to_json(&records)).unwrap(), records);
        }

        #[test]
        fn cbor_roundtrip(records in proptest::collection::vec(record_strategy(), 1..6)) {
            prop_assert_eq!(parse_cbor(&to_cbor(&records)).unwrap(), records);
        }

        #[test]
        fn resolution_is_encoding_independent(records in proptest::collection::vec(record_strategy(), 1..6)) {
            let via_json = resolve(&parse_json(&to_json(&records)).unwrap(), NOW);
            let via_cbor = resolve(&parse_cbor(&to_cbor(&records)).unwrap(), NOW);
            prop_assert_eq!(via_json, via_cbor);
        }

        #[test]
        fn decoders_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_json(&bytes).map(|r| resolve(&r, NOW));
            let _ = parse_cbor(&bytes).map(|r| resolve(&r, NOW));
        }

        #[test]
        fn pack_for_resolves_back(values in proptest::collection::vec((1_000_000_000_000_000u64..2_000_000_000_000_000, -1e6f64..1e6), 1..8)) {
            let readings: Vec<(Timestamp, Value)> = values.iter().map(|(t, v)| (Timestamp(*t), Value::Number(*v))).collect();
            let records = pack_for("gw.sim.dev.temperature", Some("Cel"), readings.clone());
            let resolved = resolve(&parse_json(&to_json(&records)).unwrap(), NOW).unwrap();
            for (r, (t, v)) in resolved.iter().zip(readings) {
                prop_assert_eq!(&r.name, "gw.sim.dev.temperature");
                prop_assert_eq!(r.unit.as_deref(), Some("Cel"));
                prop_assert_eq!(r.time, t);
                prop_assert_eq!(&r.value, &v);
            }
        }
    }
}
