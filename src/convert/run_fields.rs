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

/// The top-level fields of a run, in document order, each as raw JSON.
pub struct RunFields<'a> {
    /// `(key, value)` pairs; a repeated key appears once, at its first position, with its last
    /// value.
    pub fields: Vec<(Cow<'a, str>, &'a RawValue)>,
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
                let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(24);
                while let Some((Key(k), v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    match fields.iter_mut().find(|(existing, _)| *existing == k) {
                        Some(slot) => slot.1 = v,
                        None => fields.push((k, v)),
                    }
                }
                Ok(RunFields { fields })
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

    /// The raw value of a field.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// A raw value as a string, if it is one: borrowed when it has no escapes (a raw value is
/// valid JSON, so a string without a backslash is exactly the text between its quotes).
pub fn raw_str<'a>(raw: &'a RawValue) -> Option<Cow<'a, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// A raw value as an integer, if it is one (integral floats included).
pub fn raw_i64(raw: &RawValue) -> Option<i64> {
    match serde_json::from_str::<serde_json::Number>(raw.get()).ok()? {
        n if n.is_i64() => n.as_i64(),
        n => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64),
    }
}

/// A raw value as a finite float, if it is a number.
pub fn raw_f64(raw: &RawValue) -> Option<f64> {
    serde_json::from_str::<serde_json::Number>(raw.get())
        .ok()?
        .as_f64()
        .filter(|f| f.is_finite())
}

/// Whether a raw value is `null`.
pub fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// The parts of `metadata` that span attributes derive from, read in one pass (a `node` or
/// `usage` that is not an object makes the whole view empty).
#[derive(Deserialize, Default)]
pub struct MetadataView<'a> {
    /// `metadata.node`.
    #[serde(borrow, default)]
    pub node: Option<NodeView<'a>>,
    /// `metadata.usage`.
    #[serde(borrow, default)]
    pub usage: Option<UsageView<'a>>,
    /// `metadata.otel`: the envelope of a run made from a foreign span.
    #[serde(borrow, default)]
    pub otel: Option<&'a RawValue>,
}

/// The parts of `metadata.node` that span attributes derive from.
#[derive(Deserialize, Default)]
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
#[derive(Deserialize, Default)]
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
pub fn view<'a, T: Deserialize<'a> + Default>(raw: Option<&'a RawValue>) -> T {
    raw.filter(|r| r.get().starts_with('{'))
        .and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let raw = |s: &str| serde_json::from_str::<&RawValue>(s).unwrap().to_owned();
        assert_eq!(raw_i64(&raw("12")), Some(12));
        assert_eq!(raw_i64(&raw("12.0")), Some(12));
        assert_eq!(raw_i64(&raw("\"12\"")), None);
        assert_eq!(raw_f64(&raw("1e-6")), Some(1e-6));
        assert_eq!(raw_str(&raw(r#""plain""#)), Some(Cow::Borrowed("plain")));
        assert_eq!(raw_str(&raw(r#""""#)), Some(Cow::Borrowed("")));
        assert_eq!(raw_str(&raw(r#""a\"b\u00e9""#)).as_deref(), Some("a\"bé"));
        assert_eq!(raw_str(&raw("12")), None);
    }
}
