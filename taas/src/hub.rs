//! The hub: the one door through which readings enter and commands leave
//! the TaaS layer of a gateway. It ties the registry, the store, the bus
//! and actuation together so that their order is always the same: validate,
//! persist, remember, publish.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::bus::{Bus, BusStats, Filter, Subscription};
use crate::commands::{Actuator, Command, CommandId, CommandLog, CommandState, CommandStatus};
use crate::registry::{Registry, Upsert};
use crate::remote::{CatalogChange, CatalogSnapshot, Follow, Followers, Remote, RemoteError};
use crate::senml;
use crate::store::{Store, StoreError, StoreOptions, Window};
use crate::{
    DataType, Kind, Query, Reading, ThingId, ThingReading, ThingService, Timestamp, Value,
};

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

/// Why an actuation was refused before reaching the device.
#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    #[error("unknown thing service {0}")]
    UnknownThing(ThingId),
    #[error("{0} is a sensor; only actuators take commands")]
    NotActuator(ThingId),
    #[error("{thing} takes {expected:?} values, not {found:?}")]
    WrongType {
        thing: ThingId,
        expected: DataType,
        found: DataType,
    },
    #[error("{0} is not available")]
    Unavailable(ThingId),
    #[error("no adapter {adapter:?} is running to carry out commands for {thing}")]
    NoAdapter { thing: ThingId, adapter: String },
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// Why a reading or a history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("unknown thing service {0}")]
    UnknownThing(ThingId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The blocking task scanning the history did not finish.
    #[error("the history scan stopped: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
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

/// Settings of a [`Hub`].
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub store: StoreOptions,
    /// Queue length of each bus subscriber: how far it may fall behind
    /// before it misses readings. At ~200 000 readings/s, 8192 is ~40 ms,
    /// longer than a subscriber's thread waits for a core while ingest and
    /// RocksDB's flushes share two; 1024 lost readings in such bursts.
    pub subscriber_queue: usize,
    /// How many finished commands stay pollable.
    pub command_log: usize,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            store: StoreOptions::default(),
            subscriber_queue: 8192,
            command_log: 10_000,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HubStats {
    pub things: usize,
    pub readings_ingested: u64,
    pub readings_rejected: u64,
    pub commands: u64,
    pub bus: BusStats,
}

/// A command on its way: poll by id, or await `outcome`.
pub struct CommandTicket {
    pub id: CommandId,
    pub outcome: oneshot::Receiver<CommandState>,
}

/// The TaaS layer of one gateway.
pub struct Hub {
    gateway: String,
    registry: Registry,
    store: Store,
    bus: Bus,
    actuators: RwLock<HashMap<String, Arc<dyn Actuator>>>,
    commands: Arc<CommandLog>,
    ingested: AtomicU64,
    rejected: AtomicU64,
    commands_issued: AtomicU64,
    /// By adapter, then event: counting looks the adapter up by `&str`,
    /// so a message costs no allocation.
    adapter_events: parking_lot::Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    last_arrival: AtomicU64,
    remote: RwLock<Option<Arc<dyn Remote>>>,
    followers: Followers,
    feed: parking_lot::Mutex<CatalogFeed>,
}

/// The numbered changes of this gateway's own catalog, for the local cloud.
struct CatalogFeed {
    incarnation: u64,
    version: u64,
    changes: tokio::sync::broadcast::Sender<(u64, CatalogChange)>,
}

impl CatalogFeed {
    /// How many changes a slow listener may fall behind before it must
    /// resynchronise from a snapshot.
    const BACKLOG: usize = 16_384;

    fn record(&mut self, change: CatalogChange) {
        self.version += 1;
        // Nobody listening (no local cloud) is fine: the version still counts.
        let _ = self.changes.send((self.version, change));
    }
}

impl Hub {
    /// Opens the store and loads the catalog and each thing's latest
    /// reading. Loaded things are unavailable until their adapter announces
    /// them again or a reading arrives: nothing vouches for them yet.
    pub fn open(
        gateway: &str,
        data_dir: &Path,
        options: HubOptions,
    ) -> Result<Arc<Self>, StoreError> {
        let store = Store::open(data_dir, &options.store)?;
        let registry = Registry::default();
        for mut thing in store.load_things()? {
            thing.available = false;
            let id = thing.id.clone();
            registry.upsert(thing);
            if let Some(latest) = store.latest(&id)? {
                registry.offer_latest(&id, &latest);
            }
        }
        tracing::info!(things = registry.len(), path = %data_dir.display(), "store opened");
        Ok(Arc::new(Hub {
            gateway: gateway.to_owned(),
            registry,
            store,
            bus: Bus::new(options.subscriber_queue),
            actuators: RwLock::new(HashMap::new()),
            commands: Arc::new(CommandLog::new(options.command_log)),
            ingested: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            commands_issued: AtomicU64::new(0),
            adapter_events: parking_lot::Mutex::new(BTreeMap::new()),
            last_arrival: AtomicU64::new(0),
            remote: RwLock::new(None),
            followers: Followers::default(),
            feed: parking_lot::Mutex::new(CatalogFeed {
                incarnation: Timestamp::now().0,
                version: 0,
                changes: tokio::sync::broadcast::channel(CatalogFeed::BACKLOG).0,
            }),
        }))
    }

    /// This gateway's id, the first segment of the ids it owns.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    // ------------------------------------------------------------ catalog

    /// Adds or updates a thing service of this gateway; persisted only
    /// when it changed.
    pub fn announce(&self, thing: ThingService) -> Result<(), StoreError> {
        let persisted = thing.clone();
        match self.registry.upsert(thing) {
            Upsert::Unchanged => Ok(()),
            change => {
                tracing::debug!(thing = %persisted.id, ?change, "thing service announced");
                self.store.put_thing(&persisted)?;
                self.feed.lock().record(CatalogChange::Upsert(persisted));
                Ok(())
            }
        }
    }

    /// Removes a thing service of this gateway and its history.
    pub fn withdraw(&self, id: &ThingId) -> Result<bool, StoreError> {
        let existed = self.registry.remove(id).is_some();
        if existed {
            self.store.delete_thing(id)?;
            self.feed.lock().record(CatalogChange::Remove(id.clone()));
            tracing::info!(thing = %id, "thing service withdrawn");
        }
        Ok(existed)
    }

    /// Marks every thing service of one device (reachable or not).
    pub fn set_device_available(
        &self,
        adapter: &str,
        device: &str,
        available: bool,
    ) -> Result<(), StoreError> {
        let query = Query {
            gateway: Some(self.gateway.clone()),
            ..Query::default()
        };
        for thing in self.registry.query(&query) {
            if thing.adapter == adapter && thing.id.device() == device {
                self.set_available(&thing.id, available)?;
            }
        }
        Ok(())
    }

    pub fn set_available(&self, id: &ThingId, available: bool) -> Result<(), StoreError> {
        if let Some(changed) = self.registry.modify(id, |t| t.available = available) {
            self.store.put_thing(&changed)?;
            self.feed.lock().record(CatalogChange::Upsert(changed));
        }
        Ok(())
    }

    pub fn thing(&self, id: &ThingId) -> Option<ThingService> {
        self.registry.get(id)
    }

    /// Looks at a thing service without copying it: cheap enough for a
    /// bus filter that runs on every reading.
    pub fn inspect_thing<R>(&self, id: &ThingId, f: impl FnOnce(&ThingService) -> R) -> Option<R> {
        self.registry.inspect(id, f)
    }

    /// Thing services for which `predicate` holds, ordered by id.
    pub fn select_things(&self, predicate: impl Fn(&ThingService) -> bool) -> Vec<ThingService> {
        self.registry.select(predicate)
    }

    /// Moves whenever any thing service of the catalog (ours or another
    /// gateway's) is added, changed or removed.
    pub fn catalog_generation(&self) -> u64 {
        self.registry.generation()
    }

    pub fn query(&self, query: &Query) -> Vec<ThingService> {
        self.registry.query(query)
    }

    fn is_local(&self, thing: &ThingService) -> bool {
        thing.gateway == self.gateway
    }

    // ------------------------------------------------------------ local cloud

    /// Lets the local cloud carry calls for other gateways' thing services.
    pub fn attach_remote(&self, remote: Arc<dyn Remote>) {
        *self.remote.write() = Some(remote);
    }

    fn remote_for(&self, thing: &ThingService) -> Result<Arc<dyn Remote>, RemoteError> {
        self.remote
            .read()
            .clone()
            .ok_or_else(|| RemoteError::NoCloud(thing.id.clone()))
    }

    /// Changes to this gateway's own catalog from now on, each with the
    /// version it brings the catalog to. A listener that falls more than
    /// a backlog behind sees `Lagged` and must resynchronise.
    pub fn catalog_changes(&self) -> tokio::sync::broadcast::Receiver<(u64, CatalogChange)> {
        self.feed.lock().changes.subscribe()
    }

    /// The run (start time, µs) and version this gateway's catalog is at.
    pub fn catalog_position(&self) -> (u64, u64) {
        let feed = self.feed.lock();
        (feed.incarnation, feed.version)
    }

    /// How many thing services this gateway owns.
    pub fn own_thing_count(&self) -> usize {
        self.registry.count(|t| t.gateway == self.gateway)
    }

    /// This gateway's own thing services and the catalog version they are at.
    pub fn catalog_snapshot(&self) -> CatalogSnapshot {
        let feed = self.feed.lock();
        CatalogSnapshot {
            incarnation: feed.incarnation,
            version: feed.version,
            things: self.registry.query(&Query {
                gateway: Some(self.gateway.clone()),
                ..Query::default()
            }),
        }
    }

    /// Replaces what is known of another gateway's catalog with its
    /// snapshot. Remote entries live in memory only: the owner is the
    /// single writer and is asked again after every restart.
    pub fn replace_remote_catalog(&self, gateway: &str, things: Vec<ThingService>) {
        if gateway == self.gateway {
            return;
        }
        let keep: std::collections::HashSet<ThingId> =
            things.iter().map(|t| t.id.clone()).collect();
        for stale in self.remote_things(gateway) {
            if !keep.contains(&stale.id) {
                self.registry.remove(&stale.id);
            }
        }
        for thing in things {
            if thing.gateway == gateway {
                self.registry.upsert(thing);
            }
        }
    }

    /// Applies changes another gateway made to its own catalog. Entries
    /// that claim to belong to a different gateway are ignored.
    pub fn apply_remote_changes(&self, gateway: &str, changes: Vec<CatalogChange>) {
        if gateway == self.gateway {
            return;
        }
        for change in changes {
            match change {
                CatalogChange::Upsert(thing) if thing.gateway == gateway => {
                    self.registry.upsert(thing);
                }
                CatalogChange::Remove(id) if id.gateway() == gateway => {
                    self.registry.remove(&id);
                }
                other => {
                    tracing::warn!(%gateway, ?other, "ignored a catalog change for another gateway's thing");
                }
            }
        }
    }

    /// A gateway of the local cloud went down: its thing services stay
    /// listed but unavailable until its catalog is fetched again.
    pub fn mark_gateway_down(&self, gateway: &str) {
        for thing in self.remote_things(gateway) {
            self.registry.modify(&thing.id, |t| t.available = false);
        }
    }

    fn remote_things(&self, gateway: &str) -> Vec<ThingService> {
        if gateway == self.gateway {
            return Vec::new();
        }
        self.registry.query(&Query {
            gateway: Some(gateway.to_owned()),
            ..Query::default()
        })
    }

    /// Hands readings of other gateways' thing services, relayed by the
    /// local cloud, to local subscribers. They are not stored here: the
    /// owner keeps the history.
    pub fn relay(&self, readings: Vec<ThingReading>) {
        let shared: Vec<Arc<ThingReading>> = readings
            .into_iter()
            .filter(|r| {
                self.registry
                    .inspect(&r.thing, |t| {
                        !self.is_local(t) && t.data_type == r.reading.value.data_type()
                    })
                    .unwrap_or(false)
            })
            .map(|r| {
                self.registry.offer_latest(&r.thing, &r.reading);
                Arc::new(r)
            })
            .collect();
        self.bus.publish(&shared);
    }

    /// The newest reading of any thing service of the local cloud: from
    /// memory for this gateway's own, from the owner for the others.
    pub async fn read_latest(&self, id: &ThingId) -> Result<Option<Reading>, ReadError> {
        let thing = self
            .registry
            .get(id)
            .ok_or_else(|| ReadError::UnknownThing(id.clone()))?;
        if self.is_local(&thing) {
            return Ok(self.registry.latest(id).flatten());
        }
        Ok(self.remote_for(&thing)?.latest(&thing).await?)
    }

    /// History of any thing service of the local cloud (see
    /// [`read_latest`](Self::read_latest)). Local scans run off the
    /// async threads.
    pub async fn read_history(
        self: &Arc<Self>,
        id: &ThingId,
        window: Window,
    ) -> Result<Vec<Reading>, ReadError> {
        let thing = self
            .registry
            .get(id)
            .ok_or_else(|| ReadError::UnknownThing(id.clone()))?;
        if !self.is_local(&thing) {
            return Ok(self.remote_for(&thing)?.history(&thing, window).await?);
        }
        let hub = self.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || hub.history(&id, window))
            .await?
            .map_err(ReadError::Store)
    }

    // ------------------------------------------------------------ readings

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
    /// the sender has the acknowledgement.
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
        for delivery in deliveries {
            match self.check(&delivery, &mut woke) {
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
        let written = self.store.append_deliveries(accepted.iter().map(|d| {
            (
                d.readings.as_slice(),
                d.receipt
                    .as_ref()
                    .map(|r| (r.slot.as_slice(), r.fingerprint.as_slice())),
            )
        }));
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
    fn check(&self, delivery: &Delivery, woke: &mut Vec<ThingId>) -> Result<Ingested, IngestError> {
        if let Some(receipt) = &delivery.receipt
            && receipt.redelivered
            && self.store.receipt(&receipt.slot)?.as_deref() == Some(receipt.fingerprint.as_slice())
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

    /// Forgets a receipt whose delivery has been acknowledged.
    pub fn release(&self, slot: &[u8]) -> Result<(), StoreError> {
        self.store.clear_receipts([slot])
    }

    /// Forgets the receipts of several acknowledged deliveries at once.
    pub fn release_all<'a>(
        &self,
        slots: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), StoreError> {
        self.store.clear_receipts(slots)
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

    /// The newest reading, from memory; `None` if the thing is unknown.
    pub fn latest(&self, id: &ThingId) -> Option<Option<Reading>> {
        self.registry.latest(id)
    }

    pub fn history(&self, id: &ThingId, window: Window) -> Result<Vec<Reading>, StoreError> {
        self.store.history(id, window)
    }

    pub fn subscribe(&self, label: impl Into<String>, filter: Filter) -> Subscription {
        self.bus.subscribe(label, filter)
    }

    /// Subscribes to one thing service of the local cloud. For another
    /// gateway's, the local cloud is asked for its readings while the
    /// subscription lives.
    pub fn subscribe_thing(&self, label: impl Into<String>, id: &ThingId) -> Subscription {
        let subscription = self.bus.subscribe(label, Filter::thing(id.clone()));
        match self.follow(id) {
            Some(follow) => subscription.holding(Box::new(follow)),
            None => subscription,
        }
    }

    /// Has another gateway's thing service's readings relayed here (and
    /// published on the bus, and kept as its latest) while the returned
    /// guard lives. `None` for this gateway's own things, unknown ones, or
    /// without a local cloud.
    pub fn follow(&self, id: &ThingId) -> Option<Follow> {
        let thing = self.registry.get(id)?;
        if self.is_local(&thing) {
            return None;
        }
        let remote = self.remote.read().clone()?;
        Some(Follow::start(remote, id.clone(), self.followers.clone()))
    }

    /// Whether readings of another gateway's thing service are being
    /// relayed here, so that its latest reading in memory is current.
    pub fn is_following(&self, id: &ThingId) -> bool {
        self.followers.lock().contains_key(id)
    }

    /// Ends every subscription (at shutdown, so streams close promptly).
    pub fn close_subscriptions(&self) {
        self.bus.close_all();
    }

    // ------------------------------------------------------------ actuation

    /// Routes commands for things of `adapter` to `actuator`.
    pub fn register_actuator(&self, adapter: &str, actuator: Arc<dyn Actuator>) {
        self.actuators.write().insert(adapter.to_owned(), actuator);
    }

    pub fn unregister_actuator(&self, adapter: &str) {
        self.actuators.write().remove(adapter);
    }

    /// Validates a command and hands it to the owning adapter. Must be
    /// called within a Tokio runtime: the command runs as its own task so
    /// it completes (and is recorded) even if the caller stops waiting.
    pub fn actuate(&self, id: &ThingId, value: Value) -> Result<CommandTicket, ActuateError> {
        let thing = self
            .registry
            .get(id)
            .ok_or_else(|| ActuateError::UnknownThing(id.clone()))?;
        if thing.kind != Kind::Actuator {
            return Err(ActuateError::NotActuator(id.clone()));
        }
        if value.data_type() != thing.data_type {
            return Err(ActuateError::WrongType {
                thing: id.clone(),
                expected: thing.data_type,
                found: value.data_type(),
            });
        }
        // An owner that is down is the reason, not the thing itself.
        if !self.is_local(&thing) && !self.remote_for(&thing)?.is_reachable(&thing.gateway) {
            return Err(RemoteError::Unreachable {
                gateway: thing.gateway.clone(),
            }
            .into());
        }
        if !thing.available {
            return Err(ActuateError::Unavailable(id.clone()));
        }
        enum Route {
            Adapter(Arc<dyn Actuator>),
            Owner(Arc<dyn Remote>),
        }
        let route = if self.is_local(&thing) {
            Route::Adapter(
                self.actuators
                    .read()
                    .get(&thing.adapter)
                    .cloned()
                    .ok_or_else(|| ActuateError::NoAdapter {
                        thing: id.clone(),
                        adapter: thing.adapter.clone(),
                    })?,
            )
        } else {
            Route::Owner(self.remote_for(&thing)?)
        };

        let command_id = self.commands.start(id.clone(), &value);
        self.commands_issued.fetch_add(1, Ordering::Relaxed);
        let command = Command {
            id: command_id,
            thing: id.clone(),
            value,
        };
        let future = match route {
            Route::Adapter(actuator) => actuator.actuate(command),
            Route::Owner(remote) => remote.actuate(&thing.gateway, command),
        };
        let (tx, rx) = oneshot::channel();
        let log = self.commands.clone();
        let thing = id.clone();
        tokio::spawn(async move {
            let state = match tokio::time::timeout(CommandLog::DEADLINE, future).await {
                Ok(Ok(confirmed)) => CommandState::Succeeded {
                    confirmed: confirmed.map(|v| v.to_json()),
                },
                Ok(Err(error)) => CommandState::Failed {
                    reason: error.to_string(),
                },
                Err(_) => CommandState::Failed {
                    reason: format!("no answer within {:?}", CommandLog::DEADLINE),
                },
            };
            tracing::info!(%thing, command = command_id.0, ?state, "command finished");
            log.finish(command_id, state.clone());
            let _ = tx.send(state);
        });
        Ok(CommandTicket {
            id: command_id,
            outcome: rx,
        })
    }

    pub fn command(&self, id: CommandId) -> Option<CommandStatus> {
        self.commands.get(id)
    }

    // ------------------------------------------------------------ upkeep

    /// A timestamp for a reading that carries none, strictly later than
    /// every one handed out before: two messages arriving within the same
    /// microsecond must not share a store key and overwrite each other.
    pub fn arrival_time(&self) -> Timestamp {
        let now = Timestamp::now().0;
        let previous = self
            .last_arrival
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        Timestamp(now.max(previous + 1))
    }

    /// Counts something an adapter wants operators to see in `/metrics`
    /// (messages dropped as malformed, rate-limited, …).
    pub fn count_adapter_event(&self, adapter: &str, event: &'static str) {
        let mut adapters = self.adapter_events.lock();
        let events = match adapters.get_mut(adapter) {
            Some(events) => events,
            None => adapters.entry(adapter.to_owned()).or_default(),
        };
        *events.entry(event).or_insert(0) += 1;
    }

    /// Adapter events so far: ((adapter, event), count), sorted.
    pub fn adapter_events(&self) -> Vec<((String, &'static str), u64)> {
        self.adapter_events
            .lock()
            .iter()
            .flat_map(|(adapter, events)| {
                events
                    .iter()
                    .map(move |(event, count)| ((adapter.clone(), *event), *count))
            })
            .collect()
    }

    pub fn stats(&self) -> HubStats {
        HubStats {
            things: self.registry.len(),
            readings_ingested: self.ingested.load(Ordering::Relaxed),
            readings_rejected: self.rejected.load(Ordering::Relaxed),
            commands: self.commands_issued.load(Ordering::Relaxed),
            bus: self.bus.stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;

    fn id(s: &str) -> ThingId {
        ThingId::parse(s).unwrap()
    }

    fn reading(thing: &ThingId, t: u64, value: Value) -> ThingReading {
        ThingReading {
            thing: thing.clone(),
            reading: Reading {
                time: Timestamp(t),
                value,
            },
        }
    }

    fn hub_with_things(dir: &std::path::Path) -> Arc<Hub> {
        let hub = Hub::open("gw", dir, HubOptions::default()).unwrap();
        hub.announce(ThingService::new(
            id("gw.x.d.temperature"),
            Kind::Sensor,
            "temperature",
            Some("Cel"),
        ))
        .unwrap();
        hub.announce(ThingService::new(
            id("gw.x.d.lamp"),
            Kind::Actuator,
            "switch",
            None,
        ))
        .unwrap();
        hub
    }

    #[test]
    fn a_batch_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with_things(dir.path());
        let t = id("gw.x.d.temperature");
        let unknown = reading(&id("gw.x.d.nothing"), 2, Value::Number(1.0));
        assert!(matches!(
            hub.ingest(vec![reading(&t, 1, Value::Number(20.0)), unknown]),
            Err(IngestError::UnknownThing(_))
        ));
        let wrong = reading(&t, 3, Value::Bool(true));
        assert!(matches!(
            hub.ingest(vec![reading(&t, 1, Value::Number(20.0)), wrong]),
            Err(IngestError::WrongType { .. })
        ));
        assert!(
            hub.history(&t, Window::ALL).unwrap().is_empty(),
            "nothing of a refused batch is stored"
        );
        assert_eq!(hub.latest(&t), Some(None));
        assert_eq!(hub.stats().readings_rejected, 2);
    }

    #[test]
    fn a_repeated_delivery_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let t = id("gw.x.d.temperature");
        let receipt = Receipt {
            slot: b"mqtt/7".to_vec(),
            fingerprint: b"abc".to_vec(),
            redelivered: false,
        };
        {
            let hub = hub_with_things(dir.path());
            let first = hub
                .ingest_once(&receipt, vec![reading(&t, 1, Value::Number(20.0))])
                .unwrap();
            assert_eq!(first, Ingested::Stored);
        }
        // After a crash the sender repeats it: same slot, same content.
        let hub = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
        let receipt = Receipt {
            redelivered: true,
            ..receipt
        };
        let again = hub
            .ingest_once(&receipt, vec![reading(&t, 2, Value::Number(20.0))])
            .unwrap();
        assert_eq!(again, Ingested::AlreadyStored);
        assert_eq!(hub.history(&t, Window::ALL).unwrap().len(), 1);
        // Other content in the same slot is a new delivery.
        let other = Receipt {
            fingerprint: b"xyz".to_vec(),
            ..receipt.clone()
        };
        assert_eq!(
            hub.ingest_once(&other, vec![reading(&t, 3, Value::Number(21.0))])
                .unwrap(),
            Ingested::Stored
        );
        // Once released, the slot is free even for the same content.
        hub.release(&receipt.slot).unwrap();
        assert_eq!(
            hub.ingest_once(&other, vec![reading(&t, 4, Value::Number(21.0))])
                .unwrap(),
            Ingested::Stored
        );
        assert_eq!(hub.history(&t, Window::ALL).unwrap().len(), 3);
    }

    #[test]
    fn deliveries_of_one_write_succeed_or_fail_each_on_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with_things(dir.path());
        let t = id("gw.x.d.temperature");
        let receipt = |slot: &str, redelivered| {
            Some(Receipt {
                slot: slot.as_bytes().to_vec(),
                fingerprint: b"same".to_vec(),
                redelivered,
            })
        };
        hub.ingest_once(
            &receipt("s/1", false).unwrap(),
            vec![reading(&t, 1, Value::Number(20.0))],
        )
        .unwrap();
        let outcomes = hub.ingest_deliveries(vec![
            Delivery {
                receipt: receipt("s/1", true),
                readings: vec![reading(&t, 2, Value::Number(20.0))],
            },
            Delivery {
                receipt: receipt("s/2", false),
                readings: vec![reading(&id("gw.x.d.nothing"), 3, Value::Number(1.0))],
            },
            Delivery {
                receipt: receipt("s/3", false),
                readings: vec![reading(&t, 4, Value::Number(22.0))],
            },
            Delivery {
                receipt: None,
                readings: vec![reading(&t, 5, Value::Number(23.0))],
            },
        ]);
        assert!(matches!(outcomes[0], Ok(Ingested::AlreadyStored)));
        assert!(matches!(outcomes[1], Err(IngestError::UnknownThing(_))));
        assert!(matches!(outcomes[2], Ok(Ingested::Stored)));
        assert!(matches!(outcomes[3], Ok(Ingested::Stored)));
        let times: Vec<u64> = hub
            .history(&t, Window::ALL)
            .unwrap()
            .iter()
            .map(|r| r.time.0)
            .collect();
        assert_eq!(times, vec![1, 4, 5]);
        assert_eq!(hub.stats().readings_ingested, 3);
        assert_eq!(hub.stats().readings_rejected, 1);
        // The stored delivery's receipt was written with it; releasing
        // several at once frees them all.
        assert_eq!(
            hub.ingest_once(
                &receipt("s/3", true).unwrap(),
                vec![reading(&t, 6, Value::Number(22.0))]
            )
            .unwrap(),
            Ingested::AlreadyStored
        );
        hub.release_all([b"s/1".as_slice(), b"s/3".as_slice()])
            .unwrap();
        assert_eq!(
            hub.ingest_once(
                &receipt("s/3", true).unwrap(),
                vec![reading(&t, 7, Value::Number(22.0))]
            )
            .unwrap(),
            Ingested::Stored
        );
    }

    #[test]
    fn arrival_times_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with_things(dir.path());
        let times: Vec<Timestamp> = (0..10_000).map(|_| hub.arrival_time()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn latest_is_the_newest_whatever_the_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with_things(dir.path());
        let t = id("gw.x.d.temperature");
        hub.ingest(vec![reading(&t, 20, Value::Number(2.0))])
            .unwrap();
        hub.ingest(vec![reading(&t, 10, Value::Number(1.0))])
            .unwrap();
        assert_eq!(hub.latest(&t).flatten().unwrap().time, Timestamp(20));
        assert_eq!(hub.history(&t, Window::ALL).unwrap().len(), 2);
    }

    #[test]
    fn senml_records_map_to_things_by_name_and_unit() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with_things(dir.path());
        let t = id("gw.x.d.temperature");
        let record = |name: &str, unit: Option<&str>| senml::Resolved {
            name: name.into(),
            unit: unit.map(str::to_owned),
            value: Value::Number(1.0),
            time: Timestamp(5),
        };
        let ok = hub
            .readings_from_senml(
                Some(&t),
                vec![record("", Some("Cel")), record("gw.x.d.temperature", None)],
            )
            .unwrap();
        assert!(ok.iter().all(|r| r.thing == t));
        let by_name = hub
            .readings_from_senml(None, vec![record("gw.x.d.lamp", None)])
            .unwrap();
        assert_eq!(by_name[0].thing, id("gw.x.d.lamp"));
        assert!(matches!(
            hub.readings_from_senml(Some(&t), vec![record("", Some("K"))]),
            Err(IngestError::WrongUnit { .. })
        ));
        assert!(matches!(
            hub.readings_from_senml(Some(&t), vec![record("other", None)]),
            Err(IngestError::BadName { .. })
        ));
        assert!(matches!(
            hub.readings_from_senml(None, vec![record("no-id", None)]),
            Err(IngestError::BadName { .. })
        ));
    }

    #[tokio::test]
    async fn actuation_is_validated_before_it_reaches_an_adapter() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with_things(dir.path());
        let lamp = id("gw.x.d.lamp");
        assert!(matches!(
            hub.actuate(&id("gw.x.d.temperature"), Value::Number(1.0)),
            Err(ActuateError::NotActuator(_))
        ));
        assert!(matches!(
            hub.actuate(&lamp, Value::Number(1.0)),
            Err(ActuateError::WrongType { .. })
        ));
        assert!(matches!(
            hub.actuate(&id("gw.x.d.nothing"), Value::Bool(true)),
            Err(ActuateError::UnknownThing(_))
        ));
        assert!(matches!(
            hub.actuate(&lamp, Value::Bool(true)),
            Err(ActuateError::NoAdapter { .. })
        ));

        struct Echo;
        impl Actuator for Echo {
            fn actuate(&self, command: Command) -> crate::commands::ActuationFuture {
                Box::pin(async move { Ok(Some(command.value)) })
            }
        }
        hub.register_actuator("x", Arc::new(Echo));
        let ticket = hub.actuate(&lamp, Value::Bool(true)).unwrap();
        assert_eq!(
            ticket.outcome.await.unwrap(),
            CommandState::Succeeded {
                confirmed: Some(serde_json::json!(true))
            }
        );
        assert_eq!(
            hub.command(ticket.id).unwrap().state,
            CommandState::Succeeded {
                confirmed: Some(serde_json::json!(true))
            }
        );

        hub.set_available(&lamp, false).unwrap();
        assert!(matches!(
            hub.actuate(&lamp, Value::Bool(true)),
            Err(ActuateError::Unavailable(_))
        ));
    }

    #[test]
    fn reopened_things_wait_for_their_adapter_and_readings_wake_them() {
        let dir = tempfile::tempdir().unwrap();
        let t = id("gw.x.d.temperature");
        {
            let hub = hub_with_things(dir.path());
            hub.ingest(vec![reading(&t, 7, Value::Number(21.0))])
                .unwrap();
        }
        let hub = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
        let thing = hub.thing(&t).unwrap();
        assert!(!thing.available);
        assert_eq!(hub.latest(&t).flatten().unwrap().value, Value::Number(21.0));
        hub.ingest(vec![reading(&t, 8, Value::Number(21.5))])
            .unwrap();
        assert!(
            hub.thing(&t).unwrap().available,
            "a reading proves the device is there"
        );
    }

    /// Records what the hub asks of the local cloud.
    #[derive(Default)]
    struct Recorder {
        interest: parking_lot::Mutex<Vec<(ThingId, bool)>>,
    }

    impl Remote for Recorder {
        fn latest(&self, thing: &ThingService) -> crate::remote::RemoteFuture<Option<Reading>> {
            let gateway = thing.gateway.clone();
            Box::pin(async move { Err(RemoteError::Unreachable { gateway }) })
        }
        fn history(
            &self,
            thing: &ThingService,
            _: Window,
        ) -> crate::remote::RemoteFuture<Vec<Reading>> {
            let gateway = thing.gateway.clone();
            Box::pin(async move { Err(RemoteError::Unreachable { gateway }) })
        }
        fn actuate(&self, _: &str, _: Command) -> crate::ActuationFuture {
            Box::pin(async { Ok(None) })
        }
        fn is_reachable(&self, _: &str) -> bool {
            true
        }
        fn interest(&self, thing: &ThingId, wanted: bool) {
            self.interest.lock().push((thing.clone(), wanted));
        }
    }

    fn remote_thing(raw: &str) -> ThingService {
        ThingService::new(id(raw), Kind::Sensor, "temperature", Some("Cel"))
    }

    #[tokio::test]
    async fn other_gateways_things_are_listed_but_never_stored_here() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with_things(dir.path());
        let before = hub.catalog_position().1;
        let theirs = remote_thing("gw-b.x.d.temperature");
        hub.replace_remote_catalog(
            "gw-b",
            vec![theirs.clone(), remote_thing("gw-c.x.d.forged")],
        );
        assert_eq!(hub.thing(&theirs.id), Some(theirs.clone()));
        assert_eq!(
            hub.thing(&id("gw-c.x.d.forged")),
            None,
            "gw-b speaks only for gw-b"
        );
        assert_eq!(
            hub.catalog_position().1,
            before,
            "not a change of our own catalog"
        );
        assert_eq!(hub.own_thing_count(), 2);
        assert!(matches!(
            hub.ingest(vec![reading(&theirs.id, 1, Value::Number(1.0))]),
            Err(IngestError::NotOwned { .. })
        ));
        // Without a local cloud, calls for them fail clearly.
        assert!(matches!(
            hub.read_latest(&theirs.id).await,
            Err(ReadError::Remote(RemoteError::NoCloud(_)))
        ));

        hub.mark_gateway_down("gw-b");
        assert!(!hub.thing(&theirs.id).unwrap().available);
        hub.apply_remote_changes("gw-b", vec![CatalogChange::Upsert(theirs.clone())]);
        assert!(hub.thing(&theirs.id).unwrap().available);
        hub.apply_remote_changes("gw-b", vec![CatalogChange::Remove(theirs.id.clone())]);
        assert_eq!(hub.thing(&theirs.id), None);
        drop(hub);
        let reopened = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
        assert_eq!(
            reopened.query(&Query::default()).len(),
            2,
            "only our own were stored"
        );
    }

    #[tokio::test]
    async fn relayed_readings_reach_subscribers_and_following_lasts_as_long_as_they_do() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with_things(dir.path());
        let recorder = Arc::new(Recorder::default());
        hub.attach_remote(recorder.clone());
        let theirs = remote_thing("gw-b.x.d.temperature");
        hub.replace_remote_catalog("gw-b", vec![theirs.clone()]);

        let mut stream = hub.subscribe_thing("test", &theirs.id);
        assert!(hub.is_following(&theirs.id));
        let second = hub.follow(&theirs.id).unwrap();
        hub.relay(vec![
            reading(&theirs.id, 5, Value::Number(21.0)),
            reading(&theirs.id, 6, Value::Bool(true)), // wrong type: dropped
            reading(&id("gw.x.d.temperature"), 7, Value::Number(1.0)), // ours: dropped
        ]);
        assert_eq!(
            stream.recv().await,
            Some(crate::Event::Reading(Arc::new(reading(
                &theirs.id,
                5,
                Value::Number(21.0)
            ))))
        );
        assert!(stream.try_recv().is_none());
        assert_eq!(
            hub.latest(&theirs.id),
            Some(Some(Reading {
                time: Timestamp(5),
                value: Value::Number(21.0)
            }))
        );
        assert_eq!(hub.latest(&id("gw.x.d.temperature")), Some(None));

        drop(stream);
        assert!(hub.is_following(&theirs.id), "one follower is left");
        drop(second);
        assert!(!hub.is_following(&theirs.id));
        assert_eq!(
            *recorder.interest.lock(),
            vec![
                (theirs.id.clone(), true),
                (theirs.id.clone(), true),
                (theirs.id.clone(), false),
                (theirs.id.clone(), false)
            ]
        );
        assert!(
            hub.follow(&id("gw.x.d.temperature")).is_none(),
            "our own need no following"
        );
    }
}
