//! A Dynamiq run read for conversion: its top-level fields as raw JSON, borrowed from the
//! record, in order, plus typed views of the parts of `metadata` the span attributes derive from.
//!
//! Guarantees: reading never rebuilds a value (every field stays the exact bytes the client
//! sent), never fails on unexpected types inside `metadata` (a view that does not fit is
//! simply absent), and for a repeated key keeps the last value, as JSON parsers do.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON object key, borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON value's exact text, borrowed from the run: what a `&RawValue` holds, but also made for
/// a value whose text was located in the run rather than captured by `serde_json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    /// The value's JSON text.
    pub fn get(self) -> &'a str {
        self.0
    }
}

impl<'a> From<&'a RawValue> for Raw<'a> {
    fn from(raw: &'a RawValue) -> Self {
        Self(raw.get())
    }
}

impl<'a> From<&Raw<'a>> for Raw<'a> {
    fn from(raw: &Raw<'a>) -> Self {
        *raw
    }
}

/// The top-level fields of a run, in document order, each as raw JSON.
#[derive(Debug)]
pub struct RunFields<'a> {
    /// `(key, value)` pairs; a repeated key appears once, at its first position, with its last
    /// value.
    pub fields: Vec<(Cow<'a, str>, Raw<'a>)>,
    /// A bit per [`key_bit`] of the keys in `fields`: a key whose bit is clear is new, so
    /// [`RunFields::set`] searches for a duplicate only when the bit is already set.
    key_bits: u64,
}

impl<'de> Deserialize<'de> for RunFields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RunFields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a run object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = RunFields::new();
                while let Some((Key(k), v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    fields.set(k, Raw::from(v));
                }
                Ok(fields)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> RunFields<'a> {
    /// Parses a run's JSON (an object; anything else is an error). UTF-8 is checked once for
    /// the whole run rather than piece by piece; bytes that are not UTF-8 get `serde_json`'s own
    /// error, as before.
    pub fn parse(json: &'a [u8]) -> Result<Self, serde_json::Error> {
        match std::str::from_utf8(json) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(json),
        }
    }

    /// [`RunFields::parse`] and the view of its `metadata` ([`view`] of
    /// `fields.get("metadata")`), reading `metadata` once: it is deserialised into the view
    /// and its text located from the neighbouring keys' positions. Falls back to reading it
    /// twice where that cannot be done (an escaped key next to `metadata`, a `metadata` that
    /// does not fit the view), so the result is always the same as the two-step read.
    pub fn parse_with_metadata(
        json: &'a [u8],
    ) -> Result<(Self, MetadataView<'a>), serde_json::Error> {
        if let Some(read) = Self::one_pass(json) {
            return Ok(read);
        }
        let fields = Self::parse(json)?;
        let meta = view(fields.get("metadata"));
        Ok((fields, meta))
    }

    /// The one-pass read of [`RunFields::parse_with_metadata`]; `None` when it cannot be done.
    fn one_pass(json: &'a [u8]) -> Option<(Self, MetadataView<'a>)> {
        let text = std::str::from_utf8(json).ok()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let read = serde::de::DeserializeSeed::deserialize(OnePass { text }, &mut de).ok()?;
        de.end().ok()?;
        Some(read)
    }

    fn new() -> Self {
        RunFields {
            fields: Vec::with_capacity(24),
            key_bits: 0,
        }
    }

    /// The raw value of a field.
    pub fn get(&self, key: &str) -> Option<Raw<'a>> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Sets `key` (at its first position, if repeated) and returns its slot.
    fn set(&mut self, key: Cow<'a, str>, value: Raw<'a>) -> usize {
        let bit = key_bit(&key);
        let repeated = if self.key_bits & bit == 0 {
            None
        } else {
            self.fields
                .iter()
                .position(|(existing, _)| *existing == key)
        };
        self.key_bits |= bit;
        match repeated {
            Some(slot) => {
                self.fields[slot].1 = value;
                slot
            }
            None => {
                self.fields.push((key, value));
                self.fields.len() - 1
            }
        }
    }
}

