//! The 10-byte header every S-MANAGE packet starts with, and [`Datagram`]:
//! a header with its body still opaque. Forwarding needs no more than that,
//! and a packet that is only passed on is never decoded further.

use std::fmt;

use crate::error::DecodeError;

/// Bytes in the header.
pub const HEADER_LEN: usize = 10;
/// The length byte counts the header too, so no packet is longer.
pub const MAX_PACKET_LEN: usize = 255;

/// An SDVS address, or the controller (`0x0000`), or everyone (`0xFFFF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub u16);

impl Address {
    pub const CONTROLLER: Address = Address(0x0000);
    pub const BROADCAST: Address = Address(0xFFFF);

    pub fn is_sdvs(self) -> bool {
        self != Self::CONTROLLER && self != Self::BROADCAST
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}", self.0)
    }
}

/// The type codes the protocol defines. Any other code is application
/// data, which goes through forwarding tables like a Response.
pub enum PacketType {}

impl PacketType {
    pub const HELLO: u8 = 0x01;
    pub const REPORT: u8 = 0x02;
    pub const REQUEST: u8 = 0x03;
    pub const RESPONSE: u8 = 0x04;
    pub const SET_FORWARDING: u8 = 0x10;
    pub const SET_CONFIGURING: u8 = 0x11;
    pub const MODIFY_CONFIGURATION: u8 = 0x12;
    pub const REQUEST_FWD_STATS: u8 = 0x13;
    pub const REQUEST_CONFIG_STATS: u8 = 0x14;
    pub const RESPONSE_FWD_STATS: u8 = 0x15;
    pub const RESPONSE_CONFIG_STATS: u8 = 0x16;
    pub const REQUEST_FEATURES: u8 = 0x17;
    pub const RESPONSE_FEATURES: u8 = 0x18;

    /// The name of a type code, `"Data"` for the ones the protocol leaves
    /// to applications.
    pub fn name(code: u8) -> &'static str {
        match code {
            Self::HELLO => "Hello",
            Self::REPORT => "Report",
            Self::REQUEST => "Request",
            Self::RESPONSE => "Response",
            Self::SET_FORWARDING => "SetForwardingInstruction",
            Self::SET_CONFIGURING => "SetConfiguringInstruction",
            Self::MODIFY_CONFIGURATION => "ModifyConfiguration",
            Self::REQUEST_FWD_STATS => "RequestFwdStats",
            Self::REQUEST_CONFIG_STATS => "RequestConfigStats",
            Self::RESPONSE_FWD_STATS => "ResponseFwdStats",
            Self::RESPONSE_CONFIG_STATS => "ResponseConfigStats",
            Self::REQUEST_FEATURES => "RequestFeatures",
            Self::RESPONSE_FEATURES => "ResponseFeatures",
            _ => "Data",
        }
    }

    /// Hello and `0x10`–`0x18`: what an SDVS handles itself when the packet
    /// is addressed to it, rather than forwarding it.
    pub fn is_control(code: u8) -> bool {
        code == Self::HELLO || (Self::SET_FORWARDING..=Self::RESPONSE_FEATURES).contains(&code)
    }

    /// Whether the protocol defines this code (everything else is data).
    pub fn is_defined(code: u8) -> bool {
        (Self::HELLO..=Self::RESPONSE).contains(&code) || Self::is_control(code)
    }
}

/// The header without its length byte, which is always the datagram's
/// length and so is computed, never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub source: Address,
    pub destination: Address,
    pub next_hop: Address,
    pub packet_type: u8,
    pub ttl: u8,
    pub message_id: u8,
}

impl Header {
    fn write(&self, length: u8, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.source.0.to_be_bytes());
        out.extend_from_slice(&self.destination.0.to_be_bytes());
        out.extend_from_slice(&self.next_hop.0.to_be_bytes());
        out.push(self.packet_type);
        out.push(length);
        out.push(self.ttl);
        out.push(self.message_id);
    }
}

/// A packet whose body is still bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub header: Header,
    pub body: Vec<u8>,
}

impl Datagram {
    /// Checks the header: at least 10 bytes, and a length byte equal to the
    /// datagram's length. The body is not looked at.
    pub fn decode(bytes: &[u8]) -> Result<Datagram, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Short { len: bytes.len() });
        }
        let declared = bytes[7];
        if usize::from(declared) != bytes.len() {
            return Err(DecodeError::LengthMismatch {
                declared,
                actual: bytes.len(),
            });
        }
        let address = |at: usize| Address(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
        Ok(Datagram {
            header: Header {
                source: address(0),
                destination: address(2),
                next_hop: address(4),
                packet_type: bytes[6],
                ttl: bytes[8],
                message_id: bytes[9],
            },
            body: bytes[HEADER_LEN..].to_vec(),
        })
    }

    /// The packet's length, header included, as its length byte says.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn encode(&self) -> Result<Vec<u8>, crate::EncodeError> {
        let len = self.len();
        let length = u8::try_from(len).map_err(|_| crate::EncodeError::TooLong { len })?;
        let mut out = Vec::with_capacity(len);
        self.header.write(length, &mut out);
        out.extend_from_slice(&self.body);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_fields_sit_where_the_table_says() {
        let bytes = [
            0x01, 0x02, 0x00, 0x00, 0xAB, 0xCD, 0x04, 0x0C, 0x07, 0x2A, 0xFF, 0xEE,
        ];
        let datagram = Datagram::decode(&bytes).unwrap();
        assert_eq!(datagram.header.source, Address(0x0102));
        assert_eq!(datagram.header.destination, Address::CONTROLLER);
        assert_eq!(datagram.header.next_hop, Address(0xABCD));
        assert_eq!(datagram.header.packet_type, PacketType::RESPONSE);
        assert_eq!(datagram.header.ttl, 7);
        assert_eq!(datagram.header.message_id, 42);
        assert_eq!(datagram.body, [0xFF, 0xEE]);
        assert_eq!(datagram.encode().unwrap(), bytes);
    }

    #[test]
    fn short_and_mislabelled_datagrams_are_refused() {
        assert_eq!(
            Datagram::decode(&[0; 9]),
            Err(DecodeError::Short { len: 9 })
        );
        let mut bytes = [0u8; 12];
        bytes[7] = 11;
        assert_eq!(
            Datagram::decode(&bytes),
            Err(DecodeError::LengthMismatch {
                declared: 11,
                actual: 12
            })
        );
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly_and_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(datagram) = Datagram::decode(&bytes) {
                prop_assert_eq!(datagram.encode().unwrap(), bytes);
            }
        }
    }
}
