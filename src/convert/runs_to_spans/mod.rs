//! Dynamiq runs → OTLP spans (docs/run-span-mapping.md §7): reading a run, deriving its span's
//! attributes into an [`AttrSink`](crate::convert::attr_sink::AttrSink), and the struct path
//! ([`runs_to_request`]) that `dynamiq-sidecar convert` uses and that tests hold the OTLP
//! output's direct protobuf path ([`super::runs_to_bytes`], same derivation) to.
//!
//! Owns reading a run and telling its kind apart, and grouping spans by resource and scope:
//! - **Dynamiq runs** (from the SDK): every top-level field is carried exactly in `dynamiq.*`
//!   attributes, so this sidecar (or another one) turns the span back into the same run, equal
//!   as a JSON value (`carriers.rs`, with the carrier table; read back by
//!   `spans_to_runs/restore.rs`). Besides the carriers, the span gets the attributes other tools
//!   render (`derived.rs`): OpenInference and GenAI kinds, model and provider, sampling
//!   parameters, token usage and costs, session, tags; and, for a failed run, `ERROR` status
//!   and an `exception` event (`head.rs`: the span apart from its attributes, under the Dynamiq
//!   resource and scope).
//! - **Runs made from foreign spans** (they carry `metadata.otel`, written by
//!   `spans_to_runs/metadata.rs`): the envelope is re-emitted as it was (ids, kind, exact times,
//!   status, attributes, events, links, resource, scope), and the attributes lifted into
//!   `input`/`output` are put back, so span → run → span is exact (`foreign.rs`).
//!
//! Guarantees: conversion is pure and deterministic; a run that is not a JSON object with a
//! string `id` and `trace_id` is reported, never a panic; JSON carried in attributes is the
//! client's exact text.

mod carriers;
mod derived;
mod foreign;
mod head;

use std::borrow::Cow;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

pub(super) use self::carriers::dynamiq_span;
use self::foreign::{OtelEnvelope, foreign_span};
pub(super) use self::head::{SpanHead, dynamiq_resource, dynamiq_scope};
use crate::convert::run_fields::{MetadataView, RunFields, raw_str};

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
