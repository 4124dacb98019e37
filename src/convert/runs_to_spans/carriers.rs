//! A Dynamiq run → its span's head and attributes: the exact carriers, then the derived ones.
//!
//! Owns the carriers (read back by `spans_to_runs/restore.rs`): `dynamiq.run.keys` lists the
//! run's keys in order, each field has its carrier (the table below), and a field that does not
//! fit its carrier (an unknown key, a value of an unexpected type) travels verbatim in
//! `dynamiq.run.extra`. The attributes for other tools come after them (`derived.rs`).
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
//! Guarantees: every top-level field is carried exactly (JSON carried in attributes is the
//! client's exact text), so the span becomes the same run again, equal as a JSON value; span
//! ids are derived from the run ids ([`crate::convert::ids`]), so a parent's span id is known
//! without its run; a span never ends before it starts (the run's end then travels as written).

use std::borrow::Cow;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::derived::{derive_messages, derive_model, derive_tool_call, derive_usage, kinds};
use super::head::{Failure, SpanHead};
use super::{DynamiqRun, RunConvertOptions};
use crate::convert::attr_sink::{Attr, AttrSink};
use crate::convert::ids;
use crate::convert::run_fields::{NodeView, Raw, is_null, raw_str, view};
use crate::convert::time::{is_sdk_spelling, parse_ns};
use crate::convert::values::ObjectWriter;

/// Derives a Dynamiq run's attributes into `attrs` and returns the rest of its span.
pub(in crate::convert) fn dynamiq_span<'a>(
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
        let mut obj = ObjectWriter::open(&mut text);
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
    if options.capture_message_content && oi_kind == "TOOL" {
        derive_tool_call(attrs, fields.get("input"), fields.get("output"));
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

#[derive(Deserialize, Default)]
struct ErrorView<'a> {
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    traceback: Option<&'a RawValue>,
}
