//! Answered requests, kept for the exchange lifetime so that a repeated
//! confirmable request gets the same bytes again (RFC 7252 §4.5), bounded
//! by count and bytes.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::{DEDUP_BYTES, DEDUP_CAPACITY, EXCHANGE_LIFETIME};

/// Answered requests by (peer, message id): a repeat gets the same bytes
/// again; `None` while the answer is being worked out.
#[derive(Default)]
pub(super) struct Dedup {
    replies: HashMap<(SocketAddr, u16), Option<Vec<u8>>>,
    order: VecDeque<(Instant, (SocketAddr, u16))>,
    /// Bytes of the answers in `replies`.
    bytes: usize,
}

impl Dedup {
    pub(super) fn get(&self, key: &(SocketAddr, u16)) -> Option<&Option<Vec<u8>>> {
        self.replies.get(key)
    }

    pub(super) fn forget(&mut self, key: &(SocketAddr, u16)) {
        // Its place in `order` goes when it expires; a missing key is fine.
        self.remove(key);
    }

    pub(super) fn remove(&mut self, key: &(SocketAddr, u16)) {
        if let Some(Some(reply)) = self.replies.remove(key) {
            self.bytes -= reply.len();
        }
    }

    pub(super) fn insert(&mut self, key: (SocketAddr, u16), reply: Option<Vec<u8>>, now: Instant) {
        let adding = reply.as_ref().map_or(0, Vec::len);
        while let Some(&(at, old)) = self.order.front() {
            if now.duration_since(at) < EXCHANGE_LIFETIME
                && self.order.len() < DEDUP_CAPACITY
                && self.bytes + adding <= DEDUP_BYTES
            {
                break;
            }
            self.remove(&old);
            self.order.pop_front();
        }
        self.bytes += adding;
        match self.replies.insert(key, reply) {
            None => self.order.push_back((now, key)),
            Some(Some(earlier)) => self.bytes -= earlier.len(),
            Some(None) => {}
        }
    }
}
