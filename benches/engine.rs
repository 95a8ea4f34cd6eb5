// cargo bench --bench engine
//
//! Per-operation costs of the engine alone, at a steady pending count.
//!
//! - `schedule`: insert a new id into an engine holding `pending` timers.
//!   Timed in batches of [`BATCH`]; after each batch, as many random pending
//!   ids are cancelled outside the timing, so the count stays put.
//! - `cancel`: cancel a random pending id (a cold one, as in production,
//!   not one just inserted); refilled outside the timing.
//!
//!   Both also measure, in the same run, the single-threaded `Wheel` alone
//!   (`wheel/N`) and a bare hashbrown map from id to deadline (`hashmap/N`):
//!   the cost of finding a random id among N on this machine, which no
//!   id-keyed timer structure can beat; and that map behind a lock taken
//!   per operation (`locked_hashmap/N`), the floor for a locked structure.
//! - `expire`: one tick firing [`FIRE_BATCH`] due timers through the inline
//!   no-op handler, reported per timer (`Throughput::Elements`). Timers are
//!   scheduled `pending / FIRE_BATCH` seconds ahead, so every tick fires
//!   exactly one batch and the pending count stays at `pending`; the hourly
//!   cascade of the upper level is included, amortised.
//! - `schedule_cancel_mt`: schedule-plus-cancel pairs from 1 and from 2
//!   threads sharing one engine, as throughput (operations per second).
//!
//! Single-threaded groups use a manual clock, manual ticks and `workers(0)`,
//! so no engine thread competes with the benchmark.

mod common;

use std::hint::black_box;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use hashbrown::HashMap;
use parking_lot::Mutex;
use timewheel::Engine;
use timewheel::OrderId;
use timewheel::wheel::{TickMapping, Wheel};

use crate::common::{Id, MAX_DELAY_S, PENDING, T0_MS, counting_engine, order_id};

/// Operations timed together in `schedule` and `cancel`.
const BATCH: usize = 1024;
/// Timers due at each tick in `expire`.
const FIRE_BATCH: usize = 1000;

/// The ids one thread owns: which are pending, and the next new one.
struct Orders {
    rng: fastrand::Rng,
    pending: Vec<u64>,
    next: u64,
    stride: u64,
}

impl Orders {
    /// Orders numbered `first, first + stride, ...`, so threads never share.
    fn new(seed: u64, first: u64, stride: u64) -> Orders {
        Orders {
            rng: fastrand::Rng::with_seed(seed),
            pending: Vec::new(),
            next: first,
            stride,
        }
    }

    fn new_order(&mut self) -> (u64, Duration) {
        let n = self.next;
        self.next += self.stride;
        (n, Duration::from_secs(self.rng.u64(1..=MAX_DELAY_S)))
    }

    /// Removes and returns a random pending order.
    fn take_random(&mut self) -> u64 {
        let i = self.rng.usize(..self.pending.len());
        self.pending.swap_remove(i)
    }

    fn fill(&mut self, target: &mut impl Target, count: usize) {
        for _ in 0..count {
            let (n, delay) = self.new_order();
            target.schedule(&order_id(n), delay);
            self.pending.push(n);
        }
    }
}

/// What `schedule` and `cancel` measure: the engine, and two references
/// measured beside it in the same run.
trait Target {
    const NAME: &'static str;
    fn schedule(&mut self, id: &Id, delay: Duration);
    fn cancel(&mut self, id: &Id) -> bool;
    fn len(&self) -> usize;
}

/// The engine, as an application calls it.
struct Full(Engine);

impl Target for Full {
    const NAME: &'static str = "engine";

    fn schedule(&mut self, id: &Id, delay: Duration) {
        let scheduled = self.0.schedule(id, delay);
        debug_assert!(scheduled.is_ok(), "{scheduled:?}");
    }

