//! `tls = { ... }` of a broker endpoint: the files that complete the system trust
//! store and present a client certificate, and the rustls client they make.
//!
//! The broker's certificate is checked against the system trust store
//! (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured) plus `ca_file`. Every client
//! uses rustls with the ring provider, so the host builds one crypto library.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::config::Problems;

/// `tls = { ca_file, client_cert_file, client_key_file }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file of further CA certificates to trust (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to the broker (mutual TLS); needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// True when any file is set.
    #[must_use]
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.client_cert_file.is_some() || self.client_key_file.is_some()
    }

    /// Reports missing files, a certificate without its key, and files set for a
    /// connection without TLS (`tls` is false; `None` when the URL is itself invalid),
    /// naming the scheme that would use them.
    pub fn validate(&self, path: &str, tls: Option<bool>, tls_scheme: &str, problems: &mut Problems) {
        let files = [
            ("ca_file", &self.ca_file),
            ("client_cert_file", &self.client_cert_file),
            ("client_key_file", &self.client_key_file),
        ];
        for (field, file) in files {
            if let Some(file) = file {
                problems.check(file.is_file(), format!("{path}.{field}"), format!("{} does not exist", file.display()));
            }
        }
        problems.check(
            self.client_cert_file.is_some() == self.client_key_file.is_some(),
            path,
            "`client_cert_file` and `client_key_file` go together",
        );
        problems.check(
            !self.is_set() || tls != Some(false),
            path,
            format!("TLS settings need a `{tls_scheme}://` url"),
        );
    }

    /// The rustls client settings: the system roots plus `ca_file`, and the client
    /// certificate when set.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, named.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        // Certificates the store cannot parse are skipped, as browsers do.
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if let Some(ca) = &self.ca_file {
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert)?;
                let key =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| format!("the client certificate: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// The PEM certificates of `file`.
fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let read = CertificateDer::pem_file_iter(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let certs = read.collect::<Result<Vec<_>, _>>().map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", file.display()));
    }
    Ok(certs)
}
