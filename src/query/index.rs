//! The in-memory trace index: per trace, the latest version of each run (exact JSON bytes)
//! plus what filtering and sorting need, bounded by `query.retention` and `query.max_bytes`.
//!
//! Cost on the ingest path (the receivers call [`QueryIndex::ingest`] after each durable
//! append): no JSON is parsed for Dynamiq batches (the validator's fields are handed over) nor
//! for runs converted from foreign spans (the converter's are), a run id is kept as a 128-bit
//! hash, and a trace's id string is allocated once per trace.
//! Delivery updates arrive by buffer sequence number, so the forwarder's reports parse nothing.
//!
//! Invariants (checked by the unit tests):
//! - `bytes` is Σ over traces of Σ run JSON lengths, and never exceeds `max_bytes` after an
//!   ingest (least recently updated traces are evicted first).
//! - `by_seq` holds exactly the runs still `Pending`; each points at the run that carries that
//!   sequence number (a newer version of a run replaces the old one's entry).
//! - `order` has one entry per trace, keyed by its last update stamp.
//! - Each trace's aggregate (what its summary, the filters and the sort read) is what a scan of
//!   its runs computes; it is kept up to date run by run, so ingesting and restoring a trace of
//!   n runs costs O(n), not O(n²).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::fast::RandomState as FastHash;
use prometheus_client::registry::Registry;

use super::summary::text_of;
use super::summary::{Filter, Sort, TextField, TraceDetail, TraceSummary, parse_fields};
use super::{Delivery, QueryMetrics};
use crate::model::batch::RunStatus;
use crate::model::envelope;
use crate::model::indexed::{IndexedRun, string_of};
use crate::receivers::ingest::AppendObserver;
use crate::sinks::dynamiq::observer::{DeliveryObserver, RunOutcome};

/// How many delivery updates for runs not (yet) indexed are remembered.
const MAX_EARLY_UPDATES: usize = 4096;
/// Above this many runs a trace keeps a run-id map instead of scanning its runs.
const RUN_MAP_FROM: usize = 16;
/// Most run JSON bytes (beyond the first run) one [`QueryIndex::runs_page`] hands out, so a
/// reader of a large trace takes the lock briefly, page by page.
pub(super) const RUN_PAGE_BYTES: usize = 64 * 1024;

/// One run as indexed.
#[derive(Debug, Clone)]
struct RunEntry {
    id_hash: u128,
    seq: u64,
    json: Bytes,
    is_root: bool,
    status: Option<RunStatus>,
    start_ns: Option<u64>,
    end_ns: Option<u64>,
    delivery: Delivery,
}

/// What a trace's summary is computed from, kept up to date run by run: adding a run costs
/// O(1), and so does a new version of a run unless it was the earliest start, the latest end or
/// the first root and moved away from it (then the trace is rescanned once, after the ingest).
/// Equal to what [`Aggregate::of`] computes from the runs (checked by the unit tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Aggregate {
    /// The first root run.
    root: Option<usize>,
    /// Earliest start: (ns, run index), the lowest index among equal starts.
    start: Option<(u64, usize)>,
    /// Latest end: (ns, run index), the lowest index among equal ends.
    last_end: Option<(u64, usize)>,
    /// Runs without an end time.
    open: usize,
    /// Runs whose status is `failed`.
    failed: usize,
    pending: usize,
    dead: usize,
    dropped: usize,
}

impl Aggregate {
    /// Computed from scratch.
    fn of(runs: &[RunEntry]) -> Self {
        let mut agg = Self::default();
        for (i, r) in runs.iter().enumerate() {
            agg.add(i, r);
        }
        agg
    }

    /// Adds `n` (±1) runs in state `d` to the counts.
    fn count(&mut self, d: Delivery, n: isize) {
        let slot = match d {
            Delivery::Pending => &mut self.pending,
            Delivery::DeadLettered => &mut self.dead,
            Delivery::Dropped => &mut self.dropped,
            Delivery::Delivered => return,
        };
        *slot = slot.saturating_add_signed(n);
    }

