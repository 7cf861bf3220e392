//! Durable state in RocksDB: the catalog of thing services and the history
//! of their readings.
//!
//! Column families:
//! - `things`: thing id → the thing service as JSON (few, small, rarely written);
//! - `readings`: [`reading_key`] (thing id, 0x00, big-endian µs timestamp)
//!   → the value in [`crate::reading::codec`] form. All readings of one thing
//!   are contiguous and time-ordered, so a history query is one range scan
//!   and a retention cut is one range delete per thing. A reading written
//!   twice with the same time overwrites itself: redeliveries never
//!   duplicate history;
//! - `meta`: schema version and other small facts;
//! - `receipts`: delivery slot → content fingerprint of deliveries stored
//!   but not yet acknowledged to their sender, so that a redelivery after a
//!   crash is recognised (see [`crate::Hub::ingest_once`]).
//!
//! Every write goes through the WAL before it returns, so a reading the
//! gateway acknowledged survives a killed process (and, with `sync_writes`,
//! a power cut).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode,
    Options, ReadOptions, WriteBatch, WriteOptions,
};

use crate::id::ThingId;
use crate::reading::{Reading, ThingReading, Timestamp, codec};
use crate::thing::ThingService;

const CF_THINGS: &str = "things";
const CF_READINGS: &str = "readings";
const CF_META: &str = "meta";
const CF_RECEIPTS: &str = "receipts";
/// Extended services: `{name} 0x00 record|component`, opaque to this crate.
const CF_SERVICES: &str = "services";
/// Each extended service's key-value store: `{name} 0x00 {key}`.
const CF_SERVICE_DATA: &str = "service_data";
const SCHEMA_KEY: &[u8] = b"schema_version";
const SCHEMA_VERSION: &[u8] = b"1";
/// Separates the thing id from the timestamp in reading keys. Ids never
/// contain it, and it sorts below every id character, so one thing's keys
/// never interleave with another's.
const KEY_SEPARATOR: u8 = 0x00;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}{}", lock_hint(.source))]
    Open {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("the store at {path} has schema version {found}, this build understands {expected}")]
    Schema {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("store operation failed: {0}")]
    Io(#[from] rocksdb::Error),
    #[error("column family {0} is missing")]
    MissingColumnFamily(&'static str),
    /// The one write of a burst failed: every delivery of it holds the
    /// same error.
    #[error("{0}")]
    Shared(std::sync::Arc<StoreError>),
    #[error("stored thing service {key} is unreadable: {source}")]
    CorruptThing {
        key: String,
        source: serde_json::Error,
    },
}

/// RocksDB reports a second opener as a lock failure; say what it means.
fn lock_hint(error: &rocksdb::Error) -> &'static str {
    if error.to_string().contains("lock") {
        " (is another fogbank using this data directory?)"
    } else {
        ""
    }
}

/// How the store uses the disk.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// fsync the WAL on every write: survives power cuts, costs throughput.
    pub sync_writes: bool,
    /// RocksDB block cache size.
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync_writes: false,
            cache_bytes: 8 << 20,
        }
    }
}

/// How long history is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Readings older than this were deleted (none if `None`).
    pub cutoff: Option<Timestamp>,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Which readings of one thing a history query returns: those with
/// `from <= time <= to`, in time order, at most `limit` — the oldest ones,
/// or the newest if `newest_first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub from: Timestamp,
    pub to: Timestamp,
    pub limit: usize,
    pub newest_first: bool,
}

impl Window {
    /// Everything, oldest first.
    pub const ALL: Window = Window {
        from: Timestamp::MIN,
        to: Timestamp::MAX,
        limit: usize::MAX,
        newest_first: false,
    };

    /// The newest `limit` readings.
    pub fn newest(limit: usize) -> Self {
        Window {
            limit,
            newest_first: true,
            ..Window::ALL
        }
    }
}

/// The key of one reading: id, separator, big-endian microseconds.
pub fn reading_key(id: &ThingId, time: Timestamp) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.as_str().len() + 9);
    key.extend_from_slice(id.as_str().as_bytes());
    key.push(KEY_SEPARATOR);
    key.extend_from_slice(&time.0.to_be_bytes());
    key
}

