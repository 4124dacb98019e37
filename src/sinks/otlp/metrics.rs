//! The `dynamiq_sidecar_otlp_output_*` metrics and the reasons spans are dropped.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why spans were dropped by the OTLP output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The backend answered with a permanent error.
    Rejected,
    /// The run could not be converted to a span.
    ConversionFailed,
    /// The buffer record could not be decoded.
    Undecodable,
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            DropReason::Rejected => "rejected",
            DropReason::ConversionFailed => "conversion_failed",
            DropReason::Undecodable => "undecodable",
        })
    }
}

/// `{reason=...}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The reason.
    pub reason: DropReason,
}

/// The `dynamiq_sidecar_otlp_output_*` metrics.
#[derive(Debug, Clone, Default)]
pub struct OtlpOutputMetrics {
    /// Spans the backend accepted.
    pub spans_exported: Counter,
    /// Spans the backend reported as rejected in a partial success.
    pub spans_rejected: Counter,
    /// Spans (runs) dropped, by reason.
    pub dropped: Family<ReasonLabels, Counter>,
    /// Retries (retryable answers and transport errors).
    pub retries: Counter,
    /// Records not yet acknowledged by the OTLP output.
    pub pending_records: Gauge,
}

impl OtlpOutputMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("dynamiq_sidecar_otlp_output");
        r.register(
            "spans_exported",
            "Spans the OTLP backend accepted",
            m.spans_exported.clone(),
        );
        r.register(
            "spans_rejected",
            "Spans the OTLP backend reported as rejected (partial success)",
            m.spans_rejected.clone(),
        );
        r.register(
            "dropped",
            "Spans not exported, by reason (the Dynamiq collector still receives the runs)",
            m.dropped.clone(),
        );
        r.register(
            "retries",
            "Export attempts that failed and are retried",
            m.retries.clone(),
        );
        r.register(
            "pending_records",
            "Buffered records the OTLP output has not acknowledged yet",
            m.pending_records.clone(),
        );
        m
    }

    pub(super) fn drop_spans(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.dropped
                .get_or_create(&ReasonLabels { reason })
                .inc_by(n);
        }
    }
}
