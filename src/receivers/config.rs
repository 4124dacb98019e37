//! `[ingest]`: the receivers' section of the configuration, with its defaults and checks.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::values::duration_str;
use crate::config::{ConfigError, Source};

/// Environment variable holding the inbound token itself (overrides `ingest.auth_token_file`).
pub const INGEST_TOKEN_ENV: &str = "DYNAMIQ_SIDECAR_INGEST_AUTH_TOKEN";

/// `[ingest]`: where the sidecar listens and what it accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// HTTP listener: Dynamiq runs, OTLP/HTTP, query API, admin endpoints.
    pub http_addr: SocketAddr,
    /// OTLP/gRPC listener.
    pub grpc_addr: SocketAddr,
    /// Largest accepted request body, checked before and after decompression.
    pub max_body_bytes: u64,
    /// Memory all requests in flight may hold together (bodies, decompressed bytes, decoding
    /// estimates), over both listeners.
    pub max_inflight_bytes: u64,
    /// File holding the inbound bearer token clients must present. Required when a listener is
    /// not on loopback (unless `allow_unauthenticated`).
    pub auth_token_file: String,
    /// Accept unauthenticated clients on non-loopback listeners (logs a warning at start).
    pub allow_unauthenticated: bool,
    /// How long a client may take to send one request (headers and body) before it is cut off.
    #[serde(with = "duration_str")]
    pub request_timeout: Duration,
    /// Maximum concurrent connections on each listener (HTTP and gRPC).
    pub max_connections: usize,
    /// A connection with no request in flight that receives nothing this long is closed.
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// A response write that makes no progress this long ends the connection.
    #[serde(with = "duration_str")]
    pub write_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection (h2c and gRPC).
    pub max_concurrent_streams: u32,
    /// HTTP/1: most bytes of an unread request body discarded after an early answer.
    pub linger_bytes: u64,
    /// HTTP/1: longest an unread request body is discarded after an early answer.
    #[serde(with = "duration_str")]
    pub linger_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings; a ping unanswered as long drops the connection.
    #[serde(with = "duration_str")]
    pub keepalive_interval: Duration,
    /// Host names (besides localhost, IP literals and the listen address) that requests may
    /// name in `Host`; `*.example.com` matches subdomains, `*` any name.
    pub allowed_hosts: Vec<String>,
    /// `source_id` of runs made from OTLP spans whose resource has neither
    /// `service.instance.id` nor `service.name`.
    pub otlp_source_id: String,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:4318".parse().expect("valid literal"),
            grpc_addr: "127.0.0.1:4317".parse().expect("valid literal"),
            max_body_bytes: 32 * 1024 * 1024,
            max_inflight_bytes: 128 * 1024 * 1024,
            auth_token_file: String::new(),
            allow_unauthenticated: false,
            request_timeout: Duration::from_secs(30),
            max_connections: 4096,
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(30),
            max_concurrent_streams: 100,
            linger_bytes: 128 * 1024 * 1024,
            linger_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(30),
            allowed_hosts: Vec::new(),
            otlp_source_id: "otel".to_owned(),
        }
    }
}

/// Whether `pattern` can be an `ingest.allowed_hosts` entry: `*`, a host name, or `*.` followed
/// by a domain (ASCII letters, digits, `-` and `.`; no port, no scheme).
fn is_host_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    pattern == "*"
        || (!name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

impl IngestConfig {
    /// Checks the section (`at` locates the keys).
    pub fn validate(&self, at: &Source<'_>) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(at.error("ingest.max_body_bytes", "must be greater than 0"));
        }
        if self.max_inflight_bytes < 2 * self.max_body_bytes {
            return Err(at.error(
                "ingest.max_inflight_bytes",
                format!(
                    "must be at least twice ingest.max_body_bytes ({}), got {}",
                    self.max_body_bytes, self.max_inflight_bytes
                ),
            ));
        }
        if self.max_connections == 0 {
            return Err(at.error("ingest.max_connections", "must be greater than 0"));
        }
        for (key, value) in [
            ("ingest.idle_timeout", self.idle_timeout),
            ("ingest.write_timeout", self.write_timeout),
            ("ingest.keepalive_interval", self.keepalive_interval),
            ("ingest.linger_timeout", self.linger_timeout),
        ] {
            if value.is_zero() {
                return Err(at.error(key, "must be greater than 0"));
            }
        }
        if self.max_concurrent_streams == 0 {
            return Err(at.error("ingest.max_concurrent_streams", "must be greater than 0"));
        }
        if let Some(bad) = self.allowed_hosts.iter().find(|h| !is_host_pattern(h)) {
            return Err(at.error(
                "ingest.allowed_hosts",
                format!("{bad:?} is not a host name, \"*.\" + a domain, or \"*\""),
            ));
        }
        Ok(())
    }

    /// True when any listener is reachable from outside the host.
    pub fn is_exposed(&self) -> bool {
        !self.http_addr.ip().is_loopback() || !self.grpc_addr.ip().is_loopback()
    }
}
