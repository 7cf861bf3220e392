//! The gateway's two heaps: Rust's allocations in jemalloc, RocksDB's C++
//! in glibc's malloc; what they hold, for `/metrics`, and giving back what
//! they hold free.
//!
//! Why jemalloc for Rust: a reading is allocated on the thread that
//! receives it (the MQTT front door, a CoAP or HTTP worker) and freed on
//! the threads that pass it on (the local cloud's, the SSE writers').
//! glibc returns such a free to the arena of the thread that allocated it,
//! under that arena's lock, and consolidates its fast bins on the next
//! large allocation: in a profile of the front door's thread during a QoS 1
//! burst, malloc and free took a quarter of the thread. With jemalloc,
//! whose threads free into caches of their own, the same gateway went from
//! 2.9–3.4 to 2.3–2.4 µs of CPU per delivered reading, and its QoS 1 rate
//! from 260–330k to 344–354k messages/s (the cloud bench's 1 M-message
//! bursts across two gateways, runs minutes apart).
//!
//! Why not for RocksDB too (jemalloc linked with its `malloc` unprefixed,
//! which measured 4–6 % more): jemalloc reads the clock while it
//! initialises, and a process whose clock is interposed — libfaketime,
//! with which the fault campaign steps a gateway's clock, among others —
//! then never starts (libfaketime's set-up allocates, re-entering the
//! allocator mid-initialisation). RocksDB allocates per write batch and
//! memtable block, not per reading; its heap stays glibc's, tuned below.
//!
//! glibc keeps what RocksDB frees in its arenas for reuse: the write
//! buffers, built and dropped at every flush, and compaction's buffers
//! leave free chunks scattered between live ones. Most of that came from
//! glibc's sliding mmap threshold (each free of a mapped block raises it,
//! up to 32 MiB, so that soon the write buffers' 2 MiB blocks come from
//! the arenas and leave holes there); [`configure`] fixes the threshold,
//! which held the free memory between 7 and 9 MiB through the ten-minute
//! soak where it had grown from 8 to 22 MiB. What fragments anyway — and
//! the dirty pages jemalloc returns by itself only as the process
//! allocates — [`give_back`] returns every [`TRIM_INTERVAL`].

use std::time::Duration;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How often the upkeep gives free heap pages back to the system.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Blocks this large or larger are mapped on their own, and given back
/// when freed: glibc's default, fixed (see the module's doc).
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Sets the C heap up for a long-running gateway; call before any thread
/// starts.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; called before
    // other threads exist, it races with no allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Bytes handed out and in use, and bytes the allocators keep resident
/// beyond them (freed chunks, pages not yet given back, their metadata),
/// over both heaps. A resident size that climbs while `in_use` stays flat
/// is an allocator keeping what was freed, not something the gateway keeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct Heap {
    pub in_use: u64,
    pub free: u64,
}

/// Both heaps' figures, summed; `None` if jemalloc cannot tell.
pub fn heap() -> Option<Heap> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // jemalloc's statistics are a snapshot taken when the epoch advances.
    epoch::advance().ok()?;
    let allocated = stats::allocated::read().ok()? as u64;
    let resident = stats::resident::read().ok()? as u64;
    let mut heap = Heap {
        in_use: allocated,
        free: resident.saturating_sub(allocated),
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads glibc's own bookkeeping, under each
        // arena's lock.
        let info = unsafe { libc::mallinfo2() };
        heap.in_use += (info.uordblks + info.hblkhd) as u64;
        heap.free += info.fordblks as u64;
    }
    Some(heap)
}

/// Returns the free pages of both heaps to the system (they stay the
/// allocators' address space, and fault back in when reused). `free` in
/// [`heap`] still counts glibc's: it is the resident size that drops.
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
        tracing::debug!(error = failed, "jemalloc did not purge its free pages");
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's own arenas;
    // it touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
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
