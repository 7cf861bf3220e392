//! The hub: the one door through which readings enter and commands leave
//! the TaaS layer of a gateway. It ties the registry, the store, the bus
//! and actuation together so that their order is always the same: validate,
//! persist, remember, publish.
//!
//! One `Hub` value, its methods grouped by path through it:
//! [`catalog`] (this gateway's thing services and what it knows of the
//! other gateways'), [`ingest`] (readings in: validate, write, publish),
//! [`reads`] (readings out: latest, history, subscriptions, local or from
//! the owner), [`actuation`] (commands out). This module holds the state
//! they share and the upkeep counters.

mod actuation;
mod arrival;
mod catalog;
mod drain;
mod ingest;
mod moves;
mod reads;
mod receipts;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::bus::{Bus, BusStats};
use crate::commands::{Actuator, CommandLog};
use crate::registry::Registry;
use crate::remote::{Followers, Remote, RemoteError};
use crate::replicated::{Blob, MergeError, Record, Records};
use crate::store::{Store, StoreError, StoreOptions};
use crate::{ThingService, Timestamp};

pub use actuation::{ActuateError, CommandTicket};
use catalog::CatalogFeed;
pub use drain::DrainStatus;
pub use ingest::{Delivery, IngestError, Ingested, Receipt};
pub use moves::{MOVE_DEADLINE, MoveError};
pub use reads::ReadError;

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
    arrival: arrival::ArrivalClock,
    remote: RwLock<Option<Arc<dyn Remote>>>,
    followers: Followers,
    feed: parking_lot::Mutex<CatalogFeed>,
    moves: moves::Moves,
    drain: parking_lot::Mutex<Option<DrainStatus>>,
    records: Records,
    receipts: receipts::Receipts,
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
        let moves = moves::Moves::load(&store)?;
        let records = Records::load(&store)?;
        let receipts = receipts::Receipts::load(&store)?;
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
            arrival: arrival::ArrivalClock::default(),
            remote: RwLock::new(None),
            followers: Followers::default(),
            feed: parking_lot::Mutex::new(CatalogFeed::new()),
            moves,
            drain: parking_lot::Mutex::new(None),
            records,
            receipts,
        }))
    }

    /// This gateway's id, the first segment of the ids it owns.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The records the local cloud replicates to every gateway
    /// ([`crate::replicated`]).
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Writes a version of a replicated record from this gateway.
    pub fn put_record(
        &self,
        key: &str,
        value: Option<String>,
        blob: Blob<'_>,
    ) -> Result<Record, StoreError> {
        self.records
            .put(&self.store, &self.gateway, key, value, blob)
    }

    /// Takes another gateway's version of a record if it is newer.
    pub fn merge_record(&self, record: Record, blob: Option<Vec<u8>>) -> Result<bool, MergeError> {
        self.records.merge(&self.store, record, blob)
    }

    /// A replicated blob by its digest.
    pub fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.records.blob(&self.store, digest)
    }

    fn is_local(&self, thing: &ThingService) -> bool {
        thing.gateway == self.gateway
    }

    fn remote_for(&self, thing: &ThingService) -> Result<Arc<dyn Remote>, RemoteError> {
        self.remote
            .read()
            .clone()
            .ok_or_else(|| RemoteError::NoCloud(thing.id.clone()))
    }

    // ------------------------------------------------------------ upkeep

    /// A timestamp for a reading that carries none: the wall clock,
    /// strictly later than every one handed out before (see `arrival`).
    pub fn arrival_time(&self) -> Timestamp {
        self.arrival.stamp(Timestamp::now())
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
