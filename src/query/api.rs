//! The query endpoints on the HTTP listener: `GET /v1/traces` (list), `GET /v1/traces/export`
//! (download), `GET /v1/traces/{trace_id}` (one trace with its runs), the `GET /api/*`
//! passthrough to `query.upstream_url`, and `GET /`, the trace viewer page (`viewer.html`,
//! embedded) that reads the first three.
//!
//! Guarantees: every data endpoint requires the inbound token when ingest does; bad parameters
//! get a 400 JSON error naming the parameter (a status repeated in `status=` counts once); the
//! export is streamed with bounded memory (see [`super::export`]); the passthrough maps
//! `/api/<rest>` to `<query.upstream_url>/<rest>` (the Dynamiq API has no `/api` prefix; the
//! upstream URL's own path is kept as a prefix), only ever contacts the configured scheme, host
//! and port, under that path, with the API token (or the sidecar's key; never logged), follows
//! no redirect, and streams at most [`MAX_PASSTHROUGH_BYTES`] back.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;

use super::export::ExportBody;
use super::{Filter, QueryIndex, Sort, TraceDetail, TraceSummary};
use crate::convert::time::parse_ns;
use crate::receivers::auth::InboundAuth;
use crate::receivers::error::ApiError;
use crate::secret::KeyProvider;

/// Largest upstream answer the passthrough relays; a longer one is cut off (the connection is
/// aborted, so the client sees a truncated body, never a silently short one).
pub const MAX_PASSTHROUGH_BYTES: usize = 16 * 1024 * 1024;
/// Largest `page_size`.
pub const MAX_PAGE_SIZE: usize = 500;
/// Default `page_size`.
pub const DEFAULT_PAGE_SIZE: usize = 50;
const STATUSES: [&str; 4] = ["succeeded", "failed", "canceled", "skipped"];

/// What the query handlers share.
#[derive(Clone)]
pub struct QueryState {
    /// The index (`None` when `query.index = false`).
    pub index: Option<Arc<QueryIndex>>,
    /// The same inbound token check as ingest.
    pub auth: InboundAuth,
    /// The `/api/*` passthrough.
    pub passthrough: Arc<Passthrough>,
}

/// The `/api/*` passthrough: one base URL, one HTTP client, one credential (the API token when
/// configured, else the sidecar's key).
pub struct Passthrough {
    base: reqwest::Url,
    client: reqwest::Client,
    key: KeyProvider,
}

impl Passthrough {
    /// Builds it for `base_url` (`query.upstream_url`, validated by the config), calling with
    /// `key`.
    pub fn new(
        base_url: &str,
        key: KeyProvider,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, String> {
        let base = reqwest::Url::parse(base_url).map_err(|e| e.to_string())?;
        let client = crate::sinks::common::http::build_http_client(
            &base,
            connect_timeout,
            request_timeout,
            Vec::new(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Self { base, client, key })
    }

    /// The upstream URL for a request path (`/api/<rest>`, as received, percent-encoded) and
    /// query, or why it is refused: `<base>/<rest>`. The result always has the base's scheme,
    /// host and port and a path under the base's path.
    pub fn upstream_url(&self, path: &str, query: Option<&str>) -> Result<reqwest::Url, String> {
        upstream_url(&self.base, path, query)
    }
}

/// See [`Passthrough::upstream_url`].
pub fn upstream_url(
    base: &reqwest::Url,
    path: &str,
    query: Option<&str>,
) -> Result<reqwest::Url, String> {
    let refuse = |why: &str| Err(format!("path refused: {why}"));
    if !path.starts_with("/api/") {
        return refuse("must start with /api/");
    }
    let lower = path.to_ascii_lowercase();
    if path.contains("//") || path.contains('\\') || path.contains('@') {
        return refuse("empty segments, backslashes and '@' are not allowed");
    }
    for encoded in ["%2f", "%5c", "%2e", "%00", "%40", "%3a"] {
        if lower.contains(encoded) {
            return refuse("encoded '/', '\\', '.', '@', ':' or NUL are not allowed");
        }
    }
    if path
        .split('/')
        .any(|seg| seg == "." || seg == ".." || seg.contains(':'))
    {
        return refuse("'.' and '..' segments and ':' are not allowed");
    }
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return refuse("control characters are not allowed");
    }
    let base_path = base.path().trim_end_matches('/');
    let rest = &path["/api".len()..];
    let mut url = base.clone();
    url.set_path(&format!("{base_path}{rest}"));
    url.set_query(query);
    url.set_fragment(None);
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none();
    if !same_origin || !url.path().starts_with(&format!("{base_path}/")) {
        return refuse("it does not stay under the configured upstream");
    }
    Ok(url)
}

/// The query routes (see [`crate::app::router`]).
pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/v1/traces", get(list))
        .route("/v1/traces/export", get(export))
        .route("/v1/traces/{trace_id}", get(detail))
        .route("/api/{*path}", any(passthrough))
        .with_state(state)
        .route("/", get(viewer))
        .route("/favicon.ico", get(favicon))
}

