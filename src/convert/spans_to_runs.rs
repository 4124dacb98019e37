//! OTLP spans → Dynamiq runs (CONVERSION.md, "Span → run").
//!
//! Owns span validation (CONTRACT §3: ids of the right length and not all-zero, end not
//! before start) and the mapping of one valid span to one run's JSON bytes.
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

use std::collections::HashMap;
use std::ops::Range;

use foldhash::fast::RandomState as FastHash;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};

use super::ids;
use super::semconv::{self, Known};
use super::time::{as_written, write_ns};
use super::values::{
    ObjectWriter, as_bool, as_f64, as_i64, as_str, find, json_text, write_otlp_attributes,
    write_plain, write_str,
};
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

/// How deep attribute values (arrays and key-value lists in arrays...) may nest. In OTLP/JSON
/// form each level costs up to four JSON levels and the envelope starts nine deep, so 24 keeps
/// every run under the collector's nesting limit ([`crate::model::batch::MAX_DEPTH`]).
const MAX_VALUE_DEPTH: usize = 24;

const TOO_DEEP: &str = "attribute values are nested too deeply to make a valid run";

/// Whether no attribute value nests deeper than `max` levels (a scalar is one level).
fn attributes_within(attrs: &[KeyValue], max: usize) -> bool {
    fn value_within(value: Option<&Value>, max: usize) -> bool {
        match value {
            Some(Value::ArrayValue(a)) => {
                max > 1
                    && a.values
                        .iter()
                        .all(|v| value_within(v.value.as_ref(), max - 1))
            }
            Some(Value::KvlistValue(kv)) => max > 1 && attributes_within(&kv.values, max - 1),
            _ => max >= 1,
        }
    }
    attrs
        .iter()
        .all(|kv| value_within(kv.value.as_ref().and_then(|v| v.value.as_ref()), max))
}

fn scope_shallow(scope: Option<&InstrumentationScope>) -> bool {
    scope.is_none_or(|s| attributes_within(&s.attributes, MAX_VALUE_DEPTH))
}

/// The UUIDv8 trace tag of the trace seen last: spans of one trace come together, and the tag
/// is a SHA-256 that is the same for all of them.
#[derive(Default)]
struct TagCache {
    last: Option<([u8; 16], u64)>,
}

impl TagCache {
    fn get(&mut self, trace_id: &[u8; 16]) -> u64 {
        match self.last {
            Some((id, tag)) if id == *trace_id => tag,
            _ => {
                let tag = ids::trace_tag(trace_id);
                self.last = Some((*trace_id, tag));
                tag
            }
        }
    }
}

/// A span whose ids have been checked.
struct ValidSpan<'a> {
    span: &'a Span,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<[u8; 8]>,
}

fn validate(span: &Span) -> Result<ValidSpan<'_>, String> {
    let trace_id: [u8; 16] = span
        .trace_id
        .as_slice()
        .try_into()
        .map_err(|_| format!("traceId must be 16 bytes, got {}", span.trace_id.len()))?;
    if trace_id == [0; 16] {
        return Err("traceId is all zeros".to_owned());
    }
    let span_id: [u8; 8] = span
        .span_id
        .as_slice()
        .try_into()
        .map_err(|_| format!("spanId must be 8 bytes, got {}", span.span_id.len()))?;
    if span_id == [0; 8] {
        return Err("spanId is all zeros".to_owned());
    }
    let parent_span_id = match span.parent_span_id.len() {
        0 => None,
        8 => {
            let mut p = [0u8; 8];
            p.copy_from_slice(&span.parent_span_id);
            // An all-zero parent is how some exporters spell "no parent".
            (p != [0; 8]).then_some(p)
        }
        n => return Err(format!("parentSpanId must be empty or 8 bytes, got {n}")),
    };
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err("endTimeUnixNano is before startTimeUnixNano".to_owned());
    }
    let shallow = attributes_within(&span.attributes, MAX_VALUE_DEPTH)
        && span
            .events
            .iter()
            .all(|e| attributes_within(&e.attributes, MAX_VALUE_DEPTH))
        && span
            .links
            .iter()
            .all(|l| attributes_within(&l.attributes, MAX_VALUE_DEPTH));
    if !shallow {
        return Err(TOO_DEEP.to_owned());
    }
    Ok(ValidSpan {
        span,
        trace_id,
        span_id,
        parent_span_id,
    })
}

