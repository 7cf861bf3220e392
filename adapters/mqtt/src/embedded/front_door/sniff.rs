//! The first bytes of a connection: they must be an MQTT CONNECT, whose
//! protocol level picks the broker listener. Refused as soon as they tell
//! otherwise, or that the CONNECT is larger than allowed.

use std::io;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::packet;

use super::invalid;

/// Why a connection's first bytes are not an MQTT CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniffError {
    #[error("the first packet is not CONNECT (header byte {0:#04x})")]
    NotConnect(u8),
    #[error("the CONNECT packet's remaining length is malformed")]
    Length,
    #[error("the CONNECT packet names no MQTT protocol")]
    ProtocolName,
    #[error("a CONNECT of {length} bytes, over the {limit} allowed")]
    TooLarge { length: usize, limit: usize },
}

/// The protocol level of the CONNECT packet that `prefix` begins with, or
/// `None` while more bytes are needed to tell.
pub fn protocol_level(prefix: &[u8]) -> Result<Option<u8>, SniffError> {
    let Some(&header) = prefix.first() else {
        return Ok(None);
    };
    // CONNECT is packet type 1 with all flag bits zero (MQTT 3.1.1 §3.1.1).
    if header != 0x10 {
        return Err(SniffError::NotConnect(header));
    }
    // Remaining length: one to four bytes, seven bits each.
    let mut at = 1;
    loop {
        let Some(&byte) = prefix.get(at) else {
            return Ok(None);
        };
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at == 5 {
            return Err(SniffError::Length);
        }
    }
    let Some(name_length) = prefix.get(at..at + 2) else {
        return Ok(None);
    };
    let name_length = usize::from(u16::from_be_bytes([name_length[0], name_length[1]]));
    at += 2;
    let expected: &[u8] = match name_length {
        4 => b"MQTT",
        6 => b"MQIsdp",
        _ => return Err(SniffError::ProtocolName),
    };
    let seen = &prefix[at.min(prefix.len())..(at + name_length).min(prefix.len())];
    if !expected.starts_with(seen) {
        return Err(SniffError::ProtocolName);
    }
    Ok(prefix.get(at + name_length).copied())
}

/// Reads the whole CONNECT packet (and whatever came after it into
/// `prefix`); returns it and its length. One over `limit` bytes is refused
/// as soon as its fixed header tells, before its body is read.
pub(super) async fn read_connect(
    device: &mut TcpStream,
    prefix: &mut Vec<u8>,
    limit: usize,
) -> io::Result<(packet::Connect, usize)> {
    loop {
        // Refuse what is not MQTT as soon as the first bytes tell.
        protocol_level(prefix).map_err(invalid)?;
        if let Some(length) = packet::frame_length(prefix).map_err(invalid)?
            && length > limit
        {
            return Err(invalid(SniffError::TooLarge { length, limit }));
        }
        if let Some(connect) = packet::complete(prefix).map_err(invalid)?.first() {
            return Ok((packet::connect(connect).map_err(invalid)?, connect.len()));
        }
        if device.read_buf(prefix).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The sniffing error that `error` carries, if it is one.
pub(super) fn sniff_error(error: &io::Error) -> Option<&SniffError> {
    error.get_ref()?.downcast_ref::<SniffError>()
}
