//! A hierarchical timing wheel keyed by order id.
//!
//! The algorithm is Varghese and Lauck's hierarchical wheel, as in tokio's
//! `runtime/time/wheel` and Kafka's `TimingWheel`: [`level`] documents the
//! geometry. Entries live in a [`slab`]; each slot is a doubly linked list of
//! handles, and a hash index maps an order id to its handle, so insert,
//! remove and lookup are O(1). Advancing costs O(1) per occupied slot plus
//! O(1) per entry that fires or cascades, never O(pending).
//!
//! Ground rules:
//! - A `Wheel` is plain single-threaded data; the engine shards it and puts
//!   each shard behind a lock.
//! - Entries keep their deadline in Unix milliseconds; the tick is derived
//!   through [`TickMapping`] when needed, so nothing is rounded for callers.
//! - Invariant: every entry's effective tick is after `now` (a deadline
//!   already passed is due at `now + 1`), and it sits in the level and slot
//!   that `level_for(now_at_insert, tick)` chose. An entry is processed no
//!   later than its tick, and fires exactly at it.
//! - `advance_to` hands out entries in tick order; it never fires an entry
//!   before its tick, and never twice.

pub(crate) mod level;
mod slab;

/// The wheel's geometry, for the model tests' boundary cases.
#[cfg(feature = "testing")]
pub mod geometry {
    pub use super::level::{MAX_TICKS, slot_width};
}

use hashbrown::{DefaultHashBuilder, HashTable, hash_table};
use std::hash::BuildHasher;

use crate::id::OrderId;
use level::{
    LEVELS, Level, MAX_TICKS, NIL, SLOTS, level_for, slot_for, slot_start_after, slot_width,
};
use slab::{Links, Slab};

/// Set on a `prev` field that names a slot rather than an entry.
const TAG_BIT: u32 = 1 << 31;

fn slot_tag(level: usize, slot: usize) -> u32 {
    TAG_BIT | (level * SLOTS + slot) as u32
}

fn untag(tag: u32) -> (usize, usize) {
    let n = (tag & !TAG_BIT) as usize;
    (n / SLOTS, n % SLOTS)
}

/// Maps Unix milliseconds onto ticks: tick `n` is the instant
/// `origin_ms + n * tick_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickMapping {
    /// Unix ms of tick 0.
    pub origin_ms: u64,
    /// Milliseconds per tick.
    pub tick_ms: u64,
}

impl TickMapping {
    /// The first tick at or after `deadline_ms`: firing then is never early.
    pub fn tick_of(&self, deadline_ms: u64) -> u64 {
        deadline_ms
            .saturating_sub(self.origin_ms)
            .div_ceil(self.tick_ms)
    }

    /// The instant tick `tick` begins.
    pub fn ms_of(&self, tick: u64) -> u64 {
        self.origin_ms
            .saturating_add(tick.saturating_mul(self.tick_ms))
    }

    /// The last tick that has begun at `now_ms`.
    pub fn elapsed_ticks(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.origin_ms) / self.tick_ms
    }
}

/// A timer taken out of the wheel: fired, cancelled or drained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The order id.
    pub id: OrderId,
    /// When it is due (Unix ms).
    pub deadline_ms: u64,
}

/// The id was already pending; carries its current deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyPending {
    /// When the pending timer fires (Unix ms).
    pub deadline_ms: u64,
}

/// The deadlines of a wheel's pending timers, copied out by
/// [`Wheel::copy_deadlines`]; reuse one to copy several wheels without
/// allocating again.
#[derive(Debug, Default)]
pub struct Deadlines {
    /// Per slab handle, free ones included.
    all: Vec<u64>,
    /// The free handles, whose deadlines in `all` are stale.
    free: Vec<u32>,
    /// `free` as one bit per handle.
    free_bits: Vec<u64>,
}

impl Deadlines {
    /// Calls `each` with every pending timer's deadline, in no particular
    /// order.
    pub fn for_each(&mut self, mut each: impl FnMut(u64)) {
        self.free_bits.clear();
        self.free_bits.resize(self.all.len().div_ceil(64), 0);
        for &handle in &self.free {
            self.free_bits[handle as usize / 64] |= 1 << (handle % 64);
        }
        for (handle, &deadline_ms) in self.all.iter().enumerate() {
            if self.free_bits[handle / 64] & (1 << (handle % 64)) == 0 {
                each(deadline_ms);
            }
        }
    }
}

