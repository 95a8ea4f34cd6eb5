//! The census: how many pending timers fall due when, for the operators'
//! page (`GET /` and `GET /due.json`, `src/server/dashboard.rs`).
//!
//! Pending timers are counted by deadline, from an instant `from_ms`, at
//! three zoom levels: the next minute per second, the next hour per minute
//! and the next day per hour (each tier's first bucket is the whole of the
//! finer tier), then everything later, and those whose deadline has passed
//! but which the ticker has not yet taken ([`DueHistogram::overdue`]; with
//! a coarse tick a timer waits up to one tick past its deadline, so a few
//! there are normal; many, for long, mean the ticker lags).
//!
//! Ground rules:
//! - One shard at a time, each under its own lock, never all at once, and
//!   only for a memcpy of its deadline arrays
//!   ([`crate::wheel::Wheel::copy_deadlines`]); the counting is done after
//!   the lock is released. Counting under the lock was measured to stall
//!   the ticker for most of a census at 10M pending: it wants the shards
//!   in the census's order, so it waited at one shard after the other.
//!   Counts are not one instant's: a timer that fires or is added while
//!   the census runs may be counted or not.
//! - The copy holds deadlines only, never an id: the census cannot leak
//!   an order id, because it never sees one.
//! - It changes nothing, so it needs no journal and takes no `tick_lock`.

use std::sync::atomic::Ordering;

use super::Engine;
use crate::wheel::Deadlines;

/// Milliseconds in one bucket of [`DueHistogram::seconds`].
pub const SECOND_MS: u64 = 1000;
/// Milliseconds in one bucket of [`DueHistogram::minutes`].
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
/// Milliseconds in one bucket of [`DueHistogram::hours`].
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
/// Milliseconds covered by [`DueHistogram::hours`]; later is [`DueHistogram::later`].
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// Pending timers by deadline, seen from `from_ms`, and the fired ones
/// still being worked on. `hours` plus `later` plus `overdue` is every
/// timer the wheels held when their shard was counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueHistogram {
    /// Where the buckets start (Unix ms).
    pub from_ms: u64,
    /// Deadline before `from_ms`, still in the wheel: due at the next tick.
    pub overdue: u64,
    /// `seconds[i]`: deadline in `[from + i s, from + (i + 1) s)`.
    pub seconds: [u64; (MINUTE_MS / SECOND_MS) as usize],
    /// `minutes[i]`: deadline in `[from + i min, from + (i + 1) min)`;
    /// `minutes[0]` is the sum of `seconds`.
    pub minutes: [u64; (HOUR_MS / MINUTE_MS) as usize],
    /// `hours[i]`: deadline in `[from + i h, from + (i + 1) h)`;
    /// `hours[0]` is the sum of `minutes`.
    pub hours: [u64; (DAY_MS / HOUR_MS) as usize],
    /// Deadline at or after `from + 24 h`.
    pub later: u64,
    /// Fired, not yet delivered or dead-lettered (as [`super::Stats::inflight`]):
    /// queued for a worker, running, or waiting for a retry.
    pub inflight: u64,
    /// Of `inflight`, those waiting in the retry queue (overdue timers
    /// read back at a start or a takeover wait there too, for their first
    /// attempt).
    pub retrying: u64,
}

impl DueHistogram {
    /// An empty census starting at `from_ms`.
    pub fn new(from_ms: u64) -> DueHistogram {
        DueHistogram {
            from_ms,
            overdue: 0,
            seconds: [0; (MINUTE_MS / SECOND_MS) as usize],
            minutes: [0; (HOUR_MS / MINUTE_MS) as usize],
            hours: [0; (DAY_MS / HOUR_MS) as usize],
            later: 0,
            inflight: 0,
            retrying: 0,
        }
    }

    /// Counts one pending timer due at `deadline_ms`.
    #[inline]
    pub fn count(&mut self, deadline_ms: u64) {
        let Some(offset) = deadline_ms.checked_sub(self.from_ms) else {
            self.overdue += 1;
            return;
        };
        if offset >= DAY_MS {
            self.later += 1;
            return;
        }
        self.hours[(offset / HOUR_MS) as usize] += 1;
        if offset < HOUR_MS {
            self.minutes[(offset / MINUTE_MS) as usize] += 1;
            if offset < MINUTE_MS {
                self.seconds[(offset / SECOND_MS) as usize] += 1;
            }
        }
    }

    /// Pending timers counted: overdue, within the day, and later.
    pub fn pending(&self) -> u64 {
        self.overdue + self.hours.iter().sum::<u64>() + self.later
    }
}

impl Engine {
    /// Counts pending timers by deadline from `from_ms` (see
    /// [`DueHistogram`]), one shard lock at a time, each held for a copy of
    /// the shard's deadlines. About 13 ms at 1M pending and 140 ms at 10M
    /// on the benchmark machine (`examples/census.rs`, docs/benchmarks.md).
    pub fn due_histogram(&self, from_ms: u64) -> DueHistogram {
        let mut histogram = DueHistogram::new(from_ms);
        let mut deadlines = Deadlines::default();
        for shard in self.shared.shards.iter() {
            shard.lock().copy_deadlines(&mut deadlines);
            deadlines.for_each(|d| histogram.count(d));
        }
        histogram.inflight = self.shared.counters.inflight.load(Ordering::Relaxed);
        histogram.retrying = self.shared.retries.len() as u64;
        histogram
    }

    /// Handler calls that succeeded in the last minute (the seconds the
    /// delivery-lag window holds, up to and including `now_ms`'s).
    pub fn delivered_last_minute(&self, now_ms: u64) -> u64 {
        self.shared.lag.count(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_boundaries() {
        let from = 1_000_000;
        let mut h = DueHistogram::new(from);
        for d in [
            from - 1,
            from,
            from + SECOND_MS - 1,
            from + SECOND_MS,
            from + MINUTE_MS - 1,
            from + MINUTE_MS,
            from + HOUR_MS - 1,
            from + HOUR_MS,
            from + DAY_MS - 1,
            from + DAY_MS,
        ] {
            h.count(d);
        }
        assert_eq!(h.overdue, 1);
        assert_eq!(h.seconds[0], 2);
        assert_eq!(h.seconds[1], 1);
        assert_eq!(h.seconds[59], 1);
        assert_eq!(h.seconds.iter().sum::<u64>(), 4);
        assert_eq!(h.minutes[0], 4);
        assert_eq!(h.minutes[1], 1);
        assert_eq!(h.minutes[59], 1);
        assert_eq!(h.hours[0], 6);
        assert_eq!(h.hours[1], 1);
        assert_eq!(h.hours[23], 1);
        assert_eq!(h.later, 1);
        assert_eq!(h.pending(), 10);
    }
}
