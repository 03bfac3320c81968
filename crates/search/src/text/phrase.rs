//! Phrase matching inside one document: does some start `s` have, for every phrase word `w` at
//! offset `o`, `s + o` among `w`'s positions in the field?
//!
//! The position lists are borrowed from the index (a sealed posting's slice, or the word's run in
//! the mutable segment's sorted (term, position) list), never copied per word. A repeated word is
//! looked up once ([`Phrase`] groups the offsets by distinct word). The candidate starts come from
//! the word with the fewest positions; then each (word, offset) of the phrase, rarest words first,
//! filters them:
//!
//! - *sparse* (fewer than one candidate per [`DENSE_SPAN`] positions of their span): a sorted list
//!   of starts, filtered by a forward galloping search in the word's positions — work
//!   O(candidates · log gap) per step, and the list only shrinks;
//! - *dense*: a bitmap of the starts over their span, ANDed with the word's positions as a bitmap
//!   shifted by the offset — 64 starts per word operation, so a step costs span / 64 whatever the
//!   phrase or the document repeat (`"ab ab ab …"` × 1,360 over 85K tokens: 1,360 steps of ~1,330
//!   words each).
//!
//! Memory: the starts (at most one word's positions) and two bitmaps of the span, whatever the
//! number of phrase words. Work: O(Σ distinct words' positions + phrase words · span / 64) in the
//! dense case. The loops poll the search's cancellation token.

use crate::cancel::Poll;

/// Dense when the candidate starts number at least span / DENSE_SPAN.
const DENSE_SPAN: usize = 32;

/// A phrase of one field's analysis: each distinct word with its offsets from the phrase's first
/// word (ascending). Empty: no constraint (only stop words or punctuation).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Phrase {
    pub(crate) words: Vec<(u32, Vec<u32>)>,
}

impl Phrase {
    /// Groups (term id, offset) tokens, in phrase order, by distinct term.
    pub(crate) fn new(tokens: impl IntoIterator<Item = (u32, u32)>) -> Phrase {
        let mut words: Vec<(u32, Vec<u32>)> = Vec::new();
        for (t, off) in tokens {
            match words.iter_mut().find(|w| w.0 == t) {
                Some(w) => w.1.push(off),
                None => words.push((t, vec![off])),
            }
        }
        Phrase { words }
    }
}

/// One word's positions in one row's field, ascending, borrowed from the index.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Positions<'a> {
    /// A sealed posting's positions.
    Plain(&'a [u32]),
    /// The word's run of the mutable segment's (term, position) list.
    Pairs(&'a [(u32, u32)]),
}

impl Positions<'_> {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Positions::Plain(p) => p.len(),
            Positions::Pairs(p) => p.len(),
        }
    }

    #[inline]
    fn at(&self, i: usize) -> u32 {
        match self {
            Positions::Plain(p) => p[i],
            Positions::Pairs(p) => p[i].1,
        }
    }

    /// The first index ≥ `from` whose position is ≥ `target` (galloping, then binary search).
    fn seek(&self, from: usize, target: u32) -> usize {
        let n = self.len();
        let mut lo = from;
        let mut step = 1;
        let mut hi = from;
        while hi < n && self.at(hi) < target {
            lo = hi + 1;
            hi += step;
            step *= 2;
        }
        let mut hi = hi.min(n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.at(mid) < target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// Does the phrase occur? `lists[i]` are the positions of `phrase.words[i]`.
/// Returns false when `poll` stops the search (the caller then reports the cancellation).
pub(crate) fn occurs(phrase: &Phrase, lists: &[Positions<'_>], poll: &mut Poll<'_>) -> bool {
    debug_assert_eq!(phrase.words.len(), lists.len());
    if lists.iter().any(|l| l.len() == 0) {
        return false;
    }
    // Rarest words first: the starts come from the rarest, and rare words filter most.
    let mut order: Vec<usize> = (0..lists.len()).collect();
    order.sort_by_key(|&i| lists[i].len());
    let Some(&first) = order.first() else {
        return true;
    };
    let driver = lists[first];
    let d_off = phrase.words[first].1[0];
    let start_at = driver.seek(0, d_off);
    if start_at == driver.len() {
        return false;
    }
    let starts = Starts {
        driver,
        start_at,
        d_off,
    };
    // Every (word, offset) of the phrase but the driver's own.
    let steps = order.iter().flat_map(|&i| {
        phrase.words[i]
            .1
            .iter()
            .filter(move |&&off| !(i == first && off == d_off))
            .map(move |&off| (i, off))
    });
    let count = driver.len() - start_at;
    if count * DENSE_SPAN >= starts.span() {
        dense(&starts, phrase, lists, steps, poll)
    } else {
        sparse(&starts, lists, steps, poll)
    }
}

/// The candidate starts: the driver's positions from `start_at` on, minus its offset.
struct Starts<'a> {
    driver: Positions<'a>,
    start_at: usize,
    d_off: u32,
}

impl Starts<'_> {
    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (self.start_at..self.driver.len()).map(|i| self.driver.at(i) - self.d_off)
    }

    fn first(&self) -> u32 {
        self.driver.at(self.start_at) - self.d_off
    }

    fn span(&self) -> usize {
        (self.driver.at(self.driver.len() - 1) - self.d_off - self.first()) as usize + 1
    }
}

