//! A phrase of 1,360 repeated words over a document of 85,000 tokens (issue 22, item 3a: the old
//! matcher copied the document's position list once per phrase word — ~460 MB and 1–25 s per
//! query). Measured without clocks: the bytes this thread allocates during the search, counted by
//! a wrapping global allocator.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    collections::BTreeMap,
    sync::Arc,
};

use kyrodb_search::{
    text::{TextIndex, TextOptions},
    Cancel,
};

struct Counting;

thread_local! {
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; it only counts bytes in a
// thread-local cell (const-initialised, no destructor, so it never allocates itself).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size() as u64));
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + new_size as u64));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocated() -> u64 {
    ALLOCATED.with(Cell::get)
}

/// Bytes one search may allocate here: the candidate starts and two bitmaps of the document's
/// span are well under 1 MB. The old matcher allocated 1,360 × 85,000 × 4 bytes ≈ 462 MB.
const BUDGET: u64 = 4 << 20;

#[test]
fn a_long_repeated_phrase_over_a_long_document_allocates_little_and_is_right() {
    let phrase = format!("\"{}\"", "ab ".repeat(1360).trim_end());
    assert!(
        phrase.len() <= 4096,
        "a 4 KB query, as the hybrid route allows"
    );
    let id_of = |r: u32| Some(Arc::<str>::from(format!("d{r}")));
    // (document, does the phrase occur): 85,000 × "ab"; "ab" broken by "zz" every 1,360 words,
    // so every start fails on one of the last words (the old matcher's worst case).
    let docs = [
        ("ab ".repeat(85_000), true),
        (
            (0..85_000)
                .map(|i| if i % 1360 == 1359 { "zz " } else { "ab " })
                .collect::<String>(),
            false,
        ),
    ];
    for (doc, occurs) in docs {
        for sealed in [false, true] {
            let mut ix = TextIndex::new(&[("body".to_string(), TextOptions::default())]);
            let mut text = BTreeMap::new();
            text.insert("body".to_string(), doc.clone());
            ix.insert(0, &text);
            if sealed {
                ix.seal();
            }
            let q = ix.query(&phrase, &[(0, 1.0)]).unwrap().unwrap();
            let before = allocated();
            let (hits, stats) = ix.search(&q, 10, None, &id_of, &Cancel::never()).unwrap();
            let used = allocated() - before;
            assert_eq!(
                hits.len(),
                usize::from(occurs),
                "sealed {sealed}, occurs {occurs}"
            );
            assert_eq!(stats.phrase_rejected, u64::from(!occurs));
            assert!(
                used < BUDGET,
                "sealed {sealed}, occurs {occurs}: {used} bytes allocated by one search"
            );
            eprintln!("sealed {sealed}, occurs {occurs}: {used} bytes allocated");
        }
    }
}
