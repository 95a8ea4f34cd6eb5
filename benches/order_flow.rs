// cargo bench --bench order_flow
//
//! The order-timeout workload, run against the engine and three baselines,
//! first by one thread with the structure to itself, then the way a
//! multi-threaded shop would share it: each baseline behind one mutex, used
//! by 1 and by 2 threads at once (`order_flow_shared`).
//!
//! One iteration is one order's life as the shop sees it: a new order is
//! scheduled with a random 1..=1800 s timeout, and with probability 0.8 a
//! random order still pending is cancelled (it got paid). Simulated time
//! moves forward one second every `pending / 288` iterations, and whatever
//! is due fires. At that rate the pending count stays near `pending` and
//! about 20% of orders expire (0.2 expirations per iteration): with a
//! per-order cancel rate `a` per second, `E[exp(-a * D)] = 0.2` for `D`
//! uniform on 1..1800 s gives `a ≈ 5 / 1800`, and `pending = 0.8 / (a * dt)`.
//!
//! Every structure sees the same sequence of operations (one seeded RNG and
//! one clock per run, both in the harness) and must agree on what fired:
//! [`check_agreement`] runs before the benchmarks and panics otherwise, and
//! every timed run ends (outside the timing) with a check that the
//! structure's pending count matches the harness's.
//!
//! Baselines get the easy path: a 14-byte `[u8; 14]` key that is `Copy`, no
//! id validation, and hashbrown's foldhash like the engine's own index.
//!
//! The RNG draws and the shop's list of open orders sit inside the timed
//! loop (which order gets paid depends on which are still open), identical
//! for every structure; [`harness_overhead`] prints their cost at start so
//! it can be subtracted (about 15 ns per step at 10k pending, 100 ns at 1M,
//! where the list no longer fits in cache).
//!
//! Shared runs: each thread is a shop with its own orders, RNG and list of
//! open orders; the simulated clock is shared and moves one second every
//! `pending / 288` steps of each thread, so the pending count still stays
//! near `pending`. A cancel may now race with the second that fires its
//! order; it then returns `false`, as it would in production. Every timed
//! run ends with a check that scheduled = cancelled + fired + pending.
//!
//! Criterion measures one structure after another; on a shared machine the
//! load changes between them. `ORDER_FLOW_ROUNDS=7 cargo bench --bench
//! order_flow` instead runs every structure in turn, round after round, and
//! prints each one's median wall and on-CPU time per step and its ratio to
//! the engine's in the same round (median over rounds; [`ratios`]), without
//! criterion. On-CPU time leaves out the time a thread waited for a core.

mod common;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use hashbrown::HashMap;
use timewheel::{Engine, ManualClock};
use tokio_util::time::{DelayQueue, delay_queue};

use crate::common::{Id, MAX_DELAY_S, PENDING, counting_engine, order_id};

const SEED: u64 = 0x5eed_0f0d;

/// What the workload needs from a timer structure.
trait Timers {
    fn schedule(&mut self, id: Id, delay_s: u64);
    /// Whether `id` was pending.
    fn cancel(&mut self, id: &Id) -> bool;
    /// Moves time forward one second and fires what is due; returns how
    /// many fired.
    async fn advance_second(&mut self) -> u64;
    fn len(&self) -> usize;
    /// The simulated second, when several threads share the structure and
    /// its clock (see [`Sharing`]); `None` when the workload keeps time.
    fn shared_now(&self) -> Option<u64> {
        None
    }
}

/// The harness: the shop's side of the workload, identical for every
/// structure.
struct Workload {
    rng: fastrand::Rng,
    next_order: u64,
    now_s: u64,
    /// Orders the shop may still cancel: (order number, deadline). Entries
    /// whose deadline has passed are dropped lazily when drawn.
    live: Vec<(u64, u64)>,
    iters_per_second: u64,
    phase: u64,
    scheduled: u64,
    cancelled: u64,
    fired: u64,
    /// Cancels that found the order already fired (shared runs only).
    missed: u64,
}

