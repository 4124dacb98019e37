//! Dynamiq runs → OTLP spans (CONVERSION.md, "Run → span"), the direction the OTLP output and
//! `dynamiq-sidecar convert` use.
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
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ids;
use super::run_fields::{
    MetadataView, NodeView, RunFields, UsageView, is_null, raw_f64, raw_i64, raw_str, view,
};
use super::time::{format_ns, parse_ns};

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

/// Converts one run.
pub fn run_to_span(run: &[u8], options: &RunConvertOptions) -> Result<RunSpan, String> {
    let fields = RunFields::parse(run).map_err(|e| format!("the run is not a JSON object: {e}"))?;
    let meta: MetadataView<'_> = view(fields.get("metadata"));
    if let Some(otel) = meta.otel
        && let Ok(envelope) = serde_json::from_str::<OtelEnvelope<'_>>(otel.get())
        && let Some(rs) = foreign_span(&fields, envelope)
    {
        return Ok(rs);
    }
    dynamiq_span(&fields, &meta, options)
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: impl Into<String>) -> Value {
    Value::StringValue(v.into())
}

fn string_array<'s>(items: impl IntoIterator<Item = &'s str>) -> Value {
    Value::ArrayValue(ArrayValue {
        values: items
            .into_iter()
            .map(|i| AnyValue { value: Some(s(i)) })
            .collect(),
    })
}

