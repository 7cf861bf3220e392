//! Just enough of the MQTT wire format (3.1.1 and 5) for the front door to
//! read devices' messages as they pass: where each packet ends, what a
//! PUBLISH carries, whose session a CONNECT opens and whether the broker
//! accepted it, which topic filters a SUBSCRIBE asks for, and which publish
//! an acknowledgement is for. Everything else is passed on untouched.
//!
//! Pure functions of bytes; nothing here trusts a length it has not
//! checked against the buffer.

use fogbank_adapter::untrusted::excerpt;

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
    let mut packets = Vec::new();
    let mut rest = buffer;
    while let Some(length) = frame_length(rest)? {
        let Some(packet) = rest.get(..length) else {
            break;
        };
        packets.push(packet);
        rest = &rest[length..];
    }
    Ok(packets)
}

/// A cursor over the variable part of one packet.
struct Reader<'a> {
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
    properties: &'a [u8],
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
fn write_publish(
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn string(s: &[u8]) -> Vec<u8> {
        let mut out = (s.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(s);
        out
    }

    #[test]
    fn a_qos1_publish_as_a_311_client_sends_it() {
        // mosquitto_pub -q 1 -t things/bench/level -m 42, as captured.
        let bytes = b"\x32\x18\x00\x12things/bench/level\x00\x0742";
        assert_eq!(frame_length(bytes), Ok(Some(bytes.len())));
        let read = publish(bytes, false).unwrap();
        assert_eq!(
            (read.topic, read.alias, read.qos, read.dup, read.pkid),
            ("things/bench/level", None, 1, false, 7)
        );
        assert_eq!(read.payload, b"42");
        // Nothing to resolve: the same bytes come back.
        assert_eq!(read.without_alias(read.topic), bytes);
    }

    #[test]
    fn mqtt5_properties_are_skipped_and_the_alias_kept() {
        let properties = [
            &[0x01, 0x01][..],
            &[0x23, 0x00, 0x05],
            &[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v'],
        ]
        .concat();
        let bytes = write_publish(0x3a, b"", 9, Some(&properties), b"21.5");
        let read = publish(&bytes, true).unwrap();
        assert_eq!(read.alias, Some(5));
        assert_eq!(read.topic, "");
        assert_eq!((read.qos, read.dup, read.pkid), (1, true, 9));
        assert_eq!(read.payload, b"21.5");

        let resolved = read.without_alias("things/t-1/temperature");
        assert_eq!(frame_length(&resolved), Ok(Some(resolved.len())));
        let again = publish(&resolved, true).unwrap();
        assert_eq!(again.topic, "things/t-1/temperature");
        assert_eq!(again.alias, None);
        assert_eq!((again.qos, again.dup, again.pkid), (1, true, 9));
        assert_eq!(again.payload, b"21.5");
        // The other properties stay.
        assert_eq!(
            again.properties,
            [0x01, 0x01, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v']
        );
    }

    #[test]
    fn a_publish_names_one_topic() {
        for (topic, v5) in [
            (&b""[..], false),
            (b"", true),
            (b"things/#", false),
            (b"things/+/level", true),
            (b"things/a\0b", false),
        ] {
            let bytes = write_publish(0x30, topic, 0, v5.then_some(&[][..]), b"1");
            assert!(
                matches!(publish(&bytes, v5), Err(PacketError::TopicName(_))),
                "{topic:?}"
            );
        }
    }

    #[test]
    fn mqtt5_properties_follow_their_rules() {
        let with = |properties: &[u8], payload: &[u8]| {
            let bytes = write_publish(0x30, b"things/t-1/level", 0, Some(properties), payload);
            publish(&bytes, true).map(|p| p.payload.to_vec())
        };
        let user = [&[0x26][..], &string(b"k"), &string(b"v")].concat();
        let response = |topic: &[u8]| [&[0x08][..], &string(topic)].concat();
        // User properties may repeat; nothing else may.
        assert!(with(&[&user[..], &user].concat(), b"1").is_ok());
        assert_eq!(
            with(&[0x01, 0x00, 0x01, 0x00], b"1"),
            Err(PacketError::Property(0x01))
        );
        assert_eq!(
            with(&[&response(b"a/b")[..], &response(b"c")].concat(), b"1"),
            Err(PacketError::Property(0x08))
        );
        // A response topic is a topic name.
        assert!(with(&response(b"replies/gw-1"), b"1").is_ok());
        assert!(matches!(
            with(&response(b"replies/#"), b"1"),
            Err(PacketError::TopicName(_))
        ));
        // A payload said to be UTF-8 must be.
        assert!(with(&[0x01, 0x01], "21.5 °C".as_bytes()).is_ok());
        assert_eq!(
            with(&[0x01, 0x01], b"\xff\xfe"),
            Err(PacketError::PayloadFormat)
        );
        assert!(with(&[0x01, 0x00], b"\xff\xfe").is_ok());
    }

    #[test]
    fn connects_of_both_levels_name_their_client() {
        let mut v4 = string(b"MQTT");
        v4.extend_from_slice(&[4, 0x00, 0x00, 0x3c]);
        v4.extend(string(b"sensor-1"));
        assert_eq!(
            connect(&frame(0x10, &v4)),
            Ok(Connect {
                level: 4,
                client_id: "sensor-1".into()
            })
        );
        let mut v5 = string(b"MQTT");
        v5.extend_from_slice(&[5, 0x02, 0x00, 0x3c, 0x03, 0x21, 0x00, 0x0a]);
        v5.extend(string(b"sensor-2"));
        assert_eq!(connect(&frame(0x10, &v5)).unwrap().client_id, "sensor-2");
        assert_eq!(connect(b"\x30\x00"), Err(PacketError::NotConnect));
    }

    #[test]
    fn acknowledgements_name_their_publish() {
        assert_eq!(acknowledged(b"\x40\x02\x00\x07"), Some(7));
        assert_eq!(acknowledged(b"\x50\x02\x01\x00"), Some(256));
        assert_eq!(acknowledged(b"\x90\x03\x00\x01\x00"), None);
        assert_eq!(acknowledged(b"\x40\x01\x00"), None);
    }

    #[test]
    fn only_whole_packets_are_complete() {
        let stream = b"\x40\x02\x00\x07\xc0\x00\x30\x05\x00";
        assert_eq!(
            complete(stream),
            Ok(vec![&b"\x40\x02\x00\x07"[..], &b"\xc0\x00"[..]])
        );
        assert_eq!(complete(b""), Ok(vec![]));
        assert_eq!(
            complete(b"\xc0\x00\x30\xff\xff\xff\xff\x01"),
            Err(PacketError::Length)
        );
    }

    #[test]
    fn what_a_connected_client_may_send() {
        // MQTT 3.1.1 §2.2.1: 1 CONNECT .. 14 DISCONNECT; 0 and 15 reserved.
        let client = [3, 4, 5, 6, 7, 8, 10, 12, 14];
        let server_only_or_reserved = [0, 1, 2, 9, 11, 13];
        for v5 in [false, true] {
            for kind in client {
                assert!(client_may_send(kind, v5), "{kind}");
            }
            for kind in server_only_or_reserved {
                assert!(!client_may_send(kind, v5), "{kind}");
            }
        }
        // AUTH is MQTT 5's, in both directions.
        assert!(client_may_send(AUTH, true));
        assert!(!client_may_send(AUTH, false));
    }

    #[test]
    fn a_topic_in_an_error_is_an_excerpt() {
        // A wildcard at the end of a 60 000-byte topic: the error names
        // its start, not all of it (it goes into a log line).
        let topic = format!("things/{}/#", "t".repeat(60_000));
        let body = [&(topic.len() as u16).to_be_bytes()[..], topic.as_bytes()].concat();
        let mut packet = vec![0x30];
        let mut length = body.len();
        while length > 0x7f {
            packet.push((length & 0x7f) as u8 | 0x80);
            length >>= 7;
        }
        packet.push(length as u8);
        packet.extend_from_slice(&body);
        let error = publish(&packet, false).unwrap_err();
        assert!(matches!(error, PacketError::TopicName(_)));
        assert!(error.to_string().len() < 200, "{error}");
    }

    #[test]
    fn subscribe_connack_and_puback_as_clients_and_brokers_send_them() {
        // SUBSCRIBE as MQTT 3.1.1 §3.8 and MQTT 5 §3.8 lay it out: packet
        // id, (5: properties,) then each filter and its options byte.
        let v4 = b"\x82\x1a\x00\x01\x00\x08things/#\x00\x00\x0a$share/g/x\x00";
        assert_eq!(
            subscription_filters(v4, false),
            Ok(vec!["things/#", "$share/g/x"])
        );
        let v5 = b"\x82\x0e\x00\x01\x00\x00\x08things/#\x00";
        assert_eq!(subscription_filters(v5, true), Ok(vec!["things/#"]));
        assert_eq!(
            subscription_filters(b"\x82\x02\x00\x01", false),
            Err(PacketError::Filter)
        );
        assert_eq!(
            subscription_filters(b"\x82\x06\x00\x01\x00\x02\xff\xfe", false),
            Err(PacketError::Filter)
        );
        assert!(matches!(
            subscription_filters(b"\x82\x05\x00\x01\x00\x08t", false),
            Err(PacketError::Truncated(_))
        ));

        assert!(connack_accepts(b"\x20\x02\x00\x00"));
        assert!(connack_accepts(b"\x20\x03\x00\x00\x00")); // MQTT 5, no properties
        assert!(!connack_accepts(b"\x20\x02\x00\x05")); // not authorised
        assert!(!connack_accepts(b"\x20\x03\x00\x87\x00"));
        assert!(!connack_accepts(b"\x40\x02\x00\x00"));

        assert_eq!(puback(0x1234), *b"\x40\x02\x12\x34");
        assert_eq!(acknowledged(&puback(7)), Some(7));
    }

    #[test]
    fn lengths_need_their_whole_header() {
        assert_eq!(frame_length(b""), Ok(None));
        assert_eq!(frame_length(b"\x30"), Ok(None));
        assert_eq!(frame_length(b"\x30\x80"), Ok(None));
        assert_eq!(frame_length(b"\x30\x80\x01"), Ok(Some(3 + 128)));
        assert_eq!(frame_length(b"\xc0\x00"), Ok(Some(2)));
        assert_eq!(
            frame_length(b"\x30\xff\xff\xff\xff\x01"),
            Err(PacketError::Length)
        );
    }

    proptest! {
        #[test]
        fn any_bytes_are_answered_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = frame_length(&bytes);
            let _ = publish(&bytes, false);
            let _ = publish(&bytes, true);
            let _ = connect(&bytes);
            let _ = acknowledged(&bytes);
            let _ = connack_accepts(&bytes);
            let _ = subscription_filters(&bytes, false);
            let _ = subscription_filters(&bytes, true);
        }

        #[test]
        fn subscriptions_read_back(
            filters in proptest::collection::vec("[a-z/+#$]{0,20}", 1..5),
            pkid in any::<u16>(),
            v5 in any::<bool>(),
        ) {
            let mut body = pkid.to_be_bytes().to_vec();
            if v5 {
                body.extend([2, 0x0b, 7]); // a subscription identifier
            }
            for filter in &filters {
                body.extend(string(filter.as_bytes()));
                body.push(1);
            }
            let bytes = frame(0x82, &body);
            let read = subscription_filters(&bytes, v5).unwrap();
            prop_assert_eq!(read, filters.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn resolving_an_alias_keeps_everything_else(
            topic in "[a-z/]{1,40}",
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            qos in 0u8..3,
            pkid in 1u16..,
            alias in 1u16..,
            user in proptest::option::of("[a-z]{0,8}"),
        ) {
            let mut properties = vec![0x23];
            properties.extend_from_slice(&alias.to_be_bytes());
            if let Some(user) = &user {
                properties.push(0x26);
                properties.extend(string(user.as_bytes()));
                properties.extend(string(b"v"));
            }
            let bytes = write_publish(0x30 | (qos << 1), b"", pkid, Some(&properties), &payload);
            let read = publish(&bytes, true).unwrap();
            prop_assert_eq!(read.alias, Some(alias));
            let resolved = read.without_alias(&topic);
            prop_assert_eq!(frame_length(&resolved), Ok(Some(resolved.len())));
            let again = publish(&resolved, true).unwrap();
            prop_assert_eq!(again.topic, topic.as_str());
            prop_assert_eq!(again.alias, None);
            prop_assert_eq!(again.payload, &payload[..]);
            prop_assert_eq!((again.qos, again.pkid), (qos, if qos > 0 { pkid } else { 0 }));
            prop_assert_eq!(again.properties.len(), properties.len() - 3);
        }

        #[test]
        fn publishes_read_back(
            topic in "[a-z/]{1,40}",
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            qos in 0u8..3,
            pkid in 1u16..,
            dup in any::<bool>(),
        ) {
            let header = 0x30 | (qos << 1) | if dup { 0x08 } else { 0 };
            let bytes = write_publish(header, topic.as_bytes(), pkid, None, &payload);
            prop_assert_eq!(frame_length(&bytes), Ok(Some(bytes.len())));
            let read = publish(&bytes, false).unwrap();
            prop_assert_eq!(read.topic, topic.as_str());
            prop_assert_eq!(read.payload, &payload[..]);
            prop_assert_eq!(read.pkid, if qos > 0 { pkid } else { 0 });
            prop_assert_eq!(read.dup, dup);
        }
    }
}
