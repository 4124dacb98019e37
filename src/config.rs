//! Configuration: the TOML file, `DYNAMIQ_SIDECAR_<SECTION>_<KEY>` environment overrides and CLI
//! flags, merged into one validated [`Config`].
//!
//! Owns: parsing, defaults, validation. Guarantees: a `Config` that leaves this module has been
//! checked once (addresses parse, sizes are positive, enumerations are known, cross-field rules
//! hold), so no other stage re-validates. Every error names the offending key, and where the key
//! came from a file, the file and line (`config/dynamiq-sidecar.toml:23: buffer.max_bytes: ...`);
//! where it came from the environment, the variable. Unknown keys are errors, not warnings, so a
//! typo never silently falls back to a default.
//!
//! Secrets: the access key and the inbound token are never part of `Config`'s `Debug`/`Serialize`
//! output (`check-config` prints a redacted view); nor are OTLP header values, and URLs are
//! serialized and quoted in errors with their credentials as `***` ([`redact_url`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::redact_url;

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "DYNAMIQ_SIDECAR_";
/// Environment variable holding the project-scoped access key.
pub const ACCESS_KEY_ENV: &str = "DYNAMIQ_ACCESS_KEY";
/// Environment variable holding the inbound token itself (overrides `ingest.auth_token_file`).
pub const INGEST_TOKEN_ENV: &str = "DYNAMIQ_SIDECAR_INGEST_AUTH_TOKEN";

/// The whole configuration, validated.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners and request limits.
    pub ingest: IngestConfig,
    /// The Dynamiq collector and the key used toward it.
    pub upstream: UpstreamConfig,
    /// The disk buffer.
    pub buffer: BufferConfig,
    /// Batching, rate limits and retries toward the collector.
    pub forward: ForwardConfig,
    /// Query API and passthrough.
    pub query: QueryConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Logging.
    pub log: LogConfig,
    /// Additional outputs (OTLP fan-out).
    #[serde(skip_serializing_if = "OutputsConfig::is_empty")]
    pub outputs: OutputsConfig,
}

/// `[outputs]`: optional outputs besides the Dynamiq collector.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// `[outputs.otlp]`: every run is also exported as an OTLP span. Absent = no OTLP output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpOutputConfig>,
}

impl OutputsConfig {
    /// True when no output is configured.
    pub fn is_empty(&self) -> bool {
        self.otlp.is_none()
    }
}

/// OTLP transport of the OTLP output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (`POST {endpoint}/v1/traces`).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/gRPC (`TraceService/Export`).
    #[serde(rename = "grpc")]
    Grpc,
}

impl OtlpProtocol {
    fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "http/protobuf" => Some(Self::HttpProtobuf),
            "grpc" => Some(Self::Grpc),
            _ => None,
        }
    }
}

/// Extra request headers of the OTLP output. Values may carry API keys: `Debug` and `Serialize`
/// (hence `check-config`) show only the names.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct OtlpHeaders(pub std::collections::BTreeMap<String, String>);

impl fmt::Debug for OtlpHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "[redacted]")))
            .finish()
    }
}

impl Serialize for OtlpHeaders {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for k in self.0.keys() {
            map.serialize_entry(k, "[redacted]")?;
        }
        map.end()
    }
}

/// A URL as `check-config` prints it: credentials as `***`.
fn serialize_redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// `[outputs.otlp]`: the OTLP output (CONTRACT §8).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpOutputConfig {
    /// Where spans go. For `http/protobuf`, `/v1/traces` is appended unless the URL already has
    /// a path; for `grpc`, the scheme, host and port are used.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub endpoint: String,
    /// `http/protobuf` (default) or `grpc`.
    pub protocol: OtlpProtocol,
    /// Extra headers (HTTP) or metadata (gRPC) sent with every request, e.g. an API key.
    pub headers: OtlpHeaders,
    /// Whole-request timeout (a timeout is retried).
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// `service.name` of the resource the runs are exported under.
    pub service_name: String,
    /// Most spans (runs) in one export request.
    pub max_spans: usize,
    /// Longest a request that is not full waits for more runs.
    #[serde(with = "duration_str")]
    pub max_delay: Duration,
    /// Also send LLM message content as `gen_ai.input.messages` / `gen_ai.output.messages`
    /// (opt-in, as in the GenAI conventions; the exact input and output always travel in
    /// `input.value` / `output.value`).
    pub capture_message_content: bool,
    /// A PEM file of CA certificates trusted for an `https://` endpoint, besides the system's
    /// roots (a private CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for OtlpOutputConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4318".into(),
            protocol: OtlpProtocol::HttpProtobuf,
            headers: OtlpHeaders::default(),
            timeout: Duration::from_secs(10),
            service_name: "dynamiq".into(),
            max_spans: 512,
            max_delay: Duration::from_millis(200),
            capture_message_content: false,
            ca_file: None,
        }
    }
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT`: base URL; `/v1/traces` is appended for `http/protobuf`.
pub const OTEL_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the full traces URL, used as is.
pub const OTEL_TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` or `grpc`.
pub const OTEL_PROTOCOL_ENV: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// `OTEL_EXPORTER_OTLP_HEADERS`: `k=v,k2=v2`, URL-encoded.
pub const OTEL_HEADERS_ENV: &str = "OTEL_EXPORTER_OTLP_HEADERS";

