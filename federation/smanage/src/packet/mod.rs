//! Every packet type's body as data, [`decode`] from bytes and
//! [`Packet::encode`] back. Decoding is total: any byte string is a packet
//! or a [`DecodeError`], and what decodes encodes to the same bytes.

use crate::entry::{
    CONFIGURING_ENTRY_LEN, ConfiguringEntry, FORWARDING_ENTRY_LEN, ForwardingEntry,
};
use crate::error::{DecodeError, EncodeError};
use crate::header::{Address, Datagram, HEADER_LEN, Header, MAX_PACKET_LEN, PacketType};

/// An SDVS's Hello: how busy it is, and its battery (255 = mains).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdvsStatus {
    pub state: u8,
    pub battery: u8,
}

impl SdvsStatus {
    pub const MAINS: u8 = 255;
}

/// A sample sent by a read instruction: `value × 10^exponent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SensorResponse {
    pub request_id: u16,
    pub service: u8,
    /// Unix seconds.
    pub time: u32,
    pub value: i32,
    pub exponent: i8,
}

/// One sensor service in a features list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureService {
    pub id: u8,
    pub on: bool,
    /// The thing service's type (`temperature`), ASCII.
    pub kind: String,
    /// The adapter behind it (`mqtt`), ASCII.
    pub driver: String,
}

/// What an SDVS is: its location and its sensor services.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Features {
    pub location: String,
    pub services: Vec<FeatureService>,
}

/// One forwarding entry's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwdStat {
    pub index: u8,
    pub ttl_left: u16,
    pub counter: u32,
}

/// One configuring entry's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigStat {
    pub request_id: u16,
    pub service: u8,
    pub ttl_left: u16,
    pub counter: u32,
    pub start_time: u32,
    pub running_time: u32,
    pub executed: bool,
}

const FWD_STAT_LEN: usize = 7;
const CONFIG_STAT_LEN: usize = 18;

/// A Report's kind and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Features(Features),
    ConfigurationRemove { request_id: u16, service: u8 },
    LowBatt { battery: u8 },
    FullTask { state: u8 },
    Completion { request_id: u16 },
}

impl Report {
    pub const FEATURES: u8 = 0x01;
    pub const CONFIGURATION_REMOVE: u8 = 0x02;
    pub const LOW_BATT: u8 = 0x03;
    pub const FULL_TASK: u8 = 0x04;
    pub const COMPLETION: u8 = 0x05;

    pub fn kind(&self) -> u8 {
        match self {
            Report::Features(_) => Self::FEATURES,
            Report::ConfigurationRemove { .. } => Self::CONFIGURATION_REMOVE,
            Report::LowBatt { .. } => Self::LOW_BATT,
            Report::FullTask { .. } => Self::FULL_TASK,
            Report::Completion { .. } => Self::COMPLETION,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Report::Features(_) => "ReportFeatures",
            Report::ConfigurationRemove { .. } => "ReportConfigurationRemove",
            Report::LowBatt { .. } => "ReportLowBatt",
            Report::FullTask { .. } => "ReportFullTask",
            Report::Completion { .. } => "ReportCompletion",
        }
    }
}

/// A packet's body, by type code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// From an SDVS with its status; from the controller, empty.
    Hello(Option<SdvsStatus>),
    Report(Report),
    /// The packet that matched no forwarding entry, whole.
    Request(Datagram),
    Response(SensorResponse),
    SetForwarding(ForwardingEntry),
    SetConfiguring(ConfiguringEntry),
    ModifyConfiguration(ConfiguringEntry),
    /// An entry's index, or 0xFF for all.
    RequestFwdStats {
        index: u8,
    },
    /// A request id, or 0xFFFF for all.
    RequestConfigStats {
        request_id: u16,
    },
    ResponseFwdStats(Vec<FwdStat>),
    ResponseConfigStats(Vec<ConfigStat>),
    RequestFeatures,
    ResponseFeatures(Features),
    /// A type code the protocol leaves to applications.
    Data {
        packet_type: u8,
        bytes: Vec<u8>,
    },
}