/// A single-threaded hierarchical timing wheel.
pub struct Wheel {
    /// The last tick processed: every entry due at or before it has fired.
    now: u64,
    ticks: TickMapping,
    levels: [Level; LEVELS],
    entries: Slab,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// Timers taken out by `remove` so far.
    removed: u64,
    /// Never later than [`Wheel::next_expiration`] (`u64::MAX`: nothing to
    /// do): every link lowers it, every advance makes it exact; a removal
    /// leaves it early, which costs one look that finds nothing.
    due_hint: u64,
}

impl std::fmt::Debug for Wheel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheel")
            .field("now", &self.now)
            .field("ticks", &self.ticks)
            .field("len", &self.len())
            .finish()
    }
}

impl Wheel {
    /// An empty wheel at tick 0.
    pub fn new(ticks: TickMapping) -> Wheel {
        Wheel::with_hasher(ticks, DefaultHashBuilder::default())
    }

    /// An empty wheel at tick 0 whose index hashes ids with `hasher`. Wheels
    /// sharing a hasher accept one [`Wheel::hash`] for all of them, so a
    /// caller that shards by hash hashes each id once.
    pub fn with_hasher(ticks: TickMapping, hasher: DefaultHashBuilder) -> Wheel {
        assert!(ticks.tick_ms > 0, "tick_ms must be positive");
        Wheel {
            now: 0,
            ticks,
            levels: std::array::from_fn(|_| Level::new()),
            entries: Slab::default(),
            index: HashTable::new(),
            hasher,
            removed: 0,
            due_hint: u64::MAX,
        }
    }

    /// The hash the index uses for `id`.
    pub fn hash(&self, id: &[u8]) -> u64 {
        self.hasher.hash_one(id)
    }

    /// The last tick processed.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// How this wheel maps Unix ms to ticks.
    pub fn ticks(&self) -> TickMapping {
        self.ticks
    }

    /// Pending timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Timers taken out by [`Wheel::remove`] so far (cancelled).
    pub fn removed_total(&self) -> u64 {
        self.removed
    }

    /// Whether no timer is in the wheel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The deadline of a pending timer.
    pub fn get(&self, id: &[u8]) -> Option<u64> {
        self.get_hashed(self.hash(id), id)
    }

    /// [`Wheel::get`] with `hash == self.hash(id)` already computed.
    pub(crate) fn get_hashed(&self, hash: u64, id: &[u8]) -> Option<u64> {
        self.find(hash, id).map(|h| self.entries.deadline(h))
    }

    /// Adds a timer; fails if `id` is already pending.
    pub fn insert(&mut self, id: OrderId, deadline_ms: u64) -> Result<(), AlreadyPending> {
        self.insert_hashed(self.hash(id.as_bytes()), id, deadline_ms)
    }

    /// [`Wheel::insert`] with `hash == self.hash(id)` already computed.
    pub(crate) fn insert_hashed(
        &mut self,
        hash: u64,
        id: OrderId,
        deadline_ms: u64,
    ) -> Result<(), AlreadyPending> {
        debug_assert_eq!(hash, self.hash(id.as_bytes()), "stale hash for {id:?}");
        let (entries, hasher) = (&self.entries, &self.hasher);
        // One probe: `entry` finds the id or the free bucket for it.
        let vacant = match self.index.entry(
            hash,
            |&h| entries.id(h).as_bytes() == id.as_bytes(),
            |&h| hasher.hash_one(entries.id(h).as_bytes()),
        ) {
            hash_table::Entry::Occupied(found) => {
                let deadline_ms = self.entries.deadline(*found.get());
                return Err(AlreadyPending { deadline_ms });
            }
            hash_table::Entry::Vacant(vacant) => vacant,
        };
        let handle = self.entries.insert(id, deadline_ms);
        vacant.insert(handle);
        self.link(handle, deadline_ms);
        Ok(())
    }