/// `OTEL_EXPORTER_OTLP_CERTIFICATE`: a PEM file of CA certificates for the endpoint.
pub const OTEL_CERTIFICATE_ENV: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
/// `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`: the same, for traces only (wins over the above).
pub const OTEL_TRACES_CERTIFICATE_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE";

/// Applies the standard `OTEL_EXPORTER_OTLP_*` variables to an OTLP output that the file
/// configured. They never enable the output by themselves (the application may set them for
/// its own telemetry). Returns the keys set with their variables.
fn apply_otel_env(
    otlp: &mut OtlpOutputConfig,
    env: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let get = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut set = Vec::new();
    if let Some(value) = get(OTEL_PROTOCOL_ENV) {
        otlp.protocol = OtlpProtocol::parse(&value).ok_or_else(|| ConfigError {
            origin: Some(format!("env {OTEL_PROTOCOL_ENV}")),
            key: "outputs.otlp.protocol".into(),
            message: format!("must be \"http/protobuf\" or \"grpc\", got {value:?}"),
        })?;
        set.push(("outputs.otlp.protocol".into(), OTEL_PROTOCOL_ENV.into()));
    }
    if let Some(value) = get(OTEL_TRACES_ENDPOINT_ENV) {
        otlp.endpoint = value;
        set.push((
            "outputs.otlp.endpoint".into(),
            OTEL_TRACES_ENDPOINT_ENV.into(),
        ));
    } else if let Some(value) = get(OTEL_ENDPOINT_ENV) {
        otlp.endpoint = match otlp.protocol {
            OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", value.trim_end_matches('/')),
            OtlpProtocol::Grpc => value,
        };
        set.push(("outputs.otlp.endpoint".into(), OTEL_ENDPOINT_ENV.into()));
    }
    if let Some(value) = get(OTEL_HEADERS_ENV) {
        for pair in value.split(',').filter(|p| !p.trim().is_empty()) {
            let bad = |what: &str| ConfigError {
                origin: Some(format!("env {OTEL_HEADERS_ENV}")),
                key: "outputs.otlp.headers".into(),
                // Never the value: it may be an API key.
                message: format!("{what}; expected comma-separated key=value pairs"),
            };
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad("an entry has no '='"))?;
            let k = percent_decode(k.trim()).ok_or_else(|| bad("invalid percent-encoding"))?;
            let v = percent_decode(v.trim()).ok_or_else(|| bad("invalid percent-encoding"))?;
            if k.is_empty() {
                return Err(bad("an entry has an empty name"));
            }
            otlp.headers.0.insert(k, v);
        }
        set.push(("outputs.otlp.headers".into(), OTEL_HEADERS_ENV.into()));
    }
    for name in [OTEL_TRACES_CERTIFICATE_ENV, OTEL_CERTIFICATE_ENV] {
        if let Some(value) = get(name) {
            otlp.ca_file = Some(PathBuf::from(value));
            set.push(("outputs.otlp.ca_file".into(), name.into()));
            break;
        }
    }
    Ok(set)
}

/// Decodes `%XX` escapes (UTF-8); `None` on a bad escape or invalid UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

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

/// How the sidecar authenticates toward the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Use the sidecar's own key; the client's `Authorization` is ignored (default).
    SidecarKey,
    /// Forward the key each client sent (stored with its runs, in 0600 files).
    Passthrough,
}

/// `[upstream]`: the Dynamiq collector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Base URL of the collector; runs go to `{url}/v1/traces`.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// File holding the project-scoped access key (re-read when it changes). Empty: use
    /// `DYNAMIQ_ACCESS_KEY`.
    pub access_key_file: String,
    /// `sidecar-key` (default) or `passthrough`.
    pub auth_mode: AuthMode,
    /// TCP + TLS connect timeout.
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// Whole-request timeout (a timeout is retried).
    #[serde(with = "duration_str")]
    pub request_timeout: Duration,
    /// How often the key file is checked for changes.
    #[serde(with = "duration_str")]
    pub key_reload_interval: Duration,
    /// `none` (default) or `gzip`: how request bodies toward the collector are encoded.
    pub compression: Compression,
}

/// Encoding of request bodies toward the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Bodies go out as plain JSON (default).
    None,
    /// Bodies are gzip-compressed and sent with `Content-Encoding: gzip`.
    Gzip,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: "https://collector.getdynamiq.ai".into(),
            access_key_file: String::new(),
            auth_mode: AuthMode::SidecarKey,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            key_reload_interval: Duration::from_secs(5),
            compression: Compression::None,
        }
    }
}

/// What the buffer does when `max_bytes` (or the disk) is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest segment (counted as dropped) to make room (default).
    DropOldest,
    /// Refuse new batches with 429/503 + `Retry-After` until the forwarder frees space.
    Block,
}

