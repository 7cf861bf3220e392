//! What can be wrong with a datagram, each with a short reason that the
//! gateway and the controller count by in `/metrics`.

/// Why a datagram is not an S-MANAGE packet. A malformed packet is dropped
/// and counted, never answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{len} bytes is shorter than the 10-byte header")]
    Short { len: usize },
    #[error("the length byte says {declared} but the datagram has {actual} bytes")]
    LengthMismatch { declared: u8, actual: usize },
    #[error("a {packet_type} body of {len} bytes does not fit its type")]
    Body {
        packet_type: &'static str,
        len: usize,
    },
    #[error("impossible {what}: {value}")]
    ImpossibleEntry { what: &'static str, value: u8 },
    #[error("{what} is not ASCII")]
    NotAscii { what: &'static str },
}

impl DecodeError {
    /// The label `/metrics` counts this error under.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Short { .. } => "short",
            DecodeError::LengthMismatch { .. } => "length",
            DecodeError::Body { .. } => "body",
            DecodeError::ImpossibleEntry { .. } => "entry",
            DecodeError::NotAscii { .. } => "ascii",
        }
    }

    /// Every reason [`DecodeError::reason`] can give, so a counter can be
    /// shown at zero before its first packet.
    pub const REASONS: [&'static str; 5] = ["short", "length", "body", "entry", "ascii"];
}

/// Why a packet cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("the packet would be {len} bytes; S-MANAGE packets are at most 255")]
    TooLong { len: usize },
    #[error("{what} is {len} bytes; a length byte holds at most 255")]
    FieldTooLong { what: &'static str, len: usize },
    #[error("{what} is not ASCII")]
    NotAscii { what: &'static str },
    #[error("type code {code:#04x} is a control type; application data must use another")]
    DataTypeReserved { code: u8 },
}
