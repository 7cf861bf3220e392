//! Publisher signatures: who made a service, checked before it runs.
//!
//! A publisher holds an ed25519 key pair (`fogbank service keygen`) and
//! signs what it publishes (`publish --sign`): the component's SHA-256 and
//! the manifest's, under a domain tag, so a signature cannot be moved to
//! another component, another manifest, or another protocol's message. A
//! gateway with trusted keys ([`TrustedKeys`]) takes only services signed
//! by one of them, at publish and again before it runs one that the local
//! cloud handed it: the signature travels in the service's record.
//!
//! Keys are written `ed25519:<64 hex digits>` (the public key) and a key
//! file holds the 32-byte secret seed in hex after comment lines.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What is signed starts with this, so the bytes mean nothing elsewhere.
const DOMAIN: &[u8] = b"fogbank service signature v1\0";
const KEY_PREFIX: &str = "ed25519:";

/// A signature as a service record and a publish request carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The signer's public key, `ed25519:<hex>`.
    pub key: String,
    /// The 64-byte signature, hex.
    pub value: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error(
        "the component is not signed, and this gateway takes only components signed by its trusted keys (publish --sign)"
    )]
    Unsigned,
    #[error("signed by {0}, which this gateway does not trust")]
    Untrusted(String),
    #[error(
        "the signature by {0} does not match this component and manifest: they were changed after signing, or signed with another key"
    )]
    Mismatch(String),
    #[error("{0}")]
    Malformed(String),
}

/// The message a publisher signs for a component (by its `sha256:` digest)
/// and a manifest.
fn message(component_digest: &str, manifest: &str) -> Result<Vec<u8>, SignatureError> {
    let component = component_digest
        .strip_prefix("sha256:")
        .and_then(from_hex::<32>)
        .ok_or_else(|| {
            SignatureError::Malformed(format!("{component_digest:?} is not a sha256 digest"))
        })?;
    let mut message = DOMAIN.to_vec();
    message.extend_from_slice(&component);
    message.extend_from_slice(&Sha256::digest(manifest.as_bytes()));
    Ok(message)
}

/// A publisher's secret key.
pub struct PublisherKey(SigningKey);

impl PublisherKey {
    pub fn generate() -> Result<Self, SignatureError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| SignatureError::Malformed(format!("no randomness for a key: {e}")))?;
        Ok(PublisherKey(SigningKey::from_bytes(&seed)))
    }

    /// Reads a key file's text (comment lines start with `#`).
    pub fn from_file_text(text: &str) -> Result<Self, SignatureError> {
        let seed = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .and_then(from_hex::<32>)
            .ok_or_else(|| {
                SignatureError::Malformed(
                    "not a publisher key file: expected 64 hex digits (fogbank service keygen)"
                        .into(),
                )
            })?;
        Ok(PublisherKey(SigningKey::from_bytes(&seed)))
    }

    pub fn to_file_text(&self) -> String {
        format!(
            "# fogbank publisher key (ed25519); keep it secret.\n# Its public key: {}\n{}\n",
            self.public(),
            to_hex(&self.0.to_bytes())
        )
    }

    /// `ed25519:<hex>`, what gateways list as trusted.
    pub fn public(&self) -> String {
        format!("{KEY_PREFIX}{}", to_hex(&self.0.verifying_key().to_bytes()))
    }

    pub fn sign(&self, manifest: &str, component: &[u8]) -> Signature {
        let digest = fogbank_taas::replicated::digest(component);
        let message = message(&digest, manifest).expect("digest() makes a sha256 digest");
        Signature {
            key: self.public(),
            value: to_hex(&self.0.sign(&message).to_bytes()),
        }
    }
}

/// The publishers a gateway takes services from; none: every service.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys(Vec<(String, VerifyingKey)>);

