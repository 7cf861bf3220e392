//! Resolution (RFC 8428 §4): base fields applied, relative times anchored
//! to now, names validated; the reverse, a pack for one thing.

use super::{RELATIVE_TIME_LIMIT, Record, Resolved, SenmlError, VERSION};
use crate::reading::{Timestamp, Value};

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
