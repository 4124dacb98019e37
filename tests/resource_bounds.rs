//! Resource bounds against hostile clients (RELIABILITY.md, "Hostile clients"): the real binary
//! on loopback against a mock collector, each test an attack and the bound that holds it —
//! decoded size, the in-flight memory budget, idle and capped connections on both listeners,
//! HTTP/2 stream caps, descriptor exhaustion, lingering close and the `Host` check.

mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use dynamiq_sidecar::sinks::otlp::{EXPORT_PATH, PreEncoded};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use support::{MockCollector, Sidecar, batches, wait_until};

const KEY: &str = "sk-bounds-test-key-5521";
const GENAI_PB: &[u8] = include_bytes!("fixtures/otlp/genai-semconv.pb");

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// 32 MiB of `12 00`: sixteen million empty `ResourceSpans` (two wire bytes each).
fn empty_spans_bomb() -> Vec<u8> {
    [0x12u8, 0x00].repeat(16 << 20)
}

/// An OTLP/JSON request of ten million empty `resourceSpans` objects (~30 MiB).
fn json_bomb() -> Vec<u8> {
    let mut body = b"{\"resourceSpans\":[".to_vec();
    body.extend(b"{},".repeat(10_000_000));
    body.extend(b"{}]}");
    body
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
}

/// Reads up to the end of a response's head; returns it (status line first).
fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Reads until the peer closes (EOF or reset); how long it took.
fn time_to_close(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Exports `body` as the raw `Export` message over gRPC, gzip-compressed when asked.
fn grpc_export(
    addr: SocketAddr,
    body: Vec<u8>,
    gzip: bool,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    runtime().block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        if gzip {
            client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        client.ready().await.unwrap();
        client
            .unary(
                tonic::Request::new(bytes::Bytes::from(body)),
                http::uri::PathAndQuery::from_static(EXPORT_PATH),
                PreEncoded,
            )
            .await
            .map(tonic::Response::into_inner)
    })
}

fn post_otlp(sidecar: &Sidecar, content_type: &str, gzipped: &[u8]) -> support::http::HttpResponse {
    sidecar.request(
        "POST",
        "/v1/traces",
        &[("Content-Type", content_type), ("Content-Encoding", "gzip")],
        gzipped,
    )
}

/// Scenario: with the default limits, 32 KiB gzip bodies that inflate to 32 MiB of empty spans
/// (protobuf, over HTTP and gRPC) or of empty JSON objects, which decoded would take gigabytes.
/// Guarantees: each is refused before it is built (413 / RESOURCE_EXHAUSTED naming
/// `ingest.max_inflight_bytes`), the process's peak RSS stays far below the decoded size, the
/// budget is whole again and a valid export is served afterwards.
#[test]
fn decompression_bombs_of_empty_spans_are_refused_before_they_are_built() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let pb_bomb = gzip(&empty_spans_bomb());
    let json_bomb = gzip(&json_bomb());
    assert!(pb_bomb.len() < 64 * 1024, "{}", pb_bomb.len());

    let r = post_otlp(&sidecar, "application/x-protobuf", &pb_bomb);
    assert_eq!(r.status, 413, "{}", r.text());
    let r = post_otlp(&sidecar, "application/json", &json_bomb);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.text().contains("ingest.max_inflight_bytes"),
        "{}",
        r.text()
    );
    let status = grpc_export(sidecar.grpc_addr(), empty_spans_bomb(), true).unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("ingest.max_inflight_bytes"),
        "{status:?}"
    );

    let peak = sidecar.peak_rss_bytes();
    assert!(peak < 200 << 20, "peak RSS {} MiB", peak >> 20);
    assert!(
        sidecar.metric_sum(
            "dynamiq_sidecar_ingest_budget_refusals_total",
            &[r#"reason="too_large""#]
        ) >= 3.0
    );
    wait_until("the budget is whole again", Duration::from_secs(5), || {
        sidecar.metric_sum("dynamiq_sidecar_ingest_inflight_bytes", &[]) == 0.0
    });
    grpc_export(sidecar.grpc_addr(), GENAI_PB.to_vec(), true).expect("a valid export");
}

/// Declares `declared` bytes, sends `sent` of them and stops (holding its share of the budget).
fn stalled_upload(sidecar: &Sidecar, declared: usize, sent: usize) -> TcpStream {
    let mut s = connect(sidecar.http_addr());
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    s.write_all(&vec![b' '; sent]).unwrap();
    s
}