/// The trace viewer: one self-contained page (inline CSS and JS, no external resources).
pub const VIEWER_HTML: &str = include_str!("viewer.html");

/// The Content-Security-Policy the viewer is served with: nothing but inline code and
/// same-origin requests.
pub const VIEWER_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the viewer. It holds no data (its requests to the query API carry the token), so it
/// is served without the token check.
async fn viewer() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, VIEWER_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        VIEWER_HTML,
    )
        .into_response()
}

/// `GET /favicon.ico`: 204, so browsers stop asking (and logging a 404).
async fn favicon() -> StatusCode {
    StatusCode::NO_CONTENT
}

fn invalid(param: &str, problem: impl Into<String>) -> ApiError {
    let problem = problem.into();
    let mut e = ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
        format!("invalid query parameter {param}: {problem}"),
    );
    e.details.insert(param.to_string(), problem);
    e
}

/// A parsed listing request.
#[derive(Debug, Clone)]
pub struct ListParams {
    /// Filters.
    pub filter: Filter,
    /// Order.
    pub sort: Sort,
    /// Page, from 1.
    pub page: usize,
    /// Page size; `None` when not given.
    pub page_size: Option<usize>,
}

/// Parses `status`, `started_at:gte`, `started_at:lte`, `page`, `page_size`, `sort`; other
/// parameters are ignored.
pub fn parse_params(pairs: &[(String, String)]) -> Result<ListParams, ApiError> {
    let mut p = ListParams {
        filter: Filter::default(),
        sort: Sort::default(),
        page: 1,
        page_size: None,
    };
    for (name, value) in pairs {
        let value = value.trim();
        match name.as_str() {
            "status" => {
                for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !STATUSES.contains(&s) {
                        return Err(invalid(
                            "status",
                            format!("{s:?} is not one of succeeded, failed, canceled, skipped"),
                        ));
                    }
                    // Repeated values (`status=failed,failed`) count once.
                    if !p.filter.statuses.iter().any(|have| have == s) {
                        p.filter.statuses.push(s.to_string());
                    }
                }
            }
            "started_at:gte" | "started_at:lte" => {
                let ns = parse_ns(value)
                    .ok_or_else(|| invalid(name, format!("{value:?} is not an RFC 3339 time")))?;
                if name.ends_with("gte") {
                    p.filter.started_gte = Some(ns);
                } else {
                    p.filter.started_lte = Some(ns);
                }
            }
            "page" => {
                p.page = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| invalid("page", "must be an integer >= 1"))?;
            }
            "page_size" => {
                p.page_size = Some(
                    value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                        .ok_or_else(|| {
                            invalid(
                                "page_size",
                                format!("must be an integer from 1 to {MAX_PAGE_SIZE}"),
                            )
                        })?,
                );
            }
            "sort" => {
                p.sort = match value {
                    "-started_at" => Sort::StartedAtDesc,
                    "started_at" => Sort::StartedAtAsc,
                    _ => return Err(invalid("sort", "must be -started_at or started_at")),
                };
            }
            _ => {}
        }
    }
    Ok(p)
}

fn params(uri: &Uri) -> Result<ListParams, ApiError> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
    parse_params(&pairs)
}

/// The index, or a 404 saying it is switched off.
fn index(state: &QueryState) -> Result<&Arc<QueryIndex>, ApiError> {
    state.index.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "index_disabled",
            "the local trace index is off (query.index = false in the configuration)",
        )
    })
}

fn check_auth(state: &QueryState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.auth.check(headers) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "missing or wrong bearer token: send Authorization: Bearer <ingest token>",
        ))
    }
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Serialize)]
struct Pagination {
    page: usize,
    page_size: usize,
    page_count: usize,
    total_count: usize,
}

#[derive(Serialize)]
struct ListBody<'a> {
    data: &'a [TraceSummary],
    pagination: Pagination,
}

/// A trace's detail as the API writes it (also the export's format, see [`super::export`]).
#[derive(Serialize)]
pub(super) struct DetailOut<'a> {
    #[serde(flatten)]
    summary: &'a TraceSummary,
    runs: Vec<&'a RawValue>,
}

