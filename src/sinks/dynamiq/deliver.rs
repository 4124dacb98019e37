//! A buffer batch from read to resolution: decoding and duplicate suppression, the plan of
//! requests, and each request group's fate: sent until answered, split, parked with its held
//! client key, or dead-lettered.
//!
//! Owns: the request loop of one planned request (the key to send, the rate limits, the send,
//! the classification of the answer and the [`policy`](super::policy) decision after a retryable
//! failure), the halving of a refused request, the recording of delivered runs for duplicate
//! suppression, and acknowledging after each piece.
//!
//! Guarantees:
//! - A run is resolved (and so may be acknowledged) only when the collector answered 2xx for it,
//!   suppression found a delivered copy, or it went to the dead-letter store; a run of a held key
//!   is parked, still outstanding.
//! - Splitting is bounded: halving stops at single runs, so a request of `n` runs is split at
//!   most ⌈log2 n⌉ levels deep and costs at most `2n − 1` requests, each through the rate limits
//!   and the retry policy like any other; the halves go out in order, first half first.
//! - A body is framed and compressed once per request, not per retry; a collector echoing the key
//!   in its answer does not leak it into logs or dead letters.
//! - A fingerprint is recorded only after a 2xx.
//!
//! Fails: never; only a cancelled `stop` interrupts ([`Stopped`]), leaving unresolved runs
//! unacknowledged.

use std::collections::{HashSet, VecDeque};
use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Forwarder;
use super::batch::{self, Item, Piece};
use super::client::{self, Outcome};
use super::dedup;
use super::metrics::{DeadLetterReason, RequestOutcome, SplitCause};
use super::observer::RunOutcome;
use super::policy::{HoldCause, Retry};
use crate::buffer::Record;
use crate::model::auth_mode::AuthMode;
use crate::model::envelope;
use crate::secret::Secret;
use crate::sinks::common::consumer::{BatchSource, Stopped, error_chain, or_stop};
use crate::sinks::common::http::ClientError;

/// How one request group ended.
enum Resolution {
    /// Accepted, or dead-lettered: resolved.
    Done,
    /// 413, or a permanent rejection, for several runs: split in halves.
    Split,
    /// Passthrough mode: the collector rejected the client's key (401/403); the runs are to be
    /// parked with that key (it is already held).
    Hold,
}

impl<S: BatchSource> Forwarder<S> {
    /// Tells the observer, if any, that these runs reached `outcome`.
    pub(super) fn observe(&self, outcome: RunOutcome, items: &[Item]) {
        if let Some(observer) = &self.observer {
            observer.runs_resolved(outcome, &mut items.iter().map(|i| i.seq));
        }
    }

    /// Delivers one buffer batch, acknowledging as far as every earlier run is resolved.
    pub(super) async fn deliver(
        &mut self,
        records: Vec<Record>,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let last_seq = records.last().map(|r| r.seq);
        let mut items = Vec::with_capacity(records.len());
        let dedup_on = self.dedup.enabled();
        let mut in_batch: HashSet<dedup::Fingerprint> = HashSet::new();
        let (mut suppressed, mut saved) = (0u64, 0u64);
        let mut suppressed_seqs: Vec<u64> = Vec::new();
        for record in records {
            match envelope::decode(&record.payload) {
                Ok(env) => {
                    // Runs converted from OTLP spans are out of scope (see `dedup`).
                    let dedup_this = dedup_on && !dedup::is_converted_span_run(&env.run);
                    let fingerprint = if dedup_this {
                        dedup::fingerprint(&env.run, env.client_key.as_deref())
                    } else {
                        0
                    };
                    // Delivered before, or an identical copy is ahead in this batch: resolved
                    // as it is (acked like a corrupt record, never sent).
                    if dedup_this && (self.dedup.seen(fingerprint) || !in_batch.insert(fingerprint))
                    {
                        suppressed += 1;
                        saved += env.run.len() as u64 + 1;
                        if self.observer.is_some() {
                            suppressed_seqs.push(record.seq);
                        }
                        continue;
                    }
                    items.push(Item {
                        seq: record.seq,
                        client_key: env.client_key,
                        run: env.run,
                        fingerprint,
                    });
                }
                Err(e) => {
                    self.metrics.corrupt_records.inc();
                    tracing::error!(seq = record.seq, error = %e, "buffer record cannot be decoded; skipping it");
                }
            }
        }
        if let Some(observer) = &self.observer
            && !suppressed_seqs.is_empty()
        {
            observer.runs_resolved(RunOutcome::Delivered, &mut suppressed_seqs.into_iter());
        }
        if suppressed > 0 {
            self.metrics.dedup_suppressed_runs.inc_by(suppressed);
            self.metrics.dedup_saved_bytes.inc_by(saved);
            tracing::debug!(
                runs = suppressed,
                bytes = saved,
                "runs already delivered; acknowledged without sending"
            );
        }
        self.acks.read(last_seq, items.iter().map(|i| i.seq));
        self.metrics
            .in_flight_runs
            .set(i64::try_from(items.len()).unwrap_or(i64::MAX));
        let pieces = batch::plan(
            items,
            self.mode,
            self.forward.max_runs,
            self.forward.max_bytes,
        );
        // Acknowledge the records that precede the first run (corrupt or suppressed ones) right
        // away.
        self.ack_progress();
        self.deliver_pieces(pieces, stop).await?;
        self.metrics.in_flight_runs.set(0);
        Ok(())
    }

