//! The forwarder's Prometheus metrics, all prefixed `dynamiq_sidecar_forward_`.
//!
//! Owns: registration in the app's registry and the handles the loop updates.
//!
//! Guarantees: labels come from small closed enums (bounded cardinality); no metric ever carries
//! a key, a URL or a response body.
//!
//! Fails: never.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use crate::deadletter::DeadLetterReason;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;

/// What became of one upstream request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// 2xx.
    Success,
    /// Retryable status, timeout or connection error.
    Retry,
    /// 413: split in halves.
    Split,
    /// Permanent rejection, dead-lettered.
    DeadLetter,
    /// 401/403: delivery held.
    AuthHold,
}

impl EncodeLabelValue for RequestOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            RequestOutcome::Success => "success",
            RequestOutcome::Retry => "retry",
            RequestOutcome::Split => "split",
            RequestOutcome::DeadLetter => "dead_letter",
            RequestOutcome::AuthHold => "auth_hold",
        })
    }
}

/// Why a dead-lettered run has no copy in the dead-letter store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterDrop {
    /// Its file was removed to keep the store under `forward.dead_letter_max_bytes`.
    Evicted,
    /// The runs of one write together exceed `forward.dead_letter_max_bytes`: not written.
    NoRoom,
    /// The write failed (disk full, directory unwritable).
    WriteFailed,
}

impl EncodeLabelValue for DeadLetterDrop {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            DeadLetterDrop::Evicted => "evicted",
            DeadLetterDrop::NoRoom => "no_room",
            DeadLetterDrop::WriteFailed => "write_failed",
        })
    }
}

/// Why a request was split in halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SplitCause {
    /// 413.
    TooLarge,
    /// 400/422 (and other permanent 4xx) for several runs: isolating the rejected ones.
    Rejected,
}

impl EncodeLabelValue for SplitCause {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            SplitCause::TooLarge => "too_large",
            SplitCause::Rejected => "rejected",
        })
    }
}

/// `{reason=...}` of a dead-letter drop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DropLabels {
    /// The reason.
    pub reason: DeadLetterDrop,
}

/// `{cause=...}` of a split.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SplitLabels {
    /// The cause.
    pub cause: SplitCause,
}

/// `{outcome=...}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The outcome.
    pub outcome: RequestOutcome,
}

/// `{reason=...}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The reason.
    pub reason: DeadLetterReason,
}

/// Handles to every forwarder metric.
#[derive(Debug, Clone)]
pub struct ForwardMetrics {
    /// Runs acknowledged by the collector.
    pub runs: Counter,
    /// Body bytes acknowledged by the collector.
    pub bytes: Counter,
    /// Requests by outcome.
    pub requests: Family<OutcomeLabels, Counter>,
    /// Retries (retryable answers and transport errors).
    pub retries: Counter,
    /// Runs written to the dead-letter store, by reason.
    pub dead_lettered: Family<ReasonLabels, Counter>,
    /// Buffer records whose envelope could not be decoded (skipped, logged).
    pub corrupt_records: Counter,
    /// Upstream request latency in seconds (answers and transport errors alike).
    pub latency: Histogram,
    /// Seconds spent waiting for the rate limiters.
    pub rate_limit_wait: Counter<f64, AtomicU64>,
    /// 1 while delivery is held for a missing or rejected key.
    pub auth_hold: Gauge,
    /// Runs of the batch being delivered.
    pub in_flight_runs: Gauge,
    /// Request body bytes on the wire (after compression) of requests the collector accepted.
    pub wire_bytes: Counter,
    /// Runs acknowledged without being sent because an identical copy was already delivered.
    pub dedup_suppressed_runs: Counter,
    /// Bytes of those runs (what sending them would have added to request bodies, uncompressed).
    pub dedup_saved_bytes: Counter,
    /// Delivered-run fingerprints evicted from the bounded duplicate-suppression memory.
    pub dedup_evictions: Counter,
    /// Delivered-run fingerprints currently remembered.
    pub dedup_entries: Gauge,
    /// Requests split in halves, by cause.
    pub splits: Family<SplitLabels, Counter>,
    /// Dead-lettered runs without a copy in the store, by reason.
    pub dead_letters_dropped: Family<DropLabels, Counter>,
    /// Bytes of the dead-letter files (after the last write).
    pub dead_letter_bytes: Gauge,
    /// Passthrough mode: client keys whose runs are held after a 401/403.
    pub held_keys: Gauge,
    /// Passthrough mode: runs of held client keys waiting in memory.
    pub held_runs: Gauge,
    /// Times reading stopped because held runs reached `forward.auth_hold_max_bytes`.
    pub auth_hold_bound_pauses: Counter,
}

