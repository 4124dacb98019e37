//! A foreign span (one not made from a Dynamiq run) → a run, mapped from its attributes.
//!
//! Owns the run's top-level fields: ids (from the OTLP ids, unless `dynamiq.*` attributes name
//! them), name, type, source (`service.instance.id`, else `service.name`, else the configured
//! default), session, times, parent, status and `error` (from the status and the `exception`
//! event), `input`/`output` lifted from the first attribute of the known conventions that has
//! them, and `tags`; and what every span of one resource or scope shares.
//!
//! Guarantees: ids are deterministic (the same span always gets the same run id, its parent's
//! run id as `parent_run_id`); every run written is a valid run; the index fields are handed
//! over exactly as written ([`RunKeys`]) whenever their text needed no escaping.

use std::ops::Range;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use super::metadata::write_synthesised_metadata;
use super::validate::{MAX_VALUE_DEPTH, ValidSpan, attributes_within};
use super::{RunKeys, SpanConvertOptions};
use crate::convert::genai_events::{self, GenAiContent};
use crate::convert::ids;
use crate::convert::semconv::{self, Known};
use crate::convert::time::{as_written, write_ns};
use crate::convert::values::{
    ObjectWriter, as_bool, as_str, find, json_text, write_otlp_attributes, write_plain, write_str,
};
use crate::model::batch::RunStatus;

/// The UUIDv8 trace tag of the trace seen last: spans of one trace come together, and the tag
/// is a SHA-256 that is the same for all of them.
#[derive(Default)]
pub(super) struct TagCache {
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

/// What every span of one resource shares.
pub(super) struct ResourceContext {
    /// `service.instance.id`, else `service.name`, else the configured default.
    source_id: String,
    /// The resource in OTLP/JSON form.
    pub(super) json: String,
    /// Whether its attributes nest within [`MAX_VALUE_DEPTH`].
    pub(super) shallow: bool,
}

impl ResourceContext {
    pub(super) fn new(resource: Option<&Resource>, options: &SpanConvertOptions) -> Self {
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
pub(super) struct ScopeContext {
    pub(super) json: String,
}

impl ScopeContext {
    pub(super) fn new(scope: Option<&InstrumentationScope>) -> Self {
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
pub(super) struct Origin<'a> {
    pub(super) resource: &'a ResourceContext,
    pub(super) resource_schema: &'a str,
    pub(super) scope: &'a ScopeContext,
    pub(super) scope_schema: &'a str,
}

/// Where a run's `input` or `output` came from, so the span can be rebuilt without keeping
/// the (often large) attribute twice.
pub(super) struct Lifted {
    pub(super) key: &'static str,
    /// `json` when the attribute's string was embedded as JSON, `text` when as a JSON string.
    pub(super) form: &'static str,
}

pub(super) fn span_to_run(
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

    let input_sources = [
        ("input.value", known.input_value, as_str(known.input_mime)),
        ("gen_ai.input.messages", known.genai_input_messages, JSON),
        (
            "gen_ai.tool.call.arguments",
            known.genai_tool_call_arguments,
            JSON,
        ),
        ("gen_ai.prompt", known.genai_prompt, JSON),
        ("traceloop.entity.input", known.traceloop_input, JSON),
        ("langfuse.observation.input", known.langfuse_input, JSON),
    ];
    let output_sources = [
        (
            "output.value",
            known.output_value,
            as_str(known.output_mime),
        ),
        ("gen_ai.output.messages", known.genai_output_messages, JSON),
        (
            "gen_ai.tool.call.result",
            known.genai_tool_call_result,
            JSON,
        ),
        ("gen_ai.completion", known.genai_completion, JSON),
        ("traceloop.entity.output", known.traceloop_output, JSON),
        ("langfuse.observation.output", known.langfuse_output, JSON),
    ];
    // Content that travels as GenAI span events fills what no attribute carries. The events
    // stay in `metadata.otel`, so the span is rebuilt from them, not from this copy.
    let from_events = if span.events.is_empty() {
        GenAiContent::default()
    } else {
        genai_events::from_span_events(&span.events)
    };
    let input = write_io(run.key("input"), &input_sources, from_events.input);
    let output = write_io(run.key("output"), &output_sources, from_events.output);

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

/// Marker: the attribute holds JSON text when it parses as JSON.
const JSON: Option<&str> = Some("application/json");

/// `input` or `output`: the first of `sources` present (lifted), else what the span's GenAI
/// events carried (not lifted: the events themselves stay in the envelope), else `null`.
fn write_io(
    out: &mut Vec<u8>,
    sources: &[(&'static str, Option<&Value>, Option<&str>)],
    from_events: Option<serde_json::Value>,
) -> Option<Lifted> {
    match from_events {
        Some(json) if sources.iter().all(|(_, value, _)| value.is_none()) => {
            out.extend_from_slice(json.to_string().as_bytes());
            None
        }
        _ => lift_io(out, sources),
    }
}

/// Writes the first present source as the run's `input`/`output` (or `null`), and says which
/// attribute it was when that attribute can be rebuilt exactly from the run.
pub(super) fn lift_io(
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