/// What every span of one resource shares.
struct ResourceContext {
    /// `service.instance.id`, else `service.name`, else the configured default.
    source_id: String,
    /// The resource in OTLP/JSON form.
    json: String,
    /// Whether its attributes nest within [`MAX_VALUE_DEPTH`].
    shallow: bool,
}

impl ResourceContext {
    fn new(resource: Option<&Resource>, options: &SpanConvertOptions) -> Self {
        let attrs = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        let source_id = as_str(find(attrs, "service.instance.id"))
            .or_else(|| as_str(find(attrs, "service.name")))
            .filter(|s| !s.is_empty())
            .unwrap_or(&options.default_source_id)
            .to_owned();
        let mut json = Vec::new();
        let mut obj = ObjectWriter::open(&mut json);
        write_otlp_attributes(obj.key("attributes"), attrs.iter());
        if let Some(n) = resource
            .map(|r| r.dropped_attributes_count)
            .filter(|n| *n != 0)
        {
            obj.int("droppedAttributesCount", i64::from(n));
        }
        obj.close();
        let json = String::from_utf8(json).unwrap_or_else(|_| "{}".to_owned());
        let shallow = attributes_within(attrs, MAX_VALUE_DEPTH);
        Self {
            source_id,
            json,
            shallow,
        }
    }
}

/// What every span of one instrumentation scope shares.
struct ScopeContext {
    json: String,
}

impl ScopeContext {
    fn new(scope: Option<&InstrumentationScope>) -> Self {
        let mut json = Vec::new();
        let mut obj = ObjectWriter::open(&mut json);
        if let Some(scope) = scope {
            if !scope.name.is_empty() {
                obj.str("name", &scope.name);
            }
            if !scope.version.is_empty() {
                obj.str("version", &scope.version);
            }
            if !scope.attributes.is_empty() {
                write_otlp_attributes(obj.key("attributes"), scope.attributes.iter());
            }
            if scope.dropped_attributes_count != 0 {
                obj.int(
                    "droppedAttributesCount",
                    i64::from(scope.dropped_attributes_count),
                );
            }
        }
        obj.close();
        let json = String::from_utf8(json).unwrap_or_else(|_| "{}".to_owned());
        Self { json }
    }
}

/// The resource and scope a span was sent under.
#[derive(Clone, Copy)]
struct Origin<'a> {
    resource: &'a ResourceContext,
    resource_schema: &'a str,
    scope: &'a ScopeContext,
    scope_schema: &'a str,
}

/// Where a run's `input` or `output` came from, so the span can be rebuilt without keeping
/// the (often large) attribute twice.
struct Lifted {
    key: &'static str,
    /// `json` when the attribute's string was embedded as JSON, `text` when as a JSON string.
    form: &'static str,
}

