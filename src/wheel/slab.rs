//! Storage for wheel entries, addressed by small integer handles.
//!
//! Entries live in fixed-size chunks, so growing never copies existing
//! entries and never holds twice the memory, as a doubling `Vec` would. Freed
//! handles are reused (LIFO) before a new one is taken.
//!
//! Each handle has two parts in parallel arrays: the [`Entry`] (the id and
//! its links in its slot's list, 32 bytes, so two per cache line and none
//! straddling two) and its deadline (8 bytes). `cancel` needs the id (to
//! compare) and the links (to unlink), so it reads one line of the slab, not
//! two; only firing and moving a timer read the deadline. Unlinking writes a
//! neighbour's links without reading anything of the neighbour first, which
//! matters when the wheel is far larger than the caches: a store that misses
//! does not hold up the CPU as a load does. A free entry holds
//! [`OrderId::VACANT`] rather than being an `Option`, so writing links needs
//! no check of a tag. (docs/benchmarks.md has what each layout bought.)

use crate::id::OrderId;

/// Handles per chunk: 1024 × (32 + 8) bytes = 40 KiB.
const CHUNK: usize = 1024;

/// One pending timer's id and where it sits in its slot's list.
pub struct Entry {
    pub id: OrderId,
    pub links: Links,
}

/// Where a pending timer sits in its slot's doubly linked list. The first
/// entry of a slot has `prev` set to that slot's tag (see
/// [`super::slot_tag`]) instead of a handle, so removal needs no search.
/// The links of a free handle are meaningless.
#[derive(Clone, Copy)]
pub struct Links {
    pub next: u32,
    pub prev: u32,
}

#[derive(Default)]
pub struct Slab {
    chunks: Vec<Vec<Entry>>,
    deadlines: Vec<Vec<u64>>,
    free: Vec<u32>,
    len: usize,
}

impl Slab {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Stores a timer with unset links; returns its handle.
    pub fn insert(&mut self, id: OrderId, deadline_ms: u64) -> u32 {
        debug_assert!(!id.is_vacant(), "insert of the vacant id");
        self.len += 1;
        let entry = Entry {
            id,
            links: Links {
                next: super::level::NIL,
                prev: super::level::NIL,
            },
        };
        if let Some(handle) = self.free.pop() {
            let (chunk, offset) = place(handle);
            let slot = &mut self.chunks[chunk][offset];
            debug_assert!(slot.id.is_vacant(), "free handle {handle} is occupied");
            *slot = entry;
            self.deadlines[chunk][offset] = deadline_ms;
            return handle;
        }
        if self.chunks.last().is_none_or(|chunk| chunk.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
            self.deadlines.push(Vec::with_capacity(CHUNK));
        }
        let chunk_index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[chunk_index];
        chunk.push(entry);
        self.deadlines[chunk_index].push(deadline_ms);
        let handle = chunk_index * CHUNK + chunk.len() - 1;
        assert!(
            handle < super::TAG_BIT as usize,
            "slab full: {handle} entries"
        );
        handle as u32
    }

    /// Frees `handle`; returns its id.
    pub fn remove(&mut self, handle: u32) -> OrderId {
        let (chunk, offset) = place(handle);
        let id = std::mem::replace(&mut self.chunks[chunk][offset].id, OrderId::VACANT);
        assert!(!id.is_vacant(), "remove of free handle {handle}");
        self.free.push(handle);
        self.len -= 1;
        id
    }

    pub fn id(&self, handle: u32) -> &OrderId {
        let (chunk, offset) = self.pending_place(handle);
        &self.chunks[chunk][offset].id
    }

    pub fn deadline(&self, handle: u32) -> u64 {
        let (chunk, offset) = self.pending_place(handle);
        self.deadlines[chunk][offset]
    }

    pub fn set_deadline(&mut self, handle: u32, deadline_ms: u64) {
        let (chunk, offset) = self.pending_place(handle);
        self.deadlines[chunk][offset] = deadline_ms;
    }

    /// The links of `handle`, which must be pending (checked in debug
    /// builds only: release builds write without reading the entry).
    pub fn links(&self, handle: u32) -> Links {
        let (chunk, offset) = self.pending_place(handle);
        self.chunks[chunk][offset].links
    }

    /// The links of `handle`, to write; see [`Slab::links`].
    pub fn links_mut(&mut self, handle: u32) -> &mut Links {
        let (chunk, offset) = self.pending_place(handle);
        &mut self.chunks[chunk][offset].links
    }

    /// [`place`] of a handle that must be pending (checked in debug builds).
    fn pending_place(&self, handle: u32) -> (usize, usize) {
        let (chunk, offset) = place(handle);
        debug_assert!(
            !self.chunks[chunk][offset].id.is_vacant(),
            "access to free handle {handle}"
        );
        (chunk, offset)
    }

    /// Copies the deadline of every handle, free ones included (stale),
    /// into `deadlines`, and the free handles into `free`, replacing what
    /// they held. Chunk by chunk memcpy, and the entries themselves (four
    /// times the bytes) are never read: a caller holding a lock holds it
    /// for this copy only, and sorts pending from free after releasing it
    /// ([`super::Deadlines`]).
    pub fn copy_deadlines(&self, deadlines: &mut Vec<u64>, free: &mut Vec<u32>) {
        deadlines.clear();
        for chunk in &self.deadlines {
            deadlines.extend_from_slice(chunk);
        }
        free.clear();
        free.extend_from_slice(&self.free);
    }

    /// Bytes held by the slab, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * (size_of::<Entry>() + size_of::<u64>())
            + self.free.capacity() * std::mem::size_of::<u32>()
    }
}

/// The chunk and the offset in it of `handle`.
fn place(handle: u32) -> (usize, usize) {
    (handle as usize / CHUNK, handle as usize % CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> OrderId {
        OrderId::new(format!("o{n}")).unwrap()
    }

    #[test]
    fn entry_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
        assert_eq!(std::mem::size_of::<Links>(), 8);
    }

    #[test]
    fn handles_are_reused_and_chunks_grow() {
        let mut slab = Slab::default();
        let handles: Vec<u32> = (0..(CHUNK as u64 + 10))
            .map(|n| slab.insert(id(n), n))
            .collect();
        assert_eq!(slab.len(), CHUNK + 10);
        assert_eq!(slab.deadline(handles[CHUNK + 3]), CHUNK as u64 + 3);
        assert_eq!(slab.remove(handles[5]), id(5));
        assert_eq!(slab.len(), CHUNK + 9);
        assert_eq!(slab.insert(id(99), 99), handles[5]);
        assert_eq!(slab.deadline(handles[5]), 99);
        assert_eq!(slab.id(handles[5]), &id(99));
    }

    #[test]
    fn copy_deadlines_copies_every_handle_and_the_free_list() {
        let mut slab = Slab::default();
        let handles: Vec<u32> = (0..(2 * CHUNK as u64 + 5))
            .map(|n| slab.insert(id(n), n))
            .collect();
        for &h in handles.iter().step_by(3) {
            slab.remove(h);
        }
        let (mut deadlines, mut free) = (vec![7], vec![7]);
        slab.copy_deadlines(&mut deadlines, &mut free);
        assert_eq!(deadlines, (0..(2 * CHUNK as u64 + 5)).collect::<Vec<_>>());
        assert_eq!(free, handles.iter().step_by(3).copied().collect::<Vec<_>>());
    }

    #[test]
    #[should_panic(expected = "remove of free handle")]
    fn double_remove_panics() {
        let mut slab = Slab::default();
        let handle = slab.insert(id(1), 1);
        slab.remove(handle);
        slab.remove(handle);
    }
}
