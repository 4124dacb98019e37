//! The state of the link to the collector, as pure policy: healthy, in an outage (retrying with
//! backoff), or held (no usable key, or the collector refused it). The forwarder feeds it what
//! happened to a request and it answers with the transition and what to do next; the forwarder
//! does the logging, the readiness latch, the gauges and the waiting (`link.rs`).
//!
//! Owns: the link's full-jitter backoff (`forward.retry_initial` doubling up to
//! `forward.retry_max`), the ongoing outage (since when, how many retries), the cause of a hold,
//! and the `forward.max_retries` limit of one request.
//!
//! Guarantees:
//! - A definitive answer ([`Link::answered`]: 2xx, 413, another 4xx) ends any outage and any hold
//!   and resets the backoff; it reports what it ended, so each recovery is told once.
//! - A retryable failure ([`Link::failed`]) of a request that has now failed more than
//!   `max_retries` times (0: no limit) is given up, touching neither the outage nor the backoff;
//!   otherwise it sleeps the next backoff, at least `Retry-After`, and begins the outage (the
//!   first failure) or counts one more retry of it.
//! - A hold ([`Link::hold`]) resets the backoff and is a new transition only for a new cause; a
//!   401/403 is an answer, so it ends the outage, while a missing or unsendable key does not.
//! - A client key refused in passthrough mode ([`Link::client_key_rejected`]) never holds the
//!   link (that key alone is held, see [`super::held`]); when the collector answered, it ends the
//!   outage and resets the backoff.
//!
//! Fails: never; no I/O and no clock (the caller passes `now`).

use std::time::{Duration, Instant};

use crate::sinks::common::retry::Backoff;

/// Why delivery is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HoldCause {
    /// No key configured at all.
    NoKey,
    /// The key cannot be carried in a header.
    InvalidKey,
    /// The collector answered 401 or 403.
    Rejected(u16),
}

/// An ongoing outage (retryable failures since the last answer).
#[derive(Debug)]
struct Outage {
    since: Instant,
    retries: u64,
}

/// An outage that a transition ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OutageEnded {
    /// How long it lasted.
    pub(super) lasted: Duration,
    /// Its retries.
    pub(super) retries: u64,
}

/// What a definitive answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Recovered {
    /// The outage, if there was one.
    pub(super) outage: Option<OutageEnded>,
    /// The hold, if there was one (readiness is to be set again).
    pub(super) hold: Option<HoldCause>,
}

/// Where a retryable failure leaves the outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutageStep {
    /// This failure began it.
    Began,
    /// It goes on, with this many retries so far.
    Continues {
        /// Retries of the outage, this one included.
        retries: u64,
    },
}

/// What to do after a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// The request failed more than `forward.max_retries` times: dead-letter it as `gave_up`.
    GiveUp,
    /// Sleep, then send the request again.
    After {
        /// How long to sleep.
        sleep: Duration,
        /// The outage.
        outage: OutageStep,
    },
}

/// The link to the collector. See the module doc.
#[derive(Debug)]
pub(super) struct Link {
    backoff: Backoff,
    outage: Option<Outage>,
    hold: Option<HoldCause>,
    max_retries: u32,
}

impl Link {
    /// Healthy; retries back off from `retry_initial` up to `retry_max`, a request is given up
    /// after `max_retries` retries (0: never).
    pub(super) fn new(retry_initial: Duration, retry_max: Duration, max_retries: u32) -> Self {
        Self {
            backoff: Backoff::new(retry_initial, retry_max),
            outage: None,
            hold: None,
            max_retries,
        }
    }

    /// The collector gave a definitive answer (not retryable, not 401/403): leaves any outage and
    /// any hold. An answer other than 401/403 means the key was accepted.
    pub(super) fn answered(&mut self, now: Instant) -> Recovered {
        self.backoff.reset();
        Recovered {
            outage: self.outage.take().map(|o| OutageEnded {
                lasted: now.saturating_duration_since(o.since),
                retries: o.retries,
            }),
            hold: self.hold.take(),
        }
    }

