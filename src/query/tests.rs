use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use super::api::{DetailOut, parse_params, upstream_url};
use super::export::{EXPORT_CHUNK_BYTES, ExportBody};
use super::index::RUN_PAGE_BYTES;
use super::*;
use crate::convert::time::parse_ns;
use crate::model::envelope;
use crate::model::indexed::IndexedRun;

fn run(
    id: &str,
    trace: &str,
    parent: Option<&str>,
    status: &str,
    start: &str,
    end: Option<&str>,
) -> Bytes {
    Bytes::from(
        json!({
            "id": id, "trace_id": trace, "parent_run_id": parent, "name": format!("name-{id}"),
            "status": status, "start_time": start, "end_time": end,
            "source_id": format!("src-{trace}"), "session_id": "sess",
        })
        .to_string(),
    )
}

fn index() -> QueryIndex {
    QueryIndex::unregistered(1 << 30, Duration::from_secs(3600))
}

const T0: &str = "2026-01-01T00:00:00+00:00";
const T1: &str = "2026-01-01T00:00:01.5+00:00";
const T2: &str = "2026-01-01T00:00:02Z";

#[test]
fn summary_uses_the_root_and_the_time_range() {
    let ix = index();
    ix.ingest_json(
        0,
        &[
            run("c", "t", Some("r"), "succeeded", T1, Some(T2)),
            run("r", "t", None, "succeeded", T0, Some(T1)),
        ],
    );
    let d = ix.get("t").unwrap();
    let s = d.summary;
    assert_eq!(s.name.as_deref(), Some("name-r"));
    assert_eq!(s.status.as_deref(), Some("succeeded"));
    assert_eq!(s.started_at.as_deref(), Some(T0));
    assert_eq!(s.ended_at.as_deref(), Some(T2));
    assert_eq!(s.source_id.as_deref(), Some("src-t"));
    assert_eq!(s.session_id.as_deref(), Some("sess"));
    assert_eq!(s.runs, 2);
    assert_eq!(s.delivery, Delivery::Pending);
    assert_eq!(d.runs.len(), 2);
}

#[test]
fn ended_at_is_null_while_a_run_is_open_and_latest_version_wins() {
    let ix = index();
    ix.ingest_json(
        0,
        &[
            run("r", "t", None, "succeeded", T0, Some(T1)),
            run("c", "t", Some("r"), "running", T0, None),
        ],
    );
    assert_eq!(ix.get("t").unwrap().summary.ended_at, None);
    let before = ix.bytes();
    ix.ingest_json(0, &[run("c", "t", Some("r"), "succeeded", T0, Some(T2))]);
    let d = ix.get("t").unwrap();
    assert_eq!(d.summary.runs, 2);
    assert_eq!(d.summary.ended_at.as_deref(), Some(T2));
    assert!(String::from_utf8_lossy(&d.runs[1]).contains("\"succeeded\""));
    assert_eq!(
        ix.bytes(),
        d.runs.iter().map(|r| r.len() as u64).sum::<u64>()
    );
    assert!(ix.bytes() >= before);
}

#[test]
fn without_a_root_the_first_run_names_it_and_any_failure_fails_it() {
    let ix = index();
    let mut a: serde_json::Value =
        serde_json::from_slice(&run("a", "t", Some("x"), "", T0, Some(T1))).unwrap();
    a["status"] = serde_json::Value::Null;
    ix.ingest_json(
        0,
        &[
            Bytes::from(a.to_string()),
            run("b", "t", Some("a"), "failed", T1, Some(T2)),
        ],
    );
    let s = ix.get("t").unwrap().summary;
    assert_eq!(s.name.as_deref(), Some("name-a"));
    assert_eq!(s.status.as_deref(), Some("failed"));
}

