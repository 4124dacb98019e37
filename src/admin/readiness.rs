//! Readiness as a set of latches that must all be clear (linkerd2-proxy style): `/readyz` is 200
//! only when every latch is ready. Each stage owns its latch and flips it on state changes; the
//! HTTP handler only reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One reason the sidecar may be unready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latch {
    /// The buffer accepts writes (not full under `block`, disk not failing).
    BufferWritable,
    /// The collector accepts our key (false while 401/403 holds delivery).
    UpstreamAuthorized,
}

impl Latch {
    /// Every latch, in report order.
    pub const ALL: [Latch; 2] = [Latch::BufferWritable, Latch::UpstreamAuthorized];

    /// Name used in the `/readyz` body.
    pub fn name(self) -> &'static str {
        match self {
            Latch::BufferWritable => "buffer_writable",
            Latch::UpstreamAuthorized => "upstream_authorized",
        }
    }
}

/// Shared readiness state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Readiness {
    latches: Arc<[AtomicBool; 2]>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            latches: Arc::new([AtomicBool::new(true), AtomicBool::new(true)]),
        }
    }
}

impl Readiness {
    /// Sets one latch; returns the previous value (so callers can log only on change).
    pub fn set(&self, latch: Latch, ready: bool) -> bool {
        self.latches[latch as usize].swap(ready, Ordering::AcqRel)
    }

    /// Whether one latch is ready.
    pub fn is_set(&self, latch: Latch) -> bool {
        self.latches[latch as usize].load(Ordering::Acquire)
    }

    /// Whether all latches are ready.
    pub fn is_ready(&self) -> bool {
        Latch::ALL.iter().all(|l| self.is_set(*l))
    }

    /// The latches that are not ready.
    pub fn failing(&self) -> Vec<Latch> {
        Latch::ALL
            .into_iter()
            .filter(|l| !self.is_set(*l))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_latch_is_clear() {
        let r = Readiness::default();
        assert!(r.is_ready());
        assert!(r.set(Latch::UpstreamAuthorized, false));
        assert!(!r.is_ready());
        assert_eq!(r.failing(), vec![Latch::UpstreamAuthorized]);
        assert!(!r.set(Latch::UpstreamAuthorized, true));
        assert!(r.is_ready());
    }
}
