//! How long history is kept: readings older than a maximum age, then the
//! oldest across all things until the history fits a size, cut with one
//! range delete per thing.

use std::time::Duration;

use rocksdb::WriteBatch;

use super::keys::{id_prefix, id_prefix_end, parse_reading_key};
use super::{ALL_COLUMN_FAMILIES, CF_READINGS, Store, StoreError};
use crate::reading::Timestamp;

/// How long history is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// Bytes the store holds in memory, by kind (see [`Store::memory`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreMemory {
    /// Write buffers, the active ones and those waiting for their flush.
    pub memtables: u64,
    /// Index and filter blocks of open tables held outside the block
    /// cache (none while the cache holds them).
    pub table_readers: u64,
    /// The block cache, bounded by `StoreOptions::cache_bytes`.
    pub block_cache: u64,
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Readings older than this were deleted (none if `None`).
    pub cutoff: Option<Timestamp>,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Store {
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

    /// What the store holds in memory, summed over its column families:
    /// RocksDB allocates these outside the process's other accounting, and
    /// an operator watching the resident size needs to tell them apart.
    pub fn memory(&self) -> Result<StoreMemory, StoreError> {
        let mut memory = StoreMemory::default();
        for name in ALL_COLUMN_FAMILIES {
            let cf = self.cf(name)?;
            let property = |name: &str| -> Result<u64, StoreError> {
                Ok(self.db.property_int_value_cf(cf, name)?.unwrap_or(0))
            };
            memory.memtables += property("rocksdb.cur-size-all-mem-tables")?;
            memory.table_readers += property("rocksdb.estimate-table-readers-mem")?;
            // One cache shared by every family: the same figure from each.
            memory.block_cache = property("rocksdb.block-cache-usage")?;
        }
        Ok(memory)
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
        self.write(batch)?;
        Ok(())
    }

    pub(super) fn compact_readings(&self) -> Result<(), StoreError> {
        self.refuse_if_halted()?;
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
}
