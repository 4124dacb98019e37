//! OTLP spans → Dynamiq runs (docs/run-span-mapping.md §5).
//!
//! Owns the request: every span is checked (`validate.rs`: the ids and times of docs/run-span-mapping.md §8, value
//! nesting) and becomes one run's JSON bytes, the runs of a trace back to back in one buffer.
//! A span carrying Dynamiq's carriers becomes the exact run it was made from (`restore.rs`, the
//! reverse of `runs_to_spans/carriers.rs`); any other span is mapped from its attributes
//! (`foreign.rs`, its synthesised `metadata` in `metadata.rs`, read back by
//! `runs_to_spans/foreign.rs`). An invalid span is counted and the first three are explained.
//!
//! Guarantees:
//! - every run produced passes the collector's validation ([`crate::model::parse_batch`]);
//! - ids are deterministic: the same span always becomes the same run id, and a span whose
//!   parent is in the same trace gets that parent's run id as `parent_run_id`;
//! - a span carrying Dynamiq's exactness attributes (`dynamiq.*`, written by the run → span
//!   direction) becomes the run it came from, field for field;
//! - a foreign span keeps what a run has no field for under `metadata.otel` (ids, flags, kind,
//!   exact times, status, attributes, events, links, dropped counts, resource, scope), so
//!   span → run → span is near-exact.

mod foreign;
mod metadata;
mod restore;
mod validate;

use std::collections::HashMap;
use std::ops::Range;

use foldhash::fast::RandomState as FastHash;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use self::foreign::{Origin, ResourceContext, ScopeContext, TagCache, span_to_run};
use self::restore::dynamiq_run;
use self::validate::{TOO_DEEP, scope_shallow, validate};
use crate::convert::ids;
use crate::convert::semconv::Known;
use crate::model::batch::RunStatus;

/// Settings of the conversion.
#[derive(Debug, Clone)]
pub struct SpanConvertOptions {
    /// `source_id` of runs whose span and resource name no source.
    pub default_source_id: String,
}

impl Default for SpanConvertOptions {
    fn default() -> Self {
        Self {
            default_source_id: "otel".to_owned(),
        }
    }
}

/// The runs made from one export request, and what was rejected.
#[derive(Debug, Default)]
pub struct ConvertedSpans {
    /// One run's JSON per valid span, in request order.
    pub runs: Vec<Vec<u8>>,
    /// Spans that were invalid and were not converted.
    pub rejected_spans: u64,
    /// Why the first rejected spans were rejected (empty when none were).
    pub error_message: String,
}

/// The runs made from one export request as buffer record payloads (`prefix ‖ run JSON`), in
/// one buffer per trace: the receiver stores and indexes slices of them, so a trace's runs are
/// freed together (the trace index evicts whole traces) rather than one by one, and a run never
/// keeps another trace's bytes alive.
#[derive(Debug, Default)]
pub struct ConvertedRecords {
    /// One buffer per trace (OTLP trace id) with its runs' records back to back.
    pub buffers: Vec<Vec<u8>>,
    /// One entry per record, in request order.
    pub records: Vec<ConvertedRecord>,
    /// Spans that were invalid and were not converted.
    pub rejected_spans: u64,
    /// Why the first rejected spans were rejected (empty when none were).
    pub error_message: String,
}

/// Where one record is in [`ConvertedRecords::buffers`], and what the trace index needs of its
/// run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertedRecord {
    /// Which buffer holds it.
    pub buffer: usize,
    /// Its bytes in that buffer (the envelope prefix, then the run's JSON).
    pub range: Range<usize>,
    /// The run's index fields, as written; `None` when they must be read back from the JSON
    /// (a Dynamiq run rebuilt from its span, or an id that needed escaping).
    pub keys: Option<RunKeys>,
}

/// The fields of a converted run the trace index reads, known while writing it. The ranges
/// are where the string values' text is in the record's buffer (they need no unescaping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKeys {
    /// The `trace_id` value's text.
    pub trace_id: Range<usize>,
    /// The `id` value's text.
    pub id: Range<usize>,
    /// `parent_run_id` is null.
    pub is_root: bool,
    /// `status`.
    pub status: Option<RunStatus>,
    /// `start_time` in ns since the epoch, as written (whole microseconds).
    pub start_ns: u64,
    /// `end_time` in ns since the epoch, as written (`None` when it is null).
    pub end_ns: Option<u64>,
}

/// At most this much of a request's output buffer is reserved before it is known to be needed.
const MAX_UP_FRONT_BYTES: usize = 16 << 20;