impl Workload {
    fn new(pending: usize) -> Workload {
        Workload::for_thread(pending, 0, 1)
    }

    /// Thread `thread` of `threads` sharing one structure at `pending`:
    /// its own RNG and order numbers (`thread << 40` upwards).
    fn for_thread(pending: usize, thread: u64, threads: usize) -> Workload {
        Workload {
            rng: fastrand::Rng::with_seed(SEED + thread),
            next_order: thread << 40,
            now_s: 0,
            live: Vec::with_capacity(pending / threads * 3 / 2),
            iters_per_second: (pending as u64 / 288).max(1),
            phase: 0,
            scheduled: 0,
            cancelled: 0,
            fired: 0,
            missed: 0,
        }
    }

    fn schedule_one(&mut self, timers: &mut impl Timers) {
        let n = self.next_order;
        self.next_order += 1;
        let delay_s = self.rng.u64(1..=MAX_DELAY_S);
        timers.schedule(order_id(n), delay_s);
        self.live.push((n, self.now_s + delay_s));
        self.scheduled += 1;
    }

    /// Schedules `count` orders at time 0, outside any timing.
    fn prefill(&mut self, timers: &mut impl Timers, count: usize) {
        for _ in 0..count {
            self.schedule_one(timers);
        }
    }

    /// One order's life.
    async fn step(&mut self, timers: &mut impl Timers) {
        if let Some(now_s) = timers.shared_now() {
            self.now_s = now_s;
        }
        self.schedule_one(timers);
        if self.rng.u8(0..5) < 4 {
            // The order just scheduled is live, so this ends.
            loop {
                let (n, deadline_s) = self.live.swap_remove(self.rng.usize(..self.live.len()));
                if deadline_s > self.now_s {
                    if timers.cancel(&order_id(n)) {
                        self.cancelled += 1;
                    } else {
                        // Another thread moved the clock past its deadline.
                        debug_assert!(timers.shared_now().is_some(), "order {n} was not pending");
                        self.missed += 1;
                    }
                    break;
                }
            }
        }
        self.phase += 1;
        if self.phase == self.iters_per_second {
            self.phase = 0;
            self.now_s += 1;
            self.fired += timers.advance_second().await;
        }
    }

    /// Orders that should be pending: scheduled, not cancelled, not due.
    fn pending(&self) -> usize {
        self.live.iter().filter(|o| o.1 > self.now_s).count()
    }

    /// Panics unless `timers` agrees with the harness.
    fn verify(&self, timers: &impl Timers) {
        assert_eq!(timers.len(), self.pending(), "pending count disagrees");
        assert_eq!(
            self.fired,
            self.scheduled - self.cancelled - self.pending() as u64,
            "fired count disagrees"
        );
    }
}

/// Runs `iters` steps and returns the time they took. Futures of the
/// synchronous structures complete on their first poll.
fn run_sync(timers: &mut impl Timers, wl: &mut Workload, iters: u64) -> Duration {
    ready(async {
        let start = Instant::now();
        for _ in 0..iters {
            wl.step(timers).await;
        }
        start.elapsed()
    })
}

/// The output of a future that completes on its first poll.
fn ready<T>(fut: impl Future<Output = T>) -> T {
    let Poll::Ready(out) = pin!(fut).poll(&mut Context::from_waker(Waker::noop())) else {
        unreachable!("a synchronous structure suspended");
    };
    out
}

/// On-CPU nanoseconds of the runs so far, summed over their threads; read
/// and reset by [`ratios`]. On a machine shared with other jobs, time spent
/// waiting for a core shows in wall time but not here.
static CPU_NS: AtomicU64 = AtomicU64::new(0);

/// Runs `f`, adding the calling thread's on-CPU time to [`CPU_NS`].
fn on_cpu<R>(f: impl FnOnce() -> R) -> R {
    let start = thread_cpu_ns();
    let out = f();
    CPU_NS.fetch_add(thread_cpu_ns().saturating_sub(start), Ordering::Relaxed);
    out
}

