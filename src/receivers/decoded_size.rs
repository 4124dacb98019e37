//! What an OTLP request body will cost in memory once decoded, known before it is decoded.
//!
//! A protobuf message can be tiny on the wire and large as structs: an empty span is two bytes
//! (`12 00`) and a few hundred as a `Span`, so a 32 MiB body of them would become gigabytes.
//! [`protobuf_estimate`] walks the wire format of an `ExportTraceServiceRequest` without
//! allocating (one pass, an explicit stack) and adds up, for every message prost would build,
//! twice its struct size (a `Vec` grows by doubling) plus an allocation's overhead, and for
//! every string or bytes field its length plus the same overhead. [`json_estimate`] bounds an
//! OTLP/JSON body the same way from its count of `{` (each object becomes at most one struct).
//!
//! Guarantees: the estimate is an upper bound of the heap the decoded request holds (it counts
//! every allocation prost makes for the trace schema, each at its largest); it never reads out
//! of bounds and never recurses; a body that is not well-formed protobuf, or nests deeper than
//! prost's own limit of 100, is an error (prost would refuse it too).

use std::mem::size_of;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

/// What one heap allocation costs beyond its bytes (allocator header and rounding).
const ALLOCATION_OVERHEAD: u64 = 32;
/// Deepest nesting prost decodes (its `RECURSION_LIMIT`).
const MAX_DEPTH: usize = 100;

/// The messages of the trace schema that prost builds structs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

/// What a length-delimited field holds.
enum Field {
    /// A sub-message (its struct is allocated).
    Message(Message),
    /// A string or bytes value (its bytes are allocated).
    Bytes,
    /// Not part of the schema: prost skips it without allocating.
    Unknown,
}

impl Message {
    /// Bytes of the struct prost allocates for one such message.
    fn struct_size(self) -> u64 {
        (match self {
            Message::Request => size_of::<ExportTraceServiceRequest>(),
            Message::ResourceSpans => size_of::<ResourceSpans>(),
            Message::Resource => size_of::<Resource>(),
            Message::EntityRef => size_of::<EntityRef>(),
            Message::ScopeSpans => size_of::<ScopeSpans>(),
            Message::Scope => size_of::<InstrumentationScope>(),
            Message::Span => size_of::<Span>(),
            Message::Event => size_of::<span::Event>(),
            Message::Link => size_of::<span::Link>(),
            Message::Status => size_of::<Status>(),
            Message::KeyValue => size_of::<KeyValue>(),
            Message::AnyValue => size_of::<AnyValue>(),
            Message::ArrayValue => size_of::<ArrayValue>(),
            Message::KeyValueList => size_of::<KeyValueList>(),
        }) as u64
    }

    /// The schema: what field `number` of this message is, when it is length-delimited.
    fn field(self, number: u64) -> Field {
        use Message as M;
        let message = match (self, number) {
            (M::Request, 1) => M::ResourceSpans,
            (M::ResourceSpans, 1) => M::Resource,
            (M::ResourceSpans, 2) => M::ScopeSpans,
            (M::Resource, 1) | (M::Scope, 3) | (M::Span, 9) | (M::Event, 3) | (M::Link, 4) => {
                M::KeyValue
            }
            (M::Resource, 3) => M::EntityRef,
            (M::ScopeSpans, 1) => M::Scope,
            (M::ScopeSpans, 2) => M::Span,
            (M::Span, 11) => M::Event,
            (M::Span, 13) => M::Link,
            (M::Span, 15) => M::Status,
            (M::KeyValue, 2) | (M::ArrayValue, 1) => M::AnyValue,
            (M::AnyValue, 5) => M::ArrayValue,
            (M::AnyValue, 6) => M::KeyValueList,
            (M::KeyValueList, 1) => M::KeyValue,
            (M::ResourceSpans | M::ScopeSpans, 3)
            | (M::EntityRef, 1..=4)
            | (M::Scope, 1 | 2)
            | (M::Span, 1..=5)
            | (M::Event, 2)
            | (M::Link, 1..=3)
            | (M::Status, 2)
            | (M::KeyValue, 1)
            | (M::AnyValue, 1 | 7) => return Field::Bytes,
            _ => return Field::Unknown,
        };
        Field::Message(message)
    }
}