/// When appended records are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Before every acknowledgement, grouped across concurrent requests (default; survives power loss).
    Always,
    /// Every `fsync_interval`; a power loss may lose up to that much acknowledged data.
    Interval,
    /// Never explicitly; the OS decides. Survives a process crash, not a power loss.
    Never,
}

/// `[buffer]`: the disk buffer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Directory of the buffer (created if missing).
    pub path: PathBuf,
    /// Bound on the bytes of all segment files.
    pub max_bytes: u64,
    /// `drop_oldest` or `block`.
    pub when_full: WhenFull,
    /// `always`, `interval` or `never`.
    pub fsync: FsyncPolicy,
    /// Period of the `interval` fsync policy.
    #[serde(with = "duration_str")]
    pub fsync_interval: Duration,
    /// Size at which a segment file is closed and a new one started.
    pub segment_bytes: u64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data"),
            max_bytes: 1024 * 1024 * 1024,
            when_full: WhenFull::DropOldest,
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_secs(1),
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[forward]`: batching, rate limits and retries toward the collector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Most runs in one upstream request.
    pub max_runs: usize,
    /// Most body bytes in one upstream request.
    pub max_bytes: usize,
    /// Longest a non-full batch waits for more runs.
    #[serde(with = "duration_str")]
    pub max_delay: Duration,
    /// Upstream requests per second (0 = unlimited).
    pub requests_per_second: u32,
    /// Burst of requests above the rate.
    pub requests_burst: u32,
    /// Runs per second (0 = unlimited).
    pub runs_per_second: u32,
    /// Burst of runs above the rate (at least `max_runs`).
    pub runs_burst: u32,
    /// First retry delay (ceiling of the full-jitter draw).
    #[serde(with = "duration_str")]
    pub retry_initial: Duration,
    /// Largest retry delay ceiling.
    #[serde(with = "duration_str")]
    pub retry_max: Duration,
    /// Give up on a batch after this many retries and dead-letter it (0 = never give up).
    pub max_retries: u32,
    /// Delay between retries while the collector rejects the key (401/403).
    #[serde(with = "duration_str")]
    pub auth_hold_retry: Duration,
    /// How many delivered runs (their content fingerprints) are remembered so that an identical
    /// copy sent again is not forwarded again (0 = duplicate suppression off).
    pub dedup_entries: usize,
    /// Most bytes the dead-letter files add up to; the oldest files are removed first.
    pub dead_letter_max_bytes: u64,
    /// Passthrough mode: most run bytes of held client keys (401/403) kept in memory while
    /// other keys' runs are delivered; at the bound the forwarder stops reading until a held key
    /// is retried.
    pub auth_hold_max_bytes: u64,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            max_runs: 500,
            max_bytes: 4 * 1024 * 1024,
            max_delay: Duration::from_millis(200),
            requests_per_second: 50,
            requests_burst: 10,
            runs_per_second: 5000,
            runs_burst: 5000,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            max_retries: 0,
            auth_hold_retry: Duration::from_secs(300),
            dedup_entries: 100_000,
            dead_letter_max_bytes: 256 * 1024 * 1024,
            auth_hold_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[query]`: local query API and passthrough.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Where `GET /api/*` is forwarded.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub upstream_url: String,
    /// How long traces stay visible locally.
    #[serde(with = "duration_str")]
    pub retention: Duration,
    /// Most run JSON bytes the in-memory trace index keeps (oldest traces are evicted first).
    pub max_bytes: u64,
    /// Whether to keep the local trace index at all (off: no cost on ingest, and the
    /// `/v1/traces` endpoints answer 404).
    pub index: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            upstream_url: "https://api.getdynamiq.ai".into(),
            retention: Duration::from_secs(24 * 3600),
            max_bytes: 64 * 1024 * 1024,
            index: true,
        }
    }
}

/// `[shutdown]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long SIGTERM waits for the buffer to drain upstream before exiting (rest stays on disk).
    #[serde(with = "duration_str")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable key=value lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive (`info`, `dynamiq_sidecar=debug`, ...). `RUST_LOG` wins if set.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// A configuration error that names the key and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `file:line` or `env VAR`, when known.
    pub origin: Option<String>,
    /// Dotted key, e.g. `buffer.max_bytes`; empty for whole-file errors (syntax).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where the configuration text came from, for error messages.
struct Source<'a> {
    file: Option<&'a Path>,
    text: &'a str,
    /// Keys set from the environment: (dotted key, variable).
    env_keys: Vec<(String, String)>,
}

impl Source<'_> {
    /// `file:line` of `section.key`, `env VAR` if the environment set it, or the file alone.
    fn origin_of(&self, dotted: &str) -> Option<String> {
        if let Some((_, var)) = self.env_keys.iter().find(|(k, _)| k == dotted) {
            return Some(format!("env {var}"));
        }
        let file = self.file?.display().to_string();
        match find_key_line(self.text, dotted) {
            Some(line) => Some(format!("{file}:{line}")),
            None => Some(file),
        }
    }
}

