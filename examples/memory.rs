// cargo run --release --example memory -- 10000000
//
//! Heap bytes per pending timer, measured rather than estimated.
//!
//! A counting global allocator (a thin wrapper over [`System`]) tracks live
//! and peak heap bytes. The example builds an engine (manual ticks, no
//! worker threads), schedules N timers with 16-byte ids and random
//! 1..=1800 s delays, and prints the live heap growth divided by N. The
//! resident-set growth from `/proc/self/statm` is printed beside it: it also
//! counts allocator slack and pages touched during growth, so it is the
//! figure to plan a machine with.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use timewheel::{Engine, Fired, ManualClock};

/// Counts live and peak heap bytes; all allocation is done by [`System`].
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the arguments it was given
// and returns its result unchanged, so `System`'s guarantees carry over; the
// counters are plain atomics and never touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: only forwards to `System`; the caller upholds `alloc`'s
        // contract (non-zero size) for us.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: only forwards to `System`, as in `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: only forwards to `System`; `ptr` came from it (every
        // allocation goes through this wrapper) with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: only forwards to `System`; `ptr` and `layout` came from it,
        // and the caller guarantees `new_size` is valid for `layout`'s align.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            grew(new_size);
            shrank(layout.size());
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Resident bytes, from `/proc/self/statm` (Linux).
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// The kernel page size, from `/proc/self/smaps`; 4096 if unreadable.
fn page_size() -> usize {
    std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|smaps| {
            let line = smaps.lines().find(|l| l.starts_with("KernelPageSize:"))?;
            let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(4096)
}

/// A 16-byte id: `o:` and 14 hex digits.
fn order_id(n: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = *b"o:00000000000000";
    let mut v = n;
    for byte in id[2..].iter_mut().rev() {
        *byte = HEX[(v & 15) as usize];
        v >>= 4;
    }
    id
}

fn main() {
    let n: usize = match std::env::args().nth(1) {
        None => 10_000_000,
        Some(arg) => arg.parse().unwrap_or_else(|_| {
            eprintln!("usage: memory [TIMERS]   (default 10000000)");
            std::process::exit(2)
        }),
    };
    let heap_before = LIVE.load(Ordering::Relaxed);
    let rss_before = rss_bytes();

    let clock = ManualClock::new(1_700_000_000_000);
    let engine = Engine::builder()
        .clock(clock)
        .tick(Duration::from_secs(1))
        .manual_ticks()
        .workers(0)
        .build(|_: &Fired| Ok(()))
        .expect("build the engine");
    let heap_empty = LIVE.load(Ordering::Relaxed);

    let mut rng = fastrand::Rng::with_seed(7);
    let start = Instant::now();
    for i in 0..n as u64 {
        let delay = Duration::from_secs(rng.u64(1..=1800));
        engine
            .schedule(order_id(i), delay)
            .and_then(|c| c.wait())
            .expect("schedule");
    }
    let fill = start.elapsed();
    assert_eq!(engine.len(), n);

    let heap_after = LIVE.load(Ordering::Relaxed);
    let peak = PEAK.load(Ordering::Relaxed);
    let rss_after = rss_bytes();
    let per = |bytes: usize| bytes as f64 / n.max(1) as f64;

    println!("timers: {n}");
    println!("id_bytes: 16");
    println!(
        "empty_engine_heap_bytes: {}",
        heap_empty.saturating_sub(heap_before)
    );
    println!(
        "heap_delta_bytes: {}",
        heap_after.saturating_sub(heap_before)
    );
    println!(
        "bytes_per_timer: {:.1}",
        per(heap_after.saturating_sub(heap_before))
    );
    println!(
        "peak_bytes_per_timer: {:.1}",
        per(peak.saturating_sub(heap_before))
    );
    match (rss_before, rss_after) {
        (Some(before), Some(after)) => println!(
            "rss_delta_bytes: {} ({:.1} per timer)",
            after.saturating_sub(before),
            per(after.saturating_sub(before))
        ),
        _ => println!("rss_delta_bytes: unavailable (no /proc/self/statm)"),
    }
    println!(
        "fill: {:.2} s ({:.0} ns per schedule)",
        fill.as_secs_f64(),
        fill.as_nanos() as f64 / n.max(1) as f64
    );
    drop(engine);
}
