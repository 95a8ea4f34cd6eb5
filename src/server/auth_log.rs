//! The log of failed `AUTH`s, limited per client address.
//!
//! A client with a wrong password usually reconnects and tries again, so a
//! per-connection limit never triggers and every attempt would be a log
//! line. Here the first failure from an address is logged at once; the
//! failures after it, from any connection of that address, are counted and
//! written as one summary line with the next failure that comes after
//! [`AUTH_LOG_INTERVAL`]. Every failure is still counted in INFO
//! `auth_failures_total`.
//!
//! Ground rules:
//! - One mutex, taken only on a failed `AUTH` (never on the hot path).
//! - Bounded: at most [`MAX_ADDRESSES`] addresses are remembered; when full,
//!   addresses quiet for an interval are forgotten, and if none is, the
//!   failure is summarised under the address it came from anyway but not
//!   remembered (a line per failure then, which only a flood of distinct
//!   addresses can cause).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use parking_lot::Mutex;

/// At most one `authentication failed` line per client address per interval.
pub const AUTH_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Addresses remembered at once.
pub const MAX_ADDRESSES: usize = 4096;

/// What to log for one failure, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLine {
    /// Failures from this address since its previous line, this one included.
    pub failures: u64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the last line for this address was written.
    logged_at: Instant,
    /// Failures since then, not yet in a line.
    unlogged: u64,
}

/// Per-address failure windows; see the module docs.
#[derive(Debug, Default)]
pub struct AuthFailureLog {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl AuthFailureLog {
    /// Records a failure from `addr` at `now`; `Some` when a line is due.
    pub fn record(&self, addr: IpAddr, now: Instant) -> Option<LogLine> {
        let mut windows = self.windows.lock();
        if let Some(window) = windows.get_mut(&addr) {
            window.unlogged += 1;
            if now.duration_since(window.logged_at) < AUTH_LOG_INTERVAL {
                return None;
            }
            let failures = window.unlogged;
            *window = Window {
                logged_at: now,
                unlogged: 0,
            };
            return Some(LogLine { failures });
        }
        if windows.len() >= MAX_ADDRESSES {
            windows.retain(|_, w| now.duration_since(w.logged_at) < AUTH_LOG_INTERVAL);
        }
        if windows.len() < MAX_ADDRESSES {
            windows.insert(
                addr,
                Window {
                    logged_at: now,
                    unlogged: 0,
                },
            );
        }
        Some(LogLine { failures: 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn first_failure_is_logged_then_one_summary_per_interval() {
        let log = AuthFailureLog::default();
        let t0 = Instant::now();
        assert_eq!(log.record(ip(1), t0), Some(LogLine { failures: 1 }));
        for i in 1..=10 {
            let at = t0 + AUTH_LOG_INTERVAL * i / 11;
            assert_eq!(log.record(ip(1), at), None, "failure {i}");
        }
        // Just before the interval ends: still quiet.
        let edge = t0 + AUTH_LOG_INTERVAL - Duration::from_nanos(1);
        assert_eq!(log.record(ip(1), edge), None);
        // At the interval: the 11 quiet failures and this one, in one line.
        let next = t0 + AUTH_LOG_INTERVAL;
        assert_eq!(log.record(ip(1), next), Some(LogLine { failures: 12 }));
        assert_eq!(log.record(ip(1), next), None);
        assert_eq!(
            log.record(ip(1), next + AUTH_LOG_INTERVAL * 5),
            Some(LogLine { failures: 2 })
        );
    }

    #[test]
    fn addresses_are_limited_separately() {
        let log = AuthFailureLog::default();
        let t0 = Instant::now();
        assert!(log.record(ip(1), t0).is_some());
        assert!(log.record(ip(2), t0).is_some());
        assert!(log.record(ip(1), t0).is_none());
        assert!(log.record(ip(2), t0).is_none());
    }

    #[test]
    fn the_table_is_bounded_and_forgets_quiet_addresses() {
        let log = AuthFailureLog::default();
        let t0 = Instant::now();
        let addr = |i: usize| IpAddr::V6((i as u128).into());
        for i in 0..MAX_ADDRESSES {
            assert!(log.record(addr(i), t0).is_some());
        }
        // Full, nobody quiet yet: logged, not remembered.
        let extra = addr(MAX_ADDRESSES);
        assert!(log.record(extra, t0).is_some());
        assert!(log.record(extra, t0).is_some());
        assert_eq!(log.windows.lock().len(), MAX_ADDRESSES);
        // An interval later the quiet ones are forgotten to make room.
        let later = t0 + AUTH_LOG_INTERVAL;
        assert!(log.record(extra, later).is_some());
        assert!(log.record(extra, later).is_none());
        assert_eq!(log.windows.lock().len(), 1);
    }
}
