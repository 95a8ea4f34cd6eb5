// cargo bench --bench order_flow
//
//! The order-timeout workload, run against the engine and three baselines.
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

mod common;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group};
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
}

impl Workload {
    fn new(pending: usize) -> Workload {
        Workload {
            rng: fastrand::Rng::with_seed(SEED),
            next_order: 0,
            now_s: 0,
            live: Vec::with_capacity(pending * 3 / 2),
            iters_per_second: (pending as u64 / 288).max(1),
            phase: 0,
            scheduled: 0,
            cancelled: 0,
            fired: 0,
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

    /// Schedules `pending` orders at time 0, outside any timing.
    fn prefill(&mut self, timers: &mut impl Timers, pending: usize) {
        for _ in 0..pending {
            self.schedule_one(timers);
        }
    }

    /// One order's life.
    async fn step(&mut self, timers: &mut impl Timers) {
        self.schedule_one(timers);
        if self.rng.u8(0..5) < 4 {
            // The order just scheduled is live, so this ends.
            loop {
                let (n, deadline_s) = self.live.swap_remove(self.rng.usize(..self.live.len()));
                if deadline_s > self.now_s {
                    let was_pending = timers.cancel(&order_id(n));
                    debug_assert!(was_pending, "order {n} was not pending");
                    self.cancelled += 1;
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
    let fut = pin!(async {
        let start = Instant::now();
        for _ in 0..iters {
            wl.step(timers).await;
        }
        start.elapsed()
    });
    let Poll::Ready(elapsed) = fut.poll(&mut Context::from_waker(Waker::noop())) else {
        unreachable!("a synchronous structure suspended");
    };
    elapsed
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
    let ended = wheel.cancelled + wheel.fired;
    eprintln!(
        "order_flow: all four structures agree after {iters} steps from {pending} pending: \
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

fn bench_sync<T: Timers>(group: &mut Group<'_>, name: &str, make: fn() -> T) {
    for pending in PENDING {
        let mut timers = make();
        let mut wl = Workload::new(pending);
        wl.prefill(&mut timers, pending);
        group.bench_with_input(BenchmarkId::new(name, pending), &pending, |b, _| {
            b.iter_custom(|iters| {
                let elapsed = run_sync(&mut timers, &mut wl, iters);
                wl.verify(&timers);
                elapsed
            });
        });
    }
}

fn bench_delay_queue(group: &mut Group<'_>) {
    for pending in PENDING {
        let rt = paused_runtime();
        let mut timers = rt.block_on(async { Delay::new() });
        let mut wl = Workload::new(pending);
        rt.block_on(async { wl.prefill(&mut timers, pending) });
        group.bench_with_input(
            BenchmarkId::new("delay_queue", pending),
            &pending,
            |b, _| {
                b.iter_custom(|iters| {
                    let elapsed = rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            wl.step(&mut timers).await;
                        }
                        start.elapsed()
                    });
                    wl.verify(&timers);
                    elapsed
                });
            },
        );
        // The queue's sleep belongs to this runtime: drop it first.
        drop(timers);
    }
}

type Group<'a> = BenchmarkGroup<'a, WallTime>;

fn order_flow(c: &mut Criterion) {
    let mut group = c.benchmark_group("order_flow");
    bench_sync(&mut group, "timewheel", Wheel::new);
    bench_sync(&mut group, "binary_heap", Heap::default);
    bench_sync(&mut group, "btree_map", BTree::default);
    bench_delay_queue(&mut group);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = order_flow
}

fn main() {
    check_agreement();
    harness_overhead();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
