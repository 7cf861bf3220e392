//! Records every gateway of the local cloud holds a copy of.
//!
//! Thing services have one owner, the single writer of each; some state
//! has none: an extended service published at any gateway, the gateway it
//! runs on, the checkpoint of its key-value store. Such state is kept
//! here as *records*, each a key, a [`Stamp`] and a small text value,
//! with at most one *blob* beside it (a component, a checkpoint) named by
//! its SHA-256. Any gateway may write any record; between two versions of
//! a key the later stamp wins (last writer wins), so every gateway that
//! has seen the same writes holds the same records whatever order they
//! came in. A removal is a record without a value, kept so that it wins
//! over the versions it replaces.
//!
//! The local cloud compares [`Records::fingerprint`]s in its beacons and
//! pulls the newer records of a member whose fingerprint differs (the
//! pull is its own; this module only merges). A merged blob is checked
//! against its digest before anything refers to it.
//!
//! Records and blobs live in the store's `layer_state` (spaces
//! `taas/records` and `taas/blobs`); the layer that writes a record gives
//! it its meaning, this module none.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Timestamp;
use crate::store::{Store, StoreError};

const RECORDS: &str = "taas/records";
const BLOBS: &str = "taas/blobs";

/// When a record was written, and where: ordered by time, then gateway,
/// so that two writes never tie.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Microseconds since the epoch; always later than the version the
    /// writer replaced, whatever its clock says.
    pub micros: u64,
    pub gateway: String,
}

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    pub stamp: Stamp,
    /// `None`: the key was removed.
    pub value: Option<String>,
    /// `sha256:<hex>` of the blob that goes with this version.
    pub blob: Option<String>,
}

