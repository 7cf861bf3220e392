//! What gateways of a local cloud say to each other.
//!
//! Gossipsub topics carry broadcasts: [`CATALOG_TOPIC`] (beacons and
//! catalog deltas, signed, every gateway listens); on a second gossipsub
//! ([`READINGS_PROTOCOL`]) one topic per thing service
//! ([`readings_topic`]) is subscribed to by the gateways with a local
//! consumer, which tells its owner where to send the readings (over the
//! direct readings streams, as JSON batches). Everything else is a
//! [`Request`] answered by a [`Response`] over the request-response
//! protocol [`CALL_PROTOCOL`].
//! All of it is JSON but the readings themselves, a [`batch`] per thing
//! service in a compact binary form; the decoders are pure functions of
//! bytes.

use serde::{Deserialize, Serialize};

use fogbank_taas::remote::{CatalogChange, CatalogSnapshot};
use fogbank_taas::replicated::{Record, Stamp};
use fogbank_taas::store::Window;
use fogbank_taas::{
    CommandState, DeviceOffer, DeviceRef, MoveStatus, MoveTarget, Reading, ThingId, ThingReading,
    TransportTarget, Value,
};

/// Versioned: a gateway speaking another version is simply not heard.
pub const CATALOG_TOPIC: &str = "/fogbank/catalog/1";
pub const READINGS_TOPIC_PREFIX: &str = "/fogbank/readings/1/";
/// The gossipsub whose topics say who follows which thing (the readings
/// themselves go over the direct readings streams).
pub const READINGS_PROTOCOL: &str = "/fogbank/readings";
pub const CALL_PROTOCOL: &str = "/fogbank/call/1";
pub const IDENTIFY_PROTOCOL: &str = "/fogbank/1";

/// The topic that carries one thing service's readings.
pub fn readings_topic(thing: &ThingId) -> String {
    format!("{READINGS_TOPIC_PREFIX}{thing}")
}

/// The thing service a readings topic is about, if it is one.
pub fn thing_of_topic(topic: &str) -> Option<ThingId> {
    ThingId::parse(topic.strip_prefix(READINGS_TOPIC_PREFIX)?).ok()
}

/// A broadcast on [`CATALOG_TOPIC`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogMessage {
    /// Sent every beacon period: the sender is alive, and its catalog is at
    /// this version. A listener that holds another version asks for a
    /// snapshot: this is the digest that repairs missed deltas.
    Beacon {
        gateway: String,
        incarnation: u64,
        version: u64,
        /// How many thing services the catalog holds (for `/peers`).
        things: usize,
        /// Where the sender listens, so that members heard through others
        /// can be dialed directly.
        addresses: Vec<String>,
        /// The fingerprint of its replicated records: a listener whose own
        /// differs pulls the newer ones (`crate::records`).
        #[serde(default)]
        records: u64,
        /// Readings the sender has stored since it started (for `/peers`:
        /// a dashboard's ingest rate of every gateway).
        #[serde(default)]
        readings_ingested: u64,
    },
    /// Changes that bring the sender's catalog from `from` to `to`.
    Delta {
        gateway: String,
        incarnation: u64,
        from: u64,
        to: u64,
        changes: Vec<CatalogChange>,
    },
}

impl CatalogMessage {
    pub fn gateway(&self) -> &str {
        match self {
            CatalogMessage::Beacon { gateway, .. } | CatalogMessage::Delta { gateway, .. } => {
                gateway
            }
        }
    }
}

/// A call to the gateway that owns something.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// The callee's whole catalog.
    Snapshot,
    Latest(ThingId),
    History {
        thing: ThingId,
        window: Window,
    },
    /// Run a command on the callee's thing service and answer its outcome.
    Actuate {
        thing: ThingId,
        value: Value,
    },
    /// Take over one of the caller's devices: answer where it is to
    /// register (see `fogbank_taas::Hub::move_device`).
    OfferDevice(DeviceOffer),
    /// Move the device to the caller (an undrain): answer the move's id.
    RecallDevice(DeviceRef),
    /// Where a move the callee started stands.
    MoveStatus(u64),
    /// Move one of the callee's devices (asked of the caller).
    StartMove {
        device: DeviceRef,
        target: MoveTarget,
        deadline_secs: u64,
    },
    /// History of a thing service that moved from the caller to the callee.
    HandHistory {
        thing: ThingId,
        readings: Vec<Reading>,
    },
    /// The key and stamp of every replicated record the callee holds.
    RecordIndex,
    /// These replicated records, as the callee holds them.
    Records(Vec<String>),
    /// Part of a replicated blob, from `offset`.
    Blob {
        digest: String,
        offset: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Snapshot {
        gateway: String,
        snapshot: CatalogSnapshot,
    },
    Latest(Option<Reading>),
    History(Vec<Reading>),
    Actuated(CommandState),
    /// Where an offered device is to register.
    Welcome(TransportTarget),
    /// The id of the move a recall started.
    Recalled(u64),
    /// Where a move stands (boxed: the largest answer by far).
    Moving(Option<Box<MoveStatus>>),
    /// How many handed readings were stored.
    HistoryTaken(usize),
    RecordIndex(Vec<(String, Stamp)>),
    Records(Vec<Record>),
    /// Part of a blob, base64, and the blob's whole length.
    Blob {
        data: String,
        total: u64,
    },
    /// The call could not be carried out; the reason is for people.
    Refused(String),
}

