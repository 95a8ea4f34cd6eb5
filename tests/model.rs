//! Model-based tests: random operation sequences, run against a reference
//! model after every step.
//!
//! - `engine_tick_*`: the [`Engine`](timewheel::Engine) with a manual clock
//!   and inline handlers, against `timewheel::model` (a `BTreeMap` of id to
//!   deadline plus the clock), at a 1 ms and a 1 s tick.
//! - `wheel_*`: the bare [`Wheel`], against a model written here, including
//!   deadlines beyond the wheel's reach that the engine never accepts.
//!
//! Run: `cargo test --test model` (256 sequences of up to 50 steps per
//! test); `PROPTEST_CASES=10000 cargo test --release --test model` for a
//! longer run.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use timewheel::OrderId;
use timewheel::model::{Config, Harness, IDS, Model, Op, T0, When};
use timewheel::wheel::geometry::{MAX_TICKS, slot_width};
use timewheel::wheel::{AlreadyPending, Expired, TickMapping, Wheel};

fn id() -> impl Strategy<Value = u8> {
    0..IDS.len() as u8
}

/// Times near now (past and future), at level boundaries, far away, and at
/// the delay limit.
fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        6 => (-5i16..40, any::<u8>()).prop_map(|(ticks, early)| When::Ticks { ticks, early }),
        2 => (any::<i16>(), any::<u8>()).prop_map(|(ticks, early)| When::Ticks { ticks, early }),
        3 => (1u8..=3, -3i8..=3).prop_map(|(level, offset)| When::Boundary { level, offset }),
        1 => any::<u16>().prop_map(When::Ms),
        1 => (-2i8..=2).prop_map(When::MaxDelay),
        1 => Just(When::LongAgo),
    ]
}

