//! A service's key-value store as one blob, the checkpoint that the
//! local cloud carries from the gateway that runs a service to the one
//! that takes it over. Pure and self-contained: the fuzzer builds this
//! file on its own, without the rest of the crate (and its wasmtime).

/// A key-value store as bytes: for each entry, the key's length (u32 big
/// endian), the key, the value's length, the value.
pub fn encode(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (key, value) in entries {
        for part in [key.as_bytes(), value.as_slice()] {
            bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
            bytes.extend_from_slice(part);
        }
    }
    bytes
}

/// The entries of a checkpoint; any bytes decode to entries or a reason.
pub fn decode(mut bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    fn part<'b>(bytes: &mut &'b [u8]) -> Result<&'b [u8], String> {
        let (length, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or("a checkpoint entry is cut short")?;
        let length = u32::from_be_bytes(*length) as usize;
        if rest.len() < length {
            return Err("a checkpoint entry is longer than the checkpoint".into());
        }
        let (part, rest) = rest.split_at(length);
        *bytes = rest;
        Ok(part)
    }
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let key = String::from_utf8(part(&mut bytes)?.to_vec())
            .map_err(|_| "a checkpoint key is not UTF-8".to_string())?;
        let value = part(&mut bytes)?.to_vec();
        entries.push((key, value));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn checkpoints_round_trip(entries in proptest::collection::vec((".{0,20}", proptest::collection::vec(any::<u8>(), 0..64)), 0..16)) {
            prop_assert_eq!(decode(&encode(&entries)).unwrap(), entries);
        }

        #[test]
        fn any_bytes_decode_or_give_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn a_cut_checkpoint_is_refused() {
        let bytes = encode(&[("k".into(), b"value".to_vec())]);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(decode(&[]).unwrap(), vec![]);
    }
}
