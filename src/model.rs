//! A reference model of the engine, and a harness that runs both side by
//! side and panics on the first divergence.
//!
//! Shared by the property tests (`tests/model.rs`) and the `engine_ops` fuzz
//! target (`fuzz/`, via [`check_ops`]). Not part of the supported API.
//!
//! The model is a `BTreeMap` from id to timer plus the clock and the last
//! tick processed. A timer (re)scheduled for `deadline` is due at
//! `max(tick_of(deadline), processed + 1)`, `processed` being the tick the
//! last `Engine::tick` reached at that moment: a deadline already passed
//! fires at the next tick, never at one already gone. Each `tick()` fires
//! exactly the timers due at or before the clock's current tick, in due
//! order (ties in any order).
//!
//! Operations name times relative to the state they run in ([`When`]): "two
//! ticks ago", "one tick before the next level-2 boundary". So a shrunk or
//! mutated sequence still means what it says, and the byte format of
//! [`decode`] needs no knowledge of the current time.
//!
//! Ground rules: the engine under test uses a [`ManualClock`], manual ticks
//! and no workers, so every handler call happens inside `tick()` on the
//! calling thread and the whole run is deterministic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::engine::{Change, Engine, MAX_DELAY_MS, ScheduleError};
use crate::handler::Fired;
use crate::wheel::TickMapping;
use crate::wheel::level::{LEVELS, slot_width};
use crate::{Clock, ManualClock};

/// The id alphabet: few ids, so that operations collide. The last one is
/// longer than [`crate::id::INLINE_CAPACITY`], so boxed ids are covered.
pub const IDS: [&str; 6] = ["a", "b", "c", "d", "e", "order-0123456789-boxed-id-xyz"];

/// A plausible Unix time (Nov 2023) to start from.
pub const T0: u64 = 1_700_000_000_000;

/// The tick widths [`decode`] picks from.
pub const TICK_CHOICES: [u64; 3] = [1, 1000, 7];

/// Bytes per operation in the fuzz format.
pub const OP_BYTES: usize = 5;

/// Bytes of the header (tick width, start time) in the fuzz format.
pub const HEADER_BYTES: usize = 2;

/// The engine's configuration for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub tick_ms: u64,
    /// The clock at build time; not necessarily a whole tick.
    pub start_ms: u64,
}

/// A time, relative to the state the operation runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// `ticks` after the clock's current tick (negative: in the past), moved
    /// earlier by `early`/256 of a tick, so it still rounds up to that tick.
    Ticks { ticks: i16, early: u8 },
    /// The first multiple of `SLOTS^level` ticks after the clock's current
    /// tick, moved by `offset` ticks: where level `level` of the wheel turns
    /// a slot (1 to `LEVELS - 1`), or where the whole wheel wraps (`LEVELS`).
    Boundary { level: u8, offset: i8 },
    /// `ms` milliseconds after the clock.
    Ms(u16),
    /// The longest delay accepted, moved by `offset` ms (positive: rejected).
    MaxDelay(i8),
    /// Long before the engine started.
    LongAgo,
}

/// One operation on the engine; `id` indexes [`IDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `schedule(id, when - now)` (a past `when` means no delay).
    Schedule {
        id: u8,
        when: When,
    },
    ScheduleAt {
        id: u8,
        when: When,
    },
    Reschedule {
        id: u8,
        when: When,
    },
    Upsert {
        id: u8,
        when: When,
    },
    Cancel {
        id: u8,
    },
    /// Moves the clock to `when` (if later) and calls `tick()`.
    Advance {
        when: When,
    },
    /// Moves the clock without ticking: a ticker that stalls.
    Lag {
        when: When,
    },
}

/// A pending timer in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    pub deadline_ms: u64,
    /// The tick it must fire at.
    pub due: u64,
}

/// An operation resolved against the model, with what the engine must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing applied yet.
    Start,
    Schedule {
        id: u8,
        delay_ms: u64,
        expect: Result<u64, ScheduleError>,
    },
    ScheduleAt {
        id: u8,
        deadline_ms: u64,
        expect: Result<u64, ScheduleError>,
    },
    Reschedule {
        id: u8,
        deadline_ms: u64,
        expect: Result<u64, ScheduleError>,
    },
    Upsert {
        id: u8,
        deadline_ms: u64,
        expect: Result<u64, ScheduleError>,
    },
    Cancel {
        id: u8,
        expect: bool,
    },
    /// Set the clock to `to_ms`; if `tick`, call `tick()`, which must fire
    /// exactly `fires`, listed here in due order.
    Clock {
        to_ms: u64,
        tick: bool,
        fires: Vec<(u8, Timer)>,
    },
}

