//! The consumer toolkit both sinks share: how a delivery loop reads the disk buffer
//! ([`BatchSource`], [`next_records`]), stops ([`Stopped`], [`or_stop`]) and reports errors
//! ([`error_chain`]).
//!
//! Guarantees: a read never skips records (a read abandoned because drain began is dropped
//! before it returned anything); once `stop` is cancelled nothing more is read and the caller
//! unwinds without acknowledging.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::buffer::{BufferError, Reader, Record};

/// Extra time granted to a buffer read that is lingering when drain begins (see
/// [`next_records`]).
const DRAIN_READ_GRACE: Duration = Duration::from_millis(50);

/// Where the forwarder reads runs from: the buffer's [`Reader`] in production, an in-memory fake
/// in tests.
///
/// `next_batch` should be cancel-safe (dropping its future before it resolves must not skip
/// records). The forwarder drops it only on `stop` (after which it never acknowledges again), or
/// when drain begins while the read has waited longer than `forward.max_delay` plus a short grace,
/// i.e. while it is waiting on an empty buffer.
pub trait BatchSource: Send {
    /// Up to `max_records` records (about `max_bytes` payload bytes), oldest first, waiting up to
    /// `linger` for a batch to fill once it has at least one record.
    fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        linger: Duration,
    ) -> impl Future<Output = Result<Vec<Record>, BufferError>> + Send;
    /// Acknowledges every record up to and including `through_seq`.
    fn ack(&mut self, through_seq: u64) -> Result<(), BufferError>;
    /// Records appended but not yet acknowledged.
    fn pending_records(&self) -> u64;
}

impl BatchSource for Reader {
    fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        linger: Duration,
    ) -> impl Future<Output = Result<Vec<Record>, BufferError>> + Send {
        Reader::next_batch(self, max_records, max_bytes, linger)
    }

    fn ack(&mut self, through_seq: u64) -> Result<(), BufferError> {
        Reader::ack(self, through_seq)
    }

    fn pending_records(&self) -> u64 {
        Reader::pending_records(self)
    }
}

/// `stop` was cancelled: unwind without acknowledging anything more.
#[derive(Debug)]
pub struct Stopped;

/// An error and its sources, `: `-separated (reqwest's own message hides the cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// How a delivery loop reads the buffer.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Most records per read.
    pub max_records: usize,
    /// Most payload bytes per read.
    pub max_bytes: usize,
    /// Longest a read lingers for a batch to fill (not while draining).
    pub max_delay: Duration,
    /// Pause after a failed read before the next one.
    pub error_pause: Duration,
}

/// One read for a delivery loop, shared by the forwarder and the OTLP output (`consumer` names
/// it in the log): `Some(records)` to deliver, `None` when there is nothing right now (an empty
/// read, a read abandoned because drain began, or a read error, logged, after
/// `error_pause`). `Err(Stopped)` as soon as `stop` is cancelled or the buffer is closed.
pub async fn next_records<S: BatchSource>(
    consumer: &'static str,
    source: &mut S,
    limits: ReadLimits,
    drain: &CancellationToken,
    stop: &CancellationToken,
) -> Result<Option<Vec<Record>>, Stopped> {
    match read_or_abandon(source, limits, drain, stop).await? {
        None => Ok(None),
        Some(Ok(records)) if records.is_empty() => Ok(None),
        Some(Ok(records)) => Ok(Some(records)),
        Some(Err(BufferError::Closed)) => Err(Stopped),
        Some(Err(e)) => {
            tracing::warn!(consumer, error = %e, "cannot read the buffer; retrying");
            or_stop(stop, tokio::time::sleep(limits.error_pause)).await?;
            Ok(None)
        }
    }
}

