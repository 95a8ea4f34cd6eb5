//! Engine behaviour with a manual clock: nothing here sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use timewheel::{Builder, Engine, Fired, ManualClock, RetryPolicy, ScheduleError};

const T0: u64 = 1_700_000_000_000;

fn engine_with(clock: &ManualClock, tick_ms: u64) -> (Engine, Arc<Mutex<Vec<Fired>>>) {
    let fired = Arc::new(Mutex::new(Vec::new()));
    let sink = fired.clone();
    let engine = Engine::builder()
        .clock(clock.clone())
        .tick(Duration::from_millis(tick_ms))
        .manual_ticks()
        .workers(0)
        .build(move |f: &Fired| {
            sink.lock().push(f.clone());
            Ok(())
        })
        .expect("build the engine");
    (engine, fired)
}

/// An engine on `clock` with 1 ms ticks, ticked by hand, handlers inline,
/// retrying without jitter: waits of `initial_ms` doubling up to `max_ms`.
fn retrying(clock: &ManualClock, initial_ms: u64, max_ms: u64, max_attempts: u32) -> Builder {
    Engine::builder()
        .clock(clock.clone())
        .tick(Duration::from_millis(1))
        .manual_ticks()
        .workers(0)
        .retry(RetryPolicy {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
            max_attempts,
            jitter: false,
        })
}

fn ids(fired: &Mutex<Vec<Fired>>) -> Vec<String> {
    fired.lock().iter().map(|f| f.id.to_string()).collect()
}

#[test]
fn fires_within_one_tick_after_deadline_never_before() {
    let clock = ManualClock::new(T0);
    let (engine, fired) = engine_with(&clock, 1000);
    let deadline = engine
        .schedule("o1", Duration::from_millis(1500))
        .and_then(|c| c.wait())
        .unwrap();
    assert_eq!(deadline, T0 + 1500);
    clock.advance(1499);
    engine.tick();
    assert!(ids(&fired).is_empty());
    clock.advance(1); // at the deadline, but the tick starts at T0 + 2000
    engine.tick();
    assert!(ids(&fired).is_empty());
    clock.advance(500);
    engine.tick();
    assert_eq!(ids(&fired), vec!["o1"]);
    let f = fired.lock()[0].clone();
    assert_eq!(
        (f.deadline_ms, f.fired_ms, f.attempt),
        (T0 + 1500, T0 + 2000, 1)
    );
}

#[test]
fn schedule_semantics() {
    let clock = ManualClock::new(T0);
    let (engine, fired) = engine_with(&clock, 1);
    engine
        .schedule_at("a", T0 + 100)
        .and_then(|c| c.wait())
        .unwrap();
    assert_eq!(
        engine.schedule_at("a", T0 + 200).and_then(|c| c.wait()),
        Err(ScheduleError::AlreadyScheduled {
            deadline_ms: T0 + 100
        })
    );
    assert_eq!(
        engine.schedule("", Duration::ZERO).and_then(|c| c.wait()),
        Err(ScheduleError::InvalidId)
    );
    assert_eq!(
        engine
            .schedule("b", Duration::from_millis(timewheel::MAX_DELAY_MS + 1))
            .and_then(|c| c.wait()),
        Err(ScheduleError::DelayTooLong)
    );
    assert_eq!(
        engine.reschedule_at("nope", T0).and_then(|c| c.wait()),
        Err(ScheduleError::NotScheduled)
    );
    assert_eq!(
        engine.reschedule_at("a", T0 + 50).and_then(|c| c.wait()),
        Ok(T0 + 50)
    );
    assert_eq!(engine.deadline("a"), Some(T0 + 50));
    assert_eq!(
        engine.upsert_at("c", T0 + 10).and_then(|c| c.wait()),
        Ok(T0 + 10)
    );
    assert_eq!(
        engine.upsert_at("c", T0 + 20).and_then(|c| c.wait()),
        Ok(T0 + 20)
    );
    assert_eq!(engine.len(), 2);
    clock.advance(60);
    engine.tick();
    assert_eq!(ids(&fired), vec!["c", "a"]);
    assert_eq!(
        engine.cancel("a").err(),
        Some(ScheduleError::NotScheduled),
        "already fired"
    );
    assert_eq!(engine.stats().fired_total, 2);
}

#[test]
fn past_deadline_fires_at_next_tick() {
    let clock = ManualClock::new(T0);
    let (engine, fired) = engine_with(&clock, 1000);
    clock.advance(5_000);
    engine.tick();
    engine
        .schedule_at("late", T0 - 60_000)
        .and_then(|c| c.wait())
        .unwrap();
    engine.tick();
    assert!(ids(&fired).is_empty());
    clock.advance(1000);
    engine.tick();
    assert_eq!(ids(&fired), vec!["late"]);
}