    fn cancel(&mut self, id: &Id) -> bool {
        self.0.cancel(id).is_ok()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The single-threaded wheel alone: no validation of the delay, no shard
/// choice, no lock.
struct Bare(Wheel);

impl Bare {
    fn new() -> Bare {
        Bare(Wheel::new(TickMapping {
            origin_ms: T0_MS,
            tick_ms: 1000,
        }))
    }
}

impl Target for Bare {
    const NAME: &'static str = "wheel";

    fn schedule(&mut self, id: &Id, delay: Duration) {
        let id = OrderId::new(id).expect("valid id");
        let inserted = self.0.insert(id, T0_MS + delay.as_millis() as u64);
        debug_assert!(inserted.is_ok());
    }

    fn cancel(&mut self, id: &Id) -> bool {
        self.0.remove(id).is_some()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A bare hash map from id to deadline: the floor for any structure that
/// finds timers by id, on this machine.
#[derive(Default)]
struct Map(HashMap<Id, u64>);

impl Target for Map {
    const NAME: &'static str = "hashmap";

    fn schedule(&mut self, id: &Id, delay: Duration) {
        self.0.insert(*id, T0_MS + delay.as_millis() as u64);
    }

    fn cancel(&mut self, id: &Id) -> bool {
        self.0.remove(id).is_some()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The same map behind a lock taken per operation, as the engine's shards
/// are: the lock's atomic read-modify-write waits for the previous
/// operation's cache-missing stores, so misses no longer overlap.
#[derive(Default)]
struct LockedMap(Mutex<HashMap<Id, u64>>);

impl Target for LockedMap {
    const NAME: &'static str = "locked_hashmap";

    fn schedule(&mut self, id: &Id, delay: Duration) {
        let deadline = T0_MS + delay.as_millis() as u64;
        self.0.lock().insert(*id, deadline);
    }

    fn cancel(&mut self, id: &Id) -> bool {
        self.0.lock().remove(id).is_some()
    }

    fn len(&self) -> usize {
        self.0.lock().len()
    }
}

fn bench_schedule<T: Target>(group: &mut Group<'_>, pending: usize, mut target: T) {
    let mut orders = Orders::new(1, 0, 1);
    orders.fill(&mut target, pending);
    let mut batch: Vec<(u64, Id, Duration)> = Vec::with_capacity(BATCH);
    group.bench_function(BenchmarkId::new(T::NAME, pending), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let size = left.min(BATCH);
                left -= size;
                batch.clear();
                batch.extend((0..size).map(|_| {
                    let (n, delay) = orders.new_order();
                    (n, order_id(n), delay)
                }));
                let start = Instant::now();
                for (_, id, delay) in &batch {
                    target.schedule(id, *delay);
                }
                timed += start.elapsed();
                for _ in 0..size {
                    assert!(target.cancel(&order_id(orders.take_random())));
                }
                orders.pending.extend(batch.iter().map(|o| o.0));
            }
            assert_eq!(target.len(), pending);
            timed
        });
    });
}

fn bench_cancel<T: Target>(group: &mut Group<'_>, pending: usize, mut target: T) {
    let mut orders = Orders::new(2, 0, 1);
    orders.fill(&mut target, pending);
    let mut batch: Vec<Id> = Vec::with_capacity(BATCH);
    group.bench_function(BenchmarkId::new(T::NAME, pending), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let size = left.min(BATCH);
                left -= size;
                batch.clear();
                batch.extend((0..size).map(|_| order_id(orders.take_random())));
                let start = Instant::now();
                for id in &batch {
                    black_box(target.cancel(id));
                }
                timed += start.elapsed();
                orders.fill(&mut target, size);
            }
            assert_eq!(target.len(), pending);
            timed
        });
    });
}

type Group<'a> = BenchmarkGroup<'a, WallTime>;

#[derive(Clone, Copy)]
enum PerOp {
    Schedule,
    Cancel,
}

