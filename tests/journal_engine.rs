//! The journal at library level: an [`Engine`] with a [`Journal`] on a private `redis-server`,
//! driven by a [`ManualClock`] and manual ticks with inline handlers, so no test waits for a
//! timer. What is checked is what Redis holds (`ZSCORE tw:due id`).
//!
//! Run with `cargo test --test journal_engine` (needs `redis-server` on PATH).
//!
//! Journal writes are applied in queue order over one connection, so after a blocking write
//! (`schedule_at` returns once Redis has it) every write queued before it is in Redis too: the
//! tests use such a "sentinel" write instead of sleeping.

mod util;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use timewheel::{
    AckStatus, Engine, Fired, HandlerResult, Journal, JournalConfig, ManualClock, RetryPolicy,
    ScheduleError,
};
use util::{PATIENCE, RedisServer, Resp, unix_ms, wait_until};

const TICK_MS: u64 = 10;

fn journal(redis: &RedisServer) -> Journal {
    Journal::connect(JournalConfig {
        io_timeout: Duration::from_secs(1),
        ..JournalConfig::new(redis.url())
    })
    .expect("connect the journal")
}

/// An engine on `redis` whose time is `clock` and whose handlers run inside [`Engine::tick`].
fn engine(
    redis: &RedisServer,
    clock: &ManualClock,
    retry: RetryPolicy,
    handler: impl Fn(&Fired) -> HandlerResult + Send + Sync + 'static,
) -> Engine {
    Engine::builder()
        .clock(clock.clone())
        .manual_ticks()
        .workers(0)
        .tick(Duration::from_millis(TICK_MS))
        .retry(retry)
        .journal(journal(redis))
        .build(handler)
        .expect("build the engine")
}

/// Attempts seen per id.
type Seen = Arc<Mutex<HashMap<String, u32>>>;

/// A handler that records every attempt.
fn recorder() -> (
    Seen,
    impl Fn(&Fired) -> HandlerResult + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let sink = seen.clone();
    let handler = move |fired: &Fired| {
        *sink
            .lock()
            .unwrap()
            .entry(fired.id.to_string())
            .or_default() += 1;
        Ok(())
    };
    (seen, handler)
}

/// `ZSCORE tw:due id`.
fn score(redis: &RedisServer, id: &str) -> Option<u64> {
    match redis.cmd(&["ZSCORE", "tw:due", id]) {
        Resp::Bulk(None) => None,
        reply => Some(
            reply
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("ZSCORE {id}: {reply:?}")),
        ),
    }
}

fn zcard(redis: &RedisServer) -> i64 {
    redis
        .cmd(&["ZCARD", "tw:due"])
        .as_int()
        .expect("ZCARD answers an integer")
}

/// A blocking write far in the future: once it returns, every earlier write is in Redis.
fn sentinel(engine: &Engine, name: &str) {
    let far = engine.now_ms() + 3_600_000;
    engine
        .schedule_at(name, far)
        .and_then(|c| c.wait())
        .expect("sentinel write");
}

