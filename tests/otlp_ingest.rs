//! OTLP ingest (docs/http-contract.md §4–5): the real binary takes OTLP/HTTP (protobuf and JSON, gzip) on
//! `POST /v1/traces` and OTLP/gRPC on its gRPC port, converts spans to runs and forwards them to
//! a mock collector. Invalid spans get a partial success; bad bodies a clear error in the
//! request's own encoding; nothing else is lost.

mod support;

use std::io::Write;
use std::time::Duration;

use dynamiq_sidecar::sinks::otlp::{EXPORT_PATH, PreEncoded};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::Value;
use support::{MockCollector, Sidecar, wait_until};

const KEY: &str = "sk-otlp-test-key-91c2";
const GENAI_PB: &[u8] = include_bytes!("fixtures/otlp/genai-semconv.pb");
const GENAI_JSON: &[u8] = include_bytes!("fixtures/otlp/genai-semconv.json");
const OPENINFERENCE_PB: &[u8] = include_bytes!("fixtures/otlp/openinference.pb");

fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

fn post(
    sidecar: &Sidecar,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> support::http::HttpResponse {
    let mut headers = vec![("Content-Type", content_type)];
    headers.extend_from_slice(extra);
    sidecar.request("POST", "/v1/traces", &headers, body)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn wait_for_runs(collector: &MockCollector, n: usize) -> Vec<Value> {
    wait_until(
        "the collector has every converted run",
        Duration::from_secs(20),
        || collector.accepted_run_ids().len() >= n,
    );
    std::thread::sleep(Duration::from_millis(200));
    let runs = collector.runs();
    assert_eq!(runs.len(), n, "no more and no fewer runs than spans");
    runs
}

#[test]
fn otlp_http_protobuf_json_and_gzip_are_converted_and_forwarded() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let pb = ExportTraceServiceRequest::decode(GENAI_PB).unwrap();
    let json: ExportTraceServiceRequest = serde_json::from_slice(GENAI_JSON).unwrap();
    let oi = ExportTraceServiceRequest::decode(OPENINFERENCE_PB).unwrap();

    let r = post(&sidecar, "application/x-protobuf", &[], GENAI_PB);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    let answer = ExportTraceServiceResponse::decode(r.body.as_slice()).unwrap();
    assert_eq!(answer.partial_success, None);

    let r = post(&sidecar, "application/json", &[], GENAI_JSON);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), serde_json::json!({}));

    let r = post(
        &sidecar,
        "application/x-protobuf",
        &[("Content-Encoding", "gzip")],
        &gzip(OPENINFERENCE_PB),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let expected = span_count(&pb) + span_count(&json) + span_count(&oi);
    let runs = wait_for_runs(&collector, expected);
    for run in &runs {
        for field in [
            "id",
            "name",
            "type",
            "trace_id",
            "source_id",
            "start_time",
            "end_time",
            "status",
        ] {
            assert!(!run[field].is_null(), "{field} missing in {run}");
        }
    }
    assert!(
        runs.iter()
            .any(|r| r["metadata"]["usage"]["prompt_tokens"] == 11)
    );
    assert!(
        runs.iter()
            .any(|r| r["status"] == "failed" && r["error"]["traceback"].is_string())
    );
    for request in collector.trace_requests() {
        assert_eq!(
            request.authorization(),
            Some(format!("Bearer {KEY}").as_str())
        );
    }
    let metrics = sidecar.metrics();
    assert!(
        metrics.contains(&format!(
            "dynamiq_sidecar_ingest_spans_accepted_total {expected}"
        )),
        "{metrics}"
    );
}

