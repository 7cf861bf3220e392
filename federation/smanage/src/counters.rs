//! What an S-MANAGE endpoint counts — the gateway's agent and the
//! controller alike — for `/metrics` and the status views.

use std::collections::BTreeMap;

use crate::error::DecodeError;
use crate::header::PacketType;

/// Packets in and out by type name, malformed datagrams by reason, and
/// packets dropped for any other reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketCounters {
    pub received: BTreeMap<&'static str, u64>,
    pub sent: BTreeMap<&'static str, u64>,
    pub malformed: BTreeMap<&'static str, u64>,
    pub dropped: BTreeMap<&'static str, u64>,
}

fn bump(map: &mut BTreeMap<&'static str, u64>, key: &'static str) {
    *map.entry(key).or_default() += 1;
}

impl PacketCounters {
    pub fn count_received(&mut self, packet_type: u8) {
        bump(&mut self.received, PacketType::name(packet_type));
    }

    pub fn count_sent(&mut self, packet_type: u8) {
        bump(&mut self.sent, PacketType::name(packet_type));
    }

    pub fn count_malformed(&mut self, error: &DecodeError) {
        bump(&mut self.malformed, error.reason());
    }

    pub fn count_dropped(&mut self, reason: &'static str) {
        bump(&mut self.dropped, reason);
    }

    /// Malformed counts with every reason present, zero included, so a
    /// counter is visible before its first datagram.
    pub fn malformed_by_every_reason(&self) -> BTreeMap<&'static str, u64> {
        let mut all: BTreeMap<&'static str, u64> =
            DecodeError::REASONS.iter().map(|r| (*r, 0)).collect();
        all.extend(self.malformed.iter().map(|(k, v)| (*k, *v)));
        all
    }
}
