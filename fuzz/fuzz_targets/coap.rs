#![no_main]
//! CoAP bytes from the network: datagrams (the codec and our option
//! decoders), registration bodies (link format), and device payloads in
//! every content format (and the LWM2M Device object) decode or fail
//! cleanly; a datagram's Block1 and
//! payload, taken as an upload, keep the uploads within their bounds.

use coap_lite::{CoapOption, Packet};
use fogbank_coap::rd;
use fogbank_coap_protocol::message::{self, Block};
use fogbank_coap_protocol::uploads::{self, Uploads};
use fogbank_coap_protocol::{device_info, lwm2m, payload};
use fogbank_taas::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::from_bytes(data) {
        let _ = message::uri_path(&packet);
        let _ = message::uint_option(&packet, CoapOption::Observe);
        let _ = Block::of(&packet, CoapOption::Block1);
        let _ = Block::of(&packet, CoapOption::Block2);
        if let Some(Ok(block)) = Block::of(&packet, CoapOption::Block1) {
            let mut held = Uploads::default();
            let peer = std::net::SocketAddr::from(([10, 0, 0, 1], 5683));
            let now = std::time::Instant::now();
            for path in ["a", "b"] {
                let _ = held.block(peer, path.into(), block, &packet.payload, now);
            }
            assert!(held.bytes() <= uploads::MAX_BYTES && held.len() <= uploads::MAX_UPLOADS);
        }
        let _ = packet.to_bytes_unlimited();
    }
    if let Ok(links) = rd::links(data) {
        let _ = rd::device_resources(&links, false);
        let _ = rd::device_resources(&links, true);
    }
    let _ = lwm2m::decode_tlv(data);
    for format in [110, 112, 11542] {
        if let Ok(info) = device_info::decode(Some(format), data) {
            let kept = [info.manufacturer, info.model, info.serial, info.firmware];
            for text in kept.iter().flatten() {
                assert!(text.chars().count() <= device_info::MAX_CHARS);
            }
        }
    }
    for format in [0, 60, 110, 112, 11542] {
        let _ = payload::decode(
            Some(format),
            data,
            Some(5700),
            Timestamp(1_800_000_000_000_000),
        );
    }
});
