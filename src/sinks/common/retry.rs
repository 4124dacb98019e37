//! Retry timing: exponential backoff with full jitter, and `Retry-After` parsing.
//!
//! Owns: how long the forwarder sleeps before retrying a request.
//!
//! Guarantees: the ceiling sequence starts at `retry_initial`, doubles, and stays at `retry_max`
//! (produced by `backon`'s `ExponentialBuilder`, which never runs out here); each sleep is drawn
//! uniformly in `[0, ceiling]` ("full jitter"), then raised to the `Retry-After` floor if the
//! collector sent one. `Retry-After` values are capped at [`MAX_RETRY_AFTER`] so a hostile or
//! buggy header cannot park delivery for days.
//!
//! Fails: never; an unparseable `Retry-After` is ignored (the plain backoff applies).

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use http::HeaderValue;

/// Largest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Backoff state for the link to the collector. Reset after a success.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    ceilings: ExponentialBackoff,
    max: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Ceilings from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        // backon's own `with_jitter` adds a random (0, current) on top of the ceiling, which is
        // not full jitter; we only take the ceiling sequence from it and draw the sleep ourselves.
        let builder = ExponentialBuilder::new()
            .with_min_delay(initial)
            .with_max_delay(max.max(initial))
            .with_factor(2.0)
            .without_max_times();
        Self {
            builder,
            ceilings: builder.build(),
            max: max.max(initial),
            rng: fastrand::Rng::new(),
        }
    }

    /// Same, with a seeded random generator (tests).
    #[cfg(test)]
    fn with_seed(initial: Duration, max: Duration, seed: u64) -> Self {
        let mut b = Self::new(initial, max);
        b.rng = fastrand::Rng::with_seed(seed);
        b
    }

    /// The next ceiling (advances the sequence).
    pub fn next_ceiling(&mut self) -> Duration {
        // `without_max_times` makes the iterator endless; fall back to the cap regardless.
        self.ceilings.next().unwrap_or(self.max).min(self.max)
    }

    /// The next sleep: uniform in `[0, ceiling]` (full jitter), at least `floor`.
    pub fn next_sleep(&mut self, floor: Option<Duration>) -> Duration {
        let ceiling = self.next_ceiling();
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let drawn = Duration::from_nanos(self.rng.u64(0..=nanos));
        match floor {
            Some(f) => drawn.max(f),
            None => drawn,
        }
    }

    /// Back to the first ceiling (after a success).
    pub fn reset(&mut self) {
        self.ceilings = self.builder.build();
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP-date (relative to `now`). A date in the
/// past is zero; values above [`MAX_RETRY_AFTER`] are capped; garbage and negatives are `None`.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only: delta-seconds (arbitrarily long digit strings saturate to the cap).
        let secs = text.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn retry_after_accepts_delta_seconds() {
        let now = SystemTime::now();
        assert_eq!(
            parse_retry_after(&hv("2"), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(parse_retry_after(&hv(" 0 "), now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(&hv("120"), now),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn retry_after_accepts_an_http_date_relative_to_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&hv(&later), now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&hv(&earlier), now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_ignores_garbage_and_negative_values() {
        let now = SystemTime::now();
        for bad in ["", "soon", "-5", "1.5", "2s", "Mon, 99 Foo 2020"] {
            assert_eq!(parse_retry_after(&hv(bad), now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_caps_huge_values() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(&hv("86400"), now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after(&hv("99999999999999999999999999"), now),
            Some(MAX_RETRY_AFTER)
        );
        let far = httpdate::fmt_http_date(now + Duration::from_secs(10 * 86400));
        assert_eq!(parse_retry_after(&hv(&far), now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn the_ceiling_starts_at_initial_doubles_and_stays_at_max() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let got: Vec<u64> = (0..10).map(|_| b.next_ceiling().as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        b.reset();
        assert_eq!(b.next_ceiling(), Duration::from_secs(1));
        // Never runs out.
        for _ in 0..1000 {
            b.next_ceiling();
        }
        assert_eq!(b.next_ceiling(), Duration::from_secs(60));
    }

    #[test]
    fn full_jitter_draws_between_zero_and_the_ceiling() {
        let mut b = Backoff::with_seed(Duration::from_millis(100), Duration::from_millis(800), 7);
        let mut below_half = 0;
        for round in 0..2000 {
            if round % 5 == 0 {
                b.reset();
            }
            let mut probe = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
            for _ in 0..(round % 5) {
                probe.next_ceiling();
            }
            let ceiling = probe.next_ceiling();
            let s = b.next_sleep(None);
            assert!(s <= ceiling, "{s:?} > {ceiling:?}");
            if s < ceiling / 2 {
                below_half += 1;
            }
        }
        // Uniform in [0, ceiling]: about half the draws fall below ceiling/2 (not "ceiling + x").
        assert!((800..1200).contains(&below_half), "{below_half}");
    }

    #[test]
    fn retry_after_is_a_floor_on_the_sleep() {
        let mut b = Backoff::with_seed(Duration::from_millis(10), Duration::from_millis(20), 1);
        for _ in 0..100 {
            assert!(b.next_sleep(Some(Duration::from_secs(2))) >= Duration::from_secs(2));
        }
        let mut b = Backoff::with_seed(Duration::from_secs(10), Duration::from_secs(10), 1);
        let s: Vec<Duration> = (0..100)
            .map(|_| b.next_sleep(Some(Duration::from_secs(1))))
            .collect();
        assert!(
            s.iter()
                .all(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(10))
        );
        assert!(
            s.iter().any(|d| *d > Duration::from_secs(1)),
            "the floor does not replace the draw"
        );
    }
}
