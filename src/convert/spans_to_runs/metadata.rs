//! The `metadata` synthesised for a foreign span's run.
//!
//! Owns `metadata.node` (id, name, group, type and `provider/model`, from the GenAI and
//! OpenInference attributes), `metadata.usage` (token counts and costs, first convention that
//! has them) and `metadata.otel`: the span's envelope in OTLP/JSON form (ids, trace state, flags,
//! kind, exact times, status, the attributes not lifted into `input`/`output` and where the
//! lifted ones went, events, links, dropped counts, resource, scope and their schema URLs).
//!
//! Guarantees: `metadata.otel` holds everything of the span a run has no field for, so
//! `runs_to_spans/foreign.rs` rebuilds the span from the run.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};

use super::foreign::{Lifted, Origin};
use super::validate::ValidSpan;
use crate::convert::semconv::{self, Known};
use crate::convert::values::{ObjectWriter, as_f64, as_i64, as_str, write_otlp_attributes};

pub(super) fn write_synthesised_metadata(
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
    if let Some(n) = first_int(&[
        known.genai_cache_write,
        known.genai_cache_creation,
        known.llm_cache_write,
    ]) {
        usage.int("cache_creation_input_tokens", n);
    }
    if let Some(n) = first_int(&[known.genai_reasoning_tokens]) {
        usage.int("reasoning_tokens", n);
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
