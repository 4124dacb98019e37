//! Span validation: what a span must be for a run to be made from it.
//!
//! Owns the span checks of docs/run-span-mapping.md §8 (a 16-byte trace id and an 8-byte span id, neither all zeros; a parent id
//! empty or 8 bytes, all zeros meaning none; an end not before the start) and the nesting bound
//! on attribute values (of the span, its events and links, its resource and scope).
//!
//! Guarantees: a span that passes becomes a run the collector accepts, whichever way it is
//! converted; a span that fails is rejected with a reason naming the rule, never a panic.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;

/// How deep attribute values (arrays and key-value lists in arrays...) may nest. In OTLP/JSON
/// form each level costs up to four JSON levels and the envelope starts nine deep, so 24 keeps
/// every run under the collector's nesting limit ([`crate::model::batch::MAX_DEPTH`]).
pub(super) const MAX_VALUE_DEPTH: usize = 24;

pub(super) const TOO_DEEP: &str = "attribute values are nested too deeply to make a valid run";

/// Whether no attribute value nests deeper than `max` levels (a scalar is one level).
pub(super) fn attributes_within(attrs: &[KeyValue], max: usize) -> bool {
    fn value_within(value: Option<&Value>, max: usize) -> bool {
        match value {
            Some(Value::ArrayValue(a)) => {
                max > 1
                    && a.values
                        .iter()
                        .all(|v| value_within(v.value.as_ref(), max - 1))
            }
            Some(Value::KvlistValue(kv)) => max > 1 && attributes_within(&kv.values, max - 1),
            _ => max >= 1,
        }
    }
    attrs
        .iter()
        .all(|kv| value_within(kv.value.as_ref().and_then(|v| v.value.as_ref()), max))
}

pub(super) fn scope_shallow(scope: Option<&InstrumentationScope>) -> bool {
    scope.is_none_or(|s| attributes_within(&s.attributes, MAX_VALUE_DEPTH))
}

/// A span whose ids have been checked.
pub(super) struct ValidSpan<'a> {
    pub(super) span: &'a Span,
    pub(super) trace_id: [u8; 16],
    pub(super) span_id: [u8; 8],
    pub(super) parent_span_id: Option<[u8; 8]>,
}

pub(super) fn validate(span: &Span) -> Result<ValidSpan<'_>, String> {
    let trace_id: [u8; 16] = span
        .trace_id
        .as_slice()
        .try_into()
        .map_err(|_| format!("traceId must be 16 bytes, got {}", span.trace_id.len()))?;
    if trace_id == [0; 16] {
        return Err("traceId is all zeros".to_owned());
    }
    let span_id: [u8; 8] = span
        .span_id
        .as_slice()
        .try_into()
        .map_err(|_| format!("spanId must be 8 bytes, got {}", span.span_id.len()))?;
    if span_id == [0; 8] {
        return Err("spanId is all zeros".to_owned());
    }
    let parent_span_id = match span.parent_span_id.len() {
        0 => None,
        8 => {
            let mut p = [0u8; 8];
            p.copy_from_slice(&span.parent_span_id);
            // An all-zero parent is how some exporters spell "no parent".
            (p != [0; 8]).then_some(p)
        }
        n => return Err(format!("parentSpanId must be empty or 8 bytes, got {n}")),
    };
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err("endTimeUnixNano is before startTimeUnixNano".to_owned());
    }
    let shallow = attributes_within(&span.attributes, MAX_VALUE_DEPTH)
        && span
            .events
            .iter()
            .all(|e| attributes_within(&e.attributes, MAX_VALUE_DEPTH))
        && span
            .links
            .iter()
            .all(|l| attributes_within(&l.attributes, MAX_VALUE_DEPTH));
    if !shallow {
        return Err(TOO_DEEP.to_owned());
    }
    Ok(ValidSpan {
        span,
        trace_id,
        span_id,
        parent_span_id,
    })
}
