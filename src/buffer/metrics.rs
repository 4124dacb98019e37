//! Prometheus metrics of the buffer, all prefixed `dynamiq_sidecar_buffer_`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Why records were dropped without being acknowledged by every consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// `max_bytes` reached under `when_full = "drop_oldest"`.
    DropOldest,
    /// The disk (or quota) was full under `when_full = "drop_oldest"`.
    DiskFull,
    /// The buffer was full and a yielding consumer (the OTLP output) was the only one still
    /// holding the oldest segment: it skips those records, the other consumers lose nothing.
    OutputLag,
}

impl DropReason {
    /// Label value (`drop_oldest`, `disk_full`).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::DropOldest => "drop_oldest",
            DropReason::DiskFull => "disk_full",
            DropReason::OutputLag => "output_lag",
        }
    }
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Label set of the dropped-records counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DropLabels {
    /// Why.
    pub reason: DropReason,
}

/// The buffer's metrics (cheap to clone; clones share values).
#[derive(Debug, Clone)]
pub(crate) struct BufferMetrics {
    /// Bytes of all segment files (durable part).
    pub bytes: Gauge,
    /// Records in all segments.
    pub records: Gauge,
    /// Segment files.
    pub segments: Gauge,
    /// Age of the oldest record not yet acknowledged by every consumer.
    pub oldest_unacked_age: Gauge<f64, AtomicU64>,
    /// Records appended.
    pub appended_records: Counter,
    /// Bytes appended (headers included).
    pub appended_bytes: Counter,
    /// Records dropped before every consumer acknowledged them.
    pub dropped_records: Family<DropLabels, Counter>,
    /// Corrupt records (or regions) found and skipped.
    pub corrupt_records: Counter,
    /// fsyncs (segments and directories).
    pub fsyncs: Counter,
    /// Duration of fsyncs.
    pub fsync_duration: Histogram,
    /// Appends refused with `Full`.
    pub full_rejections: Counter,
}

impl BufferMetrics {
    /// Fresh, unregistered metrics.
    pub fn new() -> Self {
        Self {
            bytes: Gauge::default(),
            records: Gauge::default(),
            segments: Gauge::default(),
            oldest_unacked_age: Gauge::default(),
            appended_records: Counter::default(),
            appended_bytes: Counter::default(),
            dropped_records: Family::default(),
            corrupt_records: Counter::default(),
            fsyncs: Counter::default(),
            // 100 µs .. ~3.3 s
            fsync_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            full_rejections: Counter::default(),
        }
    }

    /// Fresh metrics registered into `registry` under `dynamiq_sidecar_buffer_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::new();
        let r = registry.sub_registry_with_prefix("dynamiq_sidecar_buffer");
        r.register("bytes", "Bytes of all segment files", m.bytes.clone());
        r.register(
            "records",
            "Records in all segments (acknowledged or not)",
            m.records.clone(),
        );
        r.register("segments", "Segment files", m.segments.clone());
        r.register_with_unit(
            "oldest_unacked_age",
            "Age of the oldest record not yet acknowledged by every consumer",
            Unit::Seconds,
            m.oldest_unacked_age.clone(),
        );
        r.register(
            "appended_records",
            "Records appended",
            m.appended_records.clone(),
        );
        r.register(
            "appended_bytes",
            "Bytes appended, record headers included",
            m.appended_bytes.clone(),
        );
        r.register(
            "dropped_records",
            "Records deleted before every consumer acknowledged them, by reason",
            m.dropped_records.clone(),
        );
        r.register(
            "corrupt_records",
            "Corrupt records skipped and copied to corrupt/ (at start-up: records lost; while reading: corrupt regions)",
            m.corrupt_records.clone(),
        );
        r.register(
            "fsyncs",
            "fsync calls on segments and the directory",
            m.fsyncs.clone(),
        );
        r.register_with_unit(
            "fsync_duration",
            "Duration of fsync calls",
            Unit::Seconds,
            m.fsync_duration.clone(),
        );
        r.register(
            "full_rejections",
            "Appends refused because the buffer or disk was full",
            m.full_rejections.clone(),
        );
        m
    }

    /// Counts one fsync that took `took`.
    pub fn observe_fsync(&self, took: Duration) {
        self.fsyncs.inc();
        self.fsync_duration.observe(took.as_secs_f64());
    }

    /// Counts `n` dropped records.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.dropped_records
                .get_or_create(&DropLabels { reason })
                .inc_by(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn metrics_are_exported_under_the_buffer_prefix() {
        let mut registry = Registry::default();
        let m = BufferMetrics::register(&mut registry);
        m.dropped(DropReason::DiskFull, 3);
        m.observe_fsync(Duration::from_millis(2));
        m.bytes.set(10);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        for name in [
            "dynamiq_sidecar_buffer_bytes 10",
            "dynamiq_sidecar_buffer_records ",
            "dynamiq_sidecar_buffer_segments ",
            "dynamiq_sidecar_buffer_oldest_unacked_age_seconds ",
            "dynamiq_sidecar_buffer_appended_records_total ",
            "dynamiq_sidecar_buffer_appended_bytes_total ",
            "dynamiq_sidecar_buffer_dropped_records_total{reason=\"disk_full\"} 3",
            "dynamiq_sidecar_buffer_corrupt_records_total ",
            "dynamiq_sidecar_buffer_fsyncs_total 1",
            "dynamiq_sidecar_buffer_fsync_duration_seconds_count 1",
            "dynamiq_sidecar_buffer_full_rejections_total ",
        ] {
            assert!(out.contains(name), "missing {name:?} in\n{out}");
        }
    }
}