fn span_to_run(
    out: &mut Vec<u8>,
    v: &ValidSpan<'_>,
    known: &Known<'_>,
    tags: &mut TagCache,
    origin: &Origin<'_>,
) -> Option<RunKeys> {
    let span = v.span;
    let oi_kind = semconv::openinference_kind(as_str(known.oi_kind), as_str(known.genai_operation));
    let status_code = span.status.as_ref().map(|s| s.code).unwrap_or(0);
    let exception = span.events.iter().rev().find(|e| e.name == "exception");

    let mut run = ObjectWriter::open(out);

    let id = match as_str(known.dq_run_id) {
        Some(id) => str_value(&mut run, "id", id),
        None => Some(uuid_value(
            &mut run,
            "id",
            &ids::run_id_with_tag(tags.get(&v.trace_id), &v.span_id),
        )),
    };
    run.str(
        "name",
        if span.name.is_empty() {
            "(unnamed span)"
        } else {
            &span.name
        },
    );
    let run_type = match as_str(known.dq_run_type) {
        Some(t @ ("workflow" | "flow" | "node")) => t,
        _ if v.parent_span_id.is_none() => "workflow",
        _ => "node",
    };
    run.str("type", run_type);
    let trace_id = match as_str(known.dq_trace_id) {
        Some(t) => str_value(&mut run, "trace_id", t),
        None => Some(uuid_value(&mut run, "trace_id", &v.trace_id)),
    };
    run.str(
        "source_id",
        as_str(known.dq_source_id).unwrap_or(&origin.resource.source_id),
    );
    let session = as_str(known.dq_session_id)
        .or_else(|| as_str(known.session_id))
        .or_else(|| as_str(known.genai_conversation_id))
        .or_else(|| as_str(known.langfuse_session_id));
    match session {
        Some(s) => run.str("session_id", s),
        None => ids::write_uuid(run.key("session_id"), &v.trace_id),
    }
    write_ns(run.key("start_time"), span.start_time_unix_nano);
    let end_ns = if as_bool(known.dq_end_time_missing) == Some(true) {
        run.null("end_time");
        None
    } else {
        write_ns(run.key("end_time"), span.end_time_unix_nano);
        Some(as_written(span.end_time_unix_nano))
    };
    let is_root = as_str(known.dq_parent_run_id).is_none() && v.parent_span_id.is_none();
    match (as_str(known.dq_parent_run_id), v.parent_span_id) {
        (Some(parent), _) => run.str("parent_run_id", parent),
        (None, Some(parent)) => ids::write_uuid(
            run.key("parent_run_id"),
            &ids::run_id_with_tag(tags.get(&v.trace_id), &parent),
        ),
        (None, None) => run.null("parent_run_id"),
    }
    let failed = status_code == StatusCode::Error as i32;
    let status = match as_str(known.dq_run_status) {
        Some(s @ ("succeeded" | "failed" | "skipped" | "canceled")) => {
            run.str("status", s);
            RunStatus::parse(s)
        }
        Some("") => {
            run.null("status");
            None
        }
        _ if failed => {
            run.str("status", "failed");
            Some(RunStatus::Failed)
        }
        _ => {
            run.str("status", "succeeded");
            Some(RunStatus::Succeeded)
        }
    };

    let input = lift_io(
        run.key("input"),
        &[
            ("input.value", known.input_value, as_str(known.input_mime)),
            ("gen_ai.input.messages", known.genai_input_messages, JSON),
            ("gen_ai.prompt", known.genai_prompt, JSON),
            ("traceloop.entity.input", known.traceloop_input, JSON),
            ("langfuse.observation.input", known.langfuse_input, JSON),
        ],
    );
    let output = lift_io(
        run.key("output"),
        &[
            (
                "output.value",
                known.output_value,
                as_str(known.output_mime),
            ),
            ("gen_ai.output.messages", known.genai_output_messages, JSON),
            ("gen_ai.completion", known.genai_completion, JSON),
            ("traceloop.entity.output", known.traceloop_output, JSON),
            ("langfuse.observation.output", known.langfuse_output, JSON),
        ],
    );

    match as_str(known.dq_metadata).and_then(json_text) {
        Some(json) if json.starts_with('{') => run.raw("metadata", json),
        _ => {
            let meta = run.key("metadata");
            write_synthesised_metadata(meta, v, known, oi_kind, [input, output], origin);
        }
    }

    match as_str(known.dq_error).and_then(json_text) {
        Some(json) => run.raw("error", json),
        None if failed => {
            let exc_attr = |key: &str| exception.and_then(|e| as_str(find(&e.attributes, key)));
            let status_message = span
                .status
                .as_ref()
                .map(|s| s.message.as_str())
                .filter(|m| !m.is_empty());
            let message = status_message
                .or_else(|| exc_attr("exception.message"))
                .or_else(|| exc_attr("exception.type"))
                .unwrap_or("span ended with status ERROR");
            let mut error = ObjectWriter::open(run.key("error"));
            error.str("message", message);
            match exc_attr("exception.stacktrace") {
                Some(trace) => error.str("traceback", trace),
                None => error.null("traceback"),
            }
            error.close();
        }
        None => run.null("error"),
    }
    match as_str(known.dq_executions).and_then(json_text) {
        Some(json) if json.starts_with('[') => run.raw("executions", json),
        _ => run.raw("executions", "[]"),
    }
    write_tags(run.key("tags"), known);
    run.close();
    Some(RunKeys {
        trace_id: trace_id?,
        id: id?,
        is_root,
        status,
        start_ns: as_written(span.start_time_unix_nano),
        end_ns,
    })
}

/// Writes `value` as the string under `key`; where it needed no escaping, returns where its
/// text is in the output (the range then holds exactly `value`).
fn str_value(run: &mut ObjectWriter<'_>, key: &str, value: &str) -> Option<Range<usize>> {
    let out = run.key(key);
    let at = out.len();
    write_str(out, value);
    (out.len() - at == value.len() + 2).then(|| at + 1..out.len() - 1)
}

