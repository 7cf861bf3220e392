//! 6LoWPAN (RFC 4944, RFC 6282) as far as a gateway for CoAP sensors needs
//! it: IPHC-compressed IPv6 with UDP (inline or NHC-compressed), link-local
//! and multicast addresses, fragment reassembly, and the one encoding the
//! downlink sends (link-local, addresses and ports from the MAC frame).
//! Stateful (context-based) compression is refused, not guessed. Pure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::mac::Address;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LowpanError {
    #[error("6LoWPAN header truncated")]
    Truncated,
    #[error("context-based address compression (context {0}) is not supported")]
    Context(u8),
    #[error("next header {0} is not UDP")]
    NotUdp(u8),
    #[error("unknown next-header compression {0:#04x}")]
    Nhc(u8),
    #[error("fragment does not fit its datagram")]
    Fragment,
}

/// A decompressed IPv6/UDP datagram (what of it the gateway uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub source: [u8; 16],
    pub destination: [u8; 16],
    pub hop_limit: u8,
    pub source_port: u16,
    pub destination_port: u16,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// Link-layer context for address derivation (RFC 6282 §3.2.2).
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub source: Address,
    pub destination: Address,
    pub pan: u16,
}

/// The uncompressed length of the IPv6 and UDP headers.
const HEADERS: usize = 48;

/// Decompresses an IPHC header (and its UDP header) at the start of
/// `bytes`; the UDP payload is the rest.
pub fn decompress(bytes: &[u8], link: Link) -> Result<Datagram, LowpanError> {
    let mut at = 0;
    let mut take = |n: usize| -> Result<&[u8], LowpanError> {
        let field = bytes.get(at..at + n).ok_or(LowpanError::Truncated)?;
        at += n;
        Ok(field)
    };
    let head = take(2)?;
    let (b0, b1) = (head[0], head[1]);
    if b0 >> 5 != 0b011 {
        return Err(LowpanError::Truncated);
    }
    let tf = (b0 >> 3) & 0x3;
    let next_header_compressed = b0 & 0x4 != 0;
    let hlim = b0 & 0x3;
    let cid = b1 & 0x80 != 0;
    let sac = b1 & 0x40 != 0;
    let sam = (b1 >> 4) & 0x3;
    let multicast = b1 & 0x08 != 0;
    let dac = b1 & 0x04 != 0;
    let dam = b1 & 0x3;
    if cid {
        let context = take(1)?[0];
        if context != 0 {
            return Err(LowpanError::Context(context));
        }
    }
    take(match tf {
        0 => 4,
        1 => 3,
        2 => 1,
        _ => 0,
    })?;
    let next_header = if next_header_compressed {
        None
    } else {
        Some(take(1)?[0])
    };
    let hop_limit = match hlim {
        0 => take(1)?[0],
        1 => 1,
        2 => 64,
        _ => 255,
    };
    let source = if sac {
        if sam != 0 {
            return Err(LowpanError::Context(0));
        }
        [0; 16] // the unspecified address
    } else {
        unicast(sam, &mut take, link.source)?
    };
    let destination = match (multicast, dac) {
        (false, false) => unicast(dam, &mut take, link.destination)?,
        (true, false) => {
            let mut address = [0u8; 16];
            match dam {
                0 => address.copy_from_slice(take(16)?),
                1 => {
                    let f = take(6)?;
                    address[0] = 0xff;
                    address[1] = f[0];
                    address[11..16].copy_from_slice(&f[1..6]);
                }
                2 => {
                    let f = take(4)?;
                    address[0] = 0xff;
                    address[1] = f[0];
                    address[13..16].copy_from_slice(&f[1..4]);
                }
                _ => {
                    address[0] = 0xff;
                    address[1] = 0x02;
                    address[15] = take(1)?[0];
                }
            }
            address
        }
        (_, true) => return Err(LowpanError::Context(0)),
    };
    let (source_port, destination_port) = match next_header {
        Some(17) => {
            let udp = take(8)?;
            (
                u16::from_be_bytes([udp[0], udp[1]]),
                u16::from_be_bytes([udp[2], udp[3]]),
            )
        }
        Some(other) => return Err(LowpanError::NotUdp(other)),
        None => {
            let nhc = take(1)?[0];
            if nhc & 0xf8 != 0xf0 {
                return Err(LowpanError::Nhc(nhc));
            }
            let ports = match nhc & 0x3 {
                0 => {
                    let p = take(4)?;
                    (
                        u16::from_be_bytes([p[0], p[1]]),
                        u16::from_be_bytes([p[2], p[3]]),
                    )
                }
                1 => {
                    let p = take(3)?;
                    (u16::from_be_bytes([p[0], p[1]]), 0xf000 | u16::from(p[2]))
                }
                2 => {
                    let p = take(3)?;
                    (0xf000 | u16::from(p[0]), u16::from_be_bytes([p[1], p[2]]))
                }
                _ => {
                    let p = take(1)?[0];
                    (0xf0b0 | u16::from(p >> 4), 0xf0b0 | u16::from(p & 0xf))
                }
            };
            if nhc & 0x4 == 0 {
                take(2)?; // checksum inline
            }
            ports
        }
    };
    Ok(Datagram {
        source,
        destination,
        hop_limit,
        source_port,
        destination_port,
        payload: bytes[at..].to_vec(),
    })
}

