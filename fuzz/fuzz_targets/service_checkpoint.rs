#![no_main]
//! A checkpoint of a service's key-value store as another gateway of the
//! local cloud sends it (after its digest matched): any bytes give entries
//! or a reason, and entries encode back to the same bytes.

use fogbank_services::checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = checkpoint::decode(data) {
        assert_eq!(checkpoint::encode(&entries), data);
    }
});
