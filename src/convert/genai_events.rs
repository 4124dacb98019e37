//! GenAI content that travels as events instead of span attributes: the prompt and completion of
//! an LLM call as the OpenTelemetry GenAI instrumentations emit them when content capture is on.
//!
//! Two conventions are read:
//! - the newest, one event `gen_ai.client.inference.operation.details` carrying
//!   `gen_ai.input.messages`, `gen_ai.output.messages` and `gen_ai.system_instructions` (as
//!   structured values or JSON strings);
//! - the older one, an event per message (`gen_ai.system.message`, `gen_ai.user.message`,
//!   `gen_ai.assistant.message`, `gen_ai.tool.message`) and per completion choice
//!   (`gen_ai.choice`), their content in the event's body (log records), in
//!   `gen_ai.event.content` (a JSON string), or in plain attributes (`content`, `role`,
//!   `tool_calls`, `id`, `index`, `finish_reason`, `message`).
//!
//! Guarantees: the input is an array of messages in the order the events came, the system
//! instructions first (as a `system` message holding the instructions' parts); the output is the
//! `gen_ai.output.messages` value, else the array of choices; events of other names are ignored;
//! nothing here panics on any attribute shape, and embedded JSON deeper than the converter's
//! nesting limit stays a string.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use serde_json::{Map, Value as Json};

use super::values::{find, json_text, write_plain};

/// The newest convention's one event per inference.
pub const OPERATION_DETAILS: &str = "gen_ai.client.inference.operation.details";
/// The older convention's events, by message role.
const MESSAGE_EVENTS: [(&str, &str); 4] = [
    ("gen_ai.system.message", "system"),
    ("gen_ai.user.message", "user"),
    ("gen_ai.assistant.message", "assistant"),
    ("gen_ai.tool.message", "tool"),
];
/// The older convention's completion event.
const CHOICE_EVENT: &str = "gen_ai.choice";
/// Attributes of the older events that say something about the message itself.
const MESSAGE_FIELDS: [&str; 6] = ["role", "content", "tool_calls", "id", "name", "parts"];
const CHOICE_FIELDS: [&str; 3] = ["index", "finish_reason", "message"];

/// The input and output an LLM call's events carry.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GenAiContent {
    /// The messages sent (system instructions first), if any event carried them.
    pub input: Option<Json>,
    /// What came back, if any event carried it.
    pub output: Option<Json>,
}

impl GenAiContent {
    /// True when no event carried content.
    pub fn is_empty(&self) -> bool {
        self.input.is_none() && self.output.is_none()
    }
}

/// Whether `name` is one of the GenAI content events.
pub fn is_genai_event(name: &str) -> bool {
    name == OPERATION_DETAILS
        || name == CHOICE_EVENT
        || MESSAGE_EVENTS.iter().any(|(event, _)| *event == name)
}

/// The content of a span's GenAI events (empty when it has none).
pub fn from_span_events(events: &[Event]) -> GenAiContent {
    let mut collector = Collector::default();
    for event in events.iter().filter(|e| is_genai_event(&e.name)) {
        collector.add(&event.name, &event.attributes, None);
    }
    collector.finish()
}

/// Gathers GenAI events one by one (span events, or log records with their body).
#[derive(Debug, Default)]
pub struct Collector {
    system: Option<Json>,
    input_messages: Option<Json>,
    output_messages: Option<Json>,
    messages: Vec<Json>,
    choices: Vec<Json>,
}

impl Collector {
    /// Adds one event; `false` (and nothing kept) when `name` is not a GenAI content event.
    pub fn add(&mut self, name: &str, attrs: &[KeyValue], body: Option<&Value>) -> bool {
        if name == OPERATION_DETAILS {
            let field = |key| find(attrs, key).map(to_json);
            if let Some(v) = field("gen_ai.input.messages") {
                self.input_messages = Some(v);
            }
            if let Some(v) = field("gen_ai.output.messages") {
                self.output_messages = Some(v);
            }
            if let Some(v) = field("gen_ai.system_instructions") {
                self.system = Some(v);
            }
        } else if let Some((_, role)) = MESSAGE_EVENTS.iter().find(|(event, _)| *event == name) {
            let mut message = content_object(attrs, body, &MESSAGE_FIELDS);
            message
                .entry("role")
                .or_insert_with(|| Json::String((*role).to_string()));
            self.messages.push(Json::Object(message));
        } else if name == CHOICE_EVENT {
            self.choices
                .push(Json::Object(content_object(attrs, body, &CHOICE_FIELDS)));
        } else {
            return false;
        }
        true
    }

    /// What the events added up to.
    pub fn finish(self) -> GenAiContent {
        let system = self.system.map(|instructions| {
            let mut message = Map::new();
            message.insert("role".into(), Json::String("system".into()));
            let key = if instructions.is_array() {
                "parts"
            } else {
                "content"
            };
            message.insert(key.into(), instructions);
            Json::Object(message)
        });
        let messages = match self.input_messages {
            Some(Json::Array(messages)) => Some(messages),
            Some(other) => Some(vec![other]),
            None => (!self.messages.is_empty()).then_some(self.messages),
        };
        let input = match (system, messages) {
            (None, None) => None,
            (system, messages) => Some(Json::Array(
                system
                    .into_iter()
                    .chain(messages.unwrap_or_default())
                    .collect(),
            )),
        };
        let output = self
            .output_messages
            .or_else(|| (!self.choices.is_empty()).then_some(Json::Array(self.choices)));
        GenAiContent { input, output }
    }
}

