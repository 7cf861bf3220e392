#![no_main]
//! Bytes from a serial radio: SLIP framing, IEEE 802.15.4 frames (with and
//! without FCS), and their payloads — compact SenML-CBOR, 6LoWPAN IPHC,
//! fragments, CoAP — decode or fail cleanly, and reassembly state stays
//! bounded.

use std::time::Instant;

use fogbank_serial154::mac::{self, Address};
use fogbank_serial154::sixlowpan::Reassembly;
use fogbank_serial154::slip::{Framing, Slip};
use fogbank_serial154::uplink;
use fogbank_taas::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut slip = Slip::default();
    let mut reassembly = Reassembly::default();
    let now = Instant::now();
    // The bytes as a serial line, and as one frame.
    let frames = slip
        .decode(data)
        .into_iter()
        .flatten()
        .chain(std::iter::once(data.to_vec()));
    for frame in frames {
        for with_fcs in [false, true] {
            if let Ok(parsed) = mac::parse(&frame, with_fcs) {
                let _ = uplink::decode(
                    &parsed,
                    Address::Short(0),
                    &mut reassembly,
                    Timestamp(1_800_000_000_000_000),
                    now,
                );
            }
        }
    }
});
