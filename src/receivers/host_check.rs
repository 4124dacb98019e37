//! The `Host` check of the HTTP listener, against DNS rebinding: a web page whose own name is
//! made to resolve to 127.0.0.1 can send requests to the sidecar from the developer's browser
//! and read the answers (local traces, the `/api/*` passthrough signed with the project key),
//! because the browser believes it talks to the page's origin. Such requests carry the page's
//! name in `Host`, so they are refused.
//!
//! Guarantees: a request is served only when its host (`Host`, or the HTTP/2 `:authority`) is
//! absent, an IP literal (a page served from an IP literal is its own origin, it cannot be
//! rebound), `localhost` or a `*.localhost` name (browsers resolve those to loopback
//! themselves), or matches `ingest.allowed_hosts`; anything else gets `421` with a JSON error,
//! on every endpoint except `/healthz` (liveness probes name whatever they like), counted in
//! `dynamiq_sidecar_http_requests_refused_host_total`. No endpoint sends CORS
//! headers, so no other origin is ever allowed to read an answer either.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;

use super::error::ApiError;

/// The names a listener answers to.
#[derive(Debug, Clone)]
pub struct HostCheck {
    /// Lower-case names and `*.` suffixes from `ingest.allowed_hosts`.
    allowed: Arc<[String]>,
    any: bool,
    refused: Counter,
}

impl HostCheck {
    /// A check that allows `allowed_hosts` besides the built-in names; counts refusals in
    /// `refused`.
    pub fn new(allowed_hosts: &[String], refused: Counter) -> Self {
        Self {
            any: allowed_hosts.iter().any(|h| h == "*"),
            allowed: allowed_hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            refused,
        }
    }

    /// Whether a request naming `host` (as sent: maybe with a port, maybe an IPv6 literal in
    /// brackets) is served.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let name = strip_port(host.trim()).trim_end_matches('.');
        if name.is_empty() {
            return true;
        }
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = name.to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        self.allowed
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(domain) => name
                    .strip_suffix(domain)
                    .is_some_and(|head| head.ends_with('.') && head.len() > 1),
                None => *pattern == name,
            })
    }
}

/// `host:port` → `host`; `[v6]:port` and `[v6]` → `v6`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 literal, no port.
        Some((name, _)) if !name.contains(':') => name,
        _ => host,
    }
}

/// The host a request names: `:authority` (HTTP/2, or an absolute URI), else `Host`.
fn request_host(request: &Request) -> Option<&str> {
    request
        .uri()
        .authority()
        .map(|a| a.as_str().rsplit('@').next().unwrap_or(""))
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .map(|v| v.to_str().unwrap_or("\u{0}"))
        })
}

/// Middleware: refuses requests whose host is not allowed (see the module doc).
pub async fn check_host(State(check): State<HostCheck>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    match request_host(&request) {
        Some(host) if !check.allows(host) => {
            check.refused.inc();
            let shown: String = host.chars().take(100).collect();
            ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                format!(
                    "Host {shown:?} is not a name this sidecar answers to (localhost, IP addresses and ingest.allowed_hosts); add it to ingest.allowed_hosts if clients really use it"
                ),
            )
            .into_response()
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(allowed: &[&str]) -> HostCheck {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        HostCheck::new(&allowed, Counter::default())
    }

    #[test]
    fn loopback_names_and_ip_literals_are_allowed() {
        let c = check(&[]);
        for host in [
            "localhost",
            "LOCALHOST:4318",
            "localhost.",
            "app.localhost:80",
            "127.0.0.1",
            "127.0.0.1:4318",
            "10.1.2.3:4318",
            "[::1]:4318",
            "[::1]",
            "::1",
            "",
        ] {
            assert!(c.allows(host), "{host}");
        }
    }

    #[test]
    fn other_names_are_refused() {
        let c = check(&[]);
        for host in [
            "evil.example",
            "evil.example:4318",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "x",
            "\u{0}",
        ] {
            assert!(!c.allows(host), "{host}");
        }
    }

    #[test]
    fn allowed_hosts_match_exactly_or_by_suffix() {
        let c = check(&["dynamiq-sidecar.obs.svc", "*.svc.cluster.local"]);
        assert!(c.allows("dynamiq-sidecar.obs.svc:4318"));
        assert!(c.allows("DYNAMIQ-SIDECAR.obs.svc"));
        assert!(c.allows("gw.obs.svc.cluster.local"));
        assert!(!c.allows("svc.cluster.local"));
        assert!(!c.allows("evilsvc.cluster.local"));
        assert!(!c.allows("other.obs.svc"));
        assert!(check(&["*"]).allows("anything.example"));
    }
}
