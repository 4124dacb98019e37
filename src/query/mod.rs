//! The local trace index and query API (CONTRACT §6).
//!
//! Owns: an in-memory index of the traces this sidecar received ([`QueryIndex`]), fed by the
//! receivers after each successful buffer append and told by the forwarder when runs were
//! delivered (2xx) or dead-lettered; the read-only endpoints `GET /v1/traces`,
//! `GET /v1/traces/{trace_id}`, `GET /v1/traces/export`, and the `GET /api/*` passthrough to
//! `query.upstream_url` (see [`api`]).
//!
//! Guarantees:
//! - Per trace it keeps the latest version of each run (by run id) as the exact JSON bytes
//!   received, and a summary derived from them (root name and status, time range, source and
//!   session, run count, delivery state).
//! - Bounded: traces not updated within `query.retention` are dropped, and the run bytes kept
//!   never exceed `query.max_bytes` (least recently updated traces are evicted first).
//! - Cheap on the ingest path: one borrowed parse of each run's top-level fields and a short
//!   critical section; the index never fails or slows an append beyond that.
//! - The index lives in memory only: it starts empty after a restart (runs still in the buffer
//!   are not re-indexed). Persisting it is left for later.
//! - Never authoritative for delivery: the buffer and the forwarder are; a delivery update for a
//!   run the index does not (or no longer) hold is remembered briefly, then dropped.

pub mod api;
mod metrics;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::batch::RunFields;
use bytes::Bytes;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::value::RawValue;

pub use metrics::QueryMetrics;

use crate::convert::time::parse_ns;
use crate::model::envelope;

/// How many delivery updates for runs not (yet) indexed are remembered.
const MAX_EARLY_UPDATES: usize = 4096;

/// Where a run (or a trace) is in delivery to the Dynamiq collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Buffered, not yet accepted by the collector.
    Pending,
    /// Accepted by the collector (2xx), or an identical copy was.
    Delivered,
    /// Moved to the dead-letter store.
    DeadLettered,
}

/// The forwarder's report of what became of runs (see [`crate::forward::Forwarder::with_delivery_observer`]).
pub trait DeliveryObserver: Send + Sync {
    /// `runs` (their JSON bytes) reached `outcome` ([`Delivery::Delivered`] or
    /// [`Delivery::DeadLettered`]).
    fn runs_resolved(&self, outcome: Delivery, runs: &mut dyn Iterator<Item = &[u8]>);
}

/// A JSON string value, or `None` for anything else (null, numbers, objects).
fn string_of<'a>(raw: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
    let raw = raw?;
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<Cow<'a, str>>(raw.get()).ok()
}

/// A time field: its text as received and its instant in ns since the epoch.
fn time_of(raw: Option<&RawValue>) -> Option<(u64, String)> {
    let text = string_of(raw)?;
    let ns = parse_ns(&text)?;
    Some((ns, text.into_owned()))
}

/// The summary fields of a run, read with the ingest validator's early-stopping reader (the
/// runs were validated, or made by the converter, before they reach the index): only the bytes
/// up to the last needed field are scanned, not the run's large input/output/metadata.
fn parse_fields(run: &[u8]) -> Option<RunFields<'_>> {
    let text = std::str::from_utf8(run).ok()?;
    crate::model::batch::read_fields(text).ok()
}

/// One run as indexed.
#[derive(Debug, Clone)]
struct RunEntry {
    id: String,
    json: Bytes,
    is_root: bool,
    name: Option<String>,
    status: Option<String>,
    start: Option<(u64, String)>,
    end: Option<(u64, String)>,
    source_id: Option<String>,
    session_id: Option<String>,
    delivery: Delivery,
}

#[derive(Debug)]
struct Trace {
    id: String,
    runs: Vec<RunEntry>,
    by_id: HashMap<String, usize>,
    bytes: u64,
    /// Key in [`Inner::order`].
    stamp: u64,
    updated: Instant,
}

/// A trace's summary as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceSummary {
    /// Trace id.
    pub id: String,
    /// The root run's name.
    pub name: Option<String>,
    /// The root run's `source_id` (else the first run's that has one).
    pub source_id: Option<String>,
    /// The root run's `session_id` (else the first run's that has one).
    pub session_id: Option<String>,
    /// Earliest `start_time` as received.
    pub started_at: Option<String>,
    /// Latest `end_time` as received; `null` while any run has none.
    pub ended_at: Option<String>,
    /// The root's status; `failed` if the root has none and any run failed.
    pub status: Option<String>,
    /// Number of runs (distinct run ids).
    pub runs: usize,
    /// `dead_lettered` if any run was, else `delivered` if every run was, else `pending`.
    pub delivery: Delivery,
    /// For sorting and filtering: `started_at` in ns since the epoch.
    #[serde(skip)]
    pub started_ns: Option<u64>,
    /// For stable ordering among equal start times.
    #[serde(skip)]
    pub stamp: u64,
}

