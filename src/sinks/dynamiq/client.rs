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
//! POST would silently become a GET); a response body is read only up to [`MAX_RESPONSE_BODY`](crate::sinks::common::http::MAX_RESPONSE_BODY).
//!
//! Fails: [`ClientError::Build`] when the client cannot be built (bad TLS setup),
//! [`ClientError::InvalidKey`] when the key cannot be put in a header, and
//! [`ClientError::Transport`] for timeouts, refused connections and other I/O errors (all of which
//! the forwarder retries).

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::secret::{Secret, redact_url};
use crate::sinks::common::http::{
    ClientError, UpstreamResponse, build_http_client, install_crypto_provider, read_response,
    retry_after, transport,
};
use crate::sinks::dynamiq::config::{Compression, UpstreamConfig};

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
    /// at most [`MAX_RESPONSE_BODY`](crate::sinks::common::http::MAX_RESPONSE_BODY) of the answer.
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
