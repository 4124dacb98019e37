//! What the forwarder tells others about the runs it resolves (the query index listens, to
//! show each trace's delivery state). The forwarder defines the interface; listeners above it
//! implement it, so the delivery path depends on nothing that observes it.

/// What became of runs the forwarder resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Accepted by the collector (2xx), or an identical copy was.
    Delivered,
    /// Moved to the dead-letter store.
    DeadLettered,
}

/// Told, by buffer sequence number, which runs were resolved (see
/// [`super::Forwarder::with_delivery_observer`]). Called on the forwarder's task: it must be
/// quick and must not block.
pub trait DeliveryObserver: Send + Sync {
    /// The runs stored under these buffer sequence numbers reached `outcome`.
    fn runs_resolved(&self, outcome: RunOutcome, seqs: &mut dyn Iterator<Item = u64>);
}
