//! The engine: a sharded wheel, a ticker thread and a worker pool.
//!
//! ```text
//!  schedule / cancel ──► shard[hash(id) % SHARDS] (Mutex<Wheel> + due tick)
//!                                 │  ticker: every tick, in tick order
//!                                 ▼
//!                        bounded channel ──► N workers ──► Handler
//!                                 ▲                          │ Err / panic
//!                                 └──── retry queue ◄────────┘
//! ```
//!
//! Ground rules:
//! - Each shard's wheel is touched only under its own lock, held for one
//!   O(1) operation or one tick's worth of due entries; no other lock is
//!   taken while a shard lock is held, and no lock at all while a handler
//!   runs.
//! - A timer leaves its wheel exactly once: by `cancel` (which then returns
//!   `Ok`), or by the ticker, which hands it to the pool. Whatever the
//!   ticker took out is invoked: the hand-off blocks rather than drop when
//!   the queue is full (back-pressure only delays the ticker; entries not
//!   yet taken stay cancellable). So for every id, either `cancel` returned
//!   `Ok` or the handler ran — never both, never neither.
//! - Time comes only from the [`Clock`]; with a [`crate::ManualClock`] and
//!   [`Builder::manual_ticks`], tests drive [`Engine::tick`] themselves.
//! - With a [`Journal`], every change is queued to it under the shard
//!   lock, before memory changes (so one id's writes reach Redis in the
//!   order memory saw them), and is refused, changing nothing, while the
//!   journal is down. Every change returns a [`Change`]: wait on it, or
//!   keep its [`Ack`] and check it later. A fired timer
//!   leaves the journal only after its handler succeeded (or gave up).

pub mod census;
mod lag;
mod pool;
mod shard;
mod ticker;

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use hashbrown::DefaultHashBuilder;
use parking_lot::Mutex;

use crate::clock::{Clock, SystemClock};
use crate::handler::{Fired, Handler, RetryPolicy};
use crate::id::{IntoOrderId, InvalidId, OrderId};
use crate::journal::{Ack, AckStatus, Journal, JournalError, JournalStats, Op, Unavailable};
use crate::wheel::{TickMapping, Wheel};
pub use census::DueHistogram;
use lag::LagWindow;
use pool::RetryQueue;
use shard::{Shard, ShardGuard};

pub use crate::limits::{MAX_DELAY_DAYS, MAX_DELAY_MS};

/// Number of wheel shards. A power of two well above the core count keeps
/// two threads from contending for one shard most of the time.
#[cfg(not(fuzzing))]
pub const SHARDS: usize = 32;

/// Number of wheel shards (fuzz build): two still exercise the ticker's
/// skipping of idle shards, at a sixteenth of the cost of building an engine.
#[cfg(fuzzing)]
pub const SHARDS: usize = 2;

/// Why a timer could not be scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleError {
    /// The id is pending; carries its current deadline (Unix ms).
    AlreadyScheduled {
        /// When the pending timer fires (Unix ms).
        deadline_ms: u64,
    },
    /// `reschedule` of an id that is not pending.
    NotScheduled,
    /// The id is empty, too long, or not printable ASCII.
    InvalidId,
    /// The deadline is more than [`MAX_DELAY_MS`] away.
    DelayTooLong,
    /// The engine is shutting down.
    ShutDown,
    /// The journal cannot reach Redis: nothing was changed.
    JournalUnavailable,
}

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScheduleError::AlreadyScheduled { deadline_ms } => {
                write!(f, "already scheduled for {deadline_ms}")
            }
            ScheduleError::NotScheduled => f.write_str("not scheduled"),
            ScheduleError::InvalidId => f.write_str("invalid id"),
            ScheduleError::DelayTooLong => {
                write!(f, "delay longer than {MAX_DELAY_DAYS} days")
            }
            ScheduleError::ShutDown => f.write_str("engine is shutting down"),
            ScheduleError::JournalUnavailable => {
                f.write_str("journal unavailable: Redis is unreachable, nothing was changed")
            }
        }
    }
}

impl std::error::Error for ScheduleError {}

