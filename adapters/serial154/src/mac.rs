//! IEEE 802.15.4 MAC frames (2006 and 2015 frame versions): the header
//! fields a gateway needs — type, sequence number, addresses with every
//! addressing mode and PAN id compression — the FCS, and data frames for
//! the downlink. Pure: no I/O.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Address {
    None,
    Short(u16),
    /// An EUI-64, most significant byte first (frames carry it reversed).
    Extended(u64),
}

impl Address {
    fn mode(&self) -> u16 {
        match self {
            Address::None => 0,
            Address::Short(_) => 2,
            Address::Extended(_) => 3,
        }
    }

    /// The IPv6 interface identifier an elided address stands for (RFC
    /// 6282 §3.2.2): the EUI-64 with the U/L bit flipped, or
    /// `0000:00ff:fe00:XXXX` for a short address.
    pub fn interface_id(&self) -> [u8; 8] {
        match self {
            Address::Extended(eui) => {
                let mut id = eui.to_be_bytes();
                id[0] ^= 0x02;
                id
            }
            Address::Short(short) => {
                let [s0, s1] = short.to_be_bytes();
                [0x00, 0x00, 0x00, 0xff, 0xfe, 0x00, s0, s1]
            }
            Address::None => [0; 8],
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::None => write!(f, "none"),
            Address::Short(short) => write!(f, "{short:04x}"),
            Address::Extended(eui) => write!(f, "{eui:016x}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Beacon,
    Data,
    Ack,
    Command,
    /// Multipurpose, fragment, extended (2015): recognised, not used.
    Other(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: FrameKind,
    pub version: u8,
    pub sequence: Option<u8>,
    pub ack_request: bool,
    pub destination_pan: Option<u16>,
    pub destination: Address,
    pub source_pan: Option<u16>,
    pub source: Address,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// The PAN the source belongs to (its own, or the destination's when
    /// compressed away).
    pub fn pan(&self) -> u16 {
        self.source_pan.or(self.destination_pan).unwrap_or(0xffff)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("frame truncated: {0} bytes")]
    Truncated(usize),
    #[error("FCS {found:#06x} where {computed:#06x} was computed")]
    Fcs { found: u16, computed: u16 },
    #[error("reserved addressing mode")]
    AddressMode,
    #[error("secured frames are not supported")]
    Secured,
    #[error("frames with information elements are not supported")]
    InformationElements,
}

/// CRC-16/KERMIT (CCITT polynomial, reflected, initial 0): the FCS.
pub fn fcs(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Parses a frame; with `with_fcs`, its last two bytes are the FCS and
/// are checked.
pub fn parse(bytes: &[u8], with_fcs: bool) -> Result<Frame<'_>, MacError> {
    let truncated = || MacError::Truncated(bytes.len());
    let bytes = if with_fcs {
        let (body, fcs_bytes) = bytes
            .split_at_checked(bytes.len().checked_sub(2).ok_or_else(truncated)?)
            .ok_or_else(truncated)?;
        let found = u16::from_le_bytes([fcs_bytes[0], fcs_bytes[1]]);
        let computed = fcs(body);
        if found != computed {
            return Err(MacError::Fcs { found, computed });
        }
        body
    } else {
        bytes
    };
    let control = u16::from_le_bytes([
        *bytes.first().ok_or_else(truncated)?,
        *bytes.get(1).ok_or_else(truncated)?,
    ]);
    let kind = match control & 0x7 {
        0 => FrameKind::Beacon,
        1 => FrameKind::Data,
        2 => FrameKind::Ack,
        3 => FrameKind::Command,
        other => FrameKind::Other(other as u8),
    };
    let security = control & (1 << 3) != 0;
    let ack_request = control & (1 << 5) != 0;
    let compression = control & (1 << 6) != 0;
    let version = ((control >> 12) & 0x3) as u8;
    let sequence_suppressed = version == 2 && control & (1 << 8) != 0;
    let ie_present = version == 2 && control & (1 << 9) != 0;
    let destination_mode = (control >> 10) & 0x3;
    let source_mode = (control >> 14) & 0x3;
    if destination_mode == 1 || source_mode == 1 {
        return Err(MacError::AddressMode);
    }
    let mut at = 2;
    let sequence = if sequence_suppressed {
        None
    } else {
        at += 1;
        Some(*bytes.get(2).ok_or_else(truncated)?)
    };
    let (destination_pan_present, source_pan_present) =
        pan_presence(version, destination_mode, source_mode, compression);
    let mut take = |n: usize| -> Result<&[u8], MacError> {
        let field = bytes.get(at..at + n).ok_or_else(truncated)?;
        at += n;
        Ok(field)
    };
    let read_pan = |field: &[u8]| u16::from_le_bytes([field[0], field[1]]);
    let destination_pan = if destination_pan_present {
        Some(read_pan(take(2)?))
    } else {
        None
    };
    let destination = read_address(destination_mode, &mut take)?;
    let source_pan = if source_pan_present {
        Some(read_pan(take(2)?))
    } else {
        None
    };
    let source = read_address(source_mode, &mut take)?;
    if security {
        return Err(MacError::Secured);
    }
    if ie_present {
        return Err(MacError::InformationElements);
    }
    Ok(Frame {
        kind,
        version,
        sequence,
        ack_request,
        destination_pan,
        destination,
        source_pan,
        source,
        payload: &bytes[at..],
    })
}

/// Which PAN ids a header carries (2006: §7.2.1.5; 2015: table 7-2).
fn pan_presence(version: u8, destination: u16, source: u16, compression: bool) -> (bool, bool) {
    if version < 2 {
        let destination_pan = destination != 0;
        let source_pan = source != 0 && !(compression && destination != 0);
        return (destination_pan, source_pan);
    }
    match (destination, source, compression) {
        (0, 0, c) => (c, false),
        (_, 0, c) => (!c, false),
        (0, _, c) => (false, !c),
        (3, 3, c) => (!c, false),
        (_, _, false) => (true, true),
        (_, _, true) => (true, false),
    }
}

fn read_address<'a>(
    mode: u16,
    take: &mut impl FnMut(usize) -> Result<&'a [u8], MacError>,
) -> Result<Address, MacError> {
    Ok(match mode {
        0 => Address::None,
        2 => {
            let field = take(2)?;
            Address::Short(u16::from_le_bytes([field[0], field[1]]))
        }
        _ => {
            let field = take(8)?;
            let mut le = [0u8; 8];
            le.copy_from_slice(field);
            Address::Extended(u64::from_le_bytes(le))
        }
    })
}

/// A 2006 data frame from `source` to `destination` in `pan` (PAN id
/// compressed), asking for an acknowledgement when the destination is a
/// single device; no FCS (the radio appends it).
pub fn data_frame(
    sequence: u8,
    pan: u16,
    destination: Address,
    source: Address,
    payload: &[u8],
) -> Vec<u8> {
    let unicast = !matches!(destination, Address::Short(0xffff) | Address::None);
    let control: u16 = 1 // data
        | (u16::from(unicast) << 5)
        | (1 << 6) // PAN id compression
        | (destination.mode() << 10)
        | (1 << 12) // 2006
        | (source.mode() << 14);
    let mut frame = Vec::with_capacity(25 + payload.len());
    frame.extend_from_slice(&control.to_le_bytes());
    frame.push(sequence);
    frame.extend_from_slice(&pan.to_le_bytes());
    for address in [destination, source] {
        match address {
            Address::None => {}
            Address::Short(short) => frame.extend_from_slice(&short.to_le_bytes()),
            Address::Extended(eui) => frame.extend_from_slice(&eui.to_le_bytes()),
        }
    }
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc_16_kermit_check_value() {
        // The catalogue's check value for "123456789".
        assert_eq!(fcs(b"123456789"), 0x2189);
    }

    #[test]
    fn a_2006_data_frame_with_short_addresses() {
        // Data, PAN compression, short/short, version 1; seq 0x2a; PAN 0xabcd;
        // to 0xffff from 0x0001; payload "hi"; FCS.
        let mut frame = vec![
            0x41, 0x98, 0x2a, 0xcd, 0xab, 0xff, 0xff, 0x01, 0x00, b'h', b'i',
        ];
        let crc = fcs(&frame);
        frame.extend_from_slice(&crc.to_le_bytes());
        let parsed = parse(&frame, true).unwrap();
        assert_eq!(parsed.kind, FrameKind::Data);
        assert_eq!(parsed.sequence, Some(0x2a));
        assert_eq!(parsed.destination_pan, Some(0xabcd));
        assert_eq!(parsed.source_pan, None);
        assert_eq!(parsed.pan(), 0xabcd);
        assert_eq!(parsed.source, Address::Short(1));
        assert_eq!(parsed.payload, b"hi");
        frame[9] ^= 1;
        assert!(matches!(parse(&frame, true), Err(MacError::Fcs { .. })));
    }

    #[test]
    fn a_2015_frame_with_extended_addresses_and_no_pan() {
        // Data, PAN compression, ext/ext, version 2: no PAN ids at all.
        let mut frame = vec![0x41, 0xec, 0x07];
        frame.extend_from_slice(&0x0011_2233_4455_6677u64.to_le_bytes());
        frame.extend_from_slice(&0x0012_4b00_0614_2f9bu64.to_le_bytes());
        frame.push(0x01);
        let parsed = parse(&frame, false).unwrap();
        assert_eq!(parsed.version, 2);
        assert_eq!((parsed.destination_pan, parsed.source_pan), (None, None));
        assert_eq!(parsed.source, Address::Extended(0x0012_4b00_0614_2f9b));
        assert_eq!(parsed.source.to_string(), "00124b0006142f9b");
        assert_eq!(parsed.payload, &[0x01]);
    }

    #[test]
    fn acks_and_truncation() {
        let ack = [0x02, 0x00, 0x11];
        assert_eq!(parse(&ack, false).unwrap().kind, FrameKind::Ack);
        assert!(matches!(
            parse(&[0x41, 0x98, 0x2a, 0xcd], false),
            Err(MacError::Truncated(_))
        ));
        assert!(matches!(parse(&[0x41], false), Err(MacError::Truncated(_))));
        assert!(matches!(
            parse(&[0x41, 0x98, 0x2a], true),
            Err(MacError::Fcs { .. }) | Err(MacError::Truncated(_))
        ));
    }

    proptest! {
        #[test]
        fn built_frames_parse_back(
            sequence: u8, pan: u16, payload in proptest::collection::vec(any::<u8>(), 0..100),
            destination in prop_oneof![any::<u16>().prop_map(Address::Short), any::<u64>().prop_map(Address::Extended)],
            source in prop_oneof![any::<u16>().prop_map(Address::Short), any::<u64>().prop_map(Address::Extended)],
        ) {
            let frame = data_frame(sequence, pan, destination, source, &payload);
            let parsed = parse(&frame, false).unwrap();
            prop_assert_eq!(parsed.sequence, Some(sequence));
            prop_assert_eq!(parsed.pan(), pan);
            prop_assert_eq!(parsed.destination, destination);
            prop_assert_eq!(parsed.source, source);
            prop_assert_eq!(parsed.payload, &payload[..]);
        }

        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..140), with_fcs: bool) {
            let _ = parse(&bytes, with_fcs);
        }
    }
}
