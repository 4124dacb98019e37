//! Dynamiq runs → OTLP spans (CONVERSION.md, "Run → span"): reading a run, deriving its span's
//! attributes into an [`AttrSink`], and the struct path ([`runs_to_request`]) that
//! `dynamiq-sidecar convert` uses and that tests hold the OTLP output's direct protobuf path
//! ([`super::runs_to_bytes`], same derivation) to.
//!
//! Two kinds of run:
//! - **Dynamiq runs** (from the SDK): every top-level field is carried exactly in `dynamiq.*`
//!   attributes, so this sidecar (or another one) turns the span back into the same run, equal
//!   as a JSON value: `dynamiq.run.keys` lists the run's keys in order, each field has its
//!   carrier (see the table below), and a field that does not fit its carrier (an unknown key, a
//!   value of an unexpected type) travels verbatim in `dynamiq.run.extra`. Besides the
//!   carriers, the span gets the attributes other tools render: OpenInference and GenAI kinds,
//!   model and provider, sampling parameters, token usage and costs, session, tags, and an
//!   `exception` event with `ERROR` status for a failed run.
//! - **Runs made from foreign spans** (they carry `metadata.otel`): the envelope is re-emitted
//!   as it was (ids, kind, exact times, status, attributes, events, links, resource, scope), and
//!   the attributes lifted into `input`/`output` are put back, so span → run → span is exact.
//!
//! | run field | carrier | null / absent |
//! |---|---|---|
//! | id, trace_id, source_id, type | `dynamiq.run.id`, `dynamiq.trace_id`, `dynamiq.source_id`, `dynamiq.run.type` | — |
//! | name | span name | — |
//! | parent_run_id | `dynamiq.parent_run.id` (+ parent span id) | no attribute |
//! | session_id | `dynamiq.session_id` (+ `session.id`, `gen_ai.conversation.id`) | no attribute |
//! | status | `dynamiq.run.status` | `""` |
//! | start_time / end_time | span times (µs); `dynamiq.run.start_time`/`end_time` when not spelled as the SDK does | end: `dynamiq.run.end_time_missing = true` |
//! | input / output | `input.value`/`output.value` + `*.mime_type` (`text/plain` for a string) | no attribute |
//! | metadata, error, executions | `dynamiq.metadata`, `dynamiq.error`, `dynamiq.executions` (JSON text, verbatim) | no attribute |
//! | tags | `tag.tags` (string array) | no attribute |
//!
//! Guarantees: conversion is pure and deterministic; a run that is not a JSON object with a
//! string `id` and `trace_id` is reported, never a panic; JSON carried in attributes is the
//! client's exact text.

use std::borrow::Cow;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::attr_sink::{Attr, AttrSink, kv};
use super::ids;
use super::run_fields::{
    MetadataView, NodeView, Raw, RunFields, UsageView, is_null, raw_f64, raw_i64, raw_str, view,
};
use super::time::{is_sdk_spelling, parse_ns};

/// Settings of the run → span direction.
#[derive(Debug, Clone)]
pub struct RunConvertOptions {
    /// `service.name` of the resource Dynamiq runs are exported under.
    pub service_name: String,
    /// Add `gen_ai.input.messages` / `gen_ai.output.messages` (the GenAI parts schema) to LLM
    /// spans: the prompt's messages and the output's `content`. Opt-in, as in the conventions.
    pub capture_message_content: bool,
}

impl Default for RunConvertOptions {
    fn default() -> Self {
        Self {
            service_name: "dynamiq".to_owned(),
            capture_message_content: false,
        }
    }
}

/// One run as a span, with the resource and scope it belongs under.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpan {
    /// The span.
    pub span: Span,
    /// The resource (a foreign span's own; for Dynamiq runs, the sidecar's).
    pub resource: Resource,
    /// The resource's schema URL.
    pub resource_schema_url: String,
    /// The instrumentation scope.
    pub scope: InstrumentationScope,
    /// The scope's schema URL.
    pub scope_schema_url: String,
}

