//! Delivery lag over the last minute: a ring of one-second histograms.
//!
//! Lag is the time from a timer's deadline to the moment its close-order
//! task succeeded (`delivered_ms - deadline_ms`, saturating at 0), recorded
//! once per successful delivery. Retries count: an order delivered on its
//! third attempt carries the backoff it waited in its lag.
//!
//! Ground rules:
//! - [`WINDOW_S`] buckets, one per wall-clock second, each stamped with its
//!   second; a bucket whose stamp is older than the window is stale and is
//!   cleared when reused, so no thread has to age the ring.
//! - Each bucket is a log-linear histogram ([`SUB_BITS`] bits below the
//!   leading one): exact below `2 * SUB_BUCKETS` ms, and within
//!   `1 / SUB_BUCKETS` (12.5 %) above. Quantiles report a bucket's upper
//!   bound, so they err high, never low.
//! - One mutex, held for an index computation and an increment on the
//!   worker path; the quantile scan (an `INFO`) holds it for at most
//!   `WINDOW_S * BUCKETS` additions, a few dozen when lags are small.

use parking_lot::Mutex;

/// Seconds of history the quantiles cover.
pub const WINDOW_S: usize = 60;

/// Bits of precision below the leading one.
const SUB_BITS: u32 = 3;
const SUB_BUCKETS: usize = 1 << SUB_BITS;
/// Values `0..2 * SUB_BUCKETS` map to themselves (two groups); each further
/// power of two, up to the one holding `u64::MAX`, adds a group of
/// `SUB_BUCKETS` buckets.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB_BUCKETS;

/// The histogram bucket of `value`.
fn bucket_of(value: u64) -> usize {
    if value < 2 * SUB_BUCKETS as u64 {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = ((value >> shift) as usize) & (SUB_BUCKETS - 1);
    (msb - SUB_BITS + 1) as usize * SUB_BUCKETS + sub
}

/// The largest value that falls in `bucket`.
fn upper_bound(bucket: usize) -> u64 {
    if bucket < 2 * SUB_BUCKETS {
        return bucket as u64;
    }
    let msb = (bucket / SUB_BUCKETS) as u32 + SUB_BITS - 1;
    let shift = msb - SUB_BITS;
    let sub = (bucket % SUB_BUCKETS) as u64;
    let low = (1u64 << msb) | (sub << shift);
    low + ((1u64 << shift) - 1)
}

struct Second {
    /// Unix second this bucket counts; `u64::MAX` when never used.
    stamp: u64,
    total: u64,
    counts: Box<[u32; BUCKETS]>,
}

/// Delivery lags of the last [`WINDOW_S`] seconds.
pub struct LagWindow {
    seconds: Mutex<Vec<Second>>,
}

impl Default for LagWindow {
    fn default() -> LagWindow {
        LagWindow {
            seconds: Mutex::new(
                (0..WINDOW_S)
                    .map(|_| Second {
                        stamp: u64::MAX,
                        total: 0,
                        counts: Box::new([0; BUCKETS]),
                    })
                    .collect(),
            ),
        }
    }
}

impl std::fmt::Debug for LagWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagWindow").finish_non_exhaustive()
    }
}

impl LagWindow {
    /// Records one delivery that completed at `now_ms` with lag `lag_ms`.
    pub fn record(&self, now_ms: u64, lag_ms: u64) {
        let second = now_ms / 1000;
        let bucket = bucket_of(lag_ms);
        let mut seconds = self.seconds.lock();
        let slot = &mut seconds[(second % WINDOW_S as u64) as usize];
        if slot.stamp != second {
            slot.stamp = second;
            slot.total = 0;
            slot.counts.fill(0);
        }
        slot.total += 1;
        slot.counts[bucket] = slot.counts[bucket].saturating_add(1);
    }

    /// The `q` quantile (0.0..=1.0) of the lags recorded in the
    /// [`WINDOW_S`] seconds up to and including `now_ms`'s; `None` when
    /// nothing was recorded then.
    pub fn quantile(&self, now_ms: u64, q: f64) -> Option<u64> {
        let now_s = now_ms / 1000;
        let oldest = now_s.saturating_sub(WINDOW_S as u64 - 1);
        let seconds = self.seconds.lock();
        let window: Vec<&Second> = seconds
            .iter()
            .filter(|s| s.total > 0 && (oldest..=now_s).contains(&s.stamp))
            .collect();
        let total: u64 = window.iter().map(|s| s.total).sum();
        if total == 0 {
            return None;
        }
        // The rank of the q-quantile, 1-based: the smallest value with at
        // least ceil(q * total) values at or below it.
        // (The epsilon keeps 0.99 * 100, which is 99.000...01 in binary,
        // from becoming rank 100.)
        let rank = ((q.clamp(0.0, 1.0) * total as f64 - 1e-9).ceil() as u64).max(1);
        // Bucket by bucket across the window, stopping at the rank: small
        // lags (the usual case) are found in the first few buckets.
        let mut seen = 0;
        for bucket in 0..BUCKETS {
            seen += window
                .iter()
                .map(|s| u64::from(s.counts[bucket]))
                .sum::<u64>();
            if seen >= rank {
                return Some(upper_bound(bucket));
            }
        }
        debug_assert!(false, "rank {rank} beyond total {total}");
        None
    }

