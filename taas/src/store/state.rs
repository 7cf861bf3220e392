//! The `layer_state` column family: small records the layers above keep
//! beside the things — the S-MANAGE agent's SDVS addresses, the controller's
//! registry and requests. This crate stores their bytes under a space and
//! a key without knowing what they are.

use rocksdb::IteratorMode;

use super::keys::service_key;
use super::{CF_LAYER_STATE, Store, StoreError};

impl Store {
    pub fn put_state(&self, space: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let cf = self.cf(CF_LAYER_STATE)?;
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(cf, service_key(space, key.as_bytes()), value);
        self.write(batch)?;
        Ok(())
    }

    pub fn delete_state(&self, space: &str, key: &str) -> Result<(), StoreError> {
        let cf = self.cf(CF_LAYER_STATE)?;
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(cf, service_key(space, key.as_bytes()));
        self.write(batch)?;
        Ok(())
    }

    /// The keys of a space that start with `prefix` (all of them for ""),
    /// with their values, in byte order of the keys. Keys are returned
    /// whole, prefix included; only that range is read.
    pub fn state(&self, space: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut entries = Vec::new();
        self.scan_space(CF_LAYER_STATE, space, prefix.as_bytes(), |key, value| {
            entries.push((key, value.into_vec()));
        })?;
        Ok(entries)
    }

    /// Each entry of column family `cf` under `space` whose key starts with
    /// `prefix`, in byte order: its key without the space, and its value.
    /// Only that range is read.
    pub(super) fn scan_space(
        &self,
        cf: &'static str,
        space: &str,
        prefix: &[u8],
        mut each: impl FnMut(String, Box<[u8]>),
    ) -> Result<(), StoreError> {
        let cf = self.cf(cf)?;
        let space_start = service_key(space, b"").len();
        let start = service_key(space, prefix);
        let mode = IteratorMode::From(&start, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(cf, mode) {
            let (key, value) = item?;
            if !key.starts_with(&start) {
                break;
            }
            each(
                String::from_utf8_lossy(&key[space_start..]).into_owned(),
                value,
            );
        }
        Ok(())
    }
}
