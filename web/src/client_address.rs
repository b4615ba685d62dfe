//! The client's address, for throttling: the peer, or — when the peer is a
//! trusted reverse proxy — the nearest untrusted hop in `X-Forwarded-For`.

use crate::state::SharedState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The client's address as a handler argument (`None` when the connection
/// has no peer address, as in in-process tests).
pub struct ClientAddress(pub Option<IpAddr>);

impl FromRequestParts<SharedState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(
            |ConnectInfo(peer)| {
                client_ip(peer.ip(), &parts.headers, &state.settings.trusted_proxies)
            },
        )))
    }
}

pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Read right to left: each trusted proxy appended the address it saw.
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
        h
    }

    #[test]
    fn forwarded_for_counts_only_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "198.51.100.9".parse().unwrap();
        // A client cannot pick its own address by sending the header directly.
        assert_eq!(
            client_ip(stranger, &headers("203.0.113.5"), &trusted),
            stranger
        );
        assert_eq!(
            client_ip(proxy, &headers("203.0.113.5"), &trusted),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        // A forged left part is skipped: the nearest untrusted hop wins.
        assert_eq!(
            client_ip(proxy, &headers("1.1.1.1, 203.0.113.5, 10.9.9.9"), &trusted),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        assert_eq!(client_ip(proxy, &headers("junk"), &trusted), proxy);
        assert_eq!(client_ip(proxy, &headers("203.0.113.5"), &[]), proxy);
    }
}