#[test]
fn writes_reach_redis_before_they_return() {
    let redis = RedisServer::start();
    let t0 = unix_ms();
    let clock = ManualClock::new(t0);
    let (_, handler) = recorder();
    let engine = engine(&redis, &clock, RetryPolicy::default(), handler);

    let a = engine
        .schedule("a", Duration::from_secs(5))
        .and_then(|c| c.wait())
        .unwrap();
    assert_eq!(a, t0 + 5000);
    assert_eq!(score(&redis, "a"), Some(a));

    let change = engine.schedule_at("b", t0 + 7000).unwrap();
    let ack = change.ack();
    let b = change.wait().unwrap();
    assert_eq!(engine.ack_status(ack), AckStatus::Durable);
    assert_eq!(score(&redis, "b"), Some(b));

    assert_eq!(
        engine.reschedule_at("a", t0 + 9000).and_then(|c| c.wait()),
        Ok(t0 + 9000)
    );
    assert_eq!(score(&redis, "a"), Some(t0 + 9000));
    assert_eq!(
        engine.schedule_at("a", t0 + 1).and_then(|c| c.wait()),
        Err(ScheduleError::AlreadyScheduled {
            deadline_ms: t0 + 9000
        })
    );
    assert_eq!(
        score(&redis, "a"),
        Some(t0 + 9000),
        "a refused ADD wrote nothing"
    );

    engine
        .upsert_at("c", t0 + 1000)
        .and_then(|c| c.wait())
        .unwrap();
    assert_eq!(score(&redis, "c"), Some(t0 + 1000));
    engine
        .upsert_at("c", t0 + 2000)
        .and_then(|c| c.wait())
        .unwrap();
    assert_eq!(score(&redis, "c"), Some(t0 + 2000));

    assert_eq!(engine.cancel("b").and_then(|c| c.wait()), Ok(()));
    assert_eq!(score(&redis, "b"), None);
    assert_eq!(engine.cancel("b").err(), Some(ScheduleError::NotScheduled));

    let ((), ack) = engine.cancel("c").unwrap().into_parts();
    while engine.ack_status(ack) != AckStatus::Durable {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(score(&redis, "c"), None);

    assert_eq!(zcard(&redis), 1);
    assert_eq!(engine.len(), 1);
    let stats = engine.journal_stats().unwrap();
    assert!(stats.up);
    assert!(stats.writes_total >= 7, "{stats:?}");
    assert_eq!(stats.refused_total, 0);

    let pending = engine.shutdown();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].deadline_ms, t0 + 9000);
    // Shutdown does not clear the journal: that is what the next start loads.
    assert_eq!(score(&redis, "a"), Some(t0 + 9000));
}

#[test]
fn rebuild_restores_deadlines_but_not_cancelled_timers() {
    const N: u64 = 200;
    let redis = RedisServer::start();
    let t0 = unix_ms();
    let clock = ManualClock::new(t0);
    let deadline = |i: u64| t0 + 1000 + i * 10;
    let id = |i: u64| format!("o:{i}");
    let cancelled = |i: u64| i.is_multiple_of(4);

    let (seen, handler) = recorder();
    let first = engine(&redis, &clock, RetryPolicy::default(), handler);
    for i in 0..N {
        first
            .schedule_at(id(i), deadline(i))
            .and_then(|c| c.wait())
            .unwrap();
    }
    for i in (0..N).filter(|&i| cancelled(i)) {
        assert_eq!(
            first.cancel(id(i)).and_then(|c| c.wait()),
            Ok(()),
            "{}",
            id(i)
        );
    }
    let kept = (0..N).filter(|&i| !cancelled(i)).count();
    assert_eq!(first.shutdown().len(), kept);
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(zcard(&redis), kept as i64);

    clock.advance(500);
    let (seen, handler) = recorder();
    let second = engine(&redis, &clock, RetryPolicy::default(), handler);
    assert_eq!(second.len(), kept);
    for i in 0..N {
        let want = (!cancelled(i)).then(|| deadline(i));
        assert_eq!(second.deadline(id(i)), want, "{}", id(i));
    }
    let restored = second.journal_stats().unwrap().restored;
    assert_eq!(restored.total, kept as u64);
    assert_eq!(restored.overdue, 0);
    assert_eq!(restored.invalid, 0);

    // Nothing fires early: just before the first deadline, a tick does nothing.
    clock.set(deadline(1) - 1);
    second.tick();
    assert!(seen.lock().unwrap().is_empty());
    clock.set(deadline(N) + TICK_MS);
    second.tick();
    let seen = seen.lock().unwrap().clone();
    for i in 0..N {
        let times = seen.get(&id(i)).copied().unwrap_or(0);
        assert_eq!(
            times,
            u32::from(!cancelled(i)),
            "{} fired {times} times",
            id(i)
        );
    }
    wait_until("the delivered timers to leave Redis", PATIENCE, || {
        zcard(&redis) == 0
    });
    assert!(second.shutdown().is_empty());
}

