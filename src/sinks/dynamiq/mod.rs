//! The forwarder: reads batches from the disk buffer and delivers them to the Dynamiq collector
//! (`POST {upstream.url}/v1/traces`), acknowledging the buffer only once each run is resolved:
//! accepted by the collector, or refused by it for good and handed to the dead-letter store.
//!
//! Owns: the delivery loop and its state machine (healthy → retrying with backoff → healthy;
//! healthy → held for the key → healthy; in passthrough mode, per client key: flowing → held →
//! flowing), the `upstream_authorized` readiness latch and the `dynamiq_sidecar_forward_*`
//! metrics. The pieces live beside this file: [`batch`] (body framing and request planning),
//! [`client`] (HTTP and status classification), [`retry`] (full-jitter backoff, `Retry-After`),
//! [`ratelimit`], [`deadletter`], [`held`] (client keys on hold) and [`metrics`].
//!
//! Invariants:
//! - Acknowledgement: the buffer is acknowledged through the record before the first
//!   *outstanding* run (read and not yet resolved, parked runs of held keys included), or
//!   through the last record read when none is outstanding. So nothing is acknowledged before the
//!   collector answered 2xx, or suppression found a delivered copy, or the run went to the
//!   dead-letter store; a run is never dropped silently. A stop in the middle of a request (or a
//!   hold) leaves its runs unacknowledged, so they are delivered again after a restart.
//! - Dead letters are best effort after the collector's final no: a dead-letter write is fsynced
//!   before the ack; one that fails (twice: the retry starts a fresh file) is logged and counted
//!   (`dead_letters_dropped_total{reason="write_failed"}`) and the runs are acknowledged all the
//!   same: they are lost as dead letters, never as deliverable runs, and delivery goes on. The
//!   store is bounded (`forward.dead_letter_max_bytes`): its oldest files are removed to make
//!   room (`reason="evicted"`).
//! - Held client keys (passthrough mode): a 401/403 for one client key parks that key's runs in
//!   memory ([`held`]) while other keys' runs keep being delivered. The buffer has one cursor, so
//!   the acknowledgement stops at the first parked run: the runs behind it that were delivered
//!   stay on disk until the key is released (after a restart they are read again and, for
//!   Dynamiq runs, suppressed as already delivered). Bounds: parked runs take at most
//!   `forward.auth_hold_max_bytes` plus one read batch (`forward.max_bytes`) of memory; at the
//!   bound nothing more is read until a held key's retry (counted); the disk behind the cursor is
//!   bounded by `buffer.max_bytes` and its `when_full` policy, as in an outage. A held key is
//!   retried with full-jitter backoff from `forward.retry_initial` up to
//!   `forward.auth_hold_retry` by sending its oldest parked runs (one request); any answer other
//!   than 401/403 releases it and its runs go out in buffer order. A client key's hold never
//!   clears readiness. Runs stored without a client key use the sidecar's key and its global
//!   hold.
//!
//! Guarantees:
//! - Order: runs go out oldest first; in `passthrough` mode each request holds one client key's
//!   runs, in buffer order within that key (a held key's runs after its release too).
//! - Limits: a request never exceeds `forward.max_runs` runs or `forward.max_bytes` body bytes
//!   (framing included) and respects both rate limits.
//! - Outcomes: 2xx acks; 408/429/5xx/transport errors retry forever (or `forward.max_retries`
//!   times, then dead-letter `gave_up`) with full-jitter backoff and `Retry-After` as a floor; 413
//!   and the other permanent 4xx (400, 404, 422, ...) for several runs halve the request until
//!   the refused runs are alone (at most ⌈log2 n⌉ levels, `2n − 1` requests for `n` runs, each
//!   through the rate limits and the retry policy; counted in `splits_total{cause}`), and a
//!   single refused run is dead-lettered (`too_large` or `rejected`, with the collector's answer);
//!   401/403 (or no key at all) hold delivery without acking or dead-lettering: in sidecar-key
//!   mode everything waits, the readiness latch is cleared, and delivery retries every
//!   `forward.auth_hold_retry` or as soon as the key changes; in passthrough mode only that
//!   client key is held (above).
//! - Duplicates ([`dedup`]): a Dynamiq run (not one converted from an OTLP span) whose content
//!   (its bytes, with its client key) the collector already accepted with 2xx, or
//!   that repeats an earlier run of the same buffer batch, is acknowledged without being sent
//!   again; a changed run is sent. Suppression never acknowledges a run no copy of which was
//!   accepted or is ahead of it in the batch, so it never loses one. The memory is bounded
//!   (`forward.dedup_entries`) and kept across a clean restart.
//! - Coalescing: a buffer batch holds the runs of any number of client requests (the read lingers
//!   up to `forward.max_delay` for `forward.max_runs` runs / `forward.max_bytes` bytes), so many
//!   small posts become few upstream requests.
//! - Compression: with `upstream.compression = "gzip"` bodies go out gzip-compressed (compressed
//!   once per request, not per retry); limits and 413 splitting count uncompressed bytes.
//! - Logs: one line per state change (entering an outage or a hold with its reason, recovering,
//!   a client key held or released, the dead-letter store full or failing), per-attempt detail
//!   only at debug. No key is ever logged.
//!
//! Fails: [`Forwarder::new`] fails only when the HTTP client cannot be built. At run time nothing
//! is fatal: buffer read errors are logged and retried, dead-letter write errors logged and
//! counted.

