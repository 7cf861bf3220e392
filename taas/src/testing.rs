//! Shorthands for this crate's unit tests.

use crate::{Reading, ThingId, ThingReading, Timestamp, Value};

/// A thing id the test knows to be well formed.
pub(crate) fn id(s: &str) -> ThingId {
    ThingId::parse(s).expect("a test's thing id is well formed")
}

/// A reading of `thing` at `t` µs.
pub(crate) fn reading(thing: &ThingId, t: u64, value: Value) -> ThingReading {
    ThingReading {
        thing: thing.clone(),
        reading: Reading {
            time: Timestamp(t),
            value,
        },
    }
}
