//! `[outputs.otlp]`: the OTLP sink's section of the configuration, with its defaults, the
//! standard `OTEL_EXPORTER_OTLP_*` variables, and [`OtlpOutputConfig::resolve`], the one place
//! its endpoint, headers and certificates are parsed (by the checks at load, and by the client
//! at start).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::config::values::{duration_str, http_url, serialize_redacted_url};
use crate::config::{ConfigError, Source};

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

/// `[outputs.otlp]`: the OTLP output (docs/http-contract.md §11).
#[derive(Clone, Serialize, Deserialize)]
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

impl std::fmt::Debug for OtlpOutputConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::config::values::debug_serialized("OtlpOutputConfig", self, f)
    }
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
pub fn apply_otel_env(
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

/// The section's values, parsed: what the client is built from.
#[derive(Clone)]
pub struct OtlpTarget {
    /// `endpoint`, parsed.
    pub endpoint: reqwest::Url,
    /// `headers`, each value marked sensitive (never printed by the HTTP stack).
    pub headers: HeaderMap,
    /// The certificates of `ca_file` (none when unset).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for OtlpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpTarget")
            .field(
                "endpoint",
                &crate::secret::redact_url(self.endpoint.as_str()),
            )
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

impl OtlpOutputConfig {
    /// Parses the endpoint, the headers and the CA file; on failure the key at fault and what
    /// is wrong (never a header's value).
    pub fn resolve(&self) -> Result<OtlpTarget, (&'static str, String)> {
        let endpoint = http_url(&self.endpoint).map_err(|m| ("outputs.otlp.endpoint", m))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers.0 {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                (
                    "outputs.otlp.headers",
                    format!("{name:?} is not a valid header name"),
                )
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                (
                    "outputs.otlp.headers",
                    format!(
                        "the value of {:?} cannot be sent in a header",
                        name.as_str()
                    ),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let extra_roots = match &self.ca_file {
            Some(path) => read_ca_file(path).map_err(|m| ("outputs.otlp.ca_file", m))?,
            None => Vec::new(),
        };
        Ok(OtlpTarget {
            endpoint,
            headers,
            extra_roots,
        })
    }

    /// Checks the section (`at` locates the keys).
    pub fn validate(&self, at: &Source<'_>) -> Result<(), ConfigError> {
        self.resolve()
            .map_err(|(key, message)| at.error(key, message))?;
        if self.timeout.is_zero() {
            return Err(at.error("outputs.otlp.timeout", "must be greater than 0"));
        }
        if self.service_name.trim().is_empty() {
            return Err(at.error("outputs.otlp.service_name", "must not be empty"));
        }
        if self.max_spans == 0 {
            return Err(at.error("outputs.otlp.max_spans", "must be greater than 0"));
        }
        Ok(())
    }
}

/// Reads `outputs.otlp.ca_file`: the PEM certificates it holds (at least one).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(certificates)
}
