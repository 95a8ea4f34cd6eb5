// cargo run --release --example latency
//
//! The machine's memory latency: how long one load takes when it depends on
//! the load before it, over working sets from 32 KiB to 256 MiB.
//!
//! Each working set is a ring of cache lines linked in a random order; the
//! loop follows the ring, so every load waits for the previous one and the
//! prefetchers cannot guess the next address. The figure is the cost of one
//! cache miss at that size: a timer structure holding a million pending ids
//! pays it for every access its operation cannot overlap with another, and
//! `docs/benchmarks.md` compares the engine's per-operation costs with it.

use std::hint::black_box;
use std::time::Instant;

/// One cache line: the next line's index and padding.
#[repr(align(64))]
#[derive(Clone, Copy)]
struct Line {
    next: usize,
}

/// Loads timed per working set.
const LOADS: usize = 20_000_000;

fn main() {
    let mut rng = fastrand::Rng::with_seed(7);
    println!("working_set_kib ns_per_dependent_load");
    for kib in [32, 256, 1024, 4096, 16_384, 65_536, 262_144] {
        let lines = kib * 1024 / size_of::<Line>();
        let mut order: Vec<usize> = (0..lines).collect();
        rng.shuffle(&mut order);
        let mut ring = vec![Line { next: 0 }; lines];
        for pair in order.windows(2) {
            ring[pair[0]].next = pair[1];
        }
        ring[order[lines - 1]].next = order[0];

        let mut at = order[0];
        for _ in 0..lines {
            at = ring[at].next; // touch every line once before timing
        }
        let start = Instant::now();
        for _ in 0..LOADS {
            at = ring[at].next;
        }
        let ns = start.elapsed().as_nanos() as f64 / LOADS as f64;
        black_box(at);
        println!("{kib} {ns:.1}");
    }
}
