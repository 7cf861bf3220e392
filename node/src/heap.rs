//! The process's heap, shared by Rust's allocations and RocksDB's C++:
//! jemalloc, what it holds for `/metrics`, and giving back what it holds
//! free.
//!
//! Why jemalloc and not glibc's malloc: a reading is allocated on the
//! thread that receives it (the MQTT front door, a CoAP or HTTP worker)
//! and freed on the threads that pass it on (the local cloud's, the SSE
//! writers'). glibc returns such a free to the arena of the thread that
//! allocated it, under that arena's lock, and consolidates its fast bins
//! on the next large allocation: in a profile of the front door's thread
//! during a QoS 1 burst, malloc and free took a quarter of the thread.
//! With jemalloc, whose threads free into caches of their own, the same
//! gateway went from 2.9–3.4 to 2.1–2.2 µs of CPU per delivered reading,
//! and its QoS 1 rate from 260–330k to 358–373k messages/s (the cloud
//! bench's 1 M-message bursts across two gateways, runs minutes apart).
//! The allocator is linked with its `malloc` unprefixed, so RocksDB's
//! memtables, block cache and compaction buffers come from it too — one
//! heap, whose figures below cover both.
//!
//! jemalloc gives unused dirty pages back by itself as they age (after
//! 10 s by default), but only when the process allocates: [`give_back`],
//! run by the upkeep every [`TRIM_INTERVAL`], purges them on an idle
//! gateway too, so its resident size follows what it holds.

use std::time::Duration;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How often the upkeep gives free heap pages back to the system.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Bytes handed out and in use, and bytes freed but held in the arenas.
/// A resident size that climbs while `in_use` stays flat is the allocator
/// keeping what was freed, not something the gateway keeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct Heap {
    pub in_use: u64,
    pub free: u64,
}

/// The heap's figures: `in_use` what the gateway's allocations hold,
/// `free` what the allocator keeps resident beyond them (pages not yet
/// given back, partly used pages, its own metadata). `None` if the
/// allocator cannot tell.
pub fn heap() -> Option<Heap> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // The statistics are a snapshot taken when the epoch advances.
    epoch::advance().ok()?;
    let in_use = stats::allocated::read().ok()? as u64;
    let resident = stats::resident::read().ok()? as u64;
    Some(Heap {
        in_use,
        free: resident.saturating_sub(in_use),
    })
}

/// Returns the dirty pages of every arena to the system (they stay the
/// allocator's address space, and fault back in when reused).
pub fn give_back() {
    // `arena.<MALLCTL_ARENAS_ALL>.purge`, a command without a value.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: the name is NUL-terminated and the command reads and writes
    // no value, so every pointer passed is null with length 0.
    let failed = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if failed != 0 {
        tracing::debug!(error = failed, "the allocator did not purge its free pages");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_pages_are_counted_and_given_back() {
        const BLOCK: usize = 1 << 20;
        const BLOCKS: usize = 48;
        let before = heap().expect("jemalloc's statistics");
        // Blocks under jemalloc's 8 MiB oversize threshold, so that they
        // stay in the arenas when freed rather than being unmapped at once.
        let blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|i| vec![i as u8 | 1; BLOCK]).collect();
        let holding = heap().expect("jemalloc's statistics");
        assert!(
            holding.in_use >= before.in_use + (BLOCKS * BLOCK) as u64 / 2,
            "{before:?} then {holding:?}"
        );
        drop(std::hint::black_box(blocks));
        let freed = heap().expect("jemalloc's statistics");
        give_back();
        let given_back = heap().expect("jemalloc's statistics");
        // Other tests allocate meanwhile: a margin of a third of the blocks.
        assert!(
            given_back.free + (BLOCKS * BLOCK) as u64 * 2 / 3 <= freed.free,
            "held {freed:?}, after giving back {given_back:?}"
        );
    }
}