#[test]
fn envelopes_runs_without_ids_and_garbage_are_handled() {
    let ix = index();
    let payloads = [
        envelope::encode_run(&run("r", "t", None, "succeeded", T0, Some(T1)), Some("k")),
        envelope::encode_run(br#"{"id":"x"}"#, None),
        envelope::encode_run(b"not json", None),
        Bytes::from_static(b"\x09"),
    ];
    ix.ingest_envelopes((1u64..).zip(&payloads));
    assert_eq!(ix.len(), 1);
    assert_eq!(ix.get("t").unwrap().summary.runs, 1);
    ix.check_invariants();
}

fn delivered(ix: &QueryIndex, seqs: &[u64]) {
    ix.mark(Delivery::Delivered, &mut seqs.iter().copied());
}

fn dead_lettered(ix: &QueryIndex, seqs: &[u64]) {
    ix.mark(Delivery::DeadLettered, &mut seqs.iter().copied());
}

#[test]
fn delivery_moves_from_pending_to_delivered_or_dead_lettered() {
    let ix = index();
    let r = run("r", "t", None, "succeeded", T0, Some(T1));
    let c = run("c", "t", Some("r"), "succeeded", T0, Some(T1));
    ix.ingest_json(1, &[r, c]);
    delivered(&ix, &[1]);
    assert_eq!(ix.get("t").unwrap().summary.delivery, Delivery::Pending);
    delivered(&ix, &[2]);
    assert_eq!(ix.get("t").unwrap().summary.delivery, Delivery::Delivered);
    ix.ingest_json(3, &[run("u", "t", Some("r"), "failed", T0, Some(T1))]);
    assert_eq!(ix.get("t").unwrap().summary.delivery, Delivery::Pending);
    dead_lettered(&ix, &[3]);
    assert_eq!(
        ix.get("t").unwrap().summary.delivery,
        Delivery::DeadLettered
    );
    delivered(&ix, &[3]);
    assert_eq!(
        ix.get("t").unwrap().summary.delivery,
        Delivery::DeadLettered
    );
    ix.check_invariants();
}

#[test]
fn a_newer_version_of_a_run_is_pending_until_its_own_delivery() {
    let ix = index();
    ix.ingest_json(1, &[run("r", "t", None, "succeeded", T0, None)]);
    ix.ingest_json(2, &[run("r", "t", None, "succeeded", T0, Some(T1))]);
    // The first version's delivery does not count for the second.
    delivered(&ix, &[1]);
    let s = ix.get("t").unwrap().summary;
    assert_eq!((s.runs, s.delivery), (1, Delivery::Pending));
    assert_eq!(s.ended_at.as_deref(), Some(T1));
    delivered(&ix, &[2]);
    assert_eq!(ix.get("t").unwrap().summary.delivery, Delivery::Delivered);
    ix.check_invariants();
}

#[test]
fn a_delivery_reported_before_indexing_is_applied() {
    let ix = index();
    delivered(&ix, &[5]);
    ix.ingest_json(5, &[run("r", "t", None, "succeeded", T0, Some(T1))]);
    assert_eq!(ix.get("t").unwrap().summary.delivery, Delivery::Delivered);
    ix.check_invariants();
}

#[test]
fn a_dead_letter_after_a_restart_settled_the_run_wins() {
    let ix = index();
    ix.ingest_json(4, &[run("r", "t", None, "failed", T0, Some(T1))]);
    ix.settle_through(4);
    assert_eq!(ix.get("t").unwrap().summary.delivery, Delivery::Delivered);
    dead_lettered(&ix, &[4]);
    assert_eq!(
        ix.get("t").unwrap().summary.delivery,
        Delivery::DeadLettered
    );
}

#[test]
fn validated_and_parsed_runs_index_alike() {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/workflow-node-failure.json"
    ))
    .unwrap();
    let batch = crate::model::parse_batch(&body).unwrap();
    let jsons: Vec<Bytes> = batch
        .runs
        .iter()
        .map(|r| Bytes::copy_from_slice(r.json.as_bytes()))
        .collect();
    let (a, b) = (index(), index());
    let validated: Vec<IndexedRun<'_>> = batch
        .runs
        .iter()
        .zip(&jsons)
        .zip(1u64..)
        .map(|((raw, json), seq)| IndexedRun::from_validated(seq, json.clone(), raw))
        .collect();
    a.ingest(&validated);
    b.ingest_json(1, &jsons);
    let all = |ix: &QueryIndex| ix.list(&Filter::default(), Sort::default(), 1, 50);
    assert_eq!(all(&a), all(&b));
    assert_eq!(all(&a).0[0].status.as_deref(), Some("failed"));
    a.check_invariants();
}

