//! Wheel geometry and one level of slots.
//!
//! Ticks are counted from the engine's origin. A level has [`SLOTS`] slots;
//! each slot of level `k` spans `SLOTS^k` ticks, so level `k` as a whole spans
//! `SLOTS^(k+1)` ticks. With the default one-second tick:
//!
//! | level | slot width        | range            |
//! |-------|-------------------|------------------|
//! | 0     | 1 tick (1 s)      | 3600 ticks (1 h) |
//! | 1     | 3600 ticks (1 h)  | 150 days         |
//! | 2     | 150 days          | ~1,479 years     |
//!
//! With the finest tick (1 ms) the top level still spans 540 days, more than
//! the 366-day limit on delays ([`crate::limits::MAX_DELAY_MS`]).
//!
//! A timer due at tick `when` is stored in the lowest level `k` for which
//! `when` and `now` fall in the same level-`(k+1)` span, in slot
//! `(when / SLOTS^k) % SLOTS`. When the wheel reaches the start of a slot of
//! a higher level, the entries there move down ("cascade"); the base level's
//! slots fire. Everything here is pure arithmetic; [`Level`] adds an
//! occupancy bitmap, summarised in one word, so the wheel finds the next
//! non-empty slot in O(1) however many empty ones lie between.
//!
//! `SLOTS` is 3600, not a power of two: one hour of one-second slots, as the
//! classic order-timeout ring. Division by a constant compiles to a multiply
//! and a shift, so it costs no more than masking would.

/// Slots per level.
#[cfg(not(fuzzing))]
pub const SLOTS: usize = 3600;

/// Number of levels.
#[cfg(not(fuzzing))]
pub const LEVELS: usize = 3;

// The fuzz build (cargo-fuzz sets `--cfg fuzzing`) uses a small wheel of the
// same kind: building one costs 2.5 KiB of slot heads instead of 42 KiB (per
// shard), and level boundaries come every 130 ticks, within reach of a
// mutated input. Like 3600, 130 is not a power of two and its bitmap ends in
// a partial word; five levels still span more than `MAX_DELAY_MS` at 1 ms.
// `tests/engine_fuzz_corpus.rs` replays the corpus on the real geometry.
/// Slots per level (fuzz build).
#[cfg(fuzzing)]
pub const SLOTS: usize = 130;

/// Number of levels (fuzz build).
#[cfg(fuzzing)]
pub const LEVELS: usize = 5;

/// Ticks covered by the whole wheel; deadlines further out are parked in the
/// top level and re-placed as the wheel turns.
pub const MAX_TICKS: u64 = level_range(LEVELS - 1);

// At the finest tick (1 ms) the wheel must still hold the longest delay.
const _: () = assert!(MAX_TICKS > crate::limits::MAX_DELAY_MS);

/// Marks a slot that holds no entry.
pub const NIL: u32 = u32::MAX;

const WORDS: usize = SLOTS.div_ceil(64);

// One summary word has a bit per bitmap word, which makes finding the next
// occupied slot two `trailing_zeros` instead of a scan of `WORDS` words.
const _: () = assert!(WORDS <= 64);

/// Ticks spanned by one slot of `level`.
pub const fn slot_width(level: usize) -> u64 {
    (SLOTS as u64).pow(level as u32)
}

/// Ticks spanned by all the slots of `level`.
pub const fn level_range(level: usize) -> u64 {
    (SLOTS as u64).pow(level as u32 + 1)
}

/// The level that holds a timer due at `when`, seen from `now` (`when > now`).
pub fn level_for(now: u64, when: u64) -> usize {
    debug_assert!(when > now, "level_for: when={when} must be after now={now}");
    (0..LEVELS)
        .find(|&level| when / level_range(level) == now / level_range(level))
        .unwrap_or(LEVELS - 1)
}

/// The slot of `level` that holds a timer due at `when`.
pub fn slot_for(when: u64, level: usize) -> usize {
    ((when / slot_width(level)) % SLOTS as u64) as usize
}