#[test]
fn catch_up_after_a_stall_fires_in_deadline_order() {
    let clock = ManualClock::new(T0);
    let (engine, fired) = engine_with(&clock, 1);
    let mut expected = Vec::new();
    for n in 0..2000u64 {
        let delay = (n * 7919) % 86_400_000 + 1;
        engine
            .schedule(format!("o{n}"), Duration::from_millis(delay))
            .and_then(|c| c.wait())
            .unwrap();
        expected.push((T0 + delay, format!("o{n}")));
    }
    expected.sort();
    clock.advance(86_400_000 + 1);
    engine.tick();
    let got: Vec<u64> = fired.lock().iter().map(|f| f.deadline_ms).collect();
    let want: Vec<u64> = expected.iter().map(|e| e.0).collect();
    assert_eq!(got, want);
    assert_eq!(engine.len(), 0);
}

#[test]
fn failed_attempts_are_retried_with_backoff_then_dead_lettered() {
    let clock = ManualClock::new(T0);
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = attempts.clone();
    let engine = retrying(&clock, 100, 400, 4)
        .build(move |f: &Fired| {
            seen.fetch_add(1, Ordering::SeqCst);
            if f.attempt == 2 {
                panic!("handler blew up");
            }
            Err("shop endpoint down".into())
        })
        .expect("build the engine");
    engine
        .schedule("o", Duration::from_millis(1))
        .and_then(|c| c.wait())
        .unwrap();
    clock.advance(1);
    engine.tick();
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    for (wait, total) in [(100, 2), (200, 3), (400, 4)] {
        clock.advance(wait - 1);
        engine.tick();
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            total - 1,
            "retry came early"
        );
        clock.advance(1);
        engine.tick();
        assert_eq!(attempts.load(Ordering::SeqCst), total);
    }
    clock.advance(10_000);
    engine.tick();
    let stats = engine.stats();
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
    assert_eq!(
        (stats.retries_total, stats.dead_letter_total, stats.inflight),
        (3, 1, 0)
    );
}

#[test]
fn worker_pool_runs_handlers_and_shutdown_returns_pending() {
    let clock = ManualClock::new(T0);
    let (tx, rx) = crossbeam_channel::unbounded();
    let engine = Engine::builder()
        .clock(clock.clone())
        .tick(Duration::from_millis(10))
        .manual_ticks()
        .workers(3)
        .build(move |f: &Fired| {
            tx.send(f.id.to_string()).unwrap();
            Ok(())
        })
        .expect("build the engine");
    for n in 0..100 {
        engine
            .schedule(format!("due{n}"), Duration::from_millis(10))
            .and_then(|c| c.wait())
            .unwrap();
        engine
            .schedule(format!("later{n}"), Duration::from_secs(60))
            .and_then(|c| c.wait())
            .unwrap();
    }
    clock.advance(10);
    assert_eq!(engine.tick(), 100);
    let mut got: Vec<String> = (0..100)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    got.sort();
    assert!(got.iter().all(|id| id.starts_with("due")));
    let pending = engine.shutdown();
    assert_eq!(pending.len(), 100);
    assert!(
        pending
            .iter()
            .all(|p| p.id.as_str().starts_with("later") && p.attempts == 0)
    );
    assert_eq!(
        engine.schedule("x", Duration::ZERO).and_then(|c| c.wait()),
        Err(ScheduleError::ShutDown)
    );
}

#[test]
fn real_ticker_fires_on_time() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let engine = Engine::builder()
        .tick(Duration::from_millis(5))
        .build(move |f: &Fired| {
            tx.send(f.clone()).unwrap();
            Ok(())
        })
        .expect("build the engine");
    engine
        .schedule("soon", Duration::from_millis(20))
        .and_then(|c| c.wait())
        .unwrap();
    let fired = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(fired.fired_ms >= fired.deadline_ms);
    engine.shutdown();
}

#[test]
fn delivery_lag_is_p99_of_delivered_minus_deadline_over_the_last_minute() {
    let clock = ManualClock::new(T0);
    let ok = Arc::new(AtomicU32::new(0));
    let seen = ok.clone();
    let engine = retrying(&clock, 500, 500, 3)
        .build(move |f: &Fired| {
            // "late" fails once: its lag then includes the 500 ms backoff.
            if f.id.as_str() == "late" && f.attempt == 1 {
                return Err("shop endpoint down".into());
            }
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .expect("build the engine");
    assert_eq!(engine.stats().delivery_lag_ms, 0, "nothing delivered yet");
    engine
        .schedule_at("on-time", T0 + 10)
        .and_then(|c| c.wait())
        .unwrap();
    engine
        .schedule_at("late", T0 + 10)
        .and_then(|c| c.wait())
        .unwrap();
    clock.advance(13); // the ticker ran 3 ms after the deadline
    engine.tick();
    assert_eq!(engine.stats().delivery_lag_ms, 3);
    clock.advance(500);
    engine.tick();
    assert_eq!(ok.load(Ordering::SeqCst), 2);
    // Two deliveries: p99 is the larger, 503 ms, reported as the upper
    // bound of its histogram bucket (within 1/8 above).
    let lag = engine.stats().delivery_lag_ms;
    assert!(
        (503..=503 + 503 / 8).contains(&lag),
        "delivery_lag_ms={lag}"
    );
    // A minute later both have left the window.
    clock.advance(61_000);
    assert_eq!(engine.stats().delivery_lag_ms, 0);
}
