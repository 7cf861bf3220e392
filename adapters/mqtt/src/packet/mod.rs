//! Just enough of the MQTT wire format (3.1.1 and 5) for the front door to
//! read devices' messages as they pass: where each packet ends, what a
//! PUBLISH carries, whose session a CONNECT opens and whether the broker
//! accepted it, which topic filters a SUBSCRIBE asks for, and which publish
//! an acknowledgement is for. Everything else is passed on untouched.
//!
//! Pure functions of bytes; nothing here trusts a length it has not
//! checked against the buffer.
//!
//! Here: framing, the fixed header, and the small packets; [`publish`]
//! reads and rewrites PUBLISH, the one packet whose content matters.

mod publish;
#[cfg(test)]
mod tests;

pub use publish::{Publish, publish};

/// Why bytes are not the MQTT packet they claim to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("a remaining length longer than four bytes")]
    Length,
    #[error("a {0} packet ends early")]
    Truncated(&'static str),
    #[error("a topic name that is not UTF-8")]
    Topic,
    /// MQTT 3.1.1 §4.7, MQTT 5 §4.7: a PUBLISH names one topic, never
    /// empty (an MQTT 5 alias may stand in), without wildcards or U+0000.
    /// The topic as an excerpt: the error goes into log lines.
    #[error("a PUBLISH to \"{0}\", which is not a topic name")]
    TopicName(String),
    #[error(
        "a PUBLISH with property {0:#04x}, which a client's PUBLISH does not carry (or not twice)"
    )]
    Property(usize),
    #[error("a PUBLISH with QoS 3")]
    QoS,
    #[error("a PUBLISH that says its payload is UTF-8, and it is not")]
    PayloadFormat,
    #[error("the first packet is not CONNECT")]
    NotConnect,
    #[error("a SUBSCRIBE without a topic filter, or with one that is not UTF-8")]
    Filter,
}

/// Packet types (MQTT 3.1.1 §2.2.1, the same in 5).
pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const UNSUBACK: u8 = 11;
pub const PINGRESP: u8 = 13;
/// MQTT 5's AUTH; reserved in 3.1.1.
pub const AUTH: u8 = 15;

/// Whether a client may send a packet of type `kind` once connected:
/// not a second CONNECT (MQTT 3.1.1 §3.1.0-2, MQTT 5 §3.1), nothing only
/// a server sends, nothing reserved (type 0, and 15 before MQTT 5).
pub fn client_may_send(kind: u8, v5: bool) -> bool {
    match kind {
        0 | CONNECT | CONNACK | SUBACK | UNSUBACK | PINGRESP => false,
        AUTH => v5,
        _ => true,
    }
}

/// The type of the packet that `packet` begins with.
pub fn kind(packet: &[u8]) -> Option<u8> {
    packet.first().map(|b| b >> 4)
}

/// The whole length of the packet at the start of `buffer`, header
/// included, once its header has arrived (`None` while more is needed).
pub fn frame_length(buffer: &[u8]) -> Result<Option<usize>, PacketError> {
    let mut remaining = 0usize;
    for (at, byte) in buffer.iter().enumerate().skip(1).take(4) {
        remaining |= usize::from(byte & 0x7f) << (7 * (at - 1));
        if byte & 0x80 == 0 {
            return Ok(Some(1 + at + remaining));
        }
    }
    if buffer.len() >= 5 {
        return Err(PacketError::Length);
    }
    Ok(None)
}

/// The complete packets at the start of `buffer`, in order; a packet
/// still arriving is left out.
pub fn complete(buffer: &[u8]) -> Result<Vec<&[u8]>, PacketError> {
    // Counted first, so the list is allocated once: a read under load
    // holds a few hundred packets, and growing the list step by step was a
    // run of reallocations per read.
    let (mut rest, mut count) = (buffer, 0);
    while next_complete(&mut rest)?.is_some() {
        count += 1;
    }
    let (mut rest, mut packets) = (buffer, Vec::with_capacity(count));
    while let Some(packet) = next_complete(&mut rest)? {
        packets.push(packet);
    }
    Ok(packets)
}

/// The complete packet at the start of `rest`, if there is one, taken off.
fn next_complete<'a>(rest: &mut &'a [u8]) -> Result<Option<&'a [u8]>, PacketError> {
    let Some(length) = frame_length(rest)? else {
        return Ok(None);
    };
    let Some(packet) = rest.get(..length) else {
        return Ok(None);
    };
    *rest = &rest[length..];
    Ok(Some(packet))
}

