//! Where every HTTP client of the workspace is built.
//!
//! reqwest is compiled without a TLS crypto provider of its own (`rustls-no-provider`) so the
//! binary carries one, ring, shared with lapin's `amqps://` connections. reqwest panics when it
//! builds a client and no provider is installed; building through [`client_builder`] installs it
//! first, so no caller can forget.

use std::sync::{Mutex, Once};

/// Root certificates trusted beside the system's by every client built from now on
/// ([`trust_roots`]).
static EXTRA_ROOTS: Mutex<Vec<reqwest::Certificate>> = Mutex::new(Vec::new());

/// Trusts the certificates of a PEM bundle (a private CA) for outgoing HTTPS, beside the system's
/// roots, in every client [`client_builder`] builds from now on. Returns how many there were; a
/// bundle without a certificate is an error.
pub fn trust_roots(pem: &[u8]) -> Result<usize, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    let n = certs.len();
    EXTRA_ROOTS.lock().expect("the roots lock").extend(certs);
    Ok(n)
}

/// A `reqwest` client builder with the process's TLS provider installed.
///
/// It never follows redirects: a redirect would carry what the request carries (a login body with
/// a child's password, a bearer or agent token) to a URL nobody configured. A 3xx is an answer
/// like any other non-2xx one.
pub fn client_builder() -> reqwest::ClientBuilder {
    install_tls_provider();
    let roots = EXTRA_ROOTS.lock().expect("the roots lock").clone();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).tls_certs_merge(roots)
}

/// Installs ring as the process-wide rustls provider (once; a provider installed earlier stays).
pub fn install_tls_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err means another provider is already installed: that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_builds_and_speaks_https() {
        // Would panic inside reqwest if no provider were installed.
        let client = super::client_builder().https_only(true).build();
        assert!(client.is_ok(), "{client:?}");
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