impl ForwardMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            runs: Counter::default(),
            bytes: Counter::default(),
            requests: Family::default(),
            retries: Counter::default(),
            dead_lettered: Family::default(),
            corrupt_records: Counter::default(),
            latency: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            rate_limit_wait: Counter::default(),
            auth_hold: Gauge::default(),
            in_flight_runs: Gauge::default(),
            wire_bytes: Counter::default(),
            dedup_suppressed_runs: Counter::default(),
            dedup_saved_bytes: Counter::default(),
            dedup_evictions: Counter::default(),
            dedup_entries: Gauge::default(),
            splits: Family::default(),
            dead_letters_dropped: Family::default(),
            dead_letter_bytes: Gauge::default(),
            held_keys: Gauge::default(),
            held_runs: Gauge::default(),
            auth_hold_bound_pauses: Counter::default(),
        };
        let r = registry;
        r.register(
            "dynamiq_sidecar_forward_runs",
            "Runs delivered to the collector",
            m.runs.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_bytes",
            "Request body bytes delivered to the collector",
            m.bytes.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_requests",
            "Requests to the collector by outcome",
            m.requests.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_retries",
            "Retried requests (retryable answers, timeouts, connection errors)",
            m.retries.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_dead_lettered_runs",
            "Runs written to the dead-letter store by reason",
            m.dead_lettered.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_corrupt_records",
            "Buffer records whose envelope could not be decoded",
            m.corrupt_records.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_upstream_latency_seconds",
            "Latency of requests to the collector",
            m.latency.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_rate_limit_wait_seconds",
            "Time spent waiting for the rate limiters",
            m.rate_limit_wait.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_auth_hold",
            "1 while delivery is held for a missing or rejected access key",
            m.auth_hold.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_in_flight_runs",
            "Runs of the batch being delivered",
            m.in_flight_runs.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_wire_bytes",
            "Request body bytes sent on the wire (after compression) and accepted by the collector",
            m.wire_bytes.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_dedup_suppressed_runs",
            "Runs acknowledged without being sent: an identical copy was already delivered",
            m.dedup_suppressed_runs.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_dedup_saved_bytes",
            "Uncompressed body bytes not sent thanks to duplicate suppression",
            m.dedup_saved_bytes.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_dedup_evictions",
            "Delivered-run fingerprints evicted from the duplicate-suppression memory",
            m.dedup_evictions.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_dedup_entries",
            "Delivered-run fingerprints remembered for duplicate suppression",
            m.dedup_entries.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_splits",
            "Requests split in halves: 413, or a permanent rejection of several runs",
            m.splits.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_dead_letters_dropped",
            "Dead-lettered runs without a copy in the dead-letter store (evicted at its bound, no room, write failed)",
            m.dead_letters_dropped.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_dead_letter_bytes",
            "Bytes of the dead-letter files",
            m.dead_letter_bytes.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_held_keys",
            "Client keys (passthrough mode) whose runs are held after a 401/403",
            m.held_keys.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_held_runs",
            "Runs of held client keys (passthrough mode) waiting in memory",
            m.held_runs.clone(),
        );
        r.register(
            "dynamiq_sidecar_forward_auth_hold_bound_pauses",
            "Times reading stopped because held runs reached forward.auth_hold_max_bytes",
            m.auth_hold_bound_pauses.clone(),
        );
        m
    }

    /// Counts a split.
    pub fn split(&self, cause: SplitCause) {
        self.splits.get_or_create(&SplitLabels { cause }).inc();
    }

    /// Counts dead-lettered runs without a copy in the store.
    pub fn dead_letters_dropped(&self, reason: DeadLetterDrop, runs: u64) {
        self.dead_letters_dropped
            .get_or_create(&DropLabels { reason })
            .inc_by(runs);
    }

    /// Counts one request outcome.
    pub fn request(&self, outcome: RequestOutcome) {
        self.requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts dead-lettered runs.
    pub fn dead_letters(&self, reason: DeadLetterReason, runs: u64) {
        self.dead_lettered
            .get_or_create(&ReasonLabels { reason })
            .inc_by(runs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_the_prefix_and_snake_case_labels() {
        let mut reg = Registry::default();
        let m = ForwardMetrics::register(&mut reg);
        m.request(RequestOutcome::DeadLetter);
        m.dead_letters(DeadLetterReason::TooLarge, 2);
        m.auth_hold.set(1);
        m.split(SplitCause::Rejected);
        m.dead_letters_dropped(DeadLetterDrop::Evicted, 3);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains(r#"dynamiq_sidecar_forward_requests_total{outcome="dead_letter"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"dynamiq_sidecar_forward_dead_lettered_runs_total{reason="too_large"} 2"#
            ),
            "{out}"
        );
        assert!(out.contains("dynamiq_sidecar_forward_auth_hold 1"), "{out}");
        assert!(
            out.contains(r#"dynamiq_sidecar_forward_splits_total{cause="rejected"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"dynamiq_sidecar_forward_dead_letters_dropped_total{reason="evicted"} 3"#
            ),
            "{out}"
        );
        for name in [
            "dynamiq_sidecar_forward_dedup_suppressed_runs_total",
            "dynamiq_sidecar_forward_dedup_saved_bytes_total",
            "dynamiq_sidecar_forward_dedup_evictions_total",
            "dynamiq_sidecar_forward_dedup_entries",
            "dynamiq_sidecar_forward_wire_bytes_total",
            "dynamiq_sidecar_forward_dead_letter_bytes",
            "dynamiq_sidecar_forward_held_keys",
            "dynamiq_sidecar_forward_held_runs",
            "dynamiq_sidecar_forward_auth_hold_bound_pauses_total",
        ] {
            assert!(out.contains(name), "{name}: {out}");
        }
        assert!(
            out.contains("dynamiq_sidecar_forward_rate_limit_wait_seconds_total"),
            "{out}"
        );
        assert!(
            out.contains("dynamiq_sidecar_forward_upstream_latency_seconds_bucket"),
            "{out}"
        );
    }
}