/// 1-based line of `key` inside `[section]` (or `[a.b]` for `a.b.key`), by a plain text scan.
fn find_key_line(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.rsplit_once('.')?;
    let mut in_section = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[') {
            in_section = header.trim_end_matches(']').trim() == section;
            continue;
        }
        if in_section && key_name(line) == key {
            return Some(i + 1);
        }
    }
    None
}

impl Config {
    /// Loads `path` (or the built-in defaults when `None`), applies environment overrides from
    /// `env` (normally `std::env::vars()`), and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError {
                origin: Some(p.display().to_string()),
                key: String::new(),
                message: format!("cannot read config file: {e}"),
            })?,
            None => String::new(),
        };
        Self::from_toml_str(&text, path, env)
    }

    /// Parses TOML text (with `file` used only for messages), applies `env`, validates.
    pub fn from_toml_str(
        text: &str,
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file_origin = file.map(|p| p.display().to_string());
        // Deserializing the text itself gives spans, hence the line and the key of an error.
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError {
            origin: match (&file_origin, e.span()) {
                (Some(f), Some(span)) => Some(format!("{f}:{}", line_of(text, span.start))),
                (f, _) => f.clone(),
            },
            key: e.span().map(|s| key_at(text, s.start)).unwrap_or_default(),
            message: e.message().trim().to_string(),
        })?;
        let env: Vec<(String, String)> = env.into_iter().collect();
        let token_in_env = env.iter().any(|(k, _)| k == INGEST_TOKEN_ENV);
        let mut table: toml::Table = toml::from_str(text).unwrap_or_default();
        let env_keys = apply_env_overrides(&mut table, env.clone())?;
        if !env_keys.is_empty() {
            config = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    // Overrides were checked one by one in apply_env_overrides; this is a fallback.
                    ConfigError {
                        origin: Some("environment".into()),
                        key: String::new(),
                        message: e.message().trim().to_string(),
                    }
                })?;
        }
        let mut env_keys = env_keys;
        if let Some(otlp) = config.outputs.otlp.as_mut() {
            env_keys.extend(apply_otel_env(otlp, &env)?);
        }
        let source = Source {
            file,
            text,
            env_keys,
        };
        config.validate(&source, token_in_env)?;
        Ok(config)
    }

    fn validate(&self, source: &Source<'_>, token_in_env: bool) -> Result<(), ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            origin: source.origin_of(key),
            key: key.to_string(),
            message,
        };
        if let Some(otlp) = &self.outputs.otlp {
            let key = "outputs.otlp.endpoint";
            let url = &otlp.endpoint;
            let shown = redact_url(url);
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| err(key, format!("not a valid URL ({e}): {shown:?}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(err(
                    key,
                    format!("must be an http:// or https:// URL with a host, got {shown:?}"),
                ));
            }
            for name in otlp.headers.0.keys() {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(err(
                        "outputs.otlp.headers",
                        format!("{name:?} is not a valid header name"),
                    ));
                }
            }
            if let Some((name, _)) = otlp
                .headers
                .0
                .iter()
                .find(|(_, v)| http::HeaderValue::from_str(v).is_err())
            {
                return Err(err(
                    "outputs.otlp.headers",
                    format!("the value of {name:?} cannot be sent in a header"),
                ));
            }
            if otlp.timeout.is_zero() {
                return Err(err("outputs.otlp.timeout", "must be greater than 0".into()));
            }
            if let Some(path) = &otlp.ca_file {
                crate::sinks::otlp::read_ca_file(path)
                    .map_err(|message| err("outputs.otlp.ca_file", message))?;
            }
            if otlp.service_name.trim().is_empty() {
                return Err(err("outputs.otlp.service_name", "must not be empty".into()));
            }
            if otlp.max_spans == 0 {
                return Err(err(
                    "outputs.otlp.max_spans",
                    "must be greater than 0".into(),
                ));
            }
        }
        if self.ingest.max_body_bytes == 0 {
            return Err(err(
                "ingest.max_body_bytes",
                "must be greater than 0".into(),
            ));
        }
        if self.ingest.max_inflight_bytes < 2 * self.ingest.max_body_bytes {
            return Err(err(
                "ingest.max_inflight_bytes",
                format!(
                    "must be at least twice ingest.max_body_bytes ({}), got {}",
                    self.ingest.max_body_bytes, self.ingest.max_inflight_bytes
                ),
            ));
        }
        if self.ingest.max_connections == 0 {
            return Err(err(
                "ingest.max_connections",
                "must be greater than 0".into(),
            ));
        }
        for (key, value) in [
            ("ingest.idle_timeout", self.ingest.idle_timeout),
            ("ingest.write_timeout", self.ingest.write_timeout),
            ("ingest.keepalive_interval", self.ingest.keepalive_interval),
            ("ingest.linger_timeout", self.ingest.linger_timeout),
        ] {
            if value.is_zero() {
                return Err(err(key, "must be greater than 0".into()));
            }
        }
        if self.ingest.max_concurrent_streams == 0 {
            return Err(err(
                "ingest.max_concurrent_streams",
                "must be greater than 0".into(),
            ));
        }
        if let Some(bad) = self
            .ingest
            .allowed_hosts
            .iter()
            .find(|h| !is_host_pattern(h))
        {
            return Err(err(
                "ingest.allowed_hosts",
                format!("{bad:?} is not a host name, \"*.\" + a domain, or \"*\""),
            ));
        }
        for (key, url) in [
            ("upstream.url", &self.upstream.url),
            ("query.upstream_url", &self.query.upstream_url),
        ] {
            let shown = redact_url(url);
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| err(key, format!("not a valid URL ({e}): {shown:?}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(err(
                    key,
                    format!("must be an http:// or https:// URL with a host, got {shown:?}"),
                ));
            }
        }
        if self.buffer.path.as_os_str().is_empty() {
            return Err(err("buffer.path", "must not be empty".into()));
        }
        if self.buffer.segment_bytes < 4096 {
            return Err(err("buffer.segment_bytes", "must be at least 4096".into()));
        }
        if self.buffer.max_bytes < 2 * self.buffer.segment_bytes {
            return Err(err(
                "buffer.max_bytes",
                format!(
                    "must be at least twice buffer.segment_bytes ({}), got {}",
                    self.buffer.segment_bytes, self.buffer.max_bytes
                ),
            ));
        }
        if self.forward.max_runs == 0 {
            return Err(err("forward.max_runs", "must be greater than 0".into()));
        }
        if self.forward.max_bytes < 1024 {
            return Err(err("forward.max_bytes", "must be at least 1024".into()));
        }
        if self.forward.dead_letter_max_bytes < 1024 {
            return Err(err(
                "forward.dead_letter_max_bytes",
                "must be at least 1024".into(),
            ));
        }
        if self.forward.auth_hold_max_bytes < 1024 {
            return Err(err(
                "forward.auth_hold_max_bytes",
                "must be at least 1024".into(),
            ));
        }
        if self.forward.runs_per_second > 0
            && (self.forward.runs_burst as usize) < self.forward.max_runs
        {
            return Err(err(
                "forward.runs_burst",
                format!(
                    "must be at least forward.max_runs ({})",
                    self.forward.max_runs
                ),
            ));
        }
        if self.forward.requests_per_second > 0 && self.forward.requests_burst == 0 {
            return Err(err(
                "forward.requests_burst",
                "must be greater than 0".into(),
            ));
        }
        if self.forward.retry_initial.is_zero()
            || self.forward.retry_max < self.forward.retry_initial
        {
            return Err(err(
                "forward.retry_max",
                "retry_initial must be > 0 and retry_max >= retry_initial".into(),
            ));
        }
        if crate::cli::parse_log_filter(&self.log.level).is_none() {
            return Err(err(
                "log.level",
                format!("not a valid filter: {:?}", self.log.level),
            ));
        }
        if self.upstream.auth_mode == AuthMode::Passthrough
            && (!self.ingest.auth_token_file.is_empty() || token_in_env)
        {
            return Err(err(
                "upstream.auth_mode",
                "\"passthrough\" reads the project key from the client's Authorization header, which an inbound token would also need; use \"sidecar-key\" with an inbound token".into(),
            ));
        }
        let exposed =
            !self.ingest.http_addr.ip().is_loopback() || !self.ingest.grpc_addr.ip().is_loopback();
        if exposed
            && self.ingest.auth_token_file.is_empty()
            && !self.ingest.allow_unauthenticated
            && !token_in_env
        {
            return Err(err(
                "ingest.auth_token_file",
                format!(
                    "a listener is not on loopback, so an inbound token is required: set ingest.auth_token_file or {INGEST_TOKEN_ENV}, or set ingest.allow_unauthenticated = true"
                ),
            ));
        }
        Ok(())
    }

    /// True when any listener is reachable from outside the host.
    pub fn is_exposed(&self) -> bool {
        !self.ingest.http_addr.ip().is_loopback() || !self.ingest.grpc_addr.ip().is_loopback()
    }

    /// The effective configuration as TOML, for `check-config`. Holds no secret: the key and the
    /// token are never part of `Config`, only the paths of their files.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Applies `DYNAMIQ_SIDECAR_<SECTION>_<KEY>` variables to `table`. A value is typed like the
