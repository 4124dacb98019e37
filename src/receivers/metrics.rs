//! Ingest metrics: requests by outcome, runs accepted, bytes received, time to acknowledge.
//! Labels come from a closed set (the error codes of [`super::error::ApiError`] plus `accepted`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::error::ApiError;

/// Label set of `dynamiq_sidecar_ingest_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `dynamiq`, `otlp_http`, `otlp_grpc`, `otlp_metrics` or `otlp_grpc_metrics`.
    pub input: &'static str,
    /// `accepted` or an error code (`bad_request`, `payload_too_large`, ...).
    pub outcome: &'static str,
}

/// Handles to the ingest metrics.
#[derive(Clone)]
pub struct IngestMetrics {
    /// Requests by input and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Runs accepted (acknowledged to clients).
    pub runs_accepted: Counter,
    /// OTLP spans converted and acknowledged.
    pub spans_accepted: Counter,
    /// OTLP spans rejected as invalid (answered with a partial success).
    pub spans_rejected: Counter,
    /// Request body bytes received (before decompression).
    pub bytes_received: Counter,
    /// OTLP metric data points acknowledged and not forwarded.
    pub metric_points_dropped: Counter,
    /// Time from the body being read to the acknowledgement (validation + durable append).
    pub ack_latency: Histogram,
}

impl IngestMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            runs_accepted: Counter::default(),
            spans_accepted: Counter::default(),
            spans_rejected: Counter::default(),
            bytes_received: Counter::default(),
            metric_points_dropped: Counter::default(),
            ack_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        };
        registry.register(
            "dynamiq_sidecar_ingest_requests",
            "Ingest requests by input and outcome",
            m.requests.clone(),
        );
        registry.register(
            "dynamiq_sidecar_ingest_runs_accepted",
            "Runs acknowledged to clients (durably buffered)",
            m.runs_accepted.clone(),
        );
        registry.register(
            "dynamiq_sidecar_ingest_spans_accepted",
            "OTLP spans converted to runs and acknowledged",
            m.spans_accepted.clone(),
        );
        registry.register(
            "dynamiq_sidecar_ingest_spans_rejected",
            "OTLP spans rejected as invalid (partial success)",
            m.spans_rejected.clone(),
        );
        registry.register(
            "dynamiq_sidecar_ingest_received_bytes",
            "Request body bytes received, before decompression",
            m.bytes_received.clone(),
        );
        registry.register(
            "dynamiq_sidecar_otlp_metric_points_dropped",
            "OTLP metric data points acknowledged and not forwarded (Dynamiq takes traces)",
            m.metric_points_dropped.clone(),
        );
        registry.register(
            "dynamiq_sidecar_ingest_ack_latency_seconds",
            "Time from a body being read to its acknowledgement",
            m.ack_latency.clone(),
        );
        m
    }

    /// Counts one request of `input` by its outcome and, when it was accepted, observes its
    /// time to acknowledgement (from `started`).
    pub fn record<T>(
        &self,
        input: &'static str,
        result: &Result<T, ApiError>,
        started: std::time::Instant,
    ) {
        let outcome = match result {
            Ok(_) => "accepted",
            Err(e) => e.code,
        };
        self.requests
            .get_or_create(&RequestLabels { input, outcome })
            .inc();
        if result.is_ok() {
            self.ack_latency.observe(started.elapsed().as_secs_f64());
        }
    }
}

/// Label set of the per-listener connection metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `http` or `grpc`.
    pub listener: &'static str,
}

/// Label set of `dynamiq_sidecar_connections_closed_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    /// `http` or `grpc`.
    pub listener: &'static str,
    /// `header_timeout`, `idle` or `write_timeout`.
    pub reason: &'static str,
}

/// Connection metrics of one listener (the families are shared by both listeners).
#[derive(Clone)]
pub struct ConnectionMetrics {
    listener: &'static str,
    closed: Family<ClosedLabels, Counter>,
    /// Connections being served.
    pub open: Gauge,
    /// Times the accept loop waited because `ingest.max_connections` were open.
    pub limit_waits: Counter,
    /// Failed `accept` calls (EMFILE, ...).
    pub accept_errors: Counter,
}

/// The families behind every listener's [`ConnectionMetrics`].
#[derive(Clone, Default)]
pub struct ConnectionFamilies {
    closed: Family<ClosedLabels, Counter>,
    open: Family<ListenerLabels, Gauge>,
    limit_waits: Family<ListenerLabels, Counter>,
    accept_errors: Family<ListenerLabels, Counter>,
}

impl ConnectionFamilies {
    /// Creates the families and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let f = Self::default();
        registry.register(
            "dynamiq_sidecar_connections_closed",
            "Connections the sidecar closed, by listener and reason (header_timeout, idle, write_timeout)",
            f.closed.clone(),
        );
        registry.register(
            "dynamiq_sidecar_connections_open",
            "Connections being served, by listener",
            f.open.clone(),
        );
        registry.register(
            "dynamiq_sidecar_connection_limit_waits",
            "Times a listener stopped accepting because ingest.max_connections were open",
            f.limit_waits.clone(),
        );
        registry.register(
            "dynamiq_sidecar_accept_errors",
            "Failed accept calls (e.g. out of file descriptors), retried after a backoff",
            f.accept_errors.clone(),
        );
        f
    }

    /// The handles of one listener.
    pub fn listener(&self, listener: &'static str) -> ConnectionMetrics {
        let labels = ListenerLabels { listener };
        ConnectionMetrics {
            listener,
            closed: self.closed.clone(),
            open: self.open.get_or_create(&labels).clone(),
            limit_waits: self.limit_waits.get_or_create(&labels).clone(),
            accept_errors: self.accept_errors.get_or_create(&labels).clone(),
        }
    }
}

impl ConnectionMetrics {
    /// Counts a connection closed for `reason`.
    pub fn closed(&self, reason: &'static str) {
        self.closed
            .get_or_create(&ClosedLabels {
                listener: self.listener,
                reason,
            })
            .inc();
    }
}
