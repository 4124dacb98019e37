//! A run made from a foreign span → that span again, from its `metadata.otel`.
//!
//! Owns reading the envelope `spans_to_runs/metadata.rs` writes (ids, trace state, flags, kind,
//! exact times, status, attributes, events, links, dropped counts, resource, scope and their
//! schema URLs) and putting back the attributes that were lifted into the run's
//! `input`/`output`, in the form they were lifted in.
//!
//! Guarantees: span → run → span gives the span back exactly; an envelope that is not usable
//! (ids of the wrong length, times that are not numbers) yields `None`, and the run is then
//! exported as a Dynamiq run, never a panic.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::RunSpan;
use crate::convert::attr_sink::kv;
use crate::convert::run_fields::{RunFields, raw_str};

/// `metadata.otel` of a run made from a foreign span.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OtelEnvelope<'a> {
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
pub(super) fn foreign_span(fields: &RunFields<'_>, env: OtelEnvelope<'_>) -> Option<RunSpan> {
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