/// Scenario: `max_inflight_bytes = 4 MiB`; twelve clients each declare a ~1 MiB body, send half
/// and stall. Guarantees: the ones past the budget are answered 503 + `Retry-After` (gRPC:
/// UNAVAILABLE) and read that answer; nothing is stored for them; once the stalled uploads time
/// out the budget is whole again and valid clients are served; the refusals are counted.
#[test]
fn past_the_inflight_budget_requests_get_503_and_retry_after_and_nothing_is_lost() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("ingest.max_body_bytes", 1 << 20)
        .set("ingest.max_inflight_bytes", 4 << 20)
        .set("ingest.request_timeout", "2s")
        .start();
    let holders: Vec<TcpStream> = (0..4)
        .map(|_| stalled_upload(&sidecar, 1 << 20, 512 * 1024))
        .collect();
    wait_until("the budget is taken", Duration::from_secs(5), || {
        sidecar.metric_sum("dynamiq_sidecar_ingest_inflight_bytes", &[])
            >= (4 << 20) as f64 - 20_000.0
    });
    for _ in 0..8 {
        let mut s = stalled_upload(&sidecar, (1 << 20) - 4096, 512 * 1024);
        let head = read_head(&mut s).expect("the 503 reaches the client");
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 1"),
            "{head}"
        );
    }
    let (status, answer) = sidecar.post_runs(&batches::batch("refused", 1));
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "too_busy", "{answer}");
    let status = grpc_export(sidecar.grpc_addr(), GENAI_PB.to_vec(), false).unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    drop(holders);
    wait_until("the budget is whole again", Duration::from_secs(10), || {
        sidecar.metric_sum("dynamiq_sidecar_ingest_inflight_bytes", &[]) == 0.0
    });
    let acked = sidecar.post_generated("served", 5, 3);
    grpc_export(sidecar.grpc_addr(), GENAI_PB.to_vec(), false).expect("served again");
    collector.wait_for_run_ids(&acked, Duration::from_secs(20));
    assert!(
        !collector
            .run_ids()
            .iter()
            .any(|id| id.starts_with("refused")),
        "a refused batch was forwarded"
    );
    assert!(
        sidecar.metric_sum(
            "dynamiq_sidecar_ingest_budget_refusals_total",
            &[r#"reason="busy""#]
        ) >= 10.0
    );
}

/// Scenario: with the default limits, at once: protobuf, JSON and gRPC decompression bombs,
/// 30 MiB uploads, compressed gRPC exports near the message limit, and valid clients posting.
/// Guarantees: peak RSS stays under the ceiling written in config/dynamiq-sidecar.toml (240 MiB,
/// inside the Helm chart's 256 Mi limit); every answer is 200, 413 or 503 (nothing else, no
/// reset); every acknowledged run reaches the collector.
#[test]
fn a_hostile_mix_keeps_rss_under_the_documented_ceiling() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let pb_bomb = gzip(&empty_spans_bomb());
    let json_bomb = gzip(&json_bomb());
    let big_upload = serde_json::to_vec(&batches::batch("big", 1)).unwrap();
    let mut padded = big_upload[..big_upload.len() - 1].to_vec();
    padded.extend(vec![b' '; 30 << 20]);
    padded.push(b'}');
    let mut acked = std::collections::HashSet::new();
    std::thread::scope(|scope| {
        let mut hostile = Vec::new();
        for round in 0..3 {
            let (sidecar, pb_bomb, json_bomb, padded) = (&sidecar, &pb_bomb, &json_bomb, &padded);
            hostile.push(scope.spawn(move || {
                let mut statuses = vec![
                    post_otlp(sidecar, "application/x-protobuf", pb_bomb).status,
                    post_otlp(sidecar, "application/json", json_bomb).status,
                ];
                let grpc = grpc_export(sidecar.grpc_addr(), empty_spans_bomb(), true);
                statuses.push(match grpc {
                    Ok(_) => 200,
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => 413,
                    Err(s) if s.code() == tonic::Code::Unavailable => 503,
                    Err(s) => panic!("round {round}: {s:?}"),
                });
                statuses.push(
                    sidecar
                        .request(
                            "POST",
                            "/v1/traces",
                            &[("Content-Type", "application/json")],
                            padded,
                        )
                        .status,
                );
                statuses
            }));
        }
        for i in 0..20 {
            let batch = batches::batch(&format!("mix{i}-"), 5);
            let (status, answer) = sidecar.post_runs(&batch);
            assert!(status == 200 || status == 503, "{status} {answer}");
            if status == 200 {
                acked.extend(batches::ids(&batch));
            }
        }
        for h in hostile {
            for status in h.join().unwrap() {
                assert!([200, 413, 503].contains(&status), "{status}");
            }
        }
    });
    let peak = sidecar.peak_rss_bytes();
    eprintln!("peak RSS under the hostile mix: {} MiB", peak >> 20);
    assert!(peak < 240 << 20, "peak RSS {} MiB", peak >> 20);
    assert!(!acked.is_empty());
    collector.wait_for_run_ids(&acked, Duration::from_secs(30));
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];

