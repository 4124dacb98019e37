//! The accept loop shared by both listeners: hyper serving a tower service (the axum router on
//! `ingest.http_addr`, HTTP/1.1 and h2c; the OTLP/gRPC service on `ingest.grpc_addr`, HTTP/2
//! only) on a listener the caller bound (so tests pass `127.0.0.1:0`).
//!
//! Guarantees, per listener:
//! - at most `max_connections` connections are served at once; more wait in the kernel backlog
//!   (counted in `dynamiq_sidecar_connection_limit_waits_total`);
//! - a client that sends nothing, or does not finish its headers, within `header_timeout` is
//!   cut off (slowloris), HTTP/2 prior knowledge included;
//! - a connection with no request in flight that receives nothing for `idle_timeout` is closed
//!   gracefully (HTTP/2: GOAWAY), so idle connections cannot hold the slots;
//! - a response write that makes no progress for `write_timeout` ends the connection (a client
//!   that never reads);
//! - HTTP/2 connections get keepalive pings (a peer that stops answering is dropped) and at most
//!   `max_concurrent_streams` streams;
//! - accept errors (EMFILE, ENFILE, ENOBUFS, ...) are logged, counted and retried after a
//!   backoff that grows to one second, never fatal and never a busy loop;
//! - on shutdown the listener closes first, in-flight requests finish (bounded by `grace`), then
//!   the function returns.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, Response};
use futures_util::future::BoxFuture;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn_io::{ConnActivity, TimedIo};
use super::metrics::ConnectionMetrics;

/// Which protocols a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 and HTTP/2 prior knowledge (h2c), told apart by the connection preface.
    Http1AndH2c,
    /// HTTP/2 only (gRPC).
    Http2Only,
}

/// Limits of one listener's accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Time a client has to send its request headers (and its first byte).
    pub header_timeout: Duration,
    /// A connection with no request in flight that receives nothing this long is closed.
    pub idle_timeout: Duration,
    /// A response write that makes no progress this long ends the connection.
    pub write_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Interval of HTTP/2 keepalive pings; a ping unanswered within the same time drops the
    /// connection.
    pub keepalive_interval: Duration,
    /// HTTP/2 flow-control windows (stream, connection); `None`: hyper's defaults.
    pub http2_windows: Option<(u32, u32)>,
    /// Time in-flight requests get to finish at shutdown.
    pub grace: Duration,
}

/// What [`serve`] serves: a cloneable service answering every request, its future sendable.
pub trait ServeService<B>:
    tower::Service<
        Request<Incoming>,
        Response = Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> ServeService<B> for S where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A response body [`serve`] can send.
pub trait ServeBody:
    Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
}

impl<B> ServeBody for B where
    B: Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}

/// Serves `service` on `listener` until `shutdown` is cancelled, then drains connections.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    protocols: Protocols,
    limits: ServeLimits,
    metrics: ConnectionMetrics,
    shutdown: CancellationToken,
) where
    S: ServeService<B>,
    B: ServeBody,
{
    let builder = connection_builder(protocols, &limits);
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut accept_backoff = AcceptBackoff::default();
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                metrics.limit_waits.inc();
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let stream = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    accept_backoff.reset();
                    stream
                }
                Err(e) => {
                    metrics.accept_errors.inc();
                    let pause = accept_backoff.next();
                    tracing::warn!(error = %e, retry_in = ?pause, "accept failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let service = service.clone();
        let shutdown = shutdown.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            metrics.open.inc();
            serve_connection(stream, builder, service, limits, &metrics, shutdown).await;
            metrics.open.dec();
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    tokio::select! {
        _ = connections.wait() => tracing::debug!("all connections closed"),
        _ = tokio::time::sleep(limits.grace) => tracing::warn!("in-flight requests did not finish within the shutdown grace period"),
    }
}

fn connection_builder(protocols: Protocols, limits: &ServeLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if protocols == Protocols::Http2Only {
        builder = builder.http2_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut http2 = builder.http2();
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_interval);
    if let Some((stream, connection)) = limits.http2_windows {
        http2
            .initial_stream_window_size(stream)
            .initial_connection_window_size(connection);
    }
    builder
}

/// How long an idle connection being closed gets to finish the close handshake (it has no
/// request in flight, so nothing is cut short).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

async fn serve_connection<S, B>(
    stream: tokio::net::TcpStream,
    builder: auto::Builder<TokioExecutor>,
    service: S,
    limits: ServeLimits,
    metrics: &ConnectionMetrics,
    shutdown: CancellationToken,
) where
    S: ServeService<B>,
    B: ServeBody,
{
    // A client that connects and sends nothing would wait in hyper-util's protocol detection,
    // before hyper's header timeout starts, holding a connection slot forever: give it the
    // same time to send its first byte. (`peek`, not `readable`: the latter may wake
    // spuriously.)
    let mut first = [0u8; 1];
    if !matches!(
        tokio::time::timeout(limits.header_timeout, stream.peek(&mut first)).await,
        Ok(Ok(1..))
    ) {
        metrics.closed("header_timeout");
        return;
    }
    let activity = ConnActivity::new();
    let io = TimedIo::new(stream, activity.clone(), limits.write_timeout);
    let service = TowerToHyperService::new(TrackRequests {
        inner: service,
        activity: activity.clone(),
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    // A graceful close (HTTP/2: GOAWAY, then a PING the client must answer) waits for the
    // client's cooperation; the deadline ends the connection without it.
    let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let result = loop {
        let closing = deadline.is_some();
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = shutdown.cancelled(), if !closing => {
                deadline = Some(Box::pin(tokio::time::sleep(limits.grace)));
                connection.as_mut().graceful_shutdown();
            }
            _ = activity.idle_for(limits.idle_timeout), if !closing => {
                deadline = Some(Box::pin(tokio::time::sleep(IDLE_CLOSE_GRACE)));
                metrics.closed("idle");
                connection.as_mut().graceful_shutdown();
            }
            _ = async { deadline.as_mut().expect("closing").await }, if closing => break Ok(()),
        }
    };
    if activity.write_timed_out() {
        metrics.closed("write_timeout");
    }
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Retry pauses after failed accepts: 10 ms doubling to 1 s, reset by a successful accept.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    fn next(&mut self) -> Duration {
        let pause =
            Duration::from_millis(10u64 << self.failures.min(7)).min(Duration::from_secs(1));
        self.failures = self.failures.saturating_add(1);
        pause
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Counts a connection's requests in flight (from the call until the response body is done or
/// dropped), for the idle timeout.
#[derive(Clone)]
struct TrackRequests<S> {
    inner: S,
    activity: Arc<ConnActivity>,
}

impl<S, B> tower::Service<Request<Incoming>> for TrackRequests<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let guard = InFlight::new(self.activity.clone());
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| TrackedBody {
                inner: body,
                _guard: guard,
            }))
        })
    }
}

/// Marks one request in flight while it lives.
struct InFlight(Arc<ConnActivity>);

impl InFlight {
    fn new(activity: Arc<ConnActivity>) -> Self {
        activity.request_started();
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// A response body that keeps its request counted in flight until it is done or dropped.
struct TrackedBody<B> {
    inner: B,
    _guard: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_grows_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let pauses: Vec<Duration> = (0..10).map(|_| b.next()).collect();
        assert_eq!(pauses[0], Duration::from_millis(10));
        assert_eq!(pauses[1], Duration::from_millis(20));
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*pauses.last().unwrap(), Duration::from_secs(1));
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(10));
    }
}
