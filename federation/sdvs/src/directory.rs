//! Stable numbers: each device of the gateway gets an SDVS address from
//! the block, each of its thing services a sensor-service id 1–255. Both
//! are written to the store before they are used, so a restarted gateway
//! gives every device and service the number it had, and a number is never
//! given twice — not even after its device has gone.

use std::collections::BTreeMap;

use fogbank_smanage::Address;
use fogbank_taas::{Store, StoreError, ThingId};

use crate::block::AddressBlock;

/// The store space this module's records live in.
const SPACE: &str = "smanage";

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("the address block {block} is full: no address for device {device}")]
    BlockFull { block: AddressBlock, device: String },
    #[error("device {device} has 255 sensor services already: none for {thing}")]
    ServicesFull { device: String, thing: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The device an id belongs to: `{adapter}.{device}` (the gateway is ours).
pub fn device_key(id: &ThingId) -> String {
    format!("{}.{}", id.adapter(), id.device())
}

#[derive(Debug, Default)]
pub struct Directory {
    addresses: BTreeMap<String, Address>,
    /// Per device: thing id → service id.
    services: BTreeMap<String, BTreeMap<String, u8>>,
    /// Per device: its configuring table as the store last had it.
    tables: BTreeMap<String, Vec<u8>>,
}

impl Directory {
    /// What the store remembers. Records of an address outside today's
    /// block are kept but not used: the block may come back.
    pub fn load(store: &Store) -> Result<Directory, StoreError> {
        let mut directory = Directory::default();
        for (key, value) in store.state(SPACE, "")? {
            if let (Some(device), [hi, lo]) = (key.strip_prefix("sdvs/"), &value[..]) {
                directory
                    .addresses
                    .insert(device.to_owned(), Address(u16::from_be_bytes([*hi, *lo])));
            } else if let Some(device) = key.strip_prefix("table/") {
                directory.tables.insert(device.to_owned(), value);
            } else if let (Some((device, thing)), [id]) = (
                key.strip_prefix("service/").and_then(|k| k.split_once('/')),
                &value[..],
            ) {
                directory
                    .services
                    .entry(device.to_owned())
                    .or_default()
                    .insert(thing.to_owned(), *id);
            }
        }
        Ok(directory)
    }

    /// The configuring table a device's SDVS had when the gateway stopped.
    pub fn take_table(&mut self, device: &str) -> Option<Vec<u8>> {
        self.tables.remove(device)
    }

    /// Keeps a device's configuring table, so its instructions outlive a
    /// restart.
    pub fn save_table(store: &Store, device: &str, table: &[u8]) -> Result<(), StoreError> {
        store.put_state(SPACE, &format!("table/{device}"), table)
    }

    pub fn address(&self, device: &str) -> Option<Address> {
        self.addresses.get(device).copied()
    }

    /// The device's address, given now (and stored) if it has none.
    pub fn allocate(
        &mut self,
        store: &Store,
        block: AddressBlock,
        device: &str,
    ) -> Result<Address, DirectoryError> {
        if let Some(address) = self.addresses.get(device).filter(|a| block.contains(**a)) {
            return Ok(*address);
        }
        let used: std::collections::BTreeSet<u16> = self.addresses.values().map(|a| a.0).collect();
        let free = (block.first..=block.last)
            .find(|a| !used.contains(a))
            .ok_or_else(|| DirectoryError::BlockFull {
                block,
                device: device.to_owned(),
            })?;
        store.put_state(SPACE, &format!("sdvs/{device}"), &free.to_be_bytes())?;
        self.addresses.insert(device.to_owned(), Address(free));
        Ok(Address(free))
    }

    /// The thing service's id within its device, given now if it has none.
    pub fn service_id(
        &mut self,
        store: &Store,
        device: &str,
        thing: &ThingId,
    ) -> Result<u8, DirectoryError> {
        let services = self.services.entry(device.to_owned()).or_default();
        if let Some(id) = services.get(thing.as_str()) {
            return Ok(*id);
        }
        let used: std::collections::BTreeSet<u8> = services.values().copied().collect();
        let free = (1..=u8::MAX).find(|id| !used.contains(id)).ok_or_else(|| {
            DirectoryError::ServicesFull {
                device: device.to_owned(),
                thing: thing.to_string(),
            }
        })?;
        store.put_state(SPACE, &format!("service/{device}/{thing}"), &[free])?;
        services.insert(thing.as_str().to_owned(), free);
        Ok(free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogbank_taas::StoreOptions;

    fn id(raw: &str) -> ThingId {
        ThingId::parse(raw).unwrap()
    }

    #[test]
    fn numbers_are_stable_across_reopen_and_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let block: AddressBlock = "0x0100-0x0102".parse().unwrap();
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            let mut directory = Directory::load(&store).unwrap();
            assert_eq!(
                directory.allocate(&store, block, "sim.a").unwrap(),
                Address(0x0100)
            );
            assert_eq!(
                directory.allocate(&store, block, "sim.b").unwrap(),
                Address(0x0101)
            );
            let t = id("g.sim.a.temperature");
            let l = id("g.sim.a.lamp");
            assert_eq!(directory.service_id(&store, "sim.a", &l).unwrap(), 1);
            assert_eq!(directory.service_id(&store, "sim.a", &t).unwrap(), 2);
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut directory = Directory::load(&store).unwrap();
        assert_eq!(
            directory.allocate(&store, block, "sim.b").unwrap(),
            Address(0x0101)
        );
        assert_eq!(
            directory.allocate(&store, block, "mqtt.c").unwrap(),
            Address(0x0102)
        );
        assert_eq!(
            directory
                .service_id(&store, "sim.a", &id("g.sim.a.temperature"))
                .unwrap(),
            2
        );
        assert!(matches!(
            directory.allocate(&store, block, "mqtt.d"),
            Err(DirectoryError::BlockFull { .. })
        ));
        // A full block does not take an address from a known device.
        assert_eq!(directory.address("sim.a"), Some(Address(0x0100)));
    }
}