/// Opens an HTTP/2 prior-knowledge connection, reads the server's SETTINGS (acknowledging
/// them) and returns the stream with the advertised `SETTINGS_MAX_CONCURRENT_STREAMS`.
fn h2_handshake(addr: SocketAddr) -> (TcpStream, Option<u32>) {
    let mut s = connect(addr);
    s.write_all(H2_PREFACE).unwrap();
    s.write_all(&EMPTY_SETTINGS).unwrap();
    let mut header = [0u8; 9];
    s.read_exact(&mut header).unwrap();
    assert_eq!(header[3], 4, "the server's first frame is SETTINGS");
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    let max_streams = payload
        .chunks_exact(6)
        .find(|p| u16::from_be_bytes([p[0], p[1]]) == 3)
        .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
    s.write_all(&SETTINGS_ACK).unwrap();
    (s, max_streams)
}

/// Scenario: `idle_timeout = 1s`; an HTTP/1 keep-alive connection after one request, and
/// HTTP/2 prior-knowledge connections that never send a request, on both listeners.
/// Guarantees: each is closed within a few seconds, counted as `reason="idle"`; both listeners
/// advertise `max_concurrent_streams`.
#[test]
fn idle_connections_are_closed_and_http2_streams_are_capped_on_both_listeners() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("ingest.idle_timeout", "1s")
        .set("ingest.max_concurrent_streams", 7)
        .start();
    let mut h1 = connect(sidecar.http_addr());
    h1.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert!(read_head(&mut h1).unwrap().starts_with("HTTP/1.1 200"));
    let (mut h2c, h2c_streams) = h2_handshake(sidecar.http_addr());
    let (mut grpc, grpc_streams) = h2_handshake(sidecar.grpc_addr());
    assert_eq!(h2c_streams, Some(7));
    assert_eq!(grpc_streams, Some(7));
    for (what, stream) in [("h1", &mut h1), ("h2c", &mut h2c), ("grpc", &mut grpc)] {
        let took = time_to_close(stream);
        assert!(
            took < Duration::from_secs(5),
            "{what}: closed after {took:?}"
        );
    }
    for listener in ["http", "grpc"] {
        let label = format!(r#"listener="{listener}""#);
        assert!(
            sidecar.metric_sum(
                "dynamiq_sidecar_connections_closed_total",
                &[&label, r#"reason="idle""#]
            ) >= 1.0,
            "{listener}"
        );
    }
}

/// Scenario: `max_connections = 16`; 100 connections to the gRPC port that send nothing.
/// Guarantees: the listener holds at most its cap (the rest wait in the backlog, counted), the
/// idle ones are closed, and a real gRPC export is served within seconds.
#[test]
fn a_grpc_connection_flood_waits_for_the_cap_and_the_listener_recovers() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("ingest.max_connections", 16)
        .set("ingest.idle_timeout", "1s")
        .set("ingest.request_timeout", "1s")
        .start();
    let flood: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(sidecar.grpc_addr()).ok())
        .collect();
    wait_until("the cap bites", Duration::from_secs(5), || {
        sidecar.metric_sum(
            "dynamiq_sidecar_connection_limit_waits_total",
            &[r#"listener="grpc""#],
        ) >= 1.0
    });
    assert!(
        sidecar.metric_sum("dynamiq_sidecar_connections_open", &[r#"listener="grpc""#]) <= 16.0
    );
    let started = Instant::now();
    grpc_export(sidecar.grpc_addr(), GENAI_PB.to_vec(), false).expect("served");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    drop(flood);
    collector.wait_for_runs(1, Duration::from_secs(20));
}

/// Scenario: the process may open 300 descriptors; the collector is down while batches are
/// acknowledged (small segments, so new segment files are needed), then 400 connections flood
/// both listeners, then the collector comes back.
/// Guarantees: the connection cap is lowered to fit (a warning says so); every acknowledged run
/// is delivered while the flood is on (the buffer and forwarder keep their descriptors); once
/// idle connections are closed new batches are acknowledged again.
#[test]
fn running_short_of_descriptors_stops_neither_appends_nor_forwarding() {
    let mut collector = MockCollector::start();
    collector.stop();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .nofile_limit(300)
        .set("buffer.segment_bytes", 16 * 1024)
        .set("ingest.idle_timeout", "2s")
        .set("ingest.request_timeout", "2s")
        .start();
    assert!(
        sidecar.logs().contains("max_connections"),
        "no warning about the lowered cap:\n{}",
        sidecar.logs()
    );
    let mut acked = sidecar.post_generated("fd", 40, 5);
    let flood: Vec<TcpStream> = (0..200)
        .flat_map(|_| {
            [sidecar.http_addr(), sidecar.grpc_addr()]
                .into_iter()
                .filter_map(|a| TcpStream::connect(a).ok())
        })
        .collect();
    collector.resume();
    collector.wait_for_run_ids(&acked, Duration::from_secs(30));
    let started = Instant::now();
    acked.extend(sidecar.post_generated("after", 5, 5));
    assert!(started.elapsed() < Duration::from_secs(30));
    collector.wait_for_run_ids(&acked, Duration::from_secs(30));
    drop(flood);
}

/// Scenario: `max_body_bytes = 1 MiB`; clients declare 80 MiB and send 1 MiB of it before they
/// read, send all 80 MiB before they read, or send a chunked body past the limit.
/// Guarantees: each reads `413` (the rest of its body is read and discarded), not a reset;
/// the drains are counted.
#[test]
fn an_oversized_bodys_413_reaches_the_client_instead_of_a_reset() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("ingest.max_body_bytes", 1 << 20)
        .set("ingest.max_inflight_bytes", 4 << 20)
        .start();
    let declared = 80 << 20;
    let chunk = vec![b' '; 1 << 20];

    let mut early = stalled_upload(&sidecar, declared, 1 << 20);
    let head = read_head(&mut early).expect("the 413 after 1 MiB");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");

    let mut whole = stalled_upload(&sidecar, declared, 0);
    for _ in 0..80 {
        whole
            .write_all(&chunk)
            .expect("the body is read while it is sent");
    }
    let head = read_head(&mut whole).expect("the 413 after 80 MiB");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");

    let mut chunked = connect(sidecar.http_addr());
    chunked
        .write_all(b"POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for _ in 0..3 {
        write!(chunked, "{:x}\r\n", chunk.len()).unwrap();
        chunked.write_all(&chunk).unwrap();
        chunked.write_all(b"\r\n").unwrap();
    }
    chunked.write_all(b"0\r\n\r\n").unwrap();
    let head = read_head(&mut chunked).expect("the 413 after a chunked body");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");

    wait_until("the drains are counted", Duration::from_secs(10), || {
        sidecar.metric_sum(
            "dynamiq_sidecar_http_lingering_closes_total",
            &[r#"outcome="drained""#],
        ) >= 2.0
    });
    assert_eq!(sidecar.post_runs(&batches::batch("after413", 1)).0, 200);
}

/// Sends `request` (a whole HTTP/1.1 request head, `Connection: close`) and returns the answer's
/// head.
fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).unwrap();
    read_head(&mut s).unwrap()
}