/// Writes the UUID text of `bytes` under `key` and returns where that text is in the output.
fn uuid_value(run: &mut ObjectWriter<'_>, key: &str, bytes: &[u8; 16]) -> Range<usize> {
    let out = run.key(key);
    let at = out.len();
    ids::write_uuid(out, bytes);
    at + 1..out.len() - 1
}

/// Rebuilds the exact run a Dynamiq run → span conversion started from (the span carries
/// `dynamiq.run.keys`; see [`super::runs_to_spans`] for the carriers). Returns `false`, with
/// `out` in an unspecified state past its starting length, when the span is not such a span or
/// its carriers do not make a valid run; the caller then converts it as a foreign span.
fn dynamiq_run(out: &mut Vec<u8>, v: &ValidSpan<'_>, known: &Known<'_>) -> bool {
    let span = v.span;
    let Some(Value::ArrayValue(keys)) = known.dq_run_keys else {
        return false;
    };
    let extra = as_str(known.dq_run_extra)
        .and_then(|e| super::run_fields::RunFields::parse(e.as_bytes()).ok());
    let start = out.len();
    let mut run = ObjectWriter::open(out);
    let raw_or_null = |run: &mut ObjectWriter<'_>, key: &str, v: Option<&Value>| match as_str(v)
        .and_then(json_text)
    {
        Some(json) => run.raw(key, json),
        None => run.null(key),
    };
    let str_or_null = |run: &mut ObjectWriter<'_>, key: &str, v: Option<&Value>| match as_str(v) {
        Some(text) => run.str(key, text),
        None => run.null(key),
    };
    for key in &keys.values {
        let Some(Value::StringValue(key)) = key.value.as_ref() else {
            return false;
        };
        if let Some(raw) = extra.as_ref().and_then(|e| e.get(key)) {
            run.raw(key, raw.get());
            continue;
        }
        match key.as_str() {
            "id" => str_or_null(&mut run, key, known.dq_run_id),
            "name" => run.str(key, &span.name),
            "type" => str_or_null(&mut run, key, known.dq_run_type),
            "trace_id" => str_or_null(&mut run, key, known.dq_trace_id),
            "source_id" => str_or_null(&mut run, key, known.dq_source_id),
            "session_id" => str_or_null(&mut run, key, known.dq_session_id),
            "parent_run_id" => str_or_null(&mut run, key, known.dq_parent_run_id),
            "status" => match as_str(known.dq_run_status) {
                Some("") | None => run.null(key),
                Some(status) => run.str(key, status),
            },
            "start_time" => match as_str(known.dq_start_time) {
                Some(t) => run.str(key, t),
                None => write_ns(run.key(key), span.start_time_unix_nano),
            },
            "end_time" => match as_str(known.dq_end_time) {
                _ if as_bool(known.dq_end_time_missing) == Some(true) => run.null(key),
                Some(t) => run.str(key, t),
                None => write_ns(run.key(key), span.end_time_unix_nano),
            },
            "input" => {
                lift_io(
                    run.key(key),
                    &[("input.value", known.input_value, as_str(known.input_mime))],
                );
            }
            "output" => {
                lift_io(
                    run.key(key),
                    &[(
                        "output.value",
                        known.output_value,
                        as_str(known.output_mime),
                    )],
                );
            }
            "metadata" => raw_or_null(&mut run, key, known.dq_metadata),
            "error" => raw_or_null(&mut run, key, known.dq_error),
            "executions" => raw_or_null(&mut run, key, known.dq_executions),
            "tags" => match known.tag_tags {
                Some(v @ Value::ArrayValue(_)) => write_plain(run.key(key), Some(v)),
                _ => run.null(key),
            },
            _ => run.null(key),
        }
    }
    run.close();
    // Carriers come from the network: only a run the collector would accept is kept.
    let mut body = Vec::with_capacity(out.len() - start + 12);
    body.extend_from_slice(b"{\"runs\":[");
    body.extend_from_slice(&out[start..]);
    body.extend_from_slice(b"]}");
    crate::model::parse_batch(&body).is_ok()
}

/// Marker: the attribute holds JSON text when it parses as JSON.
const JSON: Option<&str> = Some("application/json");

