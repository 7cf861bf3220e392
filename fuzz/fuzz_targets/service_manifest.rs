#![no_main]
//! A `service.toml` as `POST /api/v1/services` receives it: any text gives
//! a manifest or a list of reasons, and a manifest stores and parses back
//! to itself.

use fogbank_services::Manifest;
use libfuzzer_sys::fuzz_target;

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