    /// A retryable failure of a request that has failed `request_retries` times so far, this one
    /// included.
    pub(super) fn failed(
        &mut self,
        request_retries: u32,
        retry_after: Option<Duration>,
        now: Instant,
    ) -> Retry {
        if self.max_retries > 0 && request_retries > self.max_retries {
            return Retry::GiveUp;
        }
        let sleep = self.backoff.next_sleep(retry_after);
        let outage = match &mut self.outage {
            Some(outage) => {
                outage.retries += 1;
                OutageStep::Continues {
                    retries: outage.retries,
                }
            }
            None => {
                self.outage = Some(Outage {
                    since: now,
                    retries: 1,
                });
                OutageStep::Began
            }
        };
        Retry::After { sleep, outage }
    }

    /// Enters (or stays in) the hold. True when this is a new cause (the hold began or changed):
    /// readiness is to be cleared and the cause told.
    pub(super) fn hold(&mut self, cause: HoldCause) -> bool {
        // A 401/403 is an answer: the collector is reachable.
        if !matches!(cause, HoldCause::NoKey | HoldCause::InvalidKey) {
            self.outage = None;
        }
        self.backoff.reset();
        if self.hold == Some(cause) {
            return false;
        }
        self.hold = Some(cause);
        true
    }

    /// The collector refused a client's key (passthrough mode; `answered`: it answered 401/403,
    /// rather than the key not fitting in a header). How long the outage it ended lasted, if any.
    pub(super) fn client_key_rejected(&mut self, answered: bool, now: Instant) -> Option<Duration> {
        if !answered {
            return None;
        }
        let ended = self
            .outage
            .take()
            .map(|o| now.saturating_duration_since(o.since));
        self.backoff.reset();
        ended
    }

    /// The cause of the hold, if delivery is held.
    #[cfg(test)]
    fn hold_cause(&self) -> Option<HoldCause> {
        self.hold
    }

