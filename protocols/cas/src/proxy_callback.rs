//! Delivery of a PGT to a proxy callback (CAS 3.0 §2.5.4) over verified TLS.

use async_trait::async_trait;
use castellan_core::ProxyCallback;
use std::time::Duration;

/// Builds an HTTP client that trusts the built-in and system roots plus the
/// PEM bundle named by `SSL_CERT_FILE` (so a site can bring its own CA).
pub fn http_client(https_only: bool, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(https_only)
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

pub struct HttpProxyCallback {
    client: reqwest::Client,
}

impl HttpProxyCallback {
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: http_client(true, Duration::from_secs(5))?,
        })
    }
}

#[async_trait]
impl ProxyCallback for HttpProxyCallback {
    async fn deliver(&self, pgt_url: &str, pgt_iou: &str, pgt_id: &str) -> bool {
        let Ok(mut url) = url::Url::parse(pgt_url) else {
            return false;
        };
        url.query_pairs_mut()
            .append_pair("pgtIou", pgt_iou)
            .append_pair("pgtId", pgt_id);
        match self.client.get(url).send().await {
            // §2.5.4: only a 200 counts; redirects are not followed.
            Ok(r) if r.status() == reqwest::StatusCode::OK => true,
            Ok(r) => {
                tracing::warn!(status = %r.status(), "proxy callback did not answer 200");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "proxy callback unreachable or untrusted");
                false
            }
        }
    }
}
