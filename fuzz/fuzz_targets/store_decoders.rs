#![no_main]
//! Bytes read back from disk: reading keys and stored values.

use fogbank_taas::reading::codec;
use fogbank_taas::store::parse_reading_key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_reading_key(data);
    if let Ok(value) = codec::decode(data) {
        let mut out = Vec::new();
        codec::encode(&value, &mut out);
        // NaN payloads aside, a decoded value encodes back to the same bytes.
        if !matches!(value, fogbank_taas::Value::Number(n) if n.is_nan()) {
            assert_eq!(out, data);
        }
    }
});