/// Spans made from a list of runs.
#[derive(Debug, Default)]
pub struct ConvertedRuns {
    /// The spans, grouped by resource and scope in run order.
    pub request: ExportTraceServiceRequest,
    /// Runs that could not be converted: their index in the input and why.
    pub failed: Vec<(usize, String)>,
}

/// Converts runs (JSON bytes each) into one export request.
pub fn runs_to_request<'a>(
    runs: impl IntoIterator<Item = &'a [u8]>,
    options: &RunConvertOptions,
) -> ConvertedRuns {
    let mut out = ConvertedRuns::default();
    for (i, run) in runs.into_iter().enumerate() {
        match run_to_span(run, options) {
            Ok(rs) => push_grouped(&mut out.request, rs),
            Err(reason) => out.failed.push((i, reason)),
        }
    }
    out
}

/// Appends a span under its resource and scope, reusing the last group when they match.
fn push_grouped(request: &mut ExportTraceServiceRequest, rs: RunSpan) {
    let same_resource = request.resource_spans.last().is_some_and(|last| {
        last.resource.as_ref() == Some(&rs.resource) && last.schema_url == rs.resource_schema_url
    });
    if !same_resource {
        request.resource_spans.push(ResourceSpans {
            resource: Some(rs.resource),
            schema_url: rs.resource_schema_url,
            scope_spans: Vec::new(),
        });
    }
    let group = request
        .resource_spans
        .last_mut()
        .expect("a group was just ensured");
    let same_scope = group.scope_spans.last().is_some_and(|last| {
        last.scope.as_ref() == Some(&rs.scope) && last.schema_url == rs.scope_schema_url
    });
    if !same_scope {
        group.scope_spans.push(ScopeSpans {
            scope: Some(rs.scope),
            schema_url: rs.scope_schema_url,
            spans: Vec::new(),
        });
    }
    group
        .scope_spans
        .last_mut()
        .expect("a scope group was just ensured")
        .spans
        .push(rs.span);
}

/// A run read for conversion: a foreign span rebuilt from its envelope, or a Dynamiq run with
/// its fields, `metadata` views and (checked) ids.
pub(super) enum ReadRun<'a> {
    /// A run made from a foreign span, re-emitted as it was.
    Foreign(RunSpan),
    /// A Dynamiq run.
    Dynamiq(DynamiqRun<'a>),
}

/// A Dynamiq run with a string `id` and `trace_id`.
pub(super) struct DynamiqRun<'a> {
    fields: RunFields<'a>,
    meta: MetadataView<'a>,
    id: Cow<'a, str>,
    trace: Cow<'a, str>,
}

/// Reads a run; the error says why it cannot be converted.
pub(super) fn read_run(run: &[u8]) -> Result<ReadRun<'_>, String> {
    let (fields, meta) = RunFields::parse_with_metadata(run)
        .map_err(|e| format!("the run is not a JSON object: {e}"))?;
    if let Some(otel) = meta.otel
        && let Ok(envelope) = serde_json::from_str::<OtelEnvelope<'_>>(otel.get())
        && let Some(rs) = foreign_span(&fields, envelope)
    {
        return Ok(ReadRun::Foreign(rs));
    }
    let id = fields
        .get("id")
        .and_then(raw_str)
        .ok_or("the run has no string id")?;
    let trace = fields
        .get("trace_id")
        .and_then(raw_str)
        .ok_or("the run has no string trace_id")?;
    Ok(ReadRun::Dynamiq(DynamiqRun {
        fields,
        meta,
        id,
        trace,
    }))
}

/// Converts one run.
pub fn run_to_span(run: &[u8], options: &RunConvertOptions) -> Result<RunSpan, String> {
    match read_run(run)? {
        ReadRun::Foreign(rs) => Ok(rs),
        ReadRun::Dynamiq(run) => {
            let mut attrs: Vec<KeyValue> = Vec::with_capacity(32);
            let head = dynamiq_span(&run, options, &mut attrs);
            Ok(head.into_run_span(attrs, options))
        }
    }
}

/// The resource Dynamiq runs are exported under.
pub(super) fn dynamiq_resource(options: &RunConvertOptions) -> Resource {
    Resource {
        attributes: vec![
            kv(
                "service.name",
                Value::StringValue(options.service_name.clone()),
            ),
            kv("telemetry.sdk.name", Value::StringValue("dynamiq".into())),
        ],
        ..Default::default()
    }
}

