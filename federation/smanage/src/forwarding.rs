//! The forwarding table: what an SDVS does with a packet that is not a
//! control packet for itself. Matching starts with the entries of window
//! 0, in the order they were installed; the first entry whose field
//! comparison holds acts, and its counter grows. `continue` moves on to
//! another window; `modify` changes the header and matching goes on with
//! the window's next entries; a packet that matches nothing is the
//! controller's to decide (a Request).

use crate::entry::{FieldName, ForwardAction, ForwardingEntry};
use crate::header::{Address, Datagram};
use crate::packet::FwdStat;

/// Indices run 0–254; 0xFF in RequestFwdStats means all.
pub const MAX_FORWARDING_ENTRIES: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingRow {
    /// The index stats are reported under: the lowest free one at install.
    pub index: u8,
    pub entry: ForwardingEntry,
    pub counter: u32,
    /// Unix seconds; `None` for a permanent entry (TTL 0).
    pub expires_at: Option<u64>,
}

impl ForwardingRow {
    pub fn ttl_left(&self, now: u64) -> u16 {
        match self.expires_at {
            None => 0,
            Some(at) => u16::try_from(at.saturating_sub(now)).unwrap_or(u16::MAX),
        }
    }
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send towards this address (a unicast or multicast forward); the
    /// header's next hop is set to it.
    Send(Address),
    /// Send to everyone; the next hop is `0xFFFF`.
    Broadcast,
    Drop(DropReason),
    /// Nothing matched: wrap it in a Request to the controller.
    NoMatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A drop entry matched.
    Entry,
    /// `continue` led back to a window already visited.
    Loop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the forwarding table holds {MAX_FORWARDING_ENTRIES} entries already")]
pub struct TableFull;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardingTable {
    rows: Vec<ForwardingRow>,
}

fn field(datagram: &Datagram, name: FieldName) -> u16 {
    let header = &datagram.header;
    match name {
        FieldName::Source => header.source.0,
        FieldName::Destination => header.destination.0,
        FieldName::NextHop => header.next_hop.0,
        FieldName::Type => u16::from(header.packet_type),
        FieldName::Length => datagram.len() as u16,
        FieldName::Ttl => u16::from(header.ttl),
        FieldName::MessageId => u16::from(header.message_id),
    }
}

/// Sets a header field; a value too wide for a one-byte field, or the
/// length (always the datagram's), changes nothing.
fn set_field(datagram: &mut Datagram, name: FieldName, value: u16) {
    let header = &mut datagram.header;
    let byte = u8::try_from(value).ok();
    match (name, byte) {
        (FieldName::Source, _) => header.source = Address(value),
        (FieldName::Destination, _) => header.destination = Address(value),
        (FieldName::NextHop, _) => header.next_hop = Address(value),
        (FieldName::Type, Some(b)) => header.packet_type = b,
        (FieldName::Ttl, Some(b)) => header.ttl = b,
        (FieldName::MessageId, Some(b)) => header.message_id = b,
        (FieldName::Length, _) | (_, None) => {}
    }
}

impl ForwardingTable {
    pub fn rows(&self) -> &[ForwardingRow] {
        &self.rows
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Appends an entry; it matches after every entry installed before it.
    pub fn install(&mut self, entry: ForwardingEntry, now: u64) -> Result<u8, TableFull> {
        let mut used = [false; MAX_FORWARDING_ENTRIES];
        for row in &self.rows {
            used[usize::from(row.index)] = true;
        }
        let index = used.iter().position(|u| !u).ok_or(TableFull)? as u8;
        self.rows.push(ForwardingRow {
            index,
            entry,
            counter: 0,
            expires_at: (entry.ttl != 0).then(|| now.saturating_add(u64::from(entry.ttl))),
        });
        Ok(index)
    }

    /// Removes the entries whose TTL has run out, and returns them.
    pub fn expire(&mut self, now: u64) -> Vec<ForwardingRow> {
        let (gone, kept) = std::mem::take(&mut self.rows)
            .into_iter()
            .partition(|row| row.expires_at.is_some_and(|at| at <= now));
        self.rows = kept;
        gone
    }

    /// Runs a packet through the table, changing its header as the
    /// entries say.
    pub fn decide(&mut self, datagram: &mut Datagram, now: u64) -> Verdict {
        let mut visited = [false; 256];
        let mut window = 0u8;
        'windows: loop {
            visited[usize::from(window)] = true;
            for row in &mut self.rows {
                let entry = row.entry;
                if entry.window != window
                    || row.expires_at.is_some_and(|at| at <= now)
                    || !entry
                        .operator
                        .holds(field(datagram, entry.field), entry.value)
                {
                    continue;
                }
                row.counter = row.counter.saturating_add(1);
                match entry.action {
                    ForwardAction::Unicast | ForwardAction::Multicast => {
                        datagram.header.next_hop = Address(entry.value1);
                        return Verdict::Send(Address(entry.value1));
                    }
                    ForwardAction::Broadcast => {
                        datagram.header.next_hop = Address::BROADCAST;
                        return Verdict::Broadcast;
                    }
                    ForwardAction::Drop => return Verdict::Drop(DropReason::Entry),
                    ForwardAction::Modify => {
                        if field(datagram, entry.field) == entry.value1 {
                            set_field(datagram, entry.field, entry.value2);
                        }
                    }
                    ForwardAction::Continue => {
                        let Ok(next) = u8::try_from(entry.value1) else {
                            return Verdict::Drop(DropReason::Loop);
                        };
                        if visited[usize::from(next)] {
                            return Verdict::Drop(DropReason::Loop);
                        }
                        window = next;
                        continue 'windows;
                    }
                }
            }
            return Verdict::NoMatch;
        }
    }