    /// Deliveries recorded in the [`WINDOW_S`] seconds up to and
    /// including `now_ms`'s.
    pub fn count(&self, now_ms: u64) -> u64 {
        let now_s = now_ms / 1000;
        let oldest = now_s.saturating_sub(WINDOW_S as u64 - 1);
        let seconds = self.seconds.lock();
        seconds
            .iter()
            .filter(|s| (oldest..=now_s).contains(&s.stamp))
            .map(|s| s.total)
            .sum()
    }

    /// The 99th percentile over the last minute, 0 when idle.
    pub fn p99(&self, now_ms: u64) -> u64 {
        self.quantile(now_ms, 0.99).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_below_two_sub_ranges() {
        for v in 0..2 * SUB_BUCKETS as u64 {
            assert_eq!(bucket_of(v), v as usize);
            assert_eq!(upper_bound(v as usize), v);
        }
    }

    #[test]
    fn every_value_lies_in_its_bucket_within_an_eighth() {
        let mut values: Vec<u64> = (0..5000).collect();
        for shift in 4..64 {
            let p = 1u64 << shift;
            values.extend([p - 1, p, p + 1, p + p / 2, p.saturating_mul(2) - 1]);
        }
        values.push(u64::MAX);
        for v in values {
            let b = bucket_of(v);
            assert!(b < BUCKETS, "v={v} bucket={b} BUCKETS={BUCKETS}");
            let hi = upper_bound(b);
            assert!(hi >= v, "v={v} bucket={b} upper={hi}");
            assert!(
                hi - v <= v / SUB_BUCKETS as u64,
                "v={v} bucket={b} upper={hi}: more than 1/{SUB_BUCKETS} off"
            );
            if b > 0 {
                assert!(upper_bound(b - 1) < v, "v={v} also fits bucket {}", b - 1);
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(upper_bound(BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn bucket_bounds_are_contiguous() {
        for b in 1..BUCKETS {
            assert_eq!(bucket_of(upper_bound(b - 1) + 1), b, "bucket {b}");
        }
    }

    #[test]
    fn empty_window_has_no_quantile() {
        let w = LagWindow::default();
        assert_eq!(w.quantile(1_000_000, 0.99), None);
        assert_eq!(w.p99(1_000_000), 0);
    }

    #[test]
    fn p99_of_a_hundred_values_is_the_99th() {
        let w = LagWindow::default();
        let now = 5_000_000;
        for lag in 1..=100 {
            w.record(now, lag);
        }
        // 99 is in bucket [96, 103]: the upper bound is reported.
        assert_eq!(w.quantile(now, 0.99), Some(upper_bound(bucket_of(99))));
        assert_eq!(w.quantile(now, 0.0), Some(1));
        assert_eq!(w.quantile(now, 0.10), Some(10));
        assert_eq!(w.quantile(now, 1.0), Some(upper_bound(bucket_of(100))));
    }

    #[test]
    fn old_seconds_leave_the_window() {
        let w = LagWindow::default();
        let t0 = 1_700_000_000_000;
        w.record(t0, 5_000);
        for _ in 0..10 {
            w.record(t0 + 30_000, 3);
        }
        // Still inside: second t0 is 59 s before t0 + 59_999.
        assert_eq!(
            w.quantile(t0 + 59_999, 1.0),
            Some(upper_bound(bucket_of(5_000)))
        );
        // One second later it has aged out; the 3s remain.
        assert_eq!(w.quantile(t0 + 60_000, 1.0), Some(3));
        // And once those are a minute old too, nothing is left.
        assert_eq!(w.quantile(t0 + 90_000, 1.0), None);
        assert_eq!(w.count(t0 + 59_999), 11);
        assert_eq!(w.count(t0 + 60_000), 10);
        assert_eq!(w.count(t0 + 90_000), 0);
    }

    #[test]
    fn a_reused_slot_forgets_its_previous_minute() {
        let w = LagWindow::default();
        let t0 = 1_700_000_000_000;
        w.record(t0, 1_000);
        // Same slot, one window later.
        let t1 = t0 + WINDOW_S as u64 * 1000;
        w.record(t1, 2);
        assert_eq!(w.quantile(t1, 1.0), Some(2));
    }

    #[test]
    fn future_stamps_do_not_count() {
        // A clock that stepped back: buckets stamped later than "now" are
        // ignored rather than mixed in.
        let w = LagWindow::default();
        let t0 = 1_700_000_000_000;
        w.record(t0 + 10_000, 700);
        assert_eq!(w.quantile(t0, 1.0), None);
    }
}
