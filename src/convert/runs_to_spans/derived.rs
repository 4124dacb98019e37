//! The attributes a Dynamiq run's span gets for the tools users already run.
//!
//! Owns the mapping of a run onto the OpenTelemetry GenAI and OpenInference conventions: the
//! kinds table (run type and node group → OpenInference kind, GenAI operation, span kind),
//! model and provider from `provider/model`, sampling parameters, token usage and costs from
//! `metadata.usage`, and the opt-in message content of LLM runs in the GenAI parts schema.
//!
//! Guarantees: derived attributes are only added, never needed to rebuild the run (the
//! carriers alone do), so they cannot change the round trip; values are copied one to one (no
//! arithmetic on token counts or costs).

use std::borrow::Cow;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::convert::attr_sink::{Attr, AttrSink};
use crate::convert::run_fields::{NodeView, Raw, UsageView, raw_f64, raw_i64, raw_str, view};

/// OpenInference kind, GenAI operation and span kind of a run (the kinds table).
pub(super) fn kinds(
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
pub(super) fn derive_model(attrs: &mut impl AttrSink, node: &NodeView<'_>) {
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
pub(super) fn derive_usage(attrs: &mut impl AttrSink, usage: &UsageView<'_>) {
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
        attrs.push("gen_ai.usage.cache_write.input_tokens", Attr::Int(n));
    }
    if let Some(n) = int(usage.reasoning_tokens) {
        attrs.push("gen_ai.usage.reasoning.output_tokens", Attr::Int(n));
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
    use crate::convert::values::{ObjectWriter, write_str};
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
pub(super) fn derive_messages(
    attrs: &mut impl AttrSink,
    node: &NodeView<'_>,
    output: Option<Raw<'_>>,
) {
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

/// The opt-in content of a tool run: its input as `gen_ai.tool.call.arguments` and its output as
/// `gen_ai.tool.call.result`, as the JSON text the run holds (a JSON string as its text).
pub(super) fn derive_tool_call(
    attrs: &mut impl AttrSink,
    input: Option<Raw<'_>>,
    output: Option<Raw<'_>>,
) {
    for (key, value) in [
        ("gen_ai.tool.call.arguments", input),
        ("gen_ai.tool.call.result", output),
    ] {
        let Some(value) = value.filter(|v| v.get() != "null") else {
            continue;
        };
        match serde_json::from_str::<Cow<'_, str>>(value.get()) {
            Ok(text) => attrs.str(key, &text),
            Err(_) => attrs.str(key, value.get()),
        }
    }
}