/// Why a record from another gateway was not taken.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("the blob of {key} is missing")]
    MissingBlob { key: String },
    #[error("the blob of {key} does not match its digest {digest}")]
    BadBlob { key: String, digest: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What goes with a new version of a record.
#[derive(Debug, Clone, Copy)]
pub enum Blob<'a> {
    None,
    New(&'a [u8]),
    /// The blob of the version it replaces.
    Keep,
}

/// Keys of the records this crate writes itself: `draining/{gateway}`
/// holds a value while that gateway drains.
pub const DRAINING: &str = "draining/";

/// `sha256:<hex>` of some bytes: how blobs are named and checked.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in hash {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// The records of this gateway, in memory over the store.
pub struct Records {
    held: Mutex<BTreeMap<String, Record>>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl Records {
    pub(crate) fn load(store: &Store) -> Result<Self, StoreError> {
        let mut held = BTreeMap::new();
        for (key, value) in store.state(RECORDS, "")? {
            match serde_json::from_slice::<Record>(&value) {
                Ok(record) => {
                    held.insert(key, record);
                }
                Err(error) => tracing::warn!(%key, %error, "skipping an unreadable record"),
            }
        }
        Ok(Records {
            held: Mutex::new(held),
            changes: tokio::sync::watch::channel(0).0,
        })
    }

    /// Moves on every change to the records (a write here or a merge).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// How many changes the records have had since the gateway started.
    pub fn generation(&self) -> u64 {
        *self.changes.borrow()
    }

    pub fn get(&self, key: &str) -> Option<Record> {
        self.held.lock().get(key).cloned()
    }

    /// The records whose key starts with `prefix`, removals included.
    pub fn with_prefix(&self, prefix: &str) -> Vec<Record> {
        self.held
            .lock()
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, record)| record.clone())
            .collect()
    }

    /// Every key and the stamp of the version held.
    pub fn index(&self) -> Vec<(String, Stamp)> {
        self.held
            .lock()
            .iter()
            .map(|(key, record)| (key.clone(), record.stamp.clone()))
            .collect()
    }

    /// A digest of [`index`](Self::index): two gateways with the same
    /// fingerprint hold the same versions.
    pub fn fingerprint(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for (key, record) in self.held.lock().iter() {
            key.hash(&mut hasher);
            record.stamp.hash(&mut hasher);
        }
        hasher.finish()
    }

    /// The keys of `index` (another gateway's) whose version here is older
    /// or missing: what to fetch from it.
    pub fn newer_in(&self, index: &[(String, Stamp)]) -> Vec<String> {
        let held = self.held.lock();
        index
            .iter()
            .filter(|(key, stamp)| held.get(key).is_none_or(|r| r.stamp < *stamp))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Writes a new version of `key` from this gateway.
    pub fn put(
        &self,
        store: &Store,
        gateway: &str,
        key: &str,
        value: Option<String>,
        blob: Blob<'_>,
    ) -> Result<Record, StoreError> {
        let mut held = self.held.lock();
        let previous = held.get(key).map_or(0, |r| r.stamp.micros);
        let blob_digest = match blob {
            Blob::New(bytes) => {
                let name = digest(bytes);
                store.put_state(BLOBS, &name, bytes)?;
                Some(name)
            }
            Blob::Keep => held.get(key).and_then(|r| r.blob.clone()),
            Blob::None => None,
        };
        let record = Record {
            key: key.to_owned(),
            stamp: Stamp {
                micros: Timestamp::now().0.max(previous + 1),
                gateway: gateway.to_owned(),
            },
            value,
            blob: blob_digest,
        };
        self.keep(store, &mut held, record.clone())?;
        drop(held);
        self.changes.send_modify(|n| *n += 1);
        Ok(record)
    }

    /// Takes another gateway's version of a key if it is newer than the one
    /// held; `blob` is its blob, when this gateway does not hold it yet.
    /// Answers whether it was taken.
    pub fn merge(
        &self,
        store: &Store,
        record: Record,
        blob: Option<Vec<u8>>,
    ) -> Result<bool, MergeError> {
        let mut held = self.held.lock();
        if held
            .get(&record.key)
            .is_some_and(|r| r.stamp >= record.stamp)
        {
            return Ok(false);
        }
        if let Some(name) = &record.blob
            && !self.holds_blob(store, name)?
        {
            let Some(bytes) = blob else {
                return Err(MergeError::MissingBlob {
                    key: record.key.clone(),
                });
            };
            if digest(&bytes) != *name {
                return Err(MergeError::BadBlob {
                    key: record.key.clone(),
                    digest: name.clone(),
                });
            }
            store.put_state(BLOBS, name, &bytes)?;
        }
        self.keep(store, &mut held, record)?;
        drop(held);
        self.changes.send_modify(|n| *n += 1);
        Ok(true)
    }

    /// Stores `record` in place of the version held, and drops the blob
    /// that version had if no record refers to it any more.
    fn keep(
        &self,
        store: &Store,
        held: &mut BTreeMap<String, Record>,
        record: Record,
    ) -> Result<(), StoreError> {
        // Strings and numbers: it serialises.
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        store.put_state(RECORDS, &record.key, &bytes)?;
        let replaced = held.insert(record.key.clone(), record);
        if let Some(old) = replaced.and_then(|r| r.blob)
            && !held.values().any(|r| r.blob.as_ref() == Some(&old))
        {
            store.delete_state(BLOBS, &old)?;
        }
        Ok(())
    }

    pub fn holds_blob(&self, store: &Store, name: &str) -> Result<bool, StoreError> {
        Ok(self.blob(store, name)?.is_some())
    }

    /// A blob by its digest.
    pub fn blob(&self, store: &Store, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(store
            .state(BLOBS, name)?
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, bytes)| bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::StoreOptions::default()).unwrap();
        (dir, store)
    }

    #[test]
    fn the_later_stamp_wins_in_any_order() {
        let (_a_dir, a_store) = store();
        let (_b_dir, b_store) = store();
        let a = Records::load(&a_store).unwrap();
        let b = Records::load(&b_store).unwrap();
        let first = a
            .put(
                &a_store,
                "gw-a",
                "service/x",
                Some("1".into()),
                Blob::New(b"one"),
            )
            .unwrap();
        let second = a
            .put(
                &a_store,
                "gw-a",
                "service/x",
                Some("2".into()),
                Blob::New(b"two"),
            )
            .unwrap();
        assert!(second.stamp > first.stamp);
        let kept = a
            .put(&a_store, "gw-a", "service/x", Some("3".into()), Blob::Keep)
            .unwrap();
        assert_eq!(kept.blob, Some(digest(b"two")));
        let second = kept;
        assert!(
            !a.holds_blob(&a_store, &digest(b"one")).unwrap(),
            "unreferenced blob dropped"
        );
        // b hears them in the wrong order.
        assert!(
            b.merge(&b_store, second.clone(), Some(b"two".to_vec()))
                .unwrap()
        );
        assert!(b.holds_blob(&b_store, &digest(b"two")).unwrap());
        assert!(!b.merge(&b_store, first, Some(b"one".to_vec())).unwrap());
        assert_eq!(b.get("service/x"), Some(second));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(b.newer_in(&a.index()).is_empty());
    }

    #[test]
    fn a_blob_must_match_its_digest() {
        let (_a_dir, a_store) = store();
        let (_b_dir, b_store) = store();
        let a = Records::load(&a_store).unwrap();
        let b = Records::load(&b_store).unwrap();
        let record = a
            .put(&a_store, "gw-a", "k", Some("v".into()), Blob::New(b"blob"))
            .unwrap();
        assert!(matches!(
            b.merge(&b_store, record.clone(), Some(b"tampered".to_vec())),
            Err(MergeError::BadBlob { .. })
        ));
        assert!(matches!(
            b.merge(&b_store, record.clone(), None),
            Err(MergeError::MissingBlob { .. })
        ));
        assert_eq!(b.get("k"), None);
        assert!(b.merge(&b_store, record, Some(b"blob".to_vec())).unwrap());
        assert_eq!(
            b.blob(&b_store, &digest(b"blob")).unwrap().as_deref(),
            Some(&b"blob"[..])
        );
    }

    #[test]
    fn records_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let written = {
            let store = Store::open(dir.path(), &crate::StoreOptions::default()).unwrap();
            let records = Records::load(&store).unwrap();
            records
                .put(&store, "gw-a", "a/1", None, Blob::None)
                .unwrap()
        };
        let store = Store::open(dir.path(), &crate::StoreOptions::default()).unwrap();
        let records = Records::load(&store).unwrap();
        assert_eq!(records.with_prefix("a/"), vec![written]);
        assert!(records.with_prefix("b/").is_empty());
    }
}
