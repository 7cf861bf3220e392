#![no_main]
//! A checkpoint of a service's key-value store as another gateway of the
//! local cloud sends it (after its digest matched): any bytes give entries
//! or a reason, and entries encode back to the same bytes.

use libfuzzer_sys::fuzz_target;

// The module alone: the service crate would bring wasmtime into the build.
#[path = "../../extended-services/src/checkpoint.rs"]
mod checkpoint;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = checkpoint::decode(data) {
        assert_eq!(checkpoint::encode(&entries), data);
    }
});