/// A cursor over the variable part of one packet.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PacketError> {
        if self.bytes.len() < n {
            return Err(PacketError::Truncated(self.what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, PacketError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PacketError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn string(&mut self) -> Result<&'a [u8], PacketError> {
        let length = usize::from(self.u16()?);
        self.take(length)
    }

    fn varint(&mut self) -> Result<usize, PacketError> {
        let mut value = 0usize;
        for shift in 0..4 {
            let byte = self.u8()?;
            value |= usize::from(byte & 0x7f) << (7 * shift);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(PacketError::Length)
    }

    /// Skips the fixed header of a packet already framed.
    fn body(packet: &'a [u8], what: &'static str) -> Result<Self, PacketError> {
        let mut reader = Reader {
            bytes: packet,
            what,
        };
        reader.u8()?;
        reader.varint()?;
        Ok(reader)
    }
}

/// A packet of `body` behind its fixed header (§2.2).
fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(body.len() + 5);
    packet.push(header);
    write_varint(&mut packet, body.len());
    packet.extend_from_slice(body);
    packet
}

/// MQTT's variable byte integer (§1.5.5).
fn write_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value % 128) as u8;
        value /= 128;
        out.push(if value > 0 { byte | 0x80 } else { byte });
        if value == 0 {
            return;
        }
    }
}

/// What the front door needs of a CONNECT: the protocol level and the
/// client identifier (whose session the publishes belong to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub level: u8,
    pub client_id: String,
}

/// Reads one whole CONNECT packet.
pub fn connect(packet: &[u8]) -> Result<Connect, PacketError> {
    if kind(packet) != Some(CONNECT) {
        return Err(PacketError::NotConnect);
    }
    let mut reader = Reader::body(packet, "CONNECT")?;
    reader.string()?; // protocol name
    let level = reader.u8()?;
    reader.u8()?; // flags
    reader.u16()?; // keep alive
    if level == 5 {
        let length = reader.varint()?;
        reader.take(length)?;
    }
    let client_id = String::from_utf8_lossy(reader.string()?).into_owned();
    Ok(Connect { level, client_id })
}

/// Whether `packet` is a CONNACK accepting the connection (return code or
/// reason code 0, the same byte in 3.1.1 and 5).
pub fn connack_accepts(packet: &[u8]) -> bool {
    kind(packet) == Some(CONNACK)
        && Reader::body(packet, "CONNACK")
            .and_then(|mut r| {
                r.u8()?; // acknowledge flags
                r.u8()
            })
            .is_ok_and(|code| code == 0)
}

/// The topic filters a SUBSCRIBE packet asks for (`v5`: with MQTT 5
/// properties and subscription options), as sent: a shared subscription
/// keeps its `$share/{group}/` prefix.
pub fn subscription_filters(packet: &[u8], v5: bool) -> Result<Vec<&str>, PacketError> {
    let mut reader = Reader::body(packet, "SUBSCRIBE")?;
    reader.u16()?; // packet id
    if v5 {
        let length = reader.varint()?;
        reader.take(length)?;
    }
    let mut filters = Vec::new();
    while !reader.bytes.is_empty() {
        let filter = std::str::from_utf8(reader.string()?).map_err(|_| PacketError::Filter)?;
        reader.u8()?; // requested QoS (3.1.1) or subscription options (5)
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(PacketError::Filter);
    }
    Ok(filters)
}

/// The PUBACK of the QoS 1 publish `pkid`, success: the same four bytes
/// in 3.1.1 and 5 (MQTT 5 §3.4.2.1 lets a success leave out its reason
/// code and properties).
pub fn puback(pkid: u16) -> [u8; 4] {
    let [high, low] = pkid.to_be_bytes();
    [PUBACK << 4, 2, high, low]
}

/// The packet id a PUBACK (QoS 1) or PUBREC (QoS 2) acknowledges: after
/// it the client does not send that PUBLISH again.
pub fn acknowledged(packet: &[u8]) -> Option<u16> {
    match kind(packet)? {
        PUBACK | PUBREC => Reader::body(packet, "PUBACK").ok()?.u16().ok(),
        _ => None,
    }
}