/// The instrumentation scope of Dynamiq runs.
pub(super) fn dynamiq_scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "dynamiq-sidecar".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

/// A Dynamiq run's span apart from its attributes (which went to an [`AttrSink`]).
pub(super) struct SpanHead<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: Cow<'a, str>,
    pub kind: SpanKind,
    pub start: u64,
    pub end: u64,
    /// Set for a failed run: `ERROR` status and an `exception` event at the end time.
    pub failure: Option<Failure<'a>>,
}

/// Why a run failed, from its `error`.
pub(super) struct Failure<'a> {
    pub message: Option<Cow<'a, str>>,
    traceback: Option<Cow<'a, str>>,
}

impl Failure<'_> {
    /// The exception type named by the traceback's last line (`ValueError: boom` →
    /// `ValueError`), else `Error`.
    fn exception_type(&self) -> &str {
        self.traceback
            .as_deref()
            .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()))
            .and_then(|line| line.split_once(':').map(|(head, _)| head.trim()))
            .filter(|head| {
                !head.is_empty()
                    && head
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
            })
            .unwrap_or("Error")
    }

    /// The attributes of the `exception` event.
    pub fn event_attributes(&self, attrs: &mut impl AttrSink) {
        attrs.str("exception.type", self.exception_type());
        if let Some(m) = &self.message {
            attrs.str("exception.message", m);
        }
        if let Some(t) = &self.traceback {
            attrs.str("exception.stacktrace", t);
        }
    }
}

impl SpanHead<'_> {
    /// The struct path: the span with its attributes, under the Dynamiq resource and scope.
    fn into_run_span(self, attributes: Vec<KeyValue>, options: &RunConvertOptions) -> RunSpan {
        let mut span = Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            name: self.name.into_owned(),
            kind: self.kind as i32,
            start_time_unix_nano: self.start,
            end_time_unix_nano: self.end,
            attributes,
            ..Default::default()
        };
        if let Some(failure) = &self.failure {
            span.status = Some(Status {
                code: StatusCode::Error as i32,
                message: failure.message.as_deref().unwrap_or_default().to_owned(),
            });
            let mut event_attrs = Vec::new();
            failure.event_attributes(&mut event_attrs);
            span.events.push(Event {
                time_unix_nano: span.end_time_unix_nano,
                name: "exception".to_owned(),
                attributes: event_attrs,
                dropped_attributes_count: 0,
            });
        }
        RunSpan {
            span,
            resource: dynamiq_resource(options),
            resource_schema_url: String::new(),
            scope: dynamiq_scope(),
            scope_schema_url: String::new(),
        }
    }
}

