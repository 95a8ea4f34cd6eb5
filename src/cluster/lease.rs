//! The partitions this node holds: lease, epoch, and whether it serves.
//!
//! Ground rules:
//! - A partition is held under exactly one epoch, the one its `TAKE` script
//!   returned; that epoch tags every journal write queued for it, and Redis
//!   applies a write only while the partition's epoch is still that one.
//!   The epoch, not the lease, is what makes a single writer: a node that
//!   was paused past its lease may still believe it holds the partition,
//!   but its writes are refused by Redis.
//! - Client writes are accepted only while the partition is *serving*
//!   (taken, loaded, not being handed off) and the lease has not run out by
//!   this node's monotonic clock (`valid_until`, counted from the moment
//!   the take or renewal was sent, so it errs early). Removals of fired
//!   orders are accepted while the partition is *held*.
//! - Only the manager thread ([`super::manager`]) takes, renews, releases
//!   and drops partitions; the journal writer only reports a fenced write
//!   ([`Ownership::fenced`]), which stops client writes at once and wakes
//!   the manager to drop the partition.
//! - The journal writer also marks a partition whose Redis master does not
//!   answer ([`Ownership::set_journal_down`]: client writes refused until
//!   it answers again, the other partitions unaffected), and one whose
//!   client writes it had to undo because they did not reach enough
//!   replicas ([`Ownership::unreplicated`]: dropped and loaded again).
//! - Everything here is atomics: the engine calls it under a shard lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::scripts::Layout;
use super::slot::Partitions;

#[derive(Debug, Default)]
struct Cell {
    /// The epoch the partition is held under; 0: not held.
    held: AtomicU64,
    /// Client writes accepted (held, loaded, not handing off).
    serving: AtomicBool,
    /// Loading the partition's timers (clients get `-TRYAGAIN`).
    loading: AtomicBool,
    /// The lease runs out at this many ms after `Ownership::started`.
    valid_until: AtomicU64,
    /// The journal writer saw this epoch fenced off.
    fenced: AtomicBool,
    /// The journal writer cannot reach the partition's Redis master (it
    /// is failing over): client writes are refused until it answers.
    journal_down: AtomicBool,
    /// The journal writer undid client writes that did not reach
    /// `--journal-replicas` replicas: drop the partition and load it again.
    unreplicated: AtomicBool,
}

/// This node's view of the partitions it holds. Shared by the journal
/// (tags and refuses writes), the server (routes), and the manager.
#[derive(Debug)]
pub struct Ownership {
    partitions: Partitions,
    layout: Layout,
    started: Instant,
    cells: Box<[Cell]>,
    /// Raised (with `wake`) when the manager has something urgent to do.
    urgent: Mutex<bool>,
    wake: Condvar,
}