/// Candidate starts as a sorted list.
fn sparse(
    starts: &Starts<'_>,
    lists: &[Positions<'_>],
    steps: impl Iterator<Item = (usize, u32)>,
    poll: &mut Poll<'_>,
) -> bool {
    let mut left: Vec<u32> = starts.iter().collect();
    for (w, off) in steps {
        if poll.stop() {
            return false;
        }
        let pos = lists[w];
        let mut j = 0;
        left.retain(|&s| {
            let Some(target) = s.checked_add(off) else {
                return false;
            };
            j = pos.seek(j, target);
            j < pos.len() && pos.at(j) == target
        });
        if left.is_empty() {
            return false;
        }
    }
    true
}

/// Candidate starts as a bitmap over their span (bit s - lo).
fn dense(
    starts: &Starts<'_>,
    phrase: &Phrase,
    lists: &[Positions<'_>],
    steps: impl Iterator<Item = (usize, u32)>,
    poll: &mut Poll<'_>,
) -> bool {
    let lo = starts.first();
    let words = starts.span().div_ceil(64);
    let mut left = vec![0u64; words];
    for s in starts.iter() {
        let b = (s - lo) as usize;
        left[b / 64] |= 1 << (b % 64);
    }
    // The current word's positions as a bitmap from `lo` (bit p - lo), built once per word, wide
    // enough for its largest offset; steps come grouped by word.
    let mut bits: Vec<u64> = Vec::new();
    let mut built = None;
    for (w, off) in steps {
        if poll.stop() {
            return false;
        }
        if built != Some(w) {
            let max_off = phrase.words[w].1.last().copied().unwrap_or(0);
            // Bits up to (lo + span - 1) + max_off are read.
            let need = words + (max_off / 64) as usize + 1;
            bits.clear();
            bits.resize(need, 0);
            let pos = lists[w];
            let end = lo as u64 + need as u64 * 64;
            let mut k = pos.seek(0, lo);
            while k < pos.len() && (pos.at(k) as u64) < end {
                let b = (pos.at(k) - lo) as usize;
                bits[b / 64] |= 1 << (b % 64);
                k += 1;
            }
            built = Some(w);
        }
        let (q, r) = ((off / 64) as usize, off % 64);
        let mut any = 0u64;
        for (i, s) in left.iter_mut().enumerate() {
            let low = bits[i + q] >> r;
            let high = if r == 0 {
                0
            } else {
                bits[i + q + 1] << (64 - r)
            };
            *s &= low | high;
            any |= *s;
        }
        if any == 0 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::Cancel;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// The definition, directly.
    fn brute(doc: &[u32], phrase: &[u32]) -> bool {
        doc.len() >= phrase.len() && doc.windows(phrase.len()).any(|w| w == phrase)
    }

    fn check(doc: &[u32], phrase: &[u32], pairs: bool) -> bool {
        let p = Phrase::new(phrase.iter().enumerate().map(|(i, &t)| (t, i as u32)));
        let plain: Vec<Vec<u32>> = p
            .words
            .iter()
            .map(|(t, _)| {
                (0..doc.len() as u32)
                    .filter(|&i| doc[i as usize] == *t)
                    .collect()
            })
            .collect();
        let mut sorted: Vec<(u32, u32)> = doc
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, i as u32))
            .collect();
        sorted.sort_unstable();
        let lists: Vec<Positions<'_>> = if pairs {
            p.words
                .iter()
                .map(|(t, _)| {
                    let a = sorted.partition_point(|x| x.0 < *t);
                    let b = sorted.partition_point(|x| x.0 <= *t);
                    Positions::Pairs(&sorted[a..b])
                })
                .collect()
        } else {
            plain.iter().map(|l| Positions::Plain(l)).collect()
        };
        let never = Cancel::never();
        occurs(&p, &lists, &mut Poll::new(&never, 64))
    }

    #[test]
    fn equals_the_definition_on_random_documents_sparse_and_dense() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut found = 0;
        for round in 0..3000 {
            // Few words (dense lists, long repeats) or many (sparse lists).
            let vocab = if round % 2 == 0 { 2 } else { 12 };
            let len = rng.gen_range(1..400);
            let doc: Vec<u32> = (0..len).map(|_| rng.gen_range(0..vocab)).collect();
            let plen = rng.gen_range(1..12.min(len + 1) + 1);
            let phrase: Vec<u32> = if rng.gen_bool(0.5) && plen <= len {
                let s = rng.gen_range(0..=len - plen);
                doc[s..s + plen].to_vec()
            } else {
                (0..plen).map(|_| rng.gen_range(0..vocab)).collect()
            };
            let want = brute(&doc, &phrase);
            found += want as usize;
            for pairs in [false, true] {
                assert_eq!(
                    check(&doc, &phrase, pairs),
                    want,
                    "doc {doc:?} phrase {phrase:?}"
                );
            }
        }
        assert!(found > 1000, "{found}");
    }

    #[test]
    fn long_repeats_and_offsets_across_words() {
        let ab = vec![0u32; 5000];
        assert!(check(&ab, &vec![0; 1360], false));
        assert!(!check(&ab, &vec![0; 5001], false));
        // A break every 1,360 words: 1,359 in a row at most.
        let broken: Vec<u32> = (0..5000).map(|i| u32::from(i % 1360 == 1359)).collect();
        assert!(!check(&broken, &vec![0; 1360], true));
        assert!(check(&broken, &vec![0; 1359], true));
        let mut p = vec![0; 1359];
        p.push(1);
        assert!(check(&broken, &p, false));
    }

    #[test]
    fn a_fired_token_stops_the_match() {
        let p = Phrase::new((0..1360).map(|i| (0, i)));
        let list: Vec<u32> = (0..5000).collect();
        let c = Cancel::new();
        c.cancel();
        assert!(!occurs(
            &p,
            &[Positions::Plain(&list)],
            &mut Poll::new(&c, 1)
        ));
        let never = Cancel::never();
        assert!(occurs(
            &p,
            &[Positions::Plain(&list)],
            &mut Poll::new(&never, 1)
        ));
    }
}