impl From<Unavailable> for ScheduleError {
    fn from(_: Unavailable) -> ScheduleError {
        ScheduleError::JournalUnavailable
    }
}

impl From<InvalidId> for ScheduleError {
    fn from(_: InvalidId) -> ScheduleError {
        ScheduleError::InvalidId
    }
}

/// A change the engine made in memory, and where its journal write
/// stands. Without a journal it is durable at once. Either
/// [`wait`](Change::wait) for Redis to have it, or take its [`Ack`] with
/// [`into_parts`](Change::into_parts) and check [`Engine::ack_status`]
/// later (an event loop does that). Until it is durable, do not tell
/// anyone it happened: a crash could still undo it.
#[must_use = "a change is acknowledged only once it is durable: wait for it or keep its ack"]
#[derive(Debug)]
pub struct Change<'e, T> {
    value: T,
    ack: Ack,
    engine: &'e Engine,
}

impl<T> Change<'_, T> {
    /// What the change did (the deadline it set, for a schedule).
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The journal write to check with [`Engine::ack_status`].
    pub fn ack(&self) -> Ack {
        self.ack
    }

    /// Whether Redis already has it (always, without a journal).
    pub fn is_durable(&self) -> bool {
        self.engine.ack_status(self.ack) == AckStatus::Durable
    }

    /// Blocks until Redis has the write, then returns the value;
    /// `Err` if the journal gave up on it (at shutdown, Redis still down).
    pub fn wait(self) -> Result<T, ScheduleError> {
        self.engine.wait_durable(self.ack)?;
        Ok(self.value)
    }

    /// The value and the ack, for a caller that checks durability itself.
    pub fn into_parts(self) -> (T, Ack) {
        (self.value, self.ack)
    }
}

/// A counter snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Timers waiting in the wheel.
    pub pending: usize,
    /// Timers the wheel handed to the pool.
    pub fired_total: u64,
    /// `cancel` calls that succeeded.
    pub cancelled_total: u64,
    /// Handler attempts that failed and were scheduled again.
    pub retries_total: u64,
    /// Handler calls that succeeded.
    pub delivered_total: u64,
    /// Timers whose every attempt failed.
    pub dead_letter_total: u64,
    /// Fired timers whose handler has not yet succeeded or given up.
    pub inflight: u64,
    /// The tick length in milliseconds.
    pub tick_ms: u64,
    /// How long the oldest tick not yet processed has been due (0 when the
    /// ticker keeps up).
    pub tick_lag_ms: u64,
    /// p99 over the last minute of `delivered - deadline` (ms), per
    /// successful delivery; 0 when nothing was delivered in that minute.
    /// See [`lag`].
    pub delivery_lag_ms: u64,
}

/// A timer that had not completed when the engine shut down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The order id.
    pub id: OrderId,
    /// When it was due (Unix ms).
    pub deadline_ms: u64,
    /// Attempts already made: 0 for a timer still in the wheel, more for
    /// one that fired and was waiting for a retry.
    pub attempts: u32,
}

/// The tick of an engine built without [`Builder::tick`].
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);

/// Configures and starts an [`Engine`].
pub struct Builder {
    tick: Duration,
    workers: usize,
    queue_capacity: usize,
    clock: Arc<dyn Clock>,
    manual_ticks: bool,
    retry: RetryPolicy,
    journal: Option<Journal>,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            tick: DEFAULT_TICK,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue_capacity: 65_536,
            clock: Arc::new(SystemClock::new()),
            manual_ticks: false,
            retry: RetryPolicy::default(),
            journal: None,
        }
    }
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("tick", &self.tick)
            .field("workers", &self.workers)
            .field("queue_capacity", &self.queue_capacity)
            .field("manual_ticks", &self.manual_ticks)
            .field("retry", &self.retry)
            .field("journal", &self.journal)
            .finish()
    }
}

impl Builder {
    /// The tick: timers fire within one tick after their deadline. At least
    /// 1 ms; default 1 s.
    pub fn tick(mut self, tick: Duration) -> Builder {
        self.tick = tick.max(Duration::from_millis(1));
        self
    }

