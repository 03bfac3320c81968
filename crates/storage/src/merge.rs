//! Merges sorted sources where an earlier source shadows a later one for the same key: the read path's
//! scan (active delta, frozen delta, snapshot) and compaction (frozen delta, old snapshot) share it.

use std::iter::Peekable;

use crate::delta::Version;

/// Where a merged key's newest version lives.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A delta version (`None` is a tombstone).
    Delta(Version),
    /// Position in the snapshot's key array.
    Snapshot(usize),
}

/// Yields each key once, from the first source (in priority order) that has it.
pub(crate) struct Merge<I: Iterator<Item = (u64, Source)>> {
    sources: Vec<Peekable<I>>,
}

impl<I: Iterator<Item = (u64, Source)>> Merge<I> {
    pub(crate) fn new(sources: impl IntoIterator<Item = I>) -> Self {
        Self {
            sources: sources.into_iter().map(Iterator::peekable).collect(),
        }
    }
}

impl<I: Iterator<Item = (u64, Source)>> Iterator for Merge<I> {
    type Item = (u64, Source);

    fn next(&mut self) -> Option<Self::Item> {
        let min = self
            .sources
            .iter_mut()
            .filter_map(|s| s.peek().map(|(k, _)| *k))
            .min()?;
        let mut found = None;
        for s in &mut self.sources {
            if s.peek().is_some_and(|(k, _)| *k == min) {
                let item = s.next();
                found = found.or(item);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn earlier_source_shadows_later() {
        let v = |value| Version {
            value,
            seq: 1,
            expires_ms: 0,
        };
        let newer: Vec<(u64, Source)> = vec![
            (2, Source::Delta(v(None))),
            (5, Source::Delta(v(Some(Bytes::from_static(b"n"))))),
        ];
        let older: Vec<(u64, Source)> = vec![
            (1, Source::Snapshot(0)),
            (2, Source::Snapshot(1)),
            (5, Source::Snapshot(2)),
        ];
        let out: Vec<_> = Merge::new([newer.into_iter(), older.into_iter()]).collect();
        assert_eq!(out.len(), 3);
        assert!(matches!(out[0], (1, Source::Snapshot(0))));
        assert!(matches!(&out[1], (2, Source::Delta(v)) if v.value.is_none()));
        assert!(matches!(&out[2], (5, Source::Delta(v)) if v.value.is_some()));
    }
}
