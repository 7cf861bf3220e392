//! The catalog side of the hub: this gateway's own thing services (kept
//! in the store, numbered changes for the local cloud) and what it knows of
//! the other gateways' (in memory only; their owners are the single
//! writers).

use std::sync::Arc;

use super::Hub;
use crate::registry::Upsert;
use crate::remote::{CatalogChange, CatalogSnapshot, Remote};
use crate::store::StoreError;
use crate::{Query, ThingId, ThingService, Timestamp};

/// The numbered changes of this gateway's own catalog, for the local cloud.
pub(super) struct CatalogFeed {
    incarnation: u64,
    version: u64,
    changes: tokio::sync::broadcast::Sender<(u64, CatalogChange)>,
}

impl CatalogFeed {
    /// How many changes a slow listener may fall behind before it must
    /// resynchronise from a snapshot.
    const BACKLOG: usize = 16_384;

    pub(super) fn record(&mut self, change: CatalogChange) {
        self.version += 1;
        // Nobody listening (no local cloud) is fine: the version still counts.
        let _ = self.changes.send((self.version, change));
    }
}

impl CatalogFeed {
    pub(super) fn new() -> Self {
        CatalogFeed {
            incarnation: Timestamp::now().0,
            version: 0,
            changes: tokio::sync::broadcast::channel(Self::BACKLOG).0,
        }
    }
}

impl Hub {
    /// Adds or updates a thing service of this gateway; persisted only
    /// when it changed.
    /// Its `gateway` is this one's, and its `moves` those of the device's
    /// adoption here (see `hub::moves`), whatever the caller set.
    pub fn announce(&self, mut thing: ThingService) -> Result<(), StoreError> {
        thing.gateway = self.gateway.clone();
        thing.moves = self.moves_of(&thing.id);
        let taken = self.registry.inspect(&thing.id, |held| {
            held.gateway != self.gateway && held.moves >= thing.moves
        });
        if taken == Some(true) {
            // Its device moved on; what is left here is not announced.
            tracing::debug!(thing = %thing.id, "not announced: owned by another gateway since a move");
            return Ok(());
        }
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

    /// Marks one of this gateway's own thing services; another gateway's
    /// entry (a device that moved away) is its owner's to change.
    pub fn set_available(&self, id: &ThingId, available: bool) -> Result<(), StoreError> {
        if self.registry.inspect(id, |t| t.gateway == self.gateway) != Some(true) {
            return Ok(());
        }
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

    // ------------------------------------------------------------ local cloud

    /// Whether this gateway is part of a local cloud.
    pub fn has_remote(&self) -> bool {
        self.remote.read().is_some()
    }

    /// The gateways of the local cloud that are up, this one first.
    pub fn gateways_up(&self) -> Vec<String> {
        let mut up = vec![self.gateway.clone()];
        if let Some(remote) = self.remote.read().as_ref() {
            up.extend(remote.gateways_up());
        }
        up
    }

    /// Lets the local cloud carry calls for other gateways' thing services.
    pub fn attach_remote(&self, remote: Arc<dyn Remote>) {
        *self.remote.write() = Some(remote);
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
    pub fn replace_remote_catalog(self: &Arc<Self>, gateway: &str, things: Vec<ThingService>) {
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
            self.take_remote(gateway, thing);
        }
    }

    /// Applies changes another gateway made to its own catalog. Entries
    /// that claim to belong to a different gateway are ignored.
    pub fn apply_remote_changes(self: &Arc<Self>, gateway: &str, changes: Vec<CatalogChange>) {
        if gateway == self.gateway {
            return;
        }
        for change in changes {
            match change {
                CatalogChange::Upsert(thing) => self.take_remote(gateway, thing),
                CatalogChange::Remove(id) => {
                    if self.registry.inspect(&id, |t| t.gateway == gateway) == Some(true) {
                        self.registry.remove(&id);
                    }
                }
                CatalogChange::Moved { id, to, moves } => {
                    // The new owner's own entry may have come first.
                    self.registry.modify(&id, |t| {
                        if t.gateway == gateway && t.moves < moves {
                            t.gateway = to;
                            t.moves = moves;
                        }
                    });
                }
            }
        }
    }

    /// An entry `gateway` holds as its own. Between two owners of one id
    /// the entry with more moves wins; one that takes a thing service of
    /// ours means its device went there.
    fn take_remote(self: &Arc<Self>, gateway: &str, thing: ThingService) {
        if thing.gateway != gateway {
            tracing::warn!(%gateway, thing = %thing.id, owner = %thing.gateway, "ignored a catalog entry for another gateway's thing");
            return;
        }
        let held = self
            .registry
            .inspect(&thing.id, |t| (t.gateway.clone(), t.moves));
        match held {
            Some((owner, moves)) if owner != gateway && thing.moves <= moves => {
                tracing::debug!(thing = %thing.id, %owner, claimant = %gateway, "ignored an older owner's entry");
            }
            Some((owner, _)) if owner == self.gateway => {
                self.registry.upsert(thing.clone());
                self.released_elsewhere(&thing);
            }
            _ => {
                self.registry.upsert(thing);
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
}
