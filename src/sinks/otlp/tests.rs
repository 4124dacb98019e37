//! Unit tests of the OTLP output: answer classification, URLs, config, the loop.

use super::classify::*;
use super::client::*;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use super::*;
use crate::sinks::common::retry::MAX_RETRY_AFTER;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;

fn http(code: u16, headers: &[(&str, &str)], body: &[u8]) -> Verdict {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    classify_http(
        StatusCode::from_u16(code).unwrap(),
        &map,
        body,
        SystemTime::now(),
    )
}

#[test]
fn http_2xx_is_accepted_with_partial_success_counted() {
    assert_eq!(http(200, &[], b""), Verdict::Accepted { rejected_spans: 0 });
    let body = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 3,
            error_message: "bad".into(),
        }),
    }
    .encode_to_vec();
    assert_eq!(
        http(200, &[], &body),
        Verdict::Accepted { rejected_spans: 3 }
    );
    // A JSON or garbage body on 2xx is still a success.
    assert_eq!(
        http(202, &[], b"{}"),
        Verdict::Accepted { rejected_spans: 0 }
    );
}

#[test]
fn http_retryable_statuses_retry_with_retry_after() {
    for code in [408, 429, 502, 503, 504] {
        assert!(
            matches!(http(code, &[], b""), Verdict::Retry { .. }),
            "{code}"
        );
    }
    assert_eq!(
        http(429, &[("retry-after", "7")], b""),
        Verdict::Retry {
            retry_after: Some(Duration::from_secs(7)),
            reason: "HTTP 429".into()
        }
    );
}

#[test]
fn other_statuses_are_permanent() {
    for code in [400, 401, 403, 404, 413, 500, 501] {
        assert!(
            matches!(http(code, &[], b""), Verdict::Drop { .. }),
            "{code}"
        );
    }
    let body = RpcStatus {
        code: 3,
        message: "bad span".into(),
        details: vec![],
    }
    .encode_to_vec();
    assert_eq!(
        http(400, &[], &body),
        Verdict::Drop {
            reason: "HTTP 400: bad span".into()
        }
    );
}

fn status_with_retry_info(code: tonic::Code, secs: i64) -> tonic::Status {
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: secs,
            nanos: 0,
        }),
    };
    let details = RpcStatus {
        code: code as i32,
        message: "slow down".into(),
        details: vec![ProtoAny {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: info.encode_to_vec(),
        }],
    }
    .encode_to_vec();
    tonic::Status::with_details(code, "slow down", Bytes::from(details))
}

#[test]
fn grpc_retryable_codes_retry() {
    use tonic::Code;
    for code in [
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::Aborted,
        Code::Cancelled,
        Code::OutOfRange,
        Code::DataLoss,
    ] {
        assert!(
            matches!(
                classify_grpc(&tonic::Status::new(code, "x")),
                Verdict::Retry {
                    retry_after: None,
                    ..
                }
            ),
            "{code:?}"
        );
    }
    assert!(matches!(
        classify_grpc(&status_with_retry_info(Code::Unavailable, 3)),
        Verdict::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(3)
    ));
}

#[test]
fn grpc_resource_exhausted_retries_only_with_retry_info() {
    use tonic::Code;
    assert!(matches!(
        classify_grpc(&tonic::Status::new(Code::ResourceExhausted, "full")),
        Verdict::Drop { .. }
    ));
    assert!(matches!(
        classify_grpc(&status_with_retry_info(Code::ResourceExhausted, 2)),
        Verdict::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(2)
    ));
    // A hostile delay is capped.
    assert!(matches!(
        classify_grpc(&status_with_retry_info(Code::ResourceExhausted, 10_000_000)),
        Verdict::Retry { retry_after: Some(d), .. } if d == MAX_RETRY_AFTER
    ));
}

#[test]
fn grpc_other_codes_are_permanent() {
    use tonic::Code;
    for code in [
        Code::InvalidArgument,
        Code::Unauthenticated,
        Code::PermissionDenied,
        Code::NotFound,
        Code::Unimplemented,
        Code::Internal,
        Code::Unknown,
    ] {
        assert!(
            matches!(
                classify_grpc(&tonic::Status::new(code, "x")),
                Verdict::Drop { .. }
            ),
            "{code:?}"
        );
    }
}

#[test]
fn http_url_appends_the_traces_path_only_without_a_path() {
    assert_eq!(
        http_traces_url("http://127.0.0.1:4318").unwrap().as_str(),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        http_traces_url("http://h:4318/").unwrap().as_str(),
        "http://h:4318/v1/traces"
    );
    assert_eq!(
        http_traces_url("https://h/otlp/v1/traces")
            .unwrap()
            .as_str(),
        "https://h/otlp/v1/traces"
    );
}

#[test]
fn metrics_render_with_the_prefix() {
    let mut reg = Registry::default();
    let m = OtlpOutputMetrics::register(&mut reg);
    m.drop_spans(DropReason::Rejected, 2);
    m.spans_exported.inc();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    for name in [
        "dynamiq_sidecar_otlp_output_spans_exported_total 1",
        "dynamiq_sidecar_otlp_output_spans_rejected_total",
        "dynamiq_sidecar_otlp_output_dropped_total{reason=\"rejected\"} 2",
        "dynamiq_sidecar_otlp_output_retries_total",
        "dynamiq_sidecar_otlp_output_pending_records",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
}
