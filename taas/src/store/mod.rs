//! Durable state in RocksDB: the catalog of thing services and the history
//! of their readings.
//!
//! Column families:
//! - `things`: thing id → the thing service as JSON (few, small, rarely written);
//! - `readings`: [`reading_key`](keys::reading_key) (thing id, 0x00, big-endian µs timestamp)
//!   → the value in [`crate::reading::codec`] form. All readings of one thing
//!   are contiguous and time-ordered, so a history query is one range scan
//!   and a retention cut is one range delete per thing. A reading written
//!   twice with the same time overwrites itself: redeliveries never
//!   duplicate history;
//! - `meta`: the store's format (see [`format`]) and other small facts;
//! - `receipts`: record number → the receipts (delivery slot, content
//!   fingerprint) of deliveries stored but not yet acknowledged to their
//!   sender, one record per write, so that a redelivery after a crash is
//!   recognised (see [`receipts`] and [`crate::Hub::ingest_once`]).
//!
//! Every write goes through the WAL before it returns, so a reading the
//! gateway acknowledged survives a killed process (and, with `sync_writes`,
//! a power cut).
//!
//! - `layer_state`: `{space} 0x00 {key}` → bytes the layers above keep
//!   (federation's addresses, registries and requests), opaque here.
//!
//! One module per column family's job — [`things`], [`readings`],
//! [`receipts`], [`retention`], [`services`], [`state`] — and
//! [`keys`], the key layouts they share.

mod format;
mod keys;
mod readings;
pub mod receipts;
mod retention;
mod services;
mod state;
#[cfg(test)]
mod tests;
mod things;

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteOptions,
};

pub use format::{FORMAT, RELEASE};
pub use keys::{parse_reading_key, reading_key};
pub use readings::Window;
pub use retention::{Retention, RetentionReport, StoreMemory};
pub use services::StoredService;