    /// Adds or removes (`n` = ±1) what a run contributes to the counts.
    fn count_run(&mut self, r: &RunEntry, n: isize) {
        if r.end_ns.is_none() {
            self.open = self.open.saturating_add_signed(n);
        }
        if r.status == Some(RunStatus::Failed) {
            self.failed = self.failed.saturating_add_signed(n);
        }
        self.count(r.delivery, n);
    }

    /// Takes in run `i`, the trace's last run.
    fn add(&mut self, i: usize, r: &RunEntry) {
        if r.is_root && self.root.is_none() {
            self.root = Some(i);
        }
        if let Some(ns) = r.start_ns
            && self.start.is_none_or(|(s, _)| ns < s)
        {
            self.start = Some((ns, i));
        }
        if let Some(ns) = r.end_ns
            && self.last_end.is_none_or(|(e, _)| ns > e)
        {
            self.last_end = Some((ns, i));
        }
        self.count_run(r, 1);
    }

    /// Takes in `new`, which replaced `old` as run `i`. False when the trace must be rescanned
    /// ([`Aggregate::of`]): run `i` was the first root, the earliest start or the latest end
    /// and no longer is.
    fn replace(&mut self, i: usize, old: &RunEntry, new: &RunEntry) -> bool {
        self.count_run(old, -1);
        self.count_run(new, 1);
        match self.root {
            Some(r) if r == i => {
                if !new.is_root {
                    return false;
                }
            }
            root => {
                if new.is_root && root.is_none_or(|r| i < r) {
                    self.root = Some(i);
                }
            }
        }
        // Earliest start, ties to the lowest index.
        match (self.start, new.start_ns) {
            (Some((s, j)), ns) if j == i => match ns {
                Some(ns) if ns <= s => self.start = Some((ns, i)),
                _ => return false,
            },
            (start, Some(ns)) if start.is_none_or(|(s, j)| ns < s || (ns == s && i < j)) => {
                self.start = Some((ns, i));
            }
            _ => {}
        }
        // Latest end, ties to the lowest index.
        match (self.last_end, new.end_ns) {
            (Some((e, j)), ns) if j == i => match ns {
                Some(ns) if ns >= e => self.last_end = Some((ns, i)),
                _ => return false,
            },
            (end, Some(ns)) if end.is_none_or(|(e, j)| ns > e || (ns == e && i < j)) => {
                self.last_end = Some((ns, i));
            }
            _ => {}
        }
        true
    }

    /// The first root run, else the first run.
    fn head(&self) -> usize {
        self.root.unwrap_or(0)
    }

    /// Latest end when every run has one: (ns, run index).
    fn end(&self) -> Option<(u64, usize)> {
        if self.open == 0 { self.last_end } else { None }
    }
}

#[derive(Debug)]
struct Trace {
    id: Box<str>,
    runs: Vec<RunEntry>,
    run_map: Option<HashMap<u128, usize, FastHash>>,
    bytes: u64,
    /// Key in [`Inner::order`].
    stamp: u64,
    updated: Instant,
    agg: Aggregate,
}

impl Trace {
    fn find(&self, id_hash: u128) -> Option<usize> {
        match &self.run_map {
            Some(map) => map.get(&id_hash).copied(),
            None => self.runs.iter().position(|r| r.id_hash == id_hash),
        }
    }

    fn push(&mut self, entry: RunEntry) -> usize {
        let i = self.runs.len();
        if let Some(map) = &mut self.run_map {
            map.insert(entry.id_hash, i);
        } else if i + 1 > RUN_MAP_FROM {
            let mut map: HashMap<u128, usize, FastHash> = HashMap::default();
            map.extend(self.runs.iter().enumerate().map(|(j, r)| (r.id_hash, j)));
            map.insert(entry.id_hash, i);
            self.run_map = Some(map);
        }
        self.agg.add(i, &entry);
        self.runs.push(entry);
        i
    }

