//! What runs when a timer fires: the close-order task.
//!
//! A [`Handler`] is called on a worker thread, with no engine lock held, once
//! per attempt. An `Err` or a panic counts as a failed attempt and is retried
//! after a capped exponential backoff ([`RetryPolicy`]); once the attempts
//! are used up, [`Handler::dead_letter`] is called and the timer is dropped
//! from the engine (never silently: a `warn` line and a counter).

use std::time::Duration;

use crate::id::OrderId;

/// The error a handler reports for a failed attempt.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The outcome of one attempt.
pub type HandlerResult = Result<(), HandlerError>;

/// A timer that fired, as the handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The order id.
    pub id: OrderId,
    /// The deadline it was scheduled for, Unix ms.
    pub deadline_ms: u64,
    /// When the wheel handed it to the worker pool, Unix ms.
    pub fired_ms: u64,
    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub attempt: u32,
}

/// The close-order task. Every closure `Fn(&Fired) -> HandlerResult` is
/// one; implement it yourself for a sink with state.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt. `Err` or a panic means "retry later".
    fn handle(&self, fired: &Fired) -> HandlerResult;

    /// Called once when the last attempt has failed.
    fn dead_letter(&self, fired: &Fired, error: &str) {
        tracing::warn!(
            id = %fired.id,
            deadline_ms = fired.deadline_ms,
            attempts = fired.attempt,
            error,
            "close-order task failed on every attempt; dead-lettered"
        );
    }
}

/// A plain closure is a handler (with the default dead letter).
impl<F> Handler for F
where
    F: Fn(&Fired) -> HandlerResult + Send + Sync + 'static,
{
    fn handle(&self, fired: &Fired) -> HandlerResult {
        self(fired)
    }
}

/// How failed attempts are retried: capped exponential backoff with jitter.
///
/// Attempt `n + 1` waits `min(max, initial * 2^(n-1))`, scaled by a random
/// factor in `[0.5, 1.0]` when `jitter` is on so that a burst of failures
/// does not retry in lockstep. The defaults spread 10 attempts over about
/// an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before the first retry; it doubles per attempt.
    pub initial: Duration,
    /// Longest wait between two attempts.
    pub max: Duration,
    /// Attempts in all, the first included; at least 1.
    pub max_attempts: u32,
    /// Scale each wait by a random factor in [0.5, 1], so that retries
    /// of orders that failed together do not come back together.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(8),
            max: Duration::from_secs(30 * 60),
            max_attempts: 10,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The wait before the attempt after `failed_attempt`, without jitter.
    pub fn backoff(&self, failed_attempt: u32) -> Duration {
        let doublings = failed_attempt.saturating_sub(1).min(32);
        self.initial
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max)
    }

    /// The wait with jitter applied, if enabled.
    pub(crate) fn delay(&self, failed_attempt: u32) -> Duration {
        let base = self.backoff(failed_attempt);
        if self.jitter {
            base.mul_f64(0.5 + fastrand::f64() * 0.5)
        } else {
            base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let policy = RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            max_attempts: 10,
            jitter: false,
        };
        let waits: Vec<u64> = (1..=6).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        let policy = RetryPolicy {
            jitter: true,
            ..RetryPolicy::default()
        };
        for attempt in 1..12 {
            let base = policy.backoff(attempt);
            let d = policy.delay(attempt);
            assert!(
                d <= base && d >= base / 2,
                "attempt={attempt} d={d:?} base={base:?}"
            );
        }
    }

    #[test]
    fn default_spreads_attempts_over_about_an_hour() {
        let policy = RetryPolicy::default();
        let total: Duration = (1..policy.max_attempts).map(|n| policy.backoff(n)).sum();
        assert!(total >= Duration::from_secs(45 * 60) && total <= Duration::from_secs(90 * 60));
    }
}
