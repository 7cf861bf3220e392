#![no_main]
//! SenML CBOR from the network: decode, resolve, and re-encode what resolves.

use fogbank_taas::Timestamp;
use fogbank_taas::senml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = senml::parse_cbor(data) {
        let _ = senml::resolve(&records, Timestamp(1_700_000_000_000_000));
        let again = senml::parse_cbor(&senml::to_cbor(&records)).expect("our own encoding decodes");
        assert_eq!(again.len(), records.len());
    }
});
