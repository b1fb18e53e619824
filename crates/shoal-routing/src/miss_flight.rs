//! Coalescing of concurrent cache misses: a burst of misses for keys of one uncached range
//! costs one range lookup, not one per key.
//!
//! The first caller to miss leads: it runs the lookup and publishes the outcome. A caller
//! that misses on the same key while the lookup runs follows: it waits for that outcome
//! instead of sending its own. A caller that misses on another key in the same gap of the
//! cache (no cached range holds a key between the two) waits for that lookup as well, since
//! one range may hold both keys, then looks in the cache again: only when the lookup's
//! answer did not cover its key does it run one of its own. Which keys an answer covers is
//! known only when it lands (the fetch returns descriptors, not bounds known in advance), so
//! such a wait is a bet; a caller makes it at most once per miss, so it waits for at most one
//! other key's lookup before running its own, and a failed lookup is shared only by callers
//! of its own key. A leader that is cancelled (its future dropped) withdraws its flight, and
//! its followers wake and try again, one of them leading.
//!
//! An outcome reaches the followers through a one-shot channel whose receiver every follower
//! shares (futures' `Shared`), so the cache waits on any executor and needs no runtime.

use crate::range_cache::{ResolveError, Route};
use futures_channel::oneshot;
use futures_util::future::{FutureExt, Shared};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, PoisonError};

/// What a resolved miss produced, shared with every follower.
pub(crate) type Outcome = Result<Route, ResolveError>;

/// The receiving end of one flight, cloned to each follower; it resolves to the outcome, or
/// to `Canceled` when the leader is dropped without finishing.
type Slot = Shared<oneshot::Receiver<Outcome>>;

/// The lookups in flight, by the key each was started for; ordered, to find one in a gap.
#[derive(Default)]
pub(crate) struct MissFlights {
    inflight: Mutex<BTreeMap<Vec<u8>, Slot>>,
}

/// The keys around a missed key that no cached range holds: from `start` (inclusive) to
/// `end` (exclusive; `None` for no end).
pub(crate) struct Gap {
    /// The end of the cached range before the key, or the first key.
    pub(crate) start: Vec<u8>,
    /// The start of the cached range after the key, if any.
    pub(crate) end: Option<Vec<u8>>,
}

/// A caller's part in a flight.
pub(crate) enum Flight<'a> {
    /// Run the lookup and [`Lead::finish`] it.
    Lead(Lead<'a>),
    /// Wait for the leader's outcome: a lookup of this very key.
    Follow(Follow),
    /// Wait for the lookup of another key in the same gap, then look in the cache again:
    /// its outcome is the other key's.
    Wait(Follow),
}

impl MissFlights {
    /// Joins the flight for `key`; failing that, and given `gap` (the gap around `key`), a
    /// flight for another key in it; failing that, leads a new flight.
    pub(crate) fn join(&self, key: &[u8], gap: Option<&Gap>) -> Flight<'_> {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = inflight.get(key) {
            return Flight::Follow(Follow { rx: rx.clone() });
        }
        if let Some(gap) = gap {
            // The first flight at or after the gap's start, if it is before the gap's end.
            let from: (Bound<&[u8]>, Bound<&[u8]>) =
                (Bound::Included(gap.start.as_slice()), Bound::Unbounded);
            if let Some((other, rx)) = inflight.range::<[u8], _>(from).next() {
                if gap.end.as_deref().is_none_or(|end| other.as_slice() < end) {
                    return Flight::Wait(Follow { rx: rx.clone() });
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        inflight.insert(key.to_vec(), rx.shared());
        Flight::Lead(Lead {
            flights: self,
            key: key.to_vec(),
            tx: Some(tx),
        })
    }
}

/// The leading caller's handle. Dropping it without [`Lead::finish`] withdraws the flight.
pub(crate) struct Lead<'a> {
    flights: &'a MissFlights,
    key: Vec<u8>,
    /// Taken by [`Lead::finish`]; dropped unsent, it tells the followers the leader left.
    tx: Option<oneshot::Sender<Outcome>>,
}

impl Lead<'_> {
    /// Publishes `outcome` to every follower and ends the flight.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        if let Some(tx) = self.tx.take() {
            // The flight's own entry keeps a receiver until `drop` below removes it, so the
            // send cannot find the channel closed; and if it did, no one would be waiting.
            let _ = tx.send(outcome);
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.flights
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// A following or waiting caller's handle.
pub(crate) struct Follow {
    rx: Slot,
}

impl Follow {
    /// The leader's outcome, or `None` if the leader was cancelled before finishing.
    pub(crate) async fn outcome(self) -> Option<Outcome> {
        self.rx.await.ok()
    }
}
