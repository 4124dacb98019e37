//! Dead-lettering: the runs the collector refused for good (or gave up on) written to the
//! dead-letter store, then resolved.
//!
//! Owns: the write of a dead-letter batch (with the collector's answer, truncated), its one
//! retry, and the logs and `dead_letter*` metrics of the store's state (writable again, full and
//! evicting its oldest files, refusing what cannot fit, failing).
//!
//! Guarantees: best effort after the collector's final no: a run handed here is resolved whether
//! or not its dead letter was written (so the acknowledgement moves past it and delivery goes
//! on); a failed write is tried once more (on a fresh file), then counted
//! (`dead_letters_dropped_total{reason="write_failed"}`) and logged once until a write succeeds;
//! the first eviction is logged, later ones at debug. The observer is told the runs were
//! dead-lettered.
//!
//! Fails: never; only a cancelled `stop` interrupts the write ([`Stopped`]), leaving the runs
//! unresolved.

use tokio_util::sync::CancellationToken;

use super::Forwarder;
use super::batch::Item;
use super::metrics::{DeadLetterDrop, DeadLetterReason};
use super::observer::RunOutcome;
use crate::deadletter::DeadLetter;
use crate::sinks::common::consumer::{BatchSource, Stopped, or_stop};

impl<S: BatchSource> Forwarder<S> {
    /// Writes runs to the dead-letter store and resolves them. A failed write is tried once
    /// more (on a fresh file); if that fails too, it is logged and counted, and the runs are
    /// resolved all the same: they are lost as dead letters, and delivery of other runs goes on.
    pub(super) async fn dead_letter(
        &mut self,
        items: &[Item],
        reason: DeadLetterReason,
        status: Option<u16>,
        response: &str,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let entries: Vec<DeadLetter> = items
            .iter()
            .map(|i| DeadLetter {
                reason,
                status,
                response: crate::model::text::truncate(
                    response,
                    crate::deadletter::MAX_RESPONSE_CHARS,
                )
                .to_string(),
                run: i.run.clone(),
                client_key: i.client_key.clone(),
            })
            .collect();
        let runs = items.len() as u64;
        let mut result = or_stop(stop, self.dead_letters.append(entries.clone())).await?;
        if result.is_err() {
            result = or_stop(stop, self.dead_letters.append(entries)).await?;
        }
        match result {
            Ok(report) => {
                if std::mem::take(&mut self.dead_letter_failing) {
                    tracing::info!("dead-letter store writable again");
                }
                self.metrics
                    .dead_letter_bytes
                    .set(i64::try_from(report.store_bytes).unwrap_or(i64::MAX));
                if report.evicted_runs > 0 {
                    self.metrics
                        .dead_letters_dropped(DeadLetterDrop::Evicted, report.evicted_runs);
                    if std::mem::replace(&mut self.dead_letter_evicted, true) {
                        tracing::debug!(runs = report.evicted_runs, "oldest dead letters removed");
                    } else {
                        tracing::warn!(
                            runs = report.evicted_runs,
                            max_bytes = self.forward.dead_letter_max_bytes,
                            "the dead-letter store reached forward.dead_letter_max_bytes; its oldest files are removed to make room (counted in dynamiq_sidecar_forward_dead_letters_dropped_total)"
                        );
                    }
                }
                if report.refused_runs > 0 {
                    self.metrics
                        .dead_letters_dropped(DeadLetterDrop::NoRoom, report.refused_runs);
                    tracing::warn!(
                        runs = report.refused_runs,
                        max_bytes = self.forward.dead_letter_max_bytes,
                        "dead-lettered runs larger than forward.dead_letter_max_bytes together; not kept"
                    );
                }
            }
            Err(e) => {
                self.metrics
                    .dead_letters_dropped(DeadLetterDrop::WriteFailed, runs);
                if std::mem::replace(&mut self.dead_letter_failing, true) {
                    tracing::debug!(error = %e, runs, "dead-letter write failed again");
                } else {
                    tracing::error!(
                        error = %e,
                        runs,
                        "cannot write the dead-letter store; the runs the collector refused are acknowledged without a dead-letter copy (lost) and delivery goes on"
                    );
                }
            }
        }
        self.metrics.dead_letters(reason, runs);
        self.observe(RunOutcome::DeadLettered, items);
        self.resolve(items);
        Ok(())
    }
}