/// key's default (a string key stays a string even if it looks like a number). Returns the keys
/// it set with their variable names.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize");
    let mut set = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != INGEST_TOKEN_ENV)
        .collect();
    vars.sort();
    for (var, value) in vars {
        let rest = var[ENV_PREFIX.len()..].to_ascii_lowercase();
        let Some((section, key)) = defaults.keys().find_map(|s| {
            rest.strip_prefix(s.as_str())
                .and_then(|r| r.strip_prefix('_'))
                .map(|k| (s.clone(), k.to_string()))
        }) else {
            return Err(ConfigError {
                origin: Some(format!("env {var}")),
                key: rest,
                message: "unknown configuration section".into(),
            });
        };
        let dotted = format!("{section}.{key}");
        let Some(default) = defaults.get(&section).and_then(|s| s.get(&key)) else {
            return Err(ConfigError {
                origin: Some(format!("env {var}")),
                key: dotted,
                message: "unknown configuration key".into(),
            });
        };
        let typed = match default {
            toml::Value::String(_) => toml::Value::String(value.clone()),
            _ => toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value.clone())),
        };
        let section_table = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table {
            toml::Value::Table(t) => {
                t.insert(key, typed);
            }
            _ => {
                return Err(ConfigError {
                    origin: Some(format!("env {var}")),
                    key: section,
                    message: "is not a table in the config file".into(),
                });
            }
        }
        // Check this override alone so an error names its variable.
        if let Err(e) = toml::Value::Table(table.clone()).try_into::<Config>() {
            return Err(ConfigError {
                origin: Some(format!("env {var}")),
                key: dotted,
                message: e.message().trim().to_string(),
            });
        }
        set.push((dotted, var));
    }
    Ok(set)
}