/// Splits a reading key into its id part and time; `None` if malformed.
pub fn parse_reading_key(key: &[u8]) -> Option<(&[u8], Timestamp)> {
    if key.len() < 9 {
        return None;
    }
    let (id, rest) = key.split_at(key.len() - 9);
    if rest[0] != KEY_SEPARATOR {
        return None;
    }
    let time: [u8; 8] = rest[1..].try_into().ok()?;
    Some((id, Timestamp(u64::from_be_bytes(time))))
}

fn id_prefix(id: &[u8]) -> Vec<u8> {
    let mut prefix = id.to_vec();
    prefix.push(KEY_SEPARATOR);
    prefix
}

/// The smallest key greater than every key of this id.
fn id_prefix_end(id: &[u8]) -> Vec<u8> {
    let mut end = id.to_vec();
    end.push(KEY_SEPARATOR + 1);
    end
}

/// An extended service as [`Store::load_services`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredService {
    pub name: String,
    pub record: Vec<u8>,
    pub component: Vec<u8>,
}

fn service_key(name: &str, key: &[u8]) -> Vec<u8> {
    let mut full = id_prefix(name.as_bytes());
    full.extend_from_slice(key);
    full
}

pub struct Store {
    db: DB,
    path: PathBuf,
    write_options: WriteOptions,
}

