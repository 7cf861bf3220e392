//! A gateway's per-packet cost of S-MANAGE forwarding: a packet through a
//! forwarding table of BENCH_ENTRIES entries (default 32, as many as an
//! SDVS holds instructions by default), in four windows, the matching
//! entry last in the order it was installed; beside the cost of decoding
//! and encoding the same packet, measured in the same run.
//!
//!   cargo bench -p fogbank-smanage --bench forwarding

use std::hint::black_box;
use std::time::Instant;

use fogbank_smanage::forwarding::ForwardingTable;
use fogbank_smanage::{
    Address, Datagram, FieldName, ForwardAction, ForwardingEntry, Header, Operator,
};

fn entry(
    window: u8,
    field: FieldName,
    value: u16,
    action: ForwardAction,
    value1: u16,
) -> ForwardingEntry {
    ForwardingEntry {
        window,
        field,
        operator: Operator::Equal,
        value,
        action,
        value1,
        value2: 0,
        ttl: 0,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("forwarding: bench");
        return;
    }
    let entries: u16 = std::env::var("BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let packets: u64 = 2_000_000;
    let mut table = ForwardingTable::default();
    // Entries that never match, then: source = 0x0101 → window 1; window 1:
    // destination = 0x0205 → unicast.
    for i in 0..entries.saturating_sub(2) {
        table
            .install(
                entry(
                    (i % 4) as u8,
                    FieldName::Destination,
                    0x9000 + i,
                    ForwardAction::Drop,
                    0,
                ),
                0,
            )
            .unwrap();
    }
    table
        .install(
            entry(0, FieldName::Source, 0x0101, ForwardAction::Continue, 1),
            0,
        )
        .unwrap();
    table
        .install(
            entry(
                1,
                FieldName::Destination,
                0x0205,
                ForwardAction::Unicast,
                0x0205,
            ),
            0,
        )
        .unwrap();
    let datagram = Datagram {
        header: Header {
            source: Address(0x0101),
            destination: Address(0x0205),
            next_hop: Address(0x0101),
            packet_type: 0x04,
            ttl: 16,
            message_id: 1,
        },
        body: vec![0, 7, 2, 0x6b, 0x12, 0xe3, 0x80, 0, 0, 0, 0xd7, 0xff],
    };
    let bytes = datagram.encode().unwrap();

    let start = Instant::now();
    for _ in 0..packets {
        let mut packet = datagram.clone();
        black_box(table.decide(black_box(&mut packet), 1));
    }
    let decide = start.elapsed().as_nanos() as f64 / packets as f64;

    let start = Instant::now();
    for _ in 0..packets {
        let decoded = Datagram::decode(black_box(&bytes)).unwrap();
        black_box(decoded.encode().unwrap());
    }
    let codec = start.elapsed().as_nanos() as f64 / packets as f64;
    println!(
        "forwarding: {decide:.0} ns per packet through {entries} entries (match in window 1 after {} misses); decode+encode of the same packet {codec:.0} ns; ratio {:.2}",
        entries.saturating_sub(2),
        decide / codec
    );
    use fogbank_testkit::bench::{Better::Lower, Figure};
    Figure::new(
        "Federation: S-MANAGE",
        &format!("forwarding table, {entries} entries, per packet"),
        decide,
        "ns",
        Lower,
    )
    .against("decoding and encoding the same packet", codec)
    .record();
}
