//! What the search crate's integration tests share.
#![allow(unreachable_pub)]

use std::sync::Arc;

use kyrodb_search::{Collections, SearchOptions};
use kyrodb_storage::{Db, FsyncPolicy, Options};

/// A database in `dir` (no fsync: these tests are not about durability) with its collections.
pub fn open(dir: &std::path::Path) -> (Arc<Db>, Collections) {
    let db = Arc::new(
        Db::open(
            dir,
            Options {
                fsync: FsyncPolicy::Never,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    let cs = Collections::open(db.clone(), SearchOptions::default()).unwrap();
    (db, cs)
}
