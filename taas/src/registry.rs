//! The in-memory catalog: every known thing service and its latest reading.
//!
//! The store holds the durable copy; this map answers queries and "latest
//! reading" requests without touching the disk.

use std::collections::HashMap;

use parking_lot::RwLock;

use crate::id::ThingId;
use crate::reading::Reading;
use crate::thing::{Query, ThingService};

struct Entry {
    thing: ThingService,
    latest: Option<Reading>,
}

#[derive(Default)]
pub struct Registry {
    entries: RwLock<HashMap<ThingId, Entry>>,
}

/// What an upsert changed, so the caller persists only real changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Added,
    Updated,
    Unchanged,
}

impl Registry {
    pub fn upsert(&self, thing: ThingService) -> Upsert {
        let mut entries = self.entries.write();
        match entries.get_mut(&thing.id) {
            Some(entry) if entry.thing == thing => Upsert::Unchanged,
            Some(entry) => {
                entry.thing = thing;
                Upsert::Updated
            }
            None => {
                entries.insert(
                    thing.id.clone(),
                    Entry {
                        thing,
                        latest: None,
                    },
                );
                Upsert::Added
            }
        }
    }

    pub fn remove(&self, id: &ThingId) -> Option<ThingService> {
        self.entries.write().remove(id).map(|e| e.thing)
    }

    pub fn get(&self, id: &ThingId) -> Option<ThingService> {
        self.entries.read().get(id).map(|e| e.thing.clone())
    }

    /// Looks at a thing service without copying it.
    pub fn inspect<R>(&self, id: &ThingId, f: impl FnOnce(&ThingService) -> R) -> Option<R> {
        self.entries.read().get(id).map(|e| f(&e.thing))
    }

    pub fn contains(&self, id: &ThingId) -> bool {
        self.entries.read().contains_key(id)
    }

    /// Applies `change` to a thing; returns the new version if it changed.
    pub fn modify(
        &self,
        id: &ThingId,
        change: impl FnOnce(&mut ThingService),
    ) -> Option<ThingService> {
        let mut entries = self.entries.write();
        let entry = entries.get_mut(id)?;
        let before = entry.thing.clone();
        change(&mut entry.thing);
        (entry.thing != before).then(|| entry.thing.clone())
    }

    /// Matching thing services, ordered by id.
    pub fn query(&self, query: &Query) -> Vec<ThingService> {
        let mut found: Vec<ThingService> = self
            .entries
            .read()
            .values()
            .filter(|e| query.matches(&e.thing))
            .map(|e| e.thing.clone())
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    pub fn count(&self, predicate: impl Fn(&ThingService) -> bool) -> usize {
        self.entries
            .read()
            .values()
            .filter(|e| predicate(&e.thing))
            .count()
    }

    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn latest(&self, id: &ThingId) -> Option<Option<Reading>> {
        self.entries.read().get(id).map(|e| e.latest.clone())
    }

    /// Keeps the newest of the current and the offered reading.
    pub fn offer_latest(&self, id: &ThingId, reading: &Reading) {
        if let Some(entry) = self.entries.write().get_mut(id)
            && entry.latest.as_ref().is_none_or(|l| l.time <= reading.time)
        {
            entry.latest = Some(reading.clone());
        }
    }
}
