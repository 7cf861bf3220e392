//! What the endpoint's users see of a CoAP message: requests and responses
//! as plain data, and the option values coap-lite leaves raw (block
//! options, unsigned integers, content formats).

use std::net::SocketAddr;

use coap_lite::{CoapOption, Packet, RequestType, ResponseType};

/// Content formats (the CoRE parameters registry) this endpoint speaks.
pub mod format {
    pub const TEXT: u16 = 0;
    pub const LINK_FORMAT: u16 = 40;
    pub const OCTETS: u16 = 42;
    pub const CBOR: u16 = 60;
    pub const SENML_JSON: u16 = 110;
    pub const SENML_CBOR: u16 = 112;
    pub const LWM2M_TLV: u16 = 11542;
}

/// A request as a handler sees it: blocks reassembled, options decoded.
#[derive(Debug, Clone)]
pub struct Request {
    pub peer: SocketAddr,
    pub method: RequestType,
    /// Uri-Path segments.
    pub path: Vec<String>,
    /// Uri-Query items, `key=value` or `key`.
    pub queries: Vec<String>,
    pub content_format: Option<u16>,
    pub accept: Option<u16>,
    pub payload: Vec<u8>,
}

impl Request {
    /// The value of query `key` (`key=value`), if given.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.queries.iter().find_map(|q| match q.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if q == key => Some(""),
            _ => None,
        })
    }

    pub fn path_string(&self) -> String {
        self.path.join("/")
    }
}

/// A handler's answer. The endpoint adds the message layer: type, id,
/// token, Observe, and blocks for a payload that does not fit one.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub code: ResponseType,
    pub content_format: Option<u16>,
    pub payload: Vec<u8>,
    pub location_path: Vec<String>,
    /// The resource may be observed (RFC 7641): a GET with Observe 0
    /// registers the client for notifications.
    pub observable: bool,
}

impl Response {
    pub fn new(code: ResponseType) -> Self {
        Response {
            code,
            content_format: None,
            payload: Vec::new(),
            location_path: Vec::new(),
            observable: false,
        }
    }

    pub fn content(content_format: u16, payload: Vec<u8>) -> Self {
        Response {
            content_format: Some(content_format),
            payload,
            ..Response::new(ResponseType::Content)
        }
    }

    /// An error answer with a diagnostic payload (RFC 7252 §5.5.2).
    pub fn error(code: ResponseType, diagnostic: impl Into<String>) -> Self {
        Response {
            payload: diagnostic.into().into_bytes(),
            ..Response::new(code)
        }
    }

    pub fn is_success(&self) -> bool {
        !self.code.is_error()
    }
}

/// An unsigned option value (RFC 7252 §3.2: big-endian, no leading zeros).
pub fn encode_uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

pub fn decode_uint(bytes: &[u8]) -> Option<u32> {
    if bytes.len() > 4 {
        return None;
    }
    Some(bytes.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)))
}

pub fn uint_option(packet: &Packet, option: CoapOption) -> Option<u32> {
    packet.get_first_option(option).and_then(|v| decode_uint(v))
}

/// A Block1 or Block2 option value (RFC 7959 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub num: u32,
    pub more: bool,
    /// Block size is 2^(szx + 4) bytes: 16 to 1024.
    pub szx: u8,
}

impl Block {
    pub fn size(&self) -> usize {
        1 << (usize::from(self.szx) + 4)
    }

    pub fn decode(bytes: &[u8]) -> Option<Block> {
        let value = decode_uint(bytes)?;
        if bytes.len() > 3 {
            return None;
        }
        let szx = (value & 0x7) as u8;
        // 7 is reserved (BERT, only over TCP).
        if szx == 7 {
            return None;
        }
        Some(Block {
            num: value >> 4,
            more: value & 0x8 != 0,
            szx,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_uint((self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx))
    }

    pub fn of(packet: &Packet, option: CoapOption) -> Option<Result<Block, ()>> {
        packet
            .get_first_option(option)
            .map(|v| Block::decode(v).ok_or(()))
    }
}

/// Path segments of a packet's Uri-Path options.
pub fn uri_path(packet: &Packet) -> Vec<String> {
    string_options(packet, CoapOption::UriPath)
}

pub fn string_options(packet: &Packet, option: CoapOption) -> Vec<String> {
    packet
        .get_option(option)
        .map(|values| {
            values
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Sets Uri-Path from a `/`-separated path, and Uri-Query items.
pub fn set_uri(packet: &mut Packet, path: &str, queries: &[String]) {
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    for query in queries {
        packet.add_option(CoapOption::UriQuery, query.as_bytes().to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uints_have_no_leading_zeros() {
        assert_eq!(encode_uint(0), Vec::<u8>::new());
        assert_eq!(encode_uint(60), vec![60]);
        assert_eq!(encode_uint(11542), vec![0x2d, 0x16]);
        assert_eq!(decode_uint(&[0x2d, 0x16]), Some(11542));
        assert_eq!(decode_uint(&[1, 2, 3, 4, 5]), None);
    }

    #[test]
    fn block_values_of_rfc_7959() {
        // num 1, more, 64-byte blocks (szx 2).
        let block = Block::decode(&[0x1a]).unwrap();
        assert_eq!(
            block,
            Block {
                num: 1,
                more: true,
                szx: 2
            }
        );
        assert_eq!(block.size(), 64);
        assert_eq!(Block::decode(&[0x07]), None, "szx 7 is BERT");
        assert_eq!(Block::decode(&[1, 2, 3, 4]), None);
    }

    proptest! {
        #[test]
        fn blocks_round_trip(num in 0u32..(1 << 20), more: bool, szx in 0u8..7) {
            let block = Block { num, more, szx };
            prop_assert_eq!(Block::decode(&block.encode()), Some(block));
        }

        #[test]
        fn uints_round_trip(n: u32) {
            prop_assert_eq!(decode_uint(&encode_uint(n)), Some(n));
        }
    }
}