impl<'a> DetailOut<'a> {
    pub(super) fn of(d: &'a TraceDetail) -> Self {
        Self {
            summary: &d.summary,
            // Runs were validated as JSON at ingest.
            runs: d
                .runs
                .iter()
                .filter_map(|r| serde_json::from_slice::<&RawValue>(r).ok())
                .collect(),
        }
    }
}

async fn list(State(state): State<QueryState>, headers: HeaderMap, uri: Uri) -> Response {
    match list_inner(&state, &headers, &uri) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn list_inner(state: &QueryState, headers: &HeaderMap, uri: &Uri) -> Result<Response, ApiError> {
    check_auth(state, headers)?;
    let p = params(uri)?;
    let page_size = p.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    let (data, total) = index(state)?.list(&p.filter, p.sort, p.page, page_size);
    let body = serde_json::to_vec(&ListBody {
        data: &data,
        pagination: Pagination {
            page: p.page,
            page_size,
            page_count: total.div_ceil(page_size),
            total_count: total,
        },
    })
    .map_err(|_| internal())?;
    Ok(json_response(body))
}

fn internal() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the response could not be encoded",
    )
}

async fn detail(
    State(state): State<QueryState>,
    headers: HeaderMap,
    Path(trace_id): Path<String>,
) -> Response {
    let result = (|| {
        check_auth(&state, &headers)?;
        let d = index(&state)?.get(&trace_id).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such trace in the local index (unknown, or evicted by query.retention / query.max_bytes)",
            )
        })?;
        #[derive(Serialize)]
        struct Wrap<'a> {
            data: DetailOut<'a>,
        }
        let body = serde_json::to_vec(&Wrap {
            data: DetailOut::of(&d),
        })
        .map_err(|_| internal())?;
        Ok::<_, ApiError>(json_response(body))
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn export(State(state): State<QueryState>, headers: HeaderMap, uri: Uri) -> Response {
    let result = (|| {
        check_auth(&state, &headers)?;
        let p = params(&uri)?;
        // Without page_size, everything that matches.
        let (page, page_size) = match p.page_size {
            Some(size) => (p.page, size),
            None => (1, usize::MAX),
        };
        let index = index(&state)?;
        let traces = index.select(&p.filter, p.sort, page, page_size);
        // Streamed: the index lock is taken per page of runs, never for the whole answer.
        let chunks = ExportBody::new(Arc::clone(index), traces);
        let body = Body::from_stream(futures_util::stream::iter(
            chunks.map(Ok::<_, std::convert::Infallible>),
        ));
        Ok::<_, ApiError>(
            (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"traces.json\"",
                    ),
                ],
                body,
            )
                .into_response(),
        )
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn passthrough(
    State(state): State<QueryState>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    match passthrough_inner(&state, method, &headers, &uri).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn passthrough_inner(
    state: &QueryState,
    method: Method,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, ApiError> {
    check_auth(state, headers)?;
    if method != Method::GET {
        let mut r = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the /api/ passthrough is read-only: GET only",
        )
        .into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return Ok(r);
    }
    let pt = &state.passthrough;
    let url = pt
        .upstream_url(uri.path(), uri.query())
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_path", m))?;
    let Some(key) = pt.key.current() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_key",
            "the sidecar has no API token (query.api_token_file, DYNAMIQ_API_TOKEN) nor access key to call the Dynamiq API with",
        ));
    };
    let mut auth = HeaderValue::try_from(format!("Bearer {}", key.expose())).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_key",
            "the sidecar's API token or access key cannot be sent as a header",
        )
    })?;
    auth.set_sensitive(true);
    let mut req = pt.client.get(url).header(header::AUTHORIZATION, auth);
    if let Some(accept) = headers.get(header::ACCEPT) {
        req = req.header(header::ACCEPT, accept.clone());
    }
    let resp = req.send().await.map_err(|e| {
        let e = crate::secret::redact_reqwest_error(e);
        tracing::debug!(error = %e, "query passthrough: upstream unreachable");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            "the Dynamiq API (query.upstream_url) could not be reached",
        )
    })?;
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_PASSTHROUGH_BYTES as u64)
    {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_too_large",
            format!("the upstream answer exceeds {MAX_PASSTHROUGH_BYTES} bytes"),
        ));
    }
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let mut seen = 0usize;
    let stream = resp.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen = seen.saturating_add(chunk.len());
        if seen > MAX_PASSTHROUGH_BYTES {
            return Err(std::io::Error::other("upstream answer too large"));
        }
        Ok(chunk)
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(response)
}
