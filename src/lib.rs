//! dynamiq-sidecar: receives Dynamiq run batches and OTLP spans (HTTP and gRPC) on loopback,
//! converts spans to runs, makes them durable in a local disk buffer before acknowledging, and
//! forwards them to the Dynamiq collector with batching, duplicate suppression, rate limits and
//! retries (and, optionally, to an OTLP backend as spans).
//!
//! # Layout
//! The modules follow the pipeline, left to right:
//!
//! ```text
//!  receivers ──► model / convert ──► buffer ──► forward ──► collector
//!  (HTTP, gRPC)  (validate,          (segmented  (batch, dedup, rate-limit,
//!                 spans → runs,       disk log)   retry, dead-letter)
//!                 envelope)               └─────► outputs::otlp ──► OTLP backend (runs → spans)
//!       query (trace index, /v1/traces, /api/*) · admin (/healthz /readyz /metrics)
//!       config · secret · app · cli
//! ```
//!
//! - [`config`]: file + env + CLI → one validated `Config`; errors name the key.
//! - [`model`]: the run batch as raw bytes plus the few fields read from it; validation; the
//!   envelope each buffered record carries.
//! - [`receivers`]: the HTTP listener (`POST /v1/traces`: Dynamiq runs and OTLP/HTTP) and the
//!   OTLP/gRPC listener.
//! - [`convert`]: spans ⇄ runs (deterministic ids, GenAI/OpenInference conventions, exact
//!   round trips) and the `convert` command's file formats.
//! - [`buffer`]: the durable, bounded, checksummed disk log with per-consumer cursors.
//! - [`forward`]: the collector client: batching, governor rate limits, backoff with full
//!   jitter, `Retry-After`, dead-letter store.
//! - [`outputs`]: the optional OTLP output (every run also exported as an OTLP span, from the
//!   same buffer with its own cursor).
//! - [`secret`]: the access key (redacted everywhere) and its file watcher.
//! - [`admin`]: readiness latches and the metrics registry.
//! - [`app`]: builds the pipeline, owns the tasks, shuts down in order.
//! - [`query`]: the in-memory trace index, the query API and the `/api/*` passthrough.
//! - [`cli`], [`tools`]: the command line and the offline buffer tools; [`state_file`]: small
//!   checksummed state files written atomically; [`private_fs`]: everything under
//!   `buffer.path` is created 0600/0700, and a loose buffer directory is tightened.

pub mod admin;
pub mod app;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod convert;
pub mod deadletter;
pub mod logging;
pub mod model;
pub mod private_fs;
pub mod query;
pub mod receivers;
pub mod secret;
pub mod sinks;
pub mod state_dir;
pub mod state_file;
pub mod tools;
