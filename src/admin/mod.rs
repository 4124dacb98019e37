//! Operations surface: readiness latches, the Prometheus registry, and the `/healthz`,
//! `/readyz` and `/metrics` handlers (docs/http-contract.md §10).
//!
//! Guarantees: `/healthz` answers while the process runs; `/readyz` is 200 only when every
//! latch is ready (buffer writable, upstream accepting the key) and names the failing ones
//! otherwise; `/metrics` renders every registered metric in the OpenMetrics text format. None
//! of them exposes a key or a payload.

pub mod readiness;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

use readiness::Readiness;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Readiness latches.
    pub readiness: Readiness,
    /// Every metric of the process (frozen after start-up).
    pub registry: Arc<Registry>,
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let failing: Vec<&str> = state
        .readiness
        .failing()
        .into_iter()
        .map(|l| l.name())
        .collect();
    let (status, body) = if failing.is_empty() {
        (StatusCode::OK, serde_json::json!({"status": "ready"}))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not_ready", "failing": failing}),
        )
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response(),
    }
}