pub(crate) const CF_THINGS: &str = "things";
pub(crate) const CF_READINGS: &str = "readings";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_RECEIPTS: &str = "receipts";
/// Extended services: `{name} 0x00 record|component`, opaque to this crate.
pub(crate) const CF_SERVICES: &str = "services";
/// Each extended service's key-value store: `{name} 0x00 {key}`.
pub(crate) const CF_SERVICE_DATA: &str = "service_data";
/// The layers above taas: `{space} 0x00 {key}`.
pub(crate) const CF_LAYER_STATE: &str = "layer_state";
const ALL_COLUMN_FAMILIES: [&str; 7] = [
    CF_THINGS,
    CF_READINGS,
    CF_META,
    CF_RECEIPTS,
    CF_SERVICES,
    CF_SERVICE_DATA,
    CF_LAYER_STATE,
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}{}", lock_hint(.source))]
    Open {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error(
        "the store at {path} has format {found}, written by fogbank {written_by}; this fogbank \
         ({release}) reads formats up to {supported}: run fogbank {written_by} or newer on it, \
         or restore a backup this release made"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        written_by: String,
        release: &'static str,
        supported: u32,
    },
    #[error("the store at {path} records a format that is not a number: {found:?}")]
    UnreadableFormat { path: PathBuf, found: String },
    #[error("store operation failed: {0}")]
    Io(#[from] rocksdb::Error),
    /// A write failed for the disk's sake and no write is taken until the
    /// store is reopened: the first failure's message.
    #[error("{}", halted(.0))]
    Halted(String),
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

/// Whether a failed write's message is ENOSPC's (RocksDB's I/O errors
/// carry the OS's text, not its number).
fn disk_full(reason: &str) -> bool {
    reason.contains("No space left")
}

fn halted(reason: &str) -> String {
    if disk_full(reason) {
        format!(
            "the disk of the data directory is full: no writes are taken until space is freed \
             (the gateway then restarts to reopen its store); {reason}"
        )
    } else {
        format!("writes are halted after an I/O error; restart the gateway: {reason}")
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

pub struct Store {
    db: DB,
    path: PathBuf,
    write_options: WriteOptions,
    /// Set by the first write that failed for the disk's sake (full, or an
    /// I/O error): the reason. RocksDB 7 keeps its write-ahead log's writer
    /// broken after a failed append — every later write fails the same
    /// way, and an assertion-enabled build (Debian's librocksdb) aborts on
    /// one — so no write reaches RocksDB again in this process. Reads go
    /// on; the store is reopened (the gateway restarts) to write again.
    halted: std::sync::OnceLock<String>,
}

/// Why writes are halted, as [`Store::halted`] tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    /// The disk of the data directory is full.
    DiskFull,
    /// Another I/O error: the message.
    Io(String),
}

impl Store {
    /// Writes `batch`, or refuses it without touching RocksDB once a write
    /// has failed (see `halted`).
    fn write(&self, batch: rocksdb::WriteBatch) -> Result<(), StoreError> {
        self.refuse_if_halted()?;
        self.db.write_opt(batch, &self.write_options).map_err(|error| {
            if error.kind() == rocksdb::ErrorKind::IOError {
                let reason = error.to_string();
                tracing::error!(%reason, path = %self.path.display(), "a write to the store failed: writes are halted until the store is reopened");
                let _ = self.halted.set(reason.clone());
                return StoreError::Halted(reason);
            }
            StoreError::Io(error)
        })
    }

    /// The error of a halted store, for anything that would write to disk.
    pub(crate) fn refuse_if_halted(&self) -> Result<(), StoreError> {
        match self.halted.get() {
            Some(reason) => Err(StoreError::Halted(reason.clone())),
            None => Ok(()),
        }
    }

    /// Whether writes are halted, and why: `None` while the store writes.
    pub fn halted(&self) -> Option<Halt> {
        let reason = self.halted.get()?;
        Some(if disk_full(reason) {
            Halt::DiskFull
        } else {
            Halt::Io(reason.clone())
        })
    }

    /// A consistent copy of the store, taken while it runs: a RocksDB
    /// checkpoint at `to` (which must not exist yet), hard links where it
    /// shares a file system with the store. Every write acknowledged before
    /// the call is in it (the checkpoint carries the write-ahead log); it
    /// opens as a store of its own.
    pub fn checkpoint(&self, to: &Path) -> Result<(), StoreError> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(to)?;
        Ok(())
    }

    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.increase_parallelism(2);
        db_options.set_max_background_jobs(2);
        db_options.set_keep_log_file_num(3);
        db_options.set_max_total_wal_size(64 << 20);
        db_options.set_max_open_files(256);

        // One block cache for every column family, and the tables' index
        // and filter blocks in it: left outside, they grow with the number
        // and size of the tables, a resident size that climbs for as long
        // as the history does (seen in the ten-minute soak).
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(options.cache_bytes)?);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let mut readings = Options::default();
        readings.set_block_based_table_factory(&table);
        readings.set_write_buffer_size(16 << 20);
        readings.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut small = Options::default();
        small.set_block_based_table_factory(&table);
        small.set_write_buffer_size(1 << 20);

        let descriptors = vec![
            ColumnFamilyDescriptor::new(CF_THINGS, small.clone()),
            ColumnFamilyDescriptor::new(CF_READINGS, readings),
            ColumnFamilyDescriptor::new(CF_META, small.clone()),
            ColumnFamilyDescriptor::new(CF_RECEIPTS, small.clone()),
            ColumnFamilyDescriptor::new(CF_SERVICES, small.clone()),
            ColumnFamilyDescriptor::new(CF_SERVICE_DATA, small.clone()),
            ColumnFamilyDescriptor::new(CF_LAYER_STATE, small),
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
            halted: std::sync::OnceLock::new(),
        };
        store.settle_format()?;
        Ok(store)
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or(StoreError::MissingColumnFamily(name))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs the WAL to disk (used at shutdown and periodically when
    /// `sync_writes` is off).
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        self.refuse_if_halted()?;
        self.db.flush_wal(true)?;
        Ok(())
    }
}