impl Store {
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.increase_parallelism(2);
        db_options.set_max_background_jobs(2);
        db_options.set_keep_log_file_num(3);
        db_options.set_max_total_wal_size(64 << 20);
        db_options.set_max_open_files(256);

        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(options.cache_bytes)?);
        let mut readings = Options::default();
        readings.set_block_based_table_factory(&table);
        readings.set_write_buffer_size(16 << 20);
        readings.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut small = Options::default();
        small.set_write_buffer_size(1 << 20);

        let descriptors = vec![
            ColumnFamilyDescriptor::new(CF_THINGS, small.clone()),
            ColumnFamilyDescriptor::new(CF_READINGS, readings),
            ColumnFamilyDescriptor::new(CF_META, small.clone()),
            ColumnFamilyDescriptor::new(CF_RECEIPTS, small.clone()),
            ColumnFamilyDescriptor::new(CF_SERVICES, small.clone()),
            ColumnFamilyDescriptor::new(CF_SERVICE_DATA, small),
        ];
        let db = DB::open_cf_descriptors(&db_options, path, descriptors).map_err(|source| {
            StoreError::Open {
                path: path.to_owned(),
                source,
            }
        })?;

        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.sync_writes);
        let store = Store {
            db,
            path: path.to_owned(),
            write_options,
        };
        store.check_schema()?;
        Ok(store)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let meta = self.cf(CF_META)?;
        match self.db.get_cf(meta, SCHEMA_KEY)? {
            None => self
                .db
                .put_cf_opt(meta, SCHEMA_KEY, SCHEMA_VERSION, &self.write_options)?,
            Some(found) if found == SCHEMA_VERSION => {}
            Some(found) => {
                return Err(StoreError::Schema {
                    path: self.path.clone(),
                    found: String::from_utf8_lossy(&found).into_owned(),
                    expected: String::from_utf8_lossy(SCHEMA_VERSION).into_owned(),
                });
            }
        }
        Ok(())
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or(StoreError::MissingColumnFamily(name))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    // ------------------------------------------------------------ things

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
        self.db
            .put_cf_opt(cf, thing.id.as_str(), value, &self.write_options)?;
        Ok(())
    }

    /// Removes a thing service and its history.
    pub fn delete_thing(&self, id: &ThingId) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_THINGS)?, id.as_str());
        let id = id.as_str().as_bytes();
        batch.delete_range_cf(self.cf(CF_READINGS)?, id_prefix(id), id_prefix_end(id));
        self.db.write_opt(batch, &self.write_options)?;
        Ok(())
    }

    // ------------------------------------------------------------ readings

    /// Writes readings atomically: all or none reach the WAL.
    pub fn append(&self, readings: &[ThingReading]) -> Result<(), StoreError> {
        self.append_deliveries([(readings, None)])
    }

    /// Writes the readings of several deliveries, each with its delivery
    /// receipt (slot key → content fingerprint) if it has one, in one
    /// atomic batch: one WAL append for all of them.
    pub fn append_deliveries<'a>(
        &self,
        deliveries: impl IntoIterator<Item = (&'a [ThingReading], Option<(&'a [u8], &'a [u8])>)>,
    ) -> Result<(), StoreError> {
        let readings_cf = self.cf(CF_READINGS)?;
        let receipts_cf = self.cf(CF_RECEIPTS)?;
        let mut batch = WriteBatch::default();
        let mut value = Vec::with_capacity(16);
        for (readings, receipt) in deliveries {
            for r in readings {
                value.clear();
                codec::encode(&r.reading.value, &mut value);
                batch.put_cf(readings_cf, reading_key(&r.thing, r.reading.time), &value);
            }
            if let Some((key, fingerprint)) = receipt {
                batch.put_cf(receipts_cf, key, fingerprint);
            }
        }
        self.db.write_opt(batch, &self.write_options)?;
        Ok(())
    }

    /// The fingerprint recorded for a delivery slot, if any.
    pub fn receipt(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_RECEIPTS)?, key)?)
    }

    /// Forgets delivery slots once their senders have the acknowledgement.
    pub fn clear_receipts<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), StoreError> {
        let cf = self.cf(CF_RECEIPTS)?;
        let mut batch = WriteBatch::default();
        for key in keys {
            batch.delete_cf(cf, key);
        }
        if !batch.is_empty() {
            self.db.write_opt(batch, &self.write_options)?;
        }
        Ok(())
    }

    /// Readings of one thing within `window`, in time order.
    pub fn history(&self, id: &ThingId, window: Window) -> Result<Vec<Reading>, StoreError> {
        let Window {
            from,
            to,
            limit,
            newest_first,
        } = window;
        let cf = self.cf(CF_READINGS)?;
        let lower = reading_key(id, from);
        let upper = match to.0.checked_add(1) {
            Some(end) => reading_key(id, Timestamp(end)),
            None => id_prefix_end(id.as_str().as_bytes()),
        };
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_lower_bound(lower.clone());
        read_options.set_iterate_upper_bound(upper.clone());
        let mode = if newest_first {
            IteratorMode::From(&upper, Direction::Reverse)
        } else {
            IteratorMode::From(&lower, Direction::Forward)
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in self.db.iterator_cf_opt(cf, read_options, mode) {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item?;
            let Some((_, time)) = parse_reading_key(&key) else {
                continue;
            };
            match codec::decode(&value) {
                Ok(value) => out.push(Reading { time, value }),
                Err(error) => {
                    tracing::warn!(thing = %id, %time, %error, "skipping an unreadable stored reading")
                }
            }
        }
        if newest_first {
            out.reverse();
        }
        Ok(out)
    }

    /// The newest reading of a thing.
    pub fn latest(&self, id: &ThingId) -> Result<Option<Reading>, StoreError> {
        Ok(self.history(id, Window::newest(1))?.pop())
    }

    // ------------------------------------------------------------ retention

    /// Approximate bytes the readings occupy on disk and in memory.
    pub fn readings_bytes(&self) -> Result<u64, StoreError> {
        let cf = self.cf(CF_READINGS)?;
        let property = |name: &str| -> Result<u64, StoreError> {
            Ok(self.db.property_int_value_cf(cf, name)?.unwrap_or(0))
        };
        Ok(
            property("rocksdb.total-sst-files-size")?
                + property("rocksdb.cur-size-all-mem-tables")?,
        )
    }

    /// The id part and time range of every thing with history.
    fn history_spans(&self) -> Result<Vec<(Vec<u8>, Timestamp, Timestamp)>, StoreError> {
        let cf = self.cf(CF_READINGS)?;
        let mut spans = Vec::new();
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek_to_first();
        while it.valid() {
            let Some((id, first)) = it.key().and_then(parse_reading_key) else {
                it.next();
                continue;
            };
            let id = id.to_vec();
            let end = id_prefix_end(&id);
            it.seek_for_prev(&end);
            let last = it
                .key()
                .and_then(parse_reading_key)
                .map(|(_, t)| t)
                .unwrap_or(first);
            spans.push((id, first, last));
            it.seek(&end);
        }
        it.status()?;
        Ok(spans)
    }

    fn delete_before(
        &self,
        spans: &[(Vec<u8>, Timestamp, Timestamp)],
        cutoff: Timestamp,
    ) -> Result<(), StoreError> {
        let cf = self.cf(CF_READINGS)?;
        let mut batch = WriteBatch::default();
        for (id, first, _) in spans {
            if *first < cutoff {
                let mut end = id_prefix(id);
                end.extend_from_slice(&cutoff.0.to_be_bytes());
                batch.delete_range_cf(cf, id_prefix(id), end);
            }
        }
        self.db.write_opt(batch, &self.write_options)?;
        Ok(())
    }

    fn compact_readings(&self) -> Result<(), StoreError> {
        let cf = self.cf(CF_READINGS)?;
        self.db.flush_cf(cf)?;
        self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// Deletes readings older than `max_age`, then the oldest readings
    /// across all things until the history fits in `max_bytes`.
    pub fn enforce_retention(
        &self,
        retention: &Retention,
        now: Timestamp,
    ) -> Result<RetentionReport, StoreError> {
        let bytes_before = self.readings_bytes()?;
        let mut report = RetentionReport {
            cutoff: None,
            bytes_before,
            bytes_after: bytes_before,
        };
        if let Some(max_age) = retention.max_age {
            let cutoff = now.saturating_sub_micros(max_age.as_micros() as u64);
            let spans = self.history_spans()?;
            if spans.iter().any(|(_, first, _)| *first < cutoff) {
                self.delete_before(&spans, cutoff)?;
                report.cutoff = Some(cutoff);
            }
        }
        if let Some(max_bytes) = retention.max_bytes {
            // Sizes are only known after a flush and compaction; each round
            // cuts a proportional slice of the oldest time span.
            for _ in 0..8 {
                self.compact_readings()?;
                let size = self.readings_bytes()?;
                if size <= max_bytes {
                    break;
                }
                let spans = self.history_spans()?;
                let (Some(oldest), Some(newest)) = (
                    spans.iter().map(|s| s.1).min(),
                    spans.iter().map(|s| s.2).max(),
                ) else {
                    break;
                };
                // Aim 10 % under the limit so the next pass is not immediate.
                let excess = (size - max_bytes * 9 / 10) as f64 / size as f64;
                let step = (((newest.0 - oldest.0) as f64) * excess).ceil() as u64;
                let cutoff = Timestamp(oldest.0 + step.max(1));
                self.delete_before(&spans, cutoff)?;
                report.cutoff = report.cutoff.max(Some(cutoff));
            }
        }
        if report.cutoff.is_some() {
            self.compact_readings()?;
        }
        report.bytes_after = self.readings_bytes()?;
        Ok(report)
    }

    // ------------------------------------------------- extended services
    //
    // The Service layer keeps its services here; this crate stores their
    // bytes without knowing what they are.

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
        self.db.write_opt(batch, &self.write_options)?;
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
        self.db.write_opt(batch, &self.write_options)?;
        Ok(())
    }

    pub fn service_value(&self, name: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = self.cf(CF_SERVICE_DATA)?;
        Ok(self.db.get_cf(cf, service_key(name, key.as_bytes()))?)
    }

    pub fn put_service_value(&self, name: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let cf = self.cf(CF_SERVICE_DATA)?;
        self.db.put_cf_opt(
            cf,
            service_key(name, key.as_bytes()),
            value,
            &self.write_options,
        )?;
        Ok(())
    }

    pub fn delete_service_value(&self, name: &str, key: &str) -> Result<(), StoreError> {
        let cf = self.cf(CF_SERVICE_DATA)?;
        self.db
            .delete_cf_opt(cf, service_key(name, key.as_bytes()), &self.write_options)?;
        Ok(())
    }

    /// A service's keys that start with `prefix`, in byte order, with the
    /// size of each value.
    pub fn service_entries(
        &self,
        name: &str,
        prefix: &str,
    ) -> Result<Vec<(String, usize)>, StoreError> {
        let cf = self.cf(CF_SERVICE_DATA)?;
        let start = service_key(name, prefix.as_bytes());
        let mut entries = Vec::new();
        let mode = IteratorMode::From(&start, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(cf, mode) {
            let (key, value) = item?;
            if !key.starts_with(&start) {
                break;
            }
            let key = &key[name.len() + 1..];
            entries.push((String::from_utf8_lossy(key).into_owned(), value.len()));
        }
        Ok(entries)
    }

    /// Syncs the WAL to disk (used at shutdown and periodically when
    /// `sync_writes` is off).
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Value;
    use crate::thing::Kind;
    use proptest::prelude::*;

    fn id(s: &str) -> ThingId {
        ThingId::parse(s).unwrap()
    }

    fn tr(thing: &ThingId, t: u64, v: f64) -> ThingReading {
        ThingReading {
            thing: thing.clone(),
            reading: Reading {
                time: Timestamp(t),
                value: Value::Number(v),
            },
        }
    }

    proptest! {
        #[test]
        fn key_order_is_time_order(a in any::<u64>(), b in any::<u64>()) {
            let thing = id("g.a.d.r");
            prop_assert_eq!(reading_key(&thing, Timestamp(a)).cmp(&reading_key(&thing, Timestamp(b))), a.cmp(&b));
        }

        #[test]
        fn keys_of_different_things_never_interleave(
            x in "[a-z0-9_-]{1,6}", y in "[a-z0-9_-]{1,6}", t1 in any::<u64>(), t2 in any::<u64>(), t3 in any::<u64>()
        ) {
            prop_assume!(x != y);
            let (a, b) = (id(&format!("g.a.d.{x}")), id(&format!("g.a.d.{y}")));
            let (a1, a2) = (reading_key(&a, Timestamp(t1.min(t2))), reading_key(&a, Timestamp(t1.max(t2))));
            let b3 = reading_key(&b, Timestamp(t3));
            prop_assert!(!(a1 < b3 && b3 < a2), "another thing's key fell inside a range");
            prop_assert!(a1.as_slice() >= id_prefix(a.as_str().as_bytes()).as_slice());
            prop_assert!(a2.as_slice() < id_prefix_end(a.as_str().as_bytes()).as_slice());
        }

        #[test]
        fn keys_parse_back(t in any::<u64>(), r in "[a-z0-9_-]{1,10}") {
            let thing = id(&format!("g.a.d.{r}"));
            let key = reading_key(&thing, Timestamp(t));
            let (raw, time) = parse_reading_key(&key).unwrap();
            prop_assert_eq!(raw, thing.as_str().as_bytes());
            prop_assert_eq!(time, Timestamp(t));
        }

        #[test]
        fn key_parser_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            let _ = parse_reading_key(&bytes);
        }
    }

    #[test]
    fn history_ranges_limits_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let a = id("g.a.d.x");
        let ab = id("g.a.d.x-b"); // shares a textual prefix with `a`
        let rs: Vec<_> = (1..=10)
            .map(|t| tr(&a, t, t as f64))
            .chain([tr(&ab, 5, 99.0)])
            .collect();
        store.append(&rs).unwrap();
        let times = |window: Window| -> Vec<u64> {
            store
                .history(&a, window)
                .unwrap()
                .iter()
                .map(|r| r.time.0)
                .collect()
        };
        let between = Window {
            from: Timestamp(3),
            to: Timestamp(6),
            ..Window::ALL
        };
        assert_eq!(times(between), vec![3, 4, 5, 6]);
        assert_eq!(
            times(Window {
                limit: 3,
                ..Window::ALL
            }),
            vec![1, 2, 3]
        );
        assert_eq!(times(Window::newest(3)), vec![8, 9, 10]);
        assert_eq!(store.latest(&a).unwrap().unwrap().time, Timestamp(10));
        assert_eq!(
            store.latest(&ab).unwrap().unwrap().value,
            Value::Number(99.0)
        );
        // The same time again replaces, never duplicates.
        store.append(&[tr(&a, 10, 42.0)]).unwrap();
        let all = store.history(&a, Window::ALL).unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[9].value, Value::Number(42.0));
    }

    #[test]
    fn things_and_history_survive_reopen_and_delete_removes_both() {
        let dir = tempfile::tempdir().unwrap();
        let a = id("g.sim.d.temperature");
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            store
                .put_thing(&ThingService::new(
                    a.clone(),
                    Kind::Sensor,
                    "temperature",
                    Some("Cel"),
                ))
                .unwrap();
            store.append(&[tr(&a, 7, 21.5)]).unwrap();
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let things = store.load_things().unwrap();
        assert_eq!(things.len(), 1);
        assert_eq!(things[0].unit.as_deref(), Some("Cel"));
        assert_eq!(
            store.latest(&a).unwrap().unwrap().value,
            Value::Number(21.5)
        );
        store.delete_thing(&a).unwrap();
        assert!(store.load_things().unwrap().is_empty());
        assert!(store.latest(&a).unwrap().is_none());
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let second = Store::open(dir.path(), &StoreOptions::default());
        assert!(matches!(second, Err(StoreError::Open { .. })));
    }

    #[test]
    fn retention_by_age_cuts_every_thing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let (a, b) = (id("g.a.d.x"), id("g.a.e.y"));
        let secs = 1_000_000;
        let rs: Vec<_> = (0..100)
            .flat_map(|t| [tr(&a, t * secs, 1.0), tr(&b, t * secs, 2.0)])
            .collect();
        store.append(&rs).unwrap();
        let retention = Retention {
            max_age: Some(Duration::from_secs(10)),
            max_bytes: None,
        };
        let report = store
            .enforce_retention(&retention, Timestamp(99 * secs))
            .unwrap();
        assert_eq!(report.cutoff, Some(Timestamp(89 * secs)));
        for thing in [&a, &b] {
            let left = store.history(thing, Window::ALL).unwrap();
            assert_eq!(left.len(), 11, "readings 89..=99 remain");
            assert_eq!(left[0].time, Timestamp(89 * secs));
        }
    }

    #[test]
    fn retention_by_size_drops_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let things: Vec<ThingId> = (0..4).map(|n| id(&format!("g.a.d.r{n}"))).collect();
        // Incompressible values so the size is predictable.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for chunk in 0..20u64 {
            let rs: Vec<_> = (0..5_000u64)
                .flat_map(|i| {
                    let t = chunk * 5_000 + i;
                    things
                        .iter()
                        .map(move |thing| (thing.clone(), t))
                        .collect::<Vec<_>>()
                })
                .map(|(thing, t)| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    tr(&thing, t, f64::from_bits(seed >> 2))
                })
                .collect();
            store.append(&rs).unwrap();
        }
        store.compact_readings().unwrap();
        let full = store.readings_bytes().unwrap();
        let limit = full / 2;
        let report = store
            .enforce_retention(
                &Retention {
                    max_age: None,
                    max_bytes: Some(limit),
                },
                Timestamp(0),
            )
            .unwrap();
        assert!(report.bytes_after <= limit, "{report:?}");
        let cutoff = report.cutoff.unwrap();
        for thing in &things {
            let left = store.history(thing, Window::ALL).unwrap();
            assert_eq!(
                left.first().unwrap().time,
                cutoff,
                "oldest readings went first"
            );
            assert_eq!(
                left.last().unwrap().time,
                Timestamp(99_999),
                "newest readings stay"
            );
        }
    }

    #[test]
    fn services_and_their_data_are_kept_apart_and_removed_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        store.put_service("avg", b"r1", Some(b"c1")).unwrap();
        store.put_service("avg-b", b"r2", Some(b"c2")).unwrap();
        // An upgrade of the record alone keeps the component.
        store.put_service("avg", b"r1'", None).unwrap();
        store.put_service_value("avg", "count", b"7").unwrap();
        store.put_service_value("avg", "co", b"x").unwrap();
        store.put_service_value("avg-b", "count", b"8").unwrap();
        let all = store.load_services().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (
                all[0].name.as_str(),
                &all[0].record[..],
                &all[0].component[..]
            ),
            ("avg", &b"r1'"[..], &b"c1"[..])
        );
        assert_eq!(
            store.service_value("avg", "count").unwrap(),
            Some(b"7".to_vec())
        );
        assert_eq!(
            store.service_entries("avg", "co").unwrap(),
            vec![("co".to_owned(), 1), ("count".to_owned(), 1)]
        );
        store.delete_service_value("avg", "co").unwrap();
        store.delete_service("avg").unwrap();
        assert_eq!(store.load_services().unwrap().len(), 1);
        assert_eq!(store.service_value("avg", "count").unwrap(), None);
        assert_eq!(
            store.service_value("avg-b", "count").unwrap(),
            Some(b"8".to_vec())
        );
    }
}
