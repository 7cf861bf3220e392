//! The two secrets of a gateway in a local cloud: its own identity key
//! (generated once, kept in the data dir, so its peer id survives
//! restarts) and the cluster key every member holds (a libp2p private
//! network pre-shared key: without it a TCP handshake goes nowhere).

use std::io::Write;
use std::path::Path;

use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;

/// The file in the data dir that holds the gateway's identity key.
pub const IDENTITY_FILE: &str = "p2p-identity.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a libp2p identity key: {reason}")]
    BadIdentity { path: String, reason: String },
    #[error(
        "the cluster key is 64 hex digits or a file in the libp2p /key/swarm/psk/1.0.0/ format: {0}"
    )]
    BadClusterKey(String),
}

/// Loads the identity key from `data_dir`, creating it on first start.
pub fn identity(data_dir: &Path) -> Result<Keypair, KeyError> {
    let path = data_dir.join(IDENTITY_FILE);
    let shown = path.display().to_string();
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| KeyError::BadIdentity {
            path: shown,
            reason: e.to_string(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair
                .to_protobuf_encoding()
                .map_err(|e| KeyError::BadIdentity {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
            write_private(&path, &bytes).map_err(|source| KeyError::Write {
                path: shown,
                source,
            })?;
            Ok(keypair)
        }
        Err(source) => Err(KeyError::Read {
            path: shown,
            source,
        }),
    }
}

/// Writes a file only its owner can read, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

/// Parses a cluster key given as 64 hex digits (`FOGBANK_CLUSTER_KEY`).
pub fn cluster_key_from_hex(hex: &str) -> Result<PreSharedKey, KeyError> {
    cluster_key_from_file(&format!(
        "/key/swarm/psk/1.0.0/\n/base16/\n{}\n",
        hex.trim()
    ))
}

/// Parses a cluster key file (`--cluster-key-file`).
pub fn cluster_key_from_file(contents: &str) -> Result<PreSharedKey, KeyError> {
    contents
        .parse()
        .map_err(|e: libp2p::pnet::KeyParseError| KeyError::BadClusterKey(e.to_string()))
}

/// A fresh random cluster key, in the key-file format.
pub fn new_cluster_key() -> Result<String, getrandom::Error> {
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key)?;
    Ok(PreSharedKey::new(key).to_key_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = identity(dir.path()).unwrap();
        let again = identity(dir.path()).unwrap();
        assert_eq!(first.public().to_peer_id(), again.public().to_peer_id());
    }

    #[test]
    fn cluster_keys_parse_from_hex_and_from_files() {
        let file = new_cluster_key().unwrap();
        let from_file = cluster_key_from_file(&file).unwrap();
        let hex = file.lines().nth(2).unwrap();
        let from_hex = cluster_key_from_hex(hex).unwrap();
        assert_eq!(
            from_file.fingerprint().to_string(),
            from_hex.fingerprint().to_string()
        );
        assert!(cluster_key_from_hex("abc").is_err());
        assert!(cluster_key_from_file("not a key").is_err());
        assert_ne!(new_cluster_key().unwrap(), file, "keys are random");
    }
}
