//! TLS for the server (rustls): certificate files given by the operator, or with `--dev` a
//! self-signed certificate made once and kept in the data directory, announced with its
//! SHA-256 fingerprint so a client can pin exactly it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

pub const DEV_CERT_FILE: &str = "dev-cert.pem";
pub const DEV_KEY_FILE: &str = "dev-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("making the development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A loaded certificate chain and key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|_| TlsError::Pem {
                path: cert.into(),
                what: "certificate",
            })?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TlsError::Pem {
                path: cert.into(),
                what: "certificate",
            })?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                path: cert.into(),
                what: "certificate",
            });
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|_| TlsError::Pem {
            path: key.into(),
            what: "private key",
        })?;
        Ok(Self { chain, key })
    }

    /// SHA-256 of the leaf certificate, as colon-separated upper-case hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.chain[0])
    }

    pub fn server_config(self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// SHA-256 of a DER certificate, as colon-separated upper-case hex.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(cert.as_ref());
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The development certificate for localhost, made on first use and reused after, so a
/// client that trusted its fingerprint keeps trusting the same server.
pub fn dev_identity(data_dir: &Path) -> Result<(Identity, PathBuf), TlsError> {
    let cert_path = data_dir.join(DEV_CERT_FILE);
    let key_path = data_dir.join(DEV_KEY_FILE);
    if !cert_path.exists() || !key_path.exists() {
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        let certified = rcgen::generate_simple_self_signed(names)?;
        // Public, but like every file in the data directory, owner-only (crate::private).
        write_file(&cert_path, certified.cert.pem().as_bytes(), 0o600)?;
        write_file(
            &key_path,
            certified.signing_key.serialize_pem().as_bytes(),
            0o600,
        )?;
    }
    Ok((Identity::load(&cert_path, &key_path)?, cert_path))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Read {
        path: path.into(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certificate_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let (first, path) = dev_identity(dir.path()).unwrap();
        let (second, _) = dev_identity(dir.path()).unwrap();
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_eq!(first.fingerprint().len(), 32 * 3 - 1);
        assert!(path.exists());
        first.server_config().unwrap();
    }
}