/// The key written on a `key = value` line (quotes removed).
fn key_name(line: &str) -> &str {
    line.split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"')
}

/// 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted key written on the line holding byte `offset`: the nearest `[section]` header
/// above it, plus the name before `=` on that line.
fn key_at(text: &str, offset: usize) -> String {
    let line_no = line_of(text, offset);
    let mut section = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[') {
            section = header.trim_end_matches(']').trim().to_string();
        }
        if i + 1 == line_no {
            if line.starts_with('[') {
                return section;
            }
            let name = key_name(line);
            return if section.is_empty() {
                name.to_string()
            } else {
                format!("{section}.{name}")
            };
        }
    }
    section
}

/// Serde adapter for durations written as humantime strings (`"200ms"`, `"24h"`).
mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); use e.g. \"200ms\", \"10s\", \"24h\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_str(
            text,
            Some(Path::new("test.toml")),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.ingest.http_addr.to_string(), "127.0.0.1:4318");
        assert_eq!(c.buffer.max_bytes, 1 << 30);
        assert_eq!(c.buffer.when_full, WhenFull::DropOldest);
        assert_eq!(c.buffer.fsync, FsyncPolicy::Always);
        assert_eq!(c.forward.max_delay, Duration::from_millis(200));
        assert_eq!(c.upstream.auth_mode, AuthMode::SidecarKey);
        assert_eq!(c.upstream.compression, Compression::None);
        assert_eq!(c.forward.dedup_entries, 100_000);
        assert_eq!(c.forward.dead_letter_max_bytes, 256 << 20);
        assert_eq!(c.forward.auth_hold_max_bytes, 64 << 20);
    }

    #[test]
    fn delivery_bounds_below_1024_bytes_are_refused_naming_the_key() {
        for key in ["dead_letter_max_bytes", "auth_hold_max_bytes"] {
            let e = load(&format!("[forward]\n{key} = 100\n"), &[]).unwrap_err();
            assert_eq!(e.key, format!("forward.{key}"));
        }
    }

    #[test]
    fn compression_and_dedup_entries_parse_and_bad_values_name_the_key() {
        let c = load(
            "[upstream]\ncompression = \"gzip\"\n[forward]\ndedup_entries = 0\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.upstream.compression, Compression::Gzip);
        assert_eq!(c.forward.dedup_entries, 0);
        let e = load("[upstream]\ncompression = \"br\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "upstream.compression");
        let c = load(
            "",
            &[
                ("DYNAMIQ_SIDECAR_UPSTREAM_COMPRESSION", "gzip"),
                ("DYNAMIQ_SIDECAR_FORWARD_DEDUP_ENTRIES", "5"),
            ],
        )
        .unwrap();
        assert_eq!(c.upstream.compression, Compression::Gzip);
        assert_eq!(c.forward.dedup_entries, 5);
    }

    #[test]
    fn the_shipped_config_file_loads_and_equals_the_defaults() {
        let text = include_str!("../config/dynamiq-sidecar.toml");
        let c = load(text, &[]).unwrap();
        assert_eq!(c.to_toml(), Config::default().to_toml());
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key_and_line() {
        let e = load("[buffer]\npath = \"x\"\nmax_byte = 5\n", &[]).unwrap_err();
        assert_eq!(e.key, "buffer.max_byte");
        assert_eq!(e.origin.as_deref(), Some("test.toml:3"));
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key_and_line() {
        let e = load("[forward]\n\nmax_runs = \"many\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "forward.max_runs");
        assert_eq!(e.origin.as_deref(), Some("test.toml:3"));
    }

    #[test]
    fn bad_enum_value_names_the_key() {
        let e = load("[buffer]\nwhen_full = \"explode\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "buffer.when_full");
        assert!(e.to_string().contains("test.toml:2"), "{e}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let e = load("[forward]\nmax_delay = \"soon\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "forward.max_delay");
        assert!(e.message.contains("invalid duration"), "{e}");
    }

    #[test]
    fn syntax_error_names_the_file() {
        let e = load("[ingest]\n[buffer\n", &[]).unwrap_err();
        assert_eq!(e.origin.as_deref(), Some("test.toml:2"));
    }

    #[test]
    fn env_overrides_win_and_keep_string_types() {
        let c = load(
            "[buffer]\nmax_bytes = 1000000000\n",
            &[
                ("DYNAMIQ_SIDECAR_BUFFER_MAX_BYTES", "200000000"),
                ("DYNAMIQ_SIDECAR_BUFFER_PATH", "12345"),
                ("DYNAMIQ_SIDECAR_FORWARD_MAX_DELAY", "1s"),
                ("DYNAMIQ_SIDECAR_INGEST_HTTP_ADDR", "127.0.0.1:9999"),
            ],
        )
        .unwrap();
        assert_eq!(c.buffer.max_bytes, 200_000_000);
        assert_eq!(c.buffer.path, PathBuf::from("12345"));
        assert_eq!(c.forward.max_delay, Duration::from_secs(1));
        assert_eq!(c.ingest.http_addr.port(), 9999);
    }

    #[test]
    fn env_override_errors_name_the_variable() {
        let e = load("", &[("DYNAMIQ_SIDECAR_BUFFER_MAX_BYTES", "lots")]).unwrap_err();
        assert_eq!(e.key, "buffer.max_bytes");
        assert_eq!(
            e.origin.as_deref(),
            Some("env DYNAMIQ_SIDECAR_BUFFER_MAX_BYTES")
        );
        let e = load("", &[("DYNAMIQ_SIDECAR_BUFFER_COLOUR", "red")]).unwrap_err();
        assert_eq!(e.key, "buffer.colour");
    }

    #[test]
    fn non_loopback_listener_requires_a_token() {
        let e = load("[ingest]\nhttp_addr = \"0.0.0.0:4318\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "ingest.auth_token_file");
        load(
            "[ingest]\nhttp_addr = \"0.0.0.0:4318\"\nallow_unauthenticated = true\n",
            &[],
        )
        .unwrap();
        load(
            "[ingest]\nhttp_addr = \"0.0.0.0:4318\"\nauth_token_file = \"/run/token\"\n",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn cross_field_rules_are_checked() {
        let e = load("[buffer]\nmax_bytes = 10000\nsegment_bytes = 8192\n", &[]).unwrap_err();
        assert_eq!(e.key, "buffer.max_bytes");
        let e = load("[forward]\nruns_burst = 10\n", &[]).unwrap_err();
        assert_eq!(e.key, "forward.runs_burst");
        let e = load("[upstream]\nurl = \"ftp://x\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "upstream.url");
    }

    #[test]
    fn rendered_config_never_contains_a_key_value() {
        // The key lives only in the environment or its file; the Config has no field for it.
        let c = load("", &[("DYNAMIQ_ACCESS_KEY", "sk-secret-123")]).unwrap();
        assert!(!c.to_toml().contains("sk-secret-123"));
        assert!(!format!("{c:?}").contains("sk-secret-123"));
    }

    #[test]
    fn credentials_in_urls_are_redacted_in_the_rendered_config_and_in_errors() {
        let c = load(
            "[upstream]\nurl = \"https://user:s3cret@collector.example\"\n[query]\nupstream_url = \"https://user:s3cret@api.example/\"\n[outputs.otlp]\nendpoint = \"http://u:s3cret@tempo:4318\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.upstream.url, "https://user:s3cret@collector.example");
        let text = c.to_toml();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("https://***@collector.example"), "{text}");
        assert!(text.contains("http://***@tempo:4318"), "{text}");
        for bad in [
            "[upstream]\nurl = \"ftp://user:s3cret@x\"\n",
            "[query]\nupstream_url = \"https://user:s3cret@\"\n",
            "[outputs.otlp]\nendpoint = \"https://u:s3cret@ho st\"\n",
        ] {
            let e = load(bad, &[]).unwrap_err().to_string();
            assert!(!e.contains("s3cret") && e.contains("***@"), "{e}");
        }
    }

    #[test]
    fn no_outputs_section_means_no_otlp_output_even_with_otel_env() {
        let c = load(
            "",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
        )
        .unwrap();
        assert!(c.outputs.otlp.is_none());
        assert!(!c.to_toml().contains("outputs"));
    }

    #[test]
    fn otlp_output_section_parses_with_defaults() {
        let c = load("[outputs.otlp]\n", &[]).unwrap();
        let o = c.outputs.otlp.unwrap();
        assert_eq!(o.endpoint, "http://127.0.0.1:4318");
        assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(o.service_name, "dynamiq");
        assert_eq!(o.max_spans, 512);
        assert_eq!(o.max_delay, Duration::from_millis(200));
        assert!(o.headers.0.is_empty());

        let c = load(
            "[outputs.otlp]\nendpoint = \"http://tempo:4317\"\nprotocol = \"grpc\"\ntimeout = \"3s\"\nservice_name = \"svc\"\nmax_spans = 10\nmax_delay = \"1s\"\n[outputs.otlp.headers]\nx-api-key = \"secret-value-1\"\n",
            &[],
        )
        .unwrap();
        let o = c.outputs.otlp.as_ref().unwrap();
        assert_eq!(o.protocol, OtlpProtocol::Grpc);
        assert_eq!(o.timeout, Duration::from_secs(3));
        assert_eq!(o.max_spans, 10);
        assert_eq!(o.headers.0["x-api-key"], "secret-value-1");
        // Header values never show in check-config or Debug.
        assert!(!c.to_toml().contains("secret-value-1"), "{}", c.to_toml());
        assert!(c.to_toml().contains("x-api-key"));
        assert!(!format!("{c:?}").contains("secret-value-1"));
    }

    #[test]
    fn otlp_output_errors_name_the_key_and_line() {
        let e = load("[outputs.otlp]\nprotocol = \"http/json\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "outputs.otlp.protocol");
        assert_eq!(e.origin.as_deref(), Some("test.toml:2"));
        let e = load("[outputs.otlp]\nendpont = \"x\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "outputs.otlp.endpont");
        let e = load("[outputs.otlp]\n\nendpoint = \"ftp://x\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "outputs.otlp.endpoint");
        assert_eq!(e.origin.as_deref(), Some("test.toml:3"));
        let e = load("[outputs.otlp]\nmax_spans = 0\n", &[]).unwrap_err();
        assert_eq!(e.key, "outputs.otlp.max_spans");
        let e = load("[outputs.otlp.headers]\n\"bad name\" = \"v\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "outputs.otlp.headers");
        let e = load("[outputs]\nkafka = 1\n", &[]).unwrap_err();
        assert_eq!(e.key, "outputs.kafka");
    }

    #[test]
    fn otel_env_overrides_the_otlp_output() {
        let text = "[outputs.otlp]\nendpoint = \"http://file:4318\"\n[outputs.otlp.headers]\na = \"file\"\nb = \"file\"\n";
        let c = load(
            text,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318/"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=x%3Dy%2Cz, c = 3"),
            ],
        )
        .unwrap();
        let o = c.outputs.otlp.unwrap();
        assert_eq!(o.endpoint, "http://env:4318/v1/traces");
        assert_eq!(o.headers.0["a"], "x=y,z");
        assert_eq!(o.headers.0["b"], "file");
        assert_eq!(o.headers.0["c"], "3");

        // The traces endpoint wins and is used as is; gRPC gets no path.
        let c = load(
            text,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom"),
            ],
        )
        .unwrap();
        assert_eq!(c.outputs.otlp.unwrap().endpoint, "http://t:1/custom");
        let c = load(
            text,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
        )
        .unwrap();
        let o = c.outputs.otlp.unwrap();
        assert_eq!(o.endpoint, "http://env:4317");
        assert_eq!(o.protocol, OtlpProtocol::Grpc);
    }

    #[test]
    fn otlp_ca_file_must_hold_certificates_and_comes_from_otel_env_too() {
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");
        let c = load(&format!("[outputs.otlp]\nca_file = {ca:?}\n"), &[]).unwrap();
        assert_eq!(c.outputs.otlp.unwrap().ca_file, Some(PathBuf::from(ca)));

        let e = load("[outputs.otlp]\n\nca_file = \"/nonexistent/ca.pem\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "outputs.otlp.ca_file");
        assert!(e.message.contains("cannot read"), "{}", e.message);
        let not_pem = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let e = load(&format!("[outputs.otlp]\nca_file = {not_pem:?}\n"), &[]).unwrap_err();
        assert_eq!(e.key, "outputs.otlp.ca_file");
        assert!(e.message.contains("no PEM certificate"), "{}", e.message);

        let env = [
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/general.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", ca),
        ];
        let c = load("[outputs.otlp]\n", &env).unwrap();
        assert_eq!(c.outputs.otlp.unwrap().ca_file, Some(PathBuf::from(ca)));
        let e = load("[outputs.otlp]\n", &env[..1]).unwrap_err();
        assert_eq!(e.key, "outputs.otlp.ca_file");
    }

    #[test]
    fn otel_env_errors_name_the_variable_and_hide_values() {
        let e = load(
            "[outputs.otlp]\n",
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
        )
        .unwrap_err();
        assert_eq!(e.key, "outputs.otlp.protocol");
        assert_eq!(e.origin.as_deref(), Some("env OTEL_EXPORTER_OTLP_PROTOCOL"));
        let e = load(
            "[outputs.otlp]\n",
            &[("OTEL_EXPORTER_OTLP_HEADERS", "secret-token-value")],
        )
        .unwrap_err();
        assert_eq!(e.key, "outputs.otlp.headers");
        assert!(!e.to_string().contains("secret-token-value"), "{e}");
        let e = load(
            "[outputs.otlp]\n",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")],
        )
        .unwrap_err();
        assert_eq!(e.key, "outputs.otlp.endpoint");
        assert_eq!(e.origin.as_deref(), Some("env OTEL_EXPORTER_OTLP_ENDPOINT"));
    }
}
