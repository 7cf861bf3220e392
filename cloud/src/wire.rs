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
//! All of it is JSON; the decoders are pure functions of bytes.

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
#[error("undecodable message from a peer: {0}")]
pub struct WireError(#[from] serde_json::Error);

pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serialising these types to JSON cannot fail: no maps with non-string
    // keys, and values are finite (the hub refuses NaN and infinities).
    serde_json::to_vec(message).unwrap_or_default()
}

pub fn decode_catalog(bytes: &[u8]) -> Result<CatalogMessage, WireError> {
    Ok(serde_json::from_slice(bytes)?)
}

pub fn decode_readings(bytes: &[u8]) -> Result<Vec<ThingReading>, WireError> {
    Ok(serde_json::from_slice(bytes)?)
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

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_catalog(&bytes);
            let _ = decode_readings(&bytes);
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
        }
    }
}