/// The calling thread's on-CPU time (Linux `schedstat`; 0 elsewhere).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// ---- timewheel ------------------------------------------------------------

/// The real engine: manual clock, manual ticks, handler inline.
struct Wheel {
    engine: Engine,
    clock: ManualClock,
    fired: Arc<AtomicU64>,
    seen: u64,
}

impl Wheel {
    fn new() -> Wheel {
        let (engine, clock, fired) = counting_engine();
        Wheel {
            engine,
            clock,
            fired,
            seen: 0,
        }
    }
}

impl Timers for Wheel {
    fn schedule(&mut self, id: Id, delay_s: u64) {
        let scheduled = self.engine.schedule(id, Duration::from_secs(delay_s));
        debug_assert!(scheduled.is_ok(), "{scheduled:?}");
    }

    fn cancel(&mut self, id: &Id) -> bool {
        self.engine.cancel(id).is_ok()
    }

    async fn advance_second(&mut self) -> u64 {
        self.clock.advance(1000);
        self.engine.tick();
        let total = self.fired.load(Ordering::Relaxed);
        let fired = total - self.seen;
        self.seen = total;
        fired
    }

    fn len(&self) -> usize {
        self.engine.len()
    }
}

// ---- BinaryHeap with lazy deletion -----------------------------------------

/// A min-heap of (deadline, seq, id); cancel only removes from the map, and
/// a popped item whose seq no longer matches the map is skipped.
#[derive(Default)]
struct Heap {
    heap: BinaryHeap<Reverse<(u64, u64, Id)>>,
    map: HashMap<Id, (u64, u64)>,
    now_s: u64,
    seq: u64,
}

impl Timers for Heap {
    fn schedule(&mut self, id: Id, delay_s: u64) {
        let deadline = self.now_s + delay_s;
        self.seq += 1;
        self.heap.push(Reverse((deadline, self.seq, id)));
        self.map.insert(id, (deadline, self.seq));
    }

    fn cancel(&mut self, id: &Id) -> bool {
        self.map.remove(id).is_some()
    }

