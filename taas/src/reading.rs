//! Readings: one timestamped value of one thing service.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::id::ThingId;

/// Microseconds since the Unix epoch. SenML carries seconds as a float; a
/// float of today's seconds resolves to about a tenth of a microsecond, so
/// microseconds keep every distinct SenML time distinct and make exact,
/// integer store keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const MIN: Timestamp = Timestamp(0);
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since.as_micros() as u64)
    }

    /// From SenML seconds; `None` for negative, non-finite or far-future times.
    pub fn from_secs_f64(secs: f64) -> Option<Self> {
        // Up to the year 2554 fits in u64 microseconds.
        if !(0.0..=1.8e13).contains(&secs) {
            return None;
        }
        Some(Timestamp((secs * 1e6).round() as u64))
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    pub fn saturating_sub_micros(self, micros: u64) -> Self {
        Timestamp(self.0.saturating_sub(micros))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// A reading's value, one of SenML's four value kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Number(f64),
    Bool(bool),
    String(String),
    Data(Vec<u8>),
}

impl Value {
    /// A value sent as plain text (an MQTT payload, a CoAP text/plain
    /// body): booleans in their common spellings, numbers, else text.
    pub fn from_plain(text: &str) -> Value {
        match text.to_ascii_lowercase().as_str() {
            "true" | "on" => return Value::Bool(true),
            "false" | "off" => return Value::Bool(false),
            _ => {}
        }
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Value::Number(n),
            _ => Value::String(text.to_owned()),
        }
    }

    pub fn data_type(&self) -> crate::thing::DataType {
        use crate::thing::DataType;
        match self {
            Value::Number(_) => DataType::Number,
            Value::Bool(_) => DataType::Boolean,
            Value::String(_) => DataType::String,
            Value::Data(_) => DataType::Data,
        }
    }

    /// The value a JSON document holds, as [`to_json`](Self::to_json)
    /// wrote it (data comes back as its base64 text).
    pub fn from_json(json: serde_json::Value) -> Value {
        match json {
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => n
                .as_f64()
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(n.to_string())),
            serde_json::Value::String(s) => Value::String(s),
            other => Value::String(other.to_string()),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        use base64::Engine;
        match self {
            Value::Number(n) => serde_json::Number::from_f64(*n)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Data(d) => serde_json::Value::String(
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d),
            ),
        }
    }
}

/// One value at one time. The thing it belongs to is implied by where it is
/// kept (store key, registry entry) or carried beside it ([`ThingReading`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub time: Timestamp,
    pub value: Value,
}

/// A reading together with its thing service: what flows on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThingReading {
    pub thing: ThingId,
    pub reading: Reading,
}

/// Compact binary form of a reading's value for the store: a tag byte then
/// the payload. Decoding is total: any byte string gives a value or an error.
pub mod codec {
    use super::Value;

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum ValueCodecError {
        #[error("stored value is empty")]
        Empty,
        #[error("stored value has unknown tag {0}")]
        UnknownTag(u8),
        #[error("stored value has {0} payload bytes where {1} were expected")]
        BadLength(usize, usize),
        #[error("stored string is not UTF-8")]
        NotUtf8,
    }

    const NUMBER: u8 = 0;
    const FALSE: u8 = 1;
    const TRUE: u8 = 2;
    const STRING: u8 = 3;
    const DATA: u8 = 4;

    pub fn encode(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Number(n) => {
                out.push(NUMBER);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Value::Bool(false) => out.push(FALSE),
            Value::Bool(true) => out.push(TRUE),
            Value::String(s) => {
                out.push(STRING);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Data(d) => {
                out.push(DATA);
                out.extend_from_slice(d);
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Value, ValueCodecError> {
        let (&tag, rest) = bytes.split_first().ok_or(ValueCodecError::Empty)?;
        match tag {
            NUMBER => {
                let raw: [u8; 8] = rest
                    .try_into()
                    .map_err(|_| ValueCodecError::BadLength(rest.len(), 8))?;
                Ok(Value::Number(f64::from_be_bytes(raw)))
            }
            FALSE | TRUE if !rest.is_empty() => Err(ValueCodecError::BadLength(rest.len(), 0)),
            FALSE => Ok(Value::Bool(false)),
            TRUE => Ok(Value::Bool(true)),
            STRING => std::str::from_utf8(rest)
                .map(|s| Value::String(s.to_owned()))
                .map_err(|_| ValueCodecError::NotUtf8),
            DATA => Ok(Value::Data(rest.to_vec())),
            other => Err(ValueCodecError::UnknownTag(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value_strategy() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<f64>()
                .prop_filter("NaN never equals itself", |n| !n.is_nan())
                .prop_map(Value::Number),
            any::<bool>().prop_map(Value::Bool),
            ".{0,30}".prop_map(Value::String),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Data),
        ]
    }

    proptest! {
        #[test]
        fn value_codec_roundtrips(value in value_strategy()) {
            let mut buf = Vec::new();
            codec::encode(&value, &mut buf);
            prop_assert_eq!(codec::decode(&buf).unwrap(), value);
        }

        #[test]
        fn json_values_come_back_as_they_went(value in value_strategy()) {
            let back = Value::from_json(value.to_json());
            match (&value, back) {
                // Data travels as base64 text; infinities as null.
                (Value::Data(_), back) => prop_assert_eq!(back, Value::String(
                    value.to_json().as_str().unwrap_or_default().to_owned())),
                (Value::Number(n), back) if !n.is_finite() => {
                    prop_assert_eq!(back, Value::String("null".into()))
                }
                (_, back) => prop_assert_eq!(back, value),
            }
        }

        #[test]
        fn value_decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = codec::decode(&bytes);
        }

        #[test]
        fn seconds_roundtrip_to_the_microsecond(micros in 0u64..3_000_000_000_000_000) {
            let t = Timestamp(micros);
            prop_assert_eq!(Timestamp::from_secs_f64(t.as_secs_f64()), Some(t));
        }
    }

    #[test]
    fn rejects_unrepresentable_times() {
        assert_eq!(Timestamp::from_secs_f64(-1.0), None);
        assert_eq!(Timestamp::from_secs_f64(f64::NAN), None);
        assert_eq!(Timestamp::from_secs_f64(1e300), None);
    }
}