fn dynamiq_span(
    fields: &RunFields<'_>,
    meta: &MetadataView<'_>,
    options: &RunConvertOptions,
) -> Result<RunSpan, String> {
    let id = fields
        .get("id")
        .and_then(raw_str)
        .ok_or("the run has no string id")?;
    let trace = fields
        .get("trace_id")
        .and_then(raw_str)
        .ok_or("the run has no string trace_id")?;
    let trace_id = ids::trace_id_of(&trace);
    let mut span = Span {
        trace_id: trace_id.to_vec(),
        span_id: ids::span_id_of_run(&trace_id, &id).to_vec(),
        ..Default::default()
    };
    let mut attrs: Vec<KeyValue> = Vec::with_capacity(32);
    let mut extra: Vec<(&str, &RawValue)> = Vec::new();
    attrs.push(kv(
        "dynamiq.run.keys",
        string_array(fields.fields.iter().map(|(k, _)| k.as_ref())),
    ));
    let mut start_ns = None;
    let mut end: Option<Option<u64>> = None;
    let mut run_type: Option<Cow<'_, str>> = None;
    let mut status: Option<Cow<'_, str>> = None;
    let mut error: Option<&RawValue> = None;
    let mut name = None;
    for (key, raw) in &fields.fields {
        let key = key.as_ref();
        let text = raw_str(raw);
        let exact = match (key, &text) {
            ("id", Some(v)) => {
                attrs.push(kv("dynamiq.run.id", s(v.as_ref())));
                true
            }
            ("name", Some(v)) => {
                name = Some(v.to_string());
                true
            }
            ("type", Some(v)) => {
                attrs.push(kv("dynamiq.run.type", s(v.as_ref())));
                run_type = Some(v.clone());
                true
            }
            ("trace_id", Some(v)) => {
                attrs.push(kv("dynamiq.trace_id", s(v.as_ref())));
                true
            }
            ("source_id", Some(v)) => {
                attrs.push(kv("dynamiq.source_id", s(v.as_ref())));
                true
            }
            ("session_id", Some(v)) => {
                attrs.push(kv("dynamiq.session_id", s(v.as_ref())));
                attrs.push(kv("session.id", s(v.as_ref())));
                attrs.push(kv("gen_ai.conversation.id", s(v.as_ref())));
                true
            }
            ("parent_run_id", Some(v)) => {
                attrs.push(kv("dynamiq.parent_run.id", s(v.as_ref())));
                span.parent_span_id = ids::span_id_of_run(&trace_id, v).to_vec();
                true
            }
            ("status", Some(v)) => {
                attrs.push(kv("dynamiq.run.status", s(v.as_ref())));
                status = Some(v.clone());
                true
            }
            ("status", None) if is_null(raw) => {
                attrs.push(kv("dynamiq.run.status", s("")));
                true
            }
            ("start_time", Some(v)) => match parse_ns(v) {
                Some(ns) => {
                    if format_ns(ns) != v.as_ref() {
                        attrs.push(kv("dynamiq.run.start_time", s(v.as_ref())));
                    }
                    start_ns = Some(ns);
                    true
                }
                None => false,
            },
            ("end_time", Some(v)) => match parse_ns(v) {
                Some(ns) => {
                    if format_ns(ns) != v.as_ref() {
                        attrs.push(kv("dynamiq.run.end_time", s(v.as_ref())));
                    }
                    end = Some(Some(ns));
                    true
                }
                None => false,
            },
            ("end_time", None) if is_null(raw) => {
                attrs.push(kv("dynamiq.run.end_time_missing", Value::BoolValue(true)));
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
                        attrs.push(kv(value_key, s(t.as_ref())));
                        attrs.push(kv(mime_key, s("text/plain")));
                    }
                    None => {
                        attrs.push(kv(value_key, s(raw.get())));
                        attrs.push(kv(mime_key, s("application/json")));
                    }
                }
                true
            }
            ("metadata" | "error" | "executions", _) if is_null(raw) => true,
            ("metadata", _) => {
                attrs.push(kv("dynamiq.metadata", s(raw.get())));
                true
            }
            ("error", _) => {
                attrs.push(kv("dynamiq.error", s(raw.get())));
                error = Some(raw);
                true
            }
            ("executions", _) => {
                attrs.push(kv("dynamiq.executions", s(raw.get())));
                true
            }
            ("tags", _) if is_null(raw) => true,
            ("tags", _) => match serde_json::from_str::<Vec<Cow<'_, str>>>(raw.get()) {
                Ok(tags) => {
                    attrs.push(kv(
                        "tag.tags",
                        string_array(tags.iter().map(|t| t.as_ref())),
                    ));
                    true
                }
                Err(_) => false,
            },
            _ => false,
        };
        if !exact {
            extra.push((key, raw));
        }
    }
    if !extra.is_empty() {
        let mut text = Vec::new();
        let mut obj = super::values::ObjectWriter::open(&mut text);
        for (k, v) in &extra {
            obj.raw(k, v.get());
        }
        obj.close();
        attrs.push(kv(
            "dynamiq.run.extra",
            s(String::from_utf8(text).unwrap_or_default()),
        ));
    }

    span.name = name.unwrap_or_else(|| "run".to_owned());
    let start = start_ns.unwrap_or(0);
    span.start_time_unix_nano = start;
    span.end_time_unix_nano = end.flatten().unwrap_or(start).max(start);
    if let (Some(Some(end_ns)), Some(raw)) = (end, fields.get("end_time"))
        && end_ns < start
        && !attrs.iter().any(|a| a.key == "dynamiq.run.end_time")
    {
        // A span cannot end before it starts: the span ends at its start and the run's end
        // travels as written.
        if let Some(text) = raw_str(raw) {
            attrs.push(kv("dynamiq.run.end_time", s(text.as_ref())));
        }
    }

    // Derived attributes for the tools users already run.
    let empty_node = NodeView::default();
    let node = meta.node.as_ref().unwrap_or(&empty_node);
    let group = node.group.and_then(raw_str);
    let (oi_kind, operation, kind) = kinds(run_type.as_deref(), group.as_deref());
    span.kind = kind as i32;
    attrs.push(kv("openinference.span.kind", s(oi_kind)));
    if let Some(op) = operation {
        attrs.push(kv("gen_ai.operation.name", s(op)));
        let name_key = match op {
            "invoke_workflow" => Some("gen_ai.workflow.name"),
            "execute_tool" => Some("gen_ai.tool.name"),
            "invoke_agent" => Some("gen_ai.agent.name"),
            _ => None,
        };
        if let Some(k) = name_key {
            attrs.push(kv(k, s(span.name.as_str())));
        }
    }
    derive_model(&mut attrs, node);
    if options.capture_message_content && oi_kind == "LLM" {
        derive_messages(&mut attrs, node, fields.get("output"));
    }
    if let Some(usage) = &meta.usage {
        derive_usage(&mut attrs, usage);
    }

    if status.as_deref() == Some("failed") {
        let (message, traceback) = error_parts(error);
        let exception_type = exception_type(traceback.as_deref());
        span.status = Some(Status {
            code: StatusCode::Error as i32,
            message: message.clone().unwrap_or_default(),
        });
        attrs.push(kv("error.type", s(exception_type.as_str())));
        let mut event_attrs = vec![kv("exception.type", s(exception_type.as_str()))];
        if let Some(m) = message {
            event_attrs.push(kv("exception.message", s(m)));
        }
        if let Some(t) = traceback {
            event_attrs.push(kv("exception.stacktrace", s(t)));
        }
        span.events.push(Event {
            time_unix_nano: span.end_time_unix_nano,
            name: "exception".to_owned(),
            attributes: event_attrs,
            dropped_attributes_count: 0,
        });
    }
    span.attributes = attrs;
    Ok(RunSpan {
        span,
        resource: Resource {
            attributes: vec![
                kv("service.name", s(options.service_name.as_str())),
                kv("telemetry.sdk.name", s("dynamiq")),
            ],
            ..Default::default()
        },
        resource_schema_url: String::new(),
        scope: InstrumentationScope {
            name: "dynamiq-sidecar".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        },
        scope_schema_url: String::new(),
    })
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
fn derive_model(attrs: &mut Vec<KeyValue>, node: &NodeView<'_>) {
    if let Some(model) = node.model.and_then(raw_str) {
        let (prefix, name) = match model.split_once('/') {
            Some((p, n)) if !p.is_empty() && !n.is_empty() => (Some(p), n),
            _ => (None, model.as_ref()),
        };
        attrs.push(kv("gen_ai.request.model", s(name)));
        attrs.push(kv("llm.model_name", s(name)));
        if let Some(prefix) = prefix {
            let provider = match prefix {
                "azure" => "azure.ai.openai",
                "bedrock" => "aws.bedrock",
                "vertex_ai" => "gcp.vertex_ai",
                "gemini" => "gcp.gemini",
                "mistral" => "mistral_ai",
                other => other,
            };
            attrs.push(kv("gen_ai.provider.name", s(provider)));
            attrs.push(kv("gen_ai.system", s(provider)));
            attrs.push(kv("llm.system", s(prefix)));
        }
    }
    if let Some(t) = node.temperature.and_then(raw_f64) {
        attrs.push(kv("gen_ai.request.temperature", Value::DoubleValue(t)));
    }
    if let Some(p) = node.top_p.and_then(raw_f64) {
        attrs.push(kv("gen_ai.request.top_p", Value::DoubleValue(p)));
    }
    if let Some(n) = node.max_tokens.and_then(raw_i64) {
        attrs.push(kv("gen_ai.request.max_tokens", Value::IntValue(n)));
    }
    if let Some(stop) = node
        .stop
        .and_then(|r| serde_json::from_str::<Vec<Cow<'_, str>>>(r.get()).ok())
    {
        attrs.push(kv(
            "gen_ai.request.stop_sequences",
            string_array(stop.iter().map(|x| x.as_ref())),
        ));
    }
}

/// `metadata.usage` → token counts and costs, one to one (no subtraction).
fn derive_usage(attrs: &mut Vec<KeyValue>, usage: &UsageView<'_>) {
    let int = |r: Option<&RawValue>| r.and_then(raw_i64);
    let float = |r: Option<&RawValue>| r.and_then(raw_f64);
    if let Some(n) = int(usage.prompt_tokens) {
        attrs.push(kv("gen_ai.usage.input_tokens", Value::IntValue(n)));
        attrs.push(kv("llm.token_count.prompt", Value::IntValue(n)));
    }
    if let Some(n) = int(usage.completion_tokens) {
        attrs.push(kv("gen_ai.usage.output_tokens", Value::IntValue(n)));
        attrs.push(kv("llm.token_count.completion", Value::IntValue(n)));
    }
    if let Some(n) = int(usage.total_tokens) {
        attrs.push(kv("llm.token_count.total", Value::IntValue(n)));
    }
    if let Some(n) = int(usage.cache_read_input_tokens) {
        attrs.push(kv(
            "gen_ai.usage.cache_read.input_tokens",
            Value::IntValue(n),
        ));
    }
    if let Some(n) = int(usage.cache_creation_input_tokens) {
        attrs.push(kv(
            "gen_ai.usage.cache_creation.input_tokens",
            Value::IntValue(n),
        ));
    }
    if let Some(x) = float(usage.prompt_tokens_cost_usd) {
        attrs.push(kv("llm.cost.prompt", Value::DoubleValue(x)));
    }
    if let Some(x) = float(usage.completion_tokens_cost_usd) {
        attrs.push(kv("llm.cost.completion", Value::DoubleValue(x)));
    }
    if let Some(x) = float(usage.total_tokens_cost_usd) {
        attrs.push(kv("llm.cost.total", Value::DoubleValue(x)));
        attrs.push(kv("gen_ai.usage.cost", Value::DoubleValue(x)));
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
fn derive_messages(attrs: &mut Vec<KeyValue>, node: &NodeView<'_>, output: Option<&RawValue>) {
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
        attrs.push(kv(
            "gen_ai.input.messages",
            s(String::from_utf8(out).unwrap_or_default()),
        ));
    }
    let output: OutputView<'_> = view(output);
    if let Some(content) = output.content {
        let mut out = b"[".to_vec();
        parts_message(&mut out, "assistant", content);
        out.push(b']');
        attrs.push(kv(
            "gen_ai.output.messages",
            s(String::from_utf8(out).unwrap_or_default()),
        ));
    }
}

#[derive(Deserialize, Default)]
struct ErrorView<'a> {
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    traceback: Option<&'a RawValue>,
}

/// `error.message` and `error.traceback` as strings.
fn error_parts(error: Option<&RawValue>) -> (Option<String>, Option<String>) {
    let e: ErrorView<'_> = view(error);
    (
        e.message.and_then(raw_str).map(Cow::into_owned),
        e.traceback.and_then(raw_str).map(Cow::into_owned),
    )
}

/// The exception type named by a traceback's last line (`ValueError: boom` → `ValueError`).
fn exception_type(traceback: Option<&str>) -> String {
    traceback
        .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()))
        .and_then(|line| line.split_once(':').map(|(head, _)| head.trim()))
        .filter(|head| {
            !head.is_empty()
                && head
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
        })
        .unwrap_or("Error")
        .to_owned()
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
        attributes.push(kv(&lifted.key, s(text)));
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
