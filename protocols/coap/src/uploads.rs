//! Request bodies arriving in blocks (RFC 7959 Block1), until the last.
//!
//! An unfinished upload is state held for a peer that has proven nothing
//! — over UDP its address may be forged — so everything here is bounded:
//! an upload is forgotten [`UPLOAD_LIFETIME`] after its last block
//! (RFC 7959 §2.5 lets a server discard partial bodies), a body over
//! [`MAX_BODY_BYTES`] is refused, and so is a new upload past
//! [`MAX_UPLOADS_PER_HOST`] from one host, [`MAX_UPLOADS`] in all, or
//! [`MAX_BYTES`] held in all. A block must carry exactly what its SZX
//! declares (the last may carry less), so a small declared block cannot
//! smuggle a large payload.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::message::Block;

/// An upload whose next block has not come by then is dropped
/// (EXCHANGE_LIFETIME, RFC 7252 §4.8.2).
pub const UPLOAD_LIFETIME: Duration = Duration::from_secs(247);
/// The largest body reassembled.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Unfinished uploads from one host (IP address) at once.
pub const MAX_UPLOADS_PER_HOST: usize = 8;
/// Unfinished uploads at once, from everyone.
pub const MAX_UPLOADS: usize = 256;
/// Bytes of unfinished uploads held at once, from everyone.
pub const MAX_BYTES: usize = 16 << 20;

/// Why a block was not taken; the upload it belonged to is forgotten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// 4.08: not the block that comes next, or no upload to continue.
    #[error("block {got} where block {expected} was due")]
    OutOfOrder { expected: u32, got: u32 },
    /// 4.00: a block whose payload is not the size its SZX declares.
    #[error("block {num} carries {carried} bytes where its SZX declares {declared}")]
    BlockSize {
        num: u32,
        carried: usize,
        declared: usize,
    },
    /// 4.13: the body would be larger than [`MAX_BODY_BYTES`].
    #[error("a body over {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// 4.29: this host has [`MAX_UPLOADS_PER_HOST`] unfinished uploads.
    #[error("{MAX_UPLOADS_PER_HOST} unfinished uploads from this host already")]
    HostBusy,
    /// 4.29: the endpoint holds all the unfinished uploads it may.
    #[error("too many unfinished uploads; try again later")]
    Full,
}

/// The names `/metrics` counts refusals under, in [`Refused::index`] order.
pub const REASONS: [&str; 5] = [
    "block1_out_of_order",
    "block1_size",
    "block1_too_large",
    "block1_host_busy",
    "block1_full",
];

impl Refused {
    /// Its place in [`REASONS`].
    pub fn index(&self) -> usize {
        match self {
            Refused::OutOfOrder { .. } => 0,
            Refused::BlockSize { .. } => 1,
            Refused::TooLarge => 2,
            Refused::HostBusy => 3,
            Refused::Full => 4,
        }
    }
}

struct Upload {
    body: Vec<u8>,
    last_block: Instant,
}

/// The unfinished uploads, by peer and path.
#[derive(Default)]
pub struct Uploads {
    by_key: HashMap<(SocketAddr, String), Upload>,
    /// Bytes of all bodies together.
    bytes: usize,
}