/// A trace with its runs (JSON bytes, as received, in the order first received).
#[derive(Debug, Clone)]
pub struct TraceDetail {
    /// The summary.
    pub summary: TraceSummary,
    /// Each run's latest JSON bytes.
    pub runs: Vec<Bytes>,
}

impl Trace {
    fn summary(&self) -> TraceSummary {
        let root = self
            .runs
            .iter()
            .find(|r| r.is_root)
            .or_else(|| self.runs.first());
        let status = root.and_then(|r| r.status.clone()).or_else(|| {
            self.runs
                .iter()
                .any(|r| r.status.as_deref() == Some("failed"))
                .then(|| "failed".to_string())
        });
        let source_id = root
            .and_then(|r| r.source_id.as_ref())
            .or_else(|| self.runs.iter().find_map(|r| r.source_id.as_ref()))
            .cloned();
        let session_id = root
            .and_then(|r| r.session_id.as_ref())
            .or_else(|| self.runs.iter().find_map(|r| r.session_id.as_ref()))
            .cloned();
        let start = self
            .runs
            .iter()
            .filter_map(|r| r.start.as_ref())
            .min_by_key(|(ns, _)| *ns);
        let end = if self.runs.iter().all(|r| r.end.is_some()) {
            self.runs
                .iter()
                .filter_map(|r| r.end.as_ref())
                .max_by_key(|(ns, _)| *ns)
        } else {
            None
        };
        let delivery = if self
            .runs
            .iter()
            .any(|r| r.delivery == Delivery::DeadLettered)
        {
            Delivery::DeadLettered
        } else if !self.runs.is_empty()
            && self.runs.iter().all(|r| r.delivery == Delivery::Delivered)
        {
            Delivery::Delivered
        } else {
            Delivery::Pending
        };
        TraceSummary {
            id: self.id.clone(),
            name: root.and_then(|r| r.name.clone()),
            source_id,
            session_id,
            started_at: start.map(|(_, s)| s.clone()),
            ended_at: end.map(|(_, s)| s.clone()),
            status,
            runs: self.runs.len(),
            delivery,
            started_ns: start.map(|(ns, _)| *ns),
            stamp: self.stamp,
        }
    }
}

/// Sort order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Newest `started_at` first (traces without one last).
    #[default]
    StartedAtDesc,
    /// Oldest `started_at` first (traces without one last).
    StartedAtAsc,
}

/// Filters of a listing.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Any of these statuses (empty = any).
    pub statuses: Vec<String>,
    /// `started_at >=` (ns).
    pub started_gte: Option<u64>,
    /// `started_at <=` (ns).
    pub started_lte: Option<u64>,
}

impl Filter {
    fn matches(&self, s: &TraceSummary) -> bool {
        if !self.statuses.is_empty()
            && !s
                .status
                .as_ref()
                .is_some_and(|st| self.statuses.iter().any(|f| f == st))
        {
            return false;
        }
        if self.started_gte.is_some() || self.started_lte.is_some() {
            let Some(ns) = s.started_ns else { return false };
            if self.started_gte.is_some_and(|g| ns < g) || self.started_lte.is_some_and(|l| ns > l)
            {
                return false;
            }
        }
        true
    }
}

#[derive(Debug, Default)]
struct Inner {
    traces: HashMap<String, Trace>,
    /// Update stamp → trace id; the first entry is the least recently updated trace.
    order: BTreeMap<u64, String>,
    next_stamp: u64,
    bytes: u64,
    /// Delivery updates for runs not indexed yet (the forwarder can, rarely, resolve a run
    /// before the receiver indexed it): (trace id, run id) → outcome.
    early: HashMap<(String, String), Delivery>,
    early_order: VecDeque<(String, String)>,
}

/// The in-memory trace index. Shared as `Arc<QueryIndex>` by the receivers, the forwarder and
/// the API.
pub struct QueryIndex {
    inner: Mutex<Inner>,
    max_bytes: u64,
    retention: Duration,
    metrics: QueryMetrics,
}

