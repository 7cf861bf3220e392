//! The two instructions a controller installs in an SDVS: a forwarding
//! entry (12 bytes) and a configuring entry (14 bytes). A byte outside an
//! enumeration's range makes the entry impossible, and the packet that
//! carries it malformed.

use crate::error::DecodeError;
use crate::header::Address;

pub const FORWARDING_ENTRY_LEN: usize = 12;
pub const CONFIGURING_ENTRY_LEN: usize = 14;

/// A header field a forwarding entry matches on (and a modify changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldName {
    Source = 0,
    Destination = 1,
    NextHop = 2,
    Type = 3,
    Length = 4,
    Ttl = 5,
    MessageId = 6,
}

impl FieldName {
    pub fn name(self) -> &'static str {
        [
            "source",
            "destination",
            "next_hop",
            "type",
            "length",
            "ttl",
            "message_id",
        ][self as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equal = 0,
    NotEqual = 1,
    Greater = 2,
    GreaterOrEqual = 3,
    Less = 4,
    LessOrEqual = 5,
}

impl Operator {
    pub fn holds(self, field: u16, value: u16) -> bool {
        match self {
            Operator::Equal => field == value,
            Operator::NotEqual => field != value,
            Operator::Greater => field > value,
            Operator::GreaterOrEqual => field >= value,
            Operator::Less => field < value,
            Operator::LessOrEqual => field <= value,
        }
    }

    pub fn symbol(self) -> &'static str {
        ["=", "!=", ">", ">=", "<", "<="][self as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardAction {
    Unicast = 0,
    Multicast = 1,
    Broadcast = 2,
    Drop = 3,
    Modify = 4,
    Continue = 5,
}

impl ForwardAction {
    pub fn name(self) -> &'static str {
        [
            "unicast",
            "multicast",
            "broadcast",
            "drop",
            "modify",
            "continue",
        ][self as usize]
    }
}

/// One row of a forwarding table, as the controller sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardingEntry {
    pub window: u8,
    pub field: FieldName,
    pub operator: Operator,
    pub value: u16,
    pub action: ForwardAction,
    pub value1: u16,
    pub value2: u16,
    /// Seconds; 0 = permanent.
    pub ttl: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigAction {
    Read = 0,
    SwitchOn = 1,
    SwitchOff = 2,
    Set = 3,
}

impl ConfigAction {
    pub fn name(self) -> &'static str {
        ["read", "on", "off", "set"][self as usize]
    }

    /// Reads sample; the others change the service.
    pub fn is_actuation(self) -> bool {
        self != ConfigAction::Read
    }
}

/// One row of a configuring table, as the controller sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfiguringEntry {
    pub request_id: u16,
    pub service: u8,
    /// Seconds between two samples; 0 = once.
    pub frequency: u16,
    /// Seconds the instruction runs.
    pub period: u16,
    /// Where Responses go; the controller is `0x0000`.
    pub destination: Address,
    pub action: ConfigAction,
    /// The value of a `set`.
    pub value: i16,
    /// Seconds the instruction is kept.
    pub ttl: u16,
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn field_name(byte: u8) -> Result<FieldName, DecodeError> {
    Ok(match byte {
        0 => FieldName::Source,
        1 => FieldName::Destination,
        2 => FieldName::NextHop,
        3 => FieldName::Type,
        4 => FieldName::Length,
        5 => FieldName::Ttl,
        6 => FieldName::MessageId,
        value => {
            return Err(DecodeError::ImpossibleEntry {
                what: "matched field",
                value,
            });
        }
    })
}

fn operator(byte: u8) -> Result<Operator, DecodeError> {
    Ok(match byte {
        0 => Operator::Equal,
        1 => Operator::NotEqual,
        2 => Operator::Greater,
        3 => Operator::GreaterOrEqual,
        4 => Operator::Less,
        5 => Operator::LessOrEqual,
        value => {
            return Err(DecodeError::ImpossibleEntry {
                what: "operator",
                value,
            });
        }
    })
}

fn forward_action(byte: u8) -> Result<ForwardAction, DecodeError> {
    Ok(match byte {
        0 => ForwardAction::Unicast,
        1 => ForwardAction::Multicast,
        2 => ForwardAction::Broadcast,
        3 => ForwardAction::Drop,
        4 => ForwardAction::Modify,
        5 => ForwardAction::Continue,
        value => {
            return Err(DecodeError::ImpossibleEntry {
                what: "forwarding action",
                value,
            });
        }
    })
}

fn config_action(byte: u8) -> Result<ConfigAction, DecodeError> {
    Ok(match byte {
        0 => ConfigAction::Read,
        1 => ConfigAction::SwitchOn,
        2 => ConfigAction::SwitchOff,
        3 => ConfigAction::Set,
        value => {
            return Err(DecodeError::ImpossibleEntry {
                what: "configuring action",
                value,
            });
        }
    })
}

impl ForwardingEntry {
    /// Decodes exactly [`FORWARDING_ENTRY_LEN`] bytes.
    pub fn decode(bytes: &[u8; FORWARDING_ENTRY_LEN]) -> Result<Self, DecodeError> {
        Ok(ForwardingEntry {
            window: bytes[0],
            field: field_name(bytes[1])?,
            operator: operator(bytes[2])?,
            value: be16(bytes, 3),
            action: forward_action(bytes[5])?,
            value1: be16(bytes, 6),
            value2: be16(bytes, 8),
            ttl: be16(bytes, 10),
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.push(self.window);
        out.push(self.field as u8);
        out.push(self.operator as u8);
        out.extend_from_slice(&self.value.to_be_bytes());
        out.push(self.action as u8);
        out.extend_from_slice(&self.value1.to_be_bytes());
        out.extend_from_slice(&self.value2.to_be_bytes());
        out.extend_from_slice(&self.ttl.to_be_bytes());
    }
}

impl ConfiguringEntry {
    /// Decodes exactly [`CONFIGURING_ENTRY_LEN`] bytes. Service 0 is
    /// impossible: sensor services are numbered from 1.
    pub fn decode(bytes: &[u8; CONFIGURING_ENTRY_LEN]) -> Result<Self, DecodeError> {
        if bytes[2] == 0 {
            return Err(DecodeError::ImpossibleEntry {
                what: "sensor service",
                value: 0,
            });
        }
        Ok(ConfiguringEntry {
            request_id: be16(bytes, 0),
            service: bytes[2],
            frequency: be16(bytes, 3),
            period: be16(bytes, 5),
            destination: Address(be16(bytes, 7)),
            action: config_action(bytes[9])?,
            value: i16::from_be_bytes([bytes[10], bytes[11]]),
            ttl: be16(bytes, 12),
        })
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.request_id.to_be_bytes());
        out.push(self.service);
        out.extend_from_slice(&self.frequency.to_be_bytes());
        out.extend_from_slice(&self.period.to_be_bytes());
        out.extend_from_slice(&self.destination.0.to_be_bytes());
        out.push(self.action as u8);
        out.extend_from_slice(&self.value.to_be_bytes());
        out.extend_from_slice(&self.ttl.to_be_bytes());
    }
}