    /// Stores `entry` as the latest version of its run: (its index, the version it replaced,
    /// whether the aggregate must be recomputed with [`Trace::rescan`]).
    fn put(&mut self, entry: RunEntry) -> (usize, Option<RunEntry>, bool) {
        let added = entry.json.len() as u64;
        let put = match self.find(entry.id_hash) {
            Some(i) => {
                let old = std::mem::replace(&mut self.runs[i], entry);
                self.bytes -= old.json.len() as u64;
                let kept = self.agg.replace(i, &old, &self.runs[i]);
                (i, Some(old), !kept)
            }
            None => (self.push(entry), None, false),
        };
        self.bytes += added;
        put
    }

    fn rescan(&mut self) {
        self.agg = Aggregate::of(&self.runs);
    }

    /// The root's status; `failed` if the root has none and any run failed.
    fn status(&self) -> Option<RunStatus> {
        self.runs
            .get(self.agg.head())
            .and_then(|r| r.status)
            .or_else(|| (self.agg.failed > 0).then_some(RunStatus::Failed))
    }

    fn start_ns(&self) -> Option<u64> {
        self.agg.start.map(|(ns, _)| ns)
    }

    fn delivery(&self) -> Delivery {
        if self.agg.dead > 0 {
            Delivery::DeadLettered
        } else if self.agg.dropped > 0 {
            Delivery::Dropped
        } else if self.agg.pending == 0 && !self.runs.is_empty() {
            Delivery::Delivered
        } else {
            Delivery::Pending
        }
    }

    /// What a summary needs, copied out (reference counts only) so it is built without the
    /// lock.
    fn view(&self, tid: u64) -> View {
        let pick = |i: usize| self.runs.get(i).map(|r| r.json.clone());
        View {
            tid,
            id: self.id.to_string(),
            head: pick(self.agg.head()),
            start: self.agg.start.and_then(|(_, i)| pick(i)),
            end: self.agg.end().and_then(|(_, i)| pick(i)),
            run_count: self.runs.len(),
            status: self.status(),
            delivery: self.delivery(),
        }
    }

    /// Up to [`RUN_PAGE_BYTES`] of runs (at least one) from index `from` on.
    fn runs_page(&self, from: usize) -> Vec<Bytes> {
        let mut bytes = 0usize;
        self.runs
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|r| {
                let first = bytes == 0;
                bytes = bytes.saturating_add(r.json.len().max(1));
                first || bytes <= RUN_PAGE_BYTES
            })
            .map(|r| r.json.clone())
            .collect()
    }
}

/// A trace's data, taken under the lock; [`View::summary`] reads the text fields.
struct View {
    tid: u64,
    id: String,
    head: Option<Bytes>,
    start: Option<Bytes>,
    end: Option<Bytes>,
    run_count: usize,
    status: Option<RunStatus>,
    delivery: Delivery,
}

impl View {
    /// The summary. `runs_from(i)` returns the trace's runs from index `i` on, a page at a time
    /// (empty: no more); they are read only while the source or session is still unknown.
    fn summary(&self, runs_from: &mut dyn FnMut(usize) -> Vec<Bytes>) -> TraceSummary {
        let head = |field| self.head.as_deref().and_then(|j| text_of(j, field));
        // Source and session fall back to the first run that has one.
        let mut source_id = head(TextField::SourceId);
        let mut session_id = head(TextField::SessionId);
        let mut from = 0;
        'runs: while (source_id.is_none() || session_id.is_none()) && from < self.run_count {
            let page = runs_from(from);
            if page.is_empty() {
                break;
            }
            from += page.len();
            for json in &page {
                let Some(f) = parse_fields(json) else {
                    continue;
                };
                let text = |raw| string_of(raw).map(Cow::into_owned);
                if source_id.is_none() {
                    source_id = text(f.source_id);
                }
                if session_id.is_none() {
                    session_id = text(f.session_id);
                }
                if source_id.is_some() && session_id.is_some() {
                    break 'runs;
                }
            }
        }
        TraceSummary {
            id: self.id.clone(),
            name: head(TextField::Name),
            source_id,
            session_id,
            started_at: self
                .start
                .as_deref()
                .and_then(|j| text_of(j, TextField::StartTime)),
            ended_at: self
                .end
                .as_deref()
                .and_then(|j| text_of(j, TextField::EndTime)),
            status: self.status.map(|s| s.as_str().to_string()),
            runs: self.run_count,
            delivery: self.delivery,
        }
    }
}

