//! `Engine::due_histogram` against a brute-force count of what the test
//! knows to be pending, with a manual clock: nothing here sleeps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use proptest::prelude::*;
use timewheel::engine::DueHistogram;
use timewheel::engine::census::{DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS};
use timewheel::{Engine, Fired, HandlerError, ManualClock, RetryPolicy};

const T0: u64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    /// Schedule (or move, if pending) id `n` at `now + offset` (ms, may be past).
    Upsert(u8, i64),
    Cancel(u8),
    /// Move the clock forward and run the ticks that came.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    // Offsets near every tier's edges, and anywhere within two days.
    let edge = prop_oneof![
        Just(SECOND_MS),
        Just(MINUTE_MS),
        Just(HOUR_MS),
        Just(DAY_MS)
    ];
    let near_edge = (edge, 1..4i64, -2..3i64).prop_map(|(edge, k, d)| edge as i64 * k + d);
    let offset = prop_oneof![-5_000..2 * DAY_MS as i64, near_edge, -3..3i64];
    prop_oneof![
        4 => (any::<u8>(), offset).prop_map(|(n, o)| Op::Upsert(n, o)),
        1 => any::<u8>().prop_map(Op::Cancel),
        1 => prop_oneof![0..2_000u64, 0..2 * HOUR_MS].prop_map(Op::Advance),
    ]
}

/// The histogram by its definition, bucket by bucket.
fn brute_force(from_ms: u64, deadlines: &[u64]) -> DueHistogram {
    let within = |start: u64, width: u64| {
        deadlines
            .iter()
            .filter(|&&d| d >= start && d < start + width)
            .count() as u64
    };
    let mut expected = DueHistogram::new(from_ms);
    for (i, count) in expected.seconds.iter_mut().enumerate() {
        *count = within(from_ms + i as u64 * SECOND_MS, SECOND_MS);
    }
    for (i, count) in expected.minutes.iter_mut().enumerate() {
        *count = within(from_ms + i as u64 * MINUTE_MS, MINUTE_MS);
    }
    for (i, count) in expected.hours.iter_mut().enumerate() {
        *count = within(from_ms + i as u64 * HOUR_MS, HOUR_MS);
    }
    expected.overdue = deadlines.iter().filter(|&&d| d < from_ms).count() as u64;
    expected.later = deadlines.iter().filter(|&&d| d >= from_ms + DAY_MS).count() as u64;
    expected
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 200 }))]

    #[test]
    fn matches_a_brute_force_count(
        tick_ms in prop_oneof![Just(1u64), Just(1000)],
        ops in proptest::collection::vec(op(), 0..120),
        shift in -3_000..3_000i64,
    ) {
        let clock = ManualClock::new(T0);
        let fired: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = fired.clone();
        let engine = Engine::builder()
            .clock(clock.clone())
            .tick(Duration::from_millis(tick_ms))
            .manual_ticks()
            .workers(0)
            .build(move |f: &Fired| {
                sink.lock().push(f.id.to_string());
                Ok(())
            })
            .unwrap();
        let mut pending: HashMap<String, u64> = HashMap::new();
        for op in ops {
            match op {
                Op::Upsert(n, offset) => {
                    let deadline = engine.now_ms().saturating_add_signed(offset);
                    let id = format!("o{n}");
                    engine.upsert_at(id.as_str(), deadline).unwrap().wait().unwrap();
                    pending.insert(id, deadline);
                }
                Op::Cancel(n) => {
                    let id = format!("o{n}");
                    let cancelled = engine.cancel(id.as_str()).is_ok();
                    prop_assert_eq!(cancelled, pending.remove(&id).is_some());
                }
                Op::Advance(ms) => {
                    clock.advance(ms);
                    engine.tick();
                    for id in fired.lock().drain(..) {
                        prop_assert!(pending.remove(&id).is_some(), "{} fired twice", id);
                    }
                }
            }
        }
        let from_ms = engine.now_ms().saturating_add_signed(shift);
        let deadlines: Vec<u64> = pending.values().copied().collect();
        let census = engine.due_histogram(from_ms);
        prop_assert_eq!(census.pending(), pending.len() as u64);
        prop_assert_eq!(census.minutes[0], census.seconds.iter().sum::<u64>());
        prop_assert_eq!(census.hours[0], census.minutes.iter().sum::<u64>());
        prop_assert_eq!((census.inflight, census.retrying), (0, 0));
        prop_assert_eq!(census, brute_force(from_ms, &deadlines));
        engine.shutdown();
    }
}

#[test]
fn counts_what_is_in_flight_and_what_waits_for_a_retry() {
    let clock = ManualClock::new(T0);
    let engine = Engine::builder()
        .clock(clock.clone())
        .tick(Duration::from_millis(1))
        .manual_ticks()
        .workers(0)
        .retry(RetryPolicy {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(60),
            max_attempts: 3,
            jitter: false,
        })
        .build(|f: &Fired| {
            if f.id.as_bytes().starts_with(b"fail") {
                Err(HandlerError::from("the shop is down"))
            } else {
                Ok(())
            }
        })
        .unwrap();
    for (id, delay_ms) in [
        ("fail-1", 10),
        ("fail-2", 10),
        ("ok-1", 10),
        ("later", 5_000),
    ] {
        engine
            .schedule(id, Duration::from_millis(delay_ms))
            .unwrap()
            .wait()
            .unwrap();
    }
    clock.advance(10);
    engine.tick();
    let census = engine.due_histogram(engine.now_ms());
    assert_eq!(census.pending(), 1);
    assert_eq!(census.seconds[4], 1, "{census:?}");
    assert_eq!((census.inflight, census.retrying), (2, 2));
    assert_eq!(engine.delivered_last_minute(engine.now_ms()), 1);
    engine.shutdown();
}
