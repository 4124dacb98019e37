//! Whose key a run is delivered with: the sidecar's own, or the one its client sent (stored with
//! the run in its envelope). Receivers read it to decide what to store, the Dynamiq sink to
//! decide which key to send.

use serde::{Deserialize, Serialize};

/// How the sidecar authenticates toward the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Use the sidecar's own key; the client's `Authorization` is ignored (default).
    SidecarKey,
    /// Forward the key each client sent (stored with its runs, in 0600 files).
    Passthrough,
}
