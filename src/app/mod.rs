//! Builds the pipeline from a validated [`Config`], owns its tasks, and shuts it down in order.
//!
//! Start-up order: key → buffer (recovery) → dead-letter store → forwarder (and the OTLP output
//! when `[outputs.otlp]` is configured) → listener. If any
//! step fails the process exits with an error naming what failed (a config key, a path, an
//! address) before it accepts anything.
//!
//! Shutdown order (SIGTERM, SIGINT, or the caller's token): stop accepting connections and let
//! in-flight requests finish (each is acknowledged only after its batch is buffered) → let the
//! forwarder (and the OTLP output, concurrently) drain the buffer for up to
//! `shutdown.drain_timeout` → stop them (whatever is left
//! stays on disk, delivered after the next start) → flush and close the buffer.

pub mod config;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::readiness::{Latch, Readiness};
use crate::admin::{self, AdminState};
use crate::app::config::Config;
use crate::buffer::{Buffer, BufferError};
use crate::config::ConfigError;
use crate::convert::SpanConvertOptions;
use crate::deadletter::{DeadLetterError, DeadLetterStore};
use crate::query::api::{Passthrough, QueryState};
use crate::query::{QueryIndex, snapshot};
use crate::receivers::auth::InboundAuth;
use crate::receivers::error::ApiError;
use crate::receivers::host_check::HostCheck;
use crate::receivers::http::{Protocols, ServeLimits, serve};
use crate::receivers::linger::Linger;
use crate::receivers::metrics::{ConnectionFamilies, IngestMetrics};
use crate::receivers::{self, IngestState};
use crate::secret::{KeyProvider, KeyStartError};
use crate::sinks::dynamiq::{ForwardError, Forwarder};
use crate::sinks::otlp::{OTLP_CONSUMER, OtlpOutput, OtlpOutputError};
use crate::state_dir::{self, dead_letter_dir};

/// Name of the Dynamiq collector's consumer cursor in the buffer.
pub const DYNAMIQ_CONSUMER: &str = "dynamiq";

/// Why the sidecar could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A configuration problem found at start (key file unreadable, ...).
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    /// The buffer directory could not be opened (permissions, lock held by another process).
    #[error("{0}")]
    Buffer(#[from] BufferError),
    /// The dead-letter directory could not be opened.
    #[error("{0}")]
    DeadLetter(#[from] DeadLetterError),
    /// The HTTP client could not be built.
    #[error("{0}")]
    Forward(#[from] ForwardError),
    /// The OTLP output could not be built.
    #[error("{0}")]
    OtlpOutput(#[from] OtlpOutputError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The config key it came from.
        key: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Secrets the process reads from its environment, passed in explicitly so tests and the CLI
/// control them.
#[derive(Default, Clone)]
pub struct EnvSecrets {
    /// `DYNAMIQ_ACCESS_KEY`.
    pub access_key: Option<String>,
    /// `DYNAMIQ_SIDECAR_INGEST_AUTH_TOKEN`.
    pub ingest_token: Option<String>,
    /// `DYNAMIQ_API_TOKEN`: the `/api/*` passthrough's own token.
    pub api_token: Option<String>,
}

impl EnvSecrets {
    /// Reads both from the process environment.
    pub fn from_env() -> Self {
        Self {
            access_key: std::env::var(crate::secret::ACCESS_KEY_ENV)
                .ok()
                .filter(|k| !k.trim().is_empty()),
            ingest_token: std::env::var(crate::receivers::config::INGEST_TOKEN_ENV).ok(),
            api_token: std::env::var(crate::secret::API_TOKEN_ENV)
                .ok()
                .filter(|k| !k.trim().is_empty()),
        }
    }
}

/// The whole HTTP surface: ingest, the query API, admin, with a JSON 404, behind the `Host`
/// check (DNS rebinding).
pub fn router(
    ingest: IngestState,
    query: QueryState,
    admin: AdminState,
    host_check: HostCheck,
    linger: Linger,
) -> Router {
    receivers::router(ingest)
        .merge(crate::query::api::router(query))
        .merge(admin::router(admin))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(linger),
            receivers::linger::linger_on_early_answer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            host_check,
            receivers::host_check::check_host,
        ))
}

/// Runs the sidecar until SIGTERM/SIGINT.
pub async fn run(config: Config, secrets: EnvSecrets) -> Result<(), AppError> {
    let listener = TcpListener::bind(config.ingest.http_addr)
        .await
        .map_err(|source| AppError::Bind {
            addr: config.ingest.http_addr,
            key: "ingest.http_addr",
            source,
        })?;
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal_token.cancel();
    });
    run_with(config, secrets, listener, shutdown).await
}