    /// Sends (or parks, or dead-letters) planned pieces in order, acknowledging after each.
    pub(super) async fn deliver_pieces(
        &mut self,
        pieces: Vec<Piece>,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        for piece in pieces {
            match piece {
                Piece::Send(items) => self.send_with_splits(items, stop).await?,
                Piece::TooLarge(item) => {
                    tracing::warn!(
                        seq = item.seq,
                        bytes = item.run.len(),
                        max_bytes = self.forward.max_bytes,
                        "run larger than forward.max_bytes; moved to the dead-letter store"
                    );
                    self.dead_letter(&[item], DeadLetterReason::TooLarge, None, "", stop)
                        .await?;
                }
            }
            self.ack_progress();
        }
        Ok(())
    }

    /// Acks through the record before the first outstanding run (through the last record read
    /// when none is outstanding).
    pub(super) fn ack_progress(&mut self) {
        let Some(through) = self.acks.due() else {
            return;
        };
        match self.source.ack(through) {
            Ok(()) => self.acks.acked(through),
            // The next ack covers it; until then these runs would be redelivered after a restart.
            Err(e) => {
                tracing::warn!(through_seq = through, error = %e, "cannot acknowledge delivered runs in the buffer")
            }
        }
    }

    /// These runs reached their outcome: they no longer hold the acknowledgement back.
    pub(super) fn resolve(&mut self, items: &[Item]) {
        self.acks.resolve(items.iter().map(|i| i.seq));
    }

    /// Sends one planned request, halving it on 413 or a permanent rejection until every part
    /// is resolved (a part of a client key on hold is parked instead).
    ///
    /// Bounded: halving stops at single runs, so a request of `n` runs is split at most
    /// ⌈log2 n⌉ levels deep and costs at most `2n − 1` requests (each through the rate limits
    /// and the retry policy like any other).
    async fn send_with_splits(
        &mut self,
        items: Vec<Item>,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let mut queue = VecDeque::from([items]);
        while let Some(chunk) = queue.pop_front() {
            if let Some(key) = self.parked_key(&chunk) {
                self.park(&key, chunk);
                continue;
            }
            match self.send_until_resolved(&chunk, stop).await? {
                Resolution::Done => {}
                Resolution::Split => match batch::halve(chunk) {
                    Some((first, second)) => {
                        queue.push_front(second);
                        queue.push_front(first);
                    }
                    None => unreachable!("a single run is dead-lettered, not split"),
                },
                Resolution::Hold => {
                    if let Some(key) = chunk.first().and_then(|i| i.client_key.clone()) {
                        self.park(&key, chunk);
                    }
                }
            }
            self.ack_progress();
        }
        Ok(())
    }

    /// The key for a request: the sidecar's, or in passthrough the client's (falling back to the
    /// sidecar's for records stored without one).
    fn key_for(&self, chunk: &[Item]) -> Option<Secret> {
        match self.mode {
            AuthMode::SidecarKey => self.key.current(),
            AuthMode::Passthrough => chunk
                .first()
                .and_then(|i| i.client_key.clone())
                .map(Secret::new)
                .or_else(|| self.key.current()),
        }
    }

