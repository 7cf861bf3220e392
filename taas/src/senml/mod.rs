//! SenML (RFC 8428): the reading format on every wire.
//!
//! A pack is parsed into raw [`Record`]s (one decoder per encoding, each a
//! pure function of the bytes), then [`resolve`]d: base fields are applied,
//! relative times anchored to "now", names validated. Output goes the other
//! way through [`Record`] and the two encoders.
//!
//! [`json`] and [`cbor`] hold the two encodings, [`resolve`](mod@resolve) the
//! rules of §4 that turn records into values of named things.

mod cbor;
mod json;
mod resolve;
#[cfg(test)]
mod tests;

use base64::Engine;
use serde::Serialize;

use crate::reading::{Timestamp, Value};

pub use cbor::{parse_cbor, to_cbor};
pub use json::{parse_json, to_json};
pub use resolve::{is_valid_name, pack_for, resolve};

/// The SenML version this implementation understands (RFC 8428).
pub const VERSION: i64 = 10;
/// Times below 2**28 seconds are relative to now (RFC 8428 §4.5.3).
pub(crate) const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;

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
