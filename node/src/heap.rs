//! The C heap that Rust's allocator and RocksDB share (glibc malloc): what
//! it holds, for `/metrics`, and giving back what it holds free.
//!
//! Under steady load the gateway's own memory is flat, but glibc keeps
//! what is freed in its arenas for reuse: the store's write buffers, built
//! and dropped at every flush, and compaction's buffers leave free chunks
//! scattered between live ones, which no later allocation fits exactly.
//! The ten-minute soak measured it: the heap in use outside the store held
//! at 11 MiB while the free memory the allocator kept grew from 8 to 22
//! MiB, and the resident size with it. So the upkeep gives free pages back
//! every [`TRIM_INTERVAL`].

use std::time::Duration;

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
