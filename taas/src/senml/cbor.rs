//! SenML CBOR (RFC 8428 §6): the same records with the integer labels of
//! table 6.

use super::{Record, SenmlError};

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