pub mod batch;
pub mod client;
pub mod config;
pub mod dedup;
pub mod held;
pub mod metrics;
pub mod observer;
pub mod ratelimit;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::admin::readiness::{Latch, Readiness};
use crate::buffer::{Reader, Record};
use crate::deadletter::{DeadLetter, DeadLetterStore};
use crate::model::auth_mode::AuthMode;
use crate::model::envelope;
use crate::secret::redact_url;
use crate::secret::{KeyProvider, Secret};
use crate::sinks::common::consumer::{
    BatchSource, ReadLimits, Stopped, error_chain, next_records, or_stop,
};
use crate::sinks::common::http::ClientError;
use crate::sinks::common::retry::Backoff;
use crate::sinks::dynamiq::config::{ForwardConfig, UpstreamConfig};
use batch::{Item, Piece};
use client::{Outcome, UpstreamClient};
use dedup::Dedup;
use held::HeldKeys;
use metrics::{DeadLetterDrop, DeadLetterReason, ForwardMetrics, RequestOutcome, SplitCause};
use observer::{DeliveryObserver, RunOutcome};
use ratelimit::RateLimits;

/// Pause after a failed buffer read or dead-letter write before trying again (at most).
const LOCAL_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Why the forwarder could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The HTTP client could not be built (bad URL, TLS setup).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Why delivery is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldCause {
    /// No key configured at all.
    NoKey,
    /// The key cannot be carried in a header.
    InvalidKey,
    /// The collector answered 401 or 403.
    Rejected(u16),
}

/// An ongoing outage (retryable failures since the last answer).
#[derive(Debug)]
struct Outage {
    since: Instant,
    retries: u64,
}

/// How one request group ended.
enum Resolution {
    /// Accepted, or dead-lettered: resolved.
    Done,
    /// 413, or a permanent rejection, for several runs: split in halves.
    Split,
    /// Passthrough mode: the collector rejected the client's key (401/403); the runs are to be
    /// parked with that key (it is already held).
    Hold,
}

/// Delivers buffered runs to the collector. Build with [`Forwarder::new`], then [`run`](Self::run).
pub struct Forwarder<S: BatchSource = Reader> {
    source: S,
    client: UpstreamClient,
    key: KeyProvider,
    key_rx: watch::Receiver<u64>,
    mode: AuthMode,
    forward: ForwardConfig,
    dead_letters: DeadLetterStore,
    readiness: Readiness,
    metrics: ForwardMetrics,
    limits: RateLimits,
    backoff: Backoff,
    outage: Option<Outage>,
    hold: Option<HoldCause>,
    last_acked: Option<u64>,
    /// Sequence numbers read and not yet resolved (delivered, suppressed or dead-lettered),
    /// parked runs included: the acknowledgement never reaches the first of them.
    outstanding: BTreeSet<u64>,
    /// The highest sequence number read so far (0: none).
    read_through: u64,
    /// Passthrough mode: client keys the collector rejected, with their parked runs.
    held: HeldKeys,
    /// Reading is paused because parked runs reached `forward.auth_hold_max_bytes`.
    held_bound_paused: bool,
    /// The last dead-letter write failed (logged once until one succeeds).
    dead_letter_failing: bool,
    /// The dead-letter bound has evicted files (logged once).
    dead_letter_evicted: bool,
    dedup: Dedup,
    /// Where the dedup memory is saved at the end of [`run`](Self::run), if anywhere.
    dedup_snapshot: Option<PathBuf>,
    upstream_url: String,
    /// Told which runs were delivered or dead-lettered (the local trace index).
    observer: Option<Arc<dyn DeliveryObserver>>,
}

impl Forwarder<Reader> {
    /// Builds the forwarder on the buffer's reader and registers its metrics.
    pub fn new(
        upstream: &UpstreamConfig,
        forward: &ForwardConfig,
        reader: Reader,
        key: KeyProvider,
        dead_letters: DeadLetterStore,
        readiness: Readiness,
        registry: &mut Registry,
    ) -> Result<Self, ForwardError> {
        Self::with_source(
            upstream,
            forward,
            reader,
            key,
            dead_letters,
            readiness,
            registry,
        )
    }
}