    /// RequestFwdStats: one entry by index, or all for 0xFF.
    pub fn stats(&self, index: u8, now: u64) -> Vec<FwdStat> {
        self.rows
            .iter()
            .filter(|row| index == 0xFF || row.index == index)
            .map(|row| FwdStat {
                index: row.index,
                ttl_left: row.ttl_left(now),
                counter: row.counter,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Operator;
    use crate::header::Header;
    use proptest::prelude::*;

    fn datagram(source: u16, destination: u16, packet_type: u8) -> Datagram {
        Datagram {
            header: Header {
                source: Address(source),
                destination: Address(destination),
                next_hop: Address(0),
                packet_type,
                ttl: 5,
                message_id: 9,
            },
            body: vec![1, 2, 3],
        }
    }

    fn entry(window: u8, field: FieldName, operator: Operator, value: u16) -> ForwardingEntry {
        ForwardingEntry {
            window,
            field,
            operator,
            value,
            action: ForwardAction::Drop,
            value1: 0,
            value2: 0,
            ttl: 0,
        }
    }

    #[test]
    fn the_first_match_in_window_zero_acts_and_counts() {
        let mut table = ForwardingTable::default();
        let forward = ForwardingEntry {
            action: ForwardAction::Unicast,
            value1: 0x0200,
            ..entry(0, FieldName::Destination, Operator::Equal, 0x0105)
        };
        table.install(forward, 0).unwrap();
        table
            .install(entry(0, FieldName::Type, Operator::GreaterOrEqual, 0), 0)
            .unwrap();
        let mut packet = datagram(0x0101, 0x0105, 0x04);
        assert_eq!(table.decide(&mut packet, 1), Verdict::Send(Address(0x0200)));
        assert_eq!(packet.header.next_hop, Address(0x0200));
        let mut other = datagram(0x0101, 0x0106, 0x04);
        assert_eq!(
            table.decide(&mut other, 1),
            Verdict::Drop(DropReason::Entry)
        );
        let counters: Vec<u32> = table.rows().iter().map(|r| r.counter).collect();
        assert_eq!(counters, [1, 1]);
    }

    #[test]
    fn continue_matches_a_second_field_and_loops_are_dropped() {
        let mut table = ForwardingTable::default();
        // window 0: source = 0x0101 → window 1; window 1: type = 0x42 → broadcast.
        table
            .install(
                ForwardingEntry {
                    action: ForwardAction::Continue,
                    value1: 1,
                    ..entry(0, FieldName::Source, Operator::Equal, 0x0101)
                },
                0,
            )
            .unwrap();
        table
            .install(
                ForwardingEntry {
                    action: ForwardAction::Broadcast,
                    ..entry(1, FieldName::Type, Operator::Equal, 0x42)
                },
                0,
            )
            .unwrap();
        assert_eq!(
            table.decide(&mut datagram(0x0101, 0, 0x42), 0),
            Verdict::Broadcast
        );
        assert_eq!(
            table.decide(&mut datagram(0x0101, 0, 0x43), 0),
            Verdict::NoMatch
        );
        assert_eq!(
            table.decide(&mut datagram(0x0102, 0, 0x42), 0),
            Verdict::NoMatch
        );
        // window 1 → window 0 again is a loop.
        table
            .install(
                ForwardingEntry {
                    action: ForwardAction::Continue,
                    value1: 0,
                    ..entry(1, FieldName::Type, Operator::Equal, 0x43)
                },
                0,
            )
            .unwrap();
        assert_eq!(
            table.decide(&mut datagram(0x0101, 0, 0x43), 0),
            Verdict::Drop(DropReason::Loop)
        );
    }

    #[test]
    fn modify_changes_the_field_and_matching_goes_on() {
        let mut table = ForwardingTable::default();
        table
            .install(
                ForwardingEntry {
                    action: ForwardAction::Modify,
                    value1: 0x0105,
                    value2: 0x0205,
                    ..entry(0, FieldName::Destination, Operator::Equal, 0x0105)
                },
                0,
            )
            .unwrap();
        table
            .install(
                ForwardingEntry {
                    action: ForwardAction::Unicast,
                    value1: 0x0205,
                    ..entry(0, FieldName::Destination, Operator::Equal, 0x0205)
                },
                0,
            )
            .unwrap();
        let mut packet = datagram(0x0101, 0x0105, 0x04);
        assert_eq!(table.decide(&mut packet, 0), Verdict::Send(Address(0x0205)));
        assert_eq!(packet.header.destination, Address(0x0205));
    }

    #[test]
    fn entries_expire_with_their_ttl_and_indices_are_reused() {
        let mut table = ForwardingTable::default();
        let short = ForwardingEntry {
            ttl: 10,
            ..entry(0, FieldName::Source, Operator::Equal, 1)
        };
        assert_eq!(table.install(short, 100).unwrap(), 0);
        assert_eq!(
            table
                .install(entry(0, FieldName::Source, Operator::Equal, 2), 100)
                .unwrap(),
            1
        );
        assert_eq!(table.stats(0, 104)[0].ttl_left, 6);
        assert_eq!(table.decide(&mut datagram(1, 0, 4), 110), Verdict::NoMatch);
        assert_eq!(table.expire(110).len(), 1);
        assert_eq!(table.stats(0xFF, 110).len(), 1);
        assert_eq!(table.install(short, 110).unwrap(), 0);
    }

    #[test]
    fn the_table_holds_255_entries() {
        let mut table = ForwardingTable::default();
        for _ in 0..MAX_FORWARDING_ENTRIES {
            table
                .install(entry(0, FieldName::Source, Operator::Equal, 1), 0)
                .unwrap();
        }
        assert_eq!(
            table.install(entry(0, FieldName::Source, Operator::Equal, 1), 0),
            Err(TableFull)
        );
    }

    proptest! {
        // Whatever the entries, deciding terminates with a verdict and
        // leaves the body alone.
        #[test]
        fn any_table_decides_any_packet(
            entries in proptest::collection::vec((0u8..4, 0u8..7, 0u8..6, any::<u16>(), 0u8..6, 0u16..6, any::<u16>()), 0..40),
            source in any::<u16>(), destination in any::<u16>(), packet_type in any::<u8>(),
        ) {
            let mut table = ForwardingTable::default();
            for (window, field, operator, value, action, value1, value2) in entries {
                let mut bytes = [window, field, operator, 0, 0, action, 0, 0, 0, 0, 0, 0];
                bytes[3..5].copy_from_slice(&value.to_be_bytes());
                bytes[6..8].copy_from_slice(&value1.to_be_bytes());
                bytes[8..10].copy_from_slice(&value2.to_be_bytes());
                table.install(ForwardingEntry::decode(&bytes).unwrap(), 0).unwrap();
            }
            let mut packet = datagram(source, destination, packet_type);
            table.decide(&mut packet, 0);
            prop_assert_eq!(packet.body, vec![1, 2, 3]);
        }
    }
}