    async fn advance_second(&mut self) -> u64 {
        self.now_s += 1;
        let mut fired = 0;
        while let Some(&Reverse((deadline, seq, id))) = self.heap.peek() {
            if deadline > self.now_s {
                break;
            }
            self.heap.pop();
            if self.map.get(&id).is_some_and(|&(_, s)| s == seq) {
                self.map.remove(&id);
                black_box(id);
                fired += 1;
            }
        }
        fired
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

// ---- BTreeMap ------------------------------------------------------------

/// An ordered map keyed by (deadline, id), plus id -> deadline for cancel.
#[derive(Default)]
struct BTree {
    tree: BTreeMap<(u64, Id), ()>,
    deadlines: HashMap<Id, u64>,
    now_s: u64,
}

impl Timers for BTree {
    fn schedule(&mut self, id: Id, delay_s: u64) {
        let deadline = self.now_s + delay_s;
        self.tree.insert((deadline, id), ());
        self.deadlines.insert(id, deadline);
    }

    fn cancel(&mut self, id: &Id) -> bool {
        match self.deadlines.remove(id) {
            Some(deadline) => self.tree.remove(&(deadline, *id)).is_some(),
            None => false,
        }
    }

    async fn advance_second(&mut self) -> u64 {
        self.now_s += 1;
        let mut fired = 0;
        while let Some(entry) = self.tree.first_entry() {
            if entry.key().0 > self.now_s {
                break;
            }
            let ((_, id), ()) = entry.remove_entry();
            self.deadlines.remove(&id);
            black_box(id);
            fired += 1;
        }
        fired
    }

    fn len(&self) -> usize {
        self.deadlines.len()
    }
}

// ---- tokio-util DelayQueue -------------------------------------------------

/// tokio-util's `DelayQueue` in a current-thread runtime with paused time:
/// `tokio::time::advance` moves the clock and lets the time driver fire the
/// queue's internal sleep; `poll_expired` then drains what is due.
struct Delay {
    queue: DelayQueue<Id>,
    keys: HashMap<Id, delay_queue::Key>,
}

impl Delay {
    /// Must be called inside the paused runtime.
    fn new() -> Delay {
        Delay {
            queue: DelayQueue::new(),
            keys: HashMap::new(),
        }
    }
}

impl Timers for Delay {
    fn schedule(&mut self, id: Id, delay_s: u64) {
        let key = self.queue.insert(id, Duration::from_secs(delay_s));
        self.keys.insert(id, key);
    }

    fn cancel(&mut self, id: &Id) -> bool {
        match self.keys.remove(id) {
            Some(key) => {
                self.queue.remove(&key);
                true
            }
            None => false,
        }
    }

    async fn advance_second(&mut self) -> u64 {
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut cx = Context::from_waker(Waker::noop());
        let mut fired = 0;
        loop {
            match self.queue.poll_expired(&mut cx) {
                Poll::Ready(Some(expired)) => {
                    self.keys.remove(expired.get_ref());
                    fired += 1;
                }
                Poll::Ready(None) => break,
                // The queue re-arms its sleep as it goes; a sleep armed for
                // an instant already passed completes only once the time
                // driver has run, so let it run while anything is due.
                Poll::Pending => match self.queue.peek() {
                    Some(key) if self.queue.deadline(&key) <= tokio::time::Instant::now() => {
                        tokio::task::yield_now().await;
                    }
                    _ => break,
                },
            }
        }
        fired
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
}

// ---- shared by threads ---------------------------------------------------------

/// A structure several threads use at once, as a multi-threaded shop shares
/// it.
trait SharedTimers: Sync {
    fn schedule(&self, id: Id, delay_s: u64);
    fn cancel(&self, id: &Id) -> bool;
    fn advance_second(&self) -> u64;
    fn len(&self) -> usize;
    /// Runs one thread's part of the workload (tokio's queue needs its
    /// runtime entered).
    fn on_thread<R>(&self, run: impl FnOnce() -> R) -> R {
        run()
    }
}

/// The engine needs no wrapper: it is shared by design.
struct SharedWheel {
    engine: Engine,
    clock: ManualClock,
}

impl SharedWheel {
    fn new() -> SharedWheel {
        let (engine, clock, _) = counting_engine();
        SharedWheel { engine, clock }
    }
}

impl SharedTimers for SharedWheel {
    fn schedule(&self, id: Id, delay_s: u64) {
        let scheduled = self.engine.schedule(id, Duration::from_secs(delay_s));
        debug_assert!(scheduled.is_ok(), "{scheduled:?}");
    }

    fn cancel(&self, id: &Id) -> bool {
        self.engine.cancel(id).is_ok()
    }

    fn advance_second(&self) -> u64 {
        self.clock.advance(1000);
        // Handlers run inline and succeed: one started per timer fired.
        self.engine.tick() as u64
    }

    fn len(&self) -> usize {
        self.engine.len()
    }
}

/// A single-threaded baseline behind one `std::sync::Mutex`, taken per
/// operation: what a shop adds to share its `BinaryHeap` or `BTreeMap`.
struct Locked<T>(Mutex<T>);

impl<T: Timers + Send> SharedTimers for Locked<T> {
    fn schedule(&self, id: Id, delay_s: u64) {
        self.0.lock().unwrap().schedule(id, delay_s);
    }

    fn cancel(&self, id: &Id) -> bool {
        self.0.lock().unwrap().cancel(id)
    }

    fn advance_second(&self) -> u64 {
        ready(self.0.lock().unwrap().advance_second())
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// tokio-util's `DelayQueue` behind a mutex, with the paused runtime that
/// drives its timer. Threads enter the runtime to insert; the thread that
/// moves the clock drives it with `block_on`, under the queue's lock (so only
/// one thread at a time does).
struct LockedDelay {
    // Declared first: the queue's sleep must go before its runtime.
    queue: Mutex<Delay>,
    rt: tokio::runtime::Runtime,
}

impl LockedDelay {
    fn new() -> LockedDelay {
        let rt = paused_runtime();
        let queue = Mutex::new(rt.block_on(async { Delay::new() }));
        LockedDelay { queue, rt }
    }
}

impl SharedTimers for LockedDelay {
    fn schedule(&self, id: Id, delay_s: u64) {
        self.queue.lock().unwrap().schedule(id, delay_s);
    }

    fn cancel(&self, id: &Id) -> bool {
        self.queue.lock().unwrap().cancel(id)
    }

    fn advance_second(&self) -> u64 {
        let mut queue = self.queue.lock().unwrap();
        self.rt.block_on(queue.advance_second())
    }

    fn len(&self) -> usize {
        self.queue.lock().unwrap().len()
    }

    fn on_thread<R>(&self, run: impl FnOnce() -> R) -> R {
        let _entered = self.rt.enter();
        run()
    }
}

/// One thread's handle on a shared structure and the shared clock.
struct Sharing<'a, S> {
    timers: &'a S,
    now_s: &'a AtomicU64,
}

impl<S: SharedTimers> Timers for Sharing<'_, S> {
    fn schedule(&mut self, id: Id, delay_s: u64) {
        self.timers.schedule(id, delay_s);
    }

    fn cancel(&mut self, id: &Id) -> bool {
        self.timers.cancel(id)
    }

    async fn advance_second(&mut self) -> u64 {
        let fired = self.timers.advance_second();
        self.now_s.fetch_add(1, Ordering::Relaxed);
        fired
    }

    fn len(&self) -> usize {
        self.timers.len()
    }

    fn shared_now(&self) -> Option<u64> {
        Some(self.now_s.load(Ordering::Relaxed))
    }
}

/// A shared structure, its clock, and one workload per thread.
struct SharedRun<S> {
    timers: S,
    now_s: AtomicU64,
    workloads: Vec<Workload>,
}

impl<S: SharedTimers> SharedRun<S> {
    /// `threads` workloads holding `pending` orders between them.
    fn new(timers: S, pending: usize, threads: usize) -> SharedRun<S> {
        let now_s = AtomicU64::new(0);
        let mut workloads: Vec<Workload> = (0..threads as u64)
            .map(|t| Workload::for_thread(pending, t, threads))
            .collect();
        for wl in &mut workloads {
            let mut sharing = Sharing {
                timers: &timers,
                now_s: &now_s,
            };
            timers.on_thread(|| wl.prefill(&mut sharing, pending / threads));
        }
        SharedRun {
            timers,
            now_s,
            workloads,
        }
    }

    /// Runs `iters` steps split evenly among the threads, each on its own
    /// thread; returns the wall time, scaled to exactly `iters` steps.
    fn run(&mut self, iters: u64) -> Duration {
        let threads = self.workloads.len() as u64;
        let per = iters.div_ceil(threads);
        let (timers, now_s) = (&self.timers, &self.now_s);
        let start = Instant::now();
        std::thread::scope(|s| {
            for wl in &mut self.workloads {
                s.spawn(move || {
                    let mut sharing = Sharing { timers, now_s };
                    on_cpu(|| timers.on_thread(|| run_sync(&mut sharing, wl, per)))
                });
            }
        });
        let elapsed = start.elapsed();
        self.verify();
        elapsed.mul_f64(iters as f64 / (per * threads) as f64)
    }

    /// Panics unless every order scheduled was cancelled, fired, or is
    /// pending, once.
    fn verify(&self) {
        let sum = |f: fn(&Workload) -> u64| self.workloads.iter().map(f).sum::<u64>();
        let (scheduled, cancelled, fired) =
            (sum(|w| w.scheduled), sum(|w| w.cancelled), sum(|w| w.fired));
        assert_eq!(
            self.timers.len() as u64,
            scheduled - cancelled - fired,
            "pending count disagrees: {scheduled} scheduled, {cancelled} cancelled, {fired} fired"
        );
    }

    fn outcome(&self) -> Outcome {
        let wl = &self.workloads[0];
        assert_eq!(self.workloads.len(), 1, "one thread, one outcome");
        assert_eq!(wl.missed, 0, "a cancel missed with one thread");
        wl.verify(&Sharing {
            timers: &self.timers,
            now_s: &self.now_s,
        });
        Outcome {
            scheduled: wl.scheduled,
            cancelled: wl.cancelled,
            fired: wl.fired,
            pending: self.timers.len(),
        }
    }
}

// ---- agreement ---------------------------------------------------------------

/// Counts after `iters` steps from a prefill of `pending`.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    scheduled: u64,
    cancelled: u64,
    fired: u64,
    pending: usize,
}

fn outcome(wl: &Workload, timers: &impl Timers) -> Outcome {
    wl.verify(timers);
    Outcome {
        scheduled: wl.scheduled,
        cancelled: wl.cancelled,
        fired: wl.fired,
        pending: timers.len(),
    }
}

fn simulate_sync(mut timers: impl Timers, pending: usize, iters: u64) -> Outcome {
    let mut wl = Workload::new(pending);
    wl.prefill(&mut timers, pending);
    run_sync(&mut timers, &mut wl, iters);
    outcome(&wl, &timers)
}

fn simulate_delay_queue(pending: usize, iters: u64) -> Outcome {
    paused_runtime().block_on(async {
        let mut timers = Delay::new();
        let mut wl = Workload::new(pending);
        wl.prefill(&mut timers, pending);
        for _ in 0..iters {
            wl.step(&mut timers).await;
        }
        outcome(&wl, &timers)
    })
}

/// Runs the same workload through all four structures and panics unless
/// they fired, cancelled and kept exactly the same orders.
fn check_agreement() {
    // 400k steps at 10k pending is about 3.2 simulated hours, so every
    // structure crosses hour boundaries (the wheel cascades there).
    // `ORDER_FLOW_CHECK=1000000,20000000` checks a bigger run.
    let (pending, iters) = std::env::var("ORDER_FLOW_CHECK")
        .ok()
        .and_then(|v| {
            let (p, i) = v.split_once(',')?;
            Some((p.parse().ok()?, i.parse().ok()?))
        })
        .unwrap_or((10_000, 400_000));
    let wheel = simulate_sync(Wheel::new(), pending, iters);
    let heap = simulate_sync(Heap::default(), pending, iters);
    let btree = simulate_sync(BTree::default(), pending, iters);
    let delay = simulate_delay_queue(pending, iters);
    assert_eq!(wheel, heap, "timewheel vs binary_heap");
    assert_eq!(wheel, btree, "timewheel vs btree_map");
    assert_eq!(wheel, delay, "timewheel vs delay_queue");
    // The shared versions, driven by one thread, must do the same.
    fn simulate_shared(timers: impl SharedTimers, pending: usize, iters: u64) -> Outcome {
        let mut run = SharedRun::new(timers, pending, 1);
        run.run(iters);
        run.outcome()
    }
    let shared = [
        (
            "shared timewheel",
            simulate_shared(SharedWheel::new(), pending, iters),
        ),
        (
            "binary_heap_mutex",
            simulate_shared(Locked(Mutex::new(Heap::default())), pending, iters),
        ),
        (
            "btree_map_mutex",
            simulate_shared(Locked(Mutex::new(BTree::default())), pending, iters),
        ),
        (
            "delay_queue_mutex",
            simulate_shared(LockedDelay::new(), pending, iters),
        ),
    ];
    for (name, got) in &shared {
        assert_eq!(&wheel, got, "timewheel vs {name}");
    }
    let ended = wheel.cancelled + wheel.fired;
    eprintln!(
        "order_flow: all eight structures agree after {iters} steps from {pending} pending: \
         {} fired, {} cancelled, {} pending; {:.1}% of ended orders expired",
        wheel.fired,
        wheel.cancelled,
        wheel.pending,
        100.0 * wheel.fired as f64 / ended as f64
    );
}

/// A structure that does nothing, to time the harness alone.
struct Nothing;

impl Timers for Nothing {
    fn schedule(&mut self, id: Id, delay_s: u64) {
        black_box((id, delay_s));
    }

    fn cancel(&mut self, id: &Id) -> bool {
        black_box(id);
        true
    }

    async fn advance_second(&mut self) -> u64 {
        0
    }

    fn len(&self) -> usize {
        0
    }
}

/// The harness's own cost per step (RNG, ids, the shop's list of open
/// orders), included in every structure's figure; printed, not benchmarked.
fn harness_overhead() {
    for pending in PENDING {
        let mut wl = Workload::new(pending);
        wl.prefill(&mut Nothing, pending);
        let iters = 4_000_000;
        run_sync(&mut Nothing, &mut wl, iters / 4); // warm up
        let elapsed = run_sync(&mut Nothing, &mut wl, iters);
        eprintln!(
            "order_flow: harness alone at {pending} pending: {:.1} ns/step",
            elapsed.as_nanos() as f64 / iters as f64
        );
    }
}

// ---- benchmarks ----------------------------------------------------------

/// One structure with its workload, ready to run: `run(iters)` does `iters`
/// steps and returns their wall time (criterion's `iter_custom` shape).
type Run = Box<dyn FnMut(u64) -> Duration>;

/// A structure one thread has to itself.
fn exclusive<T: Timers + 'static>(mut timers: T, pending: usize) -> Run {
    let mut wl = Workload::new(pending);
    wl.prefill(&mut timers, pending);
    Box::new(move |iters| {
        let elapsed = on_cpu(|| run_sync(&mut timers, &mut wl, iters));
        wl.verify(&timers);
        elapsed
    })
}

/// `DelayQueue` to itself, inside its paused runtime.
fn exclusive_delay_queue(pending: usize) -> Run {
    struct State {
        // Declared first: the queue's sleep must go before its runtime.
        timers: Delay,
        wl: Workload,
        rt: tokio::runtime::Runtime,
    }
    let rt = paused_runtime();
    let mut timers = rt.block_on(async { Delay::new() });
    let mut wl = Workload::new(pending);
    rt.block_on(async { wl.prefill(&mut timers, pending) });
    let mut state = State { timers, wl, rt };
    Box::new(move |iters| {
        let State { timers, wl, rt } = &mut state;
        let elapsed = on_cpu(|| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    wl.step(timers).await;
                }
                start.elapsed()
            })
        });
        wl.verify(timers);
        elapsed
    })
}

