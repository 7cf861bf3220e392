//! The receipts of deliveries stored but not yet acknowledged: which are
//! live, in which stored record, and what the next write must change.
//!
//! A delivery its sender may repeat (MQTT QoS 1) carries a receipt: its
//! slot (session and packet id) and a fingerprint of its content. The
//! receipts of one write go into one record ([`crate::store::receipts`]),
//! in the same batch as the readings. An acknowledgement *releases* a
//! receipt: from then on its slot is free (a repeat in it is a new
//! delivery), and its record has to lose it — written again with the
//! receipts it still holds, or deleted once it holds none. Those changes
//! wait for the next write of readings and go in its batch (a release
//! written on its own was a second WAL append per burst); when no write
//! comes, a flush writes them within [`FLUSH_AFTER`], so that a crash of
//! an idle gateway leaves no more released receipts on disk than it did
//! when each release was written at once.
//!
//! The book lives in memory and is the truth for the running hub: a
//! repeat is recognised without a read of the store. It is rebuilt from
//! the records when the hub opens.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use super::Hub;
use crate::store::receipts::{ReceiptWrites, encode_record};
use crate::store::{Store, StoreError};

/// How long released receipts wait for a write to ride with.
pub(super) const FLUSH_AFTER: Duration = Duration::from_millis(20);

/// Past this many records waiting to be rewritten, they are written at
/// once: the work stays small even when acknowledgements outrun writes.
const MOST_WAITING: usize = 4096;

type Slot = Arc<[u8]>;

/// A receipt: its slot and the fingerprint of what arrived in it.
type Entry = (Slot, Vec<u8>);

/// The live receipts and the records that hold them.
///
/// Kept to few hash lookups per receipt (one when it is planned, one when
/// it is taken, one when it is released, one when its record is written
/// again): a QoS 1 burst passes through here once per message.
#[derive(Default)]
pub(super) struct Book {
    /// Slot → the record holding its receipt, and the fingerprint.
    live: HashMap<Slot, (u64, Vec<u8>)>,
    /// Record → the slots it was written with. Those whose live receipt
    /// is now another record's, or none, are no longer its.
    records: HashMap<u64, Vec<Slot>>,
    /// Records that lost receipts since they were last written.
    changed: BTreeSet<u64>,
    /// The number of the next record.
    next: u64,
}

/// A write's changes to the book, applied once the write succeeded.
pub(super) struct Plan {
    pub(super) writes: ReceiptWrites,
    /// The new record's number and receipts, if the write brings any.
    new: Option<(u64, Vec<Entry>)>,
}

impl Book {
    /// Whether `slot` holds a live receipt of exactly this content.
    pub(super) fn holds(&self, slot: &[u8], fingerprint: &[u8]) -> bool {
        self.live
            .get(slot)
            .is_some_and(|(_, stored)| stored == fingerprint)
    }

    /// What a write bringing `receipts` must change in the store: a new
    /// record for them, and every record that lost receipts — to releases
    /// since the last write, or to a slot of `receipts` taken anew —
    /// written again or deleted.
    pub(super) fn plan<'a>(
        &self,
        receipts: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Plan {
        let new: Vec<Entry> = receipts
            .into_iter()
            .map(|(slot, fingerprint)| (Slot::from(slot), fingerprint.to_vec()))
            .collect();
        // Slots taken again while their receipt is live (a sender that
        // reused a packet id it had no acknowledgement for): rare, so
        // usually empty, and then nothing is allocated for it.
        let retaken: HashSet<&[u8]> = new
            .iter()
            .filter(|(slot, _)| self.live.contains_key(slot))
            .map(|(slot, _)| &slot[..])
            .collect();
        let mut touched = self.changed.clone();
        touched.extend(
            retaken
                .iter()
                .filter_map(|slot| Some(self.live.get(*slot)?.0)),
        );
        let mut writes = ReceiptWrites::default();
        for record in touched {
            let kept: Vec<(&[u8], &[u8])> = self
                .records
                .get(&record)
                .into_iter()
                .flatten()
                .filter(|slot| !retaken.contains(&slot[..]))
                .filter_map(|slot| match self.live.get(slot) {
                    Some((holder, fingerprint)) if *holder == record => {
                        Some((&slot[..], &fingerprint[..]))
                    }
                    _ => None,
                })
                .collect();
            if kept.is_empty() {
                writes.deletes.push(record);
            } else {
                writes.puts.push((record, encode_record(kept)));
            }
        }
        let new = (!new.is_empty()).then(|| {
            let record = encode_record(new.iter().map(|(s, f)| (&s[..], &f[..])));
            writes.puts.push((self.next, record));
            (self.next, new)
        });
        Plan { writes, new }
    }

