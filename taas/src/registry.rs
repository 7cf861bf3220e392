//! The in-memory catalog: every known thing service and its latest reading.
//!
//! The store holds the durable copy; this map answers queries and "latest
//! reading" requests without touching the disk.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

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
    generation: AtomicU64,
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
                self.changed();
                Upsert::Updated
            }
            None => {
                self.changed();
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
        let removed = self.entries.write().remove(id).map(|e| e.thing);
        if removed.is_some() {
            self.changed();
        }
        removed
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
        let changed = entry.thing != before;
        if changed {
            self.changed();
        }
        changed.then(|| entry.thing.clone())
    }

    /// Matching thing services, ordered by id.
    pub fn query(&self, query: &Query) -> Vec<ThingService> {
        self.select(|thing| query.matches(thing))
    }

    /// Thing services for which `predicate` holds, ordered by id; only
    /// those are copied.
    pub fn select(&self, predicate: impl Fn(&ThingService) -> bool) -> Vec<ThingService> {
        let mut found: Vec<ThingService> = self
            .entries
            .read()
            .values()
            .filter(|e| predicate(&e.thing))
            .map(|e| e.thing.clone())
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    /// Changes whenever a thing service is added, changed or removed, so
    /// that a caller can tell cheaply whether the catalog moved.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thing::Kind;

    #[test]
    fn the_generation_moves_with_real_changes_only() {
        let registry = Registry::default();
        let id = ThingId::parse("gw.a.d.temperature").unwrap();
        let thing = ThingService::new(id.clone(), Kind::Sensor, "temperature", None);
        let start = registry.generation();
        registry.upsert(thing.clone());
        let added = registry.generation();
        assert_ne!(added, start);
        registry.upsert(thing);
        assert_eq!(registry.generation(), added, "an identical upsert");
        registry.modify(&id, |t| t.unit = None);
        assert_eq!(
            registry.generation(),
            added,
            "a modification that changes nothing"
        );
        registry.modify(&id, |t| t.available = !t.available);
        let modified = registry.generation();
        assert_ne!(modified, added);
        assert_eq!(
            registry.select(|t| t.semantic_type == "temperature").len(),
            1
        );
        registry.remove(&id);
        assert_ne!(registry.generation(), modified);
        assert!(registry.select(|_| true).is_empty());
    }
}
