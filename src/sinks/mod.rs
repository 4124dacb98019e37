//! Where buffered runs go. Each sink reads the same disk buffer through its own consumer cursor,
//! so a slow or unreachable one never delays another; the buffer keeps a segment until every
//! consumer acknowledged it.
//!
//! - [`dynamiq`]: the Dynamiq collector (`POST {upstream.url}/v1/traces`), always on.
//! - [`otlp`]: an OTLP backend (`[outputs.otlp]`), every run also exported as a span.
//! - [`common`]: what both share (buffer reads, the HTTP client, retries).

pub mod common;
pub mod dynamiq;
pub mod otlp;