#[test]
fn a_large_trace_replaces_runs_by_id() {
    let ix = index();
    let big = |end| -> Vec<Bytes> {
        (0..100)
            .map(|i| {
                let parent = (i > 0).then_some("r0");
                run(&format!("r{i}"), "big", parent, "succeeded", T0, end)
            })
            .collect()
    };
    let (runs, again) = (big(None), big(Some(T2)));
    ix.ingest_json(1, &runs);
    ix.ingest_json(101, &again);
    let d = ix.get("big").unwrap();
    assert_eq!(d.summary.runs, 100);
    assert_eq!(d.summary.ended_at.as_deref(), Some(T2));
    assert_eq!(
        ix.bytes(),
        again.iter().map(|r| r.len() as u64).sum::<u64>()
    );
    delivered(&ix, &(1..=200).collect::<Vec<_>>());
    assert_eq!(ix.get("big").unwrap().summary.delivery, Delivery::Delivered);
    ix.check_invariants();
}

#[test]
fn eviction_by_bytes_drops_the_least_recently_updated_traces() {
    let one = run("r", "t0", None, "succeeded", T0, Some(T1)).len() as u64;
    let ix = QueryIndex::unregistered(one * 3 + 10, Duration::from_secs(3600));
    for i in 0..5 {
        ix.ingest_json(
            0,
            &[run("r", &format!("t{i}"), None, "succeeded", T0, Some(T1))],
        );
    }
    assert_eq!(ix.len(), 3);
    assert!(ix.get("t0").is_none() && ix.get("t1").is_none());
    assert!(ix.get("t2").is_some() && ix.get("t4").is_some());
    assert!(ix.bytes() <= one * 3 + 10);
    assert_eq!(
        ix.metrics
            .evictions
            .get_or_create(&metrics::EvictionLabels { reason: "bytes" })
            .get(),
        2
    );
    assert_eq!(ix.metrics.traces.get(), 3);
}

#[test]
fn eviction_by_age() {
    let ix = QueryIndex::unregistered(1 << 30, Duration::from_secs(60));
    let now = Instant::now();
    let (old, new) = (
        run("r", "old", None, "succeeded", T0, Some(T1)),
        run("r", "new", None, "succeeded", T0, Some(T1)),
    );
    ix.ingest_at(&[IndexedRun::parse(1, &old).unwrap()], now, None);
    ix.ingest_at(
        &[IndexedRun::parse(2, &new).unwrap()],
        now + Duration::from_secs(50),
        None,
    );
    let later = now + Duration::from_secs(70);
    let (all, total) = ix.list_at(&Filter::default(), Sort::default(), 1, 50, later);
    assert_eq!(total, 1);
    assert_eq!(all[0].id, "new");
    assert!(ix.get_at("old", later).is_none());
    assert_eq!(
        ix.metrics
            .evictions
            .get_or_create(&metrics::EvictionLabels { reason: "age" })
            .get(),
        1
    );
}

fn starts(
    ix: &QueryIndex,
    filter: &Filter,
    sort: Sort,
    page: usize,
    size: usize,
) -> (Vec<String>, usize) {
    let (items, total) = ix.list(filter, sort, page, size);
    (items.into_iter().map(|s| s.id).collect(), total)
}

#[test]
fn filters_sort_and_pagination() {
    let ix = index();
    for i in 0..7 {
        let status = if i % 2 == 0 { "succeeded" } else { "failed" };
        let start = format!("2026-01-01T00:00:0{i}Z");
        ix.ingest_json(0, &[run("r", &format!("t{i}"), None, status, &start, None)]);
    }
    let all = Filter::default();
    assert_eq!(
        starts(&ix, &all, Sort::StartedAtDesc, 1, 3),
        (vec!["t6".into(), "t5".into(), "t4".into()], 7)
    );
    assert_eq!(
        starts(&ix, &all, Sort::StartedAtDesc, 3, 3),
        (vec!["t0".into()], 7)
    );
    assert_eq!(starts(&ix, &all, Sort::StartedAtDesc, 4, 3), (vec![], 7));
    assert_eq!(
        starts(&ix, &all, Sort::StartedAtAsc, 1, 2),
        (vec!["t0".into(), "t1".into()], 7)
    );
    let failed = Filter {
        statuses: vec!["failed".into()],
        ..Filter::default()
    };
    assert_eq!(
        starts(&ix, &failed, Sort::StartedAtAsc, 1, 50).0,
        vec!["t1", "t3", "t5"]
    );
    let both = Filter {
        statuses: vec!["failed".into(), "succeeded".into()],
        ..Filter::default()
    };
    assert_eq!(starts(&ix, &both, Sort::StartedAtAsc, 1, 50).1, 7);
    let range = Filter {
        started_gte: parse_ns("2026-01-01T00:00:02Z"),
        started_lte: parse_ns("2026-01-01T00:00:04Z"),
        ..Filter::default()
    };
    assert_eq!(
        starts(&ix, &range, Sort::StartedAtAsc, 1, 50).0,
        vec!["t2", "t3", "t4"]
    );
}

fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
    q.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn parameters_are_validated_and_named() {
    for (name, value) in [
        ("status", "done"),
        ("started_at:gte", "yesterday"),
        ("started_at:lte", "2026-13-01T00:00:00Z"),
        ("page", "0"),
        ("page", "x"),
        ("page_size", "0"),
        ("page_size", "501"),
        ("sort", "name"),
    ] {
        let e = parse_params(&pairs(&[(name, value)])).unwrap_err();
        assert_eq!(e.status.as_u16(), 400, "{name}={value}");
        assert!(e.details.contains_key(name), "{name}={value}: {e:?}");
        assert!(e.message.contains(name));
    }
    let p = parse_params(&pairs(&[
        ("status", "failed,canceled"),
        ("page", "2"),
        ("page_size", "500"),
        ("sort", "started_at"),
        ("other", "ignored"),
    ]))
    .unwrap();
    assert_eq!(p.filter.statuses, vec!["failed", "canceled"]);
    assert_eq!(
        (p.page, p.page_size, p.sort),
        (2, Some(500), Sort::StartedAtAsc)
    );
}

#[test]
fn repeated_status_values_count_once() {
    let p = parse_params(&pairs(&[
        ("status", "failed,failed, succeeded"),
        ("status", "succeeded,failed"),
    ]))
    .unwrap();
    assert_eq!(p.filter.statuses, vec!["failed", "succeeded"]);
}

/// The export as the handler wrote it before it streamed: every matching trace's detail,
/// serialised at once.
fn export_in_one_piece(ix: &QueryIndex, filter: &Filter, page: usize, size: usize) -> Vec<u8> {
    let (summaries, _) = ix.list(filter, Sort::default(), page, size);
    let details: Vec<TraceDetail> = summaries.iter().filter_map(|s| ix.get(&s.id)).collect();
    let out: Vec<DetailOut<'_>> = details.iter().map(DetailOut::of).collect();
    serde_json::to_vec(&out).unwrap()
}

/// The streamed export's chunks.
fn export_chunks(ix: &Arc<QueryIndex>, filter: &Filter, page: usize, size: usize) -> Vec<Bytes> {
    let traces = ix.select(filter, Sort::default(), page, size);
    ExportBody::new(Arc::clone(ix), traces).collect()
}

/// A trace of `n` runs under one root, each run about `pad` bytes of input larger.
fn wide_trace(trace: &str, n: usize, start: &str, pad: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let parent = (i > 0).then_some("r0");
            let mut v: serde_json::Value = serde_json::from_slice(&run(
                &format!("r{i}"),
                trace,
                parent,
                "succeeded",
                start,
                Some(T2),
            ))
            .unwrap();
            v["input"] = json!("x".repeat(pad));
            Bytes::from(v.to_string())
        })
        .collect()
}