/// Derives a Dynamiq run's attributes into `attrs` and returns the rest of its span.
pub(super) fn dynamiq_span<'a>(
    run: &DynamiqRun<'a>,
    options: &RunConvertOptions,
    attrs: &mut impl AttrSink,
) -> SpanHead<'a> {
    let DynamiqRun {
        fields,
        meta,
        id,
        trace,
    } = run;
    let trace_id = ids::trace_id_of(trace);
    let mut head = SpanHead {
        trace_id,
        span_id: ids::span_id_of_run(&trace_id, id),
        parent_span_id: None,
        name: Cow::Borrowed("run"),
        kind: SpanKind::Internal,
        start: 0,
        end: 0,
        failure: None,
    };
    let mut extra: Vec<(&str, Raw<'_>)> = Vec::new();
    attrs.push_strs(
        "dynamiq.run.keys",
        fields.fields.iter().map(|(k, _)| k.as_ref()),
    );
    let mut start_ns = None;
    let mut end: Option<Option<u64>> = None;
    let mut end_time_attr = false;
    let mut run_type: Option<Cow<'_, str>> = None;
    let mut status: Option<Cow<'_, str>> = None;
    let mut error: Option<Raw<'_>> = None;
    for (key, raw) in &fields.fields {
        let key = key.as_ref();
        let text = raw_str(raw);
        let exact = match (key, &text) {
            ("id", Some(v)) => {
                attrs.str("dynamiq.run.id", v);
                true
            }
            ("name", Some(v)) => {
                head.name = v.clone();
                true
            }
            ("type", Some(v)) => {
                attrs.str("dynamiq.run.type", v);
                run_type = Some(v.clone());
                true
            }
            ("trace_id", Some(v)) => {
                attrs.str("dynamiq.trace_id", v);
                true
            }
            ("source_id", Some(v)) => {
                attrs.str("dynamiq.source_id", v);
                true
            }
            ("session_id", Some(v)) => {
                attrs.str("dynamiq.session_id", v);
                attrs.str("session.id", v);
                attrs.str("gen_ai.conversation.id", v);
                true
            }
            ("parent_run_id", Some(v)) => {
                attrs.str("dynamiq.parent_run.id", v);
                head.parent_span_id = Some(ids::span_id_of_run(&trace_id, v));
                true
            }
            ("status", Some(v)) => {
                attrs.str("dynamiq.run.status", v);
                status = Some(v.clone());
                true
            }
            ("status", None) if is_null(raw) => {
                attrs.str("dynamiq.run.status", "");
                true
            }
            ("start_time", Some(v)) => match parse_ns(v) {
                Some(ns) => {
                    if !is_sdk_spelling(ns, v) {
                        attrs.str("dynamiq.run.start_time", v);
                    }
                    start_ns = Some(ns);
                    true
                }
                None => false,
            },
            ("end_time", Some(v)) => match parse_ns(v) {
                Some(ns) => {
                    if !is_sdk_spelling(ns, v) {
                        attrs.str("dynamiq.run.end_time", v);
                        end_time_attr = true;
                    }
                    end = Some(Some(ns));
                    true
                }
                None => false,
            },
            ("end_time", None) if is_null(raw) => {
                attrs.push("dynamiq.run.end_time_missing", Attr::Bool(true));
                end = Some(None);
                true
            }
            ("input" | "output", _) if is_null(raw) => true,
            ("input" | "output", _) => {
                let (value_key, mime_key) = if key == "input" {
                    ("input.value", "input.mime_type")
                } else {
                    ("output.value", "output.mime_type")
                };
                match text {
                    Some(t) => {
                        attrs.str(value_key, &t);
                        attrs.str(mime_key, "text/plain");
                    }
                    None => {
                        attrs.str(value_key, raw.get());
                        attrs.str(mime_key, "application/json");
                    }
                }
                true
            }
            ("metadata" | "error" | "executions", _) if is_null(raw) => true,
            ("metadata", _) => {
                attrs.str("dynamiq.metadata", raw.get());
                true
            }
            ("error", _) => {
                attrs.str("dynamiq.error", raw.get());
                error = Some(*raw);
                true
            }
            ("executions", _) => {
                attrs.str("dynamiq.executions", raw.get());
                true
            }
            ("tags", _) if is_null(raw) => true,
            ("tags", _) => match serde_json::from_str::<Vec<Cow<'_, str>>>(raw.get()) {
                Ok(tags) => {
                    attrs.push_strs("tag.tags", tags.iter().map(|t| t.as_ref()));
                    true
                }
                Err(_) => false,
            },
            _ => false,
        };
        if !exact {
            extra.push((key, *raw));
        }
    }
    if !extra.is_empty() {
        let mut text = Vec::new();
        let mut obj = super::values::ObjectWriter::open(&mut text);
        for (k, v) in &extra {
            obj.raw(k, v.get());
        }
        obj.close();
        attrs.str(
            "dynamiq.run.extra",
            std::str::from_utf8(&text).unwrap_or_default(),
        );
    }

    let start = start_ns.unwrap_or(0);
    head.start = start;
    head.end = end.flatten().unwrap_or(start).max(start);
    if let (Some(Some(end_ns)), Some(raw)) = (end, fields.get("end_time"))
        && end_ns < start
        && !end_time_attr
    {
        // A span cannot end before it starts: the span ends at its start and the run's end
        // travels as written.
        if let Some(text) = raw_str(raw) {
            attrs.str("dynamiq.run.end_time", &text);
        }
    }

    // Derived attributes for the tools users already run.
    let empty_node = NodeView::default();
    let node = meta.node.as_ref().unwrap_or(&empty_node);
    let group = node.group.and_then(raw_str);
    let (oi_kind, operation, kind) = kinds(run_type.as_deref(), group.as_deref());
    head.kind = kind;
    attrs.str("openinference.span.kind", oi_kind);
    if let Some(op) = operation {
        attrs.str("gen_ai.operation.name", op);
        let name_key = match op {
            "invoke_workflow" => Some("gen_ai.workflow.name"),
            "execute_tool" => Some("gen_ai.tool.name"),
            "invoke_agent" => Some("gen_ai.agent.name"),
            _ => None,
        };
        if let Some(k) = name_key {
            attrs.str(k, &head.name);
        }
    }
    derive_model(attrs, node);
    if options.capture_message_content && oi_kind == "LLM" {
        derive_messages(attrs, node, fields.get("output"));
    }
    if let Some(usage) = &meta.usage {
        derive_usage(attrs, usage);
    }

    if status.as_deref() == Some("failed") {
        let e: ErrorView<'_> = view(error);
        let failure = Failure {
            message: e.message.and_then(raw_str),
            traceback: e.traceback.and_then(raw_str),
        };
        attrs.str("error.type", failure.exception_type());
        head.failure = Some(failure);
    }
    head
}

