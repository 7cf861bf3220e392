//! The `things` column family: this gateway's catalog, one JSON value per
//! thing service.

use rocksdb::{IteratorMode, WriteBatch};

use super::keys::{id_prefix, id_prefix_end};
use super::{CF_READINGS, CF_THINGS, Store, StoreError};
use crate::id::ThingId;
use crate::thing::ThingService;

impl Store {
    pub fn load_things(&self) -> Result<Vec<ThingService>, StoreError> {
        let cf = self.cf(CF_THINGS)?;
        let mut things = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item?;
            let thing =
                serde_json::from_slice(&value).map_err(|source| StoreError::CorruptThing {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    source,
                })?;
            things.push(thing);
        }
        Ok(things)
    }

    pub fn put_thing(&self, thing: &ThingService) -> Result<(), StoreError> {
        let cf = self.cf(CF_THINGS)?;
        // A ThingService holds only strings, enums and JSON values: it
        // always serialises.
        let value = serde_json::to_vec(thing).unwrap_or_default();
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(cf, thing.id.as_str(), value);
        self.write(batch)?;
        Ok(())
    }

    /// Removes a thing service and its history.
    pub fn delete_thing(&self, id: &ThingId) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_THINGS)?, id.as_str());
        let id = id.as_str().as_bytes();
        batch.delete_range_cf(self.cf(CF_READINGS)?, id_prefix(id), id_prefix_end(id));
        self.write(batch)?;
        Ok(())
    }

    /// Removes a thing service from the catalog, keeping its history (a
    /// thing that moved: the history is handed over first).
    pub fn forget_thing(&self, id: &ThingId) -> Result<(), StoreError> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(self.cf(CF_THINGS)?, id.as_str());
        self.write(batch)?;
        Ok(())
    }

    /// Removes a thing service's history.
    pub fn delete_history(&self, id: &ThingId) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let id = id.as_str().as_bytes();
        batch.delete_range_cf(self.cf(CF_READINGS)?, id_prefix(id), id_prefix_end(id));
        self.write(batch)?;
        Ok(())
    }
}