/// A trace as saved in a snapshot: id, time since its last update, runs.
pub(super) struct SavedTrace {
    pub id: String,
    pub age: Duration,
    pub runs: Vec<(u64, Delivery, Bytes)>,
}

#[derive(Debug, Default)]
struct Inner {
    ids: HashMap<Box<str>, u64>,
    traces: HashMap<u64, Trace, FastHash>,
    next_tid: u64,
    /// Update stamp → trace; the first entry is the least recently updated trace.
    order: BTreeMap<u64, u64>,
    next_stamp: u64,
    bytes: u64,
    /// Pending runs by buffer sequence number: seq → (trace, run index).
    by_seq: HashMap<u64, (u64, usize), FastHash>,
    /// Delivery updates for sequence numbers not indexed yet (the forwarder can resolve a run
    /// before the receiver indexed it, or while a restart replays the buffer).
    early: HashMap<u64, Delivery, FastHash>,
    early_order: VecDeque<u64>,
}

impl Inner {
    fn remove_trace(&mut self, tid: u64) -> Option<Trace> {
        let t = self.traces.remove(&tid)?;
        self.order.remove(&t.stamp);
        self.ids.remove(&t.id);
        self.bytes -= t.bytes;
        for r in &t.runs {
            if r.delivery == Delivery::Pending {
                self.by_seq.remove(&r.seq);
            }
        }
        Some(t)
    }

