//! Operations surface: readiness latches, the Prometheus registry, and the `/healthz`, `/readyz`
//! and `/metrics` handlers.

pub mod readiness;
