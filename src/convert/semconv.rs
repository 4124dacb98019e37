//! The attributes the conversion reads, by convention: Dynamiq's own exactness carriers
//! (`dynamiq.*`), OpenTelemetry GenAI (`gen_ai.*`), OpenInference (`input.value`, `llm.*`),
//! Traceloop, Langfuse and LangSmith.
//!
//! Owns the attribute names and the vocabulary tables (kinds ⇄ node groups, provider names).
//! Guarantees: a span's attributes are scanned once; when a key repeats, the first one wins.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

macro_rules! known_attributes {
    ($($field:ident => $key:literal,)*) => {
        /// The known attributes of one span, found in a single pass.
        #[derive(Default)]
        pub struct Known<'a> {
            $(
                #[doc = concat!("`", $key, "`")]
                pub $field: Option<&'a Value>,
            )*
        }

        impl<'a> Known<'a> {
            /// Scans `attrs` once.
            pub fn scan(attrs: &'a [KeyValue]) -> Self {
                let mut known = Self::default();
                for kv in attrs {
                    let slot = match kv.key.as_str() {
                        $($key => &mut known.$field,)*
                        _ => continue,
                    };
                    if slot.is_none() {
                        *slot = kv.value.as_ref().and_then(|v| v.value.as_ref());
                    }
                }
                known
            }
        }

        /// Every key [`Known`] reads.
        pub const KNOWN_KEYS: &[&str] = &[$($key,)*];
    };
}

known_attributes! {
    dq_run_id => "dynamiq.run.id",
    dq_trace_id => "dynamiq.trace_id",
    dq_parent_run_id => "dynamiq.parent_run.id",
    dq_run_type => "dynamiq.run.type",
    dq_run_status => "dynamiq.run.status",
    dq_end_time_missing => "dynamiq.run.end_time_missing",
    dq_session_id => "dynamiq.session_id",
    dq_source_id => "dynamiq.source_id",
    dq_metadata => "dynamiq.metadata",
    dq_error => "dynamiq.error",
    dq_executions => "dynamiq.executions",
    dq_run_keys => "dynamiq.run.keys",
    dq_run_extra => "dynamiq.run.extra",
    dq_start_time => "dynamiq.run.start_time",
    dq_end_time => "dynamiq.run.end_time",
    input_value => "input.value",
    input_mime => "input.mime_type",
    output_value => "output.value",
    output_mime => "output.mime_type",
    genai_input_messages => "gen_ai.input.messages",
    genai_output_messages => "gen_ai.output.messages",
    genai_system_instructions => "gen_ai.system_instructions",
    genai_tool_call_arguments => "gen_ai.tool.call.arguments",
    genai_tool_call_result => "gen_ai.tool.call.result",
    genai_tool_definitions => "gen_ai.tool.definitions",
    genai_prompt => "gen_ai.prompt",
    genai_completion => "gen_ai.completion",
    traceloop_input => "traceloop.entity.input",
    traceloop_output => "traceloop.entity.output",
    langfuse_input => "langfuse.observation.input",
    langfuse_output => "langfuse.observation.output",
    session_id => "session.id",
    genai_conversation_id => "gen_ai.conversation.id",
    langfuse_session_id => "langfuse.session.id",
    tag_tags => "tag.tags",
    langfuse_tags => "langfuse.trace.tags",
    langsmith_tags => "langsmith.span.tags",
    oi_kind => "openinference.span.kind",
    genai_operation => "gen_ai.operation.name",
    genai_tool_name => "gen_ai.tool.name",
    genai_agent_name => "gen_ai.agent.name",
    genai_request_model => "gen_ai.request.model",
    genai_response_model => "gen_ai.response.model",
    llm_model_name => "llm.model_name",
    genai_provider => "gen_ai.provider.name",
    genai_system => "gen_ai.system",
    llm_provider => "llm.provider",
    llm_system => "llm.system",
    genai_input_tokens => "gen_ai.usage.input_tokens",
    genai_prompt_tokens => "gen_ai.usage.prompt_tokens",
    llm_prompt_tokens => "llm.token_count.prompt",
    genai_output_tokens => "gen_ai.usage.output_tokens",
    genai_completion_tokens => "gen_ai.usage.completion_tokens",
    llm_completion_tokens => "llm.token_count.completion",
    genai_total_tokens => "gen_ai.usage.total_tokens",
    llm_total_tokens => "llm.token_count.total",
    genai_cache_read => "gen_ai.usage.cache_read.input_tokens",
    llm_cache_read => "llm.token_count.prompt_details.cache_read",
    genai_cache_write => "gen_ai.usage.cache_write.input_tokens",
    genai_cache_creation => "gen_ai.usage.cache_creation.input_tokens",
    genai_reasoning_tokens => "gen_ai.usage.reasoning.output_tokens",
    llm_cache_write => "llm.token_count.prompt_details.cache_write",
    llm_cost_prompt => "llm.cost.prompt",
    llm_cost_completion => "llm.cost.completion",
    llm_cost_total => "llm.cost.total",
    genai_cost => "gen_ai.usage.cost",
}