impl std::fmt::Debug for QueryIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryIndex")
            .field("max_bytes", &self.max_bytes)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl QueryIndex {
    /// An empty index keeping at most `max_bytes` of run JSON for at most `retention`.
    pub fn new(max_bytes: u64, retention: Duration, registry: &mut Registry) -> Self {
        Self::with_metrics(max_bytes, retention, QueryMetrics::register(registry))
    }

    fn with_metrics(max_bytes: u64, retention: Duration, metrics: QueryMetrics) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            retention,
            metrics,
        }
    }

    /// An index with unregistered metrics (tests, tools).
    pub fn unregistered(max_bytes: u64, retention: Duration) -> Self {
        Self::with_metrics(max_bytes, retention, QueryMetrics::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the index inconsistent in a way that
        // matters more than losing it; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Indexes buffered records (envelopes, see [`envelope`]) that were just appended.
    pub fn ingest_envelopes(&self, payloads: &[Bytes]) {
        self.ingest_envelopes_at(payloads, Instant::now());
    }

    fn ingest_envelopes_at(&self, payloads: &[Bytes], now: Instant) {
        let runs = payloads
            .iter()
            .filter_map(|p| envelope::decode(p).ok().map(|e| e.run));
        self.ingest_runs_at(runs, now);
    }

    /// Indexes run JSON bytes.
    pub fn ingest_runs(&self, runs: impl IntoIterator<Item = Bytes>) {
        self.ingest_runs_at(runs, Instant::now());
    }

    fn ingest_runs_at(&self, runs: impl IntoIterator<Item = Bytes>, now: Instant) {
        // Parse outside the lock.
        let mut parsed: Vec<(String, RunEntry)> = Vec::new();
        for json in runs {
            let Some(f) = parse_fields(&json) else {
                continue;
            };
            let (Some(trace_id), Some(id)) = (string_of(f.trace_id), string_of(f.id)) else {
                continue;
            };
            let entry = RunEntry {
                id: id.into_owned(),
                is_root: f.parent_run_id.is_none_or(|p| p.get() == "null"),
                name: string_of(f.name).map(Cow::into_owned),
                status: string_of(f.status).map(Cow::into_owned),
                start: time_of(f.start_time),
                end: time_of(f.end_time),
                source_id: string_of(f.source_id).map(Cow::into_owned),
                session_id: string_of(f.session_id).map(Cow::into_owned),
                delivery: Delivery::Pending,
                json: json.clone(),
            };
            parsed.push((trace_id.into_owned(), entry));
        }
        if parsed.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for (trace_id, mut entry) in parsed {
            if !inner.early.is_empty()
                && let Some(d) = inner.early.remove(&(trace_id.clone(), entry.id.clone()))
            {
                entry.delivery = d;
            }
            let stamp = inner.next_stamp;
            inner.next_stamp += 1;
            let added = entry.json.len() as u64;
            let Inner {
                traces,
                order,
                bytes,
                ..
            } = &mut *inner;
            let trace = traces.entry(trace_id.clone()).or_insert_with(|| Trace {
                id: trace_id.clone(),
                runs: Vec::new(),
                by_id: HashMap::new(),
                bytes: 0,
                stamp,
                updated: now,
            });
            order.remove(&trace.stamp);
            trace.stamp = stamp;
            trace.updated = now;
            order.insert(stamp, trace_id);
            match trace.by_id.get(&entry.id) {
                Some(&i) => {
                    let old = std::mem::replace(&mut trace.runs[i], entry);
                    trace.bytes -= old.json.len() as u64;
                    *bytes -= old.json.len() as u64;
                }
                None => {
                    trace.by_id.insert(entry.id.clone(), trace.runs.len());
                    trace.runs.push(entry);
                }
            }
            trace.bytes += added;
            *bytes += added;
        }
        self.prune_locked(&mut inner, now);
    }

    /// Drops traces past retention, then the least recently updated ones until the bytes fit.
    fn prune_locked(&self, inner: &mut Inner, now: Instant) {
        let mut by_age = 0u64;
        let mut by_size = 0u64;
        while let Some((&stamp, id)) = inner.order.first_key_value() {
            let expired = inner
                .traces
                .get(id)
                .is_none_or(|t| now.saturating_duration_since(t.updated) > self.retention);
            let over = inner.bytes > self.max_bytes;
            if !expired && !over {
                break;
            }
            let id = id.clone();
            inner.order.remove(&stamp);
            if let Some(t) = inner.traces.remove(&id) {
                inner.bytes -= t.bytes;
            }
            if expired {
                by_age += 1;
            } else {
                by_size += 1;
            }
        }
        if by_age > 0 {
            self.metrics.evicted("age", by_age);
        }
        if by_size > 0 {
            self.metrics.evicted("bytes", by_size);
        }
        self.metrics
            .traces
            .set(i64::try_from(inner.traces.len()).unwrap_or(i64::MAX));
        self.metrics
            .bytes
            .set(i64::try_from(inner.bytes).unwrap_or(i64::MAX));
    }

    /// Records that runs were delivered or dead-lettered.
    pub fn mark(&self, outcome: Delivery, runs: &mut dyn Iterator<Item = &[u8]>) {
        let mut keys: Vec<(String, String)> = Vec::new();
        for run in runs {
            let Some(f) = parse_fields(run) else { continue };
            if let (Some(t), Some(r)) = (string_of(f.trace_id), string_of(f.id)) {
                keys.push((t.into_owned(), r.into_owned()));
            }
        }
        if keys.is_empty() {
            return;
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        for key in keys {
            let mut run = None;
            if let Some(t) = inner.traces.get_mut(&key.0)
                && let Some(&i) = t.by_id.get(&key.1)
            {
                run = t.runs.get_mut(i);
            }
            match run {
                // A dead-lettered run stays so even if a copy is delivered later.
                Some(run) => {
                    if run.delivery != Delivery::DeadLettered || outcome == Delivery::DeadLettered {
                        run.delivery = outcome;
                    }
                }
                None => {
                    if inner.early.insert(key.clone(), outcome).is_none() {
                        inner.early_order.push_back(key);
                        while inner.early_order.len() > MAX_EARLY_UPDATES {
                            if let Some(old) = inner.early_order.pop_front() {
                                inner.early.remove(&old);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Convenience: [`mark`](Self::mark) with [`Delivery::Delivered`].
    pub fn mark_delivered(&self, runs: &[&[u8]]) {
        self.mark(Delivery::Delivered, &mut runs.iter().copied());
    }

    /// Convenience: [`mark`](Self::mark) with [`Delivery::DeadLettered`].
    pub fn mark_dead_lettered(&self, runs: &[&[u8]]) {
        self.mark(Delivery::DeadLettered, &mut runs.iter().copied());
    }

    /// Summaries matching `filter`, sorted, with the total before paging. `page` counts from 1.
    pub fn list(
        &self,
        filter: &Filter,
        sort: Sort,
        page: usize,
        page_size: usize,
    ) -> (Vec<TraceSummary>, usize) {
        self.list_at(filter, sort, page, page_size, Instant::now())
    }

    fn list_at(
        &self,
        filter: &Filter,
        sort: Sort,
        page: usize,
        page_size: usize,
        now: Instant,
    ) -> (Vec<TraceSummary>, usize) {
        let mut all: Vec<TraceSummary> = {
            let mut inner = self.lock();
            self.prune_locked(&mut inner, now);
            inner
                .traces
                .values()
                .map(Trace::summary)
                .filter(|s| filter.matches(s))
                .collect()
        };
        all.sort_by(|a, b| {
            // Traces without a start time go last either way; ties: most recently updated first.
            let by_start = match (a.started_ns, b.started_ns) {
                (Some(x), Some(y)) => match sort {
                    Sort::StartedAtDesc => y.cmp(&x),
                    Sort::StartedAtAsc => x.cmp(&y),
                },
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            by_start.then(b.stamp.cmp(&a.stamp))
        });
        let total = all.len();
        let start = page.saturating_sub(1).saturating_mul(page_size);
        let items = all.into_iter().skip(start).take(page_size).collect();
        (items, total)
    }

    /// One trace with its runs.
    pub fn get(&self, trace_id: &str) -> Option<TraceDetail> {
        self.get_at(trace_id, Instant::now())
    }

    fn get_at(&self, trace_id: &str, now: Instant) -> Option<TraceDetail> {
        let mut inner = self.lock();
        self.prune_locked(&mut inner, now);
        let trace = inner.traces.get(trace_id)?;
        Some(TraceDetail {
            summary: trace.summary(),
            runs: trace.runs.iter().map(|r| r.json.clone()).collect(),
        })
    }

    /// Number of traces held.
    pub fn len(&self) -> usize {
        self.lock().traces.len()
    }

    /// True when no trace is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Run bytes held.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

impl DeliveryObserver for QueryIndex {
    fn runs_resolved(&self, outcome: Delivery, runs: &mut dyn Iterator<Item = &[u8]>) {
        self.mark(outcome, runs);
    }
}
