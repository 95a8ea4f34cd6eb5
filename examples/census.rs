// cargo run --release --example census -- 1000000 10000000
//
//! What the operators' page costs: `Engine::due_histogram` (the census
//! behind `GET /due.json`) at N pending timers, and whether running it
//! every second, as the page does, disturbs firing and scheduling.
//!
//! 1. For each N: N timers with 16-byte ids, deadlines spread over two
//!    days; 20 censuses, time per call. Beside it, the copy of one
//!    shard-sized wheel's deadlines (N / 32 entries), which is how long a
//!    census holds any one shard lock.
//! 2. Disturbance, at the last N: a running engine (system clock, 1 ms
//!    tick, the finest, where a stall shows first) with N timers far out,
//!    a feeder scheduling 2,000 timers a second due 0.5–1.5 s later, and
//!    a handler recording how late each fires (fired - deadline). 15 s
//!    without the census, then 15 s with one every second; p50, p99 and
//!    max of lateness and of the feeder's `schedule` calls, per phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use timewheel::engine::SHARDS;
use timewheel::wheel::{Deadlines, TickMapping, Wheel};
use timewheel::{Engine, Fired, ManualClock, OrderId};

const T0: u64 = 1_700_000_000_000;
const TWO_DAYS_MS: u64 = 2 * 24 * 3600 * 1000;

fn id(n: u64) -> String {
    format!("order-{n:010}")
}

fn quantiles(mut v: Vec<u64>) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {} p99 {} max {} (n={})",
        at(0.5),
        at(0.99),
        v[v.len() - 1],
        v.len()
    )
}

fn census_cost(n: u64) {
    let clock = ManualClock::new(T0);
    let engine = Engine::builder()
        .clock(clock)
        .manual_ticks()
        .workers(0)
        .build(|_: &Fired| Ok(()))
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..n {
        let _ = engine.schedule_at(id(i), T0 + 1 + rng.u64(0..TWO_DAYS_MS));
    }
    let mut times = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let census = engine.due_histogram(T0);
        times.push(start.elapsed().as_micros() as u64);
        assert_eq!(census.pending(), n);
    }
    drop(engine);
    let mut wheel = Wheel::new(TickMapping {
        origin_ms: T0,
        tick_ms: 1000,
    });
    for i in 0..n / SHARDS as u64 {
        let _ = wheel.insert(
            OrderId::new(id(i)).unwrap(),
            T0 + 1 + rng.u64(0..TWO_DAYS_MS),
        );
    }
    let mut shard_times = Vec::new();
    let mut copy = Deadlines::default();
    for _ in 0..20 {
        let start = Instant::now();
        wheel.copy_deadlines(&mut copy);
        shard_times.push(start.elapsed().as_micros() as u64);
        std::hint::black_box(&mut copy);
    }
    println!(
        "pending {n}: census us {}; one shard's copy ({} entries) us {}",
        quantiles(times),
        n / SHARDS as u64,
        quantiles(shard_times)
    );
}

fn disturbance(n: u64) {
    let lateness: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sink = lateness.clone();
    let engine = Engine::builder()
        .tick(Duration::from_millis(1))
        .workers(1)
        .build(move |f: &Fired| {
            let now = timewheel::clock::unix_ms();
            sink.lock().push(now.saturating_sub(f.deadline_ms));
            Ok(())
        })
        .unwrap();
    let now = engine.now_ms();
    let mut rng = fastrand::Rng::with_seed(11);
    for i in 0..n {
        let _ = engine.schedule_at(id(i), now + 3_600_000 + rng.u64(0..TWO_DAYS_MS));
    }
    println!("disturbance: {n} pending, tick 1 ms, 2,000 timers/s due in 0.5-1.5 s");
    let stop = Arc::new(AtomicBool::new(false));
    let calls: Arc<Mutex<Vec<u64>>> = Arc::default();
    let feeder = {
        let (engine, stop, calls) = (engine.clone(), stop.clone(), calls.clone());
        std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(13);
            let mut i = n;
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                // 2 per ms, paced against the start so pauses catch up.
                let due = start.elapsed().as_millis() as u64 * 2;
                while i - n < due {
                    let t = Instant::now();
                    let _ = engine.schedule(id(i), Duration::from_millis(rng.u64(500..1500)));
                    calls.lock().push(t.elapsed().as_micros() as u64);
                    i += 1;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    for with_census in [false, true] {
        std::thread::sleep(Duration::from_secs(2)); // let the last phase's timers drain
        lateness.lock().clear();
        calls.lock().clear();
        let mut census_us = Vec::new();
        let phase = Instant::now();
        while phase.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_secs(1));
            if with_census {
                let start = Instant::now();
                std::hint::black_box(engine.due_histogram(engine.now_ms()));
                census_us.push(start.elapsed().as_micros() as u64);
            }
        }
        let label = if with_census {
            "census every 1 s"
        } else {
            "no census      "
        };
        println!(
            "  {label}: lateness ms {}; schedule us {}; census us {}",
            quantiles(std::mem::take(&mut *lateness.lock())),
            quantiles(std::mem::take(&mut *calls.lock())),
            quantiles(census_us)
        );
    }
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    engine.shutdown();
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are numbers"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000_000]
    } else {
        sizes
    };
    for &n in &sizes {
        census_cost(n);
    }
    disturbance(*sizes.last().unwrap());
}
