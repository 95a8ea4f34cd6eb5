//! What the criterion benches share (`mod common;` in each bench file):
//! the start time, the delays, the pending counts, the order ids, and an
//! engine driven by hand whose handler only counts.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use timewheel::{Engine, ManualClock};

/// An aligned start time, so deadlines fall on whole seconds.
pub const T0_MS: u64 = 1_700_000_000_000;
/// Orders are scheduled 1..=`MAX_DELAY_S` seconds ahead (a 30-minute window).
pub const MAX_DELAY_S: u64 = 1800;
/// Pending counts benchmarked.
pub const PENDING: [usize; 2] = [10_000, 1_000_000];

/// An order id: `o:` and 12 hex digits, 14 bytes.
pub type Id = [u8; 14];

pub fn order_id(n: u64) -> Id {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = *b"o:000000000000";
    let mut v = n;
    for byte in id[2..].iter_mut().rev() {
        *byte = HEX[(v & 15) as usize];
        v >>= 4;
    }
    id
}

/// An engine on a manual clock with manual ticks and the handler run
/// inline (`workers(0)`), so no engine thread competes with the benchmark;
/// the handler counts the timers it saw fire.
pub fn counting_engine() -> (Engine, ManualClock, Arc<AtomicU64>) {
    let clock = ManualClock::new(T0_MS);
    let fired = Arc::new(AtomicU64::new(0));
    let counter = fired.clone();
    let engine = Engine::builder()
        .clock(clock.clone())
        .tick(Duration::from_millis(1000))
        .manual_ticks()
        .workers(0)
        .build(move |_: &timewheel::Fired| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .expect("build the engine");
    (engine, clock, fired)
}
