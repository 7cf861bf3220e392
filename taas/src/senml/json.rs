//! SenML JSON (RFC 8428 §5): a hand-written visitor, so that a pack is
//! read in one pass and a malformed record is named by its index.

use std::fmt;

use base64::Engine;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Record, SenmlError};

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