/// The reference model.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: Config,
    pub ticks: TickMapping,
    pub now_ms: u64,
    /// The last tick `tick()` processed.
    pub processed: u64,
    pub pending: BTreeMap<u8, Timer>,
    pub fired_total: u64,
    pub cancelled_total: u64,
    /// The last operation, resolved.
    pub last: Step,
}

impl Model {
    pub fn new(config: Config) -> Model {
        assert!(config.tick_ms > 0, "tick_ms must be positive");
        // The engine aligns its origin to a whole tick (see `Builder::build`).
        let ticks = TickMapping {
            origin_ms: config.start_ms - config.start_ms % config.tick_ms,
            tick_ms: config.tick_ms,
        };
        Model {
            config,
            ticks,
            now_ms: config.start_ms,
            processed: ticks.elapsed_ticks(config.start_ms),
            pending: BTreeMap::new(),
            fired_total: 0,
            cancelled_total: 0,
            last: Step::Start,
        }
    }

    /// The clock's current tick.
    pub fn now_tick(&self) -> u64 {
        self.ticks.elapsed_ticks(self.now_ms)
    }

    /// The deadline (Unix ms) that `when` names now.
    pub fn resolve(&self, when: When) -> u64 {
        let tick_ms = self.ticks.tick_ms;
        let at_tick = |tick: i128, early: u64| -> u64 {
            let ms = i128::from(self.ticks.origin_ms) + tick * i128::from(tick_ms);
            u64::try_from(ms).unwrap_or(0).saturating_sub(early)
        };
        let now_tick = i128::from(self.now_tick());
        match when {
            When::Ticks { ticks, early } => at_tick(
                now_tick + i128::from(ticks),
                u64::from(early) * tick_ms / 256,
            ),
            When::Boundary { level, offset } => {
                let width = i128::from(slot_width(usize::from(level).clamp(1, LEVELS)));
                let next = (now_tick / width + 1) * width;
                at_tick(next + i128::from(offset), 0)
            }
            When::Ms(ms) => self.now_ms + u64::from(ms),
            When::MaxDelay(offset) => {
                (i128::from(self.now_ms + MAX_DELAY_MS) + i128::from(offset)) as u64
            }
            When::LongAgo => self.ticks.origin_ms.saturating_sub(86_400_000),
        }
    }

    /// Applies `op`, recording in [`Model::last`] what the engine must do.
    pub fn apply(&mut self, op: &Op) {
        self.last = match *op {
            Op::Schedule { id, when } => {
                let delay_ms = self.resolve(when).saturating_sub(self.now_ms);
                let expect = if delay_ms > MAX_DELAY_MS {
                    Err(ScheduleError::DelayTooLong)
                } else {
                    self.insert(id, self.now_ms + delay_ms)
                };
                Step::Schedule {
                    id,
                    delay_ms,
                    expect,
                }
            }
            Op::ScheduleAt { id, when } => {
                let deadline_ms = self.resolve(when);
                let expect = self
                    .check_delay(deadline_ms)
                    .and_then(|_| self.insert(id, deadline_ms));
                Step::ScheduleAt {
                    id,
                    deadline_ms,
                    expect,
                }
            }
            Op::Reschedule { id, when } => {
                let deadline_ms = self.resolve(when);
                let expect = self.check_delay(deadline_ms).and_then(|_| {
                    if self.pending.contains_key(&id) {
                        self.set(id, deadline_ms);
                        Ok(deadline_ms)
                    } else {
                        Err(ScheduleError::NotScheduled)
                    }
                });
                Step::Reschedule {
                    id,
                    deadline_ms,
                    expect,
                }
            }
            Op::Upsert { id, when } => {
                let deadline_ms = self.resolve(when);
                let expect = self.check_delay(deadline_ms).map(|_| {
                    self.set(id, deadline_ms);
                    deadline_ms
                });
                Step::Upsert {
                    id,
                    deadline_ms,
                    expect,
                }
            }
            Op::Cancel { id } => {
                let expect = self.pending.remove(&id).is_some();
                self.cancelled_total += u64::from(expect);
                Step::Cancel { id, expect }
            }
            Op::Advance { when } => self.set_clock(when, true),
            Op::Lag { when } => self.set_clock(when, false),
        };
    }