    /// Stores one run (`Pending` unless `delivery` says otherwise) updated at `now`. Returns
    /// its trace when that trace's aggregate must be rescanned.
    fn put(
        &mut self,
        run: &IndexedRun<'_>,
        delivery: Option<Delivery>,
        now: Instant,
    ) -> Option<u64> {
        let mut entry = RunEntry {
            id_hash: id_hash(&run.id),
            seq: run.seq,
            json: run.json.clone(),
            is_root: run.is_root,
            status: run.status,
            start_ns: run.start_ns,
            end_ns: run.end_ns,
            delivery: delivery.unwrap_or(Delivery::Pending),
        };
        if entry.delivery == Delivery::Pending
            && !self.early.is_empty()
            && let Some(d) = self.early.remove(&run.seq)
        {
            entry.delivery = d;
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let tid = match self.ids.get(run.trace_id.as_ref()) {
            Some(&tid) => tid,
            None => {
                let tid = self.next_tid;
                self.next_tid += 1;
                self.ids.insert(run.trace_id.as_ref().into(), tid);
                self.traces.insert(
                    tid,
                    Trace {
                        id: run.trace_id.as_ref().into(),
                        runs: Vec::new(),
                        run_map: None,
                        bytes: 0,
                        stamp,
                        updated: now,
                        agg: Aggregate::default(),
                    },
                );
                tid
            }
        };
        let trace = self.traces.get_mut(&tid)?;
        self.order.remove(&trace.stamp);
        trace.stamp = stamp;
        trace.updated = now;
        self.order.insert(stamp, tid);
        let added = entry.json.len() as u64;
        let (pending, seq) = (entry.delivery == Delivery::Pending, entry.seq);
        let (at, old, stale) = trace.put(entry);
        self.bytes += added;
        if let Some(old) = old {
            self.bytes -= old.json.len() as u64;
            if old.delivery == Delivery::Pending {
                self.by_seq.remove(&old.seq);
            }
        }
        if pending && seq != 0 {
            self.by_seq.insert(seq, (tid, at));
        }
        stale.then_some(tid)
    }

    fn remember_early(&mut self, seq: u64, outcome: Delivery) {
        if self.early.insert(seq, outcome).is_none() {
            self.early_order.push_back(seq);
            while self.early_order.len() > MAX_EARLY_UPDATES {
                if let Some(old) = self.early_order.pop_front() {
                    self.early.remove(&old);
                }
            }
        }
    }
}

/// The in-memory trace index. Shared as `Arc<QueryIndex>` by the receivers, the forwarder and
/// the API.
pub struct QueryIndex {
    inner: Mutex<Inner>,
    max_bytes: u64,
    retention: Duration,
    pub(super) metrics: QueryMetrics,
    /// Bumped on every change (the snapshot task saves when it moved).
    generation: AtomicU64,
}

impl std::fmt::Debug for QueryIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryIndex")
            .field("max_bytes", &self.max_bytes)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

fn id_hash(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
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
            generation: AtomicU64::new(0),
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

    /// Changes so far (any ingest, delivery update or eviction moves it).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Indexes runs (with their sequence numbers) that were just stored.
    pub fn ingest(&self, runs: &[IndexedRun<'_>]) {
        self.ingest_at(runs, Instant::now(), None);
    }

    /// Indexes runs appended from `first_seq` on, each carrying its payload's position in the
    /// append as `seq` (prepared before the append, see `receivers::traces::store`).
    pub fn ingest_appended(&self, first_seq: u64, runs: &mut [IndexedRun<'_>]) {
        for run in runs.iter_mut() {
            run.seq += first_seq;
        }
        self.ingest(runs);
    }

    /// Indexes buffer records (envelopes, see [`envelope`]): (sequence number, payload).
    pub fn ingest_envelopes<'p>(&self, records: impl IntoIterator<Item = (u64, &'p Bytes)>) {
        let runs: Vec<(u64, Bytes)> = records
            .into_iter()
            .filter_map(|(seq, p)| envelope::decode(p).ok().map(|e| (seq, e.run)))
            .collect();
        let parsed: Vec<IndexedRun<'_>> = runs
            .iter()
            .filter_map(|(seq, json)| IndexedRun::parse(*seq, json))
            .collect();
        self.ingest(&parsed);
    }

    /// Indexes run JSON bytes with consecutive sequence numbers from `first_seq` (0: none).
    pub fn ingest_json(&self, first_seq: u64, runs: &[Bytes]) {
        let parsed: Vec<IndexedRun<'_>> = runs
            .iter()
            .enumerate()
            .filter_map(|(i, json)| {
                let seq = if first_seq == 0 {
                    0
                } else {
                    first_seq + i as u64
                };
                IndexedRun::parse(seq, json)
            })
            .collect();
        self.ingest(&parsed);
    }

    pub(super) fn ingest_at(
        &self,
        runs: &[IndexedRun<'_>],
        now: Instant,
        delivery: Option<Delivery>,
    ) {
        self.ingest_with(runs.iter().map(|run| (run, delivery)), now);
    }

    /// Indexes runs, each `Pending` unless it comes with a delivery state (a snapshot's), all
    /// updated at `now`; then drops what retention and `max_bytes` no longer allow. Linear in
    /// the number of runs (see [`Aggregate`]).
    fn ingest_with<'r, 'a: 'r>(
        &self,
        runs: impl IntoIterator<Item = (&'r IndexedRun<'a>, Option<Delivery>)>,
        now: Instant,
    ) {
        let mut runs = runs.into_iter().peekable();
        if runs.peek().is_none() {
            return;
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut stale: Vec<u64> = Vec::new();
        for (run, delivery) in runs {
            if let Some(tid) = inner.put(run, delivery, now)
                && stale.last() != Some(&tid)
            {
                stale.push(tid);
            }
        }
        stale.sort_unstable();
        stale.dedup();
        for tid in stale {
            if let Some(t) = inner.traces.get_mut(&tid) {
                t.rescan();
            }
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.prune_locked(inner, now);
    }

    /// Restores traces saved by a snapshot (oldest first), with their delivery states: one
    /// ingest per trace, so restoring is linear in the number of runs.
    pub(super) fn restore(&self, saved: Vec<SavedTrace>) {
        let now = Instant::now();
        for t in saved {
            if t.age > self.retention {
                continue;
            }
            let updated = now.checked_sub(t.age).unwrap_or(now);
            let runs: Vec<(IndexedRun<'_>, Delivery)> = t
                .runs
                .iter()
                .filter_map(|(seq, delivery, json)| {
                    Some((IndexedRun::parse(*seq, json)?, *delivery))
                })
                .collect();
            self.ingest_with(runs.iter().map(|(run, d)| (run, Some(*d))), updated);
        }
    }

    /// Everything held, least recently updated trace first (for a snapshot).
    pub(super) fn saved(&self) -> Vec<SavedTrace> {
        let now = Instant::now();
        let inner = self.lock();
        inner
            .order
            .values()
            .filter_map(|tid| inner.traces.get(tid))
            .map(|t| SavedTrace {
                id: t.id.to_string(),
                age: now.saturating_duration_since(t.updated),
                runs: t
                    .runs
                    .iter()
                    .map(|r| (r.seq, r.delivery, r.json.clone()))
                    .collect(),
            })
            .collect()
    }

    /// Drops traces past retention (call periodically; listing and ingest also do it).
    pub fn prune(&self) {
        let mut inner = self.lock();
        self.prune_locked(&mut inner, Instant::now());
    }

    /// Drops traces past retention, then the least recently updated ones until the bytes fit.
    fn prune_locked(&self, inner: &mut Inner, now: Instant) {
        let (mut by_age, mut by_size) = (0u64, 0u64);
        while let Some((_, &tid)) = inner.order.first_key_value() {
            let expired = inner
                .traces
                .get(&tid)
                .is_none_or(|t| now.saturating_duration_since(t.updated) > self.retention);
            if !expired && inner.bytes <= self.max_bytes {
                break;
            }
            if inner.remove_trace(tid).is_none() {
                inner.order.pop_first();
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
        if by_age + by_size > 0 {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics
            .traces
            .set(i64::try_from(inner.traces.len()).unwrap_or(i64::MAX));
        self.metrics
            .bytes
            .set(i64::try_from(inner.bytes).unwrap_or(i64::MAX));
    }

    /// Records that the runs stored under these buffer sequence numbers were delivered or
    /// dead-lettered. A dead-lettered run stays so even if a copy is delivered later.
    pub fn mark(&self, outcome: Delivery, seqs: &mut dyn Iterator<Item = u64>) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut changed = false;
        for seq in seqs {
            let Some((tid, i)) = inner.by_seq.remove(&seq) else {
                if outcome == Delivery::DeadLettered {
                    self.dead_letter_resolved(inner, seq);
                } else {
                    inner.remember_early(seq, outcome);
                }
                continue;
            };
            if let Some(t) = inner.traces.get_mut(&tid)
                && let Some(r) = t.runs.get_mut(i)
                && r.seq == seq
                && r.delivery == Delivery::Pending
            {
                r.delivery = outcome;
                t.agg.count(Delivery::Pending, -1);
                t.agg.count(outcome, 1);
                changed = true;
            }
        }
        if changed {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A dead-letter report for a run no longer pending (e.g. settled as delivered by a restart):
    /// the dead letter wins; unknown sequence numbers are remembered as early updates.
    fn dead_letter_resolved(&self, inner: &mut Inner, seq: u64) {
        for t in inner.traces.values_mut() {
            if let Some(r) = t.runs.iter_mut().find(|r| r.seq == seq) {
                if r.delivery == Delivery::Delivered {
                    r.delivery = Delivery::DeadLettered;
                    t.agg.count(Delivery::DeadLettered, 1);
                    self.generation.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
        inner.remember_early(seq, Delivery::DeadLettered);
    }

    /// Marks the pending runs stored under `first_seq..=last_seq` dropped (the buffer dropped
    /// them before the collector took them).
    pub fn mark_dropped(&self, first_seq: u64, last_seq: u64) {
        let seqs: Vec<u64> = self
            .lock()
            .by_seq
            .keys()
            .copied()
            .filter(|s| (first_seq..=last_seq).contains(s))
            .collect();
        if !seqs.is_empty() {
            self.mark(Delivery::Dropped, &mut seqs.into_iter());
        }
    }

    /// Marks every pending run with a sequence number `<= acked` delivered: after a restart,
    /// what the forwarder acknowledged before it (delivered or dead-lettered) is settled.
    pub fn settle_through(&self, acked: u64) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let done: Vec<u64> = inner
            .by_seq
            .keys()
            .copied()
            .filter(|&s| s <= acked)
            .collect();
        drop(guard);
        if !done.is_empty() {
            self.mark(Delivery::Delivered, &mut done.into_iter());
        }
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

    pub(super) fn list_at(
        &self,
        filter: &Filter,
        sort: Sort,
        page: usize,
        page_size: usize,
        now: Instant,
    ) -> (Vec<TraceSummary>, usize) {
        let (views, total) = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            self.prune_locked(inner, now);
            let (tids, total) = select_locked(inner, filter, sort, page, page_size);
            let views: Vec<View> = tids
                .iter()
                .filter_map(|tid| Some(inner.traces.get(tid)?.view(*tid)))
                .collect();
            (views, total)
        };
        let summaries = views
            .iter()
            .map(|v| v.summary(&mut |from| self.runs_page(v.tid, from)))
            .collect();
        (summaries, total)
    }

    /// The traces matching `filter`, in listing order, paged like [`QueryIndex::list`], as
    /// handles for [`QueryIndex::summary_of`] and [`QueryIndex::runs_page`] (a handle is never
    /// reused: once its trace is evicted it finds nothing).
    pub(super) fn select(
        &self,
        filter: &Filter,
        sort: Sort,
        page: usize,
        page_size: usize,
    ) -> Vec<u64> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        self.prune_locked(inner, Instant::now());
        select_locked(inner, filter, sort, page, page_size).0
    }

    /// The summary of the trace behind a [`QueryIndex::select`] handle (`None`: evicted since).
    pub(super) fn summary_of(&self, tid: u64) -> Option<TraceSummary> {
        let view = self.lock().traces.get(&tid)?.view(tid);
        Some(view.summary(&mut |from| self.runs_page(tid, from)))
    }

    /// The JSON of the runs of the trace behind a [`QueryIndex::select`] handle, from run
    /// index `from` on: up to [`RUN_PAGE_BYTES`] (at least one run); empty past its last run
    /// or once the trace is evicted. Runs keep their index (a new version replaces a run in
    /// place), so paging through a trace that is still updated sees each run once.
    pub(super) fn runs_page(&self, tid: u64, from: usize) -> Vec<Bytes> {
        self.lock()
            .traces
            .get(&tid)
            .map(|t| t.runs_page(from))
            .unwrap_or_default()
    }

    /// One trace with its runs.
    pub fn get(&self, trace_id: &str) -> Option<TraceDetail> {
        self.get_at(trace_id, Instant::now())
    }

    pub(super) fn get_at(&self, trace_id: &str, now: Instant) -> Option<TraceDetail> {
        let (view, runs) = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            self.prune_locked(inner, now);
            let tid = *inner.ids.get(trace_id)?;
            let t = inner.traces.get(&tid)?;
            let runs: Vec<Bytes> = t.runs.iter().map(|r| r.json.clone()).collect();
            (t.view(tid), runs)
        };
        let summary = view.summary(&mut |from| runs.get(from..).unwrap_or_default().to_vec());
        Some(TraceDetail { summary, runs })
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

    /// Asserts the invariants of the module doc.
    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        let inner = self.lock();
        let sum: u64 = inner.traces.values().map(|t| t.bytes).sum();
        let runs: u64 = inner
            .traces
            .values()
            .flat_map(|t| t.runs.iter().map(|r| r.json.len() as u64))
            .sum();
        assert_eq!((inner.bytes, sum), (runs, runs));
        assert!(inner.bytes <= self.max_bytes);
        assert_eq!(inner.order.len(), inner.traces.len());
        assert_eq!(inner.ids.len(), inner.traces.len());
        let pending: usize = inner
            .traces
            .values()
            .map(|t| {
                let n = t
                    .runs
                    .iter()
                    .filter(|r| r.delivery == Delivery::Pending)
                    .count();
                assert_eq!(n, t.agg.pending, "trace {}", t.id);
                assert_eq!(t.agg, Aggregate::of(&t.runs), "trace {}", t.id);
                t.runs
                    .iter()
                    .filter(|r| r.delivery == Delivery::Pending && r.seq != 0)
                    .count()
            })
            .sum();
        assert_eq!(inner.by_seq.len(), pending);
        for (seq, (tid, i)) in &inner.by_seq {
            assert_eq!(inner.traces[tid].runs[*i].seq, *seq);
        }
    }
}

/// The handles of the traces matching `filter` on page `page` (from 1) of `page_size` in
/// `sort` order, and how many match in all.
fn select_locked(
    inner: &Inner,
    filter: &Filter,
    sort: Sort,
    page: usize,
    page_size: usize,
) -> (Vec<u64>, usize) {
    let mut rows: Vec<(Option<u64>, u64, u64)> = inner
        .traces
        .iter()
        .filter(|(_, t)| filter.matches(t.status(), t.start_ns()))
        .map(|(&tid, t)| (t.start_ns(), t.stamp, tid))
        .collect();
    let total = rows.len();
    let from = page.saturating_sub(1).saturating_mul(page_size).min(total);
    let to = from.saturating_add(page_size).min(total);
    let cmp = |a: &(Option<u64>, u64, u64), b: &(Option<u64>, u64, u64)| {
        // Traces without a start time go last either way; ties: most recently updated first.
        let by_start = match (a.0, b.0) {
            (Some(x), Some(y)) => match sort {
                Sort::StartedAtDesc => y.cmp(&x),
                Sort::StartedAtAsc => x.cmp(&y),
            },
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_start.then(b.1.cmp(&a.1))
    };
    // Only the rows up to the page's end need to be in order.
    if to < rows.len() && to > 0 {
        rows.select_nth_unstable_by(to - 1, cmp);
        rows.truncate(to);
    }
    rows.sort_unstable_by(cmp);
    let tids = rows[from..to].iter().map(|&(_, _, tid)| tid).collect();
    (tids, total)
}

impl crate::buffer::DropObserver for QueryIndex {
    fn records_dropped(&self, first_seq: u64, last_seq: u64) {
        self.mark_dropped(first_seq, last_seq);
    }
}

impl DeliveryObserver for QueryIndex {
    fn runs_resolved(&self, outcome: RunOutcome, seqs: &mut dyn Iterator<Item = u64>) {
        let delivery = match outcome {
            RunOutcome::Delivered => Delivery::Delivered,
            RunOutcome::DeadLettered => Delivery::DeadLettered,
        };
        self.mark(delivery, seqs);
    }
}

impl AppendObserver for QueryIndex {
    fn runs_appended(&self, first_seq: u64, runs: &mut [IndexedRun<'_>]) {
        self.ingest_appended(first_seq, runs);
    }
}