/// One of 64 bits chosen by a key's length, first and last bytes (a different bit for each
/// key the SDK writes; `key_bits_of_sdk_keys_are_distinct` checks it).
fn key_bit(key: &str) -> u64 {
    let bytes = key.as_bytes();
    let first = u64::from(bytes.first().copied().unwrap_or(0));
    let last = u64::from(bytes.last().copied().unwrap_or(0));
    1 << ((key.len() as u64 * 2 + first * 3 + last) % 64)
}

/// The one-pass read of [`RunFields::parse_with_metadata`] over `text`, the whole run.
struct OnePass<'a> {
    text: &'a str,
}

impl<'de> serde::de::DeserializeSeed<'de> for OnePass<'de> {
    type Value = (RunFields<'de>, MetadataView<'de>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OnePass<'de> {
    type Value = (RunFields<'de>, MetadataView<'de>);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a run object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let text = self.text;
        let unlocated = || A::Error::custom("metadata's text could not be located");
        let mut fields = RunFields::new();
        let mut meta = MetadataView::default();
        // `metadata`'s slot and where its value starts, until the next key shows where it ends.
        let mut open: Option<(usize, usize)> = None;
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            if let Some((slot, start)) = open.take() {
                // Between a value and the next key's opening quote: whitespace, one comma.
                let quote = offset_in(text, &k).ok_or_else(unlocated)?.checked_sub(1);
                let before = quote
                    .and_then(|q| text.get(start..q))
                    .ok_or_else(unlocated)?;
                let value = before.trim_end().strip_suffix(',').ok_or_else(unlocated)?;
                fields.fields[slot].1 = Raw(value.trim_end());
            }
            if k == "metadata" {
                // After the key: its closing quote, whitespace, a colon, whitespace.
                let after_key = offset_in(text, &k).ok_or_else(unlocated)? + k.len() + 1;
                let rest = text.get(after_key..).ok_or_else(unlocated)?;
                let value = rest.trim_start().strip_prefix(':').ok_or_else(unlocated)?;
                let value = value.trim_start();
                if value.starts_with('{') {
                    meta = map.next_value::<MetadataView<'de>>()?;
                    open = Some((fields.set(k, Raw("null")), text.len() - value.len()));
                    continue;
                }
                // Not an object: no view (as [`view`] decides), the text captured as is below.
                meta = MetadataView::default();
            }
            let v = map.next_value::<&'de RawValue>()?;
            fields.set(k, Raw::from(v));
        }
        if let Some((slot, start)) = open {
            // The last field: its value ends before the object's closing brace.
            let body = text.trim_end().strip_suffix('}').ok_or_else(unlocated)?;
            let value = body.get(start..).ok_or_else(unlocated)?;
            fields.fields[slot].1 = Raw(value.trim_end());
        }
        Ok((fields, meta))
    }
}

/// Where `part` starts in `text`, if it is a borrowed piece of it (a key without escapes).
fn offset_in(text: &str, part: &str) -> Option<usize> {
    let offset = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    (offset + part.len() <= text.len()).then_some(offset)
}

/// A raw value as a string, if it is one: borrowed when it has no escapes (a raw value is
/// valid JSON, so a string without a backslash is exactly the text between its quotes).
pub fn raw_str<'a>(raw: impl Into<Raw<'a>>) -> Option<Cow<'a, str>> {
    let text = raw.into().get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// A raw value as an integer, if it is one (integral floats included).
pub fn raw_i64<'a>(raw: impl Into<Raw<'a>>) -> Option<i64> {
    match serde_json::from_str::<serde_json::Number>(raw.into().get()).ok()? {
        n if n.is_i64() => n.as_i64(),
        n => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64),
    }
}