/// Why bytes from a peer were not a message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("undecodable message from a peer: {0}")]
    Json(#[from] serde_json::Error),
    #[error("undecodable batch of readings from a peer: {0}")]
    Batch(#[from] batch::BatchError),
}

pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serialising these types to JSON cannot fail: no maps with non-string
    // keys, and values are finite (the hub refuses NaN and infinities).
    serde_json::to_vec(message).unwrap_or_default()
}

pub fn decode_catalog(bytes: &[u8]) -> Result<CatalogMessage, WireError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// A batch of readings as version 1 of the readings stream sends it (a
/// JSON list, each reading with its thing service's id).
pub fn decode_readings(bytes: &[u8]) -> Result<Vec<ThingReading>, WireError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// One thing service's readings as version 2 of the readings stream sends
/// them: the id once, then each reading's time and value in binary.
///
/// | bytes | field |
/// |---|---|
/// | 1 | length *n* of the thing-service id |
/// | *n* | the id (ASCII, as [`ThingId::parse`] takes it) |
///
/// then, to the end of the batch, for each reading:
///
/// | bytes | field |
/// |---|---|
/// | 8 | time, microseconds since the Unix epoch, big-endian |
/// | 4 | length *m* of the value, big-endian |
/// | *m* | the value: a tag byte and its payload, as the store keeps it ([`fogbank_taas::reading::codec`]) |
///
/// A JSON batch repeated the id and the field names in every reading: four
/// times the bytes to encrypt twice (the cluster key's cipher, then
/// Noise's) and no text to parse.
pub mod batch {
    use fogbank_taas::reading::codec::{self, ValueCodecError};
    use fogbank_taas::{IdError, Reading, ThingId, ThingReading, Timestamp, Value};

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum BatchError {
        #[error("the batch ends inside its {0}")]
        Truncated(&'static str),
        #[error("the thing-service id is not one: {0}")]
        Id(#[from] IdError),
        #[error("the thing-service id is not text")]
        IdNotText,
        #[error("a value: {0}")]
        Value(#[from] ValueCodecError),
        /// JSON cannot carry one, and the hub refuses them: neither may a
        /// batch.
        #[error("a number that is not finite")]
        NotFinite,
    }

    /// The batch of `readings`, all of the thing service `thing`.
    pub fn encode<'a>(thing: &ThingId, readings: impl IntoIterator<Item = &'a Reading>) -> Vec<u8> {
        let id = thing.as_str().as_bytes();
        let mut out = Vec::with_capacity(1 + id.len() + 64);
        // Ids are at most 255 bytes (`MAX_ID_LEN`).
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        for reading in readings {
            out.extend_from_slice(&reading.time.0.to_be_bytes());
            let length_at = out.len();
            out.extend_from_slice(&[0; 4]);
            codec::encode(&reading.value, &mut out);
            let length = (out.len() - length_at - 4) as u32;
            out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
        }
        out
    }

    /// The readings of a batch, or why it is not one.
    pub fn decode(bytes: &[u8]) -> Result<Vec<ThingReading>, BatchError> {
        let mut rest = bytes;
        let [id_length] = array(take(&mut rest, 1, "id length")?);
        let id = std::str::from_utf8(take(&mut rest, usize::from(id_length), "id")?)
            .map_err(|_| BatchError::IdNotText)?;
        let thing = ThingId::parse(id)?;
        let mut readings = Vec::new();
        while !rest.is_empty() {
            let time = u64::from_be_bytes(array(take(&mut rest, 8, "time")?));
            let length = u32::from_be_bytes(array(take(&mut rest, 4, "value length")?));
            let value = codec::decode(take(&mut rest, length as usize, "value")?)?;
            if matches!(value, Value::Number(n) if !n.is_finite()) {
                return Err(BatchError::NotFinite);
            }
            readings.push(ThingReading {
                thing: thing.clone(),
                reading: Reading {
                    time: Timestamp(time),
                    value,
                },
            });
        }
        Ok(readings)
    }

    fn take<'a>(
        rest: &mut &'a [u8],
        count: usize,
        what: &'static str,
    ) -> Result<&'a [u8], BatchError> {
        if rest.len() < count {
            return Err(BatchError::Truncated(what));
        }
        let (taken, left) = rest.split_at(count);
        *rest = left;
        Ok(taken)
    }

    /// `bytes`, of exactly `N` bytes (as `take` gave them), as an array.
    fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
        let mut array = [0; N];
        array.copy_from_slice(bytes);
        array
    }
}

