//! A small protobuf writer for the few OTLP messages the run → span direction emits: fields
//! written straight into a byte buffer (varints and keys through `prost::encoding`), nested
//! messages opened with a guessed length width and closed by writing their exact length, and
//! [`ProtoAttrs`], the [`AttrSink`] that writes `KeyValue`s as they are derived.
//!
//! Guarantees: the output is canonical protobuf (every length is the minimal varint: a nested
//! message whose length needs another width than the one reserved is moved into place when it
//! is closed), and decodes to the same message the `opentelemetry-proto` structs would give for
//! the same calls. Writing never fails and never panics.

use bytes::BufMut;
use prost::encoding::{WireType, encoded_len_varint};

use super::attr_sink::{Attr, AttrSink};

/// A field key; one byte for the field numbers (< 16) used here.
#[inline]
fn encode_key(field: u32, wire_type: WireType, out: &mut Vec<u8>) {
    if field < 16 {
        out.push((field << 3) as u8 | wire_type as u8);
    } else {
        prost::encoding::encode_key(field, wire_type, out);
    }
}

/// A varint; one byte below 128, the common case for lengths here.
#[inline]
fn encode_varint(value: u64, out: &mut impl BufMut) {
    if value < 0x80 {
        out.put_u8(value as u8);
    } else {
        prost::encoding::encode_varint(value, out);
    }
}

/// A nested message being written: where its content starts and how many bytes were reserved
/// for its length.
#[must_use = "a nested message must be closed"]
pub struct Open {
    start: usize,
    reserved: usize,
}

/// Starts the length-delimited field `field`, reserving `reserved` bytes (1 to 5) for its length
/// (a good guess saves moving the content when it is closed).
pub fn open(out: &mut Vec<u8>, field: u32, reserved: usize) -> Open {
    encode_key(field, WireType::LengthDelimited, out);
    out.resize(out.len() + reserved, 0);
    Open {
        start: out.len(),
        reserved,
    }
}

/// Ends a nested message: writes its length, moving the content if the length's width differs
/// from the reservation.
pub fn close(out: &mut Vec<u8>, open: Open) {
    let Open { start, reserved } = open;
    let len = out.len() - start;
    let width = encoded_len_varint(len as u64);
    let end = out.len();
    if width > reserved {
        out.resize(end + width - reserved, 0);
        out.copy_within(start..end, start + width - reserved);
    } else if width < reserved {
        out.copy_within(start..end, start - (reserved - width));
        out.truncate(end - (reserved - width));
    }
    let at = start - reserved;
    let mut slot = &mut out[at..at + width];
    encode_varint(len as u64, &mut slot);
}

/// Bytes of a length-delimited field of `len` content bytes, key included (field < 16).
fn len_field_size(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// A `string` / `bytes` field (written even when empty).
pub fn bytes_field(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// A varint field (`int32`, `int64`, `uint32`, enums, `bool`).
pub fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    encode_key(field, WireType::Varint, out);
    encode_varint(value, out);
}

/// A `fixed64` field.
pub fn fixed64_field(out: &mut Vec<u8>, field: u32, value: u64) {
    encode_key(field, WireType::SixtyFourBit, out);
    out.put_u64_le(value);
}

/// Writes `KeyValue`s as the repeated field `field` of the message being written (9 for
/// `Span.attributes`, 3 for `Event.attributes`).
pub struct ProtoAttrs<'o> {
    /// The buffer, positioned inside the enclosing message.
    pub out: &'o mut Vec<u8>,
    /// The field number of the attributes in the enclosing message.
    pub field: u32,
}

/// `KeyValue.key`, `KeyValue.value`; `AnyValue` oneof members; `ArrayValue.values`.
const KEY: u32 = 1;
const VALUE: u32 = 2;
const STRING_VALUE: u32 = 1;
const BOOL_VALUE: u32 = 2;
const INT_VALUE: u32 = 3;
const DOUBLE_VALUE: u32 = 4;
const ARRAY_VALUE: u32 = 5;
const ARRAY_VALUES: u32 = 1;

