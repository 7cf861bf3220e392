//! The store's format: a number in `meta` that says how its keys and
//! values are laid out, and the release that last wrote it.
//!
//! A build opens a store of its own format, upgrades an older one in place
//! (in one write batch: a crash leaves the old format or the new, never a
//! mix), and refuses a newer one before writing anything of its own,
//! naming the release that wrote it: an older build must not misread, or
//! write beside, data laid out in a way it does not know.
//!
//! The formats:
//! 1. the column families of [`super`]; `schema_version` = `1`.
//! 2. as 1, and `written_by`: the release that last opened the store, so
//!    that a refusal can say which release to run. A format-1 store is
//!    upgraded by writing both keys.
//! 3. as 2, with `receipts` kept as numbered records, one per write (see
//!    [`super::receipts`]) instead of one key per delivery slot. An older
//!    store's receipts are gathered into record 0 in the batch that writes
//!    the new format.

use rocksdb::WriteBatch;

use super::{CF_META, Store, StoreError};

/// The format this build writes, and the newest it reads.
pub const FORMAT: u32 = 3;
/// Format 1's name for the key, kept: a format-1 build that meets a newer
/// store then refuses it ("schema version 2, this build understands 1")
/// rather than taking it for a fresh one.
const FORMAT_KEY: &[u8] = b"schema_version";
const WRITTEN_BY_KEY: &[u8] = b"written_by";
/// This build's release, as `written_by` records it.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

