//! Key layouts. A reading's key is the thing id, a separator and the
//! big-endian microseconds, so one thing's readings are contiguous and in
//! time order; a service's keys are its name, the separator and its own key.

use crate::id::ThingId;
use crate::reading::Timestamp;

/// Separates the thing id from the timestamp in reading keys. Ids never
/// contain it, and it sorts below every id character, so one thing's keys
/// never interleave with another's.
pub(super) const KEY_SEPARATOR: u8 = 0x00;

/// The key of one reading: id, separator, big-endian microseconds.
pub fn reading_key(id: &ThingId, time: Timestamp) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.as_str().len() + 9);
    key.extend_from_slice(id.as_str().as_bytes());
    key.push(KEY_SEPARATOR);
    key.extend_from_slice(&time.0.to_be_bytes());
    key
}

/// Splits a reading key into its id part and time; `None` if malformed.
pub fn parse_reading_key(key: &[u8]) -> Option<(&[u8], Timestamp)> {
    if key.len() < 9 {
        return None;
    }
    let (id, rest) = key.split_at(key.len() - 9);
    if rest[0] != KEY_SEPARATOR {
        return None;
    }
    let time: [u8; 8] = rest[1..].try_into().ok()?;
    Some((id, Timestamp(u64::from_be_bytes(time))))
}

pub(super) fn id_prefix(id: &[u8]) -> Vec<u8> {
    let mut prefix = id.to_vec();
    prefix.push(KEY_SEPARATOR);
    prefix
}

/// The smallest key greater than every key of this id.
pub(super) fn id_prefix_end(id: &[u8]) -> Vec<u8> {
    let mut end = id.to_vec();
    end.push(KEY_SEPARATOR + 1);
    end
}

pub(super) fn service_key(name: &str, key: &[u8]) -> Vec<u8> {
    let mut full = id_prefix(name.as_bytes());
    full.extend_from_slice(key);
    full
}