    fn check_delay(&self, deadline_ms: u64) -> Result<(), ScheduleError> {
        if deadline_ms > self.now_ms + MAX_DELAY_MS {
            Err(ScheduleError::DelayTooLong)
        } else {
            Ok(())
        }
    }

    fn insert(&mut self, id: u8, deadline_ms: u64) -> Result<u64, ScheduleError> {
        if let Some(timer) = self.pending.get(&id) {
            return Err(ScheduleError::AlreadyScheduled {
                deadline_ms: timer.deadline_ms,
            });
        }
        self.set(id, deadline_ms);
        Ok(deadline_ms)
    }

    fn set(&mut self, id: u8, deadline_ms: u64) {
        let due = self.ticks.tick_of(deadline_ms).max(self.processed + 1);
        self.pending.insert(id, Timer { deadline_ms, due });
    }

    fn set_clock(&mut self, when: When, tick: bool) -> Step {
        self.now_ms = self.now_ms.max(self.resolve(when));
        let mut fires = Vec::new();
        if tick {
            let target = self.now_tick();
            fires = self
                .pending
                .iter()
                .filter(|(_, timer)| timer.due <= target)
                .map(|(&id, &timer)| (id, timer))
                .collect();
            fires.sort_by_key(|&(id, timer)| (timer.due, id));
            for (id, _) in &fires {
                self.pending.remove(id);
            }
            self.fired_total += fires.len() as u64;
            self.processed = self.processed.max(target);
        }
        Step::Clock {
            to_ms: self.now_ms,
            tick,
            fires,
        }
    }
}

/// A real engine, driven in step with a [`Model`].
#[derive(Debug)]
pub struct Harness {
    engine: Engine,
    clock: ManualClock,
    fired: Arc<Mutex<Vec<Fired>>>,
}

impl Harness {
    /// An engine configured as `model` is, with nothing applied yet.
    pub fn new(model: &Model) -> Harness {
        let clock = ManualClock::new(model.config.start_ms);
        let fired = Arc::new(Mutex::new(Vec::new()));
        let sink = fired.clone();
        let engine = Engine::builder()
            .clock(clock.clone())
            .tick(Duration::from_millis(model.config.tick_ms))
            .manual_ticks()
            .workers(0)
            // Unused without workers; the default would allocate 64k slots
            // per run.
            .queue_capacity(1)
            .build(move |f: &Fired| {
                sink.lock().push(f.clone());
                Ok(())
            })
            .expect("no journal to read");
        Harness {
            engine,
            clock,
            fired,
        }
    }

    /// Applies `model.last` to the engine and checks its outcome.
    pub fn step(&mut self, model: &Model) {
        let e = &self.engine;
        match model.last {
            Step::Start => {}
            Step::Schedule {
                id,
                delay_ms,
                ref expect,
            } => {
                let got = e
                    .schedule(IDS[id as usize], Duration::from_millis(delay_ms))
                    .and_then(Change::wait);
                assert_eq!(&got, expect, "schedule {id} +{delay_ms}ms; {model:?}");
            }
            Step::ScheduleAt {
                id,
                deadline_ms,
                ref expect,
            } => {
                let got = e
                    .schedule_at(IDS[id as usize], deadline_ms)
                    .and_then(Change::wait);
                assert_eq!(&got, expect, "schedule_at {id} {deadline_ms}; {model:?}");
            }
            Step::Reschedule {
                id,
                deadline_ms,
                ref expect,
            } => {
                let got = e
                    .reschedule_at(IDS[id as usize], deadline_ms)
                    .and_then(Change::wait);
                assert_eq!(&got, expect, "reschedule_at {id} {deadline_ms}; {model:?}");
            }
            Step::Upsert {
                id,
                deadline_ms,
                ref expect,
            } => {
                let got = e
                    .upsert_at(IDS[id as usize], deadline_ms)
                    .and_then(Change::wait);
                assert_eq!(&got, expect, "upsert_at {id} {deadline_ms}; {model:?}");
            }
            Step::Cancel { id, expect } => {
                let got = match e.cancel(IDS[id as usize]) {
                    Ok(change) => change.wait().map(|()| true),
                    Err(ScheduleError::NotScheduled) => Ok(false),
                    Err(error) => Err(error),
                };
                assert_eq!(got, Ok(expect), "cancel {id}; {model:?}");
            }
            Step::Clock {
                to_ms,
                tick,
                ref fires,
            } => {
                self.clock.set(to_ms);
                assert_eq!(self.clock.now_ms(), to_ms, "the clock went backwards");
                if tick {
                    let started = e.tick();
                    assert_eq!(started, fires.len(), "tick() count; {model:?}");
                }
                let fired = std::mem::take(&mut *self.fired.lock());
                check_fired(model, &fired, fires);
            }
        }
        if !matches!(model.last, Step::Clock { .. }) {
            assert!(
                self.fired.lock().is_empty(),
                "a handler ran outside tick(); {model:?}"
            );
        }
    }

