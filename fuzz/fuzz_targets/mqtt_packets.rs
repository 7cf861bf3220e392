#![no_main]
//! A device's byte stream as the embedded broker's front door reads it:
//! any bytes frame, parse as PUBLISH (3.1.1 and 5), CONNECT or an
//! acknowledgement, or fail cleanly; a framed packet never claims more
//! bytes than the header said; a PUBLISH with its alias resolved reads back.

use fogbank_mqtt::packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(length)) = packet::frame_length(rest) {
        assert!(length >= 2);
        let Some(bytes) = rest.get(..length) else {
            break;
        };
        if let Ok(publish) = packet::publish(bytes, true) {
            assert!(publish.payload.len() < length);
            let resolved = publish.without_alias("things/device/resource");
            assert!(packet::publish(&resolved, true).is_ok_and(|p| p.alias.is_none()));
        }
        let _ = packet::publish(bytes, false);
        let _ = packet::connect(bytes);
        let _ = packet::acknowledged(bytes);
        rest = &rest[length..];
    }
});