impl Uploads {
    /// Takes one block of `path`'s body from `peer`: `Ok(None)` while more
    /// are to come, the whole body with the last one.
    pub fn block(
        &mut self,
        peer: SocketAddr,
        path: String,
        block: Block,
        payload: &[u8],
        now: Instant,
    ) -> Result<Option<Vec<u8>>, Refused> {
        self.expire(now);
        let declared = block.size();
        if payload.len() > declared || block.more && payload.len() < declared {
            self.remove(&(peer, path));
            return Err(Refused::BlockSize {
                num: block.num,
                carried: payload.len(),
                declared,
            });
        }
        let key = (peer, path);
        if block.num == 0 {
            self.remove(&key);
            if !block.more {
                return Ok(Some(payload.to_vec()));
            }
            if self.by_key.len() >= MAX_UPLOADS {
                return Err(Refused::Full);
            }
            if self.from_host(peer.ip()) >= MAX_UPLOADS_PER_HOST {
                return Err(Refused::HostBusy);
            }
            self.by_key.insert(
                key.clone(),
                Upload {
                    body: Vec::new(),
                    last_block: now,
                },
            );
        }
        let Some(upload) = self.by_key.get_mut(&key) else {
            return Err(Refused::OutOfOrder {
                expected: 0,
                got: block.num,
            });
        };
        // Blocks may shrink mid-way (§2.5), so the next one is due where
        // the body ends.
        let at = usize::try_from(block.num)
            .ok()
            .and_then(|num| num.checked_mul(declared));
        if at != Some(upload.body.len()) {
            let expected = u32::try_from(upload.body.len() / declared).unwrap_or(u32::MAX);
            self.remove(&key);
            return Err(Refused::OutOfOrder {
                expected,
                got: block.num,
            });
        }
        if upload.body.len() + payload.len() > MAX_BODY_BYTES {
            self.remove(&key);
            return Err(Refused::TooLarge);
        }
        if self.bytes + payload.len() > MAX_BYTES {
            self.remove(&key);
            return Err(Refused::Full);
        }
        upload.body.extend_from_slice(payload);
        upload.last_block = now;
        self.bytes += payload.len();
        if block.more {
            return Ok(None);
        }
        Ok(self.remove(&key))
    }

    /// Unfinished uploads held now.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Bytes held in unfinished uploads now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Unfinished uploads from `host`.
    pub fn from_host(&self, host: IpAddr) -> usize {
        self.by_key.keys().filter(|(p, _)| p.ip() == host).count()
    }

    fn expire(&mut self, now: Instant) {
        let mut freed = 0;
        self.by_key.retain(|_, upload| {
            let alive = now.duration_since(upload.last_block) < UPLOAD_LIFETIME;
            if !alive {
                freed += upload.body.len();
            }
            alive
        });
        self.bytes -= freed;
    }

