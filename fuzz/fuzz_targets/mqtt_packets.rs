#![no_main]
//! A device's byte stream as the embedded broker's front door reads it:
//! any bytes frame, parse as PUBLISH (3.1.1 and 5), CONNECT, CONNACK,
//! SUBSCRIBE (3.1.1 and 5) or an acknowledgement, or fail cleanly; the complete packets are the stream's
//! first bytes, each at least a header; a PUBLISH with its alias resolved
//! reads back.

use fogbank_mqtt::packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packets) = packet::complete(data) else {
        return;
    };
    let complete: usize = packets.iter().map(|p| p.len()).sum();
    assert_eq!(packets.concat(), data[..complete]);
    for bytes in packets {
        assert!(bytes.len() >= 2);
        if let Ok(publish) = packet::publish(bytes, true) {
            assert!(publish.payload.len() < bytes.len());
            let resolved = publish.without_alias("things/device/resource");
            assert!(packet::publish(&resolved, true).is_ok_and(|p| p.alias.is_none()));
        }
        let _ = packet::publish(bytes, false);
        let _ = packet::connect(bytes);
        let _ = packet::acknowledged(bytes);
        let _ = packet::connack_accepts(bytes);
        for v5 in [false, true] {
            if let Ok(filters) = packet::subscription_filters(bytes, v5) {
                assert!(!filters.is_empty());
            }
        }
    }
});