/// The first tick after `now` at which `slot` of `level` is processed.
pub fn slot_start_after(now: u64, level: usize, slot: usize) -> u64 {
    let span_start = now - now % level_range(level);
    let start = span_start + slot as u64 * slot_width(level);
    if start > now {
        start
    } else {
        start + level_range(level)
    }
}

/// One level: the head of each slot's list and a bitmap of non-empty slots.
pub(crate) struct Level {
    heads: Box<[u32]>,
    occupied: [u64; WORDS],
    /// Bit `w` is set when `occupied[w]` is non-zero.
    summary: u64,
}

impl Level {
    pub fn new() -> Level {
        Level {
            heads: vec![NIL; SLOTS].into_boxed_slice(),
            occupied: [0; WORDS],
            summary: 0,
        }
    }

    pub fn head(&self, slot: usize) -> u32 {
        self.heads[slot]
    }

    pub fn set_head(&mut self, slot: usize, handle: u32) {
        self.heads[slot] = handle;
        let (word, bit) = (slot / 64, slot % 64);
        if handle == NIL {
            self.occupied[word] &= !(1 << bit);
            if self.occupied[word] == 0 {
                self.summary &= !(1 << word);
            }
        } else {
            self.occupied[word] |= 1 << bit;
            self.summary |= 1 << word;
        }
    }

    /// The first non-empty slot at or after `from`, without wrapping.
    pub fn next_occupied(&self, from: usize) -> Option<usize> {
        if from >= SLOTS {
            return None;
        }
        let word = from / 64;
        let bits = self.occupied[word] & (u64::MAX << (from % 64));
        if bits != 0 {
            return Some(word * 64 + bits.trailing_zeros() as usize);
        }
        let later_words = self.summary & u64::MAX.checked_shl(word as u32 + 1).unwrap_or(0);
        if later_words == 0 {
            return None;
        }
        let word = later_words.trailing_zeros() as usize;
        debug_assert!(
            self.occupied[word] != 0,
            "summary bit {word} set for an empty word"
        );
        Some(word * 64 + self.occupied[word].trailing_zeros() as usize)
    }