    /// Worker threads running the handler; default: one per core. With 0,
    /// handlers run on the thread that calls [`Engine::tick`] (for tests and
    /// single-threaded embedding with [`Builder::manual_ticks`]).
    pub fn workers(mut self, workers: usize) -> Builder {
        self.workers = workers;
        self
    }

    /// Capacity of the hand-off queue between ticker and workers.
    pub fn queue_capacity(mut self, capacity: usize) -> Builder {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// The time source; default [`SystemClock`].
    pub fn clock(mut self, clock: impl Clock) -> Builder {
        self.clock = Arc::new(clock);
        self
    }

    /// Start no ticker thread: the owner calls [`Engine::tick`].
    pub fn manual_ticks(mut self) -> Builder {
        self.manual_ticks = true;
        self
    }

    /// How failed handler attempts are retried.
    pub fn retry(mut self, retry: RetryPolicy) -> Builder {
        self.retry = RetryPolicy {
            max_attempts: retry.max_attempts.max(1),
            ..retry
        };
        self
    }

    /// Makes the engine durable: every change is written to `journal`
    /// before it is acknowledged, and the wheel is rebuilt from it when the
    /// engine is built (see [`Builder::build`]).
    pub fn journal(mut self, journal: Journal) -> Builder {
        self.journal = Some(journal);
        self
    }

    /// Starts an engine whose close-order task is `handler`: a closure
    /// `Fn(&Fired) -> HandlerResult` or any [`Handler`]. With a journal,
    /// first rebuilds the wheel from it: timers still to come go back into
    /// the wheel; overdue ones are treated as already firing (they go
    /// straight to the workers, oldest first, and `cancel` answers
    /// [`ScheduleError::NotScheduled`] for them: the previous run may have
    /// delivered them). Fails only if the journal cannot be read back.
    pub fn build(self, handler: impl Handler) -> Result<Engine, JournalError> {
        let tick_ms = self.tick.as_millis().min(u64::MAX as u128) as u64;
        let now_ms = self.clock.now_ms();
        // Align ticks to whole multiples of the tick, so that with a 1 s tick
        // timers fire on the wall-clock second.
        let ticks = TickMapping {
            origin_ms: now_ms - now_ms % tick_ms,
            tick_ms,
        };
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(self.queue_capacity);
        // One hasher for the shard choice and every shard's index: each id
        // is hashed once per call.
        let hasher = DefaultHashBuilder::default();
        let shared = Arc::new(Shared {
            shards: (0..SHARDS)
                .map(|_| Shard::new(Wheel::with_hasher(ticks, hasher.clone())))
                .collect(),
            hasher,
            ticks,
            clock: self.clock,
            handler: Arc::new(handler),
            retry: self.retry,
            retries: RetryQueue::default(),
            inline: self.workers == 0,
            jobs_tx: Mutex::new(Some(jobs_tx)),
            tick_lock: Mutex::new(()),
            last_tick: AtomicU64::new(0),
            shut_down: AtomicBool::new(false),
            counters: Counters::default(),
            lag: LagWindow::default(),
            journal: self.journal,
        });
        if let Some(journal) = &shared.journal {
            // In cluster mode partitions are loaded as they are taken.
            if !journal.is_cluster() {
                restore(&shared, journal)?;
            }
            journal.start();
        }
        let workers = (0..self.workers)
            .map(|n| pool::spawn_worker(n, shared.clone(), jobs_rx.clone()))
            .collect();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let ticker = (!self.manual_ticks).then(|| ticker::spawn(shared.clone(), stop_rx));
        Ok(Engine {
            shared,
            threads: Arc::new(Mutex::new(Threads {
                stop_tx: Some(stop_tx),
                ticker,
                workers,
            })),
        })
    }
}

/// Loads the journal into the wheel (before any thread runs).
fn restore(shared: &Shared, journal: &Journal) -> Result<(), JournalError> {
    let now_ms = shared.clock.now_ms();
    let latest = now_ms.saturating_add(MAX_DELAY_MS);
    let mut overdue = 0;
    journal.restore(now_ms, |entry| {
        if entry.overdue {
            overdue += 1;
            // Already firing: not in the wheel, so not cancellable. The
            // retry queue hands them over oldest first at the first tick.
            shared.retries.push(
                entry.deadline_ms,
                Fired {
                    id: entry.id,
                    deadline_ms: entry.deadline_ms,
                    fired_ms: now_ms,
                    attempt: 1,
                },
            );
        } else {
            let (shard, hash) = shared.shard(entry.id.as_bytes());
            // The set has each member once, so the insert cannot collide.
            let _ = shard
                .lock()
                .insert_hashed(hash, entry.id, entry.deadline_ms.min(latest));
        }
    })?;
    shared.counters.fired.fetch_add(overdue, Ordering::Relaxed);
    shared
        .counters
        .inflight
        .fetch_add(overdue, Ordering::Relaxed);
    Ok(())
}

#[derive(Default)]
struct Counters {
    fired: AtomicU64,
    retries: AtomicU64,
    delivered: AtomicU64,
    dead_letters: AtomicU64,
    inflight: AtomicU64,
}

/// State shared by the API, the ticker and the workers.
struct Shared {
    shards: Box<[Shard]>,
    /// The hasher of every shard's index, also used to pick the shard.
    hasher: DefaultHashBuilder,
    ticks: TickMapping,
    clock: Arc<dyn Clock>,
    handler: Arc<dyn Handler>,
    retry: RetryPolicy,
    retries: RetryQueue,
    /// No workers: handlers run on the thread calling `tick`.
    inline: bool,
    /// Taken (closed) at shutdown so the workers drain and stop.
    jobs_tx: Mutex<Option<Sender<Fired>>>,
    /// Serialises `tick` between the ticker and manual callers.
    tick_lock: Mutex<()>,
    /// The last tick processed.
    last_tick: AtomicU64,
    shut_down: AtomicBool,
    counters: Counters,
    /// Deadline-to-delivery times of the last minute.
    lag: LagWindow,
    journal: Option<Journal>,
}

impl Shared {
    /// The shard that holds `id`, and the id's hash for that shard's index.
    fn shard(&self, id: &[u8]) -> (&Shard, u64) {
        // Middle bits: the wheel's own table uses the low and the top ones.
        let hash = self.hasher.hash_one(id);
        (&self.shards[(hash >> 32) as usize % SHARDS], hash)
    }
}

struct Threads {
    stop_tx: Option<Sender<()>>,
    ticker: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

/// A running timer engine. Cheap to clone; all clones drive the same engine.
///
/// ```
/// use std::time::Duration;
/// use timewheel::{Engine, Fired};
///
/// let engine = Engine::builder()
///     .tick(Duration::from_millis(10))
///     .build(|fired: &Fired| {
///         println!("closing unpaid order {}", fired.id);
///         Ok(())
///     })?;
/// // Each change answers once it is durable (at once without a journal).
/// let deadline_ms = engine.schedule("order-42", Duration::from_secs(30 * 60))?.wait()?;
/// assert!(deadline_ms > engine.now_ms());
/// engine.cancel("order-42")?.wait()?; // paid in time: it will never fire
/// engine.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    threads: Arc<Mutex<Threads>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("tick_ms", &self.shared.ticks.tick_ms)
            .field("pending", &self.len())
            .finish()
    }
}

