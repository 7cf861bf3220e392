#![no_main]
//! What a client can send the embedded broker (vendor/rumqttd): any bytes
//! read as MQTT 3.1.1 and as MQTT 5 packets or fail cleanly, and every
//! PUBLISH read writes out again in both protocols, as the broker passes it
//! to subscribers of either — without a panic, which would take down a
//! connection's task. (Other packets the broker answers itself; those that
//! only a server sends, it ignores.)

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rumqttd::protocol::{Packet, Protocol, v4::V4, v5::V5};

/// The embedded broker's payload limit plus room for the header.
const MAX_PACKET: usize = (256 << 10) + (64 << 10);

fn read_all(mut protocol: impl Protocol, data: &[u8]) {
    let mut stream = BytesMut::from(data);
    while let Ok(packet) = protocol.read_mut(&mut stream, MAX_PACKET) {
        if let Packet::Publish(..) = packet {
            let _ = V4.write(packet.clone(), &mut BytesMut::new());
            let _ = V5.write(packet, &mut BytesMut::new());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    read_all(V4, data);
    read_all(V5, data);
});
