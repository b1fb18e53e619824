//! What a client knows of each gateway's health, from its own requests alone: whether one
//! recently failed to connect or to answer, and how long its oldest request in flight has
//! been waiting. A paused process still accepts connections (the kernel does), so a request
//! left waiting is the only early sign: new requests go elsewhere once one has waited too
//! long, instead of every caller finding out by its own timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One gateway's health.
#[derive(Default)]
pub(crate) struct Health {
    /// Until when it is passed over (it failed to connect, or to answer in time).
    avoid_until: Mutex<Option<Instant>>,
    /// Requests in flight to it, by ticket (tickets rise with time, so the first is the
    /// oldest), with when each was sent.
    pending: Mutex<BTreeMap<u64, Instant>>,
}

/// Tickets for requests in flight, unique across a client's gateways.
static NEXT_TICKET: AtomicU64 = AtomicU64::new(0);

impl Health {
    /// Whether a new request should go elsewhere if it can: the gateway failed recently, or
    /// a request to it has been waiting for longer than `stalled_after`.
    pub(crate) fn doubtful(&self, now: Instant, stalled_after: Duration) -> bool {
        let avoided = lock(&self.avoid_until).is_some_and(|until| until > now);
        avoided
            || lock(&self.pending)
                .values()
                .next()
                .is_some_and(|&sent| now.saturating_duration_since(sent) > stalled_after)
    }

    /// Passes the gateway over until `until`.
    pub(crate) fn avoid(&self, until: Instant) {
        *lock(&self.avoid_until) = Some(until);
    }

    /// Whether the gateway is being passed over for a failure (for tests).
    #[cfg(test)]
    pub(crate) fn avoided(&self, now: Instant) -> bool {
        lock(&self.avoid_until).is_some_and(|until| until > now)
    }

    /// Records a request in flight until the returned guard is dropped.
    pub(crate) fn sending(&self, now: Instant) -> InFlight<'_> {
        let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(ticket, now);
        InFlight {
            health: self,
            ticket,
        }
    }
}

/// A request in flight; dropping it (answered, failed or cancelled) forgets it.
pub(crate) struct InFlight<'a> {
    health: &'a Health,
    ticket: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.health.pending).remove(&self.ticket);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
