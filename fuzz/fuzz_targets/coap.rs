#![no_main]
//! CoAP bytes from the network: datagrams (the codec and our option
//! decoders), registration bodies (link format), and device payloads in
//! every content format decode or fail cleanly.

use coap_lite::{CoapOption, Packet};
use fogbank_coap::message::{self, Block};
use fogbank_coap::{lwm2m, payload, rd};
use fogbank_taas::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::from_bytes(data) {
        let _ = message::uri_path(&packet);
        let _ = message::uint_option(&packet, CoapOption::Observe);
        let _ = Block::of(&packet, CoapOption::Block1);
        let _ = Block::of(&packet, CoapOption::Block2);
        let _ = packet.to_bytes_unlimited();
    }
    if let Ok(links) = rd::links(data) {
        let _ = rd::device_resources(&links, false);
        let _ = rd::device_resources(&links, true);
    }
    let _ = lwm2m::decode_tlv(data);
    for format in [0, 60, 110, 112, 11542] {
        let _ = payload::decode(
            Some(format),
            data,
            Some(5700),
            Timestamp(1_800_000_000_000_000),
        );
    }
});
