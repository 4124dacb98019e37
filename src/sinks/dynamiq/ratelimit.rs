//! Rate limits toward the collector: requests per second and runs per second (GCRA, `governor`).
//!
//! Owns: the two limiters built from `[forward]` (`0` = unlimited).
//!
//! Guarantees: [`RateLimits::acquire`] returns only once both limits allow one more request of
//! `n` runs, and reports how long it waited (for the wait metric). A request of more runs than the
//! runs burst waits for the whole burst instead of failing (config validation keeps
//! `runs_burst >= max_runs`, so this is only a safety net).
//!
//! Fails: never; a bad quota (zero burst) is treated as unlimited for that dimension, with a
//! [`RateLimitError`] available for callers that want to reject it.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::sinks::dynamiq::config::ForwardConfig;

/// A rate-limit setting that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimitError {
    /// A positive rate with a zero burst.
    #[error("{key} must be greater than 0 when the rate is limited")]
    ZeroBurst {
        /// Config key.
        key: &'static str,
    },
}

/// The two limiters; `None` is unlimited.
#[derive(Debug)]
pub struct RateLimits {
    requests: Option<DefaultDirectRateLimiter>,
    runs: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
}

fn quota(
    rate: u32,
    burst: u32,
    key: &'static str,
) -> Result<Option<(Quota, NonZeroU32)>, RateLimitError> {
    let Some(rate) = NonZeroU32::new(rate) else {
        return Ok(None);
    };
    let burst = NonZeroU32::new(burst).ok_or(RateLimitError::ZeroBurst { key })?;
    Ok(Some((Quota::per_second(rate).allow_burst(burst), burst)))
}

impl RateLimits {
    /// Limiters from `[forward]`; an unusable burst is an error naming its key.
    pub fn try_new(forward: &ForwardConfig) -> Result<Self, RateLimitError> {
        let requests = quota(
            forward.requests_per_second,
            forward.requests_burst,
            "forward.requests_burst",
        )?
        .map(|(q, _)| RateLimiter::direct(q));
        let runs = quota(
            forward.runs_per_second,
            forward.runs_burst,
            "forward.runs_burst",
        )?
        .map(|(q, burst)| (RateLimiter::direct(q), burst));
        Ok(Self { requests, runs })
    }

    /// Like [`try_new`](Self::try_new), treating an unusable dimension as unlimited.
    pub fn new(forward: &ForwardConfig) -> Self {
        let requests = quota(
            forward.requests_per_second,
            forward.requests_burst,
            "forward.requests_burst",
        )
        .ok()
        .flatten()
        .map(|(q, _)| RateLimiter::direct(q));
        let runs = quota(
            forward.runs_per_second,
            forward.runs_burst,
            "forward.runs_burst",
        )
        .ok()
        .flatten()
        .map(|(q, burst)| (RateLimiter::direct(q), burst));
        Self { requests, runs }
    }

    /// Waits until one request of `runs` runs is allowed; returns the time spent waiting.
    pub async fn acquire(&self, runs: usize) -> Duration {
        let start = Instant::now();
        if let Some((limiter, burst)) = &self.runs {
            let n = u32::try_from(runs)
                .unwrap_or(u32::MAX)
                .clamp(1, burst.get());
            let n = NonZeroU32::new(n).unwrap_or(*burst);
            // `n <= burst`, so the capacity error cannot happen.
            let _ = limiter.until_n_ready(n).await;
        }
        if let Some(limiter) = &self.requests {
            limiter.until_ready().await;
        }
        start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rps: u32, rburst: u32, runs: u32, runs_burst: u32) -> ForwardConfig {
        ForwardConfig {
            requests_per_second: rps,
            requests_burst: rburst,
            runs_per_second: runs,
            runs_burst,
            ..ForwardConfig::default()
        }
    }

    #[tokio::test]
    async fn zero_rates_are_unlimited() {
        let l = RateLimits::new(&cfg(0, 0, 0, 0));
        for _ in 0..1000 {
            assert!(l.acquire(500).await < Duration::from_millis(50));
        }
    }

    #[tokio::test]
    async fn requests_beyond_the_burst_wait_for_the_rate() {
        let l = RateLimits::new(&cfg(20, 2, 0, 0));
        let mut waited = Duration::ZERO;
        for _ in 0..4 {
            waited += l.acquire(1).await;
        }
        // Two in the burst, then two more at 50 ms each.
        assert!(waited >= Duration::from_millis(80), "{waited:?}");
        assert!(waited < Duration::from_millis(500), "{waited:?}");
    }

    #[tokio::test]
    async fn runs_are_taken_as_n_cells() {
        let l = RateLimits::new(&cfg(0, 0, 100, 10));
        assert!(l.acquire(10).await < Duration::from_millis(20));
        // The bucket is empty: 5 more runs need 50 ms.
        let w = l.acquire(5).await;
        assert!(w >= Duration::from_millis(40), "{w:?}");
        // More than the burst does not fail, it waits for the whole burst.
        let w = l.acquire(1000).await;
        assert!(w >= Duration::from_millis(50), "{w:?}");
    }

    #[test]
    fn a_zero_burst_with_a_rate_is_an_error_naming_the_key() {
        assert_eq!(
            RateLimits::try_new(&cfg(10, 0, 0, 0)).unwrap_err(),
            RateLimitError::ZeroBurst {
                key: "forward.requests_burst"
            }
        );
        assert!(RateLimits::try_new(&cfg(10, 1, 10, 10)).is_ok());
    }
}
