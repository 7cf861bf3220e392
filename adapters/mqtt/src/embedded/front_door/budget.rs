//! The bytes of large packets that all connections together may hold.

use parking_lot::Mutex;

/// A byte budget shared by all connections, for packets larger than one
/// read: what a crowd of devices sending large packets slowly can hold.
pub struct Budget {
    left: Mutex<usize>,
}

/// Bytes taken from a [`Budget`], given back when dropped.
pub struct Lease<'a> {
    budget: &'a Budget,
    bytes: usize,
}

impl Budget {
    pub fn new(bytes: usize) -> Self {
        Budget {
            left: Mutex::new(bytes),
        }
    }

    /// `bytes` of the budget, if that much is left.
    pub fn take(&self, bytes: usize) -> Option<Lease<'_>> {
        let mut left = self.left.lock();
        *left = left.checked_sub(bytes)?;
        Some(Lease {
            budget: self,
            bytes,
        })
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        *self.budget.left.lock() += self.bytes;
    }
}