/// Writes the first present source as the run's `input`/`output` (or `null`), and says which
/// attribute it was when that attribute can be rebuilt exactly from the run.
fn lift_io(
    out: &mut Vec<u8>,
    sources: &[(&'static str, Option<&Value>, Option<&str>)],
) -> Option<Lifted> {
    for &(key, value, mime) in sources {
        let Some(value) = value else { continue };
        let Value::StringValue(s) = value else {
            write_plain(out, Some(value));
            return None;
        };
        let is_json_mime = mime.is_some_and(|m| m.starts_with("application/json"));
        if is_json_mime && let Some(json) = json_text(s) {
            out.extend_from_slice(json.as_bytes());
            // Only exact when no whitespace was trimmed.
            return (json.len() == s.len()).then_some(Lifted { key, form: "json" });
        }
        write_str(out, s);
        return Some(Lifted { key, form: "text" });
    }
    out.extend_from_slice(b"null");
    None
}

fn write_synthesised_metadata(
    out: &mut Vec<u8>,
    v: &ValidSpan<'_>,
    known: &Known<'_>,
    oi_kind: &str,
    lifted: [Option<Lifted>; 2],
    origin: &Origin<'_>,
) {
    let span = v.span;
    let Origin {
        resource,
        resource_schema,
        scope,
        scope_schema,
    } = *origin;
    let mut meta = ObjectWriter::open(out);

    let mut node = ObjectWriter::open(meta.key("node"));
    node.hex("id", &v.span_id);
    let node_name = as_str(known.genai_tool_name)
        .or_else(|| as_str(known.genai_agent_name))
        .unwrap_or(&span.name);
    node.str("name", node_name);
    node.str("group", semconv::node_group(oi_kind));
    node.str("type", semconv::node_type(oi_kind));
    let model = as_str(known.genai_request_model)
        .or_else(|| as_str(known.genai_response_model))
        .or_else(|| as_str(known.llm_model_name));
    if let Some(model) = model {
        let provider = as_str(known.genai_provider)
            .or_else(|| as_str(known.genai_system))
            .or_else(|| as_str(known.llm_provider))
            .or_else(|| as_str(known.llm_system));
        match provider {
            Some(p) if !model.contains('/') => {
                node.str("model", &format!("{}/{model}", semconv::provider_prefix(p)))
            }
            _ => node.str("model", model),
        }
    }
    node.close();

    write_usage(&mut meta, known);

    // OTLP/JSON form; as in OTLP/JSON, fields at their default value are omitted.
    let mut otel = ObjectWriter::open(meta.key("otel"));
    otel.hex("traceId", &v.trace_id);
    otel.hex("spanId", &v.span_id);
    if !span.parent_span_id.is_empty() {
        otel.hex("parentSpanId", &span.parent_span_id);
    }
    if !span.trace_state.is_empty() {
        otel.str("traceState", &span.trace_state);
    }
    if span.flags != 0 {
        otel.int("flags", i64::from(span.flags));
    }
    otel.int("kind", i64::from(span.kind));
    otel.u64_string("startTimeUnixNano", span.start_time_unix_nano);
    otel.u64_string("endTimeUnixNano", span.end_time_unix_nano);
    if let Some(status) = span
        .status
        .as_ref()
        .filter(|s| s.code != 0 || !s.message.is_empty())
    {
        let mut st = ObjectWriter::open(otel.key("status"));
        if status.code != 0 {
            st.int("code", i64::from(status.code));
        }
        if !status.message.is_empty() {
            st.str("message", &status.message);
        }
        st.close();
    }
    let is_lifted = |kv: &&KeyValue| lifted.iter().flatten().any(|l| l.key == kv.key);
    write_otlp_attributes(
        otel.key("attributes"),
        span.attributes.iter().filter(|kv| !is_lifted(kv)),
    );
    if lifted.iter().any(Option::is_some) {
        let mut lifted_obj = ObjectWriter::open(otel.key("lifted"));
        for (field, l) in ["input", "output"].iter().zip(&lifted) {
            if let Some(l) = l {
                let mut entry = ObjectWriter::open(lifted_obj.key(field));
                entry.str("key", l.key);
                entry.str("form", l.form);
                entry.close();
            }
        }
        lifted_obj.close();
    }
    if !span.events.is_empty() {
        write_events(otel.key("events"), &span.events);
    }
    if !span.links.is_empty() {
        write_links(otel.key("links"), &span.links);
    }
    for (key, n) in [
        ("droppedAttributesCount", span.dropped_attributes_count),
        ("droppedEventsCount", span.dropped_events_count),
        ("droppedLinksCount", span.dropped_links_count),
    ] {
        if n != 0 {
            otel.int(key, i64::from(n));
        }
    }
    otel.raw("resource", &resource.json);
    if !resource_schema.is_empty() {
        otel.str("resourceSchemaUrl", resource_schema);
    }
    otel.raw("scope", &scope.json);
    if !scope_schema.is_empty() {
        otel.str("scopeSchemaUrl", scope_schema);
    }
    otel.close();

    meta.close();
}

fn write_events(out: &mut Vec<u8>, events: &[Event]) {
    out.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut e = ObjectWriter::open(out);
        e.u64_string("timeUnixNano", event.time_unix_nano);
        e.str("name", &event.name);
        write_otlp_attributes(e.key("attributes"), event.attributes.iter());
        e.int(
            "droppedAttributesCount",
            i64::from(event.dropped_attributes_count),
        );
        e.close();
    }
    out.push(b']');
}

fn write_links(out: &mut Vec<u8>, links: &[Link]) {
    out.push(b'[');
    for (i, link) in links.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut l = ObjectWriter::open(out);
        l.hex("traceId", &link.trace_id);
        l.hex("spanId", &link.span_id);
        l.str("traceState", &link.trace_state);
        write_otlp_attributes(l.key("attributes"), link.attributes.iter());
        l.int(
            "droppedAttributesCount",
            i64::from(link.dropped_attributes_count),
        );
        l.int("flags", i64::from(link.flags));
        l.close();
    }
    out.push(b']');
}