/// A raw value as a finite float, if it is a number.
pub fn raw_f64<'a>(raw: impl Into<Raw<'a>>) -> Option<f64> {
    serde_json::from_str::<serde_json::Number>(raw.into().get())
        .ok()?
        .as_f64()
        .filter(|f| f.is_finite())
}

/// Whether a raw value is `null`.
pub fn is_null<'a>(raw: impl Into<Raw<'a>>) -> bool {
    raw.into().get() == "null"
}

/// The parts of `metadata` that span attributes derive from, read in one pass (a `node` or
/// `usage` that is not an object makes the whole view empty).
#[derive(Debug, Deserialize, Default)]
pub struct MetadataView<'a> {
    /// `metadata.node`.
    #[serde(borrow, default, deserialize_with = "object_only")]
    pub node: Option<NodeView<'a>>,
    /// `metadata.usage`.
    #[serde(borrow, default, deserialize_with = "object_only")]
    pub usage: Option<UsageView<'a>>,
    /// `metadata.otel`: the envelope of a run made from a foreign span.
    #[serde(borrow, default)]
    pub otel: Option<&'a RawValue>,
}

/// A view read only from a JSON object (or `null`, for `None`): serde's derived structs also
/// take an array, field by field in order, which would make `["llms", "openai/gpt-4o"]` a node
/// with a group and a model.
fn object_only<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Object<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object or null")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_option(Object(std::marker::PhantomData))
}

/// The parts of `metadata.node` that span attributes derive from.
#[derive(Debug, Deserialize, Default)]
pub struct NodeView<'a> {
    /// `tools`, `llms`, `agents`, ...
    #[serde(borrow, default)]
    pub group: Option<&'a RawValue>,
    /// `provider/model`.
    #[serde(borrow, default)]
    pub model: Option<&'a RawValue>,
    /// Sampling temperature.
    #[serde(borrow, default)]
    pub temperature: Option<&'a RawValue>,
    /// Output token cap.
    #[serde(borrow, default)]
    pub max_tokens: Option<&'a RawValue>,
    /// Nucleus sampling.
    #[serde(borrow, default)]
    pub top_p: Option<&'a RawValue>,
    /// Stop sequences.
    #[serde(borrow, default)]
    pub stop: Option<&'a RawValue>,
    /// The prompt (`messages`: `[{role, content}]`).
    #[serde(borrow, default)]
    pub prompt: Option<&'a RawValue>,
}

/// `metadata.usage`.
#[derive(Debug, Deserialize, Default)]
pub struct UsageView<'a> {
    /// Input tokens.
    #[serde(borrow, default)]
    pub prompt_tokens: Option<&'a RawValue>,
    /// Output tokens.
    #[serde(borrow, default)]
    pub completion_tokens: Option<&'a RawValue>,
    /// All tokens.
    #[serde(borrow, default)]
    pub total_tokens: Option<&'a RawValue>,
    /// Cached input tokens read.
    #[serde(borrow, default)]
    pub cache_read_input_tokens: Option<&'a RawValue>,
    /// Cached input tokens written.
    #[serde(borrow, default)]
    pub cache_creation_input_tokens: Option<&'a RawValue>,
    /// Output tokens spent on reasoning (part of the output tokens).
    #[serde(borrow, default)]
    pub reasoning_tokens: Option<&'a RawValue>,
    /// Cost of the input, USD.
    #[serde(borrow, default)]
    pub prompt_tokens_cost_usd: Option<&'a RawValue>,
    /// Cost of the output, USD.
    #[serde(borrow, default)]
    pub completion_tokens_cost_usd: Option<&'a RawValue>,
    /// Total cost, USD.
    #[serde(borrow, default)]
    pub total_tokens_cost_usd: Option<&'a RawValue>,
}

