//! One accepted connection's socket, as the accept loop hands it to hyper: it notes when bytes
//! last arrived (for the idle timeout) and cuts the connection off when a write makes no
//! progress for `write_timeout` (a client that never reads its answer).
//!
//! Guarantees: a write that stays blocked (the peer's receive window closed) for the whole
//! `write_timeout` fails with `TimedOut`, which ends the connection and frees its slot and
//! buffers; a write that makes any progress restarts the clock. Reads and writes are passed
//! through unchanged otherwise (vectored writes included).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the accept loop knows of a connection's activity, shared by its socket and its service.
#[derive(Debug)]
pub struct ConnActivity {
    origin: Instant,
    /// Milliseconds since `origin` of the last read that returned bytes, or of the last
    /// response finished.
    last_active_ms: AtomicU64,
    /// Requests whose response has not been sent completely yet.
    in_flight: AtomicUsize,
    /// Set when the connection ended because a write made no progress in time.
    write_timed_out: AtomicBool,
}

impl ConnActivity {
    /// A connection that has just been accepted.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            write_timed_out: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// A request started: the connection is busy until [`Self::request_done`].
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request's response was sent (or abandoned).
    pub fn request_done(&self) {
        self.touch();
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether the connection ended on a write timeout.
    pub fn write_timed_out(&self) -> bool {
        self.write_timed_out.load(Ordering::Relaxed)
    }

    /// Resolves once the connection has had no request in flight and received nothing for
    /// `idle` (re-checked whenever that could have become true).
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let last =
                self.origin + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
            let due = last + idle;
            if self.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= due {
                return;
            }
            // Busy, or not idle long enough yet: look again when it could be due.
            tokio::time::sleep_until(due.max(Instant::now() + idle.min(Duration::from_secs(1))))
                .await;
        }
    }
}

/// A socket with a write timeout that records read activity in [`ConnActivity`].
pub struct TimedIo<S> {
    inner: S,
    activity: Arc<ConnActivity>,
    write_timeout: Duration,
    /// Armed while a write is blocked.
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> TimedIo<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<ConnActivity>, write_timeout: Duration) -> Self {
        Self {
            inner,
            activity,
            write_timeout,
            write_deadline: None,
        }
    }

    /// Called when a write (or flush) returned `Pending`: arms the deadline if needed and
    /// reports whether it has passed.
    fn poll_write_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.write_timeout;
        let deadline = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(deadline.as_mut().poll(cx));
        self.activity.write_timed_out.store(true, Ordering::Relaxed);
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing of the response within ingest.write_timeout",
        ))
    }

    fn on_write_result<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => match self.poll_write_deadline(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            done => {
                self.write_deadline = None;
                done
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write_result(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write_result(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write_result(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.on_write_result(cx, result)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_times_out() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let activity = ConnActivity::new();
        let mut io = TimedIo::new(ours, activity.clone(), Duration::from_secs(5));
        let big = vec![0u8; 64 * 1024];
        let e = io.write_all(&big).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(activity.write_timed_out());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let activity = ConnActivity::new();
        let mut io = TimedIo::new(ours, activity.clone(), Duration::from_secs(5));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut total = 0;
            while total < 16 * 1024 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                total += theirs.read(&mut buf).await.unwrap();
            }
            total
        });
        io.write_all(&vec![1u8; 16 * 1024]).await.unwrap();
        assert!(reader.await.unwrap() >= 16 * 1024);
        assert!(!activity.write_timed_out());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_requests_and_reads() {
        let activity = ConnActivity::new();
        activity.request_started();
        let idle = Duration::from_secs(10);
        let waiting = tokio::time::timeout(Duration::from_secs(60), activity.idle_for(idle));
        assert!(waiting.await.is_err(), "busy connections are never idle");
        activity.request_done();
        let started = Instant::now();
        activity.idle_for(idle).await;
        assert!(started.elapsed() >= idle);
    }
}