/// Converts every valid span of `request` into a run.
pub fn convert_request(
    request: &ExportTraceServiceRequest,
    options: &SpanConvertOptions,
) -> ConvertedSpans {
    let converted = convert_request_to_records(request, options, &[]);
    let runs = converted
        .records
        .iter()
        .map(|record| converted.buffers[record.buffer][record.range.clone()].to_vec())
        .collect();
    ConvertedSpans {
        runs,
        rejected_spans: converted.rejected_spans,
        error_message: converted.error_message,
    }
}

/// [`convert_request`] written as buffer records: each run's JSON preceded by `prefix` (a
/// record's envelope header), the runs of a trace back to back in one buffer, so runs go to the
/// disk buffer and the trace index without a copy.
pub fn convert_request_to_records(
    request: &ExportTraceServiceRequest,
    options: &SpanConvertOptions,
    prefix: &[u8],
) -> ConvertedRecords {
    let mut out = ConvertedRecords::default();
    let mut traces = TraceBuffers::count(request);
    out.records.reserve(traces.spans);
    let mut reasons: Vec<String> = Vec::new();
    let mut tags = TagCache::default();
    for (ri, resource_spans) in request.resource_spans.iter().enumerate() {
        let resource = ResourceContext::new(resource_spans.resource.as_ref(), options);
        let resource_schema = resource_spans.schema_url.as_str();
        for (si, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            let scope = ScopeContext::new(scope_spans.scope.as_ref());
            for (pi, span) in scope_spans.spans.iter().enumerate() {
                let record = validate(span).and_then(|valid| {
                    if !resource.shallow || !scope_shallow(scope_spans.scope.as_ref()) {
                        return Err(TOO_DEEP.to_owned());
                    }
                    let buffer = traces.buffer_of(&valid.trace_id, &mut out.buffers);
                    let run = &mut out.buffers[buffer];
                    let start = run.len();
                    run.extend_from_slice(prefix);
                    let known = Known::scan(&valid.span.attributes);
                    let keys = if known.dq_run_keys.is_some() && dynamiq_run(run, &valid, &known) {
                        None
                    } else {
                        run.truncate(start + prefix.len());
                        let origin = Origin {
                            resource: &resource,
                            resource_schema,
                            scope: &scope,
                            scope_schema: scope_spans.schema_url.as_str(),
                        };
                        span_to_run(run, &valid, &known, &mut tags, &origin)
                    };
                    traces.run_size = run.len() - start;
                    Ok(ConvertedRecord {
                        buffer,
                        range: start..run.len(),
                        keys,
                    })
                });
                match record {
                    Ok(record) => out.records.push(record),
                    Err(reason) => {
                        out.rejected_spans += 1;
                        if reasons.len() < 3 {
                            reasons.push(format!(
                                "resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]: {reason}"
                            ));
                        }
                    }
                }
            }
        }
    }
    if out.rejected_spans > 0 {
        let more = out.rejected_spans - reasons.len() as u64;
        out.error_message = reasons.join("; ");
        if more > 0 {
            out.error_message
                .push_str(&format!("; and {more} more invalid spans"));
        }
    }
    out
}

/// Which output buffer holds each trace's runs, and how large to make a new one.
struct TraceBuffers {
    /// Per OTLP trace id: its spans in the request, and its buffer once it has one.
    traces: HashMap<[u8; 16], (usize, Option<usize>), FastHash>,
    /// Spans in the request.
    spans: usize,
    /// The last record's size: runs of one request are alike, so it sizes new buffers.
    run_size: usize,
}

impl TraceBuffers {
    fn count(request: &ExportTraceServiceRequest) -> Self {
        let mut traces: HashMap<[u8; 16], (usize, Option<usize>), FastHash> = HashMap::default();
        let mut spans = 0;
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            if let Ok(trace_id) = span.trace_id.as_slice().try_into() {
                traces.entry(trace_id).or_default().0 += 1;
            }
            spans += 1;
        }
        Self {
            traces,
            spans,
            run_size: 2048,
        }
    }

    /// The buffer of `trace_id`'s runs, made (sized for all its spans) on first use.
    fn buffer_of(&mut self, trace_id: &[u8; 16], buffers: &mut Vec<Vec<u8>>) -> usize {
        let (spans, buffer) = self.traces.entry(*trace_id).or_default();
        let spans = *spans;
        *buffer.get_or_insert_with(|| {
            // Capped, so one huge run does not reserve for all the others.
            let room = (self.run_size + self.run_size / 4)
                .saturating_mul(spans)
                .min(MAX_UP_FRONT_BYTES);
            buffers.push(Vec::with_capacity(room));
            buffers.len() - 1
        })
    }
}

/// The number of spans in a request.
pub fn count_spans(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum()
}

/// The run id a span converts to (used by tests and the convert command).
pub fn run_id_for(trace_id: &[u8; 16], span_id: &[u8; 8]) -> String {
    ids::format_uuid(&ids::run_id_of_span(trace_id, span_id))
}
