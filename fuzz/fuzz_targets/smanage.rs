#![no_main]
//! S-MANAGE datagrams, as an SDVS or the controller receives them: what
//! decodes must re-encode to the same bytes; and any forwarding table made
//! of the input's leading entries decides any packet without looping or
//! touching its body. A stored configuring table (read back after a
//! restart) is the table it was, or nothing.

use fogbank_smanage::configuring::ConfiguringTable;
use fogbank_smanage::forwarding::ForwardingTable;
use fogbank_smanage::{Datagram, FORWARDING_ENTRY_LEN, ForwardingEntry, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = decode(data) {
        assert_eq!(packet.encode().ok().as_deref(), Some(data));
    }
    if let Some(mut table) = ConfiguringTable::from_bytes(32, data) {
        assert_eq!(table.to_bytes(), data);
        table.tick(u64::from(u32::MAX));
    }
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 16);
    let Some(entries) = rest.get(..count * FORWARDING_ENTRY_LEN) else {
        return;
    };
    let mut table = ForwardingTable::default();
    for chunk in entries.chunks_exact(FORWARDING_ENTRY_LEN) {
        if let Ok(entry) = ForwardingEntry::decode(chunk.try_into().unwrap()) {
            table.install(entry, 0).unwrap();
        }
    }
    if let Ok(mut datagram) = Datagram::decode(&rest[count * FORWARDING_ENTRY_LEN..]) {
        let body = datagram.body.clone();
        table.decide(&mut datagram, 1);
        assert_eq!(datagram.body, body);
    }
});