/// The `schedule` or `cancel` group: every target at every pending count,
/// 20 samples of 3 s, reported per operation.
fn per_op(c: &mut Criterion, op: PerOp) {
    fn run<T: Target>(op: PerOp, group: &mut Group<'_>, pending: usize, target: T) {
        match op {
            PerOp::Schedule => bench_schedule(group, pending, target),
            PerOp::Cancel => bench_cancel(group, pending, target),
        }
    }
    let name = match op {
        PerOp::Schedule => "schedule",
        PerOp::Cancel => "cancel",
    };
    let mut group = c.benchmark_group(name);
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for pending in PENDING {
        run(op, &mut group, pending, Full(counting_engine().0));
        run(op, &mut group, pending, Bare::new());
        run(op, &mut group, pending, Map::default());
        run(op, &mut group, pending, LockedMap::default());
    }
    group.finish();
}

fn schedule(c: &mut Criterion) {
    per_op(c, PerOp::Schedule);
}

fn cancel(c: &mut Criterion) {
    per_op(c, PerOp::Cancel);
}

fn expire(c: &mut Criterion) {
    let mut group = c.benchmark_group("expire");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for pending in PENDING {
        let (engine, clock, fired) = counting_engine();
        let ahead_s = (pending / FIRE_BATCH) as u64;
        let mut next = 0u64;
        let mut schedule_batch = |delay_s: u64| {
            for _ in 0..FIRE_BATCH {
                engine
                    .schedule(order_id(next), Duration::from_secs(delay_s))
                    .and_then(|c| c.wait())
                    .expect("schedule");
                next += 1;
            }
        };
        for delay_s in 1..=ahead_s {
            schedule_batch(delay_s);
        }
        group.throughput(Throughput::Elements(FIRE_BATCH as u64));
        group.bench_function(BenchmarkId::from_parameter(pending), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    clock.advance(1000);
                    let before = fired.load(Ordering::Relaxed);
                    let start = Instant::now();
                    let started = engine.tick();
                    timed += start.elapsed();
                    assert_eq!(started, FIRE_BATCH);
                    assert_eq!(fired.load(Ordering::Relaxed) - before, FIRE_BATCH as u64);
                    schedule_batch(ahead_s);
                }
                timed
            });
        });
    }
    group.finish();
}

fn schedule_cancel_mt(c: &mut Criterion) {
    let mut group = c.benchmark_group("schedule_cancel_mt");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    // One iteration is a schedule and a cancel.
    group.throughput(Throughput::Elements(2));
    for pending in PENDING {
        for threads in [1usize, 2] {
            let (engine, _clock, _) = counting_engine();
            let mut per_thread: Vec<Orders> = (0..threads)
                .map(|t| Orders::new(10 + t as u64, t as u64, threads as u64))
                .collect();
            let mut target = Full(engine);
            for orders in &mut per_thread {
                orders.fill(&mut target, pending / threads);
            }
            let Full(engine) = target;
            let name = if threads == 1 {
                "1_thread"
            } else {
                "2_threads"
            };
            group.bench_function(BenchmarkId::new(name, pending), |b| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(threads as u64);
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for orders in &mut per_thread {
                            let engine = &engine;
                            s.spawn(move || {
                                for _ in 0..per {
                                    let (n, delay) = orders.new_order();
                                    let scheduled = engine.schedule(order_id(n), delay);
                                    debug_assert!(scheduled.is_ok());
                                    let old = orders.take_random();
                                    orders.pending.push(n);
                                    black_box(engine.cancel(order_id(old)).is_ok());
                                }
                            });
                        }
                    });
                    let elapsed = start.elapsed();
                    assert_eq!(engine.len(), pending / threads * threads);
                    // Report per requested iteration.
                    elapsed.mul_f64(iters as f64 / (per * threads as u64) as f64)
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, schedule, cancel, expire, schedule_cancel_mt);
criterion_main!(benches);
