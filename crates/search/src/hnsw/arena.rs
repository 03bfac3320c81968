//! A chunked arena of fixed-stride `AtomicU32` records, indexed by a dense `u32`: it grows without
//! ever moving a record, so readers hold plain references while writers add chunks.
//!
//! Chunks hold [`CHUNK_ITEMS`] records; the chunk directory is split into segments of 1, 2, 4, …
//! entries (segment `s` holds chunks `2^s - 1 .. 2^(s+1) - 1`), each created once, so a lookup is
//! three loads and memory is bounded by the highest index in use plus one chunk. Chunks start on a
//! 64-byte boundary, so a stride of 16 words puts every record in exactly one cache line.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::OnceLock;

const CHUNK_SHIFT: u32 = 8;
const CHUNK_ITEMS: usize = 1 << CHUNK_SHIFT;
/// `(u32::MAX >> CHUNK_SHIFT) + 1` chunks need segments 0..=24.
const SEGMENTS: usize = 33 - CHUNK_SHIFT as usize;

type Chunk = Box<[AtomicU32]>;

const LINE_WORDS: usize = 16;

/// Words to skip so that the chunk's first record starts on a 64-byte line (chunks are allocated
/// `LINE_WORDS - 1` words longer for this).
#[inline(always)]
fn line_offset(chunk: &[AtomicU32]) -> usize {
    let word_address = chunk.as_ptr() as usize / 4;
    (LINE_WORDS - word_address % LINE_WORDS) % LINE_WORDS
}

pub(super) struct Arena {
    stride_words: usize,
    segments: [OnceLock<Box<[OnceLock<Chunk>]>>; SEGMENTS],
    bytes: AtomicUsize,
}

/// (segment, chunk within the segment, record within the chunk) of `item`.
#[inline(always)]
fn locate(item: u32) -> (usize, usize, usize) {
    let chunk = u64::from(item >> CHUNK_SHIFT) + 1;
    let segment = 63 - chunk.leading_zeros() as usize;
    let in_segment = (chunk - (1u64 << segment)) as usize;
    (segment, in_segment, item as usize & (CHUNK_ITEMS - 1))
}

impl Arena {
    pub(super) fn new(stride_words: usize) -> Self {
        assert!(stride_words > 0);
        Arena {
            stride_words,
            segments: std::array::from_fn(|_| OnceLock::new()),
            bytes: AtomicUsize::new(0),
        }
    }

    /// The record of `item`, if its chunk exists (it then holds zeros or what was written).
    #[inline(always)]
    pub(super) fn get(&self, item: u32) -> Option<&[AtomicU32]> {
        let (segment, chunk, record) = locate(item);
        let chunk = self.segments[segment].get()?.get(chunk)?.get()?;
        let start = line_offset(chunk) + record * self.stride_words;
        chunk.get(start..start + self.stride_words)
    }

    /// The record of `item`, creating its chunk (zeroed) if needed.
    pub(super) fn ensure(&self, item: u32) -> &[AtomicU32] {
        let (segment, chunk, record) = locate(item);
        let dir = self.segments[segment].get_or_init(|| {
            self.bytes.fetch_add(
                (1usize << segment) * std::mem::size_of::<OnceLock<Chunk>>(),
                Ordering::Relaxed,
            );
            (0..1usize << segment).map(|_| OnceLock::new()).collect()
        });
        let chunk = dir[chunk].get_or_init(|| {
            let words = CHUNK_ITEMS * self.stride_words + LINE_WORDS - 1;
            self.bytes.fetch_add(words * 4, Ordering::Relaxed);
            (0..words).map(|_| AtomicU32::new(0)).collect()
        });
        let start = line_offset(chunk) + record * self.stride_words;
        &chunk[start..start + self.stride_words]
    }

    /// Bytes allocated (chunks and directory).
    pub(super) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_distinct_and_stable_across_growth() {
        let arena = Arena::new(3);
        for item in [0u32, 1, 255, 256, 257, 1000, 70_000, 3_000_000] {
            arena.ensure(item)[0].store(item, Ordering::Relaxed);
            arena.ensure(item)[2].store(!item, Ordering::Relaxed);
        }
        for item in [0u32, 1, 255, 256, 257, 1000, 70_000, 3_000_000] {
            let rec = arena.get(item).expect("ensured");
            assert_eq!(rec.len(), 3);
            assert_eq!(rec[0].load(Ordering::Relaxed), item);
            assert_eq!(rec[2].load(Ordering::Relaxed), !item);
        }
        assert!(arena.get(5_000_000).is_none());
        let lines = Arena::new(16);
        for item in 0..600 {
            assert_eq!(lines.ensure(item).as_ptr() as usize % 64, 0);
        }
    }
}