#[test]
fn invalid_spans_get_a_partial_success_and_the_valid_ones_are_kept() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"0AF7651916CD43DD8448EB211C80319C","spanId":"B7AD6B7169203331","name":"good","kind":2,
         "startTimeUnixNano":"1795508170112968549","endTimeUnixNano":1795508170124760577,
         "attributes":[{"key":"gen_ai.usage.input_tokens","value":{"intValue":"7"}}]},
        {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b71692033","name":"short id"},
        {"traceId":"00000000000000000000000000000000","spanId":"b7ad6b7169203332","name":"zero trace"},
        {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203333","name":"backwards",
         "startTimeUnixNano":"20","endTimeUnixNano":"10"}
    ]}]}]}"#;
    let r = post(&sidecar, "application/json", &[], body);
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    let partial = &answer["partialSuccess"];
    assert!(
        partial["rejectedSpans"] == 3 || partial["rejectedSpans"] == "3",
        "{answer}"
    );
    let message = partial["errorMessage"].as_str().unwrap();
    assert!(message.contains("spanId must be 8 bytes"), "{message}");
    assert!(message.contains("traceId is all zeros"), "{message}");
    assert!(message.contains("before startTimeUnixNano"), "{message}");
    let runs = wait_for_runs(&collector, 1);
    assert_eq!(runs[0]["name"], "good");
    assert_eq!(runs[0]["trace_id"], "0af76519-16cd-43dd-8448-eb211c80319c");
    assert_eq!(runs[0]["metadata"]["usage"]["prompt_tokens"], 7);
    // The same partial success in protobuf.
    let request: ExportTraceServiceRequest = serde_json::from_slice(body).unwrap();
    let r = post(
        &sidecar,
        "application/x-protobuf",
        &[],
        &request.encode_to_vec(),
    );
    let answer = ExportTraceServiceResponse::decode(r.body.as_slice()).unwrap();
    assert_eq!(answer.partial_success.unwrap().rejected_spans, 3);
}

/// Scenario: `forward.max_bytes` = 4 KiB and a span whose run would be larger. Guarantees: that
/// span is a rejected span of a partial success (OTLP's answer for data refused while the rest
/// is accepted) naming `forward.max_bytes`; the other span is stored and delivered.
#[test]
fn a_span_whose_run_is_too_large_to_forward_is_a_rejected_span() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("forward.max_bytes", 4096)
        .start();
    let body = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[
        {{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"small",
         "startTimeUnixNano":"1795508170112968549","endTimeUnixNano":"1795508170124760577"}},
        {{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203332","name":"huge",
         "startTimeUnixNano":"1795508170112968549","endTimeUnixNano":"1795508170124760577",
         "attributes":[{{"key":"input.value","value":{{"stringValue":"{}"}}}}]}}
    ]}}]}}]}}"#,
        "x".repeat(6000)
    );
    let r = post(&sidecar, "application/json", &[], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    let partial = &answer["partialSuccess"];
    assert!(
        partial["rejectedSpans"] == 1 || partial["rejectedSpans"] == "1",
        "{answer}"
    );
    let message = partial["errorMessage"].as_str().unwrap();
    assert!(message.contains("forward.max_bytes"), "{message}");
    let runs = wait_for_runs(&collector, 1);
    assert_eq!(runs[0]["name"], "small");
}

