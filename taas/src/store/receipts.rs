//! The `receipts` column family: what makes a repeated delivery
//! recognisable after a crash.
//!
//! A receipt is a delivery slot (a sender's session and message id) and
//! the fingerprint of what arrived in it, kept from the write that stored
//! the delivery until its sender has the acknowledgement. Receipts are kept
//! in *records*, one per write that brought any: key the record's number
//! (8 bytes, big-endian, so records iterate in the order they were
//! written), value its receipts. A burst of QoS 1 publishes thus costs one
//! put for all its receipts, and once they are all acknowledged one delete,
//! instead of a put and a delete per message — which were two of the three
//! memtable insertions of each message.
//!
//! A record whose receipts are partly acknowledged is written again with
//! the rest. Which receipts live where is the hub's bookkeeping
//! (`hub::receipts`); here only the layout.
//!
//! Value: for each receipt, `slot length (u16 BE) ‖ slot ‖ fingerprint
//! length (u16 BE) ‖ fingerprint`.

use rocksdb::{IteratorMode, WriteBatch};

use super::{CF_RECEIPTS, Store, StoreError};

/// A receipt as stored: delivery slot and content fingerprint.
pub type StoredReceipt = (Vec<u8>, Vec<u8>);

/// Changes to the receipt records, applied in the same batch as the
/// readings they go with.
#[derive(Debug, Default, Clone)]
pub struct ReceiptWrites {
    /// Records written whole: number and encoded receipts.
    pub puts: Vec<(u64, Vec<u8>)>,
    /// Records whose receipts are all acknowledged.
    pub deletes: Vec<u64>,
}

impl ReceiptWrites {
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// The value of a record holding `receipts` (slot, fingerprint).
pub fn encode_record<'a>(receipts: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut value = Vec::new();
    for (slot, fingerprint) in receipts {
        for part in [slot, fingerprint] {
            // Slots and fingerprints are short (an MQTT client id and a
            // packet id; eight bytes): a longer one is cut, never wrapped.
            let part = &part[..part.len().min(usize::from(u16::MAX))];
            value.extend_from_slice(&(part.len() as u16).to_be_bytes());
            value.extend_from_slice(part);
        }
    }
    value
}

/// The receipts of a record's value; `None` if it is not one.
pub fn decode_record(mut value: &[u8]) -> Option<Vec<StoredReceipt>> {
    let mut receipts = Vec::new();
    let part = |value: &mut &[u8]| {
        let (length, rest) = value.split_first_chunk::<2>()?;
        let length = usize::from(u16::from_be_bytes(*length));
        let part = rest.get(..length)?.to_vec();
        *value = &rest[length..];
        Some(part)
    };
    while !value.is_empty() {
        let slot = part(&mut value)?;
        let fingerprint = part(&mut value)?;
        receipts.push((slot, fingerprint));
    }
    Some(receipts)
}

impl Store {
    /// Every receipt record, oldest first. One whose value is unreadable
    /// is said and given as holding nothing, so that the hub's next write
    /// deletes it; a key that is no record number is said and left.
    pub fn load_receipts(&self) -> Result<Vec<(u64, Vec<StoredReceipt>)>, StoreError> {
        let cf = self.cf(CF_RECEIPTS)?;
        let mut records = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item?;
            let number = <[u8; 8]>::try_from(&key[..]).ok().map(u64::from_be_bytes);
            let Some(number) = number else {
                tracing::warn!(key = ?key, "skipping a receipt record whose key is not a number");
                continue;
            };
            let receipts = decode_record(&value).unwrap_or_else(|| {
                tracing::warn!(
                    number,
                    "an unreadable receipt record: dropped at the next write"
                );
                Vec::new()
            });
            records.push((number, receipts));
        }
        Ok(records)
    }

    /// The fingerprint stored for a delivery slot, if any: the newest
    /// record's that names it. Reads every record; the hub keeps its own
    /// index, this is for checking what is on disk.
    pub fn receipt(&self, slot: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .load_receipts()?
            .into_iter()
            .rev()
            .find_map(|(_, receipts)| receipts.into_iter().find(|(s, _)| s == slot))
            .map(|(_, fingerprint)| fingerprint))
    }

    /// Writes receipt changes on their own (acknowledgements with no
    /// readings to go with).
    pub fn write_receipts(&self, writes: &ReceiptWrites) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        self.add_receipt_writes(&mut batch, writes)?;
        self.write(batch)
    }

    pub(super) fn add_receipt_writes(
        &self,
        batch: &mut WriteBatch,
        writes: &ReceiptWrites,
    ) -> Result<(), StoreError> {
        let cf = self.cf(CF_RECEIPTS)?;
        for number in &writes.deletes {
            batch.delete_cf(cf, number.to_be_bytes());
        }
        for (number, value) in &writes.puts {
            batch.put_cf(cf, number.to_be_bytes(), value);
        }
        Ok(())
    }

    /// Formats 1 and 2 kept one key per slot (slot → fingerprint):
    /// gathered into record 0 in `batch`, the batch that also writes the
    /// new format.
    pub(super) fn upgrade_receipts(&self, batch: &mut WriteBatch) -> Result<(), StoreError> {
        let cf = self.cf(CF_RECEIPTS)?;
        let mut receipts = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (slot, fingerprint) = item?;
            batch.delete_cf(cf, &slot);
            receipts.push((slot.into_vec(), fingerprint.into_vec()));
        }
        if !receipts.is_empty() {
            let record = encode_record(receipts.iter().map(|(s, f)| (&s[..], &f[..])));
            batch.put_cf(cf, 0u64.to_be_bytes(), record);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn records_decode_to_what_was_encoded(
            receipts in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..64), proptest::collection::vec(any::<u8>(), 0..16)),
                0..32,
            )
        ) {
            let value = encode_record(receipts.iter().map(|(s, f)| (&s[..], &f[..])));
            prop_assert_eq!(decode_record(&value), Some(receipts));
        }

        #[test]
        fn any_bytes_decode_or_are_refused_without_panic(value in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_record(&value);
        }
    }

    #[test]
    fn a_truncated_record_is_refused() {
        let value = encode_record([(b"mqtt/a/1".as_slice(), b"12345678".as_slice())]);
        assert_eq!(decode_record(&value[..value.len() - 1]), None);
        assert_eq!(decode_record(&value[..1]), None);
    }
}
