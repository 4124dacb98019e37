//! Where the run → span conversion puts the attributes it derives: one [`AttrSink`] trait, so
//! the same derivation code either builds `opentelemetry-proto` `KeyValue`s (the reference
//! struct path, [`Vec<KeyValue>`]) or writes protobuf bytes straight away
//! ([`super::proto_writer::ProtoAttrs`]).
//!
//! Guarantees: a sink receives the attributes in the order they are derived, keys and values
//! borrowed; both sinks turn the same calls into the same `KeyValue` list (the protobuf one as
//! its encoding).

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};

/// One scalar attribute value, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum Attr<'a> {
    /// `stringValue`.
    Str(&'a str),
    /// `boolValue`.
    Bool(bool),
    /// `intValue`.
    Int(i64),
    /// `doubleValue`.
    Double(f64),
}

/// Receives a span's attributes in order.
pub trait AttrSink {
    /// Appends `key = value`.
    fn push(&mut self, key: &str, value: Attr<'_>);
    /// Appends `key = [items...]` (an array of strings).
    fn push_strs<'s>(&mut self, key: &str, items: impl IntoIterator<Item = &'s str>);
    /// `key = value` for a string.
    fn str(&mut self, key: &str, value: &str) {
        self.push(key, Attr::Str(value));
    }
}

impl From<Attr<'_>> for Value {
    fn from(value: Attr<'_>) -> Self {
        match value {
            Attr::Str(s) => Value::StringValue(s.to_owned()),
            Attr::Bool(b) => Value::BoolValue(b),
            Attr::Int(i) => Value::IntValue(i),
            Attr::Double(d) => Value::DoubleValue(d),
        }
    }
}

/// A `KeyValue` with a value.
pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// The struct path: every attribute becomes an owned `KeyValue`.
impl AttrSink for Vec<KeyValue> {
    fn push(&mut self, key: &str, value: Attr<'_>) {
        Vec::push(self, kv(key, value.into()));
    }

    fn push_strs<'s>(&mut self, key: &str, items: impl IntoIterator<Item = &'s str>) {
        let values = items
            .into_iter()
            .map(|i| AnyValue {
                value: Some(Value::StringValue(i.to_owned())),
            })
            .collect();
        Vec::push(self, kv(key, Value::ArrayValue(ArrayValue { values })));
    }
}