    /// Checks what the engine reports against the model.
    pub fn check(&self, model: &Model) {
        let e = &self.engine;
        assert_eq!(e.len(), model.pending.len(), "len(); {model:?}");
        for (n, id) in IDS.iter().enumerate() {
            let want = model.pending.get(&(n as u8)).map(|t| t.deadline_ms);
            assert_eq!(e.deadline(id), want, "deadline({id}); {model:?}");
        }
        // Counters move only on a cancel or a tick, and `stats()` (which
        // scans the lag histograms) is the dearest check: a counter moved
        // by any other step is caught at the next cancel, tick or finish.
        if matches!(
            model.last,
            Step::Start | Step::Cancel { .. } | Step::Clock { .. }
        ) {
            self.check_counters(model);
        }
    }

    fn check_counters(&self, model: &Model) {
        let stats = self.engine.stats();
        assert_eq!(
            (
                stats.fired_total,
                stats.delivered_total,
                stats.cancelled_total
            ),
            (model.fired_total, model.fired_total, model.cancelled_total),
            "stats (fired, delivered, cancelled); {model:?}"
        );
        assert_eq!(stats.inflight, 0, "inline handlers leave nothing in flight");
    }

    /// Shuts the engine down: what it returns must be what the model holds.
    pub fn finish(self, model: &Model) {
        self.check_counters(model);
        let mut got: Vec<(String, u64, u32)> = self
            .engine
            .shutdown()
            .into_iter()
            .map(|p| (p.id.to_string(), p.deadline_ms, p.attempts))
            .collect();
        got.sort();
        let mut want: Vec<(String, u64, u32)> = model
            .pending
            .iter()
            .map(|(&id, t)| (IDS[id as usize].to_string(), t.deadline_ms, 0))
            .collect();
        want.sort();
        assert_eq!(got, want, "shutdown() must return what is pending");
    }
}

/// Checks one `tick()`'s handler calls against the model's `fires`: the same
/// timers, each once, in due order, none early.
fn check_fired(model: &Model, fired: &[Fired], fires: &[(u8, Timer)]) {
    let due_of = |name: &str| -> u64 {
        fires
            .iter()
            .find(|(id, _)| IDS[*id as usize] == name)
            .map(|(_, t)| t.due)
            .unwrap_or_else(|| panic!("{name} fired but was not due; fired={fired:?} {model:?}"))
    };
    let mut last_due = 0;
    for f in fired {
        let due = due_of(f.id.as_str());
        assert!(
            due >= last_due,
            "{} (due {due}) fired after a timer due {last_due}; fired={fired:?} {model:?}",
            f.id
        );
        last_due = due;
        assert!(
            f.fired_ms >= f.deadline_ms
                && model.ticks.elapsed_ticks(f.fired_ms) >= model.ticks.tick_of(f.deadline_ms),
            "fired early: {f:?}; {model:?}"
        );
        assert_eq!(
            (f.fired_ms, f.attempt),
            (model.now_ms, 1),
            "fired at the wrong time or attempt: {f:?}; {model:?}"
        );
    }
    let mut got: Vec<(&str, u64)> = fired
        .iter()
        .map(|f| (f.id.as_str(), f.deadline_ms))
        .collect();
    got.sort();
    let mut want: Vec<(&str, u64)> = fires
        .iter()
        .map(|(id, t)| (IDS[*id as usize], t.deadline_ms))
        .collect();
    want.sort();
    assert_eq!(got, want, "fired set (id, deadline); {model:?}");
}

