//! OTLP attribute values (`AnyValue`) read as plain JSON, numbers or strings, and the small JSON
//! writer the converters emit runs with.
//!
//! Guarantees: every `AnyValue` has a JSON rendering (bytes as base64, key-value lists as
//! objects, an empty value as `null`); JSON text embedded verbatim is validated first, so the
//! output is always well-formed JSON.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use serde_json::value::RawValue;

/// A growing JSON object: `{"k":v,...}` written straight into a byte buffer.
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    /// Opens an object in `out`.
    pub fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// Writes `"key":` (with the separating comma) and returns the buffer for the value.
    pub fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    /// `"key":"value"`.
    pub fn str(&mut self, key: &str, value: &str) {
        let out = self.key(key);
        write_str(out, value);
    }

    /// `"key":<raw JSON>`; the caller guarantees `json` is valid JSON.
    pub fn raw(&mut self, key: &str, json: &str) {
        self.key(key).extend_from_slice(json.as_bytes());
    }

    /// `"key":null`.
    pub fn null(&mut self, key: &str) {
        self.raw(key, "null");
    }

    /// `"key":n`.
    pub fn int(&mut self, key: &str, n: i64) {
        let out = self.key(key);
        out.extend_from_slice(n.to_string().as_bytes());
    }

    /// `"key":x` for a finite float (a non-finite one is written as `null`).
    pub fn float(&mut self, key: &str, x: f64) {
        let out = self.key(key);
        write_f64(out, x);
    }

    /// Closes the object.
    pub fn close(self) {
        self.out.push(b'}');
    }
}

/// Appends a JSON string literal.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_f64(out: &mut Vec<u8>, x: f64) {
    match serde_json::Number::from_f64(x) {
        Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends the plain JSON rendering of an attribute value.
pub fn write_plain(out: &mut Vec<u8>, value: Option<&Value>) {
    match value {
        None => out.extend_from_slice(b"null"),
        Some(Value::StringValue(s)) => write_str(out, s),
        Some(Value::BoolValue(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Some(Value::IntValue(i)) => out.extend_from_slice(i.to_string().as_bytes()),
        // An index into a profiles string table: meaningless outside profiles; kept as a number.
        Some(Value::StringValueStrindex(i)) => out.extend_from_slice(i.to_string().as_bytes()),
        Some(Value::DoubleValue(d)) => write_f64(out, *d),
        Some(Value::BytesValue(b)) => write_str(out, &base64_encode(b)),
        Some(Value::ArrayValue(a)) => {
            out.push(b'[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_plain(out, v.value.as_ref());
            }
            out.push(b']');
        }
        Some(Value::KvlistValue(kv)) => {
            let mut obj = ObjectWriter::open(out);
            for entry in &kv.values {
                let out = obj.key(&entry.key);
                write_plain(out, any(entry.value.as_ref()));
            }
            obj.close();
        }
    }
}

/// The inner value of an optional `AnyValue`.
pub fn any(v: Option<&AnyValue>) -> Option<&Value> {
    v.and_then(|v| v.value.as_ref())
}

/// The value of an attribute as a string slice, if it is a string.
pub fn as_str(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// The value of an attribute as an integer (ints, integral doubles, numeric strings).
pub fn as_i64(v: Option<&Value>) -> Option<i64> {
    match v {
        Some(Value::IntValue(i)) => Some(*i),
        Some(Value::DoubleValue(d)) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(*d as i64),
        Some(Value::StringValue(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The value of an attribute as a float (doubles, ints, numeric strings).
pub fn as_f64(v: Option<&Value>) -> Option<f64> {
    match v {
        Some(Value::DoubleValue(d)) if d.is_finite() => Some(*d),
        Some(Value::IntValue(i)) => Some(*i as f64),
        Some(Value::StringValue(s)) => s.trim().parse().ok().filter(|d: &f64| d.is_finite()),
        _ => None,
    }
}

/// The value of an attribute as a boolean (bools and `"true"`/`"false"`).
pub fn as_bool(v: Option<&Value>) -> Option<bool> {
    match v {
        Some(Value::BoolValue(b)) => Some(*b),
        Some(Value::StringValue(s)) if s == "true" => Some(true),
        Some(Value::StringValue(s)) if s == "false" => Some(false),
        _ => None,
    }
}

/// How deep embedded JSON may nest, so that a run made from it (which adds a few levels of its
/// own) stays within the collector's and the sidecar's own limit.
pub const MAX_EMBED_DEPTH: usize = crate::model::batch::MAX_DEPTH - 16;

/// `s` if it is one well-formed JSON value (surrounding whitespace trimmed) nested at most
/// [`MAX_EMBED_DEPTH`] deep, else `None`.
pub fn json_text(s: &str) -> Option<&str> {
    if !crate::model::batch::nesting_within(s.as_bytes(), MAX_EMBED_DEPTH) {
        return None;
    }
    serde_json::from_str::<&RawValue>(s).ok().map(RawValue::get)
}

/// Looks an attribute up by key (linear: for the few lookups outside the one-pass table).
pub fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| any(kv.value.as_ref()))
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn s(v: &str) -> AnyValue {
        AnyValue {
            value: Some(Value::StringValue(v.into())),
        }
    }

    fn plain(v: &Value) -> String {
        let mut out = Vec::new();
        write_plain(&mut out, Some(v));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_value_kind_renders_as_json() {
        assert_eq!(plain(&Value::StringValue("a\"b".into())), r#""a\"b""#);
        assert_eq!(plain(&Value::IntValue(-3)), "-3");
        assert_eq!(plain(&Value::DoubleValue(1.5)), "1.5");
        assert_eq!(plain(&Value::DoubleValue(f64::NAN)), "null");
        assert_eq!(plain(&Value::BoolValue(true)), "true");
        assert_eq!(plain(&Value::BytesValue(b"hi!?".to_vec())), r#""aGkhPw==""#);
        let arr = Value::ArrayValue(ArrayValue {
            values: vec![s("x"), AnyValue { value: None }],
        });
        assert_eq!(plain(&arr), r#"["x",null]"#);
        let kv = Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "k".into(),
                value: Some(s("v")),
                ..Default::default()
            }],
        });
        assert_eq!(plain(&kv), r#"{"k":"v"}"#);
    }

    #[test]
    fn numbers_are_read_leniently() {
        assert_eq!(as_i64(Some(&Value::StringValue(" 12 ".into()))), Some(12));
        assert_eq!(as_i64(Some(&Value::DoubleValue(3.0))), Some(3));
        assert_eq!(as_i64(Some(&Value::DoubleValue(3.5))), None);
        assert_eq!(as_f64(Some(&Value::IntValue(2))), Some(2.0));
        assert_eq!(as_f64(Some(&Value::StringValue("inf".into()))), None);
    }

    #[test]
    fn json_text_accepts_only_one_value() {
        assert_eq!(json_text(" [1, 2] "), Some("[1, 2]"));
        assert_eq!(json_text("[1] 2"), None);
        assert_eq!(json_text("plain words"), None);
    }
}
