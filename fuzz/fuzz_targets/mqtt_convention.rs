#![no_main]
//! MQTT messages from devices: any topic and payload decode or fail cleanly.

use fogbank_mqtt::convention;
use fogbank_taas::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First line: the topic; the rest: the payload.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let topic = String::from_utf8_lossy(&data[..split]);
    let payload = data.get(split + 1..).unwrap_or_default();
    let _ = convention::decode(&topic, payload, Timestamp(1_800_000_000_000_000));
});
