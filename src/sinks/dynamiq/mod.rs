//! The forwarder: reads batches from the disk buffer and delivers them to the Dynamiq collector
//! (`POST {upstream.url}/v1/traces`), acknowledging the buffer only once each run is resolved:
//! accepted by the collector, or refused by it for good and handed to the dead-letter store.
//!
//! Owns: the delivery loop and its state machine (healthy → retrying with backoff → healthy;
//! healthy → held for the key → healthy; in passthrough mode, per client key: flowing → held →
//! flowing), the `upstream_authorized` readiness latch and the `dynamiq_sidecar_forward_*`
//! metrics. This file holds the loop and the forwarder's state; beside it are `policy.rs` (the
//! link's state machine as pure policy), `link.rs` (acting on it: logs, readiness, the wait in a
//! hold, the retries of held client keys), `deliver.rs` (a buffer batch from read to resolution:
//! send, split, park, dead-letter), `dead_letter.rs` (the best-effort write to the store),
//! `ack.rs` (outstanding runs → acknowledgement point), and the pieces it uses: [`batch`] (body
//! framing and request planning), [`client`] (HTTP and status classification), [`retry`](crate::sinks::common::retry)
//! (full-jitter backoff, `Retry-After`), [`ratelimit`], [`deadletter`](crate::deadletter), [`held`] (client keys on
//! hold) and [`metrics`].
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

mod ack;
mod dead_letter;
mod deliver;
mod link;
mod policy;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::admin::readiness::Readiness;
use crate::buffer::Reader;
use crate::deadletter::DeadLetterStore;
use crate::model::auth_mode::AuthMode;
use crate::secret::KeyProvider;
use crate::secret::redact_url;
use crate::sinks::common::consumer::{BatchSource, ReadLimits, Stopped, next_records, or_stop};
use crate::sinks::dynamiq::config::{ForwardConfig, UpstreamConfig};
use ack::Acks;
use client::UpstreamClient;
use dedup::Dedup;
use held::HeldKeys;
use metrics::ForwardMetrics;
use observer::DeliveryObserver;
use policy::Link;
use ratelimit::RateLimits;

/// Pause after a failed buffer read before trying again (at most).
const LOCAL_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Why the forwarder could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The HTTP client could not be built (bad URL, TLS setup).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
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
    /// The link to the collector: outage, hold and backoff.
    link: Link,
    /// Which runs read are outstanding, and so how far the buffer may be acknowledged.
    acks: Acks,
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
            link: Link::new(
                forward.retry_initial,
                forward.retry_max,
                forward.max_retries,
            ),
            acks: Acks::new(),
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
}
