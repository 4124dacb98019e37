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
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// `"key":"n"`: a 64-bit integer as a string, as OTLP/JSON spells them.
    pub fn u64_string(&mut self, key: &str, n: u64) {
        let out = self.key(key);
        out.push(b'"');
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.push(b'"');
    }

    /// `"key":"<lowercase hex>"`.
    pub fn hex(&mut self, key: &str, bytes: &[u8]) {
        write_hex(self.key(key), bytes);
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

/// Appends a JSON string literal. Most strings need no escaping: those are found eight bytes
/// at a time and copied whole; the rest go through `serde_json`'s escaper.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether a JSON string must escape any byte of `bytes` (`"`, `\\` or a control character).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // A byte below 0x20: (b - 0x20) borrows into the high bit for b < 0x20 (and b >= 0x80
        // is excluded by `!w`).
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
        let quote = has_zero(w ^ (ONES * u64::from(b'"')));
        let backslash = has_zero(w ^ (ONES * u64::from(b'\\')));
        if control | quote | backslash != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Appends `"<lowercase hex>"`.
pub fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    out.resize(start + bytes.len() * 2, 0);
    // The destination is exactly twice the input: encoding cannot fail.
    let _ = const_hex::encode_to_slice(bytes, &mut out[start..]);
    out.push(b'"');
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
        Some(Value::IntValue(i)) => {
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes())
        }
        // An index into a profiles string table: meaningless outside profiles; kept as a number.
        Some(Value::StringValueStrindex(i)) => {
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes())
        }
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

/// Appends attributes in OTLP/JSON form: `[{"key":k,"value":{"stringValue":...}},...]`.
pub fn write_otlp_attributes<'a>(out: &mut Vec<u8>, attrs: impl Iterator<Item = &'a KeyValue>) {
    out.push(b'[');
    for (i, kv) in attrs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut entry = ObjectWriter::open(out);
        entry.str("key", &kv.key);
        write_otlp_value(entry.key("value"), any(kv.value.as_ref()));
        entry.close();
    }
    out.push(b']');
}

/// Appends one `AnyValue` in OTLP/JSON form (int64 as a string, bytes as base64, an empty
/// value as `{}`).
pub fn write_otlp_value(out: &mut Vec<u8>, value: Option<&Value>) {
    let mut obj = ObjectWriter::open(out);
    match value {
        None => {}
        Some(Value::StringValue(s)) => obj.str("stringValue", s),
        Some(Value::BoolValue(b)) => obj.raw("boolValue", if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => {
            let out = obj.key("intValue");
            out.push(b'"');
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes());
            out.push(b'"');
        }
        Some(Value::DoubleValue(d)) => match serde_json::Number::from_f64(*d) {
            Some(n) => obj.raw("doubleValue", &n.to_string()),
            // OTLP/JSON spells non-finite doubles as strings.
            None if d.is_nan() => obj.str("doubleValue", "NaN"),
            None if *d > 0.0 => obj.str("doubleValue", "Infinity"),
            None => obj.str("doubleValue", "-Infinity"),
        },
        Some(Value::BytesValue(b)) => obj.str("bytesValue", &base64_encode(b)),
        Some(Value::ArrayValue(a)) => {
            let mut arr = ObjectWriter::open(obj.key("arrayValue"));
            let out = arr.key("values");
            out.push(b'[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_otlp_value(out, v.value.as_ref());
            }
            out.push(b']');
            arr.close();
        }
        Some(Value::KvlistValue(kv)) => {
            let mut list = ObjectWriter::open(obj.key("kvlistValue"));
            write_otlp_attributes(list.key("values"), kv.values.iter());
            list.close();
        }
        Some(Value::StringValueStrindex(i)) => obj.int("stringValueStrindex", i64::from(*i)),
    }
    obj.close();
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

    proptest::proptest! {
        #[test]
        fn write_str_matches_serde_json(s in ".{0,40}", tail in proptest::sample::select(vec!["", "\"", "\\", "\n", "\u{1}", "\u{7f}", "é\u{2028}"])) {
            let s = format!("{s}{tail}");
            let mut ours = Vec::new();
            write_str(&mut ours, &s);
            proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&s).unwrap());
        }
    }

    #[test]
    fn otlp_values_round_trip_through_the_proto_json_decoder() {
        let attrs = vec![
            KeyValue {
                key: "s".into(),
                value: Some(s("a\"b")),
                ..Default::default()
            },
            KeyValue {
                key: "i".into(),
                value: Some(AnyValue {
                    value: Some(Value::IntValue(-9_007_199_254_740_993)),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "d".into(),
                value: Some(AnyValue {
                    value: Some(Value::DoubleValue(0.25)),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "b".into(),
                value: Some(AnyValue {
                    value: Some(Value::BytesValue(vec![1, 2, 255])),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "a".into(),
                value: Some(AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue {
                        values: vec![
                            s("x"),
                            AnyValue {
                                value: Some(Value::BoolValue(false)),
                            },
                        ],
                    })),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "kv".into(),
                value: Some(AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList {
                        values: vec![KeyValue {
                            key: "k".into(),
                            value: Some(s("v")),
                            ..Default::default()
                        }],
                    })),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "empty".into(),
                value: None,
                ..Default::default()
            },
        ];
        let mut out = Vec::new();
        write_otlp_attributes(&mut out, attrs.iter());
        let back: Vec<KeyValue> = serde_json::from_slice(&out).unwrap();
        let mut expected = attrs.clone();
        // An absent value and an empty AnyValue are the same thing in OTLP/JSON.
        expected[6].value = Some(AnyValue { value: None });
        assert_eq!(back, expected);
    }

    #[test]
    fn json_text_accepts_only_one_value() {
        assert_eq!(json_text(" [1, 2] "), Some("[1, 2]"));
        assert_eq!(json_text("[1] 2"), None);
        assert_eq!(json_text("plain words"), None);
    }
}