/// Parses a view leniently: anything that does not fit gives the empty view.
pub fn view<'a, T: Deserialize<'a> + Default>(raw: Option<impl Into<Raw<'a>>>) -> T {
    raw.map(Into::into)
        .filter(|r: &Raw<'a>| r.get().starts_with('{'))
        .and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bits_of_sdk_keys_are_distinct() {
        let keys = [
            "id",
            "name",
            "type",
            "trace_id",
            "source_id",
            "session_id",
            "start_time",
            "end_time",
            "parent_run_id",
            "status",
            "input",
            "output",
            "metadata",
            "error",
            "executions",
            "tags",
        ];
        let bits = keys.iter().fold(0u64, |acc, k| acc | key_bit(k));
        assert_eq!(bits.count_ones() as usize, keys.len());
    }

    #[test]
    fn fields_keep_order_raw_bytes_and_the_last_duplicate() {
        let run = br#"{"id":"a","x\u0041":1.50,"big":123456789012345678901234567890,"id":"b"}"#;
        let f = RunFields::parse(run).unwrap();
        let keys: Vec<&str> = f.fields.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["id", "xA", "big"]);
        assert_eq!(f.get("id").unwrap().get(), r#""b""#);
        assert_eq!(f.get("xA").unwrap().get(), "1.50");
        assert_eq!(
            f.get("big").unwrap().get(),
            "123456789012345678901234567890"
        );
        assert!(RunFields::parse(b"[1]").is_err());
    }

    #[test]
    fn views_are_lenient() {
        let meta: MetadataView<'_> = serde_json::from_str(
            r#"{"node":{"group":"llms","model":7,"x":[1]},"usage":{"prompt_tokens":"?"}}"#,
        )
        .unwrap();
        let node = meta.node.unwrap();
        assert_eq!(raw_str(node.group.unwrap()).as_deref(), Some("llms"));
        assert_eq!(raw_str(node.model.unwrap()), None);
        assert_eq!(raw_i64(meta.usage.unwrap().prompt_tokens.unwrap()), None);
        let odd: MetadataView<'_> = view(Some(
            serde_json::from_str::<&RawValue>(r#"{"node":"not an object"}"#).unwrap(),
        ));
        assert!(odd.node.is_none());
        for positional in [
            r#"{"node":["llms","openai/gpt-4o"]}"#,
            r#"{"usage":[3,4,7],"node":{"group":"llms"}}"#,
        ] {
            let odd: MetadataView<'_> =
                view(Some(serde_json::from_str::<&RawValue>(positional).unwrap()));
            assert!(odd.node.is_none() && odd.usage.is_none(), "{positional}");
        }
        let null: MetadataView<'_> = view(Some(
            serde_json::from_str::<&RawValue>(r#"{"node":null,"usage":{"prompt_tokens":3}}"#)
                .unwrap(),
        ));
        assert!(null.node.is_none() && null.usage.is_some());
        let raw = |s: &'static str| serde_json::from_str::<&RawValue>(s).unwrap();
        assert_eq!(raw_i64(raw("12")), Some(12));
        assert_eq!(raw_i64(raw("12.0")), Some(12));
        assert_eq!(raw_i64(raw("\"12\"")), None);
        assert_eq!(raw_f64(raw("1e-6")), Some(1e-6));
        assert_eq!(raw_str(raw(r#""plain""#)), Some(Cow::Borrowed("plain")));
        assert_eq!(raw_str(raw(r#""""#)), Some(Cow::Borrowed("")));
        assert_eq!(raw_str(raw(r#""a\"b\u00e9""#)).as_deref(), Some("a\"bé"));
        assert_eq!(raw_str(raw("12")), None);
    }

    /// The one-pass read gives exactly the two-step read: the same fields (keys, order, exact
    /// value text) and the same metadata view.
    fn assert_one_pass_is_two_step(run: &str) {
        let (fields, meta) = RunFields::parse_with_metadata(run.as_bytes()).unwrap();
        let two = RunFields::parse(run.as_bytes()).unwrap();
        assert_eq!(fields.fields, two.fields, "{run}");
        let two_meta: MetadataView<'_> = view(two.get("metadata"));
        assert_eq!(format!("{meta:?}"), format!("{two_meta:?}"), "{run}");
    }

    #[test]
    fn metadata_is_read_once_with_the_same_result() {
        let node = r#"{"node":{"group":"llms","model":"openai/gpt-4o","x":"}\",{"},"usage":{"prompt_tokens":3}}"#;
        for run in [
            format!(r#"{{"id":"a","metadata":{node},"tags":[]}}"#),
            format!(r#"{{"id":"a","metadata":{node}}}"#),
            format!("{{ \"id\" : \"a\" ,\n \"metadata\"\t:\r\n {node} \n , \"z\" : 1 }}  \n"),
            format!(r#"{{"metadata":{node},"x\u0041":1}}"#),
            format!(r#"{{"x\u0041":1,"metadata":{node}}}"#),
            format!(r#"{{"meta\u0064ata":{node},"y":1}}"#),
            format!(r#"{{"metadata":{{"a":1}},"id":"a","metadata":{node},"b":2}}"#),
            format!(r#"{{"metadata":{node},"id":"a","metadata":null}}"#),
            r#"{"metadata":null,"id":"a"}"#.to_owned(),
            r#"{"metadata":"text","id":"a"}"#.to_owned(),
            r#"{"metadata":[1,{"node":2}]}"#.to_owned(),
            r#"{"metadata":[{",n1ode":2}]}"#.to_owned(),
            r#"{"metadata":[{"group":"llms"}],"id":"a"}"#.to_owned(),
            r#"{"metadata":{"node":"not an object","usage":{}},"id":"a"}"#.to_owned(),
            r#"{"metadata":{"node":{"group":1,"group":2}},"id":"a"}"#.to_owned(),
            r#"{"id":"a"}"#.to_owned(),
            r#"{}"#.to_owned(),
        ] {
            assert_one_pass_is_two_step(&run);
        }
        for fixture in [
            include_str!("../../tests/fixtures/workflow-success.json"),
            include_str!("../../tests/fixtures/workflow-node-failure.json"),
            include_str!("../../tests/fixtures/reused-handler-flush-4.json"),
        ] {
            let batch = crate::model::parse_batch(fixture.as_bytes()).unwrap();
            for run in &batch.runs {
                assert_one_pass_is_two_step(run.json);
                assert!(
                    RunFields::one_pass(run.json.as_bytes()).is_some(),
                    "read once"
                );
            }
        }
        assert!(RunFields::parse_with_metadata(br#"{"metadata":{}"#).is_err());
        assert!(RunFields::parse_with_metadata(b"[1]").is_err());
    }

    proptest::proptest! {
        #[test]
        fn one_pass_equals_two_steps_on_generated_runs(
            before in proptest::collection::vec(("[a-z\\\\\"]{0,4}", "[1-9][0-9]{0,2}"), 0..3),
            after in proptest::collection::vec(("[a-z\\\\\"]{0,4}", "[1-9][0-9]{0,2}"), 0..3),
            ws in "[ \t\r\n]{0,2}",
            group in "[a-z\\\\\"{}, ]{0,6}",
        ) {
            let key = |k: &str| serde_json::to_string(k).unwrap();
            let mut run = String::from("{");
            for (k, v) in &before {
                run += &format!("{ws}{}{ws}:{ws}{v}{ws},", key(k));
            }
            run += &format!(
                "{ws}\"metadata\"{ws}:{ws}{{\"node\":{{\"group\":{}}},\"q\":[{ws}]}}{ws}",
                key(&group)
            );
            for (k, v) in &after {
                run += &format!(",{ws}{}{ws}:{ws}{v}", key(k));
            }
            run += "}";
            assert_one_pass_is_two_step(&run);
        }
    }
}