/// The OpenInference span kind of a span, from `openinference.span.kind` or, failing that,
/// from `gen_ai.operation.name`; `CHAIN` when neither says.
pub fn openinference_kind(oi_kind: Option<&str>, operation: Option<&str>) -> &'static str {
    if let Some(kind) = oi_kind {
        for known in [
            "LLM",
            "EMBEDDING",
            "RETRIEVER",
            "RERANKER",
            "TOOL",
            "AGENT",
            "GUARDRAIL",
            "EVALUATOR",
            "CHAIN",
        ] {
            if kind.eq_ignore_ascii_case(known) {
                return known;
            }
        }
    }
    match operation.unwrap_or("") {
        "chat" | "text_completion" | "generate_content" => "LLM",
        "embeddings" => "EMBEDDING",
        "retrieval" => "RETRIEVER",
        "execute_tool" => "TOOL",
        "invoke_agent" | "create_agent" => "AGENT",
        _ => "CHAIN",
    }
}

/// The Dynamiq node group of an OpenInference kind (the kinds table of docs/run-span-mapping.md §4, reversed).
pub fn node_group(kind: &str) -> &'static str {
    match kind {
        "LLM" => "llms",
        "TOOL" => "tools",
        "AGENT" => "agents",
        "RETRIEVER" => "retrievers",
        "EMBEDDING" => "embedders",
        "RERANKER" => "rankers",
        "GUARDRAIL" => "validators",
        _ => "utils",
    }
}

/// The synthesised `metadata.node.type` of a span of an OpenInference kind.
pub fn node_type(kind: &str) -> &'static str {
    match kind {
        "LLM" => "otel.llm",
        "TOOL" => "otel.tool",
        "AGENT" => "otel.agent",
        "RETRIEVER" => "otel.retriever",
        "EMBEDDING" => "otel.embedding",
        "RERANKER" => "otel.reranker",
        "GUARDRAIL" => "otel.guardrail",
        "EVALUATOR" => "otel.evaluator",
        _ => "otel.chain",
    }
}

/// The Dynamiq model prefix of an OTel provider name (`gen_ai.provider.name` and friends).
pub fn provider_prefix(provider: &str) -> &str {
    match provider {
        "azure.ai.openai" | "az.ai.openai" | "azure.ai.inference" => "azure",
        "aws.bedrock" => "bedrock",
        "gcp.vertex_ai" => "vertex_ai",
        "gcp.gemini" | "gcp.gen_ai" => "gemini",
        "mistral_ai" => "mistral",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;

    fn kv(key: &str, v: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn one_pass_scan_keeps_the_first_of_repeated_keys() {
        let attrs = vec![
            kv("session.id", "a"),
            kv("other", "x"),
            kv("session.id", "b"),
        ];
        let known = Known::scan(&attrs);
        assert_eq!(known.session_id, Some(&Value::StringValue("a".into())));
        assert!(known.input_value.is_none());
    }

    #[test]
    fn keys_are_unique() {
        let mut keys = KNOWN_KEYS.to_vec();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), KNOWN_KEYS.len());
    }

    #[test]
    fn kinds_come_from_openinference_then_genai() {
        assert_eq!(openinference_kind(Some("llm"), Some("execute_tool")), "LLM");
        assert_eq!(openinference_kind(None, Some("execute_tool")), "TOOL");
        assert_eq!(openinference_kind(Some("bogus"), Some("chat")), "LLM");
        assert_eq!(openinference_kind(None, None), "CHAIN");
        assert_eq!(node_group("EMBEDDING"), "embedders");
        assert_eq!(node_group("CHAIN"), "utils");
        assert_eq!(provider_prefix("aws.bedrock"), "bedrock");
        assert_eq!(provider_prefix("openai"), "openai");
    }
}