/// OpenInference kind, GenAI operation and span kind of a run (the kinds table).
fn kinds(
    run_type: Option<&str>,
    group: Option<&str>,
) -> (&'static str, Option<&'static str>, SpanKind) {
    match (run_type, group) {
        (Some("workflow"), _) => ("CHAIN", Some("invoke_workflow"), SpanKind::Internal),
        (Some("flow"), _) => ("CHAIN", None, SpanKind::Internal),
        (_, Some("llms")) => ("LLM", Some("chat"), SpanKind::Client),
        (_, Some("embedders")) => ("EMBEDDING", Some("embeddings"), SpanKind::Client),
        (_, Some("retrievers")) => ("RETRIEVER", Some("retrieval"), SpanKind::Client),
        (_, Some("rankers")) => ("RERANKER", None, SpanKind::Internal),
        (_, Some("tools")) => ("TOOL", Some("execute_tool"), SpanKind::Internal),
        (_, Some("agents")) => ("AGENT", Some("invoke_agent"), SpanKind::Internal),
        (_, Some("validators" | "detectors")) => ("GUARDRAIL", None, SpanKind::Internal),
        _ => ("CHAIN", None, SpanKind::Internal),
    }
}

/// `provider/model` → GenAI and OpenInference model and provider attributes, plus sampling
/// parameters.
fn derive_model(attrs: &mut impl AttrSink, node: &NodeView<'_>) {
    if let Some(model) = node.model.and_then(raw_str) {
        let (prefix, name) = match model.split_once('/') {
            Some((p, n)) if !p.is_empty() && !n.is_empty() => (Some(p), n),
            _ => (None, model.as_ref()),
        };
        attrs.str("gen_ai.request.model", name);
        attrs.str("llm.model_name", name);
        if let Some(prefix) = prefix {
            let provider = match prefix {
                "azure" => "azure.ai.openai",
                "bedrock" => "aws.bedrock",
                "vertex_ai" => "gcp.vertex_ai",
                "gemini" => "gcp.gemini",
                "mistral" => "mistral_ai",
                other => other,
            };
            attrs.str("gen_ai.provider.name", provider);
            attrs.str("gen_ai.system", provider);
            attrs.str("llm.system", prefix);
        }
    }
    if let Some(t) = node.temperature.and_then(raw_f64) {
        attrs.push("gen_ai.request.temperature", Attr::Double(t));
    }
    if let Some(p) = node.top_p.and_then(raw_f64) {
        attrs.push("gen_ai.request.top_p", Attr::Double(p));
    }
    if let Some(n) = node.max_tokens.and_then(raw_i64) {
        attrs.push("gen_ai.request.max_tokens", Attr::Int(n));
    }
    if let Some(stop) = node
        .stop
        .and_then(|r| serde_json::from_str::<Vec<Cow<'_, str>>>(r.get()).ok())
    {
        attrs.push_strs(
            "gen_ai.request.stop_sequences",
            stop.iter().map(|x| x.as_ref()),
        );
    }
}

/// `metadata.usage` → token counts and costs, one to one (no subtraction).
fn derive_usage(attrs: &mut impl AttrSink, usage: &UsageView<'_>) {
    let int = |r: Option<&RawValue>| r.and_then(raw_i64);
    let float = |r: Option<&RawValue>| r.and_then(raw_f64);
    if let Some(n) = int(usage.prompt_tokens) {
        attrs.push("gen_ai.usage.input_tokens", Attr::Int(n));
        attrs.push("llm.token_count.prompt", Attr::Int(n));
    }
    if let Some(n) = int(usage.completion_tokens) {
        attrs.push("gen_ai.usage.output_tokens", Attr::Int(n));
        attrs.push("llm.token_count.completion", Attr::Int(n));
    }
    if let Some(n) = int(usage.total_tokens) {
        attrs.push("llm.token_count.total", Attr::Int(n));
    }
    if let Some(n) = int(usage.cache_read_input_tokens) {
        attrs.push("gen_ai.usage.cache_read.input_tokens", Attr::Int(n));
    }
    if let Some(n) = int(usage.cache_creation_input_tokens) {
        attrs.push("gen_ai.usage.cache_creation.input_tokens", Attr::Int(n));
    }
    if let Some(x) = float(usage.prompt_tokens_cost_usd) {
        attrs.push("llm.cost.prompt", Attr::Double(x));
    }
    if let Some(x) = float(usage.completion_tokens_cost_usd) {
        attrs.push("llm.cost.completion", Attr::Double(x));
    }
    if let Some(x) = float(usage.total_tokens_cost_usd) {
        attrs.push("llm.cost.total", Attr::Double(x));
        attrs.push("gen_ai.usage.cost", Attr::Double(x));
    }
}

/// `{"role": r, "content": c}` messages → the GenAI parts schema.
#[derive(Deserialize)]
struct PromptMessage<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct PromptView<'a> {
    #[serde(borrow, default)]
    messages: Option<Vec<PromptMessage<'a>>>,
}

