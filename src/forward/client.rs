//! The HTTP client toward the collector and the classification of its answers.
//!
//! Owns: the one pooled `reqwest` client (keep-alive, HTTP/2 over TLS when offered, rustls with
//! the platform's roots, `connect_timeout` and `request_timeout` from `[upstream]`), building the
//! `POST {url}/v1/traces` request (its body gzip-compressed with `Content-Encoding: gzip` when
//! `upstream.compression = "gzip"`, see [`UpstreamClient::prepare`]), and [`classify`], the pure
//! mapping from an HTTP status to what the forwarder does next.
//!
//! Guarantees: the `Authorization` header is marked sensitive (never printed by the HTTP stack's
//! debug output) and the key never appears in an error, nor do credentials in the URL; redirects are not followed (a redirected
//! POST would silently become a GET); a response body is read only up to [`MAX_RESPONSE_BODY`].
//!
//! Fails: [`ClientError::Build`] when the client cannot be built (bad TLS setup),
//! [`ClientError::InvalidKey`] when the key cannot be put in a header, and
//! [`ClientError::Transport`] for timeouts, refused connections and other I/O errors (all of which
//! the forwarder retries).

use std::io::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::retry::parse_retry_after;
use crate::config::{Compression, UpstreamConfig};
use crate::secret::{Secret, redact_reqwest_error, redact_url};

/// Most bytes of a response body kept (for the dead-letter store and logs).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Path appended to `upstream.url`.
pub const TRACES_PATH: &str = "/v1/traces";

/// gzip level: 6 (zlib's default) packs JSON runs to about a tenth at well over 50 MB/s.
const GZIP_LEVEL: u32 = 6;
/// Bodies at least this large are compressed on the blocking pool, not on a runtime worker.
const INLINE_GZIP_MAX: usize = 64 * 1024;

/// A request body as it goes on the wire.
#[derive(Debug, Clone)]
pub struct WireBody {
    /// The bytes sent (compressed when `gzip`).
    pub bytes: Bytes,
    /// Whether `bytes` is gzip (sent with `Content-Encoding: gzip`).
    pub gzip: bool,
}

/// gzip-compresses `body`.
pub fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::new(GZIP_LEVEL),
    );
    enc.write_all(body)?;
    enc.finish()
}

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

/// What the forwarder does with a collector answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: acknowledge.
    Success,
    /// 408, 429, 5xx, unexpected 1xx/3xx: retry after a backoff, at least `retry_after`.
    Retry {
        /// `Retry-After`, parsed and capped.
        retry_after: Option<Duration>,
    },
    /// 413: split the request in halves; a single run is dead-lettered as `too_large`.
    TooLarge,
    /// 401/403: hold delivery until the key changes or `auth_hold_retry` passes.
    AuthHold,
    /// Other 4xx: dead-letter as `rejected`, then acknowledge.
    Reject,
}