impl Body {
    pub fn packet_type(&self) -> u8 {
        match self {
            Body::Hello(_) => PacketType::HELLO,
            Body::Report(_) => PacketType::REPORT,
            Body::Request(_) => PacketType::REQUEST,
            Body::Response(_) => PacketType::RESPONSE,
            Body::SetForwarding(_) => PacketType::SET_FORWARDING,
            Body::SetConfiguring(_) => PacketType::SET_CONFIGURING,
            Body::ModifyConfiguration(_) => PacketType::MODIFY_CONFIGURATION,
            Body::RequestFwdStats { .. } => PacketType::REQUEST_FWD_STATS,
            Body::RequestConfigStats { .. } => PacketType::REQUEST_CONFIG_STATS,
            Body::ResponseFwdStats(_) => PacketType::RESPONSE_FWD_STATS,
            Body::ResponseConfigStats(_) => PacketType::RESPONSE_CONFIG_STATS,
            Body::RequestFeatures => PacketType::REQUEST_FEATURES,
            Body::ResponseFeatures(_) => PacketType::RESPONSE_FEATURES,
            Body::Data { packet_type, .. } => *packet_type,
        }
    }
}

/// A whole packet: addressing and a typed body. The header's type code
/// and length come from the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub source: Address,
    pub destination: Address,
    pub next_hop: Address,
    pub ttl: u8,
    pub message_id: u8,
    pub body: Body,
}

/// The most Response and forwarding entries that fit one packet.
pub const FWD_STATS_PER_PACKET: usize = (MAX_PACKET_LEN - HEADER_LEN) / FWD_STAT_LEN;
pub const CONFIG_STATS_PER_PACKET: usize = (MAX_PACKET_LEN - HEADER_LEN) / CONFIG_STAT_LEN;

/// Decodes one datagram.
pub fn decode(bytes: &[u8]) -> Result<Packet, DecodeError> {
    Packet::from_datagram(Datagram::decode(bytes)?)
}

impl Packet {
    pub fn header(&self) -> Header {
        Header {
            source: self.source,
            destination: self.destination,
            next_hop: self.next_hop,
            packet_type: self.body.packet_type(),
            ttl: self.ttl,
            message_id: self.message_id,
        }
    }

    /// Gives the opaque body of a datagram its type.
    pub fn from_datagram(datagram: Datagram) -> Result<Packet, DecodeError> {
        let header = datagram.header;
        let body = decode_body(header.packet_type, datagram.body)?;
        Ok(Packet {
            source: header.source,
            destination: header.destination,
            next_hop: header.next_hop,
            ttl: header.ttl,
            message_id: header.message_id,
            body,
        })
    }

    pub fn to_datagram(&self) -> Result<Datagram, EncodeError> {
        let mut body = Vec::new();
        encode_body(&self.body, &mut body)?;
        Ok(Datagram {
            header: self.header(),
            body,
        })
    }

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        self.to_datagram()?.encode()
    }
}

fn misfit(packet_type: u8, len: usize) -> DecodeError {
    DecodeError::Body {
        packet_type: PacketType::name(packet_type),
        len,
    }
}