#[test]
fn the_streamed_export_is_every_traces_detail_byte_for_byte_in_bounded_chunks() {
    let ix = Arc::new(index());
    assert_eq!(
        export_chunks(&ix, &Filter::default(), 1, usize::MAX).concat(),
        b"[]"
    );
    // Many pages and chunks; a root without source or session (found on a later run); a
    // failure; a run whose JSON has surrounding whitespace.
    ix.ingest_json(1, &wide_trace("wide", 3000, T1, 200));
    let bare = Bytes::from(format!(
        r#"{{"id":"r","trace_id":"bare","parent_run_id":null,"name":"b","status":"succeeded","start_time":"{T0}"}}"#
    ));
    let mut late: Vec<Bytes> = (0..300)
        .map(|i| run(&format!("c{i}"), "bare", Some("r"), "succeeded", T0, None))
        .collect();
    late.insert(0, bare);
    ix.ingest_json(5000, &late);
    ix.ingest_json(0, &[run("f", "failed", None, "failed", T2, Some(T2))]);
    let mut padded = b" ".to_vec();
    padded.extend_from_slice(&run("w", "ws", None, "succeeded", T0, None));
    padded.push(b' ');
    ix.ingest_json(0, &[Bytes::from(padded)]);
    let failed = Filter {
        statuses: vec!["failed".into()],
        ..Filter::default()
    };
    for (filter, page, size) in [
        (Filter::default(), 1, usize::MAX),
        (failed, 1, usize::MAX),
        (Filter::default(), 2, 2),
        (Filter::default(), 9, 2),
    ] {
        let chunks = export_chunks(&ix, &filter, page, size);
        assert_eq!(
            chunks.concat(),
            export_in_one_piece(&ix, &filter, page, size),
            "{filter:?} page {page} of {size}"
        );
        for c in &chunks {
            assert!(
                c.len() <= EXPORT_CHUNK_BYTES + RUN_PAGE_BYTES + 1024,
                "{}",
                c.len()
            );
        }
    }
    assert!(export_chunks(&ix, &Filter::default(), 1, usize::MAX).len() > 10);
    let all: serde_json::Value =
        serde_json::from_slice(&export_chunks(&ix, &Filter::default(), 1, 50).concat()).unwrap();
    let bare = all
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "bare")
        .unwrap();
    assert_eq!(
        (
            bare["source_id"].as_str(),
            bare["runs"].as_array().map(Vec::len)
        ),
        (Some("src-bare"), Some(301))
    );
}

#[test]
fn a_trace_evicted_while_it_is_exported_ends_early_and_the_export_stays_json() {
    let wide = wide_trace("wide", 2000, T2, 200);
    let wide_bytes: u64 = wide.iter().map(|r| r.len() as u64).sum();
    let ix = Arc::new(QueryIndex::unregistered(
        wide_bytes + 4096,
        Duration::from_secs(3600),
    ));
    ix.ingest_json(1, &wide);
    ix.ingest_json(0, &[run("r", "small", None, "succeeded", T0, Some(T1))]);
    let traces = ix.select(&Filter::default(), Sort::default(), 1, usize::MAX);
    let mut body = ExportBody::new(Arc::clone(&ix), traces);
    let mut out = body.next().unwrap().to_vec();
    // The least recently updated trace, the one being written, is evicted to make room.
    ix.ingest_json(0, &wide_trace("newer", 30, T0, 200));
    assert!(ix.get("wide").is_none());
    for chunk in body {
        out.extend_from_slice(&chunk);
    }
    let all: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let all = all.as_array().unwrap();
    assert_eq!(
        (all[0]["id"].as_str(), all[1]["id"].as_str()),
        (Some("wide"), Some("small"))
    );
    let written = all[0]["runs"].as_array().unwrap().len();
    assert!(written > 0 && written < 2000, "{written}");
    assert_eq!(all[1]["runs"].as_array().unwrap().len(), 1);
}

#[test]
fn the_passthrough_url_never_leaves_the_configured_origin() {
    let base = reqwest::Url::parse("https://api.example.com").unwrap();
    // The Dynamiq API has no `/api` prefix: `/api/v1/me` is `<base>/v1/me`.
    let ok = upstream_url(&base, "/api/v1/traces", Some("a=1&b=%20x")).unwrap();
    assert_eq!(ok.as_str(), "https://api.example.com/v1/traces?a=1&b=%20x");
    assert_eq!(
        upstream_url(&base, "/api/v1/me", None).unwrap().as_str(),
        "https://api.example.com/v1/me"
    );
    // The upstream URL's own path stays a prefix, with or without a trailing slash.
    for prefixed in ["http://127.0.0.1:9000/base/", "http://127.0.0.1:9000/base"] {
        let prefixed = reqwest::Url::parse(prefixed).unwrap();
        assert_eq!(
            upstream_url(&prefixed, "/api/x", None).unwrap().as_str(),
            "http://127.0.0.1:9000/base/x"
        );
        assert!(upstream_url(&prefixed, "/api/../x", None).is_err());
    }
    for bad in [
        "//evil.com",
        "/api//evil.com",
        "/api/@evil.com",
        "/api/..%2f..",
        "/api/%2e%2e/x",
        "/api/../x",
        "/api/./x",
        "/api/http://evil.com",
        "/api/x%2F..%2Fy",
        "/api\\evil.com",
        "/api/%40evil.com",
        "/other",
    ] {
        assert!(upstream_url(&base, bad, None).is_err(), "{bad}");
    }
}

