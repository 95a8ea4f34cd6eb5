//! The worker pool: runs the close-order handler and schedules retries.
//!
//! Ground rules:
//! - A worker holds no lock while the handler runs; a panicking handler is
//!   caught, counted as a failed attempt, and the worker lives on.
//! - With a journal, a delivered (or dead-lettered) order is removed from
//!   it only now, after the handler returned (with a stream configured, it
//!   is moved into the stream now): a crash before that fires it again
//!   after restart (at-least-once; the stream still gets it once).
//! - A failed attempt goes to the [`RetryQueue`], which the ticker drains
//!   when the backoff has passed; workers never feed the job queue
//!   themselves, so a full queue cannot deadlock them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use super::{JobReceiver, Shared};
use crate::handler::Fired;
use crate::journal::Op;

pub(super) fn spawn_worker(n: usize, shared: Arc<Shared>, jobs: JobReceiver) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("timewheel-worker-{n}"))
        .spawn(move || {
            for fired in jobs.iter() {
                run_job(&shared, fired);
            }
        })
        .expect("spawn worker thread")
}

/// Runs one attempt and settles its outcome.
pub(super) fn run_job(shared: &Shared, fired: Fired) {
    let outcome = catch_unwind(AssertUnwindSafe(|| shared.handler.handle(&fired)));
    let error = match outcome {
        Ok(Ok(())) => {
            let now_ms = shared.clock.now_ms();
            shared
                .lag
                .record(now_ms, now_ms.saturating_sub(fired.deadline_ms));
            if let Some(journal) = &shared.journal {
                journal.settle(fired.id, fired.deadline_ms, fired.fired_ms);
            }
            shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
            shared.counters.inflight.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        Ok(Err(err)) => err.to_string(),
        Err(panic) => panic_message(&panic),
    };
    if fired.attempt >= shared.retry.max_attempts {
        shared.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
        shared.counters.inflight.fetch_sub(1, Ordering::Relaxed);
        shared.handler.dead_letter(&fired, &error);
        if let Some(journal) = &shared.journal {
            journal.push_always(Op::Dead {
                id: fired.id,
                deadline_ms: fired.deadline_ms,
                attempts: fired.attempt,
                error,
                now_ms: shared.clock.now_ms(),
            });
        }
        return;
    }
    let wait = shared.retry.delay(fired.attempt);
    tracing::debug!(id = %fired.id, attempt = fired.attempt, ?wait, error, "close-order task failed; will retry");
    shared.counters.retries.fetch_add(1, Ordering::Relaxed);
    let due_ms = shared.clock.now_ms() + wait.as_millis() as u64;
    shared.retries.push(
        due_ms,
        Fired {
            attempt: fired.attempt + 1,
            ..fired
        },
    );
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("handler panicked: {text}")
}

/// Failed attempts waiting for their backoff, earliest first.
#[derive(Default)]
pub(super) struct RetryQueue {
    heap: Mutex<BinaryHeap<Reverse<Retry>>>,
}

struct Retry {
    due_ms: u64,
    seq: u64,
    fired: Fired,
}

impl PartialEq for Retry {
    fn eq(&self, other: &Retry) -> bool {
        (self.due_ms, self.seq) == (other.due_ms, other.seq)
    }
}
impl Eq for Retry {}
impl PartialOrd for Retry {
    fn partial_cmp(&self, other: &Retry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Retry {
    fn cmp(&self, other: &Retry) -> std::cmp::Ordering {
        (self.due_ms, self.seq).cmp(&(other.due_ms, other.seq))
    }
}

impl RetryQueue {
    pub(super) fn push(&self, due_ms: u64, fired: Fired) {
        let mut heap = self.heap.lock();
        let seq = heap.len() as u64;
        heap.push(Reverse(Retry { due_ms, seq, fired }));
    }

    pub(super) fn take_due(&self, now_ms: u64) -> Vec<Fired> {
        let mut heap = self.heap.lock();
        let mut due = Vec::new();
        while heap.peek().is_some_and(|r| r.0.due_ms <= now_ms) {
            if let Some(Reverse(retry)) = heap.pop() {
                due.push(retry.fired);
            }
        }
        due
    }

    /// Retries waiting.
    pub(super) fn len(&self) -> usize {
        self.heap.lock().len()
    }

    /// Drops the retries whose id matches `pred`; returns how many.
    pub(super) fn remove_where(&self, pred: impl Fn(&[u8]) -> bool) -> usize {
        let mut heap = self.heap.lock();
        let before = heap.len();
        heap.retain(|r| !pred(r.0.fired.id.as_bytes()));
        before - heap.len()
    }

    pub(super) fn drain(&self) -> Vec<Fired> {
        let mut heap = self.heap.lock();
        std::mem::take(&mut *heap)
            .into_sorted_vec()
            .into_iter()
            .rev()
            .map(|r| r.0.fired)
            .collect()
    }
}
