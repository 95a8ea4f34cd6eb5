//! Replays the `engine_ops` fuzz corpus through the reference-model check,
//! so that plain `cargo test` covers every seed and every input the fuzzer
//! kept.
//!
//! Run: `cargo test --test engine_fuzz_corpus`. The seeds are written by
//! [`seeds`]; after changing it or the byte format, regenerate them with
//! `cargo test --test engine_fuzz_corpus -- --ignored write_seed_corpus`.

use std::path::{Path, PathBuf};

use timewheel::model::{Config, Op, T0, When, check_ops, encode};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/engine_ops")
}

fn config(tick_ms: u64) -> Config {
    Config {
        tick_ms,
        start_ms: T0,
    }
}

fn ticks(ticks: i16) -> When {
    When::Ticks { ticks, early: 0 }
}

fn boundary(level: u8, offset: i8) -> When {
    When::Boundary { level, offset }
}

fn schedule_at(id: u8, when: When) -> Op {
    Op::ScheduleAt { id, when }
}

fn advance(when: When) -> Op {
    Op::Advance { when }
}

/// Timers on both sides of a level boundary, with the clock stepping over it.
fn around_boundary(level: u8) -> Vec<Op> {
    vec![
        schedule_at(0, boundary(level, -1)),
        schedule_at(1, boundary(level, 0)),
        schedule_at(2, boundary(level, 1)),
        Op::Schedule {
            id: 3,
            when: boundary(level, 2),
        },
        advance(boundary(level, -2)),
        advance(ticks(1)),
        advance(ticks(1)),
        advance(ticks(1)),
        advance(ticks(1)),
    ]
}

/// A reproducible jumble of every operation over every id.
fn jumble(seed: u64, len: usize) -> Vec<Op> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len)
        .map(|_| {
            let id = rng.u8(0..timewheel::model::IDS.len() as u8);
            let when = match rng.u8(0..6) {
                0 | 1 => When::Ticks {
                    ticks: rng.i16(-5..40),
                    early: rng.u8(..),
                },
                2 => boundary(rng.u8(1..=3), rng.i8(-2..=2)),
                3 => When::Ms(rng.u16(..)),
                4 => When::MaxDelay(rng.i8(-1..=1)),
                _ => When::LongAgo,
            };
            match rng.u8(0..8) {
                0 => Op::Schedule { id, when },
                1 => Op::ScheduleAt { id, when },
                2 => Op::Reschedule { id, when },
                3 => Op::Upsert { id, when },
                4 => Op::Cancel { id },
                5 => Op::Lag {
                    when: ticks(rng.i16(0..3)),
                },
                _ => advance(ticks(rng.i16(0..10))),
            }
        })
        .collect()
}

