//! What a received MAC frame means: readings of a device, in our compact
//! format (dispatch `0x01` + SenML-CBOR) or as CoAP over 6LoWPAN, and the
//! CoAP acknowledgement owed for a confirmable message. Pure apart from
//! the fragment reassembly state it is handed.

use std::time::Instant;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use fogbank_coap_protocol::message::{format, uint_option};
use fogbank_taas::id::sanitize_segment;
use fogbank_taas::{Timestamp, Value, senml};

use crate::mac::{Address, Frame, FrameKind};
use crate::sixlowpan::{self, Link, LowpanError, Reassembly};

/// Our compact format: dispatch byte, then a SenML-CBOR pack.
pub const COMPACT_READINGS: u8 = 0x01;
/// Downlink commands in the compact format.
pub const COMPACT_COMMAND: u8 = 0x02;
pub const COAP_PORT: u16 = 5683;

/// One value a device sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub resource: String,
    pub value: Value,
    pub unit: Option<String>,
    pub time: Timestamp,
}

/// How a device speaks, which decides how commands reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialect {
    Compact,
    /// CoAP over 6LoWPAN: the resource's URI path.
    Coap {
        path: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    /// `00124b0006142f9b`, or `abcd-0001` (PAN and short address).
    pub device: String,
    pub address: Address,
    pub samples: Samples,
    /// A 6LoWPAN payload to send back to the device (a CoAP ACK).
    pub reply: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UplinkError {
    #[error("unknown dispatch byte {0:#04x}")]
    Dispatch(u8),
    #[error("empty payload")]
    Empty,
    #[error("SenML: {0}")]
    Senml(String),
    #[error("6LoWPAN: {0}")]
    Lowpan(#[from] LowpanError),
    #[error("UDP to port {0}, not CoAP")]
    NotCoap(u16),
    #[error("CoAP: {0}")]
    Coap(String),
    #[error("a reading without a resource name")]
    Unnamed,
}

/// The device name of a MAC source address.
pub fn device_name(address: Address, pan: u16) -> String {
    match address {
        Address::Short(_) => format!("{pan:04x}-{address}"),
        other => other.to_string(),
    }
}

/// Decodes a data frame; `Ok(None)` for frames that carry no readings
/// (ACK, beacon, command frames; a fragment of an incomplete datagram).
pub fn decode(
    frame: &Frame<'_>,
    own: Address,
    reassembly: &mut Reassembly,
    now: Timestamp,
    clock: Instant,
) -> Result<Option<Uplink>, UplinkError> {
    if frame.kind != FrameKind::Data {
        return Ok(None);
    }
    let pan = frame.pan();
    let device = device_name(frame.source, pan);
    let uplink = |samples, reply| Uplink {
        device: device.clone(),
        address: frame.source,
        samples,
        reply,
    };
    let dispatch = *frame.payload.first().ok_or(UplinkError::Empty)?;
    let link = Link {
        source: frame.source,
        destination: frame.destination,
        pan,
    };
    let datagram = match dispatch {
        COMPACT_READINGS => {
            let samples = compact(&frame.payload[1..], now)?
                .into_iter()
                .map(|s| (s, Dialect::Compact))
                .collect();
            return Ok(Some(uplink(samples, None)));
        }
        0x60..=0x7f => sixlowpan::decompress(frame.payload, link)?,
        0xc0..=0xc7 | 0xe0..=0xe7 => match reassembly.fragment(frame.payload, link, clock)? {
            Some(datagram) => datagram,
            None => return Ok(None),
        },
        other => return Err(UplinkError::Dispatch(other)),
    };
    if datagram.destination_port != COAP_PORT {
        return Err(UplinkError::NotCoap(datagram.destination_port));
    }
    let (samples, reply) = coap(&datagram.payload, now)?;
    let reply = reply.map(|ack| {
        let back = Link {
            source: own,
            destination: frame.source,
            pan,
        };
        sixlowpan::compress(back, datagram.destination_port, datagram.source_port, &ack)
    });
    Ok(Some(uplink(samples, reply)))
}

/// The records of a SenML pack; each must name its resource.
fn senml_samples(
    records: Vec<senml::Resolved>,
    default: Option<&str>,
) -> Result<Vec<Sample>, UplinkError> {
    records
        .into_iter()
        .map(|r| {
            let name = match (r.name.as_str(), default) {
                ("", Some(default)) => default.to_owned(),
                ("", None) => return Err(UplinkError::Unnamed),
                (name, _) => sanitize_segment(name),
            };
            Ok(Sample {
                resource: name,
                value: r.value,
                unit: r.unit,
                time: r.time,
            })
        })
        .collect()
}

fn compact(pack: &[u8], now: Timestamp) -> Result<Vec<Sample>, UplinkError> {
    let error = |e: senml::SenmlError| UplinkError::Senml(e.to_string());
    let records = senml::resolve(&senml::parse_cbor(pack).map_err(error)?, now).map_err(error)?;
    senml_samples(records, None)
}

/// Samples, each with how its resource takes commands.
pub type Samples = Vec<(Sample, Dialect)>;

/// A CoAP message from a device: its samples, and the ACK it is owed.
fn coap(bytes: &[u8], now: Timestamp) -> Result<(Samples, Option<Vec<u8>>), UplinkError> {
    let packet = Packet::from_bytes(bytes).map_err(|e| UplinkError::Coap(e.to_string()))?;
    let path: Vec<String> = fogbank_coap_protocol::message::uri_path(&packet);
    let uri = format!("/{}", path.join("/"));
    let resource = (!path.is_empty()).then(|| sanitize_segment(&path.join("-")));
    let carries_values = matches!(
        packet.header.code,
        MessageClass::Request(RequestType::Post | RequestType::Put)
            | MessageClass::Response(ResponseType::Content | ResponseType::Changed)
    );
    if !carries_values {
        return Err(UplinkError::Coap(format!(
            "{:?} carries no reading",
            packet.header.code
        )));
    }
    let content_format =
        uint_option(&packet, CoapOption::ContentFormat).and_then(|f| u16::try_from(f).ok());
    let samples = match content_format {
        Some(format::SENML_JSON) | Some(format::SENML_CBOR) => {
            let error = |e: senml::SenmlError| UplinkError::Senml(e.to_string());
            let records = if content_format == Some(format::SENML_JSON) {
                senml::parse_json(&packet.payload)
            } else {
                senml::parse_cbor(&packet.payload)
            }
            .map_err(error)?;
            senml_samples(
                senml::resolve(&records, now).map_err(error)?,
                resource.as_deref(),
            )?
        }
        _ => {
            let sample =
                fogbank_coap_protocol::payload::decode(content_format, &packet.payload, None, now)
                    .map_err(|e| UplinkError::Coap(e.to_string()))?;
            vec![Sample {
                resource: resource.clone().ok_or(UplinkError::Unnamed)?,
                value: sample.value,
                unit: sample.unit,
                time: sample.time,
            }]
        }
    };
    let samples = samples
        .into_iter()
        .map(|s| {
            let path = if resource.as_deref() == Some(s.resource.as_str()) {
                uri.clone()
            } else {
                format!("/{}", s.resource)
            };
            (s, Dialect::Coap { path })
        })
        .collect();
    let reply = (packet.header.get_type() == MessageType::Confirmable).then(|| {
        let mut ack = Packet::new();
        ack.header.set_type(MessageType::Acknowledgement);
        ack.header.message_id = packet.header.message_id;
        ack.header.code = match packet.header.code {
            MessageClass::Request(_) => MessageClass::Response(ResponseType::Changed),
            _ => MessageClass::Empty,
        };
        if matches!(packet.header.code, MessageClass::Request(_)) {
            ack.set_token(packet.get_token().to_vec());
        }
        ack.to_bytes().unwrap_or_default()
    });
    Ok((samples, reply))
}

/// The compact command frame payload: `0x02` + a SenML-CBOR record naming
/// the resource and carrying the value.
pub fn compact_command(resource: &str, value: &Value, now: Timestamp) -> Vec<u8> {
    let record = senml::Record::with_value(Some(resource.to_owned()), None, value, now);
    let mut payload = vec![COMPACT_COMMAND];
    payload.extend(senml::to_cbor(&[record]));
    payload
}

/// A confirmable CoAP PUT of `value` as text to `path`.
pub fn coap_put(path: &str, value: &Value, message_id: u16) -> Vec<u8> {
    let packet = fogbank_coap_protocol::endpoint::request_packet(
        RequestType::Put,
        path,
        &[],
        Some(format::TEXT),
        fogbank_coap_protocol::payload::plain_text(value),
        None,
    );
    let mut packet = packet;
    packet.header.set_type(MessageType::Confirmable);
    packet.header.message_id = message_id;
    packet.set_token(message_id.to_be_bytes().to_vec());
    packet.to_bytes().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac;
    use proptest::prelude::*;

    const NOW: Timestamp = Timestamp(1_800_000_000_000_000);
    const OWN: Address = Address::Short(0x0001);

    fn frame_from(source: Address, payload: &[u8]) -> Vec<u8> {
        mac::data_frame(9, 0xabcd, OWN, source, payload)
    }

    fn decode_bytes(bytes: &[u8]) -> Result<Option<Uplink>, UplinkError> {
        let frame = mac::parse(bytes, false).unwrap();
        decode(&frame, OWN, &mut Reassembly::default(), NOW, Instant::now())
    }

    #[test]
    fn a_compact_senml_pack() {
        // [{0: "temperature", 1: "Cel", 2: 21.5}]
        let mut payload = vec![COMPACT_READINGS, 0x81, 0xa3, 0x00, 0x6b];
        payload.extend_from_slice(b"temperature");
        payload.extend_from_slice(&[0x01, 0x63, b'C', b'e', b'l', 0x02, 0xf9, 0x4d, 0x60]);
        let uplink = decode_bytes(&frame_from(
            Address::Extended(0x0012_4b00_0614_2f9b),
            &payload,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(uplink.device, "00124b0006142f9b");
        let (sample, dialect) = &uplink.samples[0];
        assert_eq!(sample.resource, "temperature");
        assert_eq!(sample.value, Value::Number(21.5));
        assert_eq!(sample.unit.as_deref(), Some("Cel"));
        assert_eq!(dialect, &Dialect::Compact);
    }

    #[test]
    fn a_confirmable_coap_post_over_6lowpan_is_acknowledged() {
        let source = Address::Short(0x0042);
        let mut post = fogbank_coap_protocol::endpoint::request_packet(
            RequestType::Post,
            "/sensors/humidity",
            &[],
            Some(0),
            b"41.5".to_vec(),
            None,
        );
        post.header.set_type(MessageType::Confirmable);
        post.header.message_id = 77;
        post.set_token(vec![9]);
        let link = Link {
            source,
            destination: OWN,
            pan: 0xabcd,
        };
        let lowpan = sixlowpan::compress(link, 5683, COAP_PORT, &post.to_bytes().unwrap());
        let uplink = decode_bytes(&frame_from(source, &lowpan)).unwrap().unwrap();
        assert_eq!(uplink.device, "abcd-0042");
        let (sample, dialect) = &uplink.samples[0];
        assert_eq!(sample.resource, "sensors-humidity");
        assert_eq!(sample.value, Value::Number(41.5));
        assert_eq!(
            dialect,
            &Dialect::Coap {
                path: "/sensors/humidity".into()
            }
        );
        let reply = uplink.reply.unwrap();
        let back = Link {
            source: OWN,
            destination: source,
            pan: 0xabcd,
        };
        let datagram = sixlowpan::decompress(&reply, back).unwrap();
        let ack = Packet::from_bytes(&datagram.payload).unwrap();
        assert_eq!(ack.header.message_id, 77);
        assert_eq!(
            ack.header.code,
            MessageClass::Response(ResponseType::Changed)
        );
    }

    #[test]
    fn what_is_not_ours_is_an_error() {
        let source = Address::Short(5);
        assert_eq!(
            decode_bytes(&frame_from(source, &[0x03, 1])),
            Err(UplinkError::Dispatch(0x03))
        );
        assert_eq!(
            decode_bytes(&frame_from(source, &[])),
            Err(UplinkError::Empty)
        );
        assert!(decode_bytes(&frame_from(source, &[COMPACT_READINGS, 0xff])).is_err());
        // An ACK frame carries nothing.
        let ack = [0x02, 0x00, 0x11];
        let frame = mac::parse(&ack, false).unwrap();
        assert_eq!(
            decode(&frame, OWN, &mut Reassembly::default(), NOW, Instant::now()),
            Ok(None)
        );
    }

    #[test]
    fn commands_in_both_dialects() {
        let command = compact_command("lamp", &Value::Bool(true), NOW);
        assert_eq!(command[0], COMPACT_COMMAND);
        let records = senml::parse_cbor(&command[1..]).unwrap();
        assert_eq!(records[0].n.as_deref(), Some("lamp"));
        assert_eq!(records[0].vb, Some(true));
        let put = Packet::from_bytes(&coap_put("/actuators/lamp", &Value::Bool(false), 5)).unwrap();
        assert_eq!(put.payload, b"false");
    }

    proptest! {
        #[test]
        fn any_payload_decodes_or_fails_cleanly(payload in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode_bytes(&frame_from(Address::Short(7), &payload));
        }
    }
}
