//! One shard of the engine: a wheel behind its lock, and when it next has
//! work, readable without the lock.
//!
//! Ground rules:
//! - The wheel is reached only through [`Shard::lock`]; the guard publishes
//!   the wheel's [`Wheel::due_hint`] as it unlocks, so whenever the lock is
//!   free, [`Shard::due`] is no later than the wheel's next expiration.
//! - The ticker reads `due` of every shard each tick and locks only the
//!   shards that have something due. A timer scheduled while the ticker
//!   passes its shard is seen at the next pass, as it would be had it come
//!   a moment later.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};

use crate::wheel::Wheel;

/// A wheel and its published due tick, on one cache line with the lock word.
#[repr(C, align(64))]
pub(super) struct Shard {
    due: AtomicU64,
    wheel: Mutex<Wheel>,
}

impl Shard {
    pub fn new(wheel: Wheel) -> Shard {
        Shard {
            due: AtomicU64::new(wheel.due_hint()),
            wheel: Mutex::new(wheel),
        }
    }

    pub fn lock(&self) -> ShardGuard<'_> {
        ShardGuard {
            wheel: self.wheel.lock(),
            due: &self.due,
        }
    }

    /// No later than the next tick at which this shard has work
    /// (`u64::MAX`: none), as of the last unlock.
    pub fn due(&self) -> u64 {
        // Relaxed: a stale value only moves work to the next pass, and the
        // lock taken when it is due orders everything else.
        self.due.load(Ordering::Relaxed)
    }
}

/// A locked shard; unlocking publishes when the wheel is next due.
pub(super) struct ShardGuard<'a> {
    wheel: MutexGuard<'a, Wheel>,
    due: &'a AtomicU64,
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        // Under the lock still (the guard's field drops after this).
        self.due.store(self.wheel.due_hint(), Ordering::Relaxed);
    }
}

impl Deref for ShardGuard<'_> {
    type Target = Wheel;

    fn deref(&self) -> &Wheel {
        &self.wheel
    }
}

impl DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Wheel {
        &mut self.wheel
    }
}
