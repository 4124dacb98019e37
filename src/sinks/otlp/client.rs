//! The connection to the OTLP backend: the `http/protobuf` URL and client with its headers, or
//! the gRPC channel with its metadata. Both send the request as already-encoded protobuf bytes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::CertificateDer;

use super::classify::{Verdict, classify_grpc, classify_http};
use super::config::{OtlpOutputConfig, OtlpProtocol, OtlpTarget};
use super::grpc_codec::{EXPORT_PATH, PreEncoded};
use super::{CONNECT_TIMEOUT, OtlpOutputError, TRACES_PATH};
use crate::secret::redact_url;
use crate::sinks::common::consumer::error_chain;
use crate::sinks::common::http::{build_http_client, read_response, transport};

/// The full OTLP/HTTP URL: `endpoint` as is when it has a path, else `endpoint + /v1/traces`.
pub fn http_traces_url(endpoint: &str) -> Result<reqwest::Url, OtlpOutputError> {
    let bad = |e| OtlpOutputError::Config(format!("endpoint {:?}: {e}", redact_url(endpoint)));
    let url = reqwest::Url::parse(endpoint).map_err(bad)?;
    if url.path().is_empty() || url.path() == "/" {
        let joined = format!("{}{TRACES_PATH}", endpoint.trim_end_matches('/'));
        return reqwest::Url::parse(&joined).map_err(bad);
    }
    Ok(url)
}

/// The TLS connector of a gRPC channel to an `https://` endpoint: rustls with the platform's
/// roots (as the HTTP client has) plus `extra_roots`, HTTP/2 negotiated by ALPN.
fn tls_connector(
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, OtlpOutputError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |e: rustls::Error| OtlpOutputError::Client(format!("TLS: {e}"));
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
            .map_err(tls_error)?;
    // ALPN (h2) is set by the connector builder below.
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // tonic's TCP settings apply to its own connector only; this one sets them itself.
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_keepalive(Some(Duration::from_secs(30)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .wrap_connector(tcp))
}

pub(super) enum Client {
    Http {
        http: reqwest::Client,
        url: reqwest::Url,
        headers: HeaderMap,
    },
    Grpc {
        client: tonic::client::Grpc<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
        endpoint: String,
    },
}

impl Client {
    pub(super) fn new(config: &OtlpOutputConfig) -> Result<Self, OtlpOutputError> {
        let OtlpTarget {
            endpoint: url,
            mut headers,
            extra_roots,
        } = config
            .resolve()
            .map_err(|(key, message)| OtlpOutputError::Config(format!("{key}: {message}")))?;
        match config.protocol {
            OtlpProtocol::HttpProtobuf => {
                let url = http_traces_url(&config.endpoint)?;
                let extra_roots = extra_roots
                    .iter()
                    .map(|der| reqwest::Certificate::from_der(der))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| OtlpOutputError::Config(format!("ca_file: {e}")))?;
                let http = build_http_client(&url, CONNECT_TIMEOUT, config.timeout, extra_roots)
                    .map_err(|e| OtlpOutputError::Client(e.to_string()))?;
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                );
                Ok(Client::Http { http, url, headers })
            }
            OtlpProtocol::Grpc => {
                let origin = url.origin().ascii_serialization();
                let endpoint = tonic::transport::Endpoint::from_shared(origin.clone())
                    .map_err(|e| OtlpOutputError::Config(format!("endpoint {origin:?}: {e}")))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(config.timeout)
                    .tcp_keepalive(Some(Duration::from_secs(30)));
                let channel = if url.scheme() == "https" {
                    endpoint.connect_with_connector_lazy(tls_connector(extra_roots)?)
                } else {
                    endpoint.connect_lazy()
                };
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (name, value) in &headers {
                    let key =
                        tonic::metadata::AsciiMetadataKey::from_bytes(name.as_str().as_bytes())
                            .map_err(|_| {
                                OtlpOutputError::Config(format!("metadata name {name:?}"))
                            })?;
                    let mut value = tonic::metadata::AsciiMetadataValue::try_from(value.as_bytes())
                        .map_err(|_| {
                            OtlpOutputError::Config(format!(
                                "the value of header {name:?} is not valid gRPC metadata"
                            ))
                        })?;
                    value.set_sensitive(true);
                    metadata.insert(key, value);
                }
                Ok(Client::Grpc {
                    client: tonic::client::Grpc::new(channel),
                    metadata,
                    endpoint: origin,
                })
            }
        }
    }

    pub(super) fn endpoint(&self) -> String {
        match self {
            Client::Http { url, .. } => url.to_string(),
            Client::Grpc { endpoint, .. } => endpoint.clone(),
        }
    }

    /// One export attempt of an encoded `ExportTraceServiceRequest`.
    pub(super) async fn export(&mut self, body: &Bytes) -> Verdict {
        match self {
            Client::Http { http, url, headers } => {
                let sent = http
                    .post(url.clone())
                    .headers(headers.clone())
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(resp) => {
                        let resp = read_response(resp).await;
                        classify_http(resp.status, &resp.headers, &resp.body, SystemTime::now())
                    }
                    Err(e) => Verdict::Retry {
                        retry_after: None,
                        reason: error_chain(&transport(e)),
                    },
                }
            }
            Client::Grpc {
                client, metadata, ..
            } => {
                let mut req = tonic::Request::new(body.clone());
                *req.metadata_mut() = metadata.clone();
                req.extensions_mut().insert(tonic::GrpcMethod::new(
                    "opentelemetry.proto.collector.trace.v1.TraceService",
                    "Export",
                ));
                let answer = match client.ready().await {
                    Ok(()) => {
                        let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
                        client.unary(req, path, PreEncoded).await
                    }
                    Err(e) => Err(tonic::Status::unknown(format!(
                        "Service was not ready: {e}"
                    ))),
                };
                match answer {
                    Ok(resp) => Verdict::Accepted {
                        rejected_spans: resp
                            .into_inner()
                            .partial_success
                            .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0)),
                    },
                    Err(status) => classify_grpc(&status),
                }
            }
        }
    }
}
