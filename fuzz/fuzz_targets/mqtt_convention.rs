#![no_main]
//! MQTT bytes from devices: any topic and payload decode (by the
//! conventions and as Home Assistant discovery) or fail cleanly, the ids
//! built from the names a device gives are valid ids, and the embedded
//! broker's front door tells any first bytes of a connection apart without
//! panicking.

use fogbank_mqtt::embedded::front_door;
use fogbank_mqtt::{convention, discovery};
use fogbank_taas::{ThingId, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = front_door::protocol_level(data);
    // First line: the topic; the rest: the payload.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let topic = String::from_utf8_lossy(&data[..split]);
    let payload = data.get(split + 1..).unwrap_or_default();
    if let Ok(convention::Inbound::Samples { device, samples }) =
        convention::decode(&topic, payload, Timestamp(1_800_000_000_000_000))
    {
        for sample in samples {
            if let Ok(id) = ThingId::new("gw", "mqtt", &device, &sample.resource) {
                assert_eq!(ThingId::parse(id.as_str()).ok(), Some(id));
            }
        }
    }
    if let Ok(discovery::Discovery::Add(entity)) = discovery::decode(&topic, payload) {
        let _ = entity.reading(payload);
    }
});