fn shared<S: SharedTimers + 'static>(timers: S, pending: usize, threads: usize) -> Run {
    let mut run = SharedRun::new(timers, pending, threads);
    Box::new(move |iters| run.run(iters))
}

/// Every structure at `pending`, by name, the engine first: exclusive ones
/// for `threads == 0`, shared ones used by `threads` threads otherwise.
fn contenders(pending: usize, threads: usize) -> Vec<(&'static str, Run)> {
    if threads == 0 {
        vec![
            ("timewheel", exclusive(Wheel::new(), pending)),
            ("binary_heap", exclusive(Heap::default(), pending)),
            ("btree_map", exclusive(BTree::default(), pending)),
            ("delay_queue", exclusive_delay_queue(pending)),
        ]
    } else {
        vec![
            ("timewheel", shared(SharedWheel::new(), pending, threads)),
            (
                "binary_heap_mutex",
                shared(Locked(Mutex::new(Heap::default())), pending, threads),
            ),
            (
                "btree_map_mutex",
                shared(Locked(Mutex::new(BTree::default())), pending, threads),
            ),
            (
                "delay_queue_mutex",
                shared(LockedDelay::new(), pending, threads),
            ),
        ]
    }
}

/// Names a thread count as criterion ids and the ratio report do.
fn threads_label(threads: usize) -> &'static str {
    match threads {
        0 => "exclusive",
        1 => "1_thread",
        _ => "2_threads",
    }
}

