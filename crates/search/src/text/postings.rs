//! A sealed segment's posting list: rows ascending, their term frequencies, lengths and
//! positions, cut into blocks of [`BLOCK`] with each block's largest tf and shortest document
//! (the block-max bound WAND skips by). Built by the index's seal and merge and by the
//! checkpoint loader (`persist.rs`), read by both; below them so neither imports the other back.

/// Postings per block (block-max bounds, skipping).
pub const BLOCK: usize = 128;

/// A block's summary: the last row, the largest tf and the shortest length in it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockMeta {
    pub(crate) last: u32,
    pub(crate) max_tf: u32,
    pub(crate) min_len: u32,
}

/// One term's postings in a sealed segment, ascending by row.
#[derive(Debug, Default)]
pub(crate) struct PostingList {
    pub(crate) rows: Vec<u32>,
    pub(crate) tfs: Vec<u32>,
    /// The document's length in this field (what BM25 needs), next to its tf.
    pub(crate) lens: Vec<u32>,
    /// `positions[pos_start[i]..pos_start[i+1]]` are the positions of posting `i`.
    pub(crate) pos_start: Vec<u32>,
    pub(crate) positions: Vec<u32>,
    pub(crate) blocks: Vec<BlockMeta>,
    pub(crate) max_tf: u32,
    pub(crate) min_len: u32,
}

impl PostingList {
    pub(crate) fn push(&mut self, row: u32, len: u32, positions: &[u32]) {
        if self.pos_start.is_empty() {
            self.pos_start.push(0);
            self.min_len = u32::MAX;
        }
        let tf = positions.len() as u32;
        self.rows.push(row);
        self.tfs.push(tf);
        self.lens.push(len);
        self.positions.extend_from_slice(positions);
        self.pos_start.push(self.positions.len() as u32);
        self.max_tf = self.max_tf.max(tf);
        self.min_len = self.min_len.min(len);
        let i = self.rows.len() - 1;
        if i.is_multiple_of(BLOCK) {
            self.blocks.push(BlockMeta {
                last: row,
                max_tf: tf,
                min_len: len,
            });
        } else {
            let b = self.blocks.last_mut().expect("a block per BLOCK postings");
            b.last = row;
            b.max_tf = b.max_tf.max(tf);
            b.min_len = b.min_len.min(len);
        }
    }

    pub(crate) fn positions(&self, i: usize) -> &[u32] {
        &self.positions[self.pos_start[i] as usize..self.pos_start[i + 1] as usize]
    }

    pub(crate) fn find(&self, row: u32) -> Option<usize> {
        self.rows.binary_search(&row).ok()
    }

    pub(crate) fn bytes(&self) -> usize {
        (self.rows.len() * 4 + self.pos_start.len() + self.positions.len()) * 4
            + self.blocks.len() * 12
    }
}
