//! Query index metrics: traces and run bytes retained, traces evicted by reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set of `dynamiq_sidecar_query_evictions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    /// `age` (past `query.retention`) or `bytes` (over `query.max_bytes`).
    pub reason: &'static str,
}

/// Handles to the query index metrics.
#[derive(Clone, Default)]
pub struct QueryMetrics {
    /// Traces held by the index.
    pub traces: Gauge,
    /// Run JSON bytes held by the index.
    pub bytes: Gauge,
    /// Traces evicted, by reason.
    pub evictions: Family<EvictionLabels, Counter>,
}

impl QueryMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "dynamiq_sidecar_query_traces_retained",
            "Traces held by the local query index",
            m.traces.clone(),
        );
        registry.register(
            "dynamiq_sidecar_query_bytes_retained",
            "Run JSON bytes held by the local query index",
            m.bytes.clone(),
        );
        registry.register(
            "dynamiq_sidecar_query_evictions",
            "Traces evicted from the local query index, by reason (age, bytes)",
            m.evictions.clone(),
        );
        m
    }

    pub(super) fn evicted(&self, reason: &'static str, n: u64) {
        self.evictions
            .get_or_create(&EvictionLabels { reason })
            .inc_by(n);
    }
}
