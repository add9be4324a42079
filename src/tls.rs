//! TLS set-up shared by the HTTP and LDAP clients: one crypto provider (ring) for the process,
//! and client configurations trusting a given CA bundle.

use std::path::Path;

/// Installs ring as the process-wide rustls provider; later calls are no-ops.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client configuration that trusts exactly the CAs in the PEM file `ca`.
pub fn client_config_with_ca(ca: &Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    install_provider();
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("cannot read CA bundle {}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("bad PEM in CA bundle {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable certificate in CA bundle {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("CA bundle {} holds no certificate", ca.display()));
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}