fn unicast<'a>(
    mode: u8,
    take: &mut impl FnMut(usize) -> Result<&'a [u8], LowpanError>,
    mac: Address,
) -> Result<[u8; 16], LowpanError> {
    let mut address = [0u8; 16];
    if mode == 0 {
        address.copy_from_slice(take(16)?);
        return Ok(address);
    }
    address[0] = 0xfe;
    address[1] = 0x80;
    match mode {
        1 => address[8..].copy_from_slice(take(8)?),
        2 => {
            address[11] = 0xff;
            address[12] = 0xfe;
            address[14..].copy_from_slice(take(2)?);
        }
        _ => address[8..].copy_from_slice(&mac.interface_id()),
    }
    Ok(address)
}

/// The one IPHC encoding the gateway sends: link-local source and
/// destination elided (derived from the MAC addresses), hop limit 64,
/// UDP ports inline with the checksum (RFC 6282 requires it unless an
/// upper layer says otherwise).
pub fn compress(link: Link, source_port: u16, destination_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    // 011 TF=11 NH=1 HLIM=10 | CID=0 SAC=0 SAM=11 M=0 DAC=0 DAM=11
    out.extend_from_slice(&[0x7e, 0x33, 0xf0]);
    out.extend_from_slice(&source_port.to_be_bytes());
    out.extend_from_slice(&destination_port.to_be_bytes());
    let mut source = [0u8; 16];
    source[0] = 0xfe;
    source[1] = 0x80;
    source[8..].copy_from_slice(&link.source.interface_id());
    let mut destination = source;
    destination[8..].copy_from_slice(&link.destination.interface_id());
    let checksum = udp_checksum(
        &source,
        &destination,
        source_port,
        destination_port,
        payload,
    );
    out.extend_from_slice(&checksum.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// RFC 768 / RFC 8200 §8.1: over the pseudo-header, UDP header and data.
fn udp_checksum(
    source: &[u8; 16],
    destination: &[u8; 16],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> u16 {
    let length = (8 + payload.len()) as u32;
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(source);
    add(destination);
    add(&length.to_be_bytes());
    add(&[0, 0, 0, 17]);
    add(&sport.to_be_bytes());
    add(&dport.to_be_bytes());
    add(&(length as u16).to_be_bytes());
    add(payload);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xffff,
        checksum => checksum,
    }
}

/// RFC 4944 §5.3 fragments, reassembled per (sender, size, tag).
#[derive(Default)]
pub struct Reassembly {
    pending: HashMap<(Address, u16, u16), Partial>,
}

struct Partial {
    started: Instant,
    /// The uncompressed datagram, headers first.
    buffer: Vec<u8>,
    /// Offsets (in bytes) of pieces already in place, and their lengths.
    pieces: Vec<(usize, usize)>,
    /// Header fields, once the first fragment came.
    first: Option<Datagram>,
}

/// Fragments of a datagram not completed in this time are dropped
/// (RFC 4944 §5.3 allows up to 60 s).
const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Datagrams reassembled at once at most: a flood cannot grow memory.
const MAX_PENDING: usize = 16;

impl Reassembly {
    /// Feeds a fragment (`bytes` starting at its dispatch byte); returns
    /// the datagram once whole.
    pub fn fragment(
        &mut self,
        bytes: &[u8],
        link: Link,
        now: Instant,
    ) -> Result<Option<Datagram>, LowpanError> {
        self.pending
            .retain(|_, p| now.duration_since(p.started) < REASSEMBLY_TIMEOUT);
        let first = bytes.first().ok_or(LowpanError::Truncated)? & 0xf8 == 0xc0;
        let header = if first { 4 } else { 5 };
        let head = bytes.get(..header).ok_or(LowpanError::Truncated)?;
        let size = usize::from(u16::from_be_bytes([head[0] & 0x7, head[1]]));
        let tag = u16::from_be_bytes([head[2], head[3]]);
        let key = (link.source, size as u16, tag);
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_PENDING {
            return Err(LowpanError::Fragment);
        }
        let partial = self.pending.entry(key).or_insert_with(|| Partial {
            started: now,
            buffer: vec![0; size],
            pieces: Vec::new(),
            first: None,
        });
        let (offset, piece): (usize, Vec<u8>) = if first {
            let mut datagram = decompress(&bytes[4..], link)?;
            let payload = std::mem::take(&mut datagram.payload);
            partial.first = Some(datagram);
            // Headers occupy the first 48 bytes of the uncompressed datagram.
            let mut piece = vec![0; HEADERS];
            piece.extend_from_slice(&payload);
            (0, piece)
        } else {
            (usize::from(head[4]) * 8, bytes[5..].to_vec())
        };
        let end = offset + piece.len();
        if end > size
            || partial
                .pieces
                .iter()
                .any(|&(o, l)| offset < o + l && o < end)
        {
            self.pending.remove(&key);
            return Err(LowpanError::Fragment);
        }
        partial.buffer[offset..end].copy_from_slice(&piece);
        partial.pieces.push((offset, piece.len()));
        let filled: usize = partial.pieces.iter().map(|&(_, l)| l).sum();
        if filled < size || partial.first.is_none() {
            return Ok(None);
        }
        let Some(mut partial) = self.pending.remove(&key) else {
            return Ok(None);
        };
        let mut datagram = partial.first.take().ok_or(LowpanError::Fragment)?;
        datagram.payload = partial.buffer.split_off(HEADERS.min(size));
        Ok(Some(datagram))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn link() -> Link {
        Link {
            source: Address::Extended(0x0012_4b00_0614_2f9b),
            destination: Address::Short(0x0001),
            pan: 0xabcd,
        }
    }

    #[test]
    fn the_downlink_encoding_decodes() {
        let bytes = compress(link(), 5683, 5683, b"coap");
        let datagram = decompress(&bytes, link()).unwrap();
        assert_eq!(
            (datagram.source_port, datagram.destination_port),
            (5683, 5683)
        );
        assert_eq!(datagram.payload, b"coap");
        assert_eq!(&datagram.source[..2], &[0xfe, 0x80]);
        // fe80::0212:4b00:0614:2f9b — the U/L bit flipped.
        assert_eq!(
            &datagram.source[8..],
            &[0x02, 0x12, 0x4b, 0x00, 0x06, 0x14, 0x2f, 0x9b]
        );
        assert_eq!(
            &datagram.destination[8..],
            &[0x00, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x01]
        );
    }

    #[test]
    fn inline_addresses_and_udp_header() {
        // TF=11 NH=0 HLIM=00 | SAM=00 DAM=00; next header 17; hop limit 7.
        let mut bytes = vec![0x78, 0x00, 17, 7];
        bytes.extend_from_slice(&[0x20; 16]);
        bytes.extend_from_slice(&[0x30; 16]);
        bytes.extend_from_slice(&[0x16, 0x33, 0x16, 0x34, 0, 12, 0, 0]);
        bytes.extend_from_slice(b"abcd");
        let datagram = decompress(&bytes, link()).unwrap();
        assert_eq!(datagram.hop_limit, 7);
        assert_eq!(datagram.source, [0x20; 16]);
        assert_eq!(
            (datagram.source_port, datagram.destination_port),
            (5683, 5684)
        );
        assert_eq!(datagram.payload, b"abcd");
        assert_eq!(
            decompress(&[0x78, 0x00, 6], link()),
            Err(LowpanError::Truncated)
        );
        let mut tcp = bytes.clone();
        tcp[2] = 6;
        assert_eq!(decompress(&tcp, link()), Err(LowpanError::NotUdp(6)));
    }

    #[test]
    fn fragments_reassemble_in_any_order() {
        let payload: Vec<u8> = (0..100u8).collect();
        let compressed = compress(link(), 5683, 5683, &payload);
        // Uncompressed: 48 header bytes + 100 payload = 148.
        let size = 148u16;
        let header_len = compressed.len() - payload.len();
        // FRAG1 carries the compressed headers and 40 payload bytes (48 + 40 = 88 = 11 × 8).
        let mut first = vec![0xc0 | (size >> 8) as u8, size as u8, 0x12, 0x34];
        first.extend_from_slice(&compressed[..header_len + 40]);
        let mut next = vec![0xe0 | (size >> 8) as u8, size as u8, 0x12, 0x34, 11];
        next.extend_from_slice(&payload[40..]);
        let now = Instant::now();
        let mut reassembly = Reassembly::default();
        assert_eq!(reassembly.fragment(&next, link(), now), Ok(None));
        let datagram = reassembly.fragment(&first, link(), now).unwrap().unwrap();
        assert_eq!(datagram.payload, payload);
        // Overlapping pieces are refused.
        let mut reassembly = Reassembly::default();
        reassembly.fragment(&first, link(), now).unwrap();
        let mut overlap = next.clone();
        overlap[4] = 10;
        assert_eq!(
            reassembly.fragment(&overlap, link(), now),
            Err(LowpanError::Fragment)
        );
    }

    proptest! {
        #[test]
        fn any_bytes_decompress_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decompress(&bytes, link());
            let mut reassembly = Reassembly::default();
            let _ = reassembly.fragment(&bytes, link(), Instant::now());
        }

        #[test]
        fn compressed_datagrams_round_trip(sport: u16, dport: u16, payload in proptest::collection::vec(any::<u8>(), 0..60)) {
            let datagram = decompress(&compress(link(), sport, dport, &payload), link()).unwrap();
            prop_assert_eq!((datagram.source_port, datagram.destination_port), (sport, dport));
            prop_assert_eq!(datagram.payload, payload);
        }
    }
}
