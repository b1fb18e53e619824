//! Time as protocol cores see it: an [`Instant`] on a monotonic timeline and a [`Clock`] that
//! drivers (or the simulator) implement.
//!
//! Cores never read the clock themselves; they are handed `now`. That is what lets the
//! simulator run a cluster for a million virtual seconds in a few real ones.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point on a monotonic timeline, in nanoseconds since an origin chosen by the clock that
/// produced it. Instants from different clocks are not comparable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The clock's origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// An instant `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time since the origin.
    pub const fn since_origin(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, or `None` past the end of the timeline (about 584 years).
    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        let nanos = u64::try_from(d.as_nanos()).ok()?;
        self.0.checked_add(nanos).map(Instant)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturates at the end of the timeline rather than wrapping.
    fn add(self, d: Duration) -> Instant {
        self.checked_add(d).unwrap_or(Instant(u64::MAX))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;

    /// Saturates at zero, like [`Instant::saturating_duration_since`].
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{:?}", self.since_origin())
    }
}

/// A source of time, injected into whatever needs it.
///
/// Two readings: a monotonic [`Instant`] for timeouts and intervals, and the wall clock in
/// milliseconds since the Unix epoch for hybrid logical clocks. The wall clock may step
/// backwards; the monotonic one never does.
pub trait Clock: Send + Sync {
    /// Monotonic time; never goes backwards.
    fn now(&self) -> Instant;
    /// Wall-clock milliseconds since the Unix epoch; may jump in either direction.
    fn wall_ms(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn wall_ms(&self) -> u64 {
        (**self).wall_ms()
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn wall_ms(&self) -> u64 {
        (**self).wall_ms()
    }
}

/// The operating system's clocks, for drivers. Protocol cores receive readings from it; they
/// never hold one.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: std::time::Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is the moment of this call.
    pub fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        let nanos = self.origin.elapsed().as_nanos();
        Instant(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn wall_ms(&self) -> u64 {
        // A wall clock set before 1970 reads as the epoch; the HLC stays monotonic anyway.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to: for tests of anything that takes a [`Clock`].
/// Both readings can be set independently, so tests can step the wall clock backwards.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
    wall_ms: AtomicU64,
}

impl ManualClock {
    /// A clock at monotonic zero reading `wall_ms` on the wall.
    pub fn new(wall_ms: u64) -> Self {
        Self {
            nanos: AtomicU64::new(0),
            wall_ms: AtomicU64::new(wall_ms),
        }
    }

    /// Moves both readings forward by `d`.
    pub fn advance(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::SeqCst);
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.wall_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the wall clock, in either direction (the monotonic reading is untouched).
    pub fn set_wall_ms(&self, wall_ms: u64) {
        self.wall_ms.store(wall_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        Instant(self.nanos.load(Ordering::SeqCst))
    }
    fn wall_ms(&self) -> u64 {
        self.wall_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_arithmetic_saturates_instead_of_wrapping() {
        let t = Instant::from_millis(5);
        assert_eq!(t - Instant::from_millis(7), Duration::ZERO);
        assert_eq!(
            Instant::from_nanos(u64::MAX - 1) + Duration::from_secs(1),
            Instant::from_nanos(u64::MAX)
        );
        assert_eq!(t + Duration::from_millis(2), Instant::from_millis(7));
    }

    #[test]
    fn system_clock_is_monotonic() {
        let clock = SystemClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        assert!(clock.wall_ms() > 1_600_000_000_000);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        clock.advance(Duration::from_millis(10));
        assert_eq!(clock.now(), Instant::from_millis(10));
        assert_eq!(clock.wall_ms(), 1_010);
        clock.set_wall_ms(5);
        assert_eq!(clock.wall_ms(), 5);
        assert_eq!(clock.now(), Instant::from_millis(10));
    }
}
