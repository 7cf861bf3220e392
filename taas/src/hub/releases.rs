//! Receipts of acknowledged deliveries, forgotten with the next write.
//!
//! A QoS 1 publish costs a put of its readings and of its receipt, in its
//! burst's batch, and once the device has the acknowledgement a delete of
//! the receipt. Written on its own, that delete was a second WAL append
//! per burst. So a release waits here and rides in the next burst's batch
//! (deletes first: a slot the device reuses within that burst keeps its
//! new receipt). When no burst comes, a flush writes what waits after at
//! most [`FLUSH_AFTER`], so that a crash of an idle gateway leaves no
//! more stale receipts behind than it did when each release was written
//! at once.
//!
//! While a release waits its slot counts as empty: a repeat arriving in
//! it is a new delivery (the sender had the acknowledgement of the old
//! one), exactly as once the delete is written.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::Hub;
use crate::store::StoreError;

/// How long a release waits for a burst to ride with.
pub(super) const FLUSH_AFTER: Duration = Duration::from_millis(20);

/// Past this many waiting releases they are written at once: the set
/// stays small even when the acknowledgements outrun the bursts.
const MOST_WAITING: usize = 4096;

/// Released slots not yet deleted from the store.
#[derive(Default)]
pub(super) struct PendingReleases {
    slots: Mutex<HashSet<Vec<u8>>>,
    /// A flush is scheduled: at most one at a time.
    flush_armed: AtomicBool,
}

impl PendingReleases {
    /// Whether `slot` was released and its delete is still waiting.
    pub(super) fn contains(&self, slot: &[u8]) -> bool {
        self.slots.lock().contains(slot)
    }

    /// Everything that waits, for a batch that deletes it.
    pub(super) fn take(&self) -> HashSet<Vec<u8>> {
        std::mem::take(&mut *self.slots.lock())
    }

    /// Puts back what a failed batch was to delete.
    pub(super) fn restore(&self, slots: HashSet<Vec<u8>>) {
        if !slots.is_empty() {
            self.slots.lock().extend(slots);
        }
    }
}

impl Hub {
    /// Forgets a receipt whose delivery has been acknowledged.
    pub fn release(self: &Arc<Self>, slot: &[u8]) -> Result<(), StoreError> {
        self.release_all([slot])
    }

    /// Forgets the receipts of acknowledged deliveries: their deletes go
    /// with the next write of readings, or on their own within
    /// [`FLUSH_AFTER`]. Outside a tokio runtime they are written at once.
    pub fn release_all<'a>(
        self: &Arc<Self>,
        slots: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), StoreError> {
        let waiting = {
            let mut pending = self.releases.slots.lock();
            pending.extend(slots.into_iter().map(<[u8]>::to_vec));
            pending.len()
        };
        if waiting == 0 {
            return Ok(());
        }
        let runtime = tokio::runtime::Handle::try_current();
        if waiting >= MOST_WAITING || runtime.is_err() {
            return self.flush_releases();
        }
        if let Ok(runtime) = runtime
            && !self.releases.flush_armed.swap(true, Ordering::AcqRel)
        {
            // Weak: a waiting flush must not keep the store open.
            let hub = Arc::downgrade(self);
            runtime.spawn(async move {
                tokio::time::sleep(FLUSH_AFTER).await;
                let Some(hub) = hub.upgrade() else { return };
                hub.releases.flush_armed.store(false, Ordering::Release);
                if let Err(error) = hub.flush_releases() {
                    // Kept, and tried again with the next write or release.
                    tracing::warn!(%error, "cannot forget acknowledged receipts");
                }
            });
        }
        Ok(())
    }

    /// Writes the deletes of every waiting release now.
    pub fn flush_releases(&self) -> Result<(), StoreError> {
        let slots = self.releases.take();
        if slots.is_empty() {
            return Ok(());
        }
        self.store
            .clear_receipts(slots.iter().map(Vec::as_slice))
            .inspect_err(|_| self.releases.restore(slots))
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