/// Maps a collector status (and its headers, for `Retry-After`) to the next action.
///
/// 5xx statuses not named in the product table (501, 505, 507, ...) and unexpected 1xx/3xx are
/// retried rather than dead-lettered: they describe the server or the URL, not the runs.
pub fn classify(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Outcome {
    let code = status.as_u16();
    match code {
        200..=299 => Outcome::Success,
        401 | 403 => Outcome::AuthHold,
        413 => Outcome::TooLarge,
        408 | 429 => Outcome::Retry {
            retry_after: retry_after(headers, now),
        },
        400..=499 => Outcome::Reject,
        _ => Outcome::Retry {
            retry_after: retry_after(headers, now),
        },
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

/// The pooled client toward `{upstream.url}/v1/traces`.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    compression: Compression,
}

impl UpstreamClient {
    /// Builds the client (installs the crypto provider first).
    pub fn new(upstream: &UpstreamConfig) -> Result<Self, ClientError> {
        install_crypto_provider();
        let endpoint_text = format!("{}{}", upstream.url.trim_end_matches('/'), TRACES_PATH);
        let endpoint = reqwest::Url::parse(&endpoint_text).map_err(|e| ClientError::Url {
            url: redact_url(&upstream.url).into_owned(),
            message: e.to_string(),
        })?;
        let http = build_http_client(
            &endpoint,
            upstream.connect_timeout,
            upstream.request_timeout,
            Vec::new(),
        )
        .map_err(ClientError::Build)?;
        Ok(Self {
            http,
            endpoint,
            compression: upstream.compression,
        })
    }

    /// Encodes a framed body for the wire: as is, or gzip-compressed (large bodies on the
    /// blocking pool). Should compression fail (it cannot on a `Vec`), the body goes out plain.
    pub async fn prepare(&self, body: Bytes) -> WireBody {
        if self.compression == Compression::None {
            return WireBody {
                bytes: body,
                gzip: false,
            };
        }
        let compressed = if body.len() < INLINE_GZIP_MAX {
            gzip(&body).ok()
        } else {
            let b = body.clone();
            tokio::task::spawn_blocking(move || gzip(&b))
                .await
                .ok()
                .and_then(Result::ok)
        };
        match compressed {
            Some(c) => WireBody {
                bytes: Bytes::from(c),
                gzip: true,
            },
            None => {
                tracing::debug!("gzip failed; sending the body uncompressed");
                WireBody {
                    bytes: body,
                    gzip: false,
                }
            }
        }
    }

    /// The full endpoint URL.
    pub fn endpoint(&self) -> &reqwest::Url {
        &self.endpoint
    }

    /// POSTs one body (see [`prepare`](Self::prepare)) with `Authorization: Bearer <key>`; reads
    /// at most [`MAX_RESPONSE_BODY`] of the answer.
    pub async fn send(
        &self,
        body: &WireBody,
        key: &Secret,
    ) -> Result<UpstreamResponse, ClientError> {
        let mut auth = HeaderValue::try_from(format!("Bearer {}", key.expose()))
            .map_err(|_| ClientError::InvalidKey)?;
        auth.set_sensitive(true);
        let mut req = self
            .http
            .post(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, auth);
        if body.gzip {
            req = req.header(header::CONTENT_ENCODING, "gzip");
        }
        let resp = req
            .body(body.bytes.clone())
            .send()
            .await
            .map_err(transport)?;
        Ok(read_response(resp).await)
    }
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

fn is_loopback(url: &reqwest::Url) -> bool {
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

    fn outcome(code: u16) -> Outcome {
        classify(
            StatusCode::from_u16(code).unwrap(),
            &HeaderMap::new(),
            SystemTime::now(),
        )
    }

    #[test]
    fn every_2xx_is_a_success() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(outcome(code), Outcome::Success, "{code}");
        }
    }

    #[test]
    fn timeouts_throttling_and_server_errors_are_retried() {
        for code in [408, 429, 500, 502, 503, 504, 501, 505, 507, 599] {
            assert_eq!(
                outcome(code),
                Outcome::Retry { retry_after: None },
                "{code}"
            );
        }
    }

    #[test]
    fn unexpected_informational_and_redirect_answers_are_retried_not_dead_lettered() {
        for code in [100, 301, 302, 307, 308] {
            assert_eq!(
                outcome(code),
                Outcome::Retry { retry_after: None },
                "{code}"
            );
        }
    }

    #[test]
    fn payload_too_large_splits() {
        assert_eq!(outcome(413), Outcome::TooLarge);
    }

    #[test]
    fn unauthorized_and_forbidden_hold_delivery() {
        assert_eq!(outcome(401), Outcome::AuthHold);
        assert_eq!(outcome(403), Outcome::AuthHold);
    }

    #[test]
    fn other_client_errors_are_permanent_rejections() {
        for code in [400, 404, 405, 409, 410, 415, 422, 451, 499] {
            assert_eq!(outcome(code), Outcome::Reject, "{code}");
        }
    }

    #[test]
    fn retry_after_is_carried_on_retryable_answers() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        for code in [429, 503] {
            assert_eq!(
                classify(StatusCode::from_u16(code).unwrap(), &h, SystemTime::now()),
                Outcome::Retry {
                    retry_after: Some(Duration::from_secs(2))
                }
            );
        }
    }

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

    #[test]
    fn the_client_builds_for_https_and_http_urls_and_rejects_garbage() {
        let mut up = UpstreamConfig::default();
        let c = UpstreamClient::new(&up).unwrap();
        assert_eq!(
            c.endpoint().as_str(),
            "https://collector.getdynamiq.ai/v1/traces"
        );
        up.url = "http://127.0.0.1:1/".into();
        assert_eq!(
            UpstreamClient::new(&up).unwrap().endpoint().as_str(),
            "http://127.0.0.1:1/v1/traces"
        );
        up.url = "not a url".into();
        assert!(matches!(
            UpstreamClient::new(&up),
            Err(ClientError::Url { .. })
        ));
    }

    #[tokio::test]
    async fn prepare_compresses_only_when_gzip_is_configured_small_and_large_bodies_alike() {
        use std::io::Read as _;
        let mut up = UpstreamConfig {
            url: "http://127.0.0.1:1".into(),
            ..UpstreamConfig::default()
        };
        let small = Bytes::from_static(br#"{"runs":[{"id":"a"}]}"#);
        let plain = UpstreamClient::new(&up)
            .unwrap()
            .prepare(small.clone())
            .await;
        assert!(!plain.gzip);
        assert_eq!(plain.bytes, small);
        up.compression = Compression::Gzip;
        let client = UpstreamClient::new(&up).unwrap();
        let large = Bytes::from(
            format!(
                r#"{{"runs":[{}]}}"#,
                vec![r#"{"id":"x"}"#; 20_000].join(",")
            )
            .into_bytes(),
        );
        assert!(large.len() > INLINE_GZIP_MAX);
        for body in [small, large] {
            let wire = client.prepare(body.clone()).await;
            assert!(wire.gzip);
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&wire.bytes[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, body.to_vec());
        }
    }

    #[test]
    fn a_key_with_a_newline_inside_is_refused_without_showing_it() {
        let e = HeaderValue::try_from("Bearer a\nb".to_string());
        assert!(e.is_err());
        assert!(!ClientError::InvalidKey.to_string().contains("a\nb"));
    }
}
