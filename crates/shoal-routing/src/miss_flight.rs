//! Coalescing of concurrent cache misses: at most one range lookup per key in flight.
//!
//! The first caller to miss on a key leads: it runs the lookup and publishes the outcome.
//! Callers that miss on the same key while the lookup runs follow: they wait for that
//! outcome instead of sending their own lookup, so a burst of requests for a cold key costs
//! one lookup, not one per request. A leader that is cancelled (its future dropped) withdraws
//! its flight, and its followers wake and try again, one of them leading.

use crate::range_cache::{ResolveError, Route};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use tokio::sync::watch;

/// What a resolved miss produced, shared with every follower.
pub(crate) type Outcome = Result<Route, ResolveError>;

type Slot = watch::Receiver<Option<Outcome>>;

/// The lookups in flight, by key.
#[derive(Default)]
pub(crate) struct MissFlights {
    inflight: Mutex<HashMap<Vec<u8>, Slot>>,
}

/// A caller's part in a flight.
pub(crate) enum Flight<'a> {
    /// Run the lookup and [`Lead::finish`] it.
    Lead(Lead<'a>),
    /// Wait for the leader's outcome.
    Follow(Follow),
}

impl MissFlights {
    /// Joins the flight for `key`, leading a new one if none is in flight.
    pub(crate) fn join(&self, key: &[u8]) -> Flight<'_> {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = inflight.get(key) {
            return Flight::Follow(Follow { rx: rx.clone() });
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(key.to_vec(), rx);
        Flight::Lead(Lead {
            flights: self,
            key: key.to_vec(),
            tx,
        })
    }
}

/// The leading caller's handle. Dropping it without [`Lead::finish`] withdraws the flight.
pub(crate) struct Lead<'a> {
    flights: &'a MissFlights,
    key: Vec<u8>,
    tx: watch::Sender<Option<Outcome>>,
}

impl Lead<'_> {
    /// Publishes `outcome` to every follower and ends the flight.
    pub(crate) fn finish(self, outcome: Outcome) {
        self.tx.send_replace(Some(outcome));
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

/// A following caller's handle.
pub(crate) struct Follow {
    rx: Slot,
}

impl Follow {
    /// The leader's outcome, or `None` if the leader was cancelled before finishing.
    pub(crate) async fn outcome(mut self) -> Option<Outcome> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        }
    }
}