#[test]
fn fired_timer_leaves_redis_only_after_its_handler_succeeded() {
    let redis = RedisServer::start();
    let t0 = unix_ms();
    let clock = ManualClock::new(t0);
    let retry = RetryPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(1),
        max_attempts: 5,
        jitter: false,
    };
    // Fails the first call, whichever engine makes it; succeeds after.
    let calls = Arc::new(AtomicU32::new(0));
    let handler = {
        let calls = calls.clone();
        move |_: &Fired| -> HandlerResult {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err("the shop is down".into()),
                _ => Ok(()),
            }
        }
    };

    let first = engine(&redis, &clock, retry, handler.clone());
    let x = first
        .schedule_at("x", t0 + 100)
        .and_then(|c| c.wait())
        .unwrap();
    clock.advance(100 + TICK_MS);
    first.tick();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(first.stats().retries_total, 1);
    sentinel(&first, "s1");
    assert_eq!(
        score(&redis, "x"),
        Some(x),
        "failed attempt: still journaled"
    );
    // Stopped while waiting for its retry: the journal still has it.
    let pending = first.shutdown();
    assert!(
        pending
            .iter()
            .any(|p| p.id.as_bytes() == b"x" && p.attempts == 2),
        "{pending:?}"
    );
    assert_eq!(score(&redis, "x"), Some(x));

    let second = engine(&redis, &clock, retry, handler);
    let restored = second.journal_stats().unwrap().restored;
    assert_eq!((restored.total, restored.overdue), (2, 1), "{restored:?}");
    // Overdue at rebuild: already firing, so not cancellable.
    assert_eq!(second.cancel("x").err(), Some(ScheduleError::NotScheduled));
    assert_eq!(second.len(), 1, "only the sentinel is in the wheel");
    second.tick();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(second.stats().delivered_total, 1);
    sentinel(&second, "s2");
    assert_eq!(score(&redis, "x"), None, "delivered: removed");
    assert_eq!(zcard(&redis), 2, "the sentinels stay");
    second.shutdown();
}

#[test]
fn add_made_while_firing_survives_the_removal() {
    let redis = RedisServer::start();
    let t0 = unix_ms();
    let clock = ManualClock::new(t0);
    let me: Arc<OnceLock<Engine>> = Arc::new(OnceLock::new());
    let handler = {
        let me = me.clone();
        move |fired: &Fired| -> HandlerResult {
            // The shop re-opens the order while the close task for the old deadline runs.
            if fired.deadline_ms == t0 + 100 {
                let engine = me.get().expect("engine set");
                engine
                    .schedule_at(fired.id.as_bytes(), t0 + 60_000)
                    .and_then(|c| c.wait())?;
            }
            Ok(())
        }
    };
    let engine = engine(&redis, &clock, RetryPolicy::default(), handler);
    let _ = me.set(engine.clone());

    engine
        .schedule_at("y", t0 + 100)
        .and_then(|c| c.wait())
        .unwrap();
    clock.advance(100 + TICK_MS);
    engine.tick();
    assert_eq!(engine.stats().delivered_total, 1);
    sentinel(&engine, "s");
    // The removal of the delivered deadline must not remove the new one.
    assert_eq!(score(&redis, "y"), Some(t0 + 60_000));
    assert_eq!(engine.deadline("y"), Some(t0 + 60_000));
    drop(me);
    engine.shutdown();
}