/// Runs `ops` against an engine and the model, panicking on divergence.
pub fn run(config: Config, ops: &[Op]) {
    let mut model = Model::new(config);
    let mut harness = Harness::new(&model);
    harness.check(&model);
    for op in ops {
        model.apply(op);
        harness.step(&model);
        harness.check(&model);
    }
    harness.finish(&model);
}

/// The fuzz entry point: decodes `data` (see [`decode`]) and runs it.
pub fn check_ops(data: &[u8]) {
    if let Some((config, ops)) = decode(data) {
        run(config, &ops);
    }
}

/// Decodes the fuzz format; `None` if `data` is shorter than the header.
///
/// Header: `[tick, start]`: the tick width is `TICK_CHOICES[tick % 3]`, the
/// start `T0 + start * 13` ms. Then [`OP_BYTES`] per operation (a partial
/// one at the end is ignored): `[op, class, a, b, c]`.
/// - `op`: the low 3 bits pick the kind (0 schedule, 1 schedule_at,
///   2 reschedule, 3 upsert, 4 cancel, 5 and 7 advance, 6 lag), the rest the
///   id (`(op >> 3) % IDS.len()`).
/// - `class`: the low 3 bits pick the [`When`] (1 boundary, 2 ms,
///   3 max delay, 4 long ago, anything else ticks); the boundary's level is
///   `1 + (class >> 3) % LEVELS`.
/// - `a`, `b`, `c`: the `When`'s numbers: ticks `i16::from_le_bytes([a, b])`
///   and early `c`; boundary offset `a as i8`; ms `u16::from_le_bytes([a,
///   b])`; max-delay offset `a as i8`.
pub fn decode(data: &[u8]) -> Option<(Config, Vec<Op>)> {
    let (header, body) = data.split_first_chunk::<HEADER_BYTES>()?;
    let config = Config {
        tick_ms: TICK_CHOICES[usize::from(header[0]) % TICK_CHOICES.len()],
        start_ms: T0 + u64::from(header[1]) * 13,
    };
    let ops = body
        .chunks_exact(OP_BYTES)
        .map(|b| {
            let id = (b[0] >> 3) % IDS.len() as u8;
            let when = match b[1] & 7 {
                1 => When::Boundary {
                    level: 1 + (b[1] >> 3) % LEVELS as u8,
                    offset: b[2] as i8,
                },
                2 => When::Ms(u16::from_le_bytes([b[2], b[3]])),
                3 => When::MaxDelay(b[2] as i8),
                4 => When::LongAgo,
                _ => When::Ticks {
                    ticks: i16::from_le_bytes([b[2], b[3]]),
                    early: b[4],
                },
            };
            match b[0] & 7 {
                0 => Op::Schedule { id, when },
                1 => Op::ScheduleAt { id, when },
                2 => Op::Reschedule { id, when },
                3 => Op::Upsert { id, when },
                4 => Op::Cancel { id },
                6 => Op::Lag { when },
                _ => Op::Advance { when },
            }
        })
        .collect();
    Some((config, ops))
}

