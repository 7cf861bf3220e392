//! A store that halted its writes is reopened by restarting the gateway in
//! place.
//!
//! When a write to RocksDB fails for the disk's sake (a full disk, above
//! all), the store refuses every later write itself (`Store::halted`):
//! RocksDB 7 cannot resume a write-ahead log whose append failed, and
//! reopening the database is the only way back. Reads go on meanwhile;
//! writes get 503 and MQTT publishes no PUBACK, so devices keep what they
//! have and send it again. Once the data directory's file system has room
//! again, the gateway executes itself anew — same process id, same
//! arguments and environment — which reopens the store from its WAL, as a
//! supervisor's restart would, but without needing one.

use std::path::Path;

use fogbank_taas::Halt;

/// Free space on the data directory's file system needed before the
/// gateway restarts: room for a memtable's flush and a fresh WAL, so that
/// it does not fill again at once.
const ROOM_TO_RESUME: u64 = 64 << 20;

/// Whether the halt can end now: the disk was full and has room again.
/// Other I/O errors need an operator, and are left halted.
pub fn can_resume(halt: &Halt, store_path: &Path) -> bool {
    *halt == Halt::DiskFull && free_bytes(store_path).is_some_and(|free| free >= ROOM_TO_RESUME)
}

/// Bytes free to an unprivileged writer on `path`'s file system.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string and `stats` room for one statvfs,
    // which the call fills when it returns 0.
    let stats = unsafe {
        if libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) != 0 {
            return None;
        }
        stats.assume_init()
    };
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Replaces this process with a fresh run of the same command. Returns
/// only if that could not be done.
pub fn restart_in_place() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(error) => return error,
    };
    tracing::warn!(
        program = %program.display(),
        "the disk has room again: restarting in place to reopen the store"
    );
    std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .exec()
}