#[derive(Deserialize, Default)]
struct OutputView<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

fn parts_message(out: &mut Vec<u8>, role: &str, content: &RawValue) {
    use super::values::{ObjectWriter, write_str};
    let mut msg = ObjectWriter::open(out);
    msg.str("role", role);
    let parts = msg.key("parts");
    parts.push(b'[');
    let mut part = ObjectWriter::open(parts);
    part.str("type", "text");
    match raw_str(content) {
        Some(text) => write_str(part.key("content"), &text),
        None => part.raw("content", content.get()),
    }
    part.close();
    parts.push(b']');
    msg.close();
}

/// The opt-in message content of an LLM run: the prompt's messages as `gen_ai.input.messages`
/// and the output's `content` as `gen_ai.output.messages`, in the GenAI parts schema.
fn derive_messages(attrs: &mut impl AttrSink, node: &NodeView<'_>, output: Option<Raw<'_>>) {
    let prompt: PromptView<'_> = view(node.prompt);
    if let Some(messages) = prompt.messages.filter(|m| !m.is_empty()) {
        let mut out = b"[".to_vec();
        for (i, m) in messages.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let null = serde_json::value::RawValue::NULL;
            parts_message(
                &mut out,
                m.role.as_deref().unwrap_or("user"),
                m.content.unwrap_or(null),
            );
        }
        out.push(b']');
        attrs.str(
            "gen_ai.input.messages",
            std::str::from_utf8(&out).unwrap_or_default(),
        );
    }
    let output: OutputView<'_> = view(output);
    if let Some(content) = output.content {
        let mut out = b"[".to_vec();
        parts_message(&mut out, "assistant", content);
        out.push(b']');
        attrs.str(
            "gen_ai.output.messages",
            std::str::from_utf8(&out).unwrap_or_default(),
        );
    }
}

