//! Acknowledgement bookkeeping: which runs read from the buffer are still outstanding, and so how
//! far the buffer may be acknowledged.
//!
//! Owns: the sequence numbers read and not yet resolved (delivered, suppressed or dead-lettered;
//! parked runs of held keys stay outstanding), the highest sequence number read, and the last
//! acknowledgement the buffer took.
//!
//! Guarantees: the ack point ([`Acks::due`]) is the record before the first outstanding run, or
//! the last record read when none is outstanding: it never reaches a run that is not resolved, so
//! a run is acknowledged only after its outcome. It is offered only when it is beyond the last
//! acknowledgement taken ([`Acks::acked`]), so the buffer sees increasing points, each once; a
//! point the buffer failed to take is offered again.
//!
//! Fails: never; this is bookkeeping without I/O (the forwarder acknowledges the buffer).

use std::collections::BTreeSet;

/// The acknowledgement state of one forwarder. See the module doc.
#[derive(Debug, Default)]
pub(super) struct Acks {
    /// Read and not yet resolved: the acknowledgement never reaches the first of them.
    outstanding: BTreeSet<u64>,
    /// The highest sequence number read so far (0: none).
    read_through: u64,
    /// The last acknowledgement the buffer took.
    last_acked: Option<u64>,
}

impl Acks {
    /// Nothing read yet.
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// A batch was read up to `last_seq` (`None`: empty); `runs` of it are to be resolved (its
    /// other records, undecodable or suppressed, are resolved as they are).
    pub(super) fn read(&mut self, last_seq: Option<u64>, runs: impl IntoIterator<Item = u64>) {
        if let Some(last) = last_seq {
            self.read_through = self.read_through.max(last);
        }
        self.outstanding.extend(runs);
    }

    /// These runs reached their outcome: they no longer hold the acknowledgement back.
    pub(super) fn resolve(&mut self, runs: impl IntoIterator<Item = u64>) {
        for seq in runs {
            self.outstanding.remove(&seq);
        }
    }

    /// The point to acknowledge through, if it is beyond the last acknowledgement: the record
    /// before the first outstanding run (the last record read when none is outstanding).
    pub(super) fn due(&self) -> Option<u64> {
        let through = match self.outstanding.first() {
            Some(&first) => first.saturating_sub(1).min(self.read_through),
            None => self.read_through,
        };
        if through == 0 || self.last_acked.is_some_and(|a| a >= through) {
            return None;
        }
        Some(through)
    }

    /// The buffer took the acknowledgement through `through`.
    pub(super) fn acked(&mut self, through: u64) {
        self.last_acked = Some(through);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_read_is_nothing_to_acknowledge() {
        let mut a = Acks::new();
        assert_eq!(a.due(), None);
        a.read(None, []);
        assert_eq!(a.due(), None, "an empty read");
    }

    #[test]
    fn the_ack_point_stops_before_the_first_outstanding_run() {
        let mut a = Acks::new();
        a.read(Some(5), [1, 2, 3, 4, 5]);
        assert_eq!(a.due(), None, "the first record read is outstanding");
        a.resolve([2, 3]);
        assert_eq!(
            a.due(),
            None,
            "resolved out of order: 1 still holds it back"
        );
        a.resolve([1]);
        assert_eq!(a.due(), Some(3));
        a.acked(3);
        a.resolve([5]);
        assert_eq!(a.due(), None, "4 is outstanding");
        a.resolve([4]);
        assert_eq!(a.due(), Some(5));
    }

    #[test]
    fn records_that_are_not_runs_are_acknowledged_through_at_once() {
        // Records 1 and 2 undecodable or suppressed, 3 and 4 runs to send.
        let mut a = Acks::new();
        a.read(Some(4), [3, 4]);
        assert_eq!(a.due(), Some(2));
        // A batch of nothing but such records: acknowledged through its end.
        let mut b = Acks::new();
        b.read(Some(7), []);
        assert_eq!(b.due(), Some(7));
    }

    #[test]
    fn a_point_is_offered_once_and_again_only_if_the_buffer_did_not_take_it() {
        let mut a = Acks::new();
        a.read(Some(2), [1, 2]);
        a.resolve([1, 2]);
        assert_eq!(a.due(), Some(2));
        assert_eq!(a.due(), Some(2), "not taken: offered again");
        a.acked(2);
        assert_eq!(a.due(), None, "taken: not offered twice");
        a.read(Some(4), [3, 4]);
        assert_eq!(a.due(), None, "the new runs are outstanding");
        a.resolve([3]);
        assert_eq!(a.due(), Some(3));
    }

    #[test]
    fn a_parked_run_holds_the_acknowledgement_back_while_later_batches_are_resolved() {
        let mut a = Acks::new();
        a.read(Some(3), [1, 2, 3]);
        a.resolve([1, 3]); // 2 is parked with its held key
        assert_eq!(a.due(), Some(1));
        a.acked(1);
        a.read(Some(10), 4..=10);
        a.resolve(4..=10);
        assert_eq!(a.due(), None, "nothing passes the parked run");
        a.resolve([2]);
        assert_eq!(a.due(), Some(10), "released: through the last record read");
    }

    #[test]
    fn the_ack_point_never_moves_backwards() {
        let mut a = Acks::new();
        a.read(Some(3), []);
        a.acked(3);
        // An outstanding run below the last acknowledgement (the forwarder never makes one) does
        // not pull the point back.
        a.read(Some(3), [2]);
        assert_eq!(a.due(), None);
        a.resolve([2]);
        assert_eq!(a.due(), None);
    }
}
