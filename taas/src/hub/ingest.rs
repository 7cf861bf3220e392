//! Readings in: validated against the catalog, written to the store (WAL
//! first) in one batch per burst, then remembered as latest and published
//! on the bus. A delivery its sender may repeat carries a receipt, so a
//! repeat is recognised and not written twice.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Hub;
use super::receipts::Book;
use crate::senml;
use crate::store::StoreError;
use crate::store::receipts::ReceiptWrites;
use crate::{DataType, Reading, ThingId, ThingReading};

/// Why readings were refused. Nothing of a refused batch is stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("unknown thing service {0}")]
    UnknownThing(ThingId),
    #[error("{thing} takes {expected:?} values, not {found:?}")]
    WrongType {
        thing: ThingId,
        expected: DataType,
        found: DataType,
    },
    #[error("{thing} is measured in {expected}, the reading says {found}")]
    WrongUnit {
        thing: ThingId,
        expected: String,
        found: String,
    },
    #[error("record name {name:?} does not name a thing service: {reason}")]
    BadName { name: String, reason: String },
    /// Readings are stored by the gateway that owns the thing service.
    #[error("{thing} belongs to gateway {owner}; send its readings there")]
    NotOwned { thing: ThingId, owner: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The hub gave no outcome for a delivery: treated as not stored.
    #[error("no outcome for a delivery; it was not stored")]
    NoOutcome,
}

impl IngestError {
    /// Whether the readings may be good and only the gateway failed to
    /// keep them: the sender should try again, and must not be told they
    /// are stored.
    pub fn is_storage_failure(&self) -> bool {
        matches!(self, IngestError::Store(_) | IngestError::NoOutcome)
    }
}

/// A delivery its sender may repeat until acknowledged (an MQTT QoS 1
/// publish, a CoAP confirmable message): `slot` names where it arrived
/// (e.g. the packet id of a session), `fingerprint` its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub slot: Vec<u8>,
    pub fingerprint: Vec<u8>,
    /// The sender marks this a repeat (MQTT's DUP flag): only then is the
    /// slot consulted, so a stale receipt can never hide a first delivery.
    pub redelivered: bool,
}

/// Readings that arrived together in one message, with the receipt of a
/// message its sender may repeat: the unit of [`Hub::ingest_deliveries`].
#[derive(Debug, Clone)]
pub struct Delivery {
    pub receipt: Option<Receipt>,
    pub readings: Vec<ThingReading>,
}

/// What [`Hub::ingest_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Stored,
    /// The same delivery was stored before (the sender did not get the
    /// acknowledgement); nothing was written again.
    AlreadyStored,
}

impl Hub {
    /// Validates, persists (WAL first), caches and publishes readings, all
    /// or nothing. When this returns Ok the readings are durable and may be
    /// acknowledged to the device.
    pub fn ingest(&self, readings: Vec<ThingReading>) -> Result<(), IngestError> {
        self.single(Delivery {
            receipt: None,
            readings,
        })
        .map(|_| ())
    }

    /// Like [`ingest`](Self::ingest) for a delivery that may be repeated:
    /// if this slot already holds a stored delivery with this fingerprint,
    /// nothing is written again. Otherwise the readings and the receipt are
    /// written in one atomic batch. Call [`release`](Self::release) once
    /// the sender has the acknowledgement (a released slot is free at
    /// once; its delete rides with the next write).
    pub fn ingest_once(
        &self,
        receipt: &Receipt,
        readings: Vec<ThingReading>,
    ) -> Result<Ingested, IngestError> {
        self.single(Delivery {
            receipt: Some(receipt.clone()),
            readings,
        })
    }

    fn single(&self, delivery: Delivery) -> Result<Ingested, IngestError> {
        let mut outcomes = self.ingest_deliveries(vec![delivery]);
        outcomes.pop().unwrap_or(Err(IngestError::NoOutcome))
    }