/// Encodes `ops` so that [`decode`] gives them back (for seed corpora).
/// `config.tick_ms` must be one of [`TICK_CHOICES`] and `config.start_ms`
/// be `T0 + 13 * k` with `k < 256`.
pub fn encode(config: Config, ops: &[Op]) -> Vec<u8> {
    let tick = TICK_CHOICES
        .iter()
        .position(|&t| t == config.tick_ms)
        .expect("tick_ms not in TICK_CHOICES");
    let start = (config.start_ms - T0) / 13;
    assert!(
        T0 + start * 13 == config.start_ms && start < 256,
        "start_ms not encodable: {}",
        config.start_ms
    );
    let mut out = vec![tick as u8, start as u8];
    for op in ops {
        let (kind, id, when) = match *op {
            Op::Schedule { id, when } => (0, id, when),
            Op::ScheduleAt { id, when } => (1, id, when),
            Op::Reschedule { id, when } => (2, id, when),
            Op::Upsert { id, when } => (3, id, when),
            Op::Cancel { id } => (4, id, When::LongAgo),
            Op::Advance { when } => (5, 0, when),
            Op::Lag { when } => (6, 0, when),
        };
        assert!(usize::from(id) < IDS.len(), "id {id} out of range");
        let (class, [a, b, c]) = match when {
            When::Ticks { ticks, early } => {
                let [a, b] = ticks.to_le_bytes();
                (0, [a, b, early])
            }
            When::Boundary { level, offset } => {
                assert!(
                    (1..=LEVELS as u8).contains(&level),
                    "boundary level {level}"
                );
                (1 | (level - 1) << 3, [offset as u8, 0, 0])
            }
            When::Ms(ms) => {
                let [a, b] = ms.to_le_bytes();
                (2, [a, b, 0])
            }
            When::MaxDelay(offset) => (3, [offset as u8, 0, 0]),
            When::LongAgo => (4, [0, 0, 0]),
        };
        out.extend_from_slice(&[kind | id << 3, class, a, b, c]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_whens() -> Vec<When> {
        vec![
            When::Ticks {
                ticks: -300,
                early: 255,
            },
            When::Ticks { ticks: 7, early: 0 },
            When::Boundary {
                level: 1,
                offset: -1,
            },
            When::Boundary {
                level: 2,
                offset: 127,
            },
            When::Boundary {
                level: 3,
                offset: -128,
            },
            When::Ms(65_535),
            When::MaxDelay(-128),
            When::LongAgo,
        ]
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let mut ops = vec![Op::Cancel { id: 5 }];
        for when in all_whens() {
            ops.extend([
                Op::Schedule { id: 0, when },
                Op::ScheduleAt { id: 1, when },
                Op::Reschedule { id: 2, when },
                Op::Upsert { id: 3, when },
                Op::Advance { when },
                Op::Lag { when },
            ]);
        }
        for (tick_ms, k) in [(1, 0), (1000, 255), (7, 3)] {
            let config = Config {
                tick_ms,
                start_ms: T0 + 13 * k,
            };
            let bytes = encode(config, &ops);
            assert_eq!(bytes.len(), HEADER_BYTES + OP_BYTES * ops.len());
            assert_eq!(decode(&bytes), Some((config, ops.clone())));
        }
    }

    #[test]
    fn decode_ignores_a_partial_op_and_rejects_a_short_header() {
        assert_eq!(decode(&[0]), None);
        let (_, ops) = decode(&[0, 0, 4, 0, 0, 0]).unwrap();
        assert!(ops.is_empty());
    }

    #[test]
    fn resolve_names_the_intended_ticks() {
        let model = Model::new(Config {
            tick_ms: 1000,
            start_ms: T0 + 500,
        });
        assert_eq!(model.ticks.origin_ms, T0);
        assert_eq!(model.now_tick(), 0);
        let tick_of = |when| model.ticks.tick_of(model.resolve(when));
        assert_eq!(
            tick_of(When::Ticks {
                ticks: 3,
                early: 255
            }),
            3
        );
        assert_eq!(
            model.resolve(When::Ticks {
                ticks: 3,
                early: 128
            }),
            T0 + 2500
        );
        assert_eq!(
            tick_of(When::Boundary {
                level: 1,
                offset: -1
            }),
            3599
        );
        assert_eq!(
            tick_of(When::Boundary {
                level: 2,
                offset: 0
            }),
            3600 * 3600
        );
        assert_eq!(
            model.resolve(When::MaxDelay(1)),
            T0 + 500 + MAX_DELAY_MS + 1
        );
        assert!(model.resolve(When::LongAgo) < T0);
    }

    #[test]
    fn model_fires_past_deadlines_at_the_next_tick() {
        let mut model = Model::new(Config {
            tick_ms: 1,
            start_ms: T0,
        });
        model.apply(&Op::Advance {
            when: When::Ticks {
                ticks: 10,
                early: 0,
            },
        });
        model.apply(&Op::ScheduleAt {
            id: 0,
            when: When::LongAgo,
        });
        assert_eq!(model.pending[&0].due, 11);
        model.apply(&Op::Advance {
            when: When::Ticks { ticks: 1, early: 0 },
        });
        let Step::Clock { fires, .. } = &model.last else {
            panic!("{:?}", model.last)
        };
        assert_eq!(fires.len(), 1);
        assert!(model.pending.is_empty());
    }
}