fn fixed<const N: usize>(packet_type: u8, body: &[u8]) -> Result<&[u8; N], DecodeError> {
    body.try_into().map_err(|_| misfit(packet_type, body.len()))
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn decode_body(packet_type: u8, body: Vec<u8>) -> Result<Body, DecodeError> {
    let len = body.len();
    Ok(match packet_type {
        PacketType::HELLO => match body.as_slice() {
            [] => Body::Hello(None),
            [state, battery] => Body::Hello(Some(SdvsStatus {
                state: *state,
                battery: *battery,
            })),
            _ => return Err(misfit(packet_type, len)),
        },
        PacketType::REPORT => Body::Report(decode_report(&body)?),
        PacketType::REQUEST => {
            Body::Request(Datagram::decode(&body).map_err(|_| misfit(packet_type, len))?)
        }
        PacketType::RESPONSE => {
            let b = fixed::<12>(packet_type, &body)?;
            Body::Response(SensorResponse {
                request_id: be16(b, 0),
                service: b[2],
                time: be32(b, 3),
                value: be32(b, 7) as i32,
                exponent: b[11] as i8,
            })
        }
        PacketType::SET_FORWARDING => {
            Body::SetForwarding(ForwardingEntry::decode(fixed::<FORWARDING_ENTRY_LEN>(
                packet_type,
                &body,
            )?)?)
        }
        PacketType::SET_CONFIGURING => {
            Body::SetConfiguring(ConfiguringEntry::decode(fixed::<CONFIGURING_ENTRY_LEN>(
                packet_type,
                &body,
            )?)?)
        }
        PacketType::MODIFY_CONFIGURATION => Body::ModifyConfiguration(ConfiguringEntry::decode(
            fixed::<CONFIGURING_ENTRY_LEN>(packet_type, &body)?,
        )?),
        PacketType::REQUEST_FWD_STATS => Body::RequestFwdStats {
            index: fixed::<1>(packet_type, &body)?[0],
        },
        PacketType::REQUEST_CONFIG_STATS => Body::RequestConfigStats {
            request_id: be16(fixed::<2>(packet_type, &body)?, 0),
        },
        PacketType::RESPONSE_FWD_STATS => {
            if !len.is_multiple_of(FWD_STAT_LEN) {
                return Err(misfit(packet_type, len));
            }
            Body::ResponseFwdStats(
                body.chunks_exact(FWD_STAT_LEN)
                    .map(|c| FwdStat {
                        index: c[0],
                        ttl_left: be16(c, 1),
                        counter: be32(c, 3),
                    })
                    .collect(),
            )
        }
        PacketType::RESPONSE_CONFIG_STATS => {
            if !len.is_multiple_of(CONFIG_STAT_LEN) {
                return Err(misfit(packet_type, len));
            }
            let stats = body
                .chunks_exact(CONFIG_STAT_LEN)
                .map(|c| {
                    let executed = match c[17] {
                        b'Y' => true,
                        b'N' => false,
                        value => {
                            return Err(DecodeError::ImpossibleEntry {
                                what: "executed flag",
                                value,
                            });
                        }
                    };
                    Ok(ConfigStat {
                        request_id: be16(c, 0),
                        service: c[2],
                        ttl_left: be16(c, 3),
                        counter: be32(c, 5),
                        start_time: be32(c, 9),
                        running_time: be32(c, 13),
                        executed,
                    })
                })
                .collect::<Result<_, _>>()?;
            Body::ResponseConfigStats(stats)
        }
        PacketType::REQUEST_FEATURES if body.is_empty() => Body::RequestFeatures,
        PacketType::REQUEST_FEATURES => return Err(misfit(packet_type, len)),
        PacketType::RESPONSE_FEATURES => {
            let mut reader = Reader::new(&body, packet_type);
            let features = reader.features()?;
            reader.finish()?;
            Body::ResponseFeatures(features)
        }
        _ => Body::Data {
            packet_type,
            bytes: body,
        },
    })
}

fn decode_report(body: &[u8]) -> Result<Report, DecodeError> {
    let packet_type = PacketType::REPORT;
    let Some((&kind, rest)) = body.split_first() else {
        return Err(misfit(packet_type, 0));
    };
    let wrong = || misfit(packet_type, body.len());
    Ok(match kind {
        Report::FEATURES => {
            let mut reader = Reader::new(rest, packet_type);
            let features = reader.features()?;
            reader.finish().map_err(|_| wrong())?;
            Report::Features(features)
        }
        Report::CONFIGURATION_REMOVE => match rest {
            [hi, lo, service] => Report::ConfigurationRemove {
                request_id: u16::from_be_bytes([*hi, *lo]),
                service: *service,
            },
            _ => return Err(wrong()),
        },
        Report::LOW_BATT => match rest {
            [battery] => Report::LowBatt { battery: *battery },
            _ => return Err(wrong()),
        },
        Report::FULL_TASK => match rest {
            [state] => Report::FullTask { state: *state },
            _ => return Err(wrong()),
        },
        Report::COMPLETION => match rest {
            [hi, lo] => Report::Completion {
                request_id: u16::from_be_bytes([*hi, *lo]),
            },
            _ => return Err(wrong()),
        },
        value => {
            return Err(DecodeError::ImpossibleEntry {
                what: "report kind",
                value,
            });
        }
    })
}

/// Reads the length-prefixed fields of a features list.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    packet_type: u8,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], packet_type: u8) -> Self {
        Reader {
            bytes,
            at: 0,
            packet_type,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at + n;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| misfit(self.packet_type, self.bytes.len()))?;
        self.at = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn ascii(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.byte()?;
        let bytes = self.take(usize::from(len))?;
        if !bytes.is_ascii() {
            return Err(DecodeError::NotAscii { what });
        }
        Ok(bytes.iter().map(|b| char::from(*b)).collect())
    }

    fn features(&mut self) -> Result<Features, DecodeError> {
        let location = self.ascii("location")?;
        let count = self.byte()?;
        let mut services = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let id = self.byte()?;
            if id == 0 {
                return Err(DecodeError::ImpossibleEntry {
                    what: "sensor service",
                    value: 0,
                });
            }
            let on = match self.byte()? {
                1 => true,
                0 => false,
                value => {
                    return Err(DecodeError::ImpossibleEntry {
                        what: "service status",
                        value,
                    });
                }
            };
            let kind = self.ascii("service type")?;
            let driver = self.ascii("driver")?;
            services.push(FeatureService {
                id,
                on,
                kind,
                driver,
            });
        }
        Ok(Features { location, services })
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(misfit(self.packet_type, self.bytes.len()))
        }
    }
}

