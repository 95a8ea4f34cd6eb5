//! Storage for wheel entries, addressed by small integer handles.
//!
//! Entries live in fixed-size chunks, so growing never copies existing
//! entries and never holds twice the memory, as a doubling `Vec` would. Freed
//! handles are reused (LIFO) before a new one is taken.
//!
//! Each handle has two parts in parallel arrays: the [`Entry`] (id and
//! deadline, 32 bytes, so two per cache line and none straddling two) and
//! its [`Links`] in its slot's list (8 bytes). Unlinking writes a neighbour's
//! links without reading anything of the neighbour first, which matters when
//! the wheel is far larger than the caches: a store that misses does not
//! hold up the CPU as a load does (docs/benchmarks.md has what it bought).

use crate::id::OrderId;

/// Handles per chunk: 1024 × (32 + 8) bytes = 40 KiB.
const CHUNK: usize = 1024;

/// One pending timer.
pub struct Entry {
    pub id: OrderId,
    pub deadline_ms: u64,
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
    chunks: Vec<Vec<Option<Entry>>>,
    links: Vec<Vec<Links>>,
    free: Vec<u32>,
    len: usize,
}

impl Slab {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn insert(&mut self, entry: Entry) -> u32 {
        self.len += 1;
        if let Some(handle) = self.free.pop() {
            let slot = self.slot_mut(handle);
            debug_assert!(slot.is_none(), "free handle {handle} is occupied");
            *slot = Some(entry);
            return handle;
        }
        if self.chunks.last().is_none_or(|chunk| chunk.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
            self.links.push(Vec::with_capacity(CHUNK));
        }
        let chunk_index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[chunk_index];
        chunk.push(Some(entry));
        self.links[chunk_index].push(Links {
            next: super::level::NIL,
            prev: super::level::NIL,
        });
        let handle = chunk_index * CHUNK + chunk.len() - 1;
        assert!(
            handle < super::TAG_BIT as usize,
            "slab full: {handle} entries"
        );
        handle as u32
    }

    pub fn remove(&mut self, handle: u32) -> Entry {
        let entry = self.slot_mut(handle).take();
        let entry = entry.unwrap_or_else(|| panic!("remove of free handle {handle}"));
        self.free.push(handle);
        self.len -= 1;
        entry
    }

    pub fn get(&self, handle: u32) -> &Entry {
        let (chunk, offset) = place(handle);
        self.chunks[chunk][offset]
            .as_ref()
            .unwrap_or_else(|| panic!("get of free handle {handle}"))
    }

    pub fn get_mut(&mut self, handle: u32) -> &mut Entry {
        self.slot_mut(handle)
            .as_mut()
            .unwrap_or_else(|| panic!("get_mut of free handle {handle}"))
    }

    /// The links of `handle`, which must be pending (checked in debug
    /// builds only: release builds write without reading the entry).
    pub fn links(&self, handle: u32) -> Links {
        let (chunk, offset) = self.pending_place(handle);
        self.links[chunk][offset]
    }

    /// The links of `handle`, to write; see [`Slab::links`].
    pub fn links_mut(&mut self, handle: u32) -> &mut Links {
        let (chunk, offset) = self.pending_place(handle);
        &mut self.links[chunk][offset]
    }

    /// [`place`] of a handle that must be pending (checked in debug builds).
    fn pending_place(&self, handle: u32) -> (usize, usize) {
        let (chunk, offset) = place(handle);
        debug_assert!(
            self.chunks[chunk][offset].is_some(),
            "links of free handle {handle}"
        );
        (chunk, offset)
    }

    fn slot_mut(&mut self, handle: u32) -> &mut Option<Entry> {
        let (chunk, offset) = place(handle);
        &mut self.chunks[chunk][offset]
    }

    /// Bytes held by the slab, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * (size_of::<Option<Entry>>() + size_of::<Links>())
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

    fn entry(n: u64) -> Entry {
        Entry {
            id: OrderId::new(format!("o{n}")).unwrap(),
            deadline_ms: n,
        }
    }

    #[test]
    fn entry_is_32_bytes_and_links_8() {
        assert_eq!(std::mem::size_of::<Option<Entry>>(), 32);
        assert_eq!(std::mem::size_of::<Links>(), 8);
    }

    #[test]
    fn handles_are_reused_and_chunks_grow() {
        let mut slab = Slab::default();
        let handles: Vec<u32> = (0..(CHUNK as u64 + 10))
            .map(|n| slab.insert(entry(n)))
            .collect();
        assert_eq!(slab.len(), CHUNK + 10);
        assert_eq!(slab.get(handles[CHUNK + 3]).deadline_ms, CHUNK as u64 + 3);
        let removed = slab.remove(handles[5]);
        assert_eq!(removed.deadline_ms, 5);
        assert_eq!(slab.insert(entry(99)), handles[5]);
        assert_eq!(slab.get(handles[5]).deadline_ms, 99);
    }
}