/// Clock moves: mostly a few ticks, sometimes onto or just past a level
/// boundary (3600, 3600² and 3600³ ticks), sometimes the whole delay range.
fn jump() -> impl Strategy<Value = When> {
    prop_oneof![
        6 => (0i16..4, any::<u8>()).prop_map(|(ticks, early)| When::Ticks { ticks, early }),
        1 => (0i16..5000).prop_map(|ticks| When::Ticks { ticks, early: 0 }),
        3 => (1u8..=3, -1i8..=1).prop_map(|(level, offset)| When::Boundary { level, offset }),
        1 => any::<u16>().prop_map(When::Ms),
        1 => Just(When::MaxDelay(0)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (id(), when()).prop_map(|(id, when)| Op::Schedule { id, when }),
        3 => (id(), when()).prop_map(|(id, when)| Op::ScheduleAt { id, when }),
        2 => (id(), when()).prop_map(|(id, when)| Op::Reschedule { id, when }),
        2 => (id(), when()).prop_map(|(id, when)| Op::Upsert { id, when }),
        2 => id().prop_map(|id| Op::Cancel { id }),
        5 => jump().prop_map(|when| Op::Advance { when }),
        1 => jump().prop_map(|when| Op::Lag { when }),
    ]
}

/// The engine at a tick of `TICK_MS`, started at a random point of a tick.
struct EngineMachine<const TICK_MS: u64>;

impl<const TICK_MS: u64> ReferenceStateMachine for EngineMachine<TICK_MS> {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        (0..256u64)
            .prop_map(|k| {
                Model::new(Config {
                    tick_ms: TICK_MS,
                    start_ms: T0 + 13 * k,
                })
            })
            .boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Op> {
        op().boxed()
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        state.apply(op);
        state
    }
}

impl<const TICK_MS: u64> StateMachineTest for EngineMachine<TICK_MS> {
    type SystemUnderTest = Harness;
    type Reference = EngineMachine<TICK_MS>;

    fn init_test(model: &Model) -> Harness {
        Harness::new(model)
    }

    fn apply(mut harness: Harness, model: &Model, _: Op) -> Harness {
        harness.step(model);
        harness
    }

    fn check_invariants(harness: &Harness, model: &Model) {
        harness.check(model);
    }

    fn teardown(harness: Harness, model: Model) {
        harness.finish(&model);
    }
}

prop_state_machine! {
    // 256 cases unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn engine_tick_1ms(sequential 1..50 => EngineMachine<1>);

    #[test]
    fn engine_tick_1s(sequential 1..50 => EngineMachine<1000>);
}

// ---------------------------------------------------------------------------
// The bare wheel.

/// A tick, relative to the wheel's `now` when the operation runs.
#[derive(Debug, Clone, Copy)]
enum At {
    /// `now + n`.
    Now(i64),
    /// The first multiple of `SLOTS^level` ticks after `now`, plus `offset`:
    /// a slot boundary of level 1 or 2, or a full turn of the wheel (3).
    Boundary { level: usize, offset: i64 },
}

/// Operations on a [`Wheel`]. A deadline is `early` ms before the start of
/// its tick (less than a tick, so it still rounds up to that tick).
#[derive(Debug, Clone)]
enum WheelOp {
    Insert { id: u8, at: At, early: u64 },
    Remove { id: u8 },
    SetDeadline { id: u8, at: At, early: u64 },
    AdvanceTo { at: At },
    AdvanceOne { at: At },
    Drain,
}

/// The wheel's reference: id -> (deadline, due tick), and `now`.
#[derive(Debug, Clone)]
struct WheelModel {
    ticks: TickMapping,
    now: u64,
    pending: BTreeMap<u8, (u64, u64)>,
    /// What the last operation resolved to, for the system under test.
    last: WheelStep,
}

#[derive(Debug, Clone)]
enum WheelStep {
    Start,
    Insert {
        id: u8,
        deadline_ms: u64,
        expect: Result<(), AlreadyPending>,
    },
    Remove {
        id: u8,
        expect: Option<u64>,
    },
    SetDeadline {
        id: u8,
        deadline_ms: u64,
        expect: Option<u64>,
    },
    /// `advance_to(tick)`, or `advance_one(tick)` until it returns `None`
    /// when `one`.
    Advance {
        tick: u64,
        one: bool,
        fires: Vec<(u8, u64, u64)>,
    },
    Drain {
        expect: Vec<(u8, u64)>,
    },
}

impl WheelModel {
    fn tick(&self, at: At) -> u64 {
        match at {
            At::Now(n) => self.now.saturating_add_signed(n),
            At::Boundary { level, offset } => {
                let width = slot_width(level);
                (self.now / width + 1)
                    .saturating_mul(width)
                    .saturating_add_signed(offset)
            }
        }
    }

    fn deadline(&self, at: At, early: u64) -> u64 {
        let start = self.ticks.ms_of(self.tick(at));
        start.saturating_sub(early % self.ticks.tick_ms)
    }

    fn due(&self, deadline_ms: u64) -> u64 {
        self.ticks.tick_of(deadline_ms).max(self.now + 1)
    }

    fn advance(&mut self, tick: u64, one: bool) -> WheelStep {
        let mut fires: Vec<(u8, u64, u64)> = self
            .pending
            .iter()
            .filter(|(_, (_, due))| *due <= tick)
            .map(|(&id, &(deadline, due))| (id, deadline, due))
            .collect();
        fires.sort_by_key(|&(id, _, due)| (due, id));
        for (id, _, _) in &fires {
            self.pending.remove(id);
        }
        self.now = self.now.max(tick);
        WheelStep::Advance { tick, one, fires }
    }
}

struct WheelMachine;

/// Deadlines: near (past and future), around level boundaries, and beyond
/// the wheel's reach ([`MAX_TICKS`]), where entries are parked.
fn wheel_deadline() -> impl Strategy<Value = (At, u64)> {
    let at = prop_oneof![
        4 => (-3i64..40).prop_map(At::Now),
        3 => (1..=3usize, -2i64..=2).prop_map(|(level, offset)| At::Boundary { level, offset }),
        1 => (MAX_TICKS as i64 - 2..MAX_TICKS as i64 + 2).prop_map(At::Now),
        1 => (0..2 * MAX_TICKS as i64).prop_map(At::Now),
    ];
    (at, 0u64..7)
}

/// Clock moves: a few ticks, onto or around a boundary, or anywhere.
fn wheel_jump() -> impl Strategy<Value = At> {
    prop_oneof![
        4 => (0i64..5).prop_map(At::Now),
        3 => (1..=3usize, -1i64..=1).prop_map(|(level, offset)| At::Boundary { level, offset }),
        1 => (0..3 * MAX_TICKS as i64).prop_map(At::Now),
    ]
}

impl ReferenceStateMachine for WheelMachine {
    type State = WheelModel;
    type Transition = WheelOp;

    fn init_state() -> BoxedStrategy<WheelModel> {
        prop_oneof![
            Just(TickMapping {
                origin_ms: 0,
                tick_ms: 1
            }),
            Just(TickMapping {
                origin_ms: T0,
                tick_ms: 7
            }),
        ]
        .prop_map(|ticks| WheelModel {
            ticks,
            now: 0,
            pending: BTreeMap::new(),
            last: WheelStep::Start,
        })
        .boxed()
    }

    fn transitions(_: &WheelModel) -> BoxedStrategy<WheelOp> {
        prop_oneof![
            4 => (id(), wheel_deadline())
                .prop_map(|(id, (at, early))| WheelOp::Insert { id, at, early }),
            2 => id().prop_map(|id| WheelOp::Remove { id }),
            2 => (id(), wheel_deadline())
                .prop_map(|(id, (at, early))| WheelOp::SetDeadline { id, at, early }),
            3 => wheel_jump().prop_map(|at| WheelOp::AdvanceTo { at }),
            3 => wheel_jump().prop_map(|at| WheelOp::AdvanceOne { at }),
            1 => Just(WheelOp::Drain),
        ]
        .boxed()
    }

    fn apply(mut m: WheelModel, op: &WheelOp) -> WheelModel {
        m.last = match *op {
            WheelOp::Insert { id, at, early } => {
                let deadline_ms = m.deadline(at, early);
                let expect = match m.pending.get(&id) {
                    Some(&(deadline_ms, _)) => Err(AlreadyPending { deadline_ms }),
                    None => {
                        m.pending.insert(id, (deadline_ms, m.due(deadline_ms)));
                        Ok(())
                    }
                };
                WheelStep::Insert {
                    id,
                    deadline_ms,
                    expect,
                }
            }
            WheelOp::Remove { id } => WheelStep::Remove {
                id,
                expect: m.pending.remove(&id).map(|(d, _)| d),
            },
            WheelOp::SetDeadline { id, at, early } => {
                let deadline_ms = m.deadline(at, early);
                let due = m.due(deadline_ms);
                let expect = m
                    .pending
                    .get_mut(&id)
                    .map(|entry| std::mem::replace(entry, (deadline_ms, due)).0);
                WheelStep::SetDeadline {
                    id,
                    deadline_ms,
                    expect,
                }
            }
            WheelOp::AdvanceTo { at } => m.advance(m.tick(at).max(m.now), false),
            WheelOp::AdvanceOne { at } => m.advance(m.tick(at).max(m.now), true),
            WheelOp::Drain => WheelStep::Drain {
                expect: std::mem::take(&mut m.pending)
                    .into_iter()
                    .map(|(id, (d, _))| (id, d))
                    .collect(),
            },
        };
        m
    }
}

fn wheel_id(id: u8) -> OrderId {
    OrderId::new(IDS[id as usize]).unwrap()
}

fn index_of(e: &Expired) -> u8 {
    IDS.iter().position(|&s| s == e.id.as_str()).unwrap() as u8
}

struct WheelSut {
    wheel: Wheel,
}

impl StateMachineTest for WheelMachine {
    type SystemUnderTest = WheelSut;
    type Reference = WheelMachine;

    fn init_test(m: &WheelModel) -> WheelSut {
        WheelSut {
            wheel: Wheel::new(m.ticks),
        }
    }

    fn apply(mut sut: WheelSut, m: &WheelModel, _: WheelOp) -> WheelSut {
        let w = &mut sut.wheel;
        match &m.last {
            WheelStep::Start => {}
            WheelStep::Insert {
                id,
                deadline_ms,
                expect,
            } => assert_eq!(&w.insert(wheel_id(*id), *deadline_ms), expect, "{m:?}"),
            WheelStep::Remove { id, expect } => {
                let got = w
                    .remove(IDS[*id as usize].as_bytes())
                    .map(|e| e.deadline_ms);
                assert_eq!(&got, expect, "{m:?}");
            }
            WheelStep::SetDeadline {
                id,
                deadline_ms,
                expect,
            } => {
                let got = w.set_deadline(IDS[*id as usize].as_bytes(), *deadline_ms);
                assert_eq!(&got, expect, "{m:?}");
            }
            WheelStep::Advance { tick, one, fires } => {
                let due_of = |e: &Expired| {
                    let id = index_of(e);
                    fires
                        .iter()
                        .find(|f| f.0 == id)
                        .unwrap_or_else(|| panic!("{e:?} fired, not due by {tick}; {m:?}"))
                        .2
                };
                let mut out = Vec::new();
                if *one {
                    // One tick at a time: each call processes the next tick
                    // with work (possibly a cascade only) and fires exactly
                    // what is due then.
                    let mut calls = 0;
                    loop {
                        let (before, next) = (w.now(), w.next_expiration());
                        let from = out.len();
                        let stopped = w.advance_one(*tick, &mut out);
                        assert_eq!(stopped, next.filter(|n| n <= tick), "{m:?}");
                        let Some(at) = stopped else { break };
                        assert!(at > before, "advance_one went back: {at} <= {before}");
                        assert_eq!(w.now(), at, "{m:?}");
                        for e in &out[from..] {
                            assert_eq!(due_of(e), at, "{e:?} fired at {at}; {m:?}");
                        }
                        calls += 1;
                        assert!(calls <= 100 * IDS.len(), "advance_one does not converge");
                    }
                } else {
                    w.advance_to(*tick, &mut out);
                    // Exact again after an advance: it is what the
                    // advance stopped at.
                    assert_eq!(
                        w.due_hint(),
                        w.next_expiration().unwrap_or(u64::MAX),
                        "{m:?}"
                    );
                }
                assert_eq!(w.now(), m.now, "{m:?}");
                let order: Vec<u64> = out.iter().map(due_of).collect();
                assert!(
                    order.is_sorted(),
                    "fired out of due order: {order:?}; {m:?}"
                );
                let mut got: Vec<(u8, u64)> =
                    out.iter().map(|e| (index_of(e), e.deadline_ms)).collect();
                got.sort();
                let mut want: Vec<(u8, u64)> = fires.iter().map(|&(id, d, _)| (id, d)).collect();
                want.sort();
                assert_eq!(got, want, "advance to {tick}: fired set; {m:?}");
            }
            WheelStep::Drain { expect } => {
                let mut got: Vec<(u8, u64)> = w
                    .drain()
                    .iter()
                    .map(|e| (index_of(e), e.deadline_ms))
                    .collect();
                got.sort();
                assert_eq!(&got, expect, "{m:?}");
            }
        }
        sut
    }

    fn check_invariants(sut: &WheelSut, m: &WheelModel) {
        let w = &sut.wheel;
        assert_eq!(w.len(), m.pending.len(), "{m:?}");
        for (n, id) in IDS.iter().enumerate() {
            let want = m.pending.get(&(n as u8)).map(|&(d, _)| d);
            assert_eq!(w.get(id.as_bytes()), want, "get({id}); {m:?}");
        }
        // Some work is scheduled no later than the earliest due tick, and
        // strictly in the future.
        let first_due = m.pending.values().map(|&(_, due)| due).min();
        match (w.next_expiration(), first_due) {
            (None, None) => {}
            (Some(next), Some(due)) => assert!(
                next > w.now() && next <= due,
                "next_expiration={next} now={} first due={due}; {m:?}",
                w.now()
            ),
            (next, due) => panic!("next_expiration={next:?} first due={due:?}; {m:?}"),
        }
        // The O(1) hint a caller uses to skip the wheel is never late.
        let next = w.next_expiration().unwrap_or(u64::MAX);
        assert!(
            w.due_hint() <= next,
            "due_hint={} next_expiration={next}; {m:?}",
            w.due_hint()
        );
    }
}

prop_state_machine! {
    // 256 cases unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn wheel_against_model(sequential 1..50 => WheelMachine);
}