impl Store {
    /// Brings the store to [`FORMAT`] or refuses it; the format it had
    /// (`None`: a new store).
    pub(super) fn settle_format(&self) -> Result<Option<u32>, StoreError> {
        let meta = self.cf(CF_META)?;
        let found = match self.db.get_cf(meta, FORMAT_KEY)? {
            None => None,
            Some(bytes) => Some(
                std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|text| text.parse::<u32>().ok())
                    .ok_or_else(|| StoreError::UnreadableFormat {
                        path: self.path.clone(),
                        found: String::from_utf8_lossy(&bytes).into_owned(),
                    })?,
            ),
        };
        if let Some(found) = found.filter(|&found| found > FORMAT) {
            let written_by = self
                .db
                .get_cf(meta, WRITTEN_BY_KEY)?
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_else(|| "a newer release".into());
            return Err(StoreError::NewerFormat {
                path: self.path.clone(),
                found,
                written_by,
                release: RELEASE,
                supported: FORMAT,
            });
        }
        let mut batch = WriteBatch::default();
        if found.is_some_and(|found| found < 3) {
            self.upgrade_receipts(&mut batch)?;
        }
        batch.put_cf(meta, FORMAT_KEY, FORMAT.to_string());
        batch.put_cf(meta, WRITTEN_BY_KEY, RELEASE);
        self.write(batch)?;
        if let Some(older) = found.filter(|&found| found < FORMAT) {
            tracing::info!(path = %self.path.display(), from = older, to = FORMAT, "store upgraded in place");
        }
        Ok(found)
    }

    /// The format this store is in (after [`Store::open`]: always [`FORMAT`]).
    pub fn format(&self) -> Result<u32, StoreError> {
        let meta = self.cf(CF_META)?;
        let bytes = self.db.get_cf(meta, FORMAT_KEY)?.unwrap_or_default();
        std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| StoreError::UnreadableFormat {
                path: self.path.clone(),
                found: String::from_utf8_lossy(&bytes).into_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::reading::Value;
    use crate::store::{StoreOptions, Window};
    use crate::testing::id;

    fn raw_meta(path: &Path) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let db = rocksdb::DB::open_cf_for_read_only(
            &rocksdb::Options::default(),
            path,
            rocksdb::DB::list_cf(&rocksdb::Options::default(), path).unwrap(),
            false,
        )
        .unwrap();
        let meta = db.cf_handle(CF_META).unwrap();
        (
            db.get_cf(meta, FORMAT_KEY).unwrap(),
            db.get_cf(meta, WRITTEN_BY_KEY).unwrap(),
        )
    }

    /// A store at `path` whose `meta` then holds `facts`.
    fn store_that_says(path: &Path, facts: &[(&[u8], &[u8])]) {
        let store = Store::open(path, &StoreOptions::default()).unwrap();
        let meta = store.cf(CF_META).unwrap();
        for (key, value) in facts {
            store.db.put_cf(meta, key, value).unwrap();
        }
    }

    #[test]
    fn a_new_store_is_in_this_format_and_names_its_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        assert_eq!(store.format().unwrap(), FORMAT);
        drop(store);
        assert_eq!(
            raw_meta(&path),
            (Some(b"3".to_vec()), Some(RELEASE.as_bytes().to_vec()))
        );
    }

    /// `tests/fixtures/store-format-N.tar.gz` was written by the release
    /// before format N+1 (format 1: commit f0805b1; format 2: commit
    /// c01288e1), each a gateway `gw-old` with three readings of
    /// `gw-old.http.boiler.temperature` posted, then stopped with SIGTERM.
    fn an_old_store_is_upgraded_in_place_with_every_reading(format: u32) {
        let dir = tempfile::tempdir().unwrap();
        // Where cargo runs the test from, not where it was compiled: a
        // target dir shared by two clones keeps the other's path.
        let fixture = std::path::Path::new(
            &std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join(format!("tests/fixtures/store-format-{format}.tar.gz"));
        let unpacked = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(&fixture)
            .arg("-C")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(unpacked.success());
        // Format 1 did not yet say which release wrote it.
        let written_by = (format >= 2).then(|| b"0.1.0".to_vec());
        assert_eq!(
            raw_meta(dir.path()),
            (Some(format.to_string().into_bytes()), written_by)
        );

        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(store.format().unwrap(), FORMAT);
        let thing = id("gw-old.http.boiler.temperature");
        let values: Vec<Value> = store
            .history(&thing, Window::ALL)
            .unwrap()
            .into_iter()
            .map(|reading| reading.value)
            .collect();
        assert_eq!(
            values,
            [21.5, 22.5, 23.5].map(Value::Number),
            "every reading of the old store"
        );
        drop(store);
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(store.format().unwrap(), FORMAT, "it stays upgraded");
    }

    #[test]
    fn a_format_1_store_is_upgraded_in_place_with_every_reading() {
        an_old_store_is_upgraded_in_place_with_every_reading(1);
    }

    #[test]
    fn a_format_2_store_is_upgraded_in_place_with_every_reading() {
        an_old_store_is_upgraded_in_place_with_every_reading(2);
    }

    #[test]
    fn a_newer_store_is_refused_by_name_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        store_that_says(&path, &[(FORMAT_KEY, b"4"), (WRITTEN_BY_KEY, b"9.1.0")]);

        let refused = Store::open(&path, &StoreOptions::default())
            .err()
            .expect("a newer store is refused");
        let said = refused.to_string();
        for part in ["format 4", "fogbank 9.1.0", "formats up to 3", RELEASE] {
            assert!(said.contains(part), "{part:?} is not in {said:?}");
        }
        assert_eq!(
            raw_meta(&path),
            (Some(b"4".to_vec()), Some(b"9.1.0".to_vec())),
            "the refused store is untouched"
        );
    }

    /// Format 2 kept a key per delivery slot; format 3 one record per
    /// write. The old receipts survive the upgrade, so a redelivery after
    /// it is still recognised.
    #[test]
    fn a_format_2_stores_receipts_are_gathered_into_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = Store::open(&path, &StoreOptions::default()).unwrap();
            let meta = store.cf(CF_META).unwrap();
            store.db.put_cf(meta, FORMAT_KEY, b"2").unwrap();
            let receipts = store.cf(super::super::CF_RECEIPTS).unwrap();
            store.db.put_cf(receipts, b"mqtt/a/1", b"f1").unwrap();
            store.db.put_cf(receipts, b"mqtt/b/2", b"f2").unwrap();
        }
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        assert_eq!(store.format().unwrap(), FORMAT);
        let records = store.load_receipts().unwrap();
        assert_eq!(
            records,
            vec![(
                0,
                vec![
                    (b"mqtt/a/1".to_vec(), b"f1".to_vec()),
                    (b"mqtt/b/2".to_vec(), b"f2".to_vec())
                ]
            )]
        );
        assert_eq!(store.receipt(b"mqtt/b/2").unwrap(), Some(b"f2".to_vec()));
    }

    #[test]
    fn an_unreadable_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        store_that_says(&path, &[(FORMAT_KEY, b"two")]);
        assert!(matches!(
            Store::open(&path, &StoreOptions::default()),
            Err(StoreError::UnreadableFormat { .. })
        ));
    }
}
