//! Who a request comes from: the peer's address, or the client's behind a trusted proxy.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::Response;

use crate::service::state::AppState;

/// The client's address, put on every request by `server::run`.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddress(pub std::net::SocketAddr);

/// Where a request came from, for the audit log: the client's IP address.
#[derive(Debug, Clone)]
pub struct Origin(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(origin_of(parts)))
    }
}

pub fn origin_of(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ClientAddress>()
        .map(|client| client.0)
        .or_else(|| {
            parts
                .extensions
                .get::<PeerAddress>()
                .map(|peer| peer.0.ip())
        })
        .map(|address| address.to_string())
}

/// The client's address as far as the server can trust it, set on every request by
/// [`resolve_client`].
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

/// The client's address: the peer's own, or, when the peer is a trusted proxy, the right-most
/// address in `X-Forwarded-For` that is not a trusted proxy. Each proxy appends the address it
/// got the request from, so entries to the right of the first untrusted one were written by
/// proxies we trust, and anything to its left may be the client's own invention. A malformed
/// entry stops the walk at the last address known.
pub fn client_address(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded_for
        .iter()
        .flat_map(|value| value.split(','))
        .rev()
    {
        let Ok(address) = entry.trim().parse::<IpAddr>() else {
            return client;
        };
        client = address;
        if !trusted.contains(&address) {
            return address;
        }
    }
    client
}

/// Puts the [`ClientAddress`] on the request, from the peer and the trusted proxies' headers.
pub async fn resolve_client(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut request: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(PeerAddress(peer)) = request.extensions().get::<PeerAddress>().copied() {
        let headers: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        let client = client_address(peer.ip(), &headers, &state.config.limits.trusted_proxies);
        request.extensions_mut().insert(ClientAddress(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let proxy = ip("10.0.0.1");
        let trusted = [proxy, ip("10.0.0.2")];
        assert_eq!(
            client_address(ip("198.51.100.9"), &["203.0.113.5"], &trusted),
            ip("198.51.100.9"),
            "a client cannot name itself"
        );
        assert_eq!(
            client_address(proxy, &["203.0.113.5"], &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_address(proxy, &["192.0.2.66, 203.0.113.5, 10.0.0.2"], &trusted),
            ip("203.0.113.5"),
            "what the client wrote left of the real address is ignored"
        );
        assert_eq!(
            client_address(proxy, &["192.0.2.66", "203.0.113.5"], &trusted),
            ip("203.0.113.5"),
            "several headers read as one list"
        );
        assert_eq!(client_address(proxy, &[], &trusted), proxy);
        assert_eq!(
            client_address(proxy, &["not-an-address, 10.0.0.2"], &trusted),
            ip("10.0.0.2")
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// The answer is always the peer or an address from the header; from an untrusted peer,
            /// always the peer.
            #[test]
            fn the_client_address_is_never_invented(
                peer in any::<[u8; 4]>(),
                entries in proptest::collection::vec("[0-9a-f.:, ]{0,40}", 0..4),
                trust_peer in any::<bool>(),
            ) {
                let peer = IpAddr::from(peer);
                let trusted: Vec<IpAddr> = if trust_peer { vec![peer] } else { Vec::new() };
                let headers: Vec<&str> = entries.iter().map(String::as_str).collect();
                let client = client_address(peer, &headers, &trusted);
                if !trust_peer {
                    prop_assert_eq!(client, peer);
                }
                let named = headers
                    .iter()
                    .flat_map(|value| value.split(','))
                    .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
                    .any(|address| address == client);
                prop_assert!(client == peer || named);
            }
        }
    }
}
