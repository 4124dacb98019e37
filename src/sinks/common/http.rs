//! The HTTP client toolkit every backend call shares (the collector, the OTLP output, the
//! `/api/*` passthrough): one way to build a pooled `reqwest` client, to read an answer, to
//! classify a transport failure and to read `Retry-After`.
//!
//! Guarantees: rustls with the platform's roots (plus any configured extra roots); redirects are
//! never followed; no proxy for a loopback backend; a response body is read only up to
//! [`MAX_RESPONSE_BODY`]; errors name URLs without their credentials and never carry a key.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, header};

use super::retry::parse_retry_after;
use crate::secret::redact_reqwest_error;

/// Most bytes of a response body kept (for the dead-letter store and logs).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Installs rustls' `ring` crypto provider as the process default, once. Safe to call many times
/// (an already installed provider is kept). Must run before any TLS client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a request could not be made or completed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Build(reqwest::Error),
    /// `upstream.url` is not a usable URL.
    #[error("upstream.url {url:?} is not a valid URL: {message}")]
    Url {
        /// The configured URL (credentials shown as `***`).
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The access key holds characters an HTTP header cannot carry (the value is not shown).
    #[error("the access key contains characters that are not allowed in an HTTP header")]
    InvalidKey,
    /// Timeout, refused connection, TLS or other transport failure.
    #[error("{kind}: {source}")]
    Transport {
        /// Short class of the failure.
        kind: TransportKind,
        /// The underlying error (its text names the URL without credentials, never the key).
        source: reqwest::Error,
    },
}

/// Class of a transport failure, for logs and retry reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Connect or request timeout.
    Timeout,
    /// The connection could not be established.
    Connect,
    /// Anything else (reset, TLS, protocol, body).
    Other,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Timeout => "timeout",
            TransportKind::Connect => "connection error",
            TransportKind::Other => "transport error",
        })
    }
}

/// The `Retry-After` header of an answer, parsed and capped (see [`parse_retry_after`]).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| parse_retry_after(v, now))
}

/// A collector answer.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body, truncated to [`MAX_RESPONSE_BODY`].
    pub body: Bytes,
}

/// The pooled HTTP client the sidecar uses toward a backend (the collector, the OTLP output):
/// rustls, keep-alive, these timeouts, no redirects, no proxy for a loopback `endpoint`;
/// `extra_roots` are trusted besides the system's roots.
pub fn build_http_client(
    endpoint: &reqwest::Url,
    connect_timeout: Duration,
    request_timeout: Duration,
    extra_roots: Vec<reqwest::Certificate>,
) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .tls_backend_rustls()
        .user_agent(concat!("dynamiq-sidecar/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    if !extra_roots.is_empty() {
        builder = builder.tls_certs_merge(extra_roots);
    }
    if is_loopback(endpoint) {
        // A proxy from the environment never applies to a backend on this machine.
        builder = builder.no_proxy();
    }
    builder.build()
}

/// Reads an answer: status, headers, and at most [`MAX_RESPONSE_BODY`] of the body (a body cut
/// short is still a complete answer).
pub async fn read_response(mut resp: reqwest::Response) -> UpstreamResponse {
    let status = resp.status();
    let headers = std::mem::take(resp.headers_mut());
    let mut body = BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BODY - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_RESPONSE_BODY {
                    break;
                }
            }
            Ok(None) => break,
            // The status is what matters; a body cut short is still a complete answer.
            Err(e) => {
                let e = redact_reqwest_error(e);
                tracing::debug!(error = %e, %status, "collector answer body cut short");
                break;
            }
        }
    }
    UpstreamResponse {
        status,
        headers,
        body: body.freeze(),
    }
}

/// Classifies a `reqwest` failure as a [`ClientError::Transport`] (its URL without credentials).
pub fn transport(source: reqwest::Error) -> ClientError {
    let kind = if source.is_timeout() {
        TransportKind::Timeout
    } else if source.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    };
    ClientError::Transport {
        kind,
        source: redact_reqwest_error(source),
    }
}

pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_recognised() {
        for (u, want) in [
            ("http://127.0.0.1:9/v1/traces", true),
            ("http://localhost/v1/traces", true),
            ("http://[::1]:8080/v1/traces", true),
            ("https://collector.getdynamiq.ai/v1/traces", false),
        ] {
            assert_eq!(is_loopback(&reqwest::Url::parse(u).unwrap()), want, "{u}");
        }
    }
}