fn get_with_host(addr: SocketAddr, path: &str, host: &str) -> String {
    raw(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// Scenario: a web page whose name was rebound to 127.0.0.1 (`Host: evil.example`) asks for the
/// local traces, the `/api/*` passthrough, metrics and the ingest endpoint, and sends a CORS
/// preflight. Guarantees: 421 with a JSON error on every endpoint but `/healthz`; loopback names
/// and the configured allow-list are served; no response carries CORS headers.
#[test]
fn a_rebound_host_name_is_refused_everywhere_but_healthz() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set(
            "ingest.allowed_hosts",
            toml::Value::Array(vec!["sidecar.obs.svc".into(), "*.pods.local".into()]),
        )
        .start();
    let addr = sidecar.http_addr();
    let port = addr.port();
    for path in [
        "/v1/traces/export",
        "/v1/traces",
        "/api/v0/projects",
        "/metrics",
        "/readyz",
    ] {
        for host in [
            "evil.example",
            &format!("evil.example:{port}"),
            "sidecar.obs.svc.evil.example",
        ] {
            let head = get_with_host(addr, path, host);
            assert!(head.starts_with("HTTP/1.1 421"), "{path} {host}: {head}");
            assert!(head.contains("application/json"), "{head}");
            assert!(
                !head.to_ascii_lowercase().contains("access-control"),
                "{head}"
            );
        }
    }
    let post = raw(
        addr,
        "POST /v1/traces HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert!(post.starts_with("HTTP/1.1 421"), "{post}");
    let preflight = raw(
        addr,
        "OPTIONS /v1/traces/export HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil.example\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
    );
    assert!(
        !preflight.to_ascii_lowercase().contains("access-control"),
        "{preflight}"
    );
    assert!(get_with_host(addr, "/healthz", "evil.example").starts_with("HTTP/1.1 200"));
    let loopback = [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "app.localhost".to_owned(),
        "sidecar.obs.svc".to_owned(),
        format!("a.pods.local:{port}"),
    ];
    for host in &loopback {
        let head = get_with_host(addr, "/v1/traces/export", host);
        assert!(head.starts_with("HTTP/1.1 200"), "{host}: {head}");
        assert!(
            !head.to_ascii_lowercase().contains("access-control"),
            "{head}"
        );
    }
    assert!(sidecar.metric_sum("dynamiq_sidecar_http_requests_refused_host_total", &[]) >= 16.0);
}