impl AttrSink for ProtoAttrs<'_> {
    fn push(&mut self, key: &str, value: Attr<'_>) {
        // Scalar sizes are known up front: no length is ever moved.
        let any_len = match value {
            Attr::Str(s) => len_field_size(s.len()),
            Attr::Bool(_) => 2,
            Attr::Int(i) => 1 + encoded_len_varint(i as u64),
            Attr::Double(_) => 9,
        };
        let kv_len = len_field_size(key.len()) + len_field_size(any_len);
        let out = &mut *self.out;
        out.reserve(len_field_size(kv_len));
        encode_key(self.field, WireType::LengthDelimited, out);
        encode_varint(kv_len as u64, out);
        bytes_field(out, KEY, key.as_bytes());
        encode_key(VALUE, WireType::LengthDelimited, out);
        encode_varint(any_len as u64, out);
        match value {
            Attr::Str(s) => bytes_field(out, STRING_VALUE, s.as_bytes()),
            Attr::Bool(b) => varint_field(out, BOOL_VALUE, u64::from(b)),
            Attr::Int(i) => varint_field(out, INT_VALUE, i as u64),
            Attr::Double(d) => fixed64_field(out, DOUBLE_VALUE, d.to_bits()),
        }
    }

    fn push_strs<'s>(&mut self, key: &str, items: impl IntoIterator<Item = &'s str>) {
        let out = &mut *self.out;
        let kv = open(out, self.field, 1);
        bytes_field(out, KEY, key.as_bytes());
        let any = open(out, VALUE, 1);
        let array = open(out, ARRAY_VALUE, 1);
        for item in items {
            encode_key(ARRAY_VALUES, WireType::LengthDelimited, out);
            encode_varint(len_field_size(item.len()) as u64, out);
            bytes_field(out, STRING_VALUE, item.as_bytes());
        }
        close(out, array);
        close(out, any);
        close(out, kv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    /// One sink call.
    enum Call<'a> {
        One(&'a str, Attr<'a>),
        Strs(&'a str, Vec<&'a str>),
    }

    fn apply(sink: &mut impl AttrSink, calls: &[Call<'_>]) {
        for call in calls {
            match call {
                Call::One(k, v) => sink.push(k, *v),
                Call::Strs(k, items) => sink.push_strs(k, items.iter().copied()),
            }
        }
    }

    /// The same calls through both sinks give the same attributes.
    fn same(calls: &[Call<'_>]) {
        let mut reference: Vec<KeyValue> = Vec::new();
        apply(&mut reference, calls);
        let mut bytes = Vec::new();
        apply(
            &mut ProtoAttrs {
                out: &mut bytes,
                field: 9,
            },
            calls,
        );
        assert_eq!(Span::decode(&bytes[..]).unwrap().attributes, reference);
    }

    #[test]
    fn attributes_decode_like_the_structs() {
        let long = "x".repeat(300);
        let huge = "y".repeat(20_000);
        same(&[
            Call::One("s", Attr::Str("")),
            Call::One("long", Attr::Str(&long)),
            Call::One("t", Attr::Bool(true)),
            Call::One("f", Attr::Bool(false)),
            Call::Strs("a", vec!["", "b", &huge]),
            Call::One("i", Attr::Int(-1)),
            Call::One("z", Attr::Int(0)),
            Call::Strs("empty", vec![]),
            Call::One("d", Attr::Double(-0.0)),
            Call::One("e", Attr::Double(1.065e-05)),
        ]);
    }

    #[test]
    fn close_moves_content_both_ways() {
        for (reserved, len) in [(1, 5), (1, 200), (3, 5), (2, 70_000), (5, 0)] {
            let mut out = vec![7u8];
            let o = open(&mut out, 5, reserved);
            out.extend(std::iter::repeat_n(0xAB, len));
            close(&mut out, o);
            let mut expected = vec![7u8];
            bytes_field(&mut expected, 5, &vec![0xAB; len]);
            assert_eq!(out, expected, "reserved {reserved}, len {len}");
        }
    }
}