    /// Ingests deliveries that arrived back to back, each all or nothing
    /// as by [`ingest_once`](Self::ingest_once) (or [`ingest`](Self::ingest)
    /// without a receipt), with one write to the store for all of them: a
    /// burst costs one WAL append, not one per message. One outcome per
    /// delivery, in order.
    pub fn ingest_deliveries(
        &self,
        deliveries: Vec<Delivery>,
    ) -> Vec<Result<Ingested, IngestError>> {
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let mut accepted = Vec::with_capacity(deliveries.len());
        let mut woke: Vec<ThingId> = Vec::new();
        // Held from the check for a repeat until the write is done, so that
        // what the book says is what the store holds.
        let mut book = deliveries
            .iter()
            .any(|d| d.receipt.is_some())
            .then(|| self.receipts.book());
        for delivery in deliveries {
            match self.check(&delivery, book.as_deref(), &mut woke) {
                Ok(Ingested::Stored) if !delivery.readings.is_empty() => {
                    outcomes.push(Ok(Ingested::Stored));
                    accepted.push(delivery);
                }
                outcome => {
                    if outcome.is_err() {
                        self.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    outcomes.push(outcome);
                }
            }
        }
        if accepted.is_empty() {
            return outcomes;
        }
        // The receipts of this burst in one record, and what releases
        // since the last write changed, go with its readings.
        let plan = book.as_deref().map(|book| {
            book.plan(accepted.iter().filter_map(|d| {
                let receipt = d.receipt.as_ref()?;
                Some((receipt.slot.as_slice(), receipt.fingerprint.as_slice()))
            }))
        });
        let no_receipts = ReceiptWrites::default();
        let written = self.store.append_deliveries(
            plan.as_ref().map_or(&no_receipts, |plan| &plan.writes),
            accepted.iter().map(|d| d.readings.as_slice()),
        );
        if let Err(error) = written {
            // Nothing of the batch is stored: every accepted delivery fails.
            let error = Arc::new(error);
            for outcome in outcomes
                .iter_mut()
                .filter(|o| matches!(o, Ok(Ingested::Stored)))
            {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                *outcome = Err(IngestError::Store(StoreError::Shared(error.clone())));
            }
            return outcomes;
        }
        if let (Some(book), Some(plan)) = (book.as_deref_mut(), plan) {
            book.commit(plan);
        }
        drop(book);
        for id in &woke {
            // A reading proves the device is reachable.
            if let Err(error) = self.set_available(id, true) {
                tracing::warn!(%error, thing = %id, "cannot mark a thing service available");
            }
        }
        let shared: Vec<Arc<ThingReading>> = accepted
            .into_iter()
            .flat_map(|d| d.readings)
            .map(|r| {
                self.registry.offer_latest(&r.thing, &r.reading);
                Arc::new(r)
            })
            .collect();
        self.ingested
            .fetch_add(shared.len() as u64, Ordering::Relaxed);
        self.bus.publish(&shared);
        outcomes
    }

    /// Whether a delivery may be written: a repeat of a stored one is
    /// `AlreadyStored`; readings must name known thing services and carry
    /// their data type. Thing services the delivery proves reachable are
    /// added to `woke`.
    fn check(
        &self,
        delivery: &Delivery,
        book: Option<&Book>,
        woke: &mut Vec<ThingId>,
    ) -> Result<Ingested, IngestError> {
        if let Some(receipt) = &delivery.receipt
            && receipt.redelivered
            && book.is_some_and(|book| book.holds(&receipt.slot, &receipt.fingerprint))
        {
            return Ok(Ingested::AlreadyStored);
        }
        let mut waking = Vec::new();
        for r in &delivery.readings {
            // Looked at in place: a copy of the thing service per reading
            // was a good part of ingest's allocations.
            let asleep = self
                .registry
                .inspect(&r.thing, |thing| {
                    if !self.is_local(thing) {
                        return Err(IngestError::NotOwned {
                            thing: r.thing.clone(),
                            owner: thing.gateway.clone(),
                        });
                    }
                    let found = r.reading.value.data_type();
                    if found != thing.data_type {
                        return Err(IngestError::WrongType {
                            thing: r.thing.clone(),
                            expected: thing.data_type,
                            found,
                        });
                    }
                    Ok(!thing.available)
                })
                .ok_or_else(|| IngestError::UnknownThing(r.thing.clone()))??;
            if asleep && !woke.contains(&r.thing) && !waking.contains(&r.thing) {
                waking.push(r.thing.clone());
            }
        }
        woke.extend(waking);
        Ok(Ingested::Stored)
    }

    /// Turns resolved SenML records into readings. A record names its thing
    /// by its full id, or not at all when `target` says which thing the pack
    /// is about. Units, where given, must match the thing's.
    pub fn readings_from_senml(
        &self,
        target: Option<&ThingId>,
        records: Vec<senml::Resolved>,
    ) -> Result<Vec<ThingReading>, IngestError> {
        records
            .into_iter()
            .map(|record| {
                let thing = match (record.name.as_str(), target) {
                    ("", Some(target)) => target.clone(),
                    (name, Some(target)) if name == target.as_str() => target.clone(),
                    (name, Some(target)) => {
                        return Err(IngestError::BadName {
                            name: name.to_owned(),
                            reason: format!("this pack is for {target}"),
                        });
                    }
                    (name, None) => ThingId::parse(name).map_err(|e| IngestError::BadName {
                        name: name.to_owned(),
                        reason: e.to_string(),
                    })?,
                };
                if let (Some(found), Some(expected)) = (
                    record.unit.as_deref(),
                    self.registry.get(&thing).and_then(|t| t.unit),
                ) && found != expected
                {
                    return Err(IngestError::WrongUnit {
                        thing,
                        expected,
                        found: found.to_owned(),
                    });
                }
                Ok(ThingReading {
                    thing,
                    reading: Reading {
                        time: record.time,
                        value: record.value,
                    },
                })
            })
            .collect()
    }
}