#[derive(Deserialize, Default)]
struct ErrorView<'a> {
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    traceback: Option<&'a RawValue>,
}

/// `metadata.otel` of a run made from a foreign span.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtelEnvelope<'a> {
    trace_id: Cow<'a, str>,
    span_id: Cow<'a, str>,
    #[serde(default)]
    parent_span_id: Option<Cow<'a, str>>,
    #[serde(default)]
    trace_state: String,
    #[serde(default)]
    flags: u32,
    #[serde(default)]
    kind: i32,
    #[serde(borrow)]
    start_time_unix_nano: &'a RawValue,
    #[serde(borrow)]
    end_time_unix_nano: &'a RawValue,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    attributes: Vec<KeyValue>,
    #[serde(default, borrow)]
    lifted: Option<LiftedView<'a>>,
    #[serde(default)]
    events: Vec<Event>,
    #[serde(default)]
    links: Vec<Link>,
    #[serde(default)]
    dropped_attributes_count: u32,
    #[serde(default)]
    dropped_events_count: u32,
    #[serde(default)]
    dropped_links_count: u32,
    #[serde(default)]
    resource: Option<Resource>,
    #[serde(default)]
    resource_schema_url: String,
    #[serde(default)]
    scope: Option<InstrumentationScope>,
    #[serde(default)]
    scope_schema_url: String,
}

#[derive(Deserialize)]
struct LiftedView<'a> {
    #[serde(borrow, default)]
    input: Option<LiftedEntry<'a>>,
    #[serde(borrow, default)]
    output: Option<LiftedEntry<'a>>,
}

#[derive(Deserialize)]
struct LiftedEntry<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    form: Cow<'a, str>,
}

fn ns_of(raw: &RawValue) -> Option<u64> {
    raw.get().trim_matches('"').parse().ok()
}

/// Rebuilds a foreign span from its envelope; `None` when the envelope is not usable (then the
/// run is exported as a Dynamiq run).
fn foreign_span(fields: &RunFields<'_>, env: OtelEnvelope<'_>) -> Option<RunSpan> {
    let trace_id = const_hex::decode(env.trace_id.as_ref()).ok()?;
    let span_id = const_hex::decode(env.span_id.as_ref()).ok()?;
    if trace_id.len() != 16 || span_id.len() != 8 {
        return None;
    }
    let parent_span_id = match env.parent_span_id.as_deref() {
        None | Some("") => Vec::new(),
        Some(p) => const_hex::decode(p).ok().filter(|p| p.len() == 8)?,
    };
    let mut attributes = env.attributes;
    for (field, lifted) in [
        ("input", &env.lifted.as_ref().and_then(|l| l.input.as_ref())),
        (
            "output",
            &env.lifted.as_ref().and_then(|l| l.output.as_ref()),
        ),
    ] {
        let (Some(lifted), Some(raw)) = (lifted, fields.get(field)) else {
            continue;
        };
        let text = match lifted.form.as_ref() {
            "json" => raw.get().to_owned(),
            _ => raw_str(raw)?.into_owned(),
        };
        attributes.push(kv(&lifted.key, Value::StringValue(text)));
    }
    let span = Span {
        trace_id,
        span_id,
        trace_state: env.trace_state,
        parent_span_id,
        flags: env.flags,
        name: fields
            .get("name")
            .and_then(raw_str)
            .map(Cow::into_owned)
            .unwrap_or_default(),
        kind: env.kind,
        start_time_unix_nano: ns_of(env.start_time_unix_nano)?,
        end_time_unix_nano: ns_of(env.end_time_unix_nano)?,
        attributes,
        dropped_attributes_count: env.dropped_attributes_count,
        events: env.events,
        dropped_events_count: env.dropped_events_count,
        links: env.links,
        dropped_links_count: env.dropped_links_count,
        status: env.status,
    };
    Some(RunSpan {
        span,
        resource: env.resource.unwrap_or_default(),
        resource_schema_url: env.resource_schema_url,
        scope: env.scope.unwrap_or_default(),
        scope_schema_url: env.scope_schema_url,
    })
}
