//! A gateway's block of S-MANAGE addresses, `0x0100-0x01ff`.

use std::fmt;
use std::str::FromStr;

use fogbank_smanage::Address;

/// An inclusive range of SDVS addresses; never the controller's or
/// broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressBlock {
    pub first: u16,
    pub last: u16,
}

impl AddressBlock {
    pub fn contains(&self, address: Address) -> bool {
        (self.first..=self.last).contains(&address.0)
    }

    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for AddressBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}-0x{:04x}", self.first, self.last)
    }
}

fn parse_address(raw: &str) -> Result<u16, String> {
    let raw = raw.trim();
    let parsed = match raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => raw.parse(),
    };
    parsed.map_err(|_| format!("{raw:?} is not a 16-bit address such as 0x0100"))
}

impl FromStr for AddressBlock {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let (first, last) = raw
            .split_once('-')
            .ok_or_else(|| format!("{raw:?} is not a block such as 0x0100-0x01ff"))?;
        let block = AddressBlock {
            first: parse_address(first)?,
            last: parse_address(last)?,
        };
        if block.first > block.last {
            return Err(format!("{raw:?} ends before it starts"));
        }
        if block.first == 0 || block.last == 0xFFFF {
            return Err(format!(
                "{raw:?} holds 0x0000 (the controller) or 0xffff (broadcast)"
            ));
        }
        Ok(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_parse_in_hex_or_decimal_and_refuse_reserved_addresses() {
        let block: AddressBlock = "0x0100-0x01ff".parse().unwrap();
        assert_eq!((block.first, block.last, block.len()), (0x100, 0x1ff, 256));
        assert_eq!(block.to_string(), "0x0100-0x01ff");
        assert!(block.contains(Address(0x0150)));
        assert!(!block.contains(Address(0x0200)));
        assert_eq!("256-511".parse::<AddressBlock>().unwrap(), block);
        assert!("0x0000-0x00ff".parse::<AddressBlock>().is_err());
        assert!("0xff00-0xffff".parse::<AddressBlock>().is_err());
        assert!("0x0200-0x0100".parse::<AddressBlock>().is_err());
        assert!("0x0100".parse::<AddressBlock>().is_err());
        assert!("0x0100-0x1ffff".parse::<AddressBlock>().is_err());
    }
}
