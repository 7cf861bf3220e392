#![no_main]
//! SenML JSON from the network: decode, resolve, and re-encode what resolves.

use fogbank_taas::Timestamp;
use fogbank_taas::senml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = senml::parse_json(data) {
        let _ = senml::resolve(&records, Timestamp(1_700_000_000_000_000));
        let again = senml::parse_json(&senml::to_json(&records)).expect("our own encoding decodes");
        assert_eq!(again.len(), records.len());
    }
});
