#![no_main]
//! Names from outside in URLs and CLI arguments: a thing-service id, and a
//! device named by its id prefix or one of its ids (`POST
//! /api/v1/devices/{device}/transport`). What parses prints back to itself.

use fogbank_taas::{DeviceRef, ThingId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = ThingId::parse(&text) {
        assert_eq!(ThingId::parse(id.as_str()).ok(), Some(id.clone()));
        assert_eq!(DeviceRef::parse(id.as_str()).ok(), Some(DeviceRef::of(&id)));
    }
    if let Ok(device) = DeviceRef::parse(&text) {
        assert_eq!(DeviceRef::parse(&device.to_string()).ok(), Some(device));
    }
});