    /// Takes an upload out, whole or not.
    fn remove(&mut self, key: &(SocketAddr, String)) -> Option<Vec<u8>> {
        let upload = self.by_key.remove(key)?;
        self.bytes -= upload.body.len();
        Some(upload.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KIB: Block = Block {
        num: 0,
        more: true,
        szx: 6,
    };

    fn block(num: u32, more: bool) -> Block {
        Block { num, more, ..KIB }
    }

    fn peer(host: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, host], port))
    }

    #[test]
    fn blocks_in_order_make_the_body() {
        let mut uploads = Uploads::default();
        let now = Instant::now();
        let p = peer(1, 5683);
        assert_eq!(
            uploads.block(p, "rd".into(), block(0, true), &[1; 1024], now),
            Ok(None)
        );
        assert_eq!(
            uploads.block(p, "rd".into(), block(1, true), &[2; 1024], now),
            Ok(None)
        );
        let body = uploads.block(p, "rd".into(), block(2, false), &[3; 10], now);
        let body = body.unwrap().unwrap();
        assert_eq!(body.len(), 2058);
        assert_eq!(
            (&body[..1], &body[1024..1025], &body[2048..]),
            (&[1][..], &[2][..], &[3; 10][..])
        );
        assert!(uploads.is_empty());
        assert_eq!(uploads.bytes(), 0);
    }

    #[test]
    fn a_block_larger_or_smaller_than_declared_is_refused() {
        let mut uploads = Uploads::default();
        let now = Instant::now();
        // The report's attack: 1 KiB declared, 64 000 bytes carried.
        let refused = uploads.block(peer(1, 1), "a".into(), block(0, true), &[0; 64_000], now);
        assert!(matches!(
            refused,
            Err(Refused::BlockSize {
                carried: 64_000,
                declared: 1024,
                ..
            })
        ));
        let refused = uploads.block(peer(1, 1), "a".into(), block(0, true), &[0; 100], now);
        assert!(matches!(refused, Err(Refused::BlockSize { .. })));
        // The last block may be short, never long.
        let refused = uploads.block(peer(1, 1), "a".into(), block(0, false), &[0; 1025], now);
        assert!(matches!(refused, Err(Refused::BlockSize { .. })));
        assert!(uploads.is_empty());
    }

    #[test]
    fn a_missing_upload_or_a_gap_is_out_of_order() {
        let mut uploads = Uploads::default();
        let now = Instant::now();
        let p = peer(1, 1);
        assert!(matches!(
            uploads.block(p, "a".into(), block(3, true), &[0; 1024], now),
            Err(Refused::OutOfOrder {
                expected: 0,
                got: 3
            })
        ));
        uploads
            .block(p, "a".into(), block(0, true), &[0; 1024], now)
            .unwrap();
        assert!(matches!(
            uploads.block(p, "a".into(), block(2, true), &[0; 1024], now),
            Err(Refused::OutOfOrder {
                expected: 1,
                got: 2
            })
        ));
        assert!(uploads.is_empty());
    }

    #[test]
    fn uploads_are_bounded_per_host_and_in_all() {
        let mut uploads = Uploads::default();
        let now = Instant::now();
        for port in 0..MAX_UPLOADS_PER_HOST as u16 {
            uploads
                .block(peer(1, port), "a".into(), KIB, &[0; 1024], now)
                .unwrap();
        }
        assert_eq!(
            uploads.block(peer(1, 999), "a".into(), KIB, &[0; 1024], now),
            Err(Refused::HostBusy)
        );
        let mut host = 2u8;
        let mut port = 0u16;
        while uploads.len() < MAX_UPLOADS {
            uploads
                .block(peer(host, port), "a".into(), KIB, &[0; 1024], now)
                .unwrap();
            port += 1;
            if usize::from(port) == MAX_UPLOADS_PER_HOST {
                (host, port) = (host + 1, 0);
            }
        }
        assert_eq!(
            uploads.block(peer(250, 1), "a".into(), KIB, &[0; 1024], now),
            Err(Refused::Full)
        );
        assert_eq!(uploads.bytes(), MAX_UPLOADS * 1024);
    }

    #[test]
    fn the_bytes_held_in_all_are_bounded() {
        let mut uploads = Uploads::default();
        let now = Instant::now();
        let mut refused = None;
        'hosts: for host in 1..=255u8 {
            for port in 0..MAX_UPLOADS_PER_HOST as u16 {
                let p = peer(host, port);
                // 1000 KiB each: under the bound of one body.
                for num in 0..1000 {
                    if let Err(error) =
                        uploads.block(p, "a".into(), block(num, true), &[0; 1024], now)
                    {
                        refused = Some(error);
                        break 'hosts;
                    }
                }
            }
        }
        assert_eq!(refused, Some(Refused::Full));
        assert!(uploads.bytes() <= MAX_BYTES);
    }

    #[test]
    fn an_upload_left_unfinished_expires() {
        let mut uploads = Uploads::default();
        let start = Instant::now();
        let p = peer(1, 1);
        uploads
            .block(p, "a".into(), block(0, true), &[0; 1024], start)
            .unwrap();
        let later = start + UPLOAD_LIFETIME;
        assert!(matches!(
            uploads.block(p, "a".into(), block(1, true), &[0; 1024], later),
            Err(Refused::OutOfOrder { .. })
        ));
        assert_eq!((uploads.len(), uploads.bytes()), (0, 0));
    }

    proptest! {
        /// Whatever blocks come, from whoever, the bounds hold and the
        /// byte count is the sum of the bodies.
        #[test]
        fn bounds_hold_for_any_blocks(
            blocks in proptest::collection::vec(
                (0u8..4, 0u16..12, 0u32..6, any::<bool>(), 0u8..7, 0usize..1100, 0u64..300),
                0..200,
            )
        ) {
            let mut uploads = Uploads::default();
            let start = Instant::now();
            let mut elapsed = 0;
            for (host, port, num, more, szx, length, wait) in blocks {
                elapsed += wait;
                let now = start + Duration::from_secs(elapsed);
                let block = Block { num, more, szx };
                let _ = uploads.block(peer(host, port), format!("p{}", port % 3), block, &vec![7; length], now);
                let held: usize = uploads.by_key.values().map(|u| u.body.len()).sum();
                prop_assert_eq!(held, uploads.bytes());
                prop_assert!(uploads.bytes() <= MAX_BYTES);
                prop_assert!(uploads.len() <= MAX_UPLOADS);
                prop_assert!(uploads.from_host(peer(host, 0).ip()) <= MAX_UPLOADS_PER_HOST);
            }
        }
    }
}
