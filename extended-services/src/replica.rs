//! What the Service layer keeps in the local cloud's replicated records
//! (`fogbank_taas::replicated`), so that every gateway knows every service:
//!
//! - `service/{name}`: a [`ServiceRecord`], its component as the blob. A
//!   publish, start, stop or removal anywhere writes it; the gateway the
//!   service is placed on acts on it.
//! - `service-run/{name}`: a [`RunRecord`] — which gateway runs the
//!   service, or last ran it and let it go — with a checkpoint of its
//!   key-value store as the blob ([`encode_checkpoint`]).
//!
//! The key-value store is *checkpointed*, not replicated on each write: the
//! gateway that runs a service writes a checkpoint at most once per
//! [`CHECKPOINT_EVERY`] while the store changes, and a last one when it lets
//! the service go. A gateway that takes over after its runner died starts
//! from the last checkpoint, so the writes of that runner's last second or
//! so can be lost; a hand-over between live gateways loses none.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) const SERVICE: &str = "service/";
pub(crate) const RUN: &str = "service-run/";
/// How often a running service's changed store is checkpointed.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A service as the whole local cloud knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceRecord {
    pub manifest: String,
    pub digest: String,
    /// Whether it should run; `stop` clears it, `start` sets it.
    pub enabled: bool,
    /// Microseconds since the epoch.
    pub installed_at: u64,
    /// The gateway it was first published at: the first segment of its
    /// outputs' ids wherever it runs.
    pub home: String,
    /// The publisher's, over `digest` and `manifest`; every gateway with
    /// trusted keys checks it before it runs the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::Signature>,
}

/// Who runs a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub gateway: String,
    /// `false`: the gateway let the service go (its checkpoint is final).
    pub held: bool,
}

impl RunRecord {
    /// The gateway that runs the service now, if any.
    pub fn runner(&self) -> Option<&str> {
        self.held.then_some(self.gateway.as_str())
    }
}

/// A key-value store as bytes: for each entry, the key's length (u32 big
/// endian), the key, the value's length, the value.
pub fn encode_checkpoint(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
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
pub fn decode_checkpoint(mut bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
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
            prop_assert_eq!(decode_checkpoint(&encode_checkpoint(&entries)).unwrap(), entries);
        }

        #[test]
        fn any_bytes_decode_or_give_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_checkpoint(&bytes);
        }
    }

    #[test]
    fn a_cut_checkpoint_is_refused() {
        let bytes = encode_checkpoint(&[("k".into(), b"value".to_vec())]);
        assert!(decode_checkpoint(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(decode_checkpoint(&[]).unwrap(), vec![]);
    }
}