#[test]
fn bad_otlp_bodies_get_clear_errors_in_their_own_encoding() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("ingest.max_body_bytes", 200_000)
        .start();

    // Garbage protobuf: 400 with a google.rpc.Status body (code 3 = INVALID_ARGUMENT).
    let r = post(
        &sidecar,
        "application/x-protobuf",
        &[],
        b"\xff\xff\xff\xff garbage",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    assert!(
        r.body.len() > 2 && r.body[0] == 0x08 && r.body[1] == 3,
        "{:?}",
        r.body
    );

    // snake_case JSON is not read as an empty request.
    let r = post(
        &sidecar,
        "application/json",
        &[],
        br#"{"resource_spans":[{"scope_spans":[]}]}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("resourceSpans"), "{}", r.text());

    // Base64 ids (protobuf's canonical JSON, not OTLP/JSON).
    let r = post(
        &sidecar,
        "application/json",
        &[],
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"CvdlGRbNQ92ESOshHIAxnA==","spanId":"t61rcWkgMzE="}]}]}]}"#,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hex"),
        "{}",
        r.text()
    );

    // Over the limit on the wire, and (a gzip bomb) after decompression.
    let big = vec![b'x'; 300_000];
    let r = post(&sidecar, "application/x-protobuf", &[], &big);
    assert_eq!(r.status, 413);
    let r = post(
        &sidecar,
        "application/x-protobuf",
        &[("Content-Encoding", "gzip")],
        &gzip(&vec![0u8; 5_000_000]),
    );
    assert_eq!(r.status, 413);

    // A huge attribute value inside the limit is fine.
    let huge = "v".repeat(150_000);
    let body = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"big","attributes":[{{"key":"input.value","value":{{"stringValue":"{huge}"}}}}]}}]}}]}}]}}"#
    );
    let r = post(&sidecar, "application/json", &[], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let runs = wait_for_runs(&collector, 1);
    assert_eq!(runs[0]["input"].as_str().map(str::len), Some(150_000));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn grpc_channel(sidecar: &Sidecar) -> tonic::transport::Channel {
    let endpoint = format!("http://{}", sidecar.grpc_addr());
    tonic::transport::Endpoint::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn grpc_client(sidecar: &Sidecar) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::new(grpc_channel(sidecar).await)
}

#[test]
fn otlp_grpc_export_plain_and_gzip_with_partial_success_and_limits() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("ingest.max_body_bytes", 200_000)
        .start();
    let pb = ExportTraceServiceRequest::decode(GENAI_PB).unwrap();
    let oi = ExportTraceServiceRequest::decode(OPENINFERENCE_PB).unwrap();
    let mut invalid = pb.clone();
    invalid.resource_spans[0].scope_spans[0].spans[0].span_id = vec![1, 2, 3];
    runtime().block_on(async {
        let mut client = grpc_client(&sidecar).await;
        let answer = client.export(pb.clone()).await.unwrap().into_inner();
        assert_eq!(answer.partial_success, None);

        let mut gz = client
            .clone()
            .send_compressed(tonic::codec::CompressionEncoding::Gzip)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        gz.export(oi.clone()).await.unwrap();

        let answer = client.export(invalid.clone()).await.unwrap().into_inner();
        let partial = answer.partial_success.unwrap();
        assert_eq!(partial.rejected_spans, 1);
        assert!(partial.error_message.contains("spanId must be 8 bytes"));

        // Over ingest.max_body_bytes: RESOURCE_EXHAUSTED, raw and decompressed.
        let mut huge = pb.clone();
        huge.resource_spans[0].scope_spans[0].spans[0].name = "n".repeat(300_000);
        let status = client.export(huge.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        let status = gz.export(huge).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

        // Not protobuf (small: decoded inline; large: on a blocking thread): INVALID_ARGUMENT
        // naming the problem, and the server goes on serving.
        for garbage in [vec![0xff; 3], vec![0xff; 100_000]] {
            let status = export_raw(&sidecar, garbage).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains("not an OTLP"), "{status:?}");
        }
        client.export(pb.clone()).await.unwrap();
    });
    let expected = 3 * span_count(&pb) - 1 + span_count(&oi);
    let runs = wait_for_runs(&collector, expected);
    assert!(runs.iter().any(|r| r["name"] == "chat gpt-4o-mini"));
    assert!(sidecar.metrics().contains("otlp_grpc"));
}

/// Sends `body` as the `Export` request message, as is.
async fn export_raw(
    sidecar: &Sidecar,
    body: Vec<u8>,
) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
    let mut client = tonic::client::Grpc::new(grpc_channel(sidecar).await);
    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
    client
        .unary(
            tonic::Request::new(bytes::Bytes::from(body)),
            path,
            PreEncoded,
        )
        .await
}

/// Exports `pb` over gRPC without `authorization` (must be UNAUTHENTICATED), then with it.
fn export_refused_then_accepted_with(
    sidecar: &Sidecar,
    pb: &ExportTraceServiceRequest,
    authorization: &str,
) {
    runtime().block_on(async {
        let mut client = grpc_client(sidecar).await;
        let status = client.export(pb.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let mut request = tonic::Request::new(pb.clone());
        request
            .metadata_mut()
            .insert("authorization", authorization.parse().unwrap());
        client.export(request).await.unwrap();
    });
}

#[test]
fn otlp_grpc_requires_the_inbound_token_when_one_is_set() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .env("DYNAMIQ_SIDECAR_INGEST_AUTH_TOKEN", "inbound-secret")
        .start();
    let pb = ExportTraceServiceRequest::decode(GENAI_PB).unwrap();
    export_refused_then_accepted_with(&sidecar, &pb, "Bearer inbound-secret");
    wait_for_runs(&collector, span_count(&pb));
}