/// Runs the sidecar on an already-bound listener until `shutdown` is cancelled.
pub async fn run_with(
    config: Config,
    secrets: EnvSecrets,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    run_reporting(config, secrets, listener, shutdown, None).await
}

/// [`run_with`], handing `started` the buffer once the forwarder runs: a controller beside the
/// pipeline (the Lambda extension) watches delivery with [`Buffer::last_seq`] and
/// [`Buffer::acked`] for [`DYNAMIQ_CONSUMER`].
pub async fn run_reporting(
    config: Config,
    secrets: EnvSecrets,
    listener: TcpListener,
    shutdown: CancellationToken,
    started: Option<tokio::sync::oneshot::Sender<Buffer>>,
) -> Result<(), AppError> {
    crate::sinks::common::http::install_crypto_provider();
    let max_connections = connection_cap(config.ingest.max_connections);
    let mut registry = Registry::default();
    let readiness = Readiness::default();

    let key_error = |e: KeyStartError| ConfigError {
        origin: None,
        key: e.key.into(),
        message: e.message,
    };
    let key = KeyProvider::from_config(&config.upstream.key_source(), secrets.access_key.clone())
        .map_err(key_error)?;
    // The passthrough calls the Dynamiq API with its own token when one is configured.
    let api_token = KeyProvider::from_config(
        &config
            .query
            .api_token_source(config.upstream.key_reload_interval),
        secrets.api_token.clone(),
    )
    .map_err(key_error)?;
    let api_token = (!config.query.api_token_file.trim().is_empty()
        || api_token.current().is_some())
    .then_some(api_token);
    let inbound = InboundAuth::load(&config.ingest, secrets.ingest_token.clone())?;
    if config.is_exposed() && !inbound.is_required() {
        tracing::warn!(
            "listening beyond loopback without an inbound token (ingest.allow_unauthenticated = true)"
        );
    }

    // The OTLP output reads the same buffer through its own cursor: segments are kept until
    // both consumers acknowledged them.
    let consumers: &[&str] = if config.outputs.otlp.is_some() {
        &[DYNAMIQ_CONSUMER, OTLP_CONSUMER]
    } else {
        &[DYNAMIQ_CONSUMER]
    };
    let (buffer, report) = Buffer::open(&config.buffer, consumers, &mut registry)?;
    if report.corrupt_records > 0 {
        tracing::warn!(
            corrupt_records = report.corrupt_records,
            corrupt_bytes = report.corrupt_bytes,
            "corrupt buffer records were skipped and copied aside into the buffer's corrupt/ directory"
        );
    }
    let dead_letters = DeadLetterStore::open(&dead_letter_dir(&config.buffer.path))?
        .with_max_bytes(config.forward.dead_letter_max_bytes);
    let query_index = config.query.index.then(|| {
        Arc::new(QueryIndex::new(
            config.query.max_bytes,
            config.query.retention,
            &mut registry,
        ))
    });
    if let Some(index) = &query_index {
        buffer.set_drop_observer(index.clone());
    }
    if config.outputs.otlp.is_some() {
        // A stalled OTLP backend must never make the buffer refuse or drop collector data.
        buffer.yield_when_full(OTLP_CONSUMER);
    }
    let index_snapshot = state_dir::query_snapshot(&config.buffer.path);
    let snapshot_seq = match &query_index {
        Some(index) => snapshot::load(index, &index_snapshot),
        None => {
            // A snapshot left from when the index was on would be stale by the next time.
            let _ = crate::state_file::remove(&index_snapshot);
            0
        }
    };
    let passthrough = Passthrough::new(
        &config.query.upstream_url,
        api_token.clone().unwrap_or_else(|| key.clone()),
        config.upstream.connect_timeout,
        config.upstream.request_timeout,
    )
    .map_err(ForwardError::Client)?;
    let forwarder = Forwarder::new(
        &config.upstream,
        &config.forward,
        buffer.reader(DYNAMIQ_CONSUMER),
        key.clone(),
        dead_letters,
        readiness.clone(),
        &mut registry,
    )?
    .with_dedup_snapshot(state_dir::dedup_snapshot(&config.buffer.path));
    let forwarder = match &query_index {
        Some(index) => forwarder.with_delivery_observer(index.clone()),
        None => forwarder,
    };
    let otlp_output = match &config.outputs.otlp {
        Some(otlp) => Some(OtlpOutput::new(
            otlp,
            buffer.reader(OTLP_CONSUMER),
            &mut registry,
        )?),
        None => None,
    };
    let query = QueryState {
        index: query_index.clone(),
        auth: inbound.clone(),
        passthrough: Arc::new(passthrough),
    };
    let ingest = IngestState {
        buffer: buffer.clone(),
        auth: inbound,
        auth_mode: config.upstream.auth_mode,
        max_body_bytes: config.ingest.max_body_bytes,
        max_run_bytes: crate::sinks::dynamiq::batch::max_run_bytes(config.forward.max_bytes),
        request_timeout: config.ingest.request_timeout,
        readiness: readiness.clone(),
        metrics: IngestMetrics::register(&mut registry),
        span_options: Arc::new(SpanConvertOptions {
            default_source_id: config.ingest.otlp_source_id.clone(),
        }),
        observer: query_index
            .clone()
            .map(|index| index as Arc<dyn receivers::ingest::AppendObserver>),
        conversions: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )),
        budget: receivers::budget::MemoryBudget::new(
            config.ingest.max_inflight_bytes,
            &mut registry,
        ),
    };
    let connection_metrics = ConnectionFamilies::register(&mut registry);
    let refused_hosts = prometheus_client::metrics::counter::Counter::default();
    registry.register(
        "dynamiq_sidecar_http_requests_refused_host",
        "HTTP requests refused with 421 because their Host is not one the sidecar answers to (DNS rebinding)",
        refused_hosts.clone(),
    );
    let host_check = HostCheck::new(&config.ingest.allowed_hosts, refused_hosts);
    let linger = Linger::new(
        config.ingest.linger_bytes,
        config.ingest.linger_timeout,
        &mut registry,
    );
    let grpc_listener = TcpListener::bind(config.ingest.grpc_addr)
        .await
        .map_err(|source| AppError::Bind {
            addr: config.ingest.grpc_addr,
            key: "ingest.grpc_addr",
            source,
        })?;
    let admin = AdminState {
        readiness: readiness.clone(),
        registry: Arc::new(registry),
    };

    let stop_forwarder = CancellationToken::new();
    let drain = CancellationToken::new();
    key.spawn_reloader(stop_forwarder.clone());
    if let Some(api_token) = &api_token {
        api_token.spawn_reloader(stop_forwarder.clone());
    }
    let forwarder_task = tokio::spawn(forwarder.run(drain.clone(), stop_forwarder.clone()));
    if let Some(started) = started {
        let _ = started.send(buffer.clone());
    }
    let stop_otlp = CancellationToken::new();
    let otlp_task =
        otlp_output.map(|output| tokio::spawn(output.run(drain.clone(), stop_otlp.clone())));
    let stop_index = CancellationToken::new();
    let index_task = query_index.clone().map(|index| {
        let buffer = buffer.clone();
        let stop = stop_index.clone();
        tokio::spawn(async move {
            // Runs appended before this start (after the snapshot) are indexed in the
            // background; new ones are indexed by the receivers as usual.
            tokio::select! {
                replayed = snapshot::replay(&index, &buffer, DYNAMIQ_CONSUMER, snapshot_seq) => {
                    if replayed > 0 {
                        tracing::info!(runs = replayed, "trace index: buffered runs replayed");
                    }
                }
                () = stop.cancelled() => {}
            }
            snapshot::keep_saved(index, index_snapshot, stop).await;
        })
    });
    let latch_task = tokio::spawn(refresh_buffer_latch(
        buffer.clone(),
        readiness.clone(),
        stop_forwarder.clone(),
    ));

    let limits = ServeLimits {
        max_connections,
        header_timeout: config.ingest.request_timeout,
        idle_timeout: config.ingest.idle_timeout,
        write_timeout: config.ingest.write_timeout,
        max_concurrent_streams: config.ingest.max_concurrent_streams,
        keepalive_interval: config.ingest.keepalive_interval,
        http2_windows: None,
        grace: config.ingest.request_timeout,
    };
    let grpc_limits = ServeLimits {
        http2_windows: Some((
            receivers::grpc::STREAM_WINDOW,
            receivers::grpc::CONNECTION_WINDOW,
        )),
        ..limits
    };
    let grpc_task = tokio::spawn(serve(
        grpc_listener,
        receivers::grpc::service(ingest.clone()),
        Protocols::Http2Only,
        grpc_limits,
        connection_metrics.listener("grpc"),
        shutdown.clone(),
    ));
    let addr = listener.local_addr().ok();
    tracing::info!(
        http_addr = ?addr,
        grpc_addr = %config.ingest.grpc_addr,
        upstream = %crate::secret::redact_url(&config.upstream.url),
        fsync = ?config.buffer.fsync,
        when_full = ?config.buffer.when_full,
        "dynamiq-sidecar listening"
    );
    serve(
        listener,
        router(ingest, query, admin, host_check, linger),
        Protocols::Http1AndH2c,
        limits,
        connection_metrics.listener("http"),
        shutdown.clone(),
    )
    .await;
    if tokio::time::timeout(limits.grace, grpc_task).await.is_err() {
        tracing::warn!("the OTLP/gRPC listener did not stop in time");
    }

    tracing::info!(
        drain_timeout = ?config.shutdown.drain_timeout,
        "stopped accepting; draining the buffer to the collector"
    );
    drain.cancel();
    let drain_deadline = tokio::time::Instant::now() + config.shutdown.drain_timeout;
    // The OTLP output drains concurrently, within the same deadline.
    let otlp_stopped = otlp_task.map(|task| {
        let stop_otlp = stop_otlp.clone();
        tokio::spawn(async move {
            let mut task = task;
            match tokio::time::timeout_at(drain_deadline, &mut task).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::info!(
                        "drain timeout reached for the OTLP output; the rest stays in the buffer"
                    );
                    stop_otlp.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
                }
            }
        })
    });
    let mut forwarder_task = forwarder_task;
    match tokio::time::timeout_at(drain_deadline, &mut forwarder_task).await {
        Ok(_) => tracing::info!("buffer drained"),
        Err(_) => {
            tracing::info!(
                "drain timeout reached; the rest stays in the buffer for the next start"
            );
            stop_forwarder.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), forwarder_task).await;
        }
    }
    stop_forwarder.cancel();
    if let Some(otlp_stopped) = otlp_stopped {
        let _ = otlp_stopped.await;
    }
    stop_otlp.cancel();
    let _ = latch_task.await;
    // Saved after the outputs stopped, so the delivery states are final.
    stop_index.cancel();
    if let Some(task) = index_task {
        let _ = task.await;
    }
    buffer.close().await?;
    tracing::info!("dynamiq-sidecar stopped");
    Ok(())
}

