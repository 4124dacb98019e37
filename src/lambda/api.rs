//! The Lambda Extensions API and Telemetry API, as an external extension calls them
//! (`http://$AWS_LAMBDA_RUNTIME_API/2020-01-01/extension/...`, `/2022-07-01/telemetry`).
//!
//! Guarantees: every call has a timeout except `event/next`, which Lambda answers only when the
//! next event comes (and which is where the environment is frozen between invocations); errors
//! name the call and the status, never a key.

use std::time::Duration;

use http::header::CONTENT_TYPE;
use serde::Deserialize;

/// The name Lambda knows the extension by: its file name in `/opt/extensions/`.
pub const EXTENSION_NAME: &str = "dynamiq-sidecar";
const IDENTIFIER: &str = "Lambda-Extension-Identifier";
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed call.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {message}")]
pub struct ApiError {
    /// Which call (`register`, `telemetry subscribe`, `event/next`, ...).
    pub call: &'static str,
    /// What went wrong.
    pub message: String,
}

/// One event of `event/next`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "eventType", rename_all = "UPPERCASE")]
pub enum Event {
    /// An invocation began.
    Invoke {
        /// The invocation's request id.
        #[serde(rename = "requestId")]
        request_id: String,
        /// When the invocation times out (ms since the epoch).
        #[serde(rename = "deadlineMs")]
        deadline_ms: u64,
    },
    /// The execution environment is going away.
    Shutdown {
        /// `spindown`, `timeout` or `failure`.
        #[serde(rename = "shutdownReason", default)]
        reason: String,
        /// When the extension must be gone (ms since the epoch).
        #[serde(rename = "deadlineMs")]
        deadline_ms: u64,
    },
}

/// A registered extension's client.
#[derive(Debug, Clone)]
pub struct Extension {
    http: reqwest::Client,
    base: String,
    id: String,
}

fn error(call: &'static str) -> impl Fn(reqwest::Error) -> ApiError {
    move |e| ApiError {
        call,
        message: crate::secret::redact_reqwest_error(e).to_string(),
    }
}

async fn check(
    call: &'static str,
    response: reqwest::Response,
) -> Result<reqwest::Response, ApiError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Err(ApiError {
        call,
        message: format!("{status}: {}", crate::model::text::truncate(&body, 512)),
    })
}

impl Extension {
    /// Registers for `INVOKE` and `SHUTDOWN` with the runtime API at `runtime_api`
    /// (`host:port`, as `AWS_LAMBDA_RUNTIME_API` gives it).
    pub async fn register(runtime_api: &str) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(error("register"))?;
        let base = format!("http://{runtime_api}");
        let response = http
            .post(format!("{base}/2020-01-01/extension/register"))
            .header("Lambda-Extension-Name", EXTENSION_NAME)
            .timeout(CALL_TIMEOUT)
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::json!({"events": ["INVOKE", "SHUTDOWN"]}).to_string())
            .send()
            .await
            .map_err(error("register"))?;
        let response = check("register", response).await?;
        let id = response
            .headers()
            .get(IDENTIFIER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or(ApiError {
                call: "register",
                message: format!("the answer has no {IDENTIFIER} header"),
            })?
            .to_string();
        Ok(Self { http, base, id })
    }

    /// Subscribes `destination` (the extension's own listener) to platform events.
    pub async fn subscribe_telemetry(&self, destination: &str) -> Result<(), ApiError> {
        let body = serde_json::json!({
            "schemaVersion": "2022-12-13",
            "destination": {"protocol": "HTTP", "URI": destination},
            "types": ["platform"],
            "buffering": {"timeoutMs": 25, "maxBytes": 262144, "maxItems": 1000},
        });
        let response = self
            .http
            .put(format!("{}/2022-07-01/telemetry", self.base))
            .header(IDENTIFIER, &self.id)
            .timeout(CALL_TIMEOUT)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(error("telemetry subscribe"))?;
        check("telemetry subscribe", response).await.map(drop)
    }

    /// Waits for the next event (the environment may be frozen meanwhile).
    pub async fn next_event(&self) -> Result<Event, ApiError> {
        let response = self
            .http
            .get(format!("{}/2020-01-01/extension/event/next", self.base))
            .header(IDENTIFIER, &self.id)
            .send()
            .await
            .map_err(error("event/next"))?;
        let response = check("event/next", response).await?;
        let body = response.bytes().await.map_err(error("event/next"))?;
        serde_json::from_slice(&body).map_err(|e| ApiError {
            call: "event/next",
            message: format!("an event Lambda sent cannot be read: {e}"),
        })
    }

    /// Reports a failure during init (`init/error`) or later (`exit/error`).
    pub async fn report_error(&self, during_init: bool, kind: &str, message: &str) {
        let path = if during_init {
            "init/error"
        } else {
            "exit/error"
        };
        let result = self
            .http
            .post(format!("{}/2020-01-01/extension/{path}", self.base))
            .header(IDENTIFIER, &self.id)
            .header("Lambda-Extension-Function-Error-Type", format!("Extension.{kind}"))
            .timeout(CALL_TIMEOUT)
            .header(CONTENT_TYPE, "application/json")
            .body(
                serde_json::json!({"errorMessage": message, "errorType": format!("Extension.{kind}"), "stackTrace": []})
                    .to_string(),
            )
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %crate::secret::redact_reqwest_error(e), path, "cannot report the error to Lambda");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_as_lambda_sends_them() {
        let invoke: Event = serde_json::from_str(
            r#"{"eventType":"INVOKE","deadlineMs":1700000000123,"requestId":"r1","invokedFunctionArn":"arn","tracing":{}}"#,
        )
        .unwrap();
        assert_eq!(
            invoke,
            Event::Invoke {
                request_id: "r1".into(),
                deadline_ms: 1_700_000_000_123
            }
        );
        let shutdown: Event = serde_json::from_str(
            r#"{"eventType":"SHUTDOWN","shutdownReason":"spindown","deadlineMs":5}"#,
        )
        .unwrap();
        assert_eq!(
            shutdown,
            Event::Shutdown {
                reason: "spindown".into(),
                deadline_ms: 5
            }
        );
        assert!(serde_json::from_str::<Event>(r#"{"eventType":"OTHER"}"#).is_err());
    }
}
