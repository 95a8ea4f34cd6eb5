//! The ticker: turns the clock into ticks and due timers into jobs.
//!
//! Ground rules:
//! - Sleeps are computed from the clock towards the absolute start of the
//!   next tick, so they never accumulate drift; after a stall, every tick
//!   missed is processed in order, one tick at a time across all shards,
//!   so each shard lock is held only for that tick's work. Only shards
//!   with something due are locked (see [`super::shard`]).
//! - Entries taken out of a wheel are always handed on: `send` blocks while
//!   the queue is full (back-pressure), it never drops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::{Shared, pool};
use crate::handler::Fired;
use crate::wheel::Expired;

pub(super) fn spawn(shared: Arc<Shared>, stop: Receiver<()>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("timewheel-ticker".into())
        .spawn(move || {
            loop {
                run_due(&shared);
                let next_tick = shared.last_tick.load(Ordering::Relaxed) + 1;
                let wait_ms = shared
                    .ticks
                    .ms_of(next_tick)
                    .saturating_sub(shared.clock.now_ms());
                match stop.recv_timeout(Duration::from_millis(wait_ms.max(1))) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        })
        .expect("spawn ticker thread")
}

/// Processes every tick begun by now, then every retry due by now.
pub(super) fn run_due(shared: &Shared) -> usize {
    let guard = shared.tick_lock.lock();
    let Some(jobs) = shared.jobs_tx.lock().clone() else {
        return 0; // shut down
    };
    let now_ms = shared.clock.now_ms();
    let target = shared.ticks.elapsed_ticks(now_ms);
    let mut batch: Vec<Expired> = Vec::new();
    let mut inline: Vec<Fired> = Vec::new();
    let mut started = 0;

    let mut hand_off = |fired: Fired, inline: &mut Vec<Fired>| {
        started += 1;
        if shared.inline {
            inline.push(fired);
        } else if let Err(err) = jobs.send(fired) {
            // Only when every worker is gone, i.e. never while running.
            tracing::error!(id = %err.0.id, "worker pool is gone; job kept for shutdown");
            shared.retries.push(0, err.0);
        }
    };

    // Each pass takes the earliest tick any shard has due and advances just
    // the shards due by then; the others are not locked at all. A timer
    // scheduled meanwhile with its deadline already passed (due by
    // `target`) is found by a later pass.
    let mut tick = 0;
    while let Some(due) = next_due(shared).filter(|&due| due <= target) {
        tick = tick.max(due);
        for shard in shared.shards.iter().filter(|s| s.due() <= tick) {
            shard.lock().advance_to(tick, &mut batch);
        }
        for fired in first_attempts(shared, &mut batch) {
            hand_off(fired, &mut inline);
        }
        shared.last_tick.fetch_max(tick, Ordering::Relaxed);
    }
    shared.last_tick.fetch_max(target, Ordering::Relaxed);

    for retry in shared.retries.take_due(now_ms) {
        hand_off(retry, &mut inline);
    }
    drop(jobs);
    drop(guard);
    // Inline handlers run with no lock held, so they may call the engine.
    for fired in inline {
        pool::run_job(shared, fired);
    }
    started
}

/// Counts what the wheels gave up and turns it into first attempts.
fn first_attempts<'a>(
    shared: &Shared,
    batch: &'a mut Vec<Expired>,
) -> impl Iterator<Item = Fired> + 'a {
    let n = batch.len() as u64;
    shared.counters.fired.fetch_add(n, Ordering::Relaxed);
    shared.counters.inflight.fetch_add(n, Ordering::Relaxed);
    let fired_ms = shared.clock.now_ms();
    batch.drain(..).map(move |expired| Fired {
        id: expired.id,
        deadline_ms: expired.deadline_ms,
        fired_ms,
        attempt: 1,
    })
}

/// The earliest tick at which some shard may have work.
fn next_due(shared: &Shared) -> Option<u64> {
    shared
        .shards
        .iter()
        .map(|s| s.due())
        .min()
        .filter(|&due| due != u64::MAX)
}