    /// Removes a pending timer.
    pub fn remove(&mut self, id: &[u8]) -> Option<Expired> {
        let handle = self.take(self.hash(id), id)?;
        Some(self.free(handle))
    }

    /// [`Wheel::remove`] with `hash == self.hash(id)` already computed,
    /// saying only whether the timer was pending: it does not read the
    /// deadline, one cache line fewer when the wheel is out of cache.
    pub(crate) fn remove_hashed(&mut self, hash: u64, id: &[u8]) -> bool {
        match self.take(hash, id) {
            Some(handle) => {
                self.entries.remove(handle);
                true
            }
            None => false,
        }
    }

    /// Takes a pending timer out of the index and its slot, and counts it
    /// as removed; its handle stays valid until the caller frees it.
    fn take(&mut self, hash: u64, id: &[u8]) -> Option<u32> {
        debug_assert_eq!(hash, self.hash(id), "stale hash for {id:?}");
        let entries = &self.entries;
        let found = self
            .index
            .find_entry(hash, |&h| entries.id(h).as_bytes() == id)
            .ok()?;
        let (handle, _) = found.remove();
        self.unlink(handle);
        self.removed += 1;
        Some(handle)
    }

    /// Moves a pending timer to a new deadline; returns the old one.
    pub fn set_deadline(&mut self, id: &[u8], deadline_ms: u64) -> Option<u64> {
        self.set_deadline_hashed(self.hash(id), id, deadline_ms)
    }

    /// [`Wheel::set_deadline`] with `hash == self.hash(id)` already computed.
    pub(crate) fn set_deadline_hashed(
        &mut self,
        hash: u64,
        id: &[u8],
        deadline_ms: u64,
    ) -> Option<u64> {
        let handle = self.find(hash, id)?;
        self.unlink(handle);
        let old = self.entries.deadline(handle);
        self.entries.set_deadline(handle, deadline_ms);
        self.link(handle, deadline_ms);
        Some(old)
    }