    /// The store now holds what `plan` wrote.
    pub(super) fn commit(&mut self, plan: Plan) {
        self.changed.clear();
        for record in &plan.writes.deletes {
            self.records.remove(record);
        }
        if let Some((number, receipts)) = plan.new {
            // The records it displaced slots from were in the plan.
            self.take(number, receipts);
        }
    }

    /// Record `number` holds `receipts`, newer than every record before
    /// (of a slot named twice, the later); returns the records that lost a
    /// slot to it.
    fn take(&mut self, number: u64, receipts: impl IntoIterator<Item = Entry>) -> Vec<u64> {
        let mut displaced = Vec::new();
        let mut slots = Vec::new();
        for (slot, fingerprint) in receipts {
            match self.live.insert(slot.clone(), (number, fingerprint)) {
                Some((old, _)) if old == number => continue,
                Some((old, _)) => displaced.push(old),
                None => {}
            }
            slots.push(slot);
        }
        self.records.insert(number, slots);
        self.next = self.next.max(number + 1);
        displaced
    }

    /// Frees `slots`; returns how many records now wait to be rewritten.
    fn release<'a>(&mut self, slots: impl IntoIterator<Item = &'a [u8]>) -> usize {
        for slot in slots {
            if let Some((record, _)) = self.live.remove(slot) {
                self.changed.insert(record);
            }
        }
        self.changed.len()
    }

    /// Whether a write would have anything of the book's to carry.
    pub(super) fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// The book of the records in `store`. A slot named by several records
    /// is the newest's; the older ones, and any that hold nothing, are
    /// written again by the next write.
    fn load(store: &Store) -> Result<Self, StoreError> {
        let mut book = Book::default();
        for (number, receipts) in store.load_receipts()? {
            let receipts = receipts
                .into_iter()
                .map(|(slot, fingerprint)| (Slot::from(slot), fingerprint));
            let displaced = book.take(number, receipts);
            book.changed.extend(displaced);
        }
        let empty = book.records.iter().filter(|(_, slots)| slots.is_empty());
        book.changed.extend(empty.map(|(number, _)| *number));
        Ok(book)
    }
}

/// The book, and whether a flush of its changes is scheduled.
pub(super) struct Receipts {
    book: Mutex<Book>,
    flush_armed: AtomicBool,
}

impl Receipts {
    pub(super) fn load(store: &Store) -> Result<Self, StoreError> {
        Ok(Receipts {
            book: Mutex::new(Book::load(store)?),
            flush_armed: AtomicBool::new(false),
        })
    }

    /// The book, held across a write so that what it plans is what the
    /// store then holds.
    pub(super) fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock()
    }
}

impl Hub {
    /// Forgets a receipt whose delivery has been acknowledged.
    pub fn release(self: &Arc<Self>, slot: &[u8]) -> Result<(), StoreError> {
        self.release_all([slot])
    }

    /// Forgets the receipts of acknowledged deliveries: their slots are
    /// free at once; the store learns it with the next write of readings,
    /// or on its own within [`FLUSH_AFTER`]. Outside a tokio runtime it is
    /// written at once.
    pub fn release_all<'a>(
        self: &Arc<Self>,
        slots: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), StoreError> {
        let waiting = self.receipts.book().release(slots);
        if waiting == 0 {
            return Ok(());
        }
        let runtime = tokio::runtime::Handle::try_current();
        if waiting >= MOST_WAITING || runtime.is_err() {
            return self.flush_releases();
        }
        if let Ok(runtime) = runtime
            && !self.receipts.flush_armed.swap(true, Ordering::AcqRel)
        {
            // Weak: a waiting flush must not keep the store open.
            let hub = Arc::downgrade(self);
            runtime.spawn(async move {
                tokio::time::sleep(FLUSH_AFTER).await;
                let Some(hub) = hub.upgrade() else { return };
                hub.receipts.flush_armed.store(false, Ordering::Release);
                if let Err(error) = hub.flush_releases() {
                    // Kept, and tried again with the next write or release.
                    tracing::warn!(%error, "cannot forget acknowledged receipts");
                }
            });
        }
        Ok(())
    }

    /// Writes what releases changed in the receipt records now.
    pub fn flush_releases(&self) -> Result<(), StoreError> {
        let mut book = self.receipts.book();
        if !book.has_changes() {
            return Ok(());
        }
        let plan = book.plan([]);
        self.store.write_receipts(&plan.writes)?;
        book.commit(plan);
        Ok(())
    }
}