/// The fields of an older-convention event: its body when it is a map, else the JSON object in
/// `gen_ai.event.content`, else the `fields` found among its attributes.
fn content_object(attrs: &[KeyValue], body: Option<&Value>, fields: &[&str]) -> Map<String, Json> {
    if let Some(Json::Object(map)) = body.map(to_json) {
        return map;
    }
    if let Some(Json::Object(map)) = find(attrs, "gen_ai.event.content").map(to_json) {
        return map;
    }
    let mut map = Map::new();
    for key in fields {
        if let Some(value) = find(attrs, key) {
            map.insert((*key).to_string(), to_json(value));
        }
    }
    if map.is_empty()
        && let Some(body) = body
    {
        map.insert("content".into(), to_json(body));
    }
    map
}

/// An attribute value as JSON: a string holding a JSON object or array is that value, any
/// other string stays a string; structured values keep their structure.
fn to_json(value: &Value) -> Json {
    if let Value::StringValue(s) = value {
        let trimmed = s.trim_start();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && let Some(json) = json_text(s)
            && let Ok(parsed) = serde_json::from_str(json)
        {
            return parsed;
        }
        return Json::String(s.clone());
    }
    let mut out = Vec::new();
    write_plain(&mut out, Some(value));
    serde_json::from_slice(&out).unwrap_or(Json::Null)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValueList};
    use serde_json::json;

    use super::*;

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn kvlist(entries: Vec<(&str, Value)>) -> Value {
        Value::KvlistValue(KeyValueList {
            values: entries.into_iter().map(|(k, v)| kv(k, v)).collect(),
        })
    }

    fn event(name: &str, attributes: Vec<KeyValue>) -> Event {
        Event {
            name: name.into(),
            attributes,
            ..Default::default()
        }
    }

    #[test]
    fn the_newest_convention_reads_messages_and_puts_the_system_instructions_first() {
        let parts = Value::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(kvlist(vec![
                    ("type", s("text")),
                    ("content", s("Be brief.")),
                ])),
            }],
        });
        let events = [event(
            OPERATION_DETAILS,
            vec![
                kv("gen_ai.system_instructions", parts),
                kv(
                    "gen_ai.input.messages",
                    s(r#"[{"role":"user","parts":[{"type":"text","content":"Hi"}]}]"#),
                ),
                kv(
                    "gen_ai.output.messages",
                    s(
                        r#"[{"role":"assistant","parts":[{"type":"text","content":"Hello"}],"finish_reason":"stop"}]"#,
                    ),
                ),
            ],
        )];
        let content = from_span_events(&events);
        assert_eq!(
            content.input,
            Some(json!([
                {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                {"role": "user", "parts": [{"type": "text", "content": "Hi"}]}
            ]))
        );
        assert_eq!(
            content.output,
            Some(
                json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hello"}], "finish_reason": "stop"}])
            )
        );
    }

    #[test]
    fn older_events_become_messages_in_order_and_choices() {
        let events = [
            event("gen_ai.system.message", vec![kv("content", s("Be brief."))]),
            event(
                "gen_ai.user.message",
                vec![kv("gen_ai.event.content", s(r#"{"content":"Hi"}"#))],
            ),
            event("unrelated", vec![kv("content", s("ignored"))]),
            event(
                "gen_ai.tool.message",
                vec![kv("content", s("42")), kv("id", s("call_1"))],
            ),
            event(
                "gen_ai.choice",
                vec![
                    kv("index", Value::IntValue(0)),
                    kv("finish_reason", s("stop")),
                    kv(
                        "message",
                        kvlist(vec![("role", s("assistant")), ("content", s("Hello"))]),
                    ),
                ],
            ),
        ];
        let content = from_span_events(&events);
        assert_eq!(
            content.input,
            Some(json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "tool", "content": "42", "id": "call_1"}
            ]))
        );
        assert_eq!(
            content.output,
            Some(
                json!([{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello"}}])
            )
        );
    }

    #[test]
    fn a_log_record_body_is_the_message_and_a_plain_body_its_content() {
        let mut c = Collector::default();
        let body = kvlist(vec![("content", s("What is 2+2?"))]);
        assert!(c.add("gen_ai.user.message", &[], Some(&body)));
        assert!(c.add("gen_ai.assistant.message", &[], Some(&s("4"))));
        assert!(!c.add("gen_ai.other", &[], Some(&body)));
        let content = c.finish();
        assert_eq!(
            content.input,
            Some(json!([
                {"content": "What is 2+2?", "role": "user"},
                {"content": "4", "role": "assistant"}
            ]))
        );
        assert!(content.output.is_none());
    }

    #[test]
    fn no_events_no_content_and_odd_shapes_do_not_panic() {
        assert!(from_span_events(&[]).is_empty());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let events = [
            event(
                OPERATION_DETAILS,
                vec![kv("gen_ai.input.messages", s(&deep))],
            ),
            event(
                "gen_ai.choice",
                vec![kv("message", Value::BytesValue(vec![0, 1]))],
            ),
        ];
        let content = from_span_events(&events);
        // Too deep to embed: kept as the string it was.
        assert_eq!(content.input, Some(json!([deep])));
        assert_eq!(content.output, Some(json!([{"message": "AAE="}])));
    }
}
