//! One memory budget for the requests in flight, across HTTP/1, HTTP/2 streams and gRPC
//! (`ingest.max_inflight_bytes`): what a request holds is charged to it before it is
//! allocated — its body as it arrives, its decompressed bytes as they are inflated, and the
//! estimate of what decoding and converting it will build (see [`super::decoded_size`]) — and
//! given back when the request is answered.
//!
//! Guarantees: the bytes charged to all requests together never exceed the budget; a request
//! that does not fit right now is refused with 503 + `Retry-After` (gRPC `UNAVAILABLE`) and one
//! that could never fit with 413 (`RESOURCE_EXHAUSTED`), both with a message naming the key and
//! counted in `dynamiq_sidecar_ingest_budget_refusals_total{reason}`; nothing of a refused
//! request is stored, nothing of any other request is affected. The charged bytes are the
//! gauge `dynamiq_sidecar_ingest_inflight_bytes`.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// The budget is kept in units of this many bytes (a semaphore counts at most `u32::MAX`
/// permits per acquisition).
const UNIT: u64 = 1024;
/// Seconds a client is told to wait before retrying a request refused for a full budget.
const RETRY_AFTER_SECS: u64 = 1;

/// Label set of `dynamiq_sidecar_ingest_budget_refusals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    /// `busy` (503) or `too_large` (413).
    reason: &'static str,
}

/// The shared budget.
#[derive(Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_bytes: u64,
    in_flight: Gauge,
    refusals: Family<RefusalLabels, Counter>,
}

impl MemoryBudget {
    /// A budget of `total_bytes`, with its metrics registered.
    pub fn new(total_bytes: u64, registry: &mut Registry) -> Self {
        let budget = Self::unregistered(total_bytes);
        registry.register(
            "dynamiq_sidecar_ingest_inflight_bytes",
            "Bytes charged to requests in flight (bodies, decompressed bytes, decoding estimates)",
            budget.in_flight.clone(),
        );
        registry.register(
            "dynamiq_sidecar_ingest_budget_refusals",
            "Requests refused because ingest.max_inflight_bytes was in use (busy, 503) or could never hold them (too_large, 413)",
            budget.refusals.clone(),
        );
        budget
    }

    /// A budget without metrics in a registry (tests).
    pub fn unregistered(total_bytes: u64) -> Self {
        let units = usize::try_from(total_bytes.div_ceil(UNIT))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(units)),
            total_bytes,
            in_flight: Gauge::default(),
            refusals: Family::default(),
        }
    }

    /// An empty reservation for one request.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            permit: None,
            units: 0,
        }
    }

    fn refuse(&self, reason: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }
}

/// What one request holds of the budget; given back when dropped.
pub struct Reservation {
    budget: MemoryBudget,
    permit: Option<OwnedSemaphorePermit>,
    units: u64,
}

impl Reservation {
    /// An empty reservation on the same budget (to stand in while this one is moved).
    pub fn empty_twin(&self) -> Reservation {
        self.budget.reservation()
    }

    /// Bytes charged so far.
    pub fn bytes(&self) -> u64 {
        self.units * UNIT
    }

    /// Charges `bytes` more, or refuses the request (`what` says what they are for).
    pub fn grow(&mut self, bytes: u64, what: &str) -> Result<(), ApiError> {
        if bytes == 0 {
            return Ok(());
        }
        let units = bytes.div_ceil(UNIT);
        let wanted = self.units.saturating_add(units);
        if wanted.saturating_mul(UNIT) > self.budget.total_bytes {
            self.budget.refuse("too_large");
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the request needs more than ingest.max_inflight_bytes ({} bytes) in memory ({what})",
                    self.budget.total_bytes
                ),
            ));
        }
        let acquired = u32::try_from(units)
            .ok()
            .and_then(|n| self.budget.permits.clone().try_acquire_many_owned(n).ok());
        let Some(acquired) = acquired else {
            self.budget.refuse("busy");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_busy",
                "requests in flight hold ingest.max_inflight_bytes of memory; retry shortly",
            )
            .with_retry_after(RETRY_AFTER_SECS));
        };
        match &mut self.permit {
            Some(permit) => permit.merge(acquired),
            None => self.permit = Some(acquired),
        }
        self.units = wanted;
        self.budget.in_flight.inc_by(to_gauge(units * UNIT));
        Ok(())
    }

    /// Gives back what is charged beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: u64) {
        let keep = bytes.div_ceil(UNIT);
        if keep >= self.units {
            return;
        }
        let release = self.units - keep;
        if let Some(permit) = &mut self.permit {
            drop(permit.split(usize::try_from(release).unwrap_or(usize::MAX)));
        }
        self.units = keep;
        self.budget.in_flight.dec_by(to_gauge(release * UNIT));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.in_flight.dec_by(to_gauge(self.units * UNIT));
    }
}

fn to_gauge(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// A reservation shared between a request's body (charged as it arrives) and its handler.
#[derive(Clone)]
pub struct SharedReservation {
    reservation: Arc<Mutex<Reservation>>,
    /// Body bytes received so far (charged by [`Self::grow_wire`]).
    wire: Arc<std::sync::atomic::AtomicU64>,
}

impl SharedReservation {
    /// Wraps `reservation`.
    pub fn new(reservation: Reservation) -> Self {
        Self {
            reservation: Arc::new(Mutex::new(reservation)),
            wire: Arc::default(),
        }
    }

    /// Charges `bytes` of body just received.
    pub fn grow_wire(&self, bytes: u64) -> Result<(), ApiError> {
        self.grow(bytes, "the request body")?;
        self.wire
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Body bytes received so far.
    pub fn wire_bytes(&self) -> u64 {
        self.wire.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reservation> {
        self.reservation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`Reservation::grow`] on the shared reservation.
    pub fn grow(&self, bytes: u64, what: &str) -> Result<(), ApiError> {
        self.lock().grow(bytes, what)
    }

    /// [`Reservation::shrink_to`] on the shared reservation.
    pub fn shrink_to(&self, bytes: u64) {
        self.lock().shrink_to(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = MemoryBudget::unregistered(10 * UNIT);
        let mut a = budget.reservation();
        a.grow(6 * UNIT, "body").unwrap();
        let mut b = budget.reservation();
        let e = b.grow(5 * UNIT, "body").unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after_secs, Some(RETRY_AFTER_SECS));
        b.grow(4 * UNIT, "body").unwrap();
        assert_eq!(budget.in_flight.get(), 10 * UNIT as i64);
        drop(a);
        b.grow(5 * UNIT, "decoded").unwrap();
        assert_eq!(budget.in_flight.get(), 9 * UNIT as i64);
        b.shrink_to(2 * UNIT);
        assert_eq!(budget.in_flight.get(), 2 * UNIT as i64);
        assert_eq!(budget.permits.available_permits(), 8);
        drop(b);
        assert_eq!(budget.in_flight.get(), 0);
        assert_eq!(budget.permits.available_permits(), 10);
    }

    #[test]
    fn a_request_larger_than_the_whole_budget_is_413() {
        let budget = MemoryBudget::unregistered(10 * UNIT);
        let mut r = budget.reservation();
        r.grow(3 * UNIT, "body").unwrap();
        let e = r.grow(8 * UNIT, "decoded spans").unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("ingest.max_inflight_bytes"));
        assert!(e.message.contains("decoded spans"));
        let e = r.grow(u64::MAX, "x").unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.bytes(), 3 * UNIT);
    }
}