impl Ownership {
    /// Nothing held.
    pub fn new(partitions: Partitions, layout: Layout) -> Ownership {
        Ownership {
            partitions,
            layout,
            started: Instant::now(),
            cells: partitions.iter().map(|_| Cell::default()).collect(),
            urgent: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    /// The partitions of the cluster.
    pub fn partitions(&self) -> Partitions {
        self.partitions
    }

    /// The Redis keys.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The partition of an order id.
    pub fn partition_of(&self, id: &[u8]) -> u16 {
        self.partitions.of_key(id)
    }

    /// Milliseconds on this node's monotonic clock.
    pub(super) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn cell(&self, id: &[u8]) -> &Cell {
        &self.cells[self.partition_of(id) as usize]
    }

    fn valid(&self, cell: &Cell) -> bool {
        cell.valid_until.load(Ordering::Acquire) > self.now_ms()
    }

    /// The epoch to tag a client write with, if the partition serves.
    pub fn write_epoch(&self, id: &[u8]) -> Option<u64> {
        let cell = self.cell(id);
        let epoch = cell.held.load(Ordering::Acquire);
        (epoch != 0
            && cell.serving.load(Ordering::Acquire)
            && !cell.journal_down.load(Ordering::Acquire)
            && self.valid(cell))
        .then_some(epoch)
    }

    /// The epoch to tag the removal of a fired order with, if still held.
    pub fn settle_epoch(&self, id: &[u8]) -> Option<u64> {
        self.settle_epoch_of(self.partition_of(id))
    }

    /// The epoch partition `p` is held under here, if held with a live
    /// lease.
    pub fn settle_epoch_of(&self, p: u16) -> Option<u64> {
        let cell = &self.cells[p as usize];
        let epoch = cell.held.load(Ordering::Acquire);
        (epoch != 0 && self.valid(cell)).then_some(epoch)
    }

    /// Where partition `p` stands here.
    pub fn state(&self, p: u16) -> Held {
        let cell = &self.cells[p as usize];
        let epoch = cell.held.load(Ordering::Acquire);
        if epoch == 0 {
            Held::No
        } else if cell.loading.load(Ordering::Acquire) {
            Held::Loading
        } else if cell.serving.load(Ordering::Acquire) && self.valid(cell) {
            Held::Serving(epoch)
        } else {
            Held::Closing
        }
    }

    /// Holds `p` under `epoch` and serves it for `valid_for`, as if the
    /// manager had taken and loaded it: for tests and tools that drive a
    /// journal without a manager thread.
    #[doc(hidden)]
    pub fn assume(&self, p: u16, epoch: u64, valid_for: Duration) {
        self.begin_load(p, epoch, self.now_ms() + valid_for.as_millis() as u64);
        self.serve(p);
    }

    /// The journal writer: Redis refused a write of `p` tagged `epoch`.
    pub(crate) fn fenced(&self, p: u16, epoch: u64) {
        let cell = &self.cells[p as usize];
        if cell.held.load(Ordering::Acquire) == epoch {
            cell.serving.store(false, Ordering::Release);
            cell.fenced.store(true, Ordering::Release);
            self.wake_manager();
        }
    }

    /// The journal writer: partition `p`'s Redis master does not answer
    /// (`true`), or answers again (`false`).
    pub(crate) fn set_journal_down(&self, p: u16, down: bool) {
        self.cells[p as usize]
            .journal_down
            .store(down, Ordering::Release);
    }

    /// Whether the journal writer cannot reach `p`'s Redis master.
    pub fn journal_down(&self, p: u16) -> bool {
        self.cells[p as usize].journal_down.load(Ordering::Acquire)
    }

    /// Partitions whose Redis master the journal writer cannot reach.
    pub fn journal_down_count(&self) -> u64 {
        self.cells
            .iter()
            .filter(|c| c.journal_down.load(Ordering::Acquire))
            .count() as u64
    }

    /// The journal writer: client writes of `p` under `epoch` did not
    /// reach enough replicas; they are being undone in Redis. Client
    /// writes stop at once; [`Ownership::unreplicated`] follows once the
    /// undo is in.
    pub(crate) fn refuse_writes(&self, p: u16, epoch: u64) {
        let cell = &self.cells[p as usize];
        if cell.held.load(Ordering::Acquire) == epoch {
            cell.serving.store(false, Ordering::Release);
        }
    }

    /// The journal writer: client writes of `p` under `epoch` did not
    /// reach enough replicas and were undone in Redis. Stops client writes
    /// at once and wakes the manager, which drops `p` (its memory still
    /// has the undone writes) so that it is loaded again from Redis.
    pub(crate) fn unreplicated(&self, p: u16, epoch: u64) {
        let cell = &self.cells[p as usize];
        if cell.held.load(Ordering::Acquire) == epoch {
            cell.serving.store(false, Ordering::Release);
            cell.unreplicated.store(true, Ordering::Release);
            self.wake_manager();
        }
    }

    pub(super) fn take_unreplicated(&self, p: u16) -> bool {
        self.cells[p as usize]
            .unreplicated
            .swap(false, Ordering::AcqRel)
    }

    pub(super) fn wake_manager(&self) {
        *self.urgent.lock() = true;
        self.wake.notify_all();
    }

    /// The manager: sleeps up to `wait`, or until woken.
    pub(super) fn sleep(&self, wait: Duration) {
        let mut urgent = self.urgent.lock();
        if !*urgent {
            self.wake.wait_for(&mut urgent, wait);
        }
        *urgent = false;
    }

    pub(super) fn held_epoch(&self, p: u16) -> u64 {
        self.cells[p as usize].held.load(Ordering::Acquire)
    }

    pub(super) fn valid_until(&self, p: u16) -> u64 {
        self.cells[p as usize].valid_until.load(Ordering::Acquire)
    }

    pub(super) fn take_fenced(&self, p: u16) -> bool {
        self.cells[p as usize].fenced.swap(false, Ordering::AcqRel)
    }

    /// The manager took `p` under `epoch`; it loads before serving.
    pub(super) fn begin_load(&self, p: u16, epoch: u64, valid_until: u64) {
        let cell = &self.cells[p as usize];
        cell.serving.store(false, Ordering::Release);
        cell.loading.store(true, Ordering::Release);
        cell.fenced.store(false, Ordering::Release);
        cell.unreplicated.store(false, Ordering::Release);
        cell.valid_until.store(valid_until, Ordering::Release);
        cell.held.store(epoch, Ordering::Release);
    }

    pub(super) fn serve(&self, p: u16) {
        let cell = &self.cells[p as usize];
        cell.loading.store(false, Ordering::Release);
        cell.serving.store(true, Ordering::Release);
    }

    pub(super) fn renewed(&self, p: u16, valid_until: u64) {
        self.cells[p as usize]
            .valid_until
            .store(valid_until, Ordering::Release);
    }

    /// Stops client writes (hand-off); removals still go through.
    pub(super) fn stop_writes(&self, p: u16) {
        self.cells[p as usize]
            .serving
            .store(false, Ordering::Release);
    }

    /// Forgets `p` entirely: nothing more is tagged with its epoch.
    pub(super) fn forget(&self, p: u16) {
        let cell = &self.cells[p as usize];
        cell.serving.store(false, Ordering::Release);
        cell.loading.store(false, Ordering::Release);
        cell.held.store(0, Ordering::Release);
        cell.valid_until.store(0, Ordering::Release);
    }
}

/// Where one partition stands on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Not held here.
    No,
    /// Taken, timers being loaded.
    Loading,
    /// Held and accepting writes under this epoch.
    Serving(u64),
    /// Held but not accepting writes: being handed off, fenced, or the
    /// lease ran out before a renewal came back.
    Closing,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ownership() -> Ownership {
        Ownership::new(Partitions::new(16).unwrap(), Layout::new("tw:", None))
    }

    #[test]
    fn writes_need_a_served_partition_with_a_live_lease() {
        let own = ownership();
        let id = b"o:1";
        let p = own.partition_of(id);
        assert_eq!(own.write_epoch(id), None);
        assert_eq!(own.state(p), Held::No);
        let until = own.now_ms() + 60_000;
        own.begin_load(p, 7, until);
        assert_eq!(own.state(p), Held::Loading);
        assert_eq!(own.write_epoch(id), None, "loading");
        assert_eq!(own.settle_epoch(id), Some(7));
        own.serve(p);
        assert_eq!(own.write_epoch(id), Some(7));
        assert_eq!(own.state(p), Held::Serving(7));
        own.stop_writes(p);
        assert_eq!(own.write_epoch(id), None, "handing off");
        assert_eq!(own.settle_epoch(id), Some(7));
        own.forget(p);
        assert_eq!(own.settle_epoch(id), None);
    }

    #[test]
    fn an_expired_lease_stops_everything() {
        let own = ownership();
        let id = b"o:2";
        let p = own.partition_of(id);
        own.begin_load(p, 3, own.now_ms());
        own.serve(p);
        assert_eq!(own.write_epoch(id), None);
        assert_eq!(own.settle_epoch(id), None);
        assert_eq!(own.state(p), Held::Closing);
    }

    #[test]
    fn a_fence_of_an_old_epoch_is_ignored() {
        let own = ownership();
        let id = b"o:3";
        let p = own.partition_of(id);
        own.begin_load(p, 5, own.now_ms() + 60_000);
        own.serve(p);
        own.fenced(p, 4);
        assert_eq!(own.write_epoch(id), Some(5));
        own.fenced(p, 5);
        assert_eq!(own.write_epoch(id), None);
        assert!(own.take_fenced(p));
    }

    #[test]
    fn a_master_out_of_reach_stops_client_writes_of_its_partitions_only() {
        let own = ownership();
        let (a, b) = (b"o:4".as_slice(), b"o:5".as_slice());
        let (pa, pb) = (own.partition_of(a), own.partition_of(b));
        assert_ne!(pa, pb);
        for p in [pa, pb] {
            own.begin_load(p, 2, own.now_ms() + 60_000);
            own.serve(p);
        }
        own.set_journal_down(pa, true);
        assert_eq!(own.write_epoch(a), None);
        assert_eq!(own.settle_epoch(a), Some(2), "removals still queue");
        assert_eq!(own.write_epoch(b), Some(2));
        assert_eq!(own.journal_down_count(), 1);
        own.set_journal_down(pa, false);
        assert_eq!(own.write_epoch(a), Some(2));
    }

    #[test]
    fn unreplicated_writes_stop_the_partition_until_it_is_loaded_again() {
        let own = ownership();
        let id = b"o:6";
        let p = own.partition_of(id);
        own.begin_load(p, 9, own.now_ms() + 60_000);
        own.serve(p);
        own.unreplicated(p, 8);
        assert_eq!(own.write_epoch(id), Some(9), "an old epoch is ignored");
        own.unreplicated(p, 9);
        assert_eq!(own.write_epoch(id), None);
        assert!(own.take_unreplicated(p));
        assert!(!own.take_unreplicated(p));
    }
}
