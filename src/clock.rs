//! Time sources.
//!
//! The engine reads time through [`Clock`]: wall-clock Unix milliseconds that
//! never go backwards. [`SystemClock`] reads the wall clock once, at creation,
//! and from then on advances by the monotonic clock (`Instant`), so a wall
//! clock step (NTP, an operator) neither fires timers early nor stalls them.
//! [`ManualClock`] is moved by hand, so tests of timing never sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The wall clock now, in Unix milliseconds (0 before 1970). For time
/// stamps others read (heartbeats, webhook bodies); the engine's own time is
/// a [`Clock`].
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A source of Unix time in milliseconds that never goes backwards.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The real clock: wall time at creation, advanced by `Instant` since.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin_ms: u64,
    origin: Instant,
}

impl SystemClock {
    /// Anchors a new clock to the current wall-clock time.
    pub fn new() -> SystemClock {
        SystemClock {
            origin_ms: unix_ms(),
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.origin_ms + self.origin.elapsed().as_millis() as u64
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `ms`; a value in the past is ignored, since a
    /// [`Clock`] never goes backwards.
    pub fn set(&self, ms: u64) {
        self.now_ms.fetch_max(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let clock = ManualClock::new(1_000);
        let shared = clock.clone();
        clock.advance(500);
        assert_eq!(shared.now_ms(), 1_500);
        clock.set(1_200);
        assert_eq!(shared.now_ms(), 1_500);
        clock.set(2_000);
        assert_eq!(shared.now_ms(), 2_000);
    }

    #[test]
    fn system_clock_is_near_wall_time() {
        let clock = SystemClock::new();
        assert!(clock.now_ms().abs_diff(unix_ms()) < 1_000);
        assert!(unix_ms() > 1_700_000_000_000);
    }
}