/// Each listener's connection cap: `ingest.max_connections`, lowered when both listeners'
/// connections and the descriptors kept for the buffer and the outputs would not fit under the
/// process's descriptor limit (raised to its hard limit first).
fn connection_cap(wanted: usize) -> usize {
    use receivers::fd_limit;
    let Some(nofile) = fd_limit::raise_nofile_limit() else {
        return wanted;
    };
    match fd_limit::capped_connections(wanted, 2, nofile) {
        None => wanted,
        Some(capped) => {
            tracing::warn!(
                max_connections = wanted,
                lowered_to = capped,
                nofile,
                reserved = fd_limit::RESERVED_FDS,
                "ingest.max_connections lowered to fit the file-descriptor limit (RLIMIT_NOFILE) with descriptors kept for the buffer and the outputs"
            );
            capped
        }
    }
}

/// Keeps the `buffer_writable` latch current even when no request arrives (e.g. the
/// forwarder freed space under `block`).
async fn refresh_buffer_latch(buffer: Buffer, readiness: Readiness, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let writable = buffer.is_writable();
                let was = readiness.set(Latch::BufferWritable, writable);
                if was != writable {
                    if writable {
                        tracing::info!("buffer writable again");
                    } else {
                        tracing::warn!("buffer not writable (full under when_full = \"block\", or the disk is failing)");
                    }
                }
            }
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
