//! The C heap that Rust's allocator and RocksDB share (glibc malloc): what
//! it holds, for `/metrics`, and giving back what it holds free.
//!
//! Under steady load the gateway's own memory is flat, but glibc keeps
//! what is freed in its arenas for reuse: the store's write buffers, built
//! and dropped at every flush, and compaction's buffers leave free chunks
//! scattered between live ones, which no later allocation fits exactly.
//! The ten-minute soak measured it: the heap in use outside the store held
//! at 11 MiB while the free memory the allocator kept grew from 8 to 22
//! MiB, and the resident size with it.
//!
//! Most of it came from glibc's sliding mmap threshold: blocks of 128 KiB
//! and more are mapped on their own and unmapped when freed, but each
//! such free raises the threshold to the block's size (up to 32 MiB), so
//! that soon the write buffers' 2 MiB blocks and compaction's buffers come
//! from the arenas and leave holes there that small allocations then pin.
//! [`configure`] fixes the threshold, which stops the sliding: the free
//! memory held stayed between 7 and 9 MiB through the same soak. What
//! fragments anyway, the upkeep gives back every [`TRIM_INTERVAL`].

use std::time::Duration;

/// How often the upkeep gives free heap pages back to the system.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Blocks this large or larger are mapped on their own, and given back
/// when freed: glibc's default, fixed (see the module's doc).
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Sets the allocator up for a long-running gateway; call before any
/// thread starts.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; called before
    // other threads exist, it races with no allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Bytes handed out and in use, and bytes freed but held in the arenas.
/// A resident size that climbs while `in_use` stays flat is the allocator
/// keeping what was freed, not something the gateway keeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct Heap {
    pub in_use: u64,
    pub free: u64,
}

/// The heap's figures, summed over every arena; `None` where the C
/// library is not glibc.
pub fn heap() -> Option<Heap> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's own bookkeeping,
        // under each arena's lock.
        let info = unsafe { libc::mallinfo2() };
        Some(Heap {
            in_use: (info.uordblks + info.hblkhd) as u64,
            free: info.fordblks as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// Returns the whole free pages of every arena to the system (they stay
/// the allocator's, and fault back in when reused). `free` in [`heap`]
/// still counts them: it is the resident size that drops.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own
    // arenas; it touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