#[test]
fn passthrough_mode_forwards_each_otlp_clients_own_key() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .no_access_key()
        .set("upstream.auth_mode", "passthrough")
        .start();
    let pb = ExportTraceServiceRequest::decode(GENAI_PB).unwrap();
    let r = post(
        &sidecar,
        "application/x-protobuf",
        &[("Authorization", "Bearer http-client-key")],
        GENAI_PB,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Without a key there is nothing to forward with: 401, in the request's encoding.
    let r = post(&sidecar, "application/x-protobuf", &[], GENAI_PB);
    assert_eq!(r.status, 401);
    export_refused_then_accepted_with(&sidecar, &pb, "Bearer grpc-client-key");
    wait_for_runs(&collector, 2 * span_count(&pb));
    let keys: std::collections::BTreeSet<String> = collector
        .trace_requests()
        .iter()
        .filter_map(|r| r.authorization().map(str::to_owned))
        .collect();
    assert_eq!(
        keys,
        ["Bearer grpc-client-key", "Bearer http-client-key"]
            .map(String::from)
            .into()
    );
    let logs = sidecar.logs();
    assert!(!logs.contains("http-client-key") && !logs.contains("grpc-client-key"));
}

fn metrics_request(
    points: usize,
) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data,
    };
    opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http.server.duration".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint::default(); points],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Scenario: an application points every OpenTelemetry signal at the sidecar
/// (`OTEL_EXPORTER_OTLP_ENDPOINT` alone), so its metrics arrive too. Guarantees: `/v1/metrics`
/// and gRPC `MetricsService/Export` answer success with a partial success naming the data points
/// not forwarded (no export error, no retry), in the request's encoding, gzip included; garbage is
/// a 400 / `INVALID_ARGUMENT`; the inbound token applies; nothing reaches the collector; the
/// points are counted.
#[test]
fn otlp_metrics_are_acknowledged_as_a_partial_success_and_not_forwarded() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url()).access_key(KEY).start();
    let request = metrics_request(5);
    let metrics_post = |content_type: &str, extra: &[(&str, &str)], body: &[u8]| {
        let mut headers = vec![("Content-Type", content_type)];
        headers.extend_from_slice(extra);
        sidecar.request("POST", "/v1/metrics", &headers, body)
    };

    let r = metrics_post("application/x-protobuf", &[], &request.encode_to_vec());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    let answer = ExportMetricsServiceResponse::decode(&r.body[..]).unwrap();
    let partial = answer.partial_success.unwrap();
    assert_eq!(partial.rejected_data_points, 5);
    assert!(
        partial.error_message.contains("not forwarded"),
        "{partial:?}"
    );

    let json = serde_json::to_vec(&request).unwrap();
    let r = metrics_post(
        "application/json",
        &[("Content-Encoding", "gzip")],
        &gzip(&json),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body: Value = r.json();
    // int64 in OTLP/JSON may be a number or a decimal string.
    let rejected = &body["partialSuccess"]["rejectedDataPoints"];
    assert_eq!(rejected.to_string().trim_matches('"'), "5", "{body}");

    let r = metrics_post("application/x-protobuf", &[], b"\x0a\x05ab");
    assert_eq!(r.status, 400);
    let r = metrics_post("application/json", &[], b"{not json");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "bad_request");

    let rt = runtime();
    rt.block_on(async {
        let mut client = MetricsServiceClient::new(grpc_channel(&sidecar).await)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        let answer = client
            .export(metrics_request(7))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.partial_success.unwrap().rejected_data_points, 7);
        let empty = client
            .export(metrics_request(0))
            .await
            .unwrap()
            .into_inner();
        assert!(empty.partial_success.is_none());
    });
    assert_eq!(
        sidecar.metric_sum("dynamiq_sidecar_otlp_metric_points_dropped_total", &[]),
        5.0 + 5.0 + 7.0
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        collector.requests().is_empty(),
        "metrics must not be forwarded"
    );

    // The inbound token applies to metrics as to traces.
    let guarded = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .env("DYNAMIQ_SIDECAR_INGEST_AUTH_TOKEN", "inbound-secret")
        .start();
    let body = request.encode_to_vec();
    let headers = [("Content-Type", "application/x-protobuf")];
    assert_eq!(
        guarded
            .request("POST", "/v1/metrics", &headers, &body)
            .status,
        401
    );
    let authed = [
        ("Content-Type", "application/x-protobuf"),
        ("Authorization", "Bearer inbound-secret"),
    ];
    assert_eq!(
        guarded
            .request("POST", "/v1/metrics", &authed, &body)
            .status,
        200
    );
    rt.block_on(async {
        let mut client = MetricsServiceClient::new(grpc_channel(&guarded).await);
        let refused = client.export(metrics_request(1)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    });
}
