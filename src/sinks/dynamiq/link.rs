//! The forwarder acting on the state of the link ([`policy`](super::policy)) and on the held
//! client keys ([`held`](super::held)): what each transition logs, sets and waits for.
//!
//! Owns: the `upstream_authorized` readiness latch and the `auth_hold`, `held_keys` and
//! `held_runs` gauges; the wait in a hold (for `forward.auth_hold_retry` or a key change); in
//! passthrough mode, which client key a request belongs to, the parking of a held key's runs, the
//! retries of held keys and the pause of reading at `forward.auth_hold_max_bytes`.
//!
//! Guarantees: one log line per state change (entering an outage or a hold with its reason,
//! recovering, a client key held or released, reading paused at the hold bound), per-attempt
//! detail only at debug, no key ever logged; readiness is cleared only by a hold of the sidecar's
//! key, never by a client key's.
//!
//! Fails: never; only a cancelled `stop` ends a wait ([`Stopped`]).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Forwarder;
use super::batch::{self, Item};
use super::policy::{HoldCause, OutageStep};
use crate::admin::readiness::Latch;
use crate::model::auth_mode::AuthMode;
use crate::sinks::common::consumer::{BatchSource, Stopped};

impl<S: BatchSource> Forwarder<S> {
    /// The collector gave a definitive answer (not retryable, not 401/403): leave any outage or
    /// hold. An answer other than 401/403 means the key was accepted.
    pub(super) fn link_ok(&mut self) {
        let recovered = self.link.answered(Instant::now());
        if let Some(outage) = recovered.outage {
            tracing::info!(
                after = ?outage.lasted,
                retries = outage.retries,
                "collector reachable again; delivery resumed"
            );
        }
        if recovered.hold.is_some() {
            self.readiness.set(Latch::UpstreamAuthorized, true);
            self.metrics.auth_hold.set(0);
            tracing::info!("the collector accepted the access key; delivery resumed");
        }
    }

    /// A retryable failure, about to sleep `sleep`: log on entering the outage, debug afterwards.
    pub(super) fn report_outage(&self, reason: &str, sleep: Duration, outage: OutageStep) {
        match outage {
            OutageStep::Continues { retries } => {
                tracing::debug!(%reason, retries, retry_in = ?sleep, "collector still unavailable; retrying");
            }
            OutageStep::Began => {
                tracing::warn!(
                    %reason,
                    retry_in = ?sleep,
                    "collector unavailable; retrying with backoff (runs stay in the buffer)"
                );
            }
        }
    }

    /// Enters (or stays in) the hold: readiness false, one warning per new cause.
    pub(super) fn enter_hold(&mut self, cause: HoldCause) {
        if !self.link.hold(cause) {
            tracing::debug!(?cause, "delivery still held");
            return;
        }
        self.readiness.set(Latch::UpstreamAuthorized, false);
        self.metrics.auth_hold.set(1);
        let retry = humantime::format_duration(self.forward.auth_hold_retry);
        match cause {
            HoldCause::NoKey => tracing::warn!(
                "no access key: set DYNAMIQ_ACCESS_KEY or upstream.access_key_file (delivery is held; runs stay in the buffer)"
            ),
            HoldCause::InvalidKey => tracing::warn!(
                "the access key contains characters not allowed in an HTTP header (delivery is held; runs stay in the buffer)"
            ),
            HoldCause::Rejected(status) => {
                let whose = match self.mode {
                    AuthMode::SidecarKey => "the access key",
                    AuthMode::Passthrough => {
                        "the sidecar's access key (passthrough mode, for runs stored without a client key)"
                    }
                };
                tracing::warn!(
                    "the collector rejected {whose} (HTTP {status}): an org-scoped or revoked key? Dynamiq needs a \
                     project-scoped access key. Delivery is held (runs stay in the buffer) and retried every {retry} \
                     or as soon as the key changes"
                );
            }
        }
    }

