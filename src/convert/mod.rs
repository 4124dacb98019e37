//! Conversion between the Dynamiq run tree and the OTLP span model (`docs/run-span-mapping.md`).
//!
//! Owns the id mapping ([`ids`]), the attribute conventions ([`semconv`]), timestamps
//! ([`time`]), the span → run direction ([`spans_to_runs`]) and the run → span direction
//! ([`runs_to_spans`], reading runs through [`run_fields`], its attributes going to an
//! [`attr_sink`]), and the same direction written straight to protobuf bytes ([`runs_to_bytes`]
//! through [`proto_writer`]), which the OTLP output sends.
//!
//! Guarantees: conversion is pure and stateless (no clocks, no randomness, no lookups), so a
//! re-sent span maps to the same run every time; it never panics on any decoded input; every run
//! it produces is valid under docs/http-contract.md §3.

pub mod attr_sink;
pub mod files;
pub mod genai_events;
pub mod ids;
pub mod proto_writer;
pub mod run_fields;
pub mod runs_to_bytes;
pub mod runs_to_spans;
pub mod semconv;
pub mod spans_to_runs;
pub mod time;
pub mod values;

pub use runs_to_bytes::{EncodedRuns, runs_to_request_bytes};
pub use runs_to_spans::{ConvertedRuns, RunConvertOptions, RunSpan, run_to_span, runs_to_request};
pub use spans_to_runs::{
    ConvertedRecord, ConvertedRecords, ConvertedSpans, RunKeys, SpanConvertOptions,
    convert_request, convert_request_to_records, count_spans,
};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod round_trip_tests;

#[cfg(test)]
mod bytes_tests;
