//! Full-text search: the analyzer (`analyzer.rs`) and the per-collection BM25 index with its
//! mutable and sealed segments and block-max WAND top-k (`index.rs`). Design:
//! docs/design/search.md, "Full text".

pub mod analyzer;
pub mod index;
pub(crate) mod persist;
pub(crate) mod phrase;
pub(crate) mod postings;

pub use analyzer::{Analyzer, Language, TextOptions};
pub use index::{TextFieldInfo, TextIndex, TextIndexInfo, TextQuery, TextStats};
