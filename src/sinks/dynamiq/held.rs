//! Client keys on hold (`auth_mode = "passthrough"`): the keys the collector answered 401/403,
//! each with its parked runs and its retry schedule.
//!
//! Owns: which client keys are held, their runs waiting in memory (buffer order per key), and
//! when each is retried next (full-jitter backoff from `forward.retry_initial` doubling up to
//! `forward.auth_hold_retry`, one schedule per key).
//!
//! Guarantees: a key's runs leave in the order they were parked; while a key is held and not
//! being retried, [`HeldKeys::parks`] says its runs must be parked (so a newer run of the key
//! never overtakes an older parked one); a retry ([`HeldKeys::take_due`]) hands over every parked
//! run of the key at once and ends with [`HeldKeys::hold`] (rejected again: re-parked by the
//! caller, next retry later) or [`HeldKeys::release`] (accepted: the key is forgotten).
//! [`HeldKeys::bytes`] and [`HeldKeys::runs`] count what is parked, for the forwarder's bound.
//! The keys are never logged or shown (`Debug` prints only counts).
//!
//! Fails: never; this is bookkeeping without I/O.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::batch::Item;
use crate::sinks::common::retry::Backoff;

/// One held client key.
struct HeldKey {
    /// Parked runs, in buffer order.
    items: VecDeque<Item>,
    /// Run bytes of `items`.
    bytes: u64,
    /// When the key was first rejected.
    since: Instant,
    /// When it is retried next.
    retry_at: Instant,
    backoff: Backoff,
    /// Its runs were handed over for a retry that has not ended yet.
    retrying: bool,
}

/// The held client keys. See the module doc.
pub struct HeldKeys {
    keys: HashMap<String, HeldKey>,
    bytes: u64,
    runs: usize,
    retry_initial: Duration,
    retry_max: Duration,
}

