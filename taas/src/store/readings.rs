//! The `readings` column family: the history. A burst's readings are
//! written in one batch with the receipt records of its deliveries
//! ([`super::receipts`]), so a reading and the receipt of its delivery
//! reach the WAL together or not at all.

use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::keys::{id_prefix_end, parse_reading_key, reading_key};
use super::receipts::ReceiptWrites;
use super::{CF_READINGS, Store, StoreError};
use crate::id::ThingId;
use crate::reading::{Reading, ThingReading, Timestamp, codec};

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

impl Store {
    /// Writes readings atomically: all or none reach the WAL.
    pub fn append(&self, readings: &[ThingReading]) -> Result<(), StoreError> {
        self.append_deliveries(&ReceiptWrites::default(), [readings])
    }

    /// Writes the readings of several deliveries and the changes to the
    /// receipt records that go with them in one atomic batch: one WAL
    /// append for all of them, so a reading and the receipt of its
    /// delivery are stored together or not at all.
    pub fn append_deliveries<'a>(
        &self,
        receipts: &ReceiptWrites,
        deliveries: impl IntoIterator<Item = &'a [ThingReading]>,
    ) -> Result<(), StoreError> {
        let readings_cf = self.cf(CF_READINGS)?;
        let mut batch = WriteBatch::default();
        self.add_receipt_writes(&mut batch, receipts)?;
        let mut value = Vec::with_capacity(16);
        for readings in deliveries {
            for r in readings {
                value.clear();
                codec::encode(&r.reading.value, &mut value);
                batch.put_cf(readings_cf, reading_key(&r.thing, r.reading.time), &value);
            }
        }
        self.write(batch)?;
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
}