#[test]
fn stream_gets_each_fired_timer_once() {
    let redis = RedisServer::start();
    let t0 = unix_ms();
    let clock = ManualClock::new(t0);
    let stream = Journal::connect(JournalConfig {
        io_timeout: Duration::from_secs(1),
        stream: Some("tw:closed".into()),
        ..JournalConfig::new(redis.url())
    })
    .unwrap();
    let engine = Engine::builder()
        .clock(clock.clone())
        .manual_ticks()
        .workers(0)
        .tick(Duration::from_millis(TICK_MS))
        .journal(stream)
        .build(|_: &Fired| Ok(()))
        .unwrap();
    for i in 0..10 {
        engine
            .schedule_at(format!("z:{i}"), t0 + 100 + i)
            .and_then(|c| c.wait())
            .unwrap();
    }
    clock.advance(200);
    engine.tick();
    sentinel(&engine, "s");
    assert_eq!(redis.cmd(&["XLEN", "tw:closed"]), Resp::Integer(10));
    assert_eq!(zcard(&redis), 1, "only the sentinel is left");
    let Resp::Array(Some(entries)) = redis.cmd(&["XRANGE", "tw:closed", "-", "+"]) else {
        panic!("XRANGE");
    };
    // Timers due in the same tick may be handed over in any order.
    let mut got: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            let Resp::Array(Some(parts)) = entry else {
                panic!("{entry:?}");
            };
            let Resp::Array(Some(fields)) = &parts[1] else {
                panic!("{entry:?}");
            };
            fields
                .iter()
                .map(|f| f.as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    got.sort_by_key(|fields| fields[3].clone());
    let want: Vec<Vec<String>> = (0..10u64)
        .map(|i| {
            let fields = [
                "id".to_owned(),
                format!("z:{i}"),
                "deadline_ms".to_owned(),
                (t0 + 100 + i).to_string(),
                "fired_ms".to_owned(),
                (t0 + 200).to_string(),
            ];
            fields.to_vec()
        })
        .collect();
    assert_eq!(got, want);
    engine.shutdown();
}

#[test]
fn journal_down_refuses_writes_and_keeps_firing() {
    let mut redis = RedisServer::start();
    let t0 = unix_ms();
    let clock = ManualClock::new(t0);
    let (seen, handler) = recorder();
    let engine = engine(&redis, &clock, RetryPolicy::default(), handler);
    engine
        .schedule_at("soon", t0 + 100)
        .and_then(|c| c.wait())
        .unwrap();
    engine
        .schedule_at("later", t0 + 60_000)
        .and_then(|c| c.wait())
        .unwrap();

    redis.stop();
    let journal = engine.journal().unwrap().clone();
    wait_until("the journal to notice", PATIENCE, || !journal.is_up());
    assert_eq!(
        engine.schedule_at("new", t0 + 1000).and_then(|c| c.wait()),
        Err(ScheduleError::JournalUnavailable)
    );
    assert_eq!(engine.deadline("new"), None);
    assert_eq!(
        engine.cancel("later").err(),
        Some(ScheduleError::JournalUnavailable)
    );
    assert_eq!(engine.deadline("later"), Some(t0 + 60_000));
    assert_eq!(engine.len(), 2);
    assert!(engine.journal_stats().unwrap().refused_total >= 2);

    // Firing goes on; the removal waits for Redis.
    clock.advance(100 + TICK_MS);
    engine.tick();
    assert_eq!(seen.lock().unwrap().get("soon"), Some(&1));
    assert!(engine.journal_stats().unwrap().backlog >= 1);

    redis.restart();
    wait_until("the journal to come back", PATIENCE, || journal.is_up());
    wait_until("the removal of `soon`", PATIENCE, || {
        score(&redis, "soon").is_none()
    });
    assert_eq!(score(&redis, "later"), Some(t0 + 60_000));
    assert_eq!(score(&redis, "new"), None);
    engine
        .schedule_at("new", t0 + 1000)
        .and_then(|c| c.wait())
        .unwrap();
    assert_eq!(score(&redis, "new"), Some(t0 + 1000));
    engine.shutdown();
}