/// What the request-response codec does with a call's bytes.
pub fn decode_request(bytes: &[u8]) -> Result<Request, WireError> {
    Ok(serde_json::from_slice(bytes)?)
}

pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    Ok(serde_json::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogbank_taas::{Kind, ThingService, Timestamp};
    use proptest::prelude::*;

    #[test]
    fn topics_name_their_thing() {
        let id = ThingId::parse("gw-a.sim.room-1.temperature").unwrap();
        assert_eq!(thing_of_topic(&readings_topic(&id)), Some(id));
        assert_eq!(thing_of_topic(CATALOG_TOPIC), None);
        assert_eq!(thing_of_topic("/fogbank/readings/1/not an id"), None);
    }

    #[test]
    fn messages_survive_the_wire() {
        let thing = ThingService::new(
            ThingId::parse("gw-a.sim.room-1.temperature").unwrap(),
            Kind::Sensor,
            "temperature",
            Some("Cel"),
        );
        let delta = CatalogMessage::Delta {
            gateway: "gw-a".into(),
            incarnation: 7,
            from: 1,
            to: 3,
            changes: vec![
                CatalogChange::Upsert(thing.clone()),
                CatalogChange::Remove(thing.id.clone()),
            ],
        };
        assert_eq!(decode_catalog(&encode(&delta)).unwrap(), delta);
        let readings = vec![ThingReading {
            thing: thing.id.clone(),
            reading: Reading {
                time: Timestamp(1_700_000_000_123_456),
                value: Value::Number(21.5),
            },
        }];
        assert_eq!(decode_readings(&encode(&readings)).unwrap(), readings);
    }

    /// A batch as the table in the batch module's documentation lays it
    /// out, not as its encoder writes it: the id, then each reading's time
    /// and value (tag byte and payload).
    fn batch_bytes(id: &str, readings: &[(u64, u8, &[u8])]) -> Vec<u8> {
        let mut bytes = vec![id.len() as u8];
        bytes.extend_from_slice(id.as_bytes());
        for (micros, tag, payload) in readings {
            bytes.extend_from_slice(&micros.to_be_bytes());
            bytes.extend_from_slice(&(1 + payload.len() as u32).to_be_bytes());
            bytes.push(*tag);
            bytes.extend_from_slice(payload);
        }
        bytes
    }

    #[test]
    fn a_batch_is_the_id_once_then_time_and_value_per_reading() {
        let id = "gw-a.mqtt.d.level";
        let (number, boolean_true) = (0, 2);
        let bytes = batch_bytes(
            id,
            &[
                (1_700_000_000_123_456, number, &21.5f64.to_be_bytes()),
                (7, boolean_true, &[]),
            ],
        );
        let thing = ThingId::parse(id).unwrap();
        let reading = |micros, value| ThingReading {
            thing: thing.clone(),
            reading: Reading {
                time: Timestamp(micros),
                value,
            },
        };
        let readings = vec![
            reading(1_700_000_000_123_456, Value::Number(21.5)),
            reading(7, Value::Bool(true)),
        ];
        assert_eq!(batch::decode(&bytes), Ok(readings.clone()));
        assert_eq!(
            batch::encode(&thing, readings.iter().map(|r| &r.reading)),
            bytes
        );
    }

    #[test]
    fn a_batch_refuses_what_json_could_not_carry() {
        let bytes = batch_bytes("gw-a.mqtt.d.level", &[(0, 0, &f64::NAN.to_be_bytes())]);
        assert_eq!(batch::decode(&bytes), Err(batch::BatchError::NotFinite));
        assert_eq!(
            batch::decode(&bytes[..bytes.len() - 1]),
            Err(batch::BatchError::Truncated("value"))
        );
        assert!(matches!(
            batch::decode(b"\x03a.b"),
            Err(batch::BatchError::Id(_))
        ));
        assert_eq!(
            batch::decode(b""),
            Err(batch::BatchError::Truncated("id length"))
        );
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_catalog(&bytes);
            let _ = decode_readings(&bytes);
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
            let _ = batch::decode(&bytes);
        }

        #[test]
        fn batches_read_back(
            resource in "[a-z0-9_-]{1,20}",
            readings in proptest::collection::vec((any::<u64>(), prop_oneof![
                any::<f64>().prop_filter("finite", |n| n.is_finite()).prop_map(Value::Number),
                any::<bool>().prop_map(Value::Bool),
                ".{0,20}".prop_map(Value::String),
                proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Data),
            ]), 0..20),
        ) {
            let thing = ThingId::new("gw-a", "mqtt", "d", &resource).unwrap();
            let readings: Vec<ThingReading> = readings
                .into_iter()
                .map(|(micros, value)| ThingReading {
                    thing: thing.clone(),
                    reading: Reading { time: Timestamp(micros), value },
                })
                .collect();
            let bytes = batch::encode(&thing, readings.iter().map(|r| &r.reading));
            prop_assert_eq!(batch::decode(&bytes), Ok(readings));
        }
    }
}
