//! The round trip: a span made from a Dynamiq run becomes that run again.
//!
//! Owns reading the carriers `runs_to_spans/carriers.rs` writes: `dynamiq.run.keys` gives the
//! run's keys in order, each field is read from its carrier (the span name, times and the
//! `dynamiq.*`, `input.value`/`output.value` and `tag.tags` attributes), and a field that did not
//! fit its carrier comes verbatim from `dynamiq.run.extra`.
//!
//! Guarantees: the run rebuilt is equal, as a JSON value, to the run the span was made from;
//! carriers come from the network, so a rebuilt run is kept only when the collector would accept
//! it, and otherwise the span is converted as a foreign span.

use opentelemetry_proto::tonic::common::v1::any_value::Value;

use super::foreign::lift_io;
use super::validate::ValidSpan;
use crate::convert::run_fields::RunFields;
use crate::convert::semconv::Known;
use crate::convert::time::write_ns;
use crate::convert::values::{ObjectWriter, as_bool, as_str, json_text, write_plain};

/// Rebuilds the exact run a Dynamiq run → span conversion started from (the span carries
/// `dynamiq.run.keys`; see [`crate::convert::runs_to_spans`] for the carriers). Returns `false`, with
/// `out` in an unspecified state past its starting length, when the span is not such a span or
/// its carriers do not make a valid run; the caller then converts it as a foreign span.
pub(super) fn dynamiq_run(out: &mut Vec<u8>, v: &ValidSpan<'_>, known: &Known<'_>) -> bool {
    let span = v.span;
    let Some(Value::ArrayValue(keys)) = known.dq_run_keys else {
        return false;
    };
    let extra = as_str(known.dq_run_extra).and_then(|e| RunFields::parse(e.as_bytes()).ok());
    let start = out.len();
    let mut run = ObjectWriter::open(out);
    let raw_or_null = |run: &mut ObjectWriter<'_>, key: &str, v: Option<&Value>| match as_str(v)
        .and_then(json_text)
    {
        Some(json) => run.raw(key, json),
        None => run.null(key),
    };
    let str_or_null = |run: &mut ObjectWriter<'_>, key: &str, v: Option<&Value>| match as_str(v) {
        Some(text) => run.str(key, text),
        None => run.null(key),
    };
    for key in &keys.values {
        let Some(Value::StringValue(key)) = key.value.as_ref() else {
            return false;
        };
        if let Some(raw) = extra.as_ref().and_then(|e| e.get(key)) {
            run.raw(key, raw.get());
            continue;
        }
        match key.as_str() {
            "id" => str_or_null(&mut run, key, known.dq_run_id),
            "name" => run.str(key, &span.name),
            "type" => str_or_null(&mut run, key, known.dq_run_type),
            "trace_id" => str_or_null(&mut run, key, known.dq_trace_id),
            "source_id" => str_or_null(&mut run, key, known.dq_source_id),
            "session_id" => str_or_null(&mut run, key, known.dq_session_id),
            "parent_run_id" => str_or_null(&mut run, key, known.dq_parent_run_id),
            "status" => match as_str(known.dq_run_status) {
                Some("") | None => run.null(key),
                Some(status) => run.str(key, status),
            },
            "start_time" => match as_str(known.dq_start_time) {
                Some(t) => run.str(key, t),
                None => write_ns(run.key(key), span.start_time_unix_nano),
            },
            "end_time" => match as_str(known.dq_end_time) {
                _ if as_bool(known.dq_end_time_missing) == Some(true) => run.null(key),
                Some(t) => run.str(key, t),
                None => write_ns(run.key(key), span.end_time_unix_nano),
            },
            "input" => {
                lift_io(
                    run.key(key),
                    &[("input.value", known.input_value, as_str(known.input_mime))],
                );
            }
            "output" => {
                lift_io(
                    run.key(key),
                    &[(
                        "output.value",
                        known.output_value,
                        as_str(known.output_mime),
                    )],
                );
            }
            "metadata" => raw_or_null(&mut run, key, known.dq_metadata),
            "error" => raw_or_null(&mut run, key, known.dq_error),
            "executions" => raw_or_null(&mut run, key, known.dq_executions),
            "tags" => match known.tag_tags {
                Some(v @ Value::ArrayValue(_)) => write_plain(run.key(key), Some(v)),
                _ => run.null(key),
            },
            _ => run.null(key),
        }
    }
    run.close();
    // Carriers come from the network: only a run the collector would accept is kept.
    let mut body = Vec::with_capacity(out.len() - start + 12);
    body.extend_from_slice(b"{\"runs\":[");
    body.extend_from_slice(&out[start..]);
    body.extend_from_slice(b"]}");
    crate::model::parse_batch(&body).is_ok()
}
