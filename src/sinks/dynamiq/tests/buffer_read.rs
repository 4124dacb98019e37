//! The shared buffer read (`next_records`): empty reads, read errors, a closed buffer, stop.

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