    /// Waits for `forward.auth_hold_retry`, or for a key change (immediately if the key changed
    /// since `key_version` was read).
    pub(super) async fn wait_in_hold(
        &mut self,
        key_version: u64,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        if *self.key_rx.borrow() != key_version {
            return Ok(());
        }
        let rx = &mut self.key_rx;
        let changed = async {
            if rx.changed().await.is_err() {
                // The provider is gone (cannot happen while we hold it): rely on the timer.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Err(Stopped),
            _ = changed => tracing::info!("access key changed; retrying delivery"),
            _ = tokio::time::sleep(self.forward.auth_hold_retry) => {}
        }
        Ok(())
    }

    /// The client key of a passthrough `chunk` (`None` in sidecar-key mode, or for runs stored
    /// without one: those use the sidecar's key and its hold).
    pub(super) fn client_key_of(&self, chunk: &[Item]) -> Option<String> {
        match self.mode {
            AuthMode::SidecarKey => None,
            AuthMode::Passthrough => chunk.first()?.client_key.clone(),
        }
    }

    /// The collector rejected a client's key (passthrough mode): hold that key only.
    pub(super) fn hold_client_key(&mut self, client_key: &str, status: Option<u16>) {
        // A 401/403 is an answer: the collector is reachable.
        if let Some(after) = self
            .link
            .client_key_rejected(status.is_some(), Instant::now())
        {
            tracing::info!(after = ?after, "collector reachable again");
        }
        if self.held.hold(client_key, Instant::now()) {
            let why = match status {
                Some(code) => format!("rejected a client's access key (HTTP {code})"),
                None => {
                    "cannot send a client's access key (characters not allowed in an HTTP header)"
                        .to_string()
                }
            };
            tracing::warn!(
                held_keys = self.held.len(),
                "the collector {why} in passthrough mode: an org-scoped or revoked key? Dynamiq needs a \
                 project-scoped access key. That key's runs are held (they stay in the buffer) and retried \
                 with backoff up to forward.auth_hold_retry; other keys' runs keep flowing"
            );
        } else {
            tracing::debug!(
                held_keys = self.held.len(),
                "a held client key is still rejected"
            );
        }
        self.update_held_gauges();
    }

    /// The collector answered `chunk` with something other than 401/403: its client key (if
    /// held) works again.
    pub(super) fn client_key_accepted(&mut self, chunk: &[Item]) {
        let Some(client_key) = self.client_key_of(chunk) else {
            return;
        };
        if let Some(after) = self.held.release(&client_key) {
            tracing::info!(
                after = ?after,
                held_keys = self.held.len(),
                "the collector accepts a held client key again; its runs are delivered"
            );
            self.update_held_gauges();
        }
    }

    /// The client key whose runs `chunk` holds, when that key is on hold (passthrough mode)
    /// and not being retried: the chunk is to be parked, not sent.
    pub(super) fn parked_key(&self, chunk: &[Item]) -> Option<String> {
        if self.mode != AuthMode::Passthrough {
            return None;
        }
        let key = chunk.first()?.client_key.as_deref()?;
        self.held.parks(key).then(|| key.to_owned())
    }

    /// Parks `chunk` with its held client key.
    pub(super) fn park(&mut self, key: &str, chunk: Vec<Item>) {
        self.held.park(key, chunk, Instant::now());
        self.update_held_gauges();
    }

    fn update_held_gauges(&self) {
        self.metrics
            .held_keys
            .set(i64::try_from(self.held.len()).unwrap_or(i64::MAX));
        self.metrics
            .held_runs
            .set(i64::try_from(self.held.runs()).unwrap_or(i64::MAX));
    }

    /// Retries every held client key whose time has come: its parked runs are sent again, the
    /// first request being the probe (rejected again: everything is parked again).
    pub(super) async fn retry_due_keys(&mut self, stop: &CancellationToken) -> Result<(), Stopped> {
        while let Some((key, items)) = self.held.take_due(Instant::now()) {
            tracing::debug!(
                runs = items.len(),
                "retrying a client key the collector rejected"
            );
            let pieces = batch::plan(
                items,
                AuthMode::Passthrough,
                self.forward.max_runs,
                self.forward.max_bytes,
            );
            self.deliver_pieces(pieces, stop).await?;
            self.held.end_retry(&key);
            self.update_held_gauges();
            self.ack_progress();
        }
        Ok(())
    }

    /// Parked runs reached `forward.auth_hold_max_bytes`: nothing more is read until a held
    /// key's retry (counted and logged once per pause).
    pub(super) fn pause_at_hold_bound(&mut self) {
        if self.held_bound_paused {
            return;
        }
        self.held_bound_paused = true;
        self.metrics.auth_hold_bound_pauses.inc();
        tracing::warn!(
            held_keys = self.held.len(),
            held_runs = self.held.runs(),
            held_bytes = self.held.bytes(),
            "runs of client keys the collector rejected fill forward.auth_hold_max_bytes; \
             no more runs are read (every key waits) until a held key is retried"
        );
    }
}