/// Thread counts of the shared runs.
const THREADS: [usize; 2] = [1, 2];

fn order_flow(c: &mut Criterion) {
    let mut group = c.benchmark_group("order_flow");
    for pending in PENDING {
        for (name, mut run) in contenders(pending, 0) {
            group.bench_with_input(BenchmarkId::new(name, pending), &pending, |b, _| {
                b.iter_custom(&mut run);
            });
        }
    }
    group.finish();
}

fn order_flow_shared(c: &mut Criterion) {
    let mut group = c.benchmark_group("order_flow_shared");
    group.measurement_time(Duration::from_secs(3));
    for pending in PENDING {
        for threads in THREADS {
            for (name, mut run) in contenders(pending, threads) {
                let id = BenchmarkId::new(format!("{name}/{}", threads_label(threads)), pending);
                group.bench_with_input(id, &pending, |b, _| b.iter_custom(&mut run));
            }
        }
    }
    group.finish();
}

/// The interleaved report (`ORDER_FLOW_ROUNDS=n`): for each pending count
/// and each way of running (exclusive, shared by 1 and by 2 threads), every
/// structure runs `steps` steps in turn, `rounds` times after one warm-up
/// run. Prints markdown rows: each structure's median wall and on-CPU ns
/// per step (on-CPU summed over its threads), and the median over rounds of
/// its time divided by the engine's in the same round (above 1: the engine
/// is faster).
fn ratios(rounds: usize) {
    println!(
        "| pending | run | structure | wall ns/step | wall ÷ timewheel | on-CPU ns/step | on-CPU ÷ timewheel |"
    );
    println!("|---|---|---|---|---|---|---|");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for pending in PENDING {
        // About 0.1 s per structure and round on a quiet machine.
        let steps: u64 = if pending <= 10_000 { 400_000 } else { 100_000 };
        for threads in [0, 1, 2] {
            let mut runs = contenders(pending, threads);
            for (_, run) in &mut runs {
                run(steps / 4); // warm up
            }
            // wall[i][round], cpu[i][round]: ns per step.
            let mut wall = vec![Vec::new(); runs.len()];
            let mut cpu = vec![Vec::new(); runs.len()];
            for round in 0..rounds {
                // Rotate who goes first, so no structure always follows
                // the same one.
                for k in 0..runs.len() {
                    let i = (round + k) % runs.len();
                    CPU_NS.store(0, Ordering::Relaxed);
                    let elapsed = (runs[i].1)(steps);
                    wall[i].push(elapsed.as_nanos() as f64 / steps as f64);
                    cpu[i].push(CPU_NS.load(Ordering::Relaxed) as f64 / steps as f64);
                }
            }
            let ratio =
                |v: &[Vec<f64>], i: usize| median((0..rounds).map(|r| v[i][r] / v[0][r]).collect());
            for (i, (name, _)) in runs.iter().enumerate() {
                println!(
                    "| {pending} | {} | {name} | {:.1} | {:.2} | {:.1} | {:.2} |",
                    threads_label(threads),
                    median(wall[i].clone()),
                    ratio(&wall, i),
                    median(cpu[i].clone()),
                    ratio(&cpu, i),
                );
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = order_flow, order_flow_shared
}

fn main() {
    check_agreement();
    harness_overhead();
    if let Some(rounds) = std::env::var("ORDER_FLOW_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        ratios(rounds);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