impl Engine {
    /// A [`Builder`] with the defaults: 1 s tick, one worker per core, no journal.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Schedules `id` to fire `delay` from now; the change's value is the
    /// deadline (Unix ms).
    pub fn schedule(
        &self,
        id: impl IntoOrderId,
        delay: Duration,
    ) -> Result<Change<'_, u64>, ScheduleError> {
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        if delay_ms > MAX_DELAY_MS {
            return Err(ScheduleError::DelayTooLong);
        }
        self.schedule_at(id, self.now_ms() + delay_ms)
    }

    /// Schedules `id` to fire at `deadline_ms` (Unix ms); a deadline already
    /// passed fires at the next tick. The change's value is the deadline.
    /// [`ScheduleError::AlreadyScheduled`] if `id` is pending.
    pub fn schedule_at(
        &self,
        id: impl IntoOrderId,
        deadline_ms: u64,
    ) -> Result<Change<'_, u64>, ScheduleError> {
        let id = self.checked(id, deadline_ms)?;
        let (mut wheel, hash) = self.open_shard(id.as_bytes())?;
        // With a journal, refuse a duplicate before it is written to Redis.
        if self.shared.journal.is_some()
            && let Some(existing) = wheel.get_hashed(hash, id.as_bytes())
        {
            return Err(ScheduleError::AlreadyScheduled {
                deadline_ms: existing,
            });
        }
        let ack = self.journal_put(&id, deadline_ms)?;
        match wheel.insert_hashed(hash, id, deadline_ms) {
            Ok(()) => Ok(self.change(deadline_ms, ack)),
            Err(existing) => Err(ScheduleError::AlreadyScheduled {
                deadline_ms: existing.deadline_ms,
            }),
        }
    }

    /// Moves a pending timer to `deadline_ms`; the change's value is the
    /// new deadline. [`ScheduleError::NotScheduled`] if `id` is not pending.
    pub fn reschedule_at(
        &self,
        id: impl IntoOrderId,
        deadline_ms: u64,
    ) -> Result<Change<'_, u64>, ScheduleError> {
        let id = self.checked(id, deadline_ms)?;
        let (mut wheel, hash) = self.open_shard(id.as_bytes())?;
        if wheel.get_hashed(hash, id.as_bytes()).is_none() {
            return Err(ScheduleError::NotScheduled);
        }
        let ack = self.journal_put(&id, deadline_ms)?;
        wheel.set_deadline_hashed(hash, id.as_bytes(), deadline_ms);
        Ok(self.change(deadline_ms, ack))
    }

    /// Schedules `id`, or moves it if it is pending (Redis `ZADD`
    /// semantics); the change's value is the deadline.
    pub fn upsert_at(
        &self,
        id: impl IntoOrderId,
        deadline_ms: u64,
    ) -> Result<Change<'_, u64>, ScheduleError> {
        let id = self.checked(id, deadline_ms)?;
        let (mut wheel, hash) = self.open_shard(id.as_bytes())?;
        let ack = self.journal_put(&id, deadline_ms)?;
        if wheel
            .set_deadline_hashed(hash, id.as_bytes(), deadline_ms)
            .is_none()
        {
            let inserted = wheel.insert_hashed(hash, id, deadline_ms);
            debug_assert!(inserted.is_ok(), "upsert: insert after miss failed");
        }
        Ok(self.change(deadline_ms, ack))
    }

    /// Cancels a pending timer: once this returns `Ok`, its handler will
    /// never run (and once the change is durable, no later process loads
    /// it). [`ScheduleError::NotScheduled`]: it was unknown, or has already
    /// been handed to the workers, so it is firing or has fired.
    /// [`ScheduleError::JournalUnavailable`]: nothing changed, it will fire.
    pub fn cancel(&self, id: impl AsRef<[u8]>) -> Result<Change<'_, ()>, ScheduleError> {
        let id = id.as_ref();
        let (shard, hash) = self.shared.shard(id);
        let mut wheel = shard.lock();
        let mut ack = Ack::DURABLE;
        if let Some(journal) = &self.shared.journal {
            if wheel.get_hashed(hash, id).is_none() {
                return Err(ScheduleError::NotScheduled);
            }
            let Ok(id) = OrderId::new(id) else {
                unreachable!("a pending id is valid");
            };
            ack = journal.push(Op::Cancel { id })?;
        }
        // The wheel counts what it removed, under the lock already held: an
        // engine-wide atomic here would be one more locked instruction per
        // cancel, on a cache line that every core writes.
        if wheel.remove_hashed(hash, id) {
            Ok(self.change((), ack))
        } else {
            Err(ScheduleError::NotScheduled)
        }
    }

    /// Loads timers read back from the journal (cluster mode: a partition
    /// just taken). Timers still to come go into the wheel; overdue ones
    /// are treated as already firing, as after a restart (they go to the
    /// workers, oldest first, and cannot be cancelled: the previous owner
    /// may have delivered them). An id already pending here keeps its
    /// deadline. Returns how many were overdue.
    pub fn load(&self, entries: impl IntoIterator<Item = (OrderId, u64)>) -> u64 {
        let now_ms = self.now_ms();
        let latest = now_ms.saturating_add(MAX_DELAY_MS);
        let mut overdue = 0;
        for (id, deadline_ms) in entries {
            if deadline_ms <= now_ms {
                overdue += 1;
                self.shared.retries.push(
                    deadline_ms,
                    Fired {
                        id,
                        deadline_ms,
                        fired_ms: now_ms,
                        attempt: 1,
                    },
                );
            } else {
                let Ok((mut wheel, hash)) = self.open_shard(id.as_bytes()) else {
                    break;
                };
                let _ = wheel.insert_hashed(hash, id, deadline_ms.min(latest));
            }
        }
        let c = &self.shared.counters;
        c.fired.fetch_add(overdue, Ordering::Relaxed);
        c.inflight.fetch_add(overdue, Ordering::Relaxed);
        overdue
    }

    /// Forgets every timer whose id matches `pred` (cluster mode: the
    /// partitions this node stopped owning), pending or waiting for a
    /// retry; their new owner fires them. A handler already running still
    /// finishes. Returns how many were forgotten.
    pub fn forget_where(&self, pred: impl Fn(&[u8]) -> bool) -> usize {
        let mut forgotten = 0;
        for shard in self.shared.shards.iter() {
            forgotten += shard.lock().remove_where(&pred).len();
        }
        let retries = self.shared.retries.remove_where(&pred);
        self.shared
            .counters
            .inflight
            .fetch_sub(retries as u64, Ordering::Relaxed);
        forgotten + retries
    }

    fn change<T>(&self, value: T, ack: Ack) -> Change<'_, T> {
        Change {
            value,
            ack,
            engine: self,
        }
    }

    /// Where the journal write behind `ack` (from [`Change::ack`]) stands.
    pub fn ack_status(&self, ack: Ack) -> AckStatus {
        match &self.shared.journal {
            Some(journal) => journal.status(ack),
            None => AckStatus::Durable,
        }
    }

    /// Blocks until the write behind `ack` is in Redis.
    fn wait_durable(&self, ack: Ack) -> Result<(), ScheduleError> {
        match &self.shared.journal {
            Some(journal) if ack != Ack::DURABLE => Ok(journal.wait(ack)?),
            _ => Ok(()),
        }
    }

    /// Calls `listener` whenever journal writes become durable (or fail),
    /// on the journal's thread; it must not block. Without a journal it is
    /// never called.
    pub fn on_durable(&self, listener: impl Fn() + Send + Sync + 'static) {
        if let Some(journal) = &self.shared.journal {
            journal.on_ack(listener);
        }
    }

    /// The journal, if the engine is durable.
    pub fn journal(&self) -> Option<&Journal> {
        self.shared.journal.as_ref()
    }

    /// The journal's health and counters, if the engine is durable.
    pub fn journal_stats(&self) -> Option<JournalStats> {
        self.shared.journal.as_ref().map(Journal::stats)
    }

    /// Queues `ZADD` for `id` if there is a journal. Shard lock held.
    fn journal_put(&self, id: &OrderId, deadline_ms: u64) -> Result<Ack, Unavailable> {
        match &self.shared.journal {
            Some(journal) => journal.push(Op::Put {
                id: id.clone(),
                deadline_ms,
            }),
            None => Ok(Ack::DURABLE),
        }
    }

    /// The deadline (Unix ms) of a pending timer.
    pub fn deadline(&self, id: impl AsRef<[u8]>) -> Option<u64> {
        let id = id.as_ref();
        let (shard, hash) = self.shared.shard(id);
        shard.lock().get_hashed(hash, id)
    }

    /// Pending timers.
    pub fn len(&self) -> usize {
        self.shared.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The engine's current time, Unix ms.
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// The tick length in milliseconds.
    pub fn tick_ms(&self) -> u64 {
        self.shared.ticks.tick_ms
    }

    /// A snapshot of the counters `INFO` and `/metrics` show.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let (mut pending, mut cancelled_total) = (0, 0);
        for shard in self.shared.shards.iter() {
            let wheel = shard.lock();
            pending += wheel.len();
            cancelled_total += wheel.removed_total();
        }
        Stats {
            pending,
            fired_total: c.fired.load(Ordering::Relaxed),
            cancelled_total,
            retries_total: c.retries.load(Ordering::Relaxed),
            delivered_total: c.delivered.load(Ordering::Relaxed),
            dead_letter_total: c.dead_letters.load(Ordering::Relaxed),
            inflight: c.inflight.load(Ordering::Relaxed),
            tick_ms: self.shared.ticks.tick_ms,
            tick_lag_ms: self.tick_lag_ms(),
            delivery_lag_ms: self.shared.lag.p99(self.now_ms()),
        }
    }

    fn tick_lag_ms(&self) -> u64 {
        let ticks = self.shared.ticks;
        let now_ms = self.now_ms();
        let oldest_unprocessed = self.shared.last_tick.load(Ordering::Relaxed) + 1;
        now_ms.saturating_sub(ticks.ms_of(oldest_unprocessed))
    }

    /// Processes every tick that has begun by now: hands due timers (and due
    /// retries) to the workers, tick by tick in deadline order (timers due in
    /// the same tick in no particular order). The ticker thread calls
    /// this; so do tests with [`Builder::manual_ticks`]. Returns the number
    /// of handler attempts started or queued.
    pub fn tick(&self) -> usize {
        ticker::run_due(&self.shared)
    }

    /// Stops the ticker, lets queued and running handlers finish, and returns
    /// the timers that had not completed: those still in the wheel and those
    /// waiting for a retry. Later calls return nothing.
    pub fn shutdown(&self) -> Vec<Pending> {
        if self.shared.shut_down.swap(true, Ordering::SeqCst) {
            return Vec::new();
        }
        let mut threads = self.threads.lock();
        drop(threads.stop_tx.take());
        if let Some(ticker) = threads.ticker.take() {
            let _ = ticker.join();
        }
        // Closing the queue lets the workers drain what was handed over.
        let _tick = self.shared.tick_lock.lock();
        drop(self.shared.jobs_tx.lock().take());
        for worker in threads.workers.drain(..) {
            let _ = worker.join();
        }
        // Workers queued the removal of what they delivered: flush it.
        if let Some(journal) = &self.shared.journal {
            journal.close();
        }
        let mut pending: Vec<Pending> = self
            .shared
            .shards
            .iter()
            .flat_map(|s| s.lock().drain())
            .map(|e| Pending {
                id: e.id,
                deadline_ms: e.deadline_ms,
                attempts: 0,
            })
            .collect();
        pending.extend(self.shared.retries.drain().into_iter().map(|f| Pending {
            id: f.id,
            deadline_ms: f.deadline_ms,
            attempts: f.attempt,
        }));
        pending
    }

    /// Locks the shard of `id` for a change, unless shutdown has begun.
    /// Checked under the lock: `shutdown` sets the flag before it drains
    /// the shards, so a timer is either drained (and returned) or refused.
    fn open_shard(&self, id: &[u8]) -> Result<(ShardGuard<'_>, u64), ScheduleError> {
        let (shard, hash) = self.shared.shard(id);
        let mut wheel = shard.lock();
        if self.shared.shut_down.load(Ordering::SeqCst) {
            return Err(ScheduleError::ShutDown);
        }
        // The ticker skips shards with nothing due, so this one may be
        // behind the ticks already processed.
        wheel.catch_up(self.shared.last_tick.load(Ordering::Relaxed));
        Ok((wheel, hash))
    }

    fn checked(&self, id: impl IntoOrderId, deadline_ms: u64) -> Result<OrderId, ScheduleError> {
        if self.shared.shut_down.load(Ordering::Relaxed) {
            return Err(ScheduleError::ShutDown);
        }
        let id = id.into_order_id()?;
        if deadline_ms > self.now_ms().saturating_add(MAX_DELAY_MS) {
            return Err(ScheduleError::DelayTooLong);
        }
        Ok(id)
    }
}

/// Hand-off to the pool used by the ticker.
type JobReceiver = Receiver<Fired>;