/// One buffer read that lingers up to `max_delay` for a batch to fill unless `drain` was
/// cancelled. When drain begins during the read, a read lingering over records it already
/// holds finishes within `max_delay`; one still waiting after that is waiting on an empty
/// buffer, so it is abandoned (`Ok(None)`) and the caller's pending count decides.
/// `Err(Stopped)` as soon as `stop` is cancelled.
async fn read_or_abandon<S: BatchSource>(
    source: &mut S,
    limits: ReadLimits,
    drain: &CancellationToken,
    stop: &CancellationToken,
) -> Result<Option<Result<Vec<Record>, BufferError>>, Stopped> {
    let draining = drain.is_cancelled();
    let linger = if draining {
        Duration::ZERO
    } else {
        limits.max_delay
    };
    let read = source.next_batch(limits.max_records, limits.max_bytes, linger);
    tokio::pin!(read);
    tokio::select! {
        biased;
        _ = stop.cancelled() => Err(Stopped),
        r = &mut read => Ok(Some(r)),
        _ = drain.cancelled(), if !draining => {
            tokio::select! {
                biased;
                _ = stop.cancelled() => Err(Stopped),
                r = &mut read => Ok(Some(r)),
                _ = tokio::time::sleep(limits.max_delay + DRAIN_READ_GRACE) => Ok(None),
            }
        }
    }
}

/// Awaits `f` unless `stop` is cancelled first.
pub async fn or_stop<F: Future>(stop: &CancellationToken, f: F) -> Result<F::Output, Stopped> {
    tokio::select! {
        biased;
        _ = stop.cancelled() => Err(Stopped),
        v = f => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;

    /// A source answering each read from a script.
    struct ScriptedSource(std::collections::VecDeque<Result<Vec<Record>, BufferError>>);

    impl BatchSource for ScriptedSource {
        fn next_batch(
            &mut self,
            _max_records: usize,
            _max_bytes: usize,
            _linger: Duration,
        ) -> impl Future<Output = Result<Vec<Record>, BufferError>> + Send {
            let next = self.0.pop_front();
            async move {
                match next {
                    Some(answer) => answer,
                    None => std::future::pending().await,
                }
            }
        }

        fn ack(&mut self, _through_seq: u64) -> Result<(), BufferError> {
            Ok(())
        }

        fn pending_records(&self) -> u64 {
            0
        }
    }

    #[tokio::test]
    async fn next_records_skips_empty_reads_pauses_after_errors_and_stops_on_a_closed_buffer() {
        let record = Record {
            seq: 7,
            appended_at_ms: 0,
            payload: Bytes::from_static(b"x"),
        };
        let io_error = BufferError::Io {
            path: "segment".into(),
            source: std::io::Error::other("disk gone"),
        };
        let mut source = ScriptedSource(
            [
                Ok(vec![]),
                Err(io_error),
                Ok(vec![record]),
                Err(BufferError::Closed),
            ]
            .into(),
        );
        let limits = ReadLimits {
            max_records: 10,
            max_bytes: 1 << 20,
            max_delay: Duration::from_millis(5),
            error_pause: Duration::from_millis(300),
        };
        let (drain, stop) = (CancellationToken::new(), CancellationToken::new());
        let mut read = async || next_records("test", &mut source, limits, &drain, &stop).await;

        assert!(
            matches!(read().await, Ok(None)),
            "an empty read is nothing to deliver"
        );
        let started = Instant::now();
        assert!(
            matches!(read().await, Ok(None)),
            "a read error is logged, not returned"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "then the loop pauses"
        );
        match read().await {
            Ok(Some(records)) => assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [7]),
            other => panic!("expected the record, got {other:?}"),
        }
        assert!(
            matches!(read().await, Err(Stopped)),
            "a closed buffer ends the loop"
        );
    }

    #[tokio::test]
    async fn next_records_is_abandoned_when_stop_is_cancelled_during_the_error_pause() {
        let mut source = ScriptedSource(
            [Err(BufferError::Io {
                path: "segment".into(),
                source: std::io::Error::other("disk gone"),
            })]
            .into(),
        );
        let limits = ReadLimits {
            max_records: 10,
            max_bytes: 1 << 20,
            max_delay: Duration::from_millis(5),
            error_pause: Duration::from_secs(3600),
        };
        let (drain, stop) = (CancellationToken::new(), CancellationToken::new());
        let cancel = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        });
        let started = Instant::now();
        let read = next_records("test", &mut source, limits, &drain, &stop).await;
        assert!(matches!(read, Err(Stopped)));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not after the whole pause"
        );
    }
}
