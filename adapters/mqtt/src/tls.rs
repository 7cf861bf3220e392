//! TLS to an external broker: rustls with the ring provider, trusting the
//! certificates of one CA file (a site's own CA, or the system bundle), and
//! optionally presenting a client certificate.
//!
//! Built once at start-up, so that an unreadable or empty certificate file
//! stops the gateway with a clear error instead of a reconnect loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Where Debian keeps the system's trusted CAs: the default for `mqtts://`
/// without a `ca_file`.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {kind} from {path}: {reason}")]
    Read {
        kind: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{path} holds no {kind}")]
    Empty { kind: &'static str, path: PathBuf },
    #[error("mqtt.client_cert_file and mqtt.client_key_file go together")]
    HalfClientIdentity,
    #[error("TLS set-up: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The client's TLS configuration.
pub fn client_config(
    ca_file: &Path,
    client_identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(ca_file)? {
        // One malformed entry in a system bundle must not refuse the rest.
        if let Err(error) = roots.add(certificate) {
            tracing::warn!(%error, file = %ca_file.display(), "skipping a CA certificate");
        }
    }
    if roots.is_empty() {
        return Err(TlsError::Empty {
            kind: "usable CA certificate",
            path: ca_file.to_owned(),
        });
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    let config = match client_identity {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Read {
                kind: "a private key",
                path: key_file.to_owned(),
                reason: e.to_string(),
            })?;
            builder.with_client_auth_cert(certificates(cert_file)?, key)?
        }
    };
    Ok(Arc::new(config))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |reason: String| TlsError::Read {
        kind: "certificates",
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(TlsError::Empty {
            kind: "PEM certificate",
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_is_a_clear_error() {
        let error = client_config(Path::new("/nonexistent/ca.pem"), None).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "not a certificate\n").unwrap();
        let error = client_config(file.path(), None).unwrap_err();
        assert!(matches!(error, TlsError::Empty { .. }), "{error}");
    }
}
