//! Lingering close for HTTP/1.x: a request body that the handler did not read to its end (an
//! early 413, 401, 415 or 503) is read and discarded after the answer went out, up to
//! `ingest.linger_bytes` and for at most `ingest.linger_timeout`, as nginx does.
//!
//! Why: closing a socket that still holds unread bytes makes the kernel answer with a TCP
//! reset, and a reset can discard the answer before the client has read it — a client that
//! already sent 1 MiB of an 80 MiB body would see "connection reset" instead of `413`.
//! Reading the rest lets the client finish writing and then read the answer.
//!
//! Guarantees: nothing drained is kept (memory stays flat; drained bytes are not charged to
//! the in-flight budget); a drain ends at the body's end, at the byte bound or at the time
//! bound, whichever comes first, and a bound that bites is counted in
//! `dynamiq_sidecar_http_lingering_closes_total{outcome}`. HTTP/2 needs none of this (a stream
//! reset leaves the connection up), and a client waiting for `100 Continue` that never got it
//! has sent nothing to drain.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Why a drain ended; the label of the lingering counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The body ended (or the client closed): the client could read the answer.
    Drained,
    /// `ingest.linger_bytes` was reached; the connection is closed.
    ByteLimit,
    /// `ingest.linger_timeout` passed; the connection is closed.
    Timeout,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Drained => "drained",
            Self::ByteLimit => "byte_limit",
            Self::Timeout => "timeout",
        }
    }
}

/// The bounds of one drain and the counter of how drains ended.
#[derive(Clone)]
pub struct Linger {
    bytes: u64,
    timeout: Duration,
    closes: Family<Vec<(String, String)>, Counter>,
}

impl Linger {
    /// Registers `dynamiq_sidecar_http_lingering_closes_total` and returns the bounds.
    pub fn new(bytes: u64, timeout: Duration, registry: &mut Registry) -> Self {
        let closes = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "dynamiq_sidecar_http_lingering_closes",
            "HTTP/1 request bodies read and discarded after an early answer, by how the drain ended",
            closes.clone(),
        );
        Self::unregistered(bytes, timeout, closes)
    }

    fn unregistered(
        bytes: u64,
        timeout: Duration,
        closes: Family<Vec<(String, String)>, Counter>,
    ) -> Self {
        Self {
            bytes,
            timeout,
            closes,
        }
    }

    /// Reads `body` to its end (discarding it) within the bounds; counts how it ended.
    pub async fn drain(&self, mut body: Body) -> Outcome {
        let mut seen: u64 = 0;
        let read = async {
            // Checked before each read: once the answer is out, hyper does not report the end
            // of a body whose length it knows until the connection ends.
            while !body.is_end_stream() {
                let Some(frame) = body.frame().await else {
                    break;
                };
                let Ok(frame) = frame else {
                    return Outcome::Drained;
                };
                if let Some(data) = frame.data_ref() {
                    seen = seen.saturating_add(data.len() as u64);
                    if seen > self.bytes {
                        return Outcome::ByteLimit;
                    }
                }
            }
            Outcome::Drained
        };
        let outcome = tokio::time::timeout(self.timeout, read)
            .await
            .unwrap_or(Outcome::Timeout);
        tracing::debug!(
            outcome = outcome.label(),
            discarded = seen,
            "lingering close ended"
        );
        self.closes
            .get_or_create(&vec![("outcome".to_owned(), outcome.label().to_owned())])
            .inc();
        outcome
    }
}

/// Middleware: wraps HTTP/1.x request bodies so that one dropped before its end is drained.
pub async fn linger_on_early_answer(
    State(linger): State<Arc<Linger>>,
    request: Request,
    next: Next,
) -> Response {
    if request.version() >= Version::HTTP_2 {
        return next.run(request).await;
    }
    let awaits_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v == HeaderValue::from_static("100-continue"));
    let request = request.map(|inner| {
        Body::new(LingeringBody {
            inner: Some(inner),
            polled: false,
            ended: false,
            awaits_continue,
            linger,
        })
    });
    next.run(request).await
}

/// A request body that, dropped before its end, hands the rest to [`Linger::drain`].
struct LingeringBody {
    inner: Option<Body>,
    /// Whether the handler asked for data (hyper sends `100 Continue` on the first poll).
    polled: bool,
    /// Whether the body reported its end.
    ended: bool,
    awaits_continue: bool,
    linger: Arc<Linger>,
}

impl http_body::Body for LingeringBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.polled = true;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for LingeringBody {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if self.ended || inner.is_end_stream() || (self.awaits_continue && !self.polled) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let linger = Arc::clone(&self.linger);
            runtime.spawn(async move {
                linger.drain(inner).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linger(bytes: u64, timeout: Duration) -> Linger {
        Linger::unregistered(bytes, timeout, Family::default())
    }

    fn count(linger: &Linger, outcome: Outcome) -> u64 {
        linger
            .closes
            .get_or_create(&vec![("outcome".to_owned(), outcome.label().to_owned())])
            .get()
    }

    fn chunks(n: usize, size: usize) -> Body {
        let stream = futures_util::stream::iter(
            (0..n).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; size]))),
        );
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn a_body_within_the_bounds_is_drained_to_its_end() {
        let linger = linger(1 << 20, Duration::from_secs(5));
        assert_eq!(linger.drain(chunks(10, 1000)).await, Outcome::Drained);
        assert_eq!(count(&linger, Outcome::Drained), 1);
    }

    #[tokio::test]
    async fn the_byte_bound_ends_a_drain() {
        let linger = linger(5000, Duration::from_secs(5));
        assert_eq!(linger.drain(chunks(10, 1000)).await, Outcome::ByteLimit);
        assert_eq!(count(&linger, Outcome::ByteLimit), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_bound_ends_a_drain_of_a_stalled_body() {
        let linger = linger(1 << 20, Duration::from_secs(5));
        let stalled =
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
        assert_eq!(linger.drain(stalled).await, Outcome::Timeout);
        assert_eq!(count(&linger, Outcome::Timeout), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_is_drained_and_one_read_to_its_end_is_not() {
        let linger = Arc::new(linger(1 << 20, Duration::from_secs(5)));
        let wrap = |inner| LingeringBody {
            inner: Some(inner),
            polled: false,
            ended: false,
            awaits_continue: false,
            linger: Arc::clone(&linger),
        };
        let mut half = wrap(chunks(4, 10));
        let _ = half.frame().await;
        drop(half);
        let mut whole = Body::new(wrap(chunks(4, 10)));
        while whole.frame().await.is_some() {}
        drop(whole);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(count(&linger, Outcome::Drained), 1);
    }
}
