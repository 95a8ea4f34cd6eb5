//! Storage for wheel entries, addressed by small integer handles.
//!
//! Entries live in fixed-size chunks, so growing never copies existing
//! entries and never holds twice the memory, as a doubling `Vec` would. Freed
//! handles are reused (LIFO) before a new one is taken.

use crate::id::OrderId;

/// Entries per chunk: 1024 × 40 bytes = 40 KiB.
const CHUNK: usize = 1024;

/// One pending timer.
///
/// `next` and `prev` link the entries of one slot into a doubly linked list;
/// the first entry of a slot has `prev` set to that slot's tag (see
/// [`super::slot_tag`]) instead of a handle, so removal needs no search.
pub struct Entry {
    pub id: OrderId,
    pub deadline_ms: u64,
    pub next: u32,
    pub prev: u32,
}

#[derive(Default)]
pub struct Slab {
    chunks: Vec<Vec<Option<Entry>>>,
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
        }
        let chunk_index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[chunk_index];
        chunk.push(Some(entry));
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
        let slot = &self.chunks[handle as usize / CHUNK][handle as usize % CHUNK];
        slot.as_ref()
            .unwrap_or_else(|| panic!("get of free handle {handle}"))
    }

    pub fn get_mut(&mut self, handle: u32) -> &mut Entry {
        self.slot_mut(handle)
            .as_mut()
            .unwrap_or_else(|| panic!("get_mut of free handle {handle}"))
    }

    fn slot_mut(&mut self, handle: u32) -> &mut Option<Entry> {
        &mut self.chunks[handle as usize / CHUNK][handle as usize % CHUNK]
    }

    /// Bytes held by the slab, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * std::mem::size_of::<Option<Entry>>()
            + self.free.capacity() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> Entry {
        Entry {
            id: OrderId::new(format!("o{n}")).unwrap(),
            deadline_ms: n,
            next: 0,
            prev: 0,
        }
    }

    #[test]
    fn entry_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Option<Entry>>(), 40);
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