/// The seed corpus: one file per scenario.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let boxed = timewheel::model::IDS.len() as u8 - 1;
    let same_tick: Vec<Op> = (0..5)
        .map(|id| schedule_at(id, ticks(3)))
        .chain([advance(ticks(3))])
        .collect();
    let mut seeds = vec![
        ("level1_boundary_1ms", config(1), around_boundary(1)),
        ("level2_boundary_1ms", config(1), around_boundary(2)),
        ("level1_boundary_1s", config(1000), around_boundary(1)),
        ("level2_boundary_1s", config(1000), around_boundary(2)),
        (
            "past_deadline_fires_next_tick",
            config(1),
            vec![
                advance(ticks(10)),
                schedule_at(0, When::LongAgo),
                schedule_at(1, ticks(-5)),
                Op::Schedule {
                    id: 2,
                    when: ticks(-1),
                },
                advance(ticks(0)),
                advance(ticks(1)),
            ],
        ),
        (
            "past_deadline_across_level_boundary",
            config(1000),
            vec![
                advance(boundary(1, -1)),
                schedule_at(0, When::LongAgo),
                Op::Upsert {
                    id: 1,
                    when: ticks(-100),
                },
                advance(ticks(1)),
            ],
        ),
        (
            "cancel_after_fire",
            config(1),
            vec![
                schedule_at(0, ticks(2)),
                advance(ticks(2)),
                Op::Cancel { id: 0 },
                Op::Cancel { id: 0 },
                schedule_at(0, ticks(1)),
                advance(ticks(1)),
            ],
        ),
        (
            "cancel_before_fire",
            config(1000),
            vec![
                schedule_at(0, ticks(5)),
                Op::Cancel { id: 0 },
                Op::Cancel { id: 0 },
                advance(ticks(10)),
            ],
        ),
        (
            "reschedule_earlier_later_past_and_unknown",
            config(1),
            vec![
                schedule_at(0, boundary(1, 5)),
                schedule_at(1, ticks(3)),
                Op::Reschedule {
                    id: 0,
                    when: ticks(2),
                },
                Op::Reschedule {
                    id: 1,
                    when: boundary(2, 0),
                },
                Op::Reschedule {
                    id: 2,
                    when: ticks(1),
                },
                advance(ticks(1)),
                Op::Reschedule {
                    id: 0,
                    when: When::LongAgo,
                },
                advance(ticks(1)),
                advance(boundary(2, 0)),
            ],
        ),
        (
            "reschedule_after_fire",
            config(7),
            vec![
                schedule_at(0, ticks(1)),
                advance(ticks(1)),
                Op::Reschedule {
                    id: 0,
                    when: ticks(1),
                },
                Op::Upsert {
                    id: 0,
                    when: ticks(1),
                },
                advance(ticks(1)),
            ],
        ),
        (
            "upsert_inserts_then_moves",
            config(1000),
            vec![
                Op::Upsert {
                    id: 0,
                    when: boundary(1, 0),
                },
                Op::Upsert {
                    id: 0,
                    when: ticks(1),
                },
                advance(ticks(1)),
                advance(boundary(1, 0)),
            ],
        ),
        (
            "duplicate_schedule",
            config(1),
            vec![
                schedule_at(0, ticks(4)),
                schedule_at(0, ticks(2)),
                Op::Schedule {
                    id: 0,
                    when: ticks(1),
                },
                advance(ticks(4)),
            ],
        ),
        (
            "max_delay_edge",
            config(1),
            vec![
                Op::Schedule {
                    id: 0,
                    when: When::MaxDelay(0),
                },
                Op::Schedule {
                    id: 1,
                    when: When::MaxDelay(1),
                },
                schedule_at(2, When::MaxDelay(1)),
                Op::Upsert {
                    id: 3,
                    when: When::MaxDelay(0),
                },
                advance(When::MaxDelay(-1)),
                advance(ticks(1)),
            ],
        ),
        (
            "stalled_ticker_beyond_the_wheel",
            config(1),
            vec![
                // The clock runs 366 days ahead of the last tick, so this
                // deadline lies beyond the wheel's reach and is parked.
                Op::Lag {
                    when: When::MaxDelay(0),
                },
                schedule_at(0, When::MaxDelay(0)),
                schedule_at(1, ticks(-3)),
                advance(ticks(0)),
                advance(When::MaxDelay(0)),
            ],
        ),
        (
            "stalled_ticker_catches_up_in_order",
            config(1000),
            vec![
                schedule_at(0, boundary(2, 3)),
                schedule_at(1, boundary(1, 0)),
                schedule_at(2, ticks(7)),
                schedule_at(3, boundary(1, -1)),
                Op::Lag {
                    when: boundary(2, 10),
                },
                schedule_at(4, ticks(-1)),
                advance(ticks(0)),
            ],
        ),
        (
            "top_level_wraps_1ms",
            config(1),
            vec![
                // 366 days on, the wheel's full turn (3600³ ticks, 540
                // days) is within the delay limit.
                advance(When::MaxDelay(0)),
                schedule_at(0, boundary(3, -1)),
                schedule_at(1, boundary(3, 0)),
                schedule_at(2, boundary(3, 1)),
                advance(boundary(3, -2)),
                advance(ticks(1)),
                advance(ticks(1)),
                advance(ticks(1)),
            ],
        ),
        ("ties_in_one_tick", config(1), same_tick),
        (
            "rounding_inside_a_tick",
            config(7),
            vec![
                schedule_at(0, When::Ticks { ticks: 2, early: 1 }),
                schedule_at(
                    1,
                    When::Ticks {
                        ticks: 2,
                        early: 255,
                    },
                ),
                schedule_at(2, When::Ms(1)),
                advance(When::Ms(6)),
                advance(When::Ticks { ticks: 1, early: 0 }),
                advance(ticks(1)),
            ],
        ),
        (
            "boxed_id",
            config(1000),
            vec![
                schedule_at(boxed, ticks(2)),
                Op::Reschedule {
                    id: boxed,
                    when: boundary(1, 0),
                },
                advance(ticks(2)),
                Op::Cancel { id: boxed },
                Op::Upsert {
                    id: boxed,
                    when: ticks(1),
                },
                advance(boundary(1, 0)),
            ],
        ),
        ("jumble_1ms", config(1), jumble(1, 200)),
        ("jumble_1s", config(1000), jumble(2, 200)),
    ];
    // A start in the middle of a tick.
    seeds.push((
        "unaligned_start_1s",
        Config {
            tick_ms: 1000,
            start_ms: T0 + 13 * 200,
        },
        vec![
            Op::Schedule {
                id: 0,
                when: When::Ms(1),
            },
            schedule_at(1, When::Ticks { ticks: 0, early: 0 }),
            advance(When::Ms(100)),
            advance(ticks(1)),
        ],
    ));
    seeds
        .into_iter()
        .map(|(name, config, ops)| (name, encode(config, &ops)))
        .collect()
}

#[test]
fn corpus_replays_against_the_model() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("fuzz/corpus/engine_ops exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the engine_ops corpus is empty");
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check_ops(&data));
        assert!(
            outcome.is_ok(),
            "{} diverged from the model",
            path.display()
        );
    }
}

#[test]
fn seed_files_match_their_generator() {
    for (name, bytes) in seeds() {
        let path = corpus_dir().join(name);
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "{} is stale or missing; regenerate with \
             `cargo test --test engine_fuzz_corpus -- --ignored write_seed_corpus`",
            path.display()
        );
    }
}

#[test]
#[ignore = "writes fuzz/corpus/engine_ops; run by hand"]
fn write_seed_corpus() {
    std::fs::create_dir_all(corpus_dir()).unwrap();
    for (name, bytes) in seeds() {
        std::fs::write(corpus_dir().join(name), bytes).unwrap();
    }
}