    /// The next tick at which advancing would do any work, if any.
    pub fn next_expiration(&self) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        (0..LEVELS)
            .filter_map(|level| self.levels[level].next_expiration(level, self.now))
            .min()
    }

    /// A tick no later than [`Wheel::next_expiration`], `u64::MAX` when
    /// there is nothing to do, in O(1): a caller holding many wheels uses it
    /// to skip those with nothing due, and looks closer only when it is due.
    pub fn due_hint(&self) -> u64 {
        self.due_hint
    }

    /// Moves `now` forward to `tick` when nothing is due by then, in O(1);
    /// otherwise leaves the wheel as it is. A caller that skipped this wheel
    /// while it had nothing due brings it up to date before adding a timer,
    /// so that a deadline already passed is due at the next tick, not at one
    /// already gone by.
    pub fn catch_up(&mut self, tick: u64) {
        if tick > self.now && self.due_hint > tick {
            self.now = tick;
        }
    }

    /// Processes every tick up to and including `tick`, appending what fires
    /// to `out` in tick order.
    pub fn advance_to(&mut self, tick: u64, out: &mut Vec<Expired>) {
        loop {
            match self.next_expiration() {
                Some(next) if next <= tick => self.process(next, out),
                later => {
                    self.due_hint = later.unwrap_or(u64::MAX);
                    break;
                }
            }
        }
        self.now = self.now.max(tick);
    }

    /// Processes only the next tick that has work, if it is at or before
    /// `tick`; returns it. Lets a caller interleave several wheels in tick
    /// order and bound the work done while holding a lock.
    pub fn advance_one(&mut self, tick: u64, out: &mut Vec<Expired>) -> Option<u64> {
        match self.next_expiration() {
            Some(next) if next <= tick => {
                self.process(next, out);
                self.due_hint = self.next_expiration().unwrap_or(u64::MAX);
                Some(next)
            }
            later => {
                self.due_hint = later.unwrap_or(u64::MAX);
                self.now = self.now.max(tick);
                None
            }
        }
    }

    /// Takes every pending timer out, in no particular order.
    pub fn drain(&mut self) -> Vec<Expired> {
        let mut out = Vec::with_capacity(self.len());
        // Only occupied slots: visiting all of them cost a shut-down of an
        // almost empty engine 32 × 3 × 3600 slot reads.
        for level in 0..LEVELS {
            let mut from = 0;
            while let Some(slot) = self.levels[level].next_occupied(from) {
                self.take_slot(level, slot, |wheel, handle| {
                    out.push(wheel.free(handle));
                });
                from = slot + 1;
            }
        }
        self.index.clear();
        self.due_hint = u64::MAX;
        out
    }

    /// Takes out every pending timer whose id matches `pred` (a partition
    /// this node stopped owning) and returns them; they do not count as
    /// removed by [`Wheel::remove`]: nobody cancelled them.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&[u8]) -> bool) -> Vec<Expired> {
        let entries = &self.entries;
        let ids: Vec<OrderId> = self
            .index
            .iter()
            .map(|&h| entries.id(h))
            .filter(|id| pred(id.as_bytes()))
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(handle) = self.take(self.hash(id.as_bytes()), id.as_bytes()) {
                self.removed -= 1;
                out.push(self.free(handle));
            }
        }
        // `due_hint` stays a lower bound: nothing became due earlier.
        out
    }

    /// Copies the deadlines of the pending timers into `into`, replacing
    /// what it held: a memcpy of the deadline arrays, so a caller holding
    /// the wheel's lock holds it briefly, and reads them with
    /// [`Deadlines::for_each`] after releasing it. Ids are never read.
    pub fn copy_deadlines(&self, into: &mut Deadlines) {
        self.entries.copy_deadlines(&mut into.all, &mut into.free);
    }

    /// Approximate heap bytes held, for memory accounting (ids longer than
    /// the inline capacity add their own allocation).
    pub fn heap_bytes(&self) -> usize {
        self.entries.heap_bytes()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + LEVELS * SLOTS * std::mem::size_of::<u32>()
    }

    fn find(&self, hash: u64, id: &[u8]) -> Option<u32> {
        debug_assert_eq!(hash, self.hash(id), "stale hash for {id:?}");
        self.index
            .find(hash, |&h| self.entries.id(h).as_bytes() == id)
            .copied()
    }

    /// The tick an entry is due: its deadline's tick, or the next tick if
    /// that has already been processed.
    fn due_tick(&self, deadline_ms: u64) -> u64 {
        self.ticks.tick_of(deadline_ms).max(self.now + 1)
    }

    /// Puts an entry into the slot its deadline calls for, seen from `now`.
    fn link(&mut self, handle: u32, deadline_ms: u64) {
        let due = self.due_tick(deadline_ms);
        // Beyond the wheel's reach: park at the far end and re-place later.
        let placed = due.min(self.now + MAX_TICKS - 1);
        let level = level_for(self.now, placed);
        let slot = slot_for(placed, level);
        self.due_hint = self.due_hint.min(slot_start_after(self.now, level, slot));
        let head = self.levels[level].head(slot);
        if head != NIL {
            self.entries.links_mut(head).prev = handle;
        }
        *self.entries.links_mut(handle) = Links {
            next: head,
            prev: slot_tag(level, slot),
        };
        self.levels[level].set_head(slot, handle);
    }

    fn unlink(&mut self, handle: u32) {
        let Links { next, prev } = self.entries.links(handle);
        if next != NIL {
            self.entries.links_mut(next).prev = prev;
        }
        if prev & TAG_BIT != 0 {
            let (level, slot) = untag(prev);
            debug_assert_eq!(
                self.levels[level].head(slot),
                handle,
                "level={level} slot={slot}"
            );
            self.levels[level].set_head(slot, next);
        } else {
            self.entries.links_mut(prev).next = next;
        }
    }

    /// Empties one slot, calling `each` on every handle it held.
    fn take_slot(&mut self, level: usize, slot: usize, mut each: impl FnMut(&mut Wheel, u32)) {
        let mut handle = self.levels[level].head(slot);
        self.levels[level].set_head(slot, NIL);
        while handle != NIL {
            let next = self.entries.links(handle).next;
            each(self, handle);
            handle = next;
        }
    }

    /// Processes tick `tick`: higher levels cascade first, then the base
    /// slot fires.
    fn process(&mut self, tick: u64, out: &mut Vec<Expired>) {
        debug_assert!(tick > self.now, "process: tick={tick} now={}", self.now);
        self.now = tick;
        for level in (1..LEVELS).rev() {
            if tick.is_multiple_of(slot_width(level)) {
                let slot = slot_for(tick, level);
                self.take_slot(level, slot, |wheel, handle| {
                    let deadline_ms = wheel.entries.deadline(handle);
                    if wheel.ticks.tick_of(deadline_ms) <= tick {
                        wheel.fire(handle, out);
                    } else {
                        wheel.link(handle, deadline_ms);
                    }
                });
            }
        }
        let slot = slot_for(tick, 0);
        self.take_slot(0, slot, |wheel, handle| {
            debug_assert!(
                wheel.ticks.tick_of(wheel.entries.deadline(handle)) <= tick,
                "early fire: deadline={} tick={tick}",
                wheel.entries.deadline(handle)
            );
            wheel.fire(handle, out);
        });
    }

    fn fire(&mut self, handle: u32, out: &mut Vec<Expired>) {
        let expired = self.free(handle);
        let hash = self.hasher.hash_one(expired.id.as_bytes());
        if let Ok(found) = self.index.find_entry(hash, |&h| h == handle) {
            found.remove();
        } else {
            debug_assert!(false, "fired entry {handle} missing from the index");
        }
        out.push(expired);
    }

    /// Frees the slab entry of a timer already out of its slot; returns it.
    fn free(&mut self, handle: u32) -> Expired {
        let deadline_ms = self.entries.deadline(handle);
        Expired {
            id: self.entries.remove(handle),
            deadline_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel() -> Wheel {
        Wheel::new(TickMapping {
            origin_ms: 0,
            tick_ms: 1,
        })
    }

    fn id(s: &str) -> OrderId {
        OrderId::new(s).unwrap()
    }

    fn fired_until(wheel: &mut Wheel, tick: u64) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        wheel.advance_to(tick, &mut out);
        out.into_iter()
            .map(|e| (e.id.to_string(), e.deadline_ms))
            .collect()
    }

    #[test]
    fn fires_at_its_tick_not_before() {
        for delay in [1, 2, 3599, 3600, 3601, 7200, 3600 * 3600, 3600 * 3600 + 1] {
            let mut w = wheel();
            w.insert(id("a"), delay).unwrap();
            assert!(fired_until(&mut w, delay - 1).is_empty(), "delay={delay}");
            assert_eq!(fired_until(&mut w, delay), vec![("a".into(), delay)]);
            assert!(w.is_empty());
        }
    }

    #[test]
    fn past_deadline_fires_next_tick() {
        let mut w = wheel();
        w.advance_to(100, &mut Vec::new());
        w.insert(id("late"), 5).unwrap();
        assert_eq!(w.next_expiration(), Some(101));
        assert_eq!(fired_until(&mut w, 101), vec![("late".into(), 5)]);
    }

    #[test]
    fn past_deadline_at_level_boundary() {
        let mut w = wheel();
        w.advance_to(3599, &mut Vec::new());
        w.insert(id("late"), 10).unwrap();
        assert_eq!(fired_until(&mut w, 3600), vec![("late".into(), 10)]);
    }

    #[test]
    fn fires_in_deadline_order_across_levels() {
        let mut w = wheel();
        let deadlines = [7300, 5, 3600, 3599, 1_000_000, 42, 3601];
        for (n, d) in deadlines.iter().enumerate() {
            w.insert(id(&format!("o{n}")), *d).unwrap();
        }
        let fired: Vec<u64> = fired_until(&mut w, 2_000_000).iter().map(|f| f.1).collect();
        let mut sorted = deadlines.to_vec();
        sorted.sort();
        assert_eq!(fired, sorted);
    }

    #[test]
    fn remove_from_head_middle_and_tail() {
        let mut w = wheel();
        for n in 0..5 {
            w.insert(id(&format!("o{n}")), 10).unwrap();
        }
        assert!(w.remove(b"o4").is_some()); // head (pushed last)
        assert!(w.remove(b"o2").is_some()); // middle
        assert!(w.remove(b"o0").is_some()); // tail
        assert!(w.remove(b"o0").is_none());
        let mut fired: Vec<String> = fired_until(&mut w, 10).into_iter().map(|f| f.0).collect();
        fired.sort();
        assert_eq!(fired, vec!["o1", "o3"]);
    }

    #[test]
    fn duplicate_insert_reports_existing_deadline() {
        let mut w = wheel();
        w.insert(id("a"), 50).unwrap();
        assert_eq!(
            w.insert(id("a"), 60),
            Err(AlreadyPending { deadline_ms: 50 })
        );
        assert_eq!(w.get(b"a"), Some(50));
    }

    #[test]
    fn set_deadline_moves_the_timer() {
        let mut w = wheel();
        w.insert(id("a"), 5000).unwrap();
        assert_eq!(w.set_deadline(b"a", 20), Some(5000));
        assert_eq!(fired_until(&mut w, 20), vec![("a".into(), 20)]);
        assert_eq!(w.set_deadline(b"a", 30), None);
    }

    #[test]
    fn skips_empty_stretches() {
        let mut w = wheel();
        w.insert(id("far"), 31_622_400_000).unwrap();
        let mut out = Vec::new();
        let mut steps = 0;
        while w.advance_one(u64::MAX, &mut out).is_some() {
            steps += 1;
        }
        assert_eq!(out.len(), 1);
        assert!(steps <= 3 * LEVELS, "steps={steps}");
    }

    #[test]
    fn beyond_the_wheel_is_parked_and_still_exact() {
        let mut w = wheel();
        let when = MAX_TICKS + 12_345;
        w.insert(id("far"), when).unwrap();
        assert!(fired_until(&mut w, when - 1).is_empty());
        assert_eq!(fired_until(&mut w, when), vec![("far".into(), when)]);
    }

    #[test]
    fn coarse_ticks_round_deadlines_up() {
        let mut w = Wheel::new(TickMapping {
            origin_ms: 1_000_000,
            tick_ms: 1000,
        });
        w.insert(id("a"), 1_000_001).unwrap(); // tick 1
        w.insert(id("b"), 1_002_000).unwrap(); // tick 2
        assert!(fired_until(&mut w, 0).is_empty());
        assert_eq!(fired_until(&mut w, 1), vec![("a".into(), 1_000_001)]);
        assert_eq!(fired_until(&mut w, 2), vec![("b".into(), 1_002_000)]);
    }

    #[test]
    fn catch_up_moves_only_an_idle_wheel() {
        let mut w = wheel();
        w.catch_up(100);
        assert_eq!(w.now(), 100);
        w.insert(id("a"), 150).unwrap();
        assert_eq!(w.due_hint(), 150);
        w.catch_up(200); // "a" is due by then: nothing moves
        assert_eq!(w.now(), 100);
        assert_eq!(fired_until(&mut w, 200), vec![("a".into(), 150)]);
        assert_eq!(w.due_hint(), u64::MAX);
        w.insert(id("late"), 5).unwrap();
        assert_eq!(w.due_hint(), 201, "a passed deadline is due next tick");
    }

    #[test]
    fn copied_deadlines_are_the_pending_ones() {
        let mut w = wheel();
        for n in 0..3000u64 {
            w.insert(id(&format!("o{n}")), 10 + n).unwrap();
        }
        for n in (0..3000u64).step_by(7) {
            w.remove(format!("o{n}").as_bytes()).unwrap();
        }
        fired_until(&mut w, 10 + 99); // o0..o99 fire
        let mut copy = Deadlines::default();
        w.copy_deadlines(&mut copy);
        let mut seen = Vec::new();
        copy.for_each(|d| seen.push(d));
        seen.sort();
        let expected: Vec<u64> = (100..3000u64)
            .filter(|n| n % 7 != 0)
            .map(|n| 10 + n)
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn drain_returns_everything() {
        let mut w = wheel();
        for n in 0..100u64 {
            w.insert(id(&format!("o{n}")), n * 997 + 1).unwrap();
        }
        assert_eq!(w.drain().len(), 100);
        assert!(w.is_empty());
        assert_eq!(w.get(b"o1"), None);
        assert_eq!(w.next_expiration(), None);
    }
}