impl<S: BatchSource> Forwarder<S> {
    /// Builds the forwarder on any [`BatchSource`] and registers its metrics.
    pub fn with_source(
        upstream: &UpstreamConfig,
        forward: &ForwardConfig,
        source: S,
        key: KeyProvider,
        dead_letters: DeadLetterStore,
        readiness: Readiness,
        registry: &mut Registry,
    ) -> Result<Self, ForwardError> {
        let client =
            UpstreamClient::new(upstream).map_err(|e| ForwardError::Client(e.to_string()))?;
        let key_rx = key.changed();
        let metrics = ForwardMetrics::register(registry);
        Ok(Self {
            source,
            client,
            key,
            key_rx,
            mode: upstream.auth_mode,
            forward: forward.clone(),
            dead_letters,
            readiness,
            metrics,
            limits: RateLimits::new(forward),
            backoff: Backoff::new(forward.retry_initial, forward.retry_max),
            outage: None,
            hold: None,
            last_acked: None,
            outstanding: BTreeSet::new(),
            read_through: 0,
            held: HeldKeys::new(forward.retry_initial, forward.auth_hold_retry),
            held_bound_paused: false,
            dead_letter_failing: false,
            dead_letter_evicted: false,
            dedup: Dedup::new(forward.dedup_entries),
            dedup_snapshot: None,
            upstream_url: upstream.url.clone(),
            observer: None,
        })
    }

    /// Tells `observer` which runs the collector accepted (or that were suppressed as already
    /// delivered) and which were dead-lettered. Called after the fact; it cannot affect delivery.
    pub fn with_delivery_observer(mut self, observer: Arc<dyn DeliveryObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn observe(&self, outcome: RunOutcome, items: &[Item]) {
        if let Some(observer) = &self.observer {
            observer.runs_resolved(outcome, &mut items.iter().map(|i| i.seq));
        }
    }

    /// Keeps the duplicate-suppression memory in `path` across restarts: loads it now (a
    /// missing, corrupt or foreign snapshot is logged and ignored) and saves it when
    /// [`run`](Self::run) returns.
    pub fn with_dedup_snapshot(mut self, path: PathBuf) -> Self {
        match Dedup::load(&path, self.forward.dedup_entries, &self.upstream_url) {
            Ok(Some(dedup)) => {
                tracing::info!(
                    entries = dedup.len(),
                    "duplicate-suppression memory restored"
                );
                self.dedup = dedup;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "duplicate-suppression snapshot not used; starting empty")
            }
        }
        self.metrics
            .dedup_entries
            .set(i64::try_from(self.dedup.len()).unwrap_or(i64::MAX));
        self.dedup_snapshot = Some(path);
        self
    }