    /// Sends `chunk` until it is accepted, dead-lettered, or must be split.
    async fn send_until_resolved(
        &mut self,
        chunk: &[Item],
        stop: &CancellationToken,
    ) -> Result<Resolution, Stopped> {
        let mut retries: u32 = 0;
        // The body does not change across retries: framed and compressed once.
        let framed = batch::frame(chunk);
        let body_len = framed.len();
        let body = or_stop(stop, self.client.prepare(framed)).await?;
        loop {
            let key_version = *self.key_rx.borrow_and_update();
            let Some(key) = self.key_for(chunk) else {
                self.enter_hold(HoldCause::NoKey);
                self.wait_in_hold(key_version, stop).await?;
                continue;
            };

            let waited = or_stop(stop, self.limits.acquire(chunk.len())).await?;
            if !waited.is_zero() {
                self.metrics.rate_limit_wait.inc_by(waited.as_secs_f64());
            }

            let started = Instant::now();
            let result = or_stop(stop, self.client.send(&body, &key)).await?;
            self.metrics
                .latency
                .observe(started.elapsed().as_secs_f64());

            let (outcome, status, response, reason) = match result {
                Ok(resp) => {
                    let outcome = client::classify(resp.status, &resp.headers, SystemTime::now());
                    let code = resp.status.as_u16();
                    // Kept for the dead-letter store and logs; a collector echoing the key must
                    // not make it leak there.
                    let text =
                        String::from_utf8_lossy(&resp.body).replace(key.expose(), "[redacted]");
                    (outcome, Some(code), text, format!("HTTP {code}"))
                }
                Err(ClientError::InvalidKey) => {
                    if let Some(client_key) = self.client_key_of(chunk) {
                        self.hold_client_key(&client_key, None);
                        return Ok(Resolution::Hold);
                    }
                    self.enter_hold(HoldCause::InvalidKey);
                    self.wait_in_hold(key_version, stop).await?;
                    continue;
                }
                Err(e) => (
                    Outcome::Retry { retry_after: None },
                    None,
                    String::new(),
                    error_chain(&e),
                ),
            };
            tracing::debug!(runs = chunk.len(), bytes = body_len, %reason, "request to the collector finished");

            match outcome {
                Outcome::Success => {
                    self.metrics.request(RequestOutcome::Success);
                    self.metrics.runs.inc_by(chunk.len() as u64);
                    self.metrics.bytes.inc_by(body_len as u64);
                    self.metrics.wire_bytes.inc_by(body.bytes.len() as u64);
                    self.remember_delivered(chunk);
                    self.observe(RunOutcome::Delivered, chunk);
                    self.resolve(chunk);
                    self.link_ok();
                    self.client_key_accepted(chunk);
                    return Ok(Resolution::Done);
                }
                Outcome::Retry { retry_after } => {
                    self.metrics.request(RequestOutcome::Retry);
                    self.metrics.retries.inc();
                    retries = retries.saturating_add(1);
                    match self.link.failed(retries, retry_after, Instant::now()) {
                        Retry::GiveUp => {
                            tracing::warn!(
                                runs = chunk.len(),
                                retries = self.forward.max_retries,
                                %reason,
                                "giving up after forward.max_retries retries; runs moved to the dead-letter store"
                            );
                            self.dead_letter(
                                chunk,
                                DeadLetterReason::GaveUp,
                                status,
                                &response,
                                stop,
                            )
                            .await?;
                            return Ok(Resolution::Done);
                        }
                        Retry::After { sleep, outage } => {
                            self.report_outage(&reason, sleep, outage);
                            or_stop(stop, tokio::time::sleep(sleep)).await?;
                        }
                    }
                }
                Outcome::TooLarge => {
                    self.link_ok();
                    self.client_key_accepted(chunk);
                    if chunk.len() > 1 {
                        self.metrics.request(RequestOutcome::Split);
                        self.metrics.split(SplitCause::TooLarge);
                        tracing::debug!(
                            runs = chunk.len(),
                            "collector answered 413; splitting the request"
                        );
                        return Ok(Resolution::Split);
                    }
                    self.metrics.request(RequestOutcome::DeadLetter);
                    tracing::warn!(
                        seq = chunk[0].seq,
                        bytes = chunk[0].run.len(),
                        "the collector refused a single run as too large (HTTP 413); moved to the dead-letter store"
                    );
                    self.dead_letter(chunk, DeadLetterReason::TooLarge, status, &response, stop)
                        .await?;
                    return Ok(Resolution::Done);
                }
                Outcome::Reject => {
                    self.link_ok();
                    self.client_key_accepted(chunk);
                    if chunk.len() > 1 {
                        // One bad run must not take the others (other clients' among them) to
                        // the dead-letter store: halve until the rejected runs are alone.
                        self.metrics.request(RequestOutcome::Split);
                        self.metrics.split(SplitCause::Rejected);
                        tracing::debug!(
                            status = status.unwrap_or_default(),
                            runs = chunk.len(),
                            "the collector rejected a request of several runs; splitting it to isolate the rejected ones"
                        );
                        return Ok(Resolution::Split);
                    }
                    self.metrics.request(RequestOutcome::DeadLetter);
                    tracing::warn!(
                        seq = chunk[0].seq,
                        status = status.unwrap_or_default(),
                        response = %crate::model::text::truncate(&response, 512),
                        "the collector rejected a run permanently; moved to the dead-letter store"
                    );
                    self.dead_letter(chunk, DeadLetterReason::Rejected, status, &response, stop)
                        .await?;
                    return Ok(Resolution::Done);
                }
                Outcome::AuthHold => {
                    self.metrics.request(RequestOutcome::AuthHold);
                    if let Some(client_key) = self.client_key_of(chunk) {
                        self.hold_client_key(&client_key, status);
                        return Ok(Resolution::Hold);
                    }
                    self.enter_hold(HoldCause::Rejected(status.unwrap_or(401)));
                    self.wait_in_hold(key_version, stop).await?;
                }
            }
        }
    }

    /// Records the fingerprints of runs the collector accepted (only ever after a 2xx). Runs
    /// out of dedup's scope have none (0) and are not recorded.
    fn remember_delivered(&mut self, chunk: &[Item]) {
        if !self.dedup.enabled() {
            return;
        }
        let mut evicted = 0u64;
        for item in chunk {
            if item.fingerprint != 0 && self.dedup.record(item.fingerprint) {
                evicted += 1;
            }
        }
        if evicted > 0 {
            self.metrics.dedup_evictions.inc_by(evicted);
        }
        self.metrics
            .dedup_entries
            .set(i64::try_from(self.dedup.len()).unwrap_or(i64::MAX));
    }
}
