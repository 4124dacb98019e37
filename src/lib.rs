//! dynamiq-sidecar: receives Dynamiq run batches and OTLP spans (HTTP and gRPC) on loopback,
//! converts spans to runs, makes them durable in a local disk buffer before acknowledging, and
//! forwards them to the Dynamiq collector with batching, duplicate suppression, rate limits and
//! retries (and, optionally, to an OTLP backend as spans).
//!
//! # Layout
//! The modules follow the pipeline, left to right (ARCHITECTURE.md has the picture, the layer
//! rules `tests/layers.rs` enforces, the tasks and threads, and the state directory):
//!
//! ```text
//!  receivers ──► model / convert ──► buffer ──► sinks::dynamiq ──► collector
//!  (HTTP, gRPC)  (validate,          (segmented  (batch, dedup, rate-limit,
//!                 spans → runs,       disk log)   retry, split, dead-letter, hold)
//!                 envelope)               └─────► sinks::otlp ──► OTLP backend (runs → spans)
//!       query (trace index, /v1/traces, /api/*) · admin (/healthz /readyz /metrics)
//!       below: config · secret · logging · state_dir · state_file · private_fs
//!       above: app · cli · tools
//! ```
//!
//! - [`receivers`]: the HTTP listener (`POST /v1/traces`: Dynamiq runs and OTLP/HTTP), the
//!   OTLP/gRPC listener, and the ingest step they share (durable append, then observers).
//! - [`model`]: the run batch as raw bytes plus the few fields read from it; validation; the
//!   envelope each buffered record carries.
//! - [`convert`]: spans ⇄ runs (deterministic ids, GenAI/OpenInference conventions, exact
//!   round trips) and the `convert` command's file formats.
//! - [`buffer`]: the durable, bounded, checksummed disk log with per-consumer cursors.
//! - [`sinks`]: where buffered runs go: [`sinks::dynamiq`] (the collector), [`sinks::otlp`]
//!   (an OTLP backend), on the toolkit they share ([`sinks::common`]).
//! - [`deadletter`]: runs the collector refused for good, on disk, bounded; summary and replay.
//! - [`query`]: the trace index, the query API and the `/api/*` passthrough.
//! - [`admin`]: readiness latches and the metrics registry.
//! - [`config`]: the configuration machinery (errors name the key and line); each component
//!   keeps its section beside it and [`app::config`] assembles them.
//! - [`secret`]: the access key (redacted everywhere) and its file watcher; [`logging`]: the
//!   `[log]` section and the subscriber.
//! - [`state_dir`]: the layout of `buffer.path`; [`state_file`]: small checksummed state files
//!   written atomically; [`private_fs`]: everything under `buffer.path` is 0600/0700.
//! - [`app`]: builds the pipeline, owns the tasks, shuts down in order; [`cli`], [`tools`]: the
//!   command line and the offline buffer tools; [`lambda`]: the binary as an AWS Lambda
//!   extension.

pub mod admin;
pub mod app;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod convert;
pub mod deadletter;
pub mod lambda;
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