impl std::fmt::Debug for HeldKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldKeys")
            .field("keys", &self.keys.len())
            .field("runs", &self.runs)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl HeldKeys {
    /// No key held; retries back off from `retry_initial` up to `retry_max`.
    pub fn new(retry_initial: Duration, retry_max: Duration) -> Self {
        Self {
            keys: HashMap::new(),
            bytes: 0,
            runs: 0,
            retry_initial,
            retry_max: retry_max.max(retry_initial),
        }
    }

    /// Whether runs of `key` must be parked: it is held and not being retried right now.
    pub fn parks(&self, key: &str) -> bool {
        self.keys.get(key).is_some_and(|k| !k.retrying)
    }

    /// Whether `key` is held (being retried or not).
    pub fn is_held(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// The collector rejected `key` (401/403): holds it and schedules its next retry after a
    /// backoff; a retry in progress ends. True when the key was not held before.
    pub fn hold(&mut self, key: &str, now: Instant) -> bool {
        let (initial, max) = (self.retry_initial, self.retry_max);
        let mut new = false;
        let held = self.keys.entry(key.to_owned()).or_insert_with(|| {
            new = true;
            HeldKey {
                items: VecDeque::new(),
                bytes: 0,
                since: now,
                retry_at: now,
                backoff: Backoff::new(initial, max),
                retrying: false,
            }
        });
        held.retrying = false;
        // At least half the first ceiling: a draw near zero would retry at once.
        held.retry_at = now + held.backoff.next_sleep(None).max(initial / 2);
        new
    }

    /// Parks runs of a held key after the ones already parked (a key not held is held first).
    pub fn park(&mut self, key: &str, items: impl IntoIterator<Item = Item>, now: Instant) {
        if !self.keys.contains_key(key) {
            self.hold(key, now);
        }
        let Some(held) = self.keys.get_mut(key) else {
            return;
        };
        for item in items {
            let len = item.run.len() as u64;
            held.bytes += len;
            self.bytes += len;
            self.runs += 1;
            held.items.push_back(item);
        }
    }

    /// The collector accepted `key`: forgets it. How long it was held, if it was.
    pub fn release(&mut self, key: &str) -> Option<Duration> {
        let held = self.keys.remove(key)?;
        self.bytes -= held.bytes;
        self.runs -= held.items.len();
        Some(held.since.elapsed())
    }

    /// A key whose retry time has come, with every run parked for it (taken out, in order); the
    /// key stays held and is marked as being retried until [`hold`](Self::hold),
    /// [`release`](Self::release) or [`end_retry`](Self::end_retry).
    pub fn take_due(&mut self, now: Instant) -> Option<(String, Vec<Item>)> {
        let (key, held) = self
            .keys
            .iter_mut()
            .filter(|(_, k)| !k.retrying && k.retry_at <= now)
            .min_by_key(|(_, k)| k.retry_at)?;
        held.retrying = true;
        let items: Vec<Item> = held.items.drain(..).collect();
        self.bytes -= held.bytes;
        self.runs -= items.len();
        held.bytes = 0;
        Some((key.clone(), items))
    }

    /// A retry that neither re-held nor released the key (nothing of it was sent, e.g. its runs
    /// were all dead-lettered as too large): nothing is left to hold, so the key is forgotten.
    pub fn end_retry(&mut self, key: &str) {
        if self
            .keys
            .get(key)
            .is_some_and(|k| k.retrying && k.items.is_empty())
        {
            self.keys.remove(key);
        }
    }

    /// When the next held key is due for a retry.
    pub fn next_retry(&self) -> Option<Instant> {
        self.keys
            .values()
            .filter(|k| !k.retrying)
            .map(|k| k.retry_at)
            .min()
    }

    /// Held keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parked runs.
    pub fn runs(&self) -> usize {
        self.runs
    }

    /// Run bytes parked.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn item(seq: u64, key: &str) -> Item {
        Item {
            seq,
            client_key: Some(key.to_owned()),
            run: Bytes::from(format!(r#"{{"id":"{seq}"}}"#)),
            fingerprint: 0,
        }
    }

    fn seqs(items: &[Item]) -> Vec<u64> {
        items.iter().map(|i| i.seq).collect()
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_held_key_parks_its_runs_in_order_and_others_are_not_held() {
        let now = Instant::now();
        let mut h = HeldKeys::new(100 * MS, 1000 * MS);
        assert!(h.hold("a", now));
        h.park("a", [item(1, "a"), item(3, "a")], now);
        h.park("a", [item(5, "a")], now);
        assert!(h.parks("a") && !h.parks("b") && !h.is_held("b"));
        assert_eq!((h.len(), h.runs()), (1, 3));
        assert_eq!(h.bytes(), 3 * 10);
        assert!(h.take_due(now).is_none(), "not due before its backoff");
        let due = h.next_retry().unwrap();
        assert!(
            due >= now + 50 * MS && due <= now + 100 * MS,
            "{:?}",
            due - now
        );
        let (key, items) = h.take_due(due).unwrap();
        assert_eq!((key.as_str(), seqs(&items)), ("a", vec![1, 3, 5]));
        assert!(
            !h.parks("a") && h.is_held("a"),
            "being retried: runs are sent"
        );
        assert_eq!((h.runs(), h.bytes()), (0, 0));
        assert!(h.next_retry().is_none());
    }

    #[test]
    fn rejected_again_the_key_is_re_parked_and_retried_later_with_a_growing_backoff() {
        let start = Instant::now();
        let mut h = HeldKeys::new(100 * MS, 10_000 * MS);
        h.park("a", [item(1, "a")], start);
        let mut now = start;
        let mut ceilings_seen = Vec::new();
        for _ in 0..6 {
            now = h.next_retry().unwrap();
            let (_, items) = h.take_due(now).unwrap();
            assert!(!h.hold("a", now));
            h.park("a", items, now);
            ceilings_seen.push(h.next_retry().unwrap() - now);
        }
        assert!(h.parks("a"));
        assert_eq!(h.runs(), 1);
        // Full jitter below a doubling ceiling: the last waits may be long, never above the cap.
        assert!(ceilings_seen.iter().all(|d| *d <= 10_000 * MS));
        assert!(now - start >= 6 * 50 * MS);
    }

    #[test]
    fn release_forgets_the_key_and_its_counts() {
        let now = Instant::now();
        let mut h = HeldKeys::new(MS, MS);
        h.park("a", [item(1, "a")], now);
        h.park("b", [item(2, "b"), item(4, "b")], now);
        assert!(h.release("a").is_some());
        assert!(h.release("a").is_none());
        assert_eq!((h.len(), h.runs()), (1, 2));
        let (key, items) = h.take_due(now + 10 * MS).unwrap();
        assert_eq!((key.as_str(), seqs(&items)), ("b", vec![2, 4]));
        h.release("b");
        assert!(h.is_empty() && h.bytes() == 0 && h.runs() == 0);
    }

    #[test]
    fn a_retry_that_sent_nothing_forgets_the_key() {
        let now = Instant::now();
        let mut h = HeldKeys::new(MS, MS);
        h.park("a", [item(1, "a")], now);
        let (_, _items) = h.take_due(now + 10 * MS).unwrap();
        h.end_retry("a");
        assert!(h.is_empty());
    }

    #[test]
    fn the_debug_output_never_shows_a_key() {
        let mut h = HeldKeys::new(MS, MS);
        h.park(
            "sk-client-secret",
            [item(1, "sk-client-secret")],
            Instant::now(),
        );
        assert!(!format!("{h:?}").contains("sk-client-secret"));
    }
}
