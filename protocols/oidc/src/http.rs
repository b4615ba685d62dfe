//! The HTTP client of back-channel logout.

use std::time::Duration;

/// Verified TLS with the system roots and those of `SSL_CERT_FILE`, as for
/// CAS single logout; plain http is allowed (loopback relying parties).
/// Redirects are not followed.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .timeout(timeout)
        .user_agent(concat!("Castellan/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
        match std::fs::read(&path) {
            Ok(pem) => match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) => {
                    for cert in certs {
                        builder = builder.add_root_certificate(cert);
                    }
                }
                Err(e) => {
                    tracing::warn!(path = ?path, error = %e, "SSL_CERT_FILE is not a PEM bundle")
                }
            },
            Err(e) => tracing::warn!(path = ?path, error = %e, "cannot read SSL_CERT_FILE"),
        }
    }
    builder.build()
}
