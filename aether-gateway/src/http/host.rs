//! Which `Host` names the gateway answers (`allowed_hosts`).
//!
//! A page on another site whose name is rebound to the gateway's address
//! (DNS rebinding) is, for the browser, of the same origin as the gateway:
//! it could read `/snapshot` and `/metrics`, and open the bridge. Its
//! requests carry its own name in `Host`, so a gateway that knows the names
//! it is reached by refuses them: 421 Misdirected Request, on every path
//! (the bridge's WebSocket upgrade goes through the same router).
//!
//! Always answered, whatever the list: `localhost`, loopback addresses and
//! the address the gateway listens on, since a rebound page never carries
//! an address in `Host`, only its own name. Empty (the default), every
//! name is answered. A request without a `Host` is refused when the list is
//! set (every browser sends one).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// The names answered.
#[derive(Clone, Debug)]
pub(crate) struct AllowedHosts {
    /// Lower case, without brackets; empty: any.
    names: Arc<[String]>,
    listen: IpAddr,
}

impl AllowedHosts {
    /// `names` (`allowed_hosts`), and the address the gateway listens on.
    pub(crate) fn new(names: &[String], listen: SocketAddr) -> Self {
        let names = names
            .iter()
            .map(|n| {
                n.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase()
            })
            .collect();
        Self {
            names,
            listen: listen.ip(),
        }
    }

    /// Whether a request with `host` (the `Host` header or the URI's
    /// authority, with or without a port) is answered.
    pub(crate) fn allows(&self, host: Option<&str>) -> bool {
        if self.names.is_empty() {
            return true;
        }
        let Some(host) = host.map(without_port) else {
            return false;
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host == "localhost" {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && (ip.is_loopback() || (ip == self.listen && !ip.is_unspecified()))
        {
            return true;
        }
        self.names.contains(&host)
    }
}

/// `host` without its port, and an IPv6 address without its brackets.
fn without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match host.rsplit_once(':') {
        // One colon: a name or IPv4 address and its port; more: an IPv6
        // address sent without brackets (invalid, compared whole).
        Some((name, _)) if !name.contains(':') => name,
        _ => host,
    }
}

/// Middleware: answers 421 to a request for a name not allowed.
pub(crate) async fn check(
    State(allowed): State<AllowedHosts>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if allowed.allows(host) {
        return next.run(request).await;
    }
    (
        StatusCode::MISDIRECTED_REQUEST,
        "this gateway does not answer to that host name ([gateway] allowed_hosts)\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_listed_loopback_and_the_listen_address_are_answered() {
        let listen = "10.0.0.5:9464".parse().unwrap();
        let allowed = AllowedHosts::new(&["Gateway.Example".into(), "[fd00::1]".into()], listen);
        for host in [
            "gateway.example",
            "GATEWAY.example:9464",
            "gateway.example.",
            "localhost:9464",
            "127.0.0.1",
            "127.0.0.2:80",
            "[::1]:9464",
            "10.0.0.5:9464",
            "[fd00::1]:9464",
        ] {
            assert!(allowed.allows(Some(host)), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9464",
            "gateway.example.evil.example",
            "10.0.0.6",
            "",
        ] {
            assert!(!allowed.allows(Some(host)), "{host}");
        }
        assert!(!allowed.allows(None));
        let any = AllowedHosts::new(&[], listen);
        assert!(any.allows(Some("evil.example")) && any.allows(None));
    }
}