fn write_usage(meta: &mut ObjectWriter<'_>, known: &Known<'_>) {
    let first_int = |values: &[Option<&Value>]| values.iter().find_map(|v| as_i64(*v));
    let prompt = first_int(&[
        known.genai_input_tokens,
        known.genai_prompt_tokens,
        known.llm_prompt_tokens,
    ]);
    let completion = first_int(&[
        known.genai_output_tokens,
        known.genai_completion_tokens,
        known.llm_completion_tokens,
    ]);
    let total = first_int(&[known.genai_total_tokens, known.llm_total_tokens]).or(
        match (prompt, completion) {
            (None, None) => None,
            (p, c) => Some(p.unwrap_or(0).saturating_add(c.unwrap_or(0))),
        },
    );
    let Some(total) = total else { return };
    let mut usage = ObjectWriter::open(meta.key("usage"));
    usage.int("prompt_tokens", prompt.unwrap_or(0));
    usage.int("completion_tokens", completion.unwrap_or(0));
    usage.int("total_tokens", total);
    if let Some(n) = first_int(&[known.genai_cache_read, known.llm_cache_read]) {
        usage.int("cache_read_input_tokens", n);
    }
    if let Some(n) = first_int(&[known.genai_cache_creation, known.llm_cache_write]) {
        usage.int("cache_creation_input_tokens", n);
    }
    if let Some(x) = as_f64(known.llm_cost_prompt) {
        usage.float("prompt_tokens_cost_usd", x);
    }
    if let Some(x) = as_f64(known.llm_cost_completion) {
        usage.float("completion_tokens_cost_usd", x);
    }
    if let Some(x) = as_f64(known.llm_cost_total).or_else(|| as_f64(known.genai_cost)) {
        usage.float("total_tokens_cost_usd", x);
    }
    usage.close();
}

/// `tag.tags` → `langfuse.trace.tags` → `langsmith.span.tags` (comma separated) → `[]`.
fn write_tags(out: &mut Vec<u8>, known: &Known<'_>) {
    for value in [known.tag_tags, known.langfuse_tags] {
        match value {
            Some(Value::ArrayValue(_)) => return write_plain(out, value),
            Some(Value::StringValue(s)) => {
                match json_text(s) {
                    Some(json) if json.starts_with('[') => out.extend_from_slice(json.as_bytes()),
                    _ => write_string_list(out, std::iter::once(s.as_str())),
                }
                return;
            }
            _ => {}
        }
    }
    match known.langsmith_tags {
        Some(Value::StringValue(s)) => {
            write_string_list(out, s.split(',').map(str::trim).filter(|t| !t.is_empty()))
        }
        Some(v @ Value::ArrayValue(_)) => write_plain(out, Some(v)),
        _ => out.extend_from_slice(b"[]"),
    }
}

fn write_string_list<'s>(out: &mut Vec<u8>, items: impl Iterator<Item = &'s str>) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, item);
    }
    out.push(b']');
}

/// The run id a span converts to (used by tests and the convert command).
pub fn run_id_for(trace_id: &[u8; 16], span_id: &[u8; 8]) -> String {
    ids::format_uuid(&ids::run_id_of_span(trace_id, span_id))
}
