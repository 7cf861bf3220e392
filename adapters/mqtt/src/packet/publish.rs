//! PUBLISH (§3.3): where the topic, packet id, MQTT 5 properties and
//! payload are, and the same packet written again without its topic alias.

use fogbank_adapter::untrusted::excerpt;

use super::{PacketError, Reader, frame, write_varint};

/// What a PUBLISH packet carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    /// Empty when an MQTT 5 client names the topic by `alias` alone.
    pub topic: &'a str,
    pub alias: Option<u16>,
    pub qos: u8,
    pub dup: bool,
    /// 0 for QoS 0, which has none.
    pub pkid: u16,
    pub payload: &'a [u8],
    /// The first byte (type and flags).
    header: u8,
    /// MQTT 5 properties as sent (none before 5), and where the topic
    /// alias is among them.
    v5: bool,
    pub(super) properties: &'a [u8],
    alias_at: Option<std::ops::Range<usize>>,
}

impl Publish<'_> {
    /// Whether the broker is to keep it for later subscribers.
    pub fn retain(&self) -> bool {
        self.header & 0x01 != 0
    }

    /// The same packet naming `topic` in full, without a topic alias.
    /// Aliases belong to one connection (a broker never passes them on):
    /// resolved here, an aliased message reaches every subscriber whole.
    pub fn without_alias(&self, topic: &str) -> Vec<u8> {
        let mut properties = self.properties.to_vec();
        if let Some(at) = self.alias_at.clone() {
            properties.drain(at);
        }
        let properties = self.v5.then_some(&properties[..]);
        write_publish(
            self.header,
            topic.as_bytes(),
            self.pkid,
            properties,
            self.payload,
        )
    }
}

/// A PUBLISH packet: `header` (type and flags; the packet id is written
/// when its QoS is above 0), then the topic, the MQTT 5 `properties`
/// (`None` for 3.1.1) and the payload.
pub(super) fn write_publish(
    header: u8,
    topic: &[u8],
    pkid: u16,
    properties: Option<&[u8]>,
    payload: &[u8],
) -> Vec<u8> {
    let properties_length = properties.map_or(0, |p| 4 + p.len());
    let mut body = Vec::with_capacity(2 + topic.len() + 2 + properties_length + payload.len());
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic);
    if (header >> 1) & 0x03 > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if let Some(properties) = properties {
        write_varint(&mut body, properties.len());
        body.extend_from_slice(properties);
    }
    body.extend_from_slice(payload);
    frame(header, &body)
}

/// Whether `topic` is a topic name (§4.7): not empty, without wildcards
/// or U+0000.
fn names_a_topic(topic: &[u8]) -> bool {
    !topic.is_empty() && !topic.iter().any(|b| b"+#\0".contains(b))
}

/// The MQTT 5 property that names a topic by number (§3.3.2.3.4).
const TOPIC_ALIAS: usize = 0x23;
/// The one MQTT 5 property a packet may carry more than once.
const USER_PROPERTY: usize = 0x26;

/// Reads one whole PUBLISH packet (`v5`: with MQTT 5 properties).
pub fn publish(packet: &[u8], v5: bool) -> Result<Publish<'_>, PacketError> {
    let header = packet.first().copied().unwrap_or(0);
    let qos = (header >> 1) & 0x03;
    if qos == 3 {
        return Err(PacketError::QoS);
    }
    let mut reader = Reader::body(packet, "PUBLISH")?;
    let topic = std::str::from_utf8(reader.string()?).map_err(|_| PacketError::Topic)?;
    let pkid = if qos > 0 { reader.u16()? } else { 0 };
    let mut alias = None;
    let mut alias_at = None;
    let mut raw_properties: &[u8] = &[];
    let mut utf8_payload = false;
    if v5 {
        let length = reader.varint()?;
        raw_properties = reader.take(length)?;
        let mut properties = Reader {
            bytes: raw_properties,
            what: "PUBLISH property",
        };
        let mut seen = Vec::new();
        while !properties.bytes.is_empty() {
            let start = raw_properties.len() - properties.bytes.len();
            let id = properties.varint()?;
            // Every property but the user property at most once (MQTT 5
            // §2.2.2.2).
            if id != USER_PROPERTY && seen.contains(&id) {
                return Err(PacketError::Property(id));
            }
            seen.push(id);
            match id {
                TOPIC_ALIAS => {
                    alias = Some(properties.u16()?);
                    alias_at = Some(start..raw_properties.len() - properties.bytes.len());
                }
                // Byte: payload format indicator (1: UTF-8).
                0x01 => utf8_payload = properties.u8()? == 1,
                // Four-byte integer: message expiry interval.
                0x02 => drop(properties.take(4)?),
                // A topic a responder publishes to: a topic name (§3.3.2.3.5).
                0x08 => {
                    let response = properties.string()?;
                    if !names_a_topic(response) {
                        let response = String::from_utf8_lossy(response);
                        return Err(PacketError::TopicName(excerpt(&response)));
                    }
                }
                // Strings or binary data: content type, correlation data.
                0x03 | 0x09 => drop(properties.string()?),
                // A subscription identifier is the server's to send
                // (MQTT 5 §3.3.4): any other is a protocol error.
                // String pair: user property.
                USER_PROPERTY => {
                    properties.string()?;
                    properties.string()?;
                }
                other => return Err(PacketError::Property(other)),
            }
        }
    }
    // An MQTT 5 alias may stand in for an empty topic.
    if !(names_a_topic(topic.as_bytes()) || topic.is_empty() && alias.is_some()) {
        return Err(PacketError::TopicName(excerpt(topic)));
    }
    if utf8_payload && std::str::from_utf8(reader.bytes).is_err() {
        return Err(PacketError::PayloadFormat);
    }
    Ok(Publish {
        topic,
        alias,
        qos,
        dup: header & 0x08 != 0,
        pkid,
        payload: reader.bytes,
        header,
        v5,
        properties: raw_properties,
        alias_at,
    })
}
