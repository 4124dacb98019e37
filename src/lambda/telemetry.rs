//! The extension's Telemetry API listener: Lambda POSTs batches of platform events to it; the
//! one read is `platform.runtimeDone` (the function's code finished an invocation).
//!
//! Guarantees: bodies are bounded ([`MAX_BODY`]); a batch it cannot read is answered 400 and
//! changes nothing; the request ids seen are bounded ([`MAX_REMEMBERED`], oldest forgotten).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Largest telemetry batch read (Lambda's buffering is set to 256 KiB).
pub const MAX_BODY: usize = 1024 * 1024;
/// Request ids of finished invocations remembered.
pub const MAX_REMEMBERED: usize = 64;

/// Which invocations the function's code has finished.
#[derive(Debug, Default)]
pub struct RuntimeDone {
    done: Mutex<VecDeque<String>>,
    changed: Notify,
}

impl RuntimeDone {
    /// Records that `request_id` finished.
    pub fn mark(&self, request_id: String) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        if done.len() >= MAX_REMEMBERED {
            done.pop_front();
        }
        done.push_back(request_id);
        drop(done);
        self.changed.notify_waiters();
    }

    /// Whether `request_id` finished.
    pub fn is_done(&self, request_id: &str) -> bool {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.iter().any(|id| id == request_id)
    }

    /// Waits until `request_id` finished.
    pub async fn wait(&self, request_id: &str) {
        loop {
            let changed = self.changed.notified();
            if self.is_done(request_id) {
                return;
            }
            changed.await;
        }
    }
}

#[derive(Deserialize)]
struct TelemetryEvent {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    record: serde_json::Value,
}

async fn receive(State(done): State<Arc<RuntimeDone>>, body: Bytes) -> StatusCode {
    let Ok(events) = serde_json::from_slice::<Vec<TelemetryEvent>>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    for event in events {
        if event.kind == "platform.runtimeDone"
            && let Some(id) = event.record.get("requestId").and_then(|v| v.as_str())
        {
            done.mark(id.to_string());
        }
    }
    StatusCode::OK
}

/// Serves the listener on `listener` until `stop`.
pub fn serve(listener: TcpListener, done: Arc<RuntimeDone>, stop: CancellationToken) {
    let app = Router::new()
        .route("/", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(done);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
}

/// The address to listen on and the URI to give Lambda for `addr` (`host:port`, port 0 for any):
/// `sandbox.localdomain` (the name Lambda's docs give the extension's own host) is listened on
/// at every address.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, String)> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| std::io::Error::other(format!("{addr:?} is not host:port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| std::io::Error::other(format!("{addr:?}: bad port")))?;
    let bind_host = if host == "sandbox.localdomain" {
        "0.0.0.0"
    } else {
        host
    };
    let listener = TcpListener::bind((bind_host, port)).await?;
    let local: SocketAddr = listener.local_addr()?;
    Ok((listener, format!("http://{host}:{}", local.port())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runtime_done_events_are_remembered_and_other_events_ignored() {
        let done = Arc::new(RuntimeDone::default());
        let body = br#"[{"time":"t","type":"platform.start","record":{"requestId":"a"}},
                        {"time":"t","type":"platform.runtimeDone","record":{"requestId":"b","status":"success"}}]"#;
        assert_eq!(
            receive(State(done.clone()), Bytes::from_static(body)).await,
            StatusCode::OK
        );
        assert!(done.is_done("b") && !done.is_done("a"));
        assert_eq!(
            receive(State(done.clone()), Bytes::from_static(b"{")).await,
            StatusCode::BAD_REQUEST
        );
        for i in 0..MAX_REMEMBERED + 1 {
            done.mark(format!("r{i}"));
        }
        assert!(!done.is_done("b"), "the oldest is forgotten");
        tokio::time::timeout(std::time::Duration::from_secs(1), done.wait("r3"))
            .await
            .unwrap();
    }
}