    /// Delivers until `stop` is cancelled (returns promptly; an in-flight request is abandoned
    /// and its runs stay unacknowledged), or, once `drain` is cancelled, until the buffer has no
    /// pending record. While draining, reads do not linger for fuller batches.
    pub async fn run(mut self, drain: CancellationToken, stop: CancellationToken) {
        tracing::info!(
            endpoint = %redact_url(self.client.endpoint().as_str()),
            mode = ?self.mode,
            "forwarder started"
        );
        match self.run_loop(&drain, &stop).await {
            Ok(()) => tracing::info!("forwarder drained: every buffered run was delivered"),
            Err(Stopped) => tracing::info!(
                pending = self.source.pending_records(),
                "forwarder stopped; undelivered runs stay in the buffer"
            ),
        }
        self.metrics.in_flight_runs.set(0);
        if let Some(path) = &self.dedup_snapshot {
            match self.dedup.save(path, &self.upstream_url) {
                Ok(()) => tracing::debug!(
                    entries = self.dedup.len(),
                    "duplicate-suppression memory saved"
                ),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot save the duplicate-suppression memory; after this restart runs in flight may be sent once more"
                ),
            }
        }
    }

    async fn run_loop(
        &mut self,
        drain: &CancellationToken,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let limits = ReadLimits {
            max_records: self.forward.max_runs,
            max_bytes: self.forward.max_bytes,
            max_delay: self.forward.max_delay,
            error_pause: self.forward.retry_initial.min(LOCAL_ERROR_PAUSE),
        };
        loop {
            if stop.is_cancelled() {
                return Err(Stopped);
            }
            self.retry_due_keys(stop).await?;
            if drain.is_cancelled() && self.source.pending_records() == 0 {
                return Ok(());
            }
            let next_retry = self.held.next_retry().map(tokio::time::Instant::from_std);
            if self.held.bytes() >= self.forward.auth_hold_max_bytes {
                self.pause_at_hold_bound();
                match next_retry {
                    Some(at) => or_stop(stop, tokio::time::sleep_until(at)).await?,
                    // Cannot happen (parked runs belong to a key waiting for its retry); never
                    // spin regardless.
                    None => or_stop(stop, tokio::time::sleep(LOCAL_ERROR_PAUSE)).await?,
                }
                continue;
            }
            self.held_bound_paused = false;
            let read = next_records("forwarder", &mut self.source, limits, drain, stop);
            let records = match next_retry {
                None => read.await?,
                // A held key's retry does not wait for new runs (the read is cancel-safe).
                Some(at) => tokio::select! {
                    r = read => r?,
                    _ = tokio::time::sleep_until(at) => continue,
                },
            };
            if let Some(records) = records {
                self.deliver(records, stop).await?;
            }
        }
    }

    /// Parked runs reached `forward.auth_hold_max_bytes`: nothing more is read until a held
    /// key's retry (counted and logged once per pause).
    fn pause_at_hold_bound(&mut self) {
        if self.held_bound_paused {
            return;
        }
        self.held_bound_paused = true;
        self.metrics.auth_hold_bound_pauses.inc();
        tracing::warn!(
            held_keys = self.held.len(),
            held_runs = self.held.runs(),
            held_bytes = self.held.bytes(),
            "runs of client keys the collector rejected fill forward.auth_hold_max_bytes; \
             no more runs are read (every key waits) until a held key is retried"
        );
    }

    /// Delivers one buffer batch, acknowledging as far as every earlier run is resolved.
    async fn deliver(
        &mut self,
        records: Vec<Record>,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let last_seq = records.last().map(|r| r.seq);
        let mut items = Vec::with_capacity(records.len());
        let dedup_on = self.dedup.enabled();
        let mut in_batch: HashSet<dedup::Fingerprint> = HashSet::new();
        let (mut suppressed, mut saved) = (0u64, 0u64);
        let mut suppressed_seqs: Vec<u64> = Vec::new();
        for record in records {
            match envelope::decode(&record.payload) {
                Ok(env) => {
                    // Runs converted from OTLP spans are out of scope (see `dedup`).
                    let dedup_this = dedup_on && !dedup::is_converted_span_run(&env.run);
                    let fingerprint = if dedup_this {
                        dedup::fingerprint(&env.run, env.client_key.as_deref())
                    } else {
                        0
                    };
                    // Delivered before, or an identical copy is ahead in this batch: resolved
                    // as it is (acked like a corrupt record, never sent).
                    if dedup_this && (self.dedup.seen(fingerprint) || !in_batch.insert(fingerprint))
                    {
                        suppressed += 1;
                        saved += env.run.len() as u64 + 1;
                        if self.observer.is_some() {
                            suppressed_seqs.push(record.seq);
                        }
                        continue;
                    }
                    items.push(Item {
                        seq: record.seq,
                        client_key: env.client_key,
                        run: env.run,
                        fingerprint,
                    });
                }
                Err(e) => {
                    self.metrics.corrupt_records.inc();
                    tracing::error!(seq = record.seq, error = %e, "buffer record cannot be decoded; skipping it");
                }
            }
        }
        if let Some(observer) = &self.observer
            && !suppressed_seqs.is_empty()
        {
            observer.runs_resolved(RunOutcome::Delivered, &mut suppressed_seqs.into_iter());
        }
        if suppressed > 0 {
            self.metrics.dedup_suppressed_runs.inc_by(suppressed);
            self.metrics.dedup_saved_bytes.inc_by(saved);
            tracing::debug!(
                runs = suppressed,
                bytes = saved,
                "runs already delivered; acknowledged without sending"
            );
        }
        if let Some(last) = last_seq {
            self.read_through = self.read_through.max(last);
        }
        self.outstanding.extend(items.iter().map(|i| i.seq));
        self.metrics
            .in_flight_runs
            .set(i64::try_from(items.len()).unwrap_or(i64::MAX));
        let pieces = batch::plan(
            items,
            self.mode,
            self.forward.max_runs,
            self.forward.max_bytes,
        );
        // Acknowledge the records that precede the first run (corrupt or suppressed ones) right
        // away.
        self.ack_progress();
        self.deliver_pieces(pieces, stop).await?;
        self.metrics.in_flight_runs.set(0);
        Ok(())
    }

    /// Sends (or parks, or dead-letters) planned pieces in order, acknowledging after each.
    async fn deliver_pieces(
        &mut self,
        pieces: Vec<Piece>,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        for piece in pieces {
            match piece {
                Piece::Send(items) => self.send_with_splits(items, stop).await?,
                Piece::TooLarge(item) => {
                    tracing::warn!(
                        seq = item.seq,
                        bytes = item.run.len(),
                        max_bytes = self.forward.max_bytes,
                        "run larger than forward.max_bytes; moved to the dead-letter store"
                    );
                    self.dead_letter(&[item], DeadLetterReason::TooLarge, None, "", stop)
                        .await?;
                }
            }
            self.ack_progress();
        }
        Ok(())
    }

    /// Retries every held client key whose time has come: its parked runs are sent again, the
    /// first request being the probe (rejected again: everything is parked again).
    async fn retry_due_keys(&mut self, stop: &CancellationToken) -> Result<(), Stopped> {
        while let Some((key, items)) = self.held.take_due(Instant::now()) {
            tracing::debug!(
                runs = items.len(),
                "retrying a client key the collector rejected"
            );
            let pieces = batch::plan(
                items,
                AuthMode::Passthrough,
                self.forward.max_runs,
                self.forward.max_bytes,
            );
            self.deliver_pieces(pieces, stop).await?;
            self.held.end_retry(&key);
            self.update_held_gauges();
            self.ack_progress();
        }
        Ok(())
    }

    /// Acks through the record before the first outstanding run (through the last record read
    /// when none is outstanding).
    fn ack_progress(&mut self) {
        let through = match self.outstanding.first() {
            Some(&first) => first.saturating_sub(1).min(self.read_through),
            None => self.read_through,
        };
        if through == 0 || self.last_acked.is_some_and(|a| a >= through) {
            return;
        }
        match self.source.ack(through) {
            Ok(()) => self.last_acked = Some(through),
            // The next ack covers it; until then these runs would be redelivered after a restart.
            Err(e) => {
                tracing::warn!(through_seq = through, error = %e, "cannot acknowledge delivered runs in the buffer")
            }
        }
    }

    /// These runs reached their outcome: they no longer hold the acknowledgement back.
    fn resolve(&mut self, items: &[Item]) {
        for item in items {
            self.outstanding.remove(&item.seq);
        }
    }

    /// The client key whose runs `chunk` holds, when that key is on hold (passthrough mode)
    /// and not being retried: the chunk is to be parked, not sent.
    fn parked_key(&self, chunk: &[Item]) -> Option<String> {
        if self.mode != AuthMode::Passthrough {
            return None;
        }
        let key = chunk.first()?.client_key.as_deref()?;
        self.held.parks(key).then(|| key.to_owned())
    }

    /// Parks `chunk` with its held client key.
    fn park(&mut self, key: &str, chunk: Vec<Item>) {
        self.held.park(key, chunk, Instant::now());
        self.update_held_gauges();
    }

    fn update_held_gauges(&self) {
        self.metrics
            .held_keys
            .set(i64::try_from(self.held.len()).unwrap_or(i64::MAX));
        self.metrics
            .held_runs
            .set(i64::try_from(self.held.runs()).unwrap_or(i64::MAX));
    }

    /// Sends one planned request, halving it on 413 or a permanent rejection until every part
    /// is resolved (a part of a client key on hold is parked instead).
    ///
    /// Bounded: halving stops at single runs, so a request of `n` runs is split at most
    /// ⌈log2 n⌉ levels deep and costs at most `2n − 1` requests (each through the rate limits
    /// and the retry policy like any other).
    async fn send_with_splits(
        &mut self,
        items: Vec<Item>,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let mut queue = VecDeque::from([items]);
        while let Some(chunk) = queue.pop_front() {
            if let Some(key) = self.parked_key(&chunk) {
                self.park(&key, chunk);
                continue;
            }
            match self.send_until_resolved(&chunk, stop).await? {
                Resolution::Done => {}
                Resolution::Split => match batch::halve(chunk) {
                    Some((first, second)) => {
                        queue.push_front(second);
                        queue.push_front(first);
                    }
                    None => unreachable!("a single run is dead-lettered, not split"),
                },
                Resolution::Hold => {
                    if let Some(key) = chunk.first().and_then(|i| i.client_key.clone()) {
                        self.park(&key, chunk);
                    }
                }
            }
            self.ack_progress();
        }
        Ok(())
    }

    /// The key for a request: the sidecar's, or in passthrough the client's (falling back to the
    /// sidecar's for records stored without one).
    fn key_for(&self, chunk: &[Item]) -> Option<Secret> {
        match self.mode {
            AuthMode::SidecarKey => self.key.current(),
            AuthMode::Passthrough => chunk
                .first()
                .and_then(|i| i.client_key.clone())
                .map(Secret::new)
                .or_else(|| self.key.current()),
        }
    }

    /// Sends `chunk` until it is accepted, dead-lettered, or must be split.
    async fn send_until_resolved(
        &mut self,
        chunk: &[Item],
        stop: &CancellationToken,
    ) -> Result<Resolution, Stopped> {
        let mut retries: u32 = 0;
        // The body does not change across retries: framed and compressed once.
        let framed = batch::frame(chunk);
        let body_len = framed.len();
        let body = or_stop(stop, self.client.prepare(framed)).await?;
        loop {
            let key_version = *self.key_rx.borrow_and_update();
            let Some(key) = self.key_for(chunk) else {
                self.enter_hold(HoldCause::NoKey);
                self.wait_in_hold(key_version, stop).await?;
                continue;
            };

            let waited = or_stop(stop, self.limits.acquire(chunk.len())).await?;
            if !waited.is_zero() {
                self.metrics.rate_limit_wait.inc_by(waited.as_secs_f64());
            }

            let started = Instant::now();
            let result = or_stop(stop, self.client.send(&body, &key)).await?;
            self.metrics
                .latency
                .observe(started.elapsed().as_secs_f64());

            let (outcome, status, response, reason) = match result {
                Ok(resp) => {
                    let outcome = client::classify(resp.status, &resp.headers, SystemTime::now());
                    let code = resp.status.as_u16();
                    // Kept for the dead-letter store and logs; a collector echoing the key must
                    // not make it leak there.
                    let text =
                        String::from_utf8_lossy(&resp.body).replace(key.expose(), "[redacted]");
                    (outcome, Some(code), text, format!("HTTP {code}"))
                }
                Err(ClientError::InvalidKey) => {
                    if let Some(client_key) = self.client_key_of(chunk) {
                        self.hold_client_key(&client_key, None);
                        return Ok(Resolution::Hold);
                    }
                    self.enter_hold(HoldCause::InvalidKey);
                    self.wait_in_hold(key_version, stop).await?;
                    continue;
                }
                Err(e) => (
                    Outcome::Retry { retry_after: None },
                    None,
                    String::new(),
                    error_chain(&e),
                ),
            };
            tracing::debug!(runs = chunk.len(), bytes = body_len, %reason, "request to the collector finished");

            match outcome {
                Outcome::Success => {
                    self.metrics.request(RequestOutcome::Success);
                    self.metrics.runs.inc_by(chunk.len() as u64);
                    self.metrics.bytes.inc_by(body_len as u64);
                    self.metrics.wire_bytes.inc_by(body.bytes.len() as u64);
                    self.remember_delivered(chunk);
                    self.observe(RunOutcome::Delivered, chunk);
                    self.resolve(chunk);
                    self.link_ok();
                    self.client_key_accepted(chunk);
                    return Ok(Resolution::Done);
                }
                Outcome::Retry { retry_after } => {
                    self.metrics.request(RequestOutcome::Retry);
                    self.metrics.retries.inc();
                    retries = retries.saturating_add(1);
                    if self.forward.max_retries > 0 && retries > self.forward.max_retries {
                        tracing::warn!(
                            runs = chunk.len(),
                            retries = self.forward.max_retries,
                            %reason,
                            "giving up after forward.max_retries retries; runs moved to the dead-letter store"
                        );
                        self.dead_letter(chunk, DeadLetterReason::GaveUp, status, &response, stop)
                            .await?;
                        return Ok(Resolution::Done);
                    }
                    let sleep = self.backoff.next_sleep(retry_after);
                    self.enter_outage(&reason, sleep);
                    or_stop(stop, tokio::time::sleep(sleep)).await?;
                }
                Outcome::TooLarge => {
                    self.link_ok();
                    self.client_key_accepted(chunk);
                    if chunk.len() > 1 {
                        self.metrics.request(RequestOutcome::Split);
                        self.metrics.split(SplitCause::TooLarge);
                        tracing::debug!(
                            runs = chunk.len(),
                            "collector answered 413; splitting the request"
                        );
                        return Ok(Resolution::Split);
                    }
                    self.metrics.request(RequestOutcome::DeadLetter);
                    tracing::warn!(
                        seq = chunk[0].seq,
                        bytes = chunk[0].run.len(),
                        "the collector refused a single run as too large (HTTP 413); moved to the dead-letter store"
                    );
                    self.dead_letter(chunk, DeadLetterReason::TooLarge, status, &response, stop)
                        .await?;
                    return Ok(Resolution::Done);
                }
                Outcome::Reject => {
                    self.link_ok();
                    self.client_key_accepted(chunk);
                    if chunk.len() > 1 {
                        // One bad run must not take the others (other clients' among them) to
                        // the dead-letter store: halve until the rejected runs are alone.
                        self.metrics.request(RequestOutcome::Split);
                        self.metrics.split(SplitCause::Rejected);
                        tracing::debug!(
                            status = status.unwrap_or_default(),
                            runs = chunk.len(),
                            "the collector rejected a request of several runs; splitting it to isolate the rejected ones"
                        );
                        return Ok(Resolution::Split);
                    }
                    self.metrics.request(RequestOutcome::DeadLetter);
                    tracing::warn!(
                        seq = chunk[0].seq,
                        status = status.unwrap_or_default(),
                        response = %crate::model::text::truncate(&response, 512),
                        "the collector rejected a run permanently; moved to the dead-letter store"
                    );
                    self.dead_letter(chunk, DeadLetterReason::Rejected, status, &response, stop)
                        .await?;
                    return Ok(Resolution::Done);
                }
                Outcome::AuthHold => {
                    self.metrics.request(RequestOutcome::AuthHold);
                    if let Some(client_key) = self.client_key_of(chunk) {
                        self.hold_client_key(&client_key, status);
                        return Ok(Resolution::Hold);
                    }
                    self.enter_hold(HoldCause::Rejected(status.unwrap_or(401)));
                    self.wait_in_hold(key_version, stop).await?;
                }
            }
        }
    }

    /// Records the fingerprints of runs the collector accepted (only ever after a 2xx). Runs
    /// out of dedup's scope have none (0) and are not recorded.
    fn remember_delivered(&mut self, chunk: &[Item]) {
        if !self.dedup.enabled() {
            return;
        }
        let mut evicted = 0u64;
        for item in chunk {
            if item.fingerprint != 0 && self.dedup.record(item.fingerprint) {
                evicted += 1;
            }
        }
        if evicted > 0 {
            self.metrics.dedup_evictions.inc_by(evicted);
        }
        self.metrics
            .dedup_entries
            .set(i64::try_from(self.dedup.len()).unwrap_or(i64::MAX));
    }

    /// Writes runs to the dead-letter store and resolves them. A failed write is tried once
    /// more (on a fresh file); if that fails too, it is logged and counted, and the runs are
    /// resolved all the same: they are lost as dead letters, and delivery of other runs goes on.
    async fn dead_letter(
        &mut self,
        items: &[Item],
        reason: DeadLetterReason,
        status: Option<u16>,
        response: &str,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let entries: Vec<DeadLetter> = items
            .iter()
            .map(|i| DeadLetter {
                reason,
                status,
                response: crate::model::text::truncate(
                    response,
                    crate::deadletter::MAX_RESPONSE_CHARS,
                )
                .to_string(),
                run: i.run.clone(),
                client_key: i.client_key.clone(),
            })
            .collect();
        let runs = items.len() as u64;
        let mut result = or_stop(stop, self.dead_letters.append(entries.clone())).await?;
        if result.is_err() {
            result = or_stop(stop, self.dead_letters.append(entries)).await?;
        }
        match result {
            Ok(report) => {
                if std::mem::take(&mut self.dead_letter_failing) {
                    tracing::info!("dead-letter store writable again");
                }
                self.metrics
                    .dead_letter_bytes
                    .set(i64::try_from(report.store_bytes).unwrap_or(i64::MAX));
                if report.evicted_runs > 0 {
                    self.metrics
                        .dead_letters_dropped(DeadLetterDrop::Evicted, report.evicted_runs);
                    if std::mem::replace(&mut self.dead_letter_evicted, true) {
                        tracing::debug!(runs = report.evicted_runs, "oldest dead letters removed");
                    } else {
                        tracing::warn!(
                            runs = report.evicted_runs,
                            max_bytes = self.forward.dead_letter_max_bytes,
                            "the dead-letter store reached forward.dead_letter_max_bytes; its oldest files are removed to make room (counted in dynamiq_sidecar_forward_dead_letters_dropped_total)"
                        );
                    }
                }
                if report.refused_runs > 0 {
                    self.metrics
                        .dead_letters_dropped(DeadLetterDrop::NoRoom, report.refused_runs);
                    tracing::warn!(
                        runs = report.refused_runs,
                        max_bytes = self.forward.dead_letter_max_bytes,
                        "dead-lettered runs larger than forward.dead_letter_max_bytes together; not kept"
                    );
                }
            }
            Err(e) => {
                self.metrics
                    .dead_letters_dropped(DeadLetterDrop::WriteFailed, runs);
                if std::mem::replace(&mut self.dead_letter_failing, true) {
                    tracing::debug!(error = %e, runs, "dead-letter write failed again");
                } else {
                    tracing::error!(
                        error = %e,
                        runs,
                        "cannot write the dead-letter store; the runs the collector refused are acknowledged without a dead-letter copy (lost) and delivery goes on"
                    );
                }
            }
        }
        self.metrics.dead_letters(reason, runs);
        self.observe(RunOutcome::DeadLettered, items);
        self.resolve(items);
        Ok(())
    }

    /// The client key of a passthrough `chunk` (`None` in sidecar-key mode, or for runs stored
    /// without one: those use the sidecar's key and its hold).
    fn client_key_of(&self, chunk: &[Item]) -> Option<String> {
        match self.mode {
            AuthMode::SidecarKey => None,
            AuthMode::Passthrough => chunk.first()?.client_key.clone(),
        }
    }

    /// The collector rejected a client's key (passthrough mode): hold that key only.
    fn hold_client_key(&mut self, client_key: &str, status: Option<u16>) {
        // A 401/403 is an answer: the collector is reachable.
        if status.is_some() {
            if let Some(outage) = self.outage.take() {
                tracing::info!(after = ?outage.since.elapsed(), "collector reachable again");
            }
            self.backoff.reset();
        }
        if self.held.hold(client_key, Instant::now()) {
            let why = match status {
                Some(code) => format!("rejected a client's access key (HTTP {code})"),
                None => {
                    "cannot send a client's access key (characters not allowed in an HTTP header)"
                        .to_string()
                }
            };
            tracing::warn!(
                held_keys = self.held.len(),
                "the collector {why} in passthrough mode: an org-scoped or revoked key? Dynamiq needs a \
                 project-scoped access key. That key's runs are held (they stay in the buffer) and retried \
                 with backoff up to forward.auth_hold_retry; other keys' runs keep flowing"
            );
        } else {
            tracing::debug!(
                held_keys = self.held.len(),
                "a held client key is still rejected"
            );
        }
        self.update_held_gauges();
    }

    /// The collector answered `chunk` with something other than 401/403: its client key (if
    /// held) works again.
    fn client_key_accepted(&mut self, chunk: &[Item]) {
        let Some(client_key) = self.client_key_of(chunk) else {
            return;
        };
        if let Some(after) = self.held.release(&client_key) {
            tracing::info!(
                after = ?after,
                held_keys = self.held.len(),
                "the collector accepts a held client key again; its runs are delivered"
            );
            self.update_held_gauges();
        }
    }

    /// The collector gave a definitive answer (not retryable, not 401/403): leave any outage or
    /// hold. An answer other than 401/403 means the key was accepted.
    fn link_ok(&mut self) {
        self.backoff.reset();
        if let Some(outage) = self.outage.take() {
            tracing::info!(
                after = ?outage.since.elapsed(),
                retries = outage.retries,
                "collector reachable again; delivery resumed"
            );
        }
        if self.hold.take().is_some() {
            self.readiness.set(Latch::UpstreamAuthorized, true);
            self.metrics.auth_hold.set(0);
            tracing::info!("the collector accepted the access key; delivery resumed");
        }
    }

    /// A retryable failure: log on entering the outage, debug afterwards.
    fn enter_outage(&mut self, reason: &str, sleep: Duration) {
        match &mut self.outage {
            Some(outage) => {
                outage.retries += 1;
                tracing::debug!(%reason, retries = outage.retries, retry_in = ?sleep, "collector still unavailable; retrying");
            }
            None => {
                tracing::warn!(
                    %reason,
                    retry_in = ?sleep,
                    "collector unavailable; retrying with backoff (runs stay in the buffer)"
                );
                self.outage = Some(Outage {
                    since: Instant::now(),
                    retries: 1,
                });
            }
        }
    }

    /// Enters (or stays in) the hold: readiness false, one warning per new cause.
    fn enter_hold(&mut self, cause: HoldCause) {
        // A 401/403 is an answer: the collector is reachable.
        if !matches!(cause, HoldCause::NoKey | HoldCause::InvalidKey) {
            self.outage = None;
        }
        self.backoff.reset();
        if self.hold == Some(cause) {
            tracing::debug!(?cause, "delivery still held");
            return;
        }
        self.hold = Some(cause);
        self.readiness.set(Latch::UpstreamAuthorized, false);
        self.metrics.auth_hold.set(1);
        let retry = humantime::format_duration(self.forward.auth_hold_retry);
        match cause {
            HoldCause::NoKey => tracing::warn!(
                "no access key: set DYNAMIQ_ACCESS_KEY or upstream.access_key_file (delivery is held; runs stay in the buffer)"
            ),
            HoldCause::InvalidKey => tracing::warn!(
                "the access key contains characters not allowed in an HTTP header (delivery is held; runs stay in the buffer)"
            ),
            HoldCause::Rejected(status) => {
                let whose = match self.mode {
                    AuthMode::SidecarKey => "the access key",
                    AuthMode::Passthrough => {
                        "the sidecar's access key (passthrough mode, for runs stored without a client key)"
                    }
                };
                tracing::warn!(
                    "the collector rejected {whose} (HTTP {status}): an org-scoped or revoked key? Dynamiq needs a \
                     project-scoped access key. Delivery is held (runs stay in the buffer) and retried every {retry} \
                     or as soon as the key changes"
                );
            }
        }
    }

    /// Waits for `forward.auth_hold_retry`, or for a key change (immediately if the key changed
    /// since `key_version` was read).
    async fn wait_in_hold(
        &mut self,
        key_version: u64,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        if *self.key_rx.borrow() != key_version {
            return Ok(());
        }
        let rx = &mut self.key_rx;
        let changed = async {
            if rx.changed().await.is_err() {
                // The provider is gone (cannot happen while we hold it): rely on the timer.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Err(Stopped),
            _ = changed => tracing::info!("access key changed; retrying delivery"),
            _ = tokio::time::sleep(self.forward.auth_hold_retry) => {}
        }
        Ok(())
    }
}