/// Why a body could not be estimated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EstimateError {
    /// Not well-formed protobuf.
    #[error("the body is not an OTLP ExportTraceServiceRequest in protobuf: {0}")]
    Malformed(&'static str),
    /// Nested deeper than prost decodes.
    #[error("the body nests messages deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Reads a varint at `*pos`.
fn varint(body: &[u8], pos: &mut usize) -> Result<u64, EstimateError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *body
            .get(*pos)
            .ok_or(EstimateError::Malformed("a varint runs past the end"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(EstimateError::Malformed("a varint is longer than 10 bytes"))
}

/// Advances `*pos` by `n`, within `end`.
fn skip(pos: &mut usize, n: u64, end: usize) -> Result<(), EstimateError> {
    let next = usize::try_from(n)
        .ok()
        .and_then(|n| pos.checked_add(n))
        .filter(|&next| next <= end)
        .ok_or(EstimateError::Malformed(
            "a field runs past the end of its message",
        ))?;
    *pos = next;
    Ok(())
}

/// Skips the rest of the group opened by field `number` (after its start tag), nested groups
/// included, up to the end group tag of the same number — as prost skips an unknown group.
fn skip_group(
    body: &[u8],
    pos: &mut usize,
    end: usize,
    number: u64,
    depth: usize,
) -> Result<(), EstimateError> {
    // Open groups' field numbers, innermost last.
    let mut open = vec![number];
    while let Some(&innermost) = open.last() {
        if depth + open.len() > MAX_DEPTH {
            return Err(EstimateError::TooDeep);
        }
        if *pos >= end {
            return Err(EstimateError::Malformed("a group runs past the end"));
        }
        let key = varint(body, pos)?;
        let field = key >> 3;
        match key & 7 {
            0 => {
                varint(body, pos)?;
            }
            1 => skip(pos, 8, end)?,
            5 => skip(pos, 4, end)?,
            2 => {
                let len = varint(body, pos)?;
                skip(pos, len, end)?;
            }
            3 => open.push(field),
            4 if field == innermost => {
                open.pop();
            }
            4 => return Err(EstimateError::Malformed("a group ends with another's tag")),
            _ => {
                return Err(EstimateError::Malformed(
                    "a field has an unsupported wire type",
                ));
            }
        }
    }
    Ok(())
}

/// What decoding a request will build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Upper bound of the heap bytes the decoded request holds.
    pub heap: u64,
    /// Spans in the request (an upper bound for OTLP/JSON: its objects).
    pub spans: u64,
}

/// What an `ExportTraceServiceRequest` decoded from `body` will hold.
pub fn protobuf_estimate(body: &[u8]) -> Result<Estimate, EstimateError> {
    let mut spans = 0u64;
    let mut total = Message::Request.struct_size();
    // (message, end of its bytes)
    let mut stack: Vec<(Message, usize)> = vec![(Message::Request, body.len())];
    let mut pos = 0usize;
    while let Some(&(message, end)) = stack.last() {
        if pos == end {
            stack.pop();
            continue;
        }
        let key = varint(body, &mut pos)?;
        let number = key >> 3;
        match key & 7 {
            0 => {
                varint(body, &mut pos)?;
            }
            1 => skip(&mut pos, 8, end)?,
            5 => skip(&mut pos, 4, end)?,
            // A group (deprecated; prost skips it as an unknown field): nothing is built of it.
            3 => skip_group(body, &mut pos, end, number, stack.len())?,
            2 => {
                let len = varint(body, &mut pos)?;
                let start = pos;
                skip(&mut pos, len, end)?;
                match message.field(number) {
                    Field::Message(child) => {
                        if stack.len() >= MAX_DEPTH {
                            return Err(EstimateError::TooDeep);
                        }
                        total = total
                            .saturating_add(2 * child.struct_size())
                            .saturating_add(ALLOCATION_OVERHEAD);
                        spans += u64::from(child == Message::Span);
                        pos = start;
                        stack.push((child, start + len as usize));
                    }
                    Field::Bytes => {
                        total = total
                            .saturating_add(len)
                            .saturating_add(ALLOCATION_OVERHEAD);
                    }
                    Field::Unknown => {}
                }
            }
            _ => {
                return Err(EstimateError::Malformed(
                    "a field has an unsupported wire type",
                ));
            }
        }
        if number == 0 {
            return Err(EstimateError::Malformed("a field has number 0"));
        }
    }
    Ok(Estimate { heap: total, spans })
}

/// The largest struct an OTLP/JSON object can become.
fn largest_struct() -> u64 {
    use Message as M;
    [
        M::ResourceSpans,
        M::Resource,
        M::EntityRef,
        M::ScopeSpans,
        M::Scope,
        M::Span,
        M::Event,
        M::Link,
        M::Status,
        M::KeyValue,
        M::AnyValue,
        M::ArrayValue,
        M::KeyValueList,
    ]
    .into_iter()
    .map(M::struct_size)
    .max()
    .unwrap_or(0)
}

/// Upper bound of the heap bytes an OTLP/JSON `ExportTraceServiceRequest` decoded from `body`
/// holds: every object a struct at twice the largest size, every byte of text at most one byte
/// of a decoded string (hex ids decode to half), plus an allocation per string (no more
/// strings than quote pairs). `spans` counts the `spanId` keys (a span without one is rejected,
/// not converted; one spelled with escapes is still paid for as an object in `heap`).
pub fn json_estimate(body: &[u8]) -> Estimate {
    let objects = memchr::memchr_iter(b'{', body).count() as u64;
    let quotes = memchr::memchr_iter(b'"', body).count() as u64;
    let heap = (body.len() as u64)
        .saturating_add(objects.saturating_mul(2 * largest_struct() + ALLOCATION_OVERHEAD))
        .saturating_add((quotes / 2).saturating_mul(ALLOCATION_OVERHEAD));
    let spans = [&b"\"spanId\""[..], &b"\"span_id\""[..]]
        .iter()
        .map(|key| memchr::memmem::find_iter(body, key).count() as u64)
        .sum();
    Estimate { heap, spans }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message as _;

    use super::*;

    fn request(spans: Vec<Span>) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn empty_spans_cost_their_struct_not_their_two_wire_bytes() {
        let body = request(vec![Span::default(); 1000]);
        let estimate = protobuf_estimate(&body).unwrap().heap;
        assert!(body.len() < 2100);
        assert!(estimate >= 1000 * size_of::<Span>() as u64, "{estimate}");
    }

    #[test]
    fn the_gzip_bomb_shape_is_estimated_far_above_its_size() {
        // `12 00` repeated inside one ScopeSpans: 16 k empty spans in 32 KiB.
        let mut scope = Vec::new();
        for _ in 0..16 * 1024 {
            scope.extend_from_slice(&[0x12, 0x00]);
        }
        let mut resource = vec![0x12];
        encode_len(&mut resource, scope.len());
        resource.extend_from_slice(&scope);
        let mut body = vec![0x0a];
        encode_len(&mut body, resource.len());
        body.extend_from_slice(&resource);
        let estimate = protobuf_estimate(&body).unwrap();
        assert_eq!(estimate.spans, 16 * 1024);
        let estimate = estimate.heap;
        assert!(
            estimate > 100 * body.len() as u64,
            "{estimate} for {}",
            body.len()
        );
        // prost agrees on what it is.
        let decoded = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        assert_eq!(
            decoded.resource_spans[0].scope_spans[0].spans.len(),
            16 * 1024
        );
    }

    fn encode_len(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    #[test]
    fn strings_and_nested_values_are_counted() {
        let deep = (0..45).fold(
            AnyValue {
                value: Some(any_value::Value::StringValue("x".repeat(1000))),
            },
            |inner, _| AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![inner],
                })),
            },
        );
        let span = Span {
            name: "n".repeat(5000),
            attributes: vec![KeyValue {
                key: "k".into(),
                value: Some(deep),
                ..Default::default()
            }],
            ..Default::default()
        };
        let body = request(vec![span]);
        assert!(ExportTraceServiceRequest::decode(body.as_slice()).is_ok());
        let estimate = protobuf_estimate(&body).unwrap().heap;
        assert!(estimate > 6000 + 45 * size_of::<AnyValue>() as u64);
    }

    #[test]
    fn malformed_and_too_deep_bodies_are_errors_never_panics() {
        assert!(protobuf_estimate(&[0x0a, 0x05, 0x00]).is_err());
        assert!(protobuf_estimate(&[0xff; 11]).is_err());
        assert!(protobuf_estimate(&[0x0b]).is_err());
        assert_eq!(
            protobuf_estimate(&[]).unwrap().heap,
            Message::Request.struct_size()
        );
        // AnyValue → ArrayValue → AnyValue ... 200 levels deep.
        let mut body: Vec<u8> = Vec::new();
        for i in 0..200 {
            let tag = if i % 2 == 0 { 0x0a } else { 0x2a };
            let mut outer = vec![tag];
            encode_len(&mut outer, body.len());
            outer.extend_from_slice(&body);
            body = outer;
        }
        let mut kv = vec![0x12];
        encode_len(&mut kv, body.len());
        kv.extend(body);
        let span_body = [vec![0x4a], len_prefixed(&kv)].concat();
        let body = request_bytes(&span_body);
        assert_eq!(protobuf_estimate(&body), Err(EstimateError::TooDeep));
        assert!(ExportTraceServiceRequest::decode(body.as_slice()).is_err());
    }

    fn len_prefixed(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_len(&mut out, bytes.len());
        out.extend_from_slice(bytes);
        out
    }

    fn request_bytes(span: &[u8]) -> Vec<u8> {
        let scope = [vec![0x12], len_prefixed(span)].concat();
        let resource = [vec![0x12], len_prefixed(&scope)].concat();
        [vec![0x0a], len_prefixed(&resource)].concat()
    }

    #[test]
    fn unknown_groups_are_skipped_as_prost_skips_them() {
        // Field 9 of the request as a group holding a varint, a nested group and bytes.
        let mut body = vec![
            (9 << 3) | 3,
            1 << 3,
            5,
            (2 << 3) | 3,
            (2 << 3) | 4,
            (3 << 3) | 2,
            1,
            7,
        ];
        body.push((9 << 3) | 4);
        body.extend(request(vec![Span::default()]));
        assert!(
            ExportTraceServiceRequest::decode(body.as_slice()).is_ok(),
            "prost accepts it"
        );
        assert_eq!(protobuf_estimate(&body).unwrap().spans, 1);
        let unclosed = [(9 << 3) | 3, 1 << 3, 5];
        assert!(protobuf_estimate(&unclosed).is_err());
        let mismatched = [(9 << 3) | 3, (8 << 3) | 4];
        assert!(protobuf_estimate(&mismatched).is_err());
    }

    #[test]
    fn json_estimate_counts_objects() {
        let body = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            vec!["{}"; 1000].join(",")
        );
        assert!(json_estimate(body.as_bytes()).heap >= 1000 * size_of::<Span>() as u64);
    }
}