mod invariants {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Runs (trace, run, has parent, failed, start, end) appended as one batch; start and
        /// end pick from [`TIMES`] (end 0: none).
        Ingest(Vec<(u8, u8, bool, bool, usize, usize)>),
        Deliver(Vec<u8>),
        DeadLetter(Vec<u8>),
        Settle(u8),
        Drop(u8, u8),
    }

    const TIMES: [&str; 3] = [T0, T1, T2];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop::collection::vec(
                (0u8..6, 0u8..20, any::<bool>(), any::<bool>(), 0..TIMES.len(), 0..TIMES.len()),
                1..8,
            )
            .prop_map(Op::Ingest),
            2 => prop::collection::vec(0u8..60, 1..8).prop_map(Op::Deliver),
            1 => prop::collection::vec(0u8..60, 1..3).prop_map(Op::DeadLetter),
            1 => (0u8..60).prop_map(Op::Settle),
            1 => (0u8..60, 0u8..8).prop_map(|(a, n)| Op::Drop(a, a.saturating_add(n))),
        ]
    }

    proptest! {
        #[test]
        fn any_sequence_of_updates_keeps_the_index_consistent(
            ops in prop::collection::vec(op(), 1..40),
            max_bytes in 300u64..5000,
        ) {
            let ix = QueryIndex::unregistered(max_bytes, Duration::from_secs(3600));
            let mut next_seq = 1u64;
            for op in ops {
                match op {
                    Op::Ingest(runs) => {
                        let runs: Vec<Bytes> = runs
                            .iter()
                            .map(|&(t, r, child, failed, start, end)| {
                                run(
                                    &format!("r{r}"),
                                    &format!("t{t}"),
                                    child.then_some("r0"),
                                    if failed { "failed" } else { "succeeded" },
                                    TIMES[start],
                                    (end > 0).then(|| TIMES[end]),
                                )
                            })
                            .collect();
                        ix.ingest_json(next_seq, &runs);
                        next_seq += runs.len() as u64;
                    }
                    Op::Deliver(seqs) => {
                        ix.mark(Delivery::Delivered, &mut seqs.iter().map(|&s| u64::from(s)));
                    }
                    Op::DeadLetter(seqs) => {
                        ix.mark(Delivery::DeadLettered, &mut seqs.iter().map(|&s| u64::from(s)));
                    }
                    Op::Settle(through) => ix.settle_through(u64::from(through)),
                    Op::Drop(a, b) => ix.mark_dropped(u64::from(a), u64::from(b)),
                }
                ix.check_invariants();
                let (page, total) = ix.list(&Filter::default(), Sort::default(), 1, 500);
                prop_assert_eq!(page.len(), total);
                prop_assert_eq!(total, ix.len());
                for s in page {
                    let d = ix.get(&s.id).unwrap();
                    prop_assert_eq!(d.runs.len(), s.runs);
                    prop_assert_eq!(d.summary, s);
                }
            }
            // A restore (one ingest per trace) rebuilds the same index.
            let restored = QueryIndex::unregistered(max_bytes, Duration::from_secs(3600));
            restored.restore(ix.saved());
            restored.check_invariants();
            let all = |ix: &QueryIndex| ix.list(&Filter::default(), Sort::default(), 1, 500);
            prop_assert_eq!(all(&restored), all(&ix));
        }
    }
}

#[test]
fn runs_dropped_by_the_buffer_are_dropped_unless_already_resolved() {
    let ix = index();
    ix.ingest_json(1, &[run("a", "t1", None, "succeeded", T0, Some(T1))]);
    ix.ingest_json(2, &[run("b", "t2", None, "succeeded", T0, Some(T1))]);
    ix.ingest_json(3, &[run("c", "t3", None, "succeeded", T0, Some(T1))]);
    delivered(&ix, &[1]);
    ix.mark_dropped(1, 2);
    let state = |t| ix.get(t).unwrap().summary.delivery;
    assert_eq!(state("t1"), Delivery::Delivered);
    assert_eq!(state("t2"), Delivery::Dropped);
    assert_eq!(state("t3"), Delivery::Pending);
    ix.check_invariants();
}