    /// The first tick after `now` at which a non-empty slot of this level is
    /// processed. Lower levels never hold entries at or before `now`'s slot
    /// (they are placed within the current span); only the top level wraps.
    pub fn next_expiration(&self, level: usize, now: u64) -> Option<u64> {
        let current = slot_for(now, level);
        let slot = match self.next_occupied(current + 1) {
            Some(slot) => slot,
            None if level == LEVELS - 1 => self.next_occupied(0)?,
            None => return None,
        };
        Some(slot_start_after(now, level, slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_is_derived() {
        assert_eq!(slot_width(0), 1);
        assert_eq!(slot_width(1), 3600);
        assert_eq!(slot_width(2), 3600 * 3600);
        assert_eq!(level_range(0), 3600);
        assert_eq!(level_range(1), 3600 * 3600);
        assert_eq!(MAX_TICKS, 3600u64.pow(3));
    }

    /// Every level boundary, approached from both sides.
    #[test]
    fn level_for_at_every_boundary() {
        for level in 0..LEVELS {
            let range = level_range(level);
            for now in [0, 1, range - 2, range - 1, range, 5 * range + 7] {
                // The last tick inside now's level-`level` span stays at `level` or below.
                let span_end = now - now % range + range - 1;
                if span_end > now {
                    assert!(
                        level_for(now, span_end) <= level,
                        "now={now} when={span_end}"
                    );
                }
                // The first tick of the next span needs a higher level (or the top).
                let next_span = span_end + 1;
                let expected = if level + 1 < LEVELS {
                    level + 1
                } else {
                    LEVELS - 1
                };
                assert!(
                    level_for(now, next_span) >= expected.min(LEVELS - 1),
                    "now={now} when={next_span} level={level}"
                );
            }
        }
    }

    #[test]
    fn level_for_small_cases() {
        assert_eq!(level_for(0, 1), 0);
        assert_eq!(level_for(0, 3599), 0);
        assert_eq!(level_for(0, 3600), 1);
        assert_eq!(level_for(3599, 3600), 1);
        assert_eq!(level_for(3600, 7199), 0);
        assert_eq!(level_for(0, level_range(1) - 1), 1);
        assert_eq!(level_for(0, level_range(1)), 2);
        assert_eq!(level_for(0, MAX_TICKS - 1), 2);
        // Beyond the wheel: parked in the top level.
        assert_eq!(level_for(0, MAX_TICKS), 2);
        assert_eq!(level_for(0, u64::MAX), 2);
    }

    #[test]
    fn slot_for_at_every_boundary() {
        for level in 0..LEVELS {
            let width = slot_width(level);
            assert_eq!(slot_for(0, level), 0);
            assert_eq!(slot_for(width - 1, level), 0);
            assert_eq!(slot_for(width, level), 1 % SLOTS);
            assert_eq!(slot_for(level_range(level) - 1, level), SLOTS - 1);
            assert_eq!(slot_for(level_range(level), level), 0);
        }
    }

    /// A timer placed from `now` is processed no later than its tick and, at
    /// level 0, exactly at it.
    #[test]
    fn placement_is_processed_in_time() {
        let nows = [
            0,
            1,
            3599,
            3600,
            3601,
            level_range(1) - 1,
            level_range(1) + 5,
        ];
        let deltas = [
            1,
            2,
            3599,
            3600,
            3601,
            level_range(1) - 1,
            level_range(1),
            MAX_TICKS - 1,
        ];
        for now in nows {
            for delta in deltas {
                let when = now + delta;
                let level = level_for(now, when);
                let slot = slot_for(when, level);
                let start = slot_start_after(now, level, slot);
                assert!(
                    start <= when,
                    "now={now} when={when} level={level} start={start}"
                );
                assert!(
                    start > now,
                    "now={now} when={when} level={level} start={start}"
                );
                if level == 0 {
                    assert_eq!(start, when);
                }
            }
        }
    }

    #[test]
    fn bitmap_finds_next_occupied() {
        let mut level = Level::new();
        assert_eq!(level.next_occupied(0), None);
        for slot in [0, 63, 64, 127, 3599] {
            level.set_head(slot, 1);
        }
        assert_eq!(level.next_occupied(0), Some(0));
        assert_eq!(level.next_occupied(1), Some(63));
        assert_eq!(level.next_occupied(64), Some(64));
        assert_eq!(level.next_occupied(65), Some(127));
        assert_eq!(level.next_occupied(128), Some(3599));
        assert_eq!(level.next_occupied(3600), None);
        level.set_head(3599, NIL);
        assert_eq!(level.next_occupied(128), None);
    }

    /// The summary word agrees with a plain scan after any sequence of
    /// sets and clears, from every starting slot.
    #[test]
    fn next_occupied_matches_a_scan() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut level = Level::new();
        let mut full = vec![false; SLOTS];
        for round in 0..400 {
            // Mostly sparse, sometimes dense, always touching word edges.
            let slot = match round % 4 {
                0 => rng.usize(..SLOTS),
                1 => rng.usize(..WORDS) * 64 % SLOTS,
                2 => (rng.usize(..WORDS) * 64 + 63).min(SLOTS - 1),
                _ => rng.usize(..128),
            };
            full[slot] = !full[slot];
            level.set_head(slot, if full[slot] { 7 } else { NIL });
            for from in 0..=SLOTS {
                let scan = (from..SLOTS).find(|&s| full[s]);
                assert_eq!(level.next_occupied(from), scan, "round={round} from={from}");
            }
        }
    }

    #[test]
    fn top_level_wraps() {
        let top = LEVELS - 1;
        let mut level = Level::new();
        let now = 5 * slot_width(top) + 17;
        level.set_head(2, 1);
        assert_eq!(
            level.next_expiration(top, now),
            Some(level_range(top) + 2 * slot_width(top))
        );
        let mut lower = Level::new();
        lower.set_head(2, 1);
        assert_eq!(lower.next_expiration(0, 10), None);
    }
}
