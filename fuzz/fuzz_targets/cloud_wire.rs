#![no_main]
//! What another gateway of the local cloud sends: catalog messages, relayed
//! readings (JSON lists and binary batches), calls and answers. Whatever
//! decodes must re-encode to itself.

use fogbank_cloud::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = wire::decode_catalog(data) {
        assert_eq!(
            wire::decode_catalog(&wire::encode(&message)).ok(),
            Some(message)
        );
    }
    if let Ok(readings) = wire::decode_readings(data) {
        assert_eq!(
            wire::decode_readings(&wire::encode(&readings)).ok(),
            Some(readings)
        );
    }
    if let Ok(readings) = wire::batch::decode(data)
        && let Some(first) = readings.first()
    {
        let again = wire::batch::encode(&first.thing, readings.iter().map(|r| &r.reading));
        assert_eq!(wire::batch::decode(&again).ok(), Some(readings));
    }
    if let Ok(request) = wire::decode_request(data) {
        assert_eq!(
            wire::decode_request(&wire::encode(&request)).ok(),
            Some(request)
        );
    }
    if let Ok(response) = wire::decode_response(data) {
        assert_eq!(
            wire::decode_response(&wire::encode(&response)).ok(),
            Some(response)
        );
    }
});