fn push_ascii(out: &mut Vec<u8>, what: &'static str, text: &str) -> Result<(), EncodeError> {
    if !text.is_ascii() {
        return Err(EncodeError::NotAscii { what });
    }
    let len = u8::try_from(text.len()).map_err(|_| EncodeError::FieldTooLong {
        what,
        len: text.len(),
    })?;
    out.push(len);
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn encode_features(features: &Features, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    push_ascii(out, "location", &features.location)?;
    let count = u8::try_from(features.services.len()).map_err(|_| EncodeError::FieldTooLong {
        what: "services list",
        len: features.services.len(),
    })?;
    out.push(count);
    for service in &features.services {
        out.push(service.id);
        out.push(u8::from(service.on));
        push_ascii(out, "service type", &service.kind)?;
        push_ascii(out, "driver", &service.driver)?;
    }
    Ok(())
}

fn encode_body(body: &Body, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match body {
        Body::Hello(None) | Body::RequestFeatures => {}
        Body::Hello(Some(status)) => out.extend_from_slice(&[status.state, status.battery]),
        Body::Report(report) => {
            out.push(report.kind());
            match report {
                Report::Features(features) => encode_features(features, out)?,
                Report::ConfigurationRemove {
                    request_id,
                    service,
                } => {
                    out.extend_from_slice(&request_id.to_be_bytes());
                    out.push(*service);
                }
                Report::LowBatt { battery } => out.push(*battery),
                Report::FullTask { state } => out.push(*state),
                Report::Completion { request_id } => {
                    out.extend_from_slice(&request_id.to_be_bytes())
                }
            }
        }
        Body::Request(inner) => out.extend_from_slice(&inner.encode()?),
        Body::Response(r) => {
            out.extend_from_slice(&r.request_id.to_be_bytes());
            out.push(r.service);
            out.extend_from_slice(&r.time.to_be_bytes());
            out.extend_from_slice(&r.value.to_be_bytes());
            out.push(r.exponent as u8);
        }
        Body::SetForwarding(entry) => entry.write(out),
        Body::SetConfiguring(entry) | Body::ModifyConfiguration(entry) => entry.write(out),
        Body::RequestFwdStats { index } => out.push(*index),
        Body::RequestConfigStats { request_id } => out.extend_from_slice(&request_id.to_be_bytes()),
        Body::ResponseFwdStats(stats) => {
            for stat in stats {
                out.push(stat.index);
                out.extend_from_slice(&stat.ttl_left.to_be_bytes());
                out.extend_from_slice(&stat.counter.to_be_bytes());
            }
        }
        Body::ResponseConfigStats(stats) => {
            for stat in stats {
                out.extend_from_slice(&stat.request_id.to_be_bytes());
                out.push(stat.service);
                out.extend_from_slice(&stat.ttl_left.to_be_bytes());
                out.extend_from_slice(&stat.counter.to_be_bytes());
                out.extend_from_slice(&stat.start_time.to_be_bytes());
                out.extend_from_slice(&stat.running_time.to_be_bytes());
                out.push(if stat.executed { b'Y' } else { b'N' });
            }
        }
        Body::ResponseFeatures(features) => encode_features(features, out)?,
        Body::Data { packet_type, bytes } => {
            if PacketType::is_defined(*packet_type) {
                return Err(EncodeError::DataTypeReserved { code: *packet_type });
            }
            out.extend_from_slice(bytes);
        }
    }
    let len = HEADER_LEN + out.len();
    if len > MAX_PACKET_LEN {
        return Err(EncodeError::TooLong { len });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