impl Drop for Hub {
    /// What waits is written as the hub goes, so a restart finds the
    /// acknowledged slots free.
    fn drop(&mut self) {
        if let Err(error) = self.flush_releases() {
            tracing::warn!(%error, "cannot forget acknowledged receipts at close");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A book after `writes` (each the receipts of one write), then
    /// `released`; with what each write put and deleted.
    fn book_after(writes: &[&[(&str, &str)]], released: &[&str]) -> (Book, Vec<ReceiptWrites>) {
        let mut book = Book::default();
        let mut written = Vec::new();
        for receipts in writes {
            let plan = book.plan(receipts.iter().map(|(s, f)| (s.as_bytes(), f.as_bytes())));
            written.push(plan.writes.clone());
            book.commit(plan);
        }
        book.release(released.iter().map(|s| s.as_bytes()));
        (book, written)
    }

    #[test]
    fn a_write_puts_one_record_for_all_its_receipts() {
        let (book, written) = book_after(&[&[("a/1", "x"), ("a/2", "y")]], &[]);
        assert_eq!(written[0].puts.len(), 1);
        assert!(written[0].deletes.is_empty());
        assert!(book.holds(b"a/1", b"x"));
        assert!(!book.holds(b"a/1", b"y"));
        assert!(!book.has_changes());
    }

    #[test]
    fn a_record_all_released_is_deleted_and_a_partly_released_one_rewritten() {
        let (book, _) = book_after(
            &[&[("a/1", "x"), ("a/2", "y")], &[("a/3", "z")]],
            &["a/1", "a/3"],
        );
        assert!(!book.holds(b"a/1", b"x"), "a released slot is free at once");
        let plan = book.plan([]);
        assert_eq!(plan.writes.deletes, vec![1]);
        assert_eq!(plan.writes.puts.len(), 1);
        let (number, value) = &plan.writes.puts[0];
        assert_eq!(*number, 0);
        assert_eq!(
            crate::store::receipts::decode_record(value),
            Some(vec![(b"a/2".to_vec(), b"y".to_vec())])
        );
    }

    #[test]
    fn a_slot_taken_anew_leaves_its_old_record() {
        let (mut book, _) = book_after(&[&[("a/1", "x"), ("a/2", "y")]], &[]);
        let plan = book.plan([(b"a/1".as_slice(), b"w".as_slice())]);
        // Record 0 keeps only a/2; record 1 holds the new a/1.
        assert_eq!(plan.writes.puts.len(), 2);
        book.commit(plan);
        assert!(book.holds(b"a/1", b"w"));
        assert!(book.holds(b"a/2", b"y"));
        book.release([b"a/2".as_slice()]);
        let plan = book.plan([]);
        assert_eq!(plan.writes.deletes, vec![0], "record 0 held nothing else");
    }

    #[test]
    fn a_slot_named_twice_in_one_write_is_the_later_and_counted_once() {
        let (mut book, written) = book_after(&[&[("a/1", "x"), ("a/1", "y")]], &[]);
        assert_eq!(written[0].puts.len(), 1);
        assert!(book.holds(b"a/1", b"y"));
        book.release([b"a/1".as_slice()]);
        assert!(!book.holds(b"a/1", b"y"));
        let plan = book.plan([]);
        assert_eq!(plan.writes.deletes, vec![0], "nothing of record 0 is live");
        assert!(plan.writes.puts.is_empty());
    }

    /// After a crash between a slot's reuse and the rewrite of its old
    /// record, two records name it: the newer wins, the older is rewritten.
    #[test]
    fn loading_gives_a_slot_named_twice_to_the_newer_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::default()).unwrap();
        let record = |receipts: &[(&str, &str)]| {
            encode_record(receipts.iter().map(|(s, f)| (s.as_bytes(), f.as_bytes())))
        };
        store
            .write_receipts(&ReceiptWrites {
                puts: vec![
                    (4, record(&[("a/1", "old"), ("a/2", "y")])),
                    (7, record(&[("a/1", "new")])),
                    (9, record(&[])),
                    (11, b"\x00\x09not".to_vec()),
                ],
                deletes: vec![],
            })
            .unwrap();
        let book = Book::load(&store).unwrap();
        assert!(book.holds(b"a/1", b"new"));
        assert!(book.holds(b"a/2", b"y"));
        assert_eq!(book.next, 12);
        let plan = book.plan([]);
        assert_eq!(
            plan.writes.deletes,
            vec![9, 11],
            "an empty record goes, and an unreadable one"
        );
        assert_eq!(
            plan.writes.puts,
            vec![(4, record(&[("a/2", "y")]))],
            "the older record loses a/1"
        );
    }
}