    /// The retries of the ongoing outage, if there is one.
    #[cfg(test)]
    fn outage_retries(&self) -> Option<u64> {
        self.outage.as_ref().map(|o| o.retries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Ceilings 10, 20, 40, 40... ms.
    fn link(max_retries: u32) -> Link {
        Link::new(10 * MS, 40 * MS, max_retries)
    }

    fn sleep_of(retry: Retry) -> Duration {
        match retry {
            Retry::After { sleep, .. } => sleep,
            Retry::GiveUp => panic!("gave up"),
        }
    }

    fn outage_of(retry: Retry) -> OutageStep {
        match retry {
            Retry::After { outage, .. } => outage,
            Retry::GiveUp => panic!("gave up"),
        }
    }

    #[test]
    fn a_healthy_link_answered_ends_nothing() {
        let mut l = link(0);
        assert_eq!(
            l.answered(Instant::now()),
            Recovered {
                outage: None,
                hold: None
            }
        );
    }

    #[test]
    fn the_first_failure_begins_the_outage_the_next_count_its_retries_and_an_answer_ends_it() {
        let t0 = Instant::now();
        let mut l = link(0);
        assert_eq!(outage_of(l.failed(1, None, t0)), OutageStep::Began);
        assert_eq!(
            outage_of(l.failed(2, None, t0 + 10 * MS)),
            OutageStep::Continues { retries: 2 }
        );
        // A new request (its own count starts over) in the same outage.
        assert_eq!(
            outage_of(l.failed(1, None, t0 + 20 * MS)),
            OutageStep::Continues { retries: 3 }
        );
        assert_eq!(l.outage_retries(), Some(3));
        assert_eq!(
            l.answered(t0 + 500 * MS),
            Recovered {
                outage: Some(OutageEnded {
                    lasted: 500 * MS,
                    retries: 3
                }),
                hold: None
            },
            "the outage lasted since its first failure"
        );
        assert_eq!(l.outage_retries(), None);
        assert_eq!(
            outage_of(l.failed(1, None, t0 + 600 * MS)),
            OutageStep::Began,
            "a failure after the answer begins a new outage"
        );
    }

    #[test]
    fn sleeps_are_full_jitter_under_a_doubling_ceiling_that_an_answer_resets() {
        let now = Instant::now();
        let mut longest_third = Duration::ZERO;
        for _ in 0..64 {
            let mut l = link(0);
            let sleeps: Vec<Duration> = (1..=4).map(|n| sleep_of(l.failed(n, None, now))).collect();
            assert!(sleeps[0] <= 10 * MS, "{sleeps:?}");
            assert!(sleeps[1] <= 20 * MS, "{sleeps:?}");
            assert!(
                sleeps[2] <= 40 * MS && sleeps[3] <= 40 * MS,
                "capped: {sleeps:?}"
            );
            longest_third = longest_third.max(sleeps[2]);
            l.answered(now);
            let after = sleep_of(l.failed(1, None, now));
            assert!(after <= 10 * MS, "the ceiling starts over: {after:?}");
        }
        // 64 draws uniform in [0, 40 ms] all at most 10 ms: odds of 4^-64.
        assert!(
            longest_third > 10 * MS,
            "the ceiling grew: {longest_third:?}"
        );
    }

    #[test]
    fn retry_after_is_a_floor_on_the_sleep() {
        let mut l = link(0);
        assert_eq!(
            sleep_of(l.failed(1, Some(Duration::from_secs(2)), Instant::now())),
            Duration::from_secs(2)
        );
        let zero = sleep_of(l.failed(2, Some(Duration::ZERO), Instant::now()));
        assert!(zero <= 20 * MS, "a zero floor leaves the backoff: {zero:?}");
    }

    #[test]
    fn max_retries_gives_up_past_the_limit_and_leaves_the_outage_and_the_backoff_alone() {
        let now = Instant::now();
        for _ in 0..64 {
            // Ceilings 10, 20, 40, 80... ms.
            let mut l = Link::new(10 * MS, 1000 * MS, 2);
            assert_eq!(outage_of(l.failed(1, None, now)), OutageStep::Began);
            assert_eq!(
                outage_of(l.failed(2, None, now)),
                OutageStep::Continues { retries: 2 }
            );
            assert_eq!(l.failed(3, None, now), Retry::GiveUp);
            assert_eq!(l.failed(u32::MAX, None, now), Retry::GiveUp);
            assert_eq!(l.outage_retries(), Some(2), "giving up is not a retry");
            // The next request (its own count) meets the same outage, the backoff at its third
            // ceiling (had giving up advanced it, the fifth: 160 ms).
            match l.failed(1, None, now) {
                Retry::After { sleep, outage } => {
                    assert_eq!(outage, OutageStep::Continues { retries: 3 });
                    assert!(sleep <= 40 * MS, "{sleep:?}");
                }
                Retry::GiveUp => panic!("a new request has its own count"),
            }
        }
    }

    #[test]
    fn max_retries_zero_never_gives_up() {
        let mut l = link(0);
        for n in [1, 2, 1000, u32::MAX] {
            assert!(matches!(
                l.failed(n, None, Instant::now()),
                Retry::After { .. }
            ));
        }
    }

    #[test]
    fn a_rejected_key_holds_once_per_cause_ends_the_outage_and_an_answer_lifts_it() {
        let now = Instant::now();
        let mut l = link(0);
        l.failed(1, None, now);
        assert!(l.hold(HoldCause::Rejected(401)), "the hold begins");
        assert_eq!(l.hold_cause(), Some(HoldCause::Rejected(401)));
        assert_eq!(
            l.outage_retries(),
            None,
            "a 401 is an answer: the collector is reachable"
        );
        assert!(
            !l.hold(HoldCause::Rejected(401)),
            "same cause: no transition"
        );
        assert!(l.hold(HoldCause::Rejected(403)), "a new cause is told");
        assert_eq!(
            l.answered(now),
            Recovered {
                outage: None,
                hold: Some(HoldCause::Rejected(403))
            }
        );
        assert_eq!(l.hold_cause(), None);
        assert!(
            l.hold(HoldCause::Rejected(403)),
            "held again after the lift"
        );
    }

    #[test]
    fn a_missing_or_unsendable_key_holds_without_ending_the_outage() {
        let t0 = Instant::now();
        let mut l = link(0);
        l.failed(1, None, t0);
        assert!(l.hold(HoldCause::NoKey));
        assert!(!l.hold(HoldCause::NoKey));
        assert!(l.hold(HoldCause::InvalidKey));
        assert_eq!(l.outage_retries(), Some(1), "no answer came: still out");
        assert_eq!(
            l.answered(t0 + 100 * MS),
            Recovered {
                outage: Some(OutageEnded {
                    lasted: 100 * MS,
                    retries: 1
                }),
                hold: Some(HoldCause::InvalidKey)
            },
            "one answer ends both"
        );
    }

    #[test]
    fn a_failure_while_held_begins_an_outage_beside_the_hold() {
        let t0 = Instant::now();
        let mut l = link(0);
        assert!(l.hold(HoldCause::Rejected(401)));
        assert_eq!(outage_of(l.failed(1, None, t0)), OutageStep::Began);
        assert_eq!(l.hold_cause(), Some(HoldCause::Rejected(401)));
        let r = l.answered(t0 + 30 * MS);
        assert_eq!(r.hold, Some(HoldCause::Rejected(401)));
        assert_eq!(
            r.outage,
            Some(OutageEnded {
                lasted: 30 * MS,
                retries: 1
            })
        );
    }

    #[test]
    fn a_hold_resets_the_backoff() {
        let now = Instant::now();
        for cause in [
            HoldCause::NoKey,
            HoldCause::InvalidKey,
            HoldCause::Rejected(401),
        ] {
            for _ in 0..64 {
                let mut l = link(0);
                for n in 1..=3 {
                    l.failed(n, None, now);
                }
                l.hold(cause);
                let next = sleep_of(l.failed(1, None, now));
                assert!(next <= 10 * MS, "{cause:?}: {next:?}");
            }
        }
    }

    #[test]
    fn a_rejected_client_key_ends_the_outage_only_when_the_collector_answered_and_never_holds_the_link()
     {
        let t0 = Instant::now();
        let mut l = link(0);
        l.failed(1, None, t0);
        assert_eq!(l.client_key_rejected(false, t0 + 5 * MS), None);
        assert_eq!(
            l.outage_retries(),
            Some(1),
            "an unsendable client key is no answer"
        );
        assert_eq!(l.client_key_rejected(true, t0 + 50 * MS), Some(50 * MS));
        assert_eq!(l.outage_retries(), None);
        assert_eq!(
            l.client_key_rejected(true, t0 + 60 * MS),
            None,
            "nothing left to end"
        );
        assert_eq!(l.hold_cause(), None, "the link itself is not held");
        assert_eq!(
            l.answered(t0),
            Recovered {
                outage: None,
                hold: None
            }
        );
    }

    #[test]
    fn a_rejected_client_key_resets_the_backoff_only_when_answered() {
        let now = Instant::now();
        let mut reset_without_answer = true;
        for _ in 0..64 {
            let mut answered = link(0);
            let mut unsendable = link(0);
            for n in 1..=3 {
                answered.failed(n, None, now);
                unsendable.failed(n, None, now);
            }
            answered.client_key_rejected(true, now);
            unsendable.client_key_rejected(false, now);
            assert!(sleep_of(answered.failed(1, None, now)) <= 10 * MS);
            if sleep_of(unsendable.failed(1, None, now)) > 10 * MS {
                reset_without_answer = false;
            }
        }
        assert!(
            !reset_without_answer,
            "an unsendable key leaves the backoff where it was (odds of a false alarm: 4^-64)"
        );
    }
}