impl TrustedKeys {
    /// Parses `ed25519:<hex>` keys.
    pub fn parse<S: AsRef<str>>(keys: &[S]) -> Result<Self, SignatureError> {
        keys.iter()
            .map(|key| {
                let key = key.as_ref().trim();
                parse_public(key).map(|verifying| (key.to_owned(), verifying))
            })
            .collect::<Result<_, _>>()
            .map(TrustedKeys)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether this gateway takes the service: always without trusted
    /// keys, else only with a valid signature by one of them.
    pub fn check(
        &self,
        component_digest: &str,
        manifest: &str,
        signature: Option<&Signature>,
    ) -> Result<(), SignatureError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let signature = signature.ok_or(SignatureError::Unsigned)?;
        let key = parse_public(&signature.key)?;
        if !self.0.iter().any(|(_, trusted)| *trusted == key) {
            return Err(SignatureError::Untrusted(signature.key.clone()));
        }
        let bytes = from_hex::<64>(&signature.value).ok_or_else(|| {
            SignatureError::Malformed("the signature is not 128 hex digits".into())
        })?;
        key.verify_strict(
            &message(component_digest, manifest)?,
            &ed25519_dalek::Signature::from_bytes(&bytes),
        )
        .map_err(|_| SignatureError::Mismatch(signature.key.clone()))
    }
}

fn parse_public(key: &str) -> Result<VerifyingKey, SignatureError> {
    key.strip_prefix(KEY_PREFIX)
        .and_then(from_hex::<32>)
        .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
        .ok_or_else(|| {
            SignatureError::Malformed(format!(
                "{key:?} is not a publisher key: expected ed25519:<64 hex digits>"
            ))
        })
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogbank_taas::replicated::digest;
    use proptest::prelude::*;

    const MANIFEST: &str = "name = \"alarm\"\nversion = \"1.0.0\"\n";

    #[test]
    fn a_trusted_signature_passes_and_every_change_is_caught() {
        let publisher = PublisherKey::generate().unwrap();
        let stranger = PublisherKey::generate().unwrap();
        let component = b"\0asm component bytes".to_vec();
        let signature = publisher.sign(MANIFEST, &component);
        let trusted = TrustedKeys::parse(&[publisher.public()]).unwrap();
        let signed = digest(&component);

        assert_eq!(trusted.check(&signed, MANIFEST, Some(&signature)), Ok(()));
        assert_eq!(
            trusted.check(&signed, MANIFEST, None),
            Err(SignatureError::Unsigned)
        );
        let tampered = digest(b"\0asm other bytes");
        assert!(matches!(
            trusted.check(&tampered, MANIFEST, Some(&signature)),
            Err(SignatureError::Mismatch(_))
        ));
        let granted_more = format!("{MANIFEST}[grants]\nactuate = [{{ type = \"lock\" }}]\n");
        assert!(matches!(
            trusted.check(&signed, &granted_more, Some(&signature)),
            Err(SignatureError::Mismatch(_))
        ));
        let by_stranger = stranger.sign(MANIFEST, &component);
        assert_eq!(
            trusted.check(&signed, MANIFEST, Some(&by_stranger)),
            Err(SignatureError::Untrusted(stranger.public()))
        );
        // A stranger's signature under the trusted key's name.
        let forged = Signature {
            key: publisher.public(),
            value: by_stranger.value,
        };
        assert!(matches!(
            trusted.check(&signed, MANIFEST, Some(&forged)),
            Err(SignatureError::Mismatch(_))
        ));
        // No trusted keys: anything goes, signed or not.
        assert_eq!(
            TrustedKeys::default().check(&signed, MANIFEST, None),
            Ok(())
        );
    }

    #[test]
    fn a_key_file_round_trips_and_bad_keys_are_named() {
        let key = PublisherKey::generate().unwrap();
        let again = PublisherKey::from_file_text(&key.to_file_text()).unwrap();
        assert_eq!(again.public(), key.public());
        assert!(PublisherKey::from_file_text("# nothing\n").is_err());
        for bad in ["ed25519:zz", "rsa:00", "ed25519:", &key.public()[..70]] {
            assert!(
                matches!(TrustedKeys::parse(&[bad]), Err(SignatureError::Malformed(m)) if m.contains("ed25519:<64 hex digits>")),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn hostile_signatures_are_refused_never_a_panic(key in ".{0,80}", value in ".{0,140}") {
            let publisher = PublisherKey::generate().unwrap();
            let trusted = TrustedKeys::parse(&[publisher.public()]).unwrap();
            let signature = Signature { key, value };
            prop_assert!(trusted.check(&digest(b"x"), MANIFEST, Some(&signature)).is_err());
        }
    }
}
