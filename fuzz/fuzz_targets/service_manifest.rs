#![no_main]
//! A `service.toml` as `POST /api/v1/services` receives it: any text gives
//! a manifest or a list of reasons, and a manifest stores and parses back
//! to itself.

use libfuzzer_sys::fuzz_target;

// The module alone: the service crate would bring wasmtime into the build.
#[allow(dead_code)]
#[path = "../../extended-services/src/manifest.rs"]
mod manifest;
use manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(manifest) = Manifest::parse(text) {
        let stored = manifest.to_toml();
        let again = Manifest::parse(&stored).expect("a stored manifest parses");
        assert_eq!(again.to_toml(), stored);
    }
});
