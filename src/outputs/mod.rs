//! Outputs besides the Dynamiq collector (CONTRACT §8).
//!
//! Owns: [`otlp`], the OTLP output, which exports every buffered run as an OTLP span to
//! `outputs.otlp.endpoint` (Jaeger, Tempo, Phoenix, an OpenTelemetry Collector, ...).
//!
//! Guarantees: each output reads the same disk buffer through its own consumer cursor
//! ([`otlp::OTLP_CONSUMER`]), so a slow or unreachable output never delays the Dynamiq
//! forwarder (and vice versa); the buffer keeps a segment until every consumer acknowledged it.

pub mod otlp;
