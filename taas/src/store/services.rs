//! The `services` and `service_data` column families: the Service layer
//! keeps its extended services and their key-value data here; this crate
//! stores their bytes without knowing what they are.

use rocksdb::{IteratorMode, WriteBatch};

use super::keys::{KEY_SEPARATOR, id_prefix, id_prefix_end, service_key};
use super::{CF_SERVICE_DATA, CF_SERVICES, Store, StoreError};

/// An extended service as [`Store::load_services`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredService {
    pub name: String,
    pub record: Vec<u8>,
    pub component: Vec<u8>,
}

impl Store {
    /// Writes a service's record and, when given, its component, in one
    /// batch: an upgrade is either wholly there or not at all.
    pub fn put_service(
        &self,
        name: &str,
        record: &[u8],
        component: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let cf = self.cf(CF_SERVICES)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, service_key(name, b"record"), record);
        if let Some(component) = component {
            batch.put_cf(cf, service_key(name, b"component"), component);
        }
        self.write(batch)?;
        Ok(())
    }

    /// Every stored service: name, record, component.
    pub fn load_services(&self) -> Result<Vec<StoredService>, StoreError> {
        let cf = self.cf(CF_SERVICES)?;
        let mut services: Vec<StoredService> = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item?;
            let Some(split) = key.iter().position(|b| *b == KEY_SEPARATOR) else {
                continue;
            };
            let name = String::from_utf8_lossy(&key[..split]).into_owned();
            if services.last().is_none_or(|s| s.name != name) {
                services.push(StoredService {
                    name,
                    record: Vec::new(),
                    component: Vec::new(),
                });
            }
            if let Some(service) = services.last_mut() {
                match &key[split + 1..] {
                    b"record" => service.record = value.into_vec(),
                    b"component" => service.component = value.into_vec(),
                    _ => {}
                }
            }
        }
        Ok(services)
    }

    /// Removes a service's record and component, keeping its key-value
    /// data (the Service layer keeps them elsewhere now).
    pub fn forget_service_record(&self, name: &str) -> Result<(), StoreError> {
        let name = name.as_bytes();
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_SERVICES)?, id_prefix(name), id_prefix_end(name));
        self.write(batch)
    }

    /// Removes a service and its key-value data.
    pub fn delete_service(&self, name: &str) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let name = name.as_bytes();
        batch.delete_range_cf(self.cf(CF_SERVICES)?, id_prefix(name), id_prefix_end(name));
        batch.delete_range_cf(
            self.cf(CF_SERVICE_DATA)?,
            id_prefix(name),
            id_prefix_end(name),
        );
        self.write(batch)?;
        Ok(())
    }

    pub fn service_value(&self, name: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = self.cf(CF_SERVICE_DATA)?;
        Ok(self.db.get_cf(cf, service_key(name, key.as_bytes()))?)
    }

    pub fn put_service_value(&self, name: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let cf = self.cf(CF_SERVICE_DATA)?;
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(cf, service_key(name, key.as_bytes()), value);
        self.write(batch)?;
        Ok(())
    }

    pub fn delete_service_value(&self, name: &str, key: &str) -> Result<(), StoreError> {
        let cf = self.cf(CF_SERVICE_DATA)?;
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(cf, service_key(name, key.as_bytes()));
        self.write(batch)?;
        Ok(())
    }

    /// A service's whole key-value data, in byte order of the keys.
    pub fn service_data(&self, name: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut entries = Vec::new();
        self.scan_space(CF_SERVICE_DATA, name, b"", |key, value| {
            entries.push((key, value.into_vec()));
        })?;
        Ok(entries)
    }

    /// Replaces a service's key-value data with `entries`, in one batch.
    pub fn replace_service_data(
        &self,
        name: &str,
        entries: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let cf = self.cf(CF_SERVICE_DATA)?;
        let mut batch = WriteBatch::default();
        let bytes = name.as_bytes();
        batch.delete_range_cf(cf, id_prefix(bytes), id_prefix_end(bytes));
        for (key, value) in entries {
            batch.put_cf(cf, service_key(name, key.as_bytes()), value);
        }
        self.write(batch)?;
        Ok(())
    }

    /// A service's keys that start with `prefix`, in byte order, with the
    /// size of each value.
    pub fn service_entries(
        &self,
        name: &str,
        prefix: &str,
    ) -> Result<Vec<(String, usize)>, StoreError> {
        let mut entries = Vec::new();
        self.scan_space(CF_SERVICE_DATA, name, prefix.as_bytes(), |key, value| {
            entries.push((key, value.len()));
        })?;
        Ok(entries)
    }
}
