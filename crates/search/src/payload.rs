//! Payload indexes over a collection's rows: roaring bitmaps per keyword value and per bool value,
//! an ordered map from number to bitmap for integer, float and datetime fields, and a presence
//! bitmap per field. A filter evaluates to the bitmap of matching rows; its length is the exact
//! cardinality the planner uses.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
};

use roaring::{MultiOps, RoaringBitmap};

use crate::{
    cancel::{Cancel, Poll},
    doc::{FieldValue, Fields},
    filter::{Cond, Filter},
    timeindex::TimeIndex,
};

/// An f64 mapped to a u64 with the same order (negative numbers below positive ones).
fn ord_key(f: f64) -> u64 {
    let f = if f == 0.0 { 0.0 } else { f }; // -0.0 == 0.0
    let b = f.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// Indexes of one collection.
#[derive(Debug, Default)]
pub struct Payload {
    all: RoaringBitmap,
    present: HashMap<String, RoaringBitmap>,
    keyword: HashMap<String, HashMap<String, RoaringBitmap>>,
    boolean: HashMap<String, [RoaringBitmap; 2]>,
    numeric: HashMap<String, BTreeMap<u64, RoaringBitmap>>,
    /// The collection's timestamp field and its learned time index (`timeindex.rs`): ranges on that
    /// field are answered there.
    time_field: Option<String>,
    time: TimeIndex,
}

impl Payload {
    /// Indexes with `time_field` (the schema's timestamp field) in the learned time index.
    pub fn with_time_field(time_field: Option<String>) -> Payload {
        Payload {
            time_field,
            ..Payload::default()
        }
    }

    /// The time index's state (for `explain` and info).
    pub fn time_info(&self) -> Option<serde_json::Value> {
        self.time_field.as_ref().map(|_| self.time.info())
    }

    /// Every live row.
    pub fn all(&self) -> &RoaringBitmap {
        &self.all
    }

    /// Adds `row` with `fields`.
    pub fn insert(&mut self, row: u32, fields: &Fields) {
        self.all.insert(row);
        for (name, v) in fields {
            self.present.entry(name.clone()).or_default().insert(row);
            match v {
                FieldValue::Keyword(vals) => {
                    let m = self.keyword.entry(name.clone()).or_default();
                    for s in vals {
                        m.entry(s.clone()).or_default().insert(row);
                    }
                }
                FieldValue::Bool(b) => {
                    self.boolean.entry(name.clone()).or_default()[*b as usize].insert(row);
                }
                other => {
                    let x = other.number().expect("numeric");
                    if self.time_field.as_deref() == Some(name.as_str()) {
                        self.time.insert(row, x as i64);
                    }
                    self.numeric
                        .entry(name.clone())
                        .or_default()
                        .entry(ord_key(x))
                        .or_default()
                        .insert(row);
                }
            }
        }
    }

    /// Removes `row`, which was inserted with `fields`. Empty bitmaps are dropped, so memory follows
    /// the live rows.
    pub fn remove(&mut self, row: u32, fields: &Fields) {
        self.all.remove(row);
        for (name, v) in fields {
            if let Some(p) = self.present.get_mut(name) {
                p.remove(row);
            }
            match v {
                FieldValue::Keyword(vals) => {
                    if let Some(m) = self.keyword.get_mut(name) {
                        for s in vals {
                            if let Some(b) = m.get_mut(s) {
                                b.remove(row);
                                if b.is_empty() {
                                    m.remove(s);
                                }
                            }
                        }
                    }
                }
                FieldValue::Bool(b) => {
                    if let Some(bs) = self.boolean.get_mut(name) {
                        bs[*b as usize].remove(row);
                    }
                }
                other => {
                    if self.time_field.as_deref() == Some(name.as_str()) {
                        self.time.remove(row);
                    }
                    let k = ord_key(other.number().expect("numeric"));
                    if let Some(m) = self.numeric.get_mut(name) {
                        if let Some(b) = m.get_mut(&k) {
                            b.remove(row);
                            if b.is_empty() {
                                m.remove(&k);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The rows whose keyword field `field` holds `value` (None: none).
    pub fn keyword_rows(&self, field: &str, value: &str) -> Option<&RoaringBitmap> {
        self.keyword.get(field)?.get(value)
    }

    /// Each value of the keyword field `field` with its number of rows.
    pub fn keyword_counts(&self, field: &str) -> Vec<(&str, u64)> {
        self.keyword.get(field).map_or_else(Vec::new, |m| {
            m.iter().map(|(v, b)| (v.as_str(), b.len())).collect()
        })
    }

    /// The bitmaps of a numeric or datetime field, largest value first.
    pub fn numeric_desc<'a>(&'a self, field: &str) -> impl Iterator<Item = &'a RoaringBitmap> + 'a {
        self.numeric
            .get(field)
            .into_iter()
            .flat_map(|m| m.values().rev())
    }

    /// The rows matching `f`.
    pub fn eval(&self, f: &Filter) -> RoaringBitmap {
        self.eval_poll(f, &mut Poll::never())
    }

    /// [`eval`](Self::eval) that stops when `cancel` fires (looked at before each condition),
    /// answering [`Error::Cancelled`](crate::Error::Cancelled).
    pub fn eval_with(&self, f: &Filter, cancel: &Cancel) -> crate::Result<RoaringBitmap> {
        let out = self.eval_poll(f, &mut Poll::new(cancel, 1));
        cancel.check()?;
        Ok(out)
    }

    /// The rows matching `f`, or an empty bitmap once `poll` stops.
    fn eval_poll(&self, f: &Filter, poll: &mut Poll<'_>) -> RoaringBitmap {
        match f {
            Filter::Must(subs) => {
                let mut it = subs.iter();
                let Some(first) = it.next() else {
                    return self.all.clone();
                };
                let mut acc = self.eval_poll(first, poll);
                for s in it {
                    if acc.is_empty() {
                        break;
                    }
                    acc &= self.eval_poll(s, poll);
                }
                acc
            }
            Filter::Should(subs) => subs.iter().map(|s| self.eval_poll(s, poll)).union(),
            Filter::MustNot(subs) => {
                let mut acc = self.all.clone();
                for s in subs {
                    acc -= self.eval_poll(s, poll);
                }
                acc
            }
            Filter::Cond(_) if poll.stop() => RoaringBitmap::new(),
            Filter::Cond(c) => self.cond(c),
        }
    }

    fn cond(&self, c: &Cond) -> RoaringBitmap {
        match c {
            Cond::Keyword { field, any } => match self.keyword.get(field) {
                // One pass over all operands' containers (not an OR per value).
                Some(m) => any.iter().filter_map(|s| m.get(s)).union(),
                None => RoaringBitmap::new(),
            },
            Cond::Bool { field, value } => self
                .boolean
                .get(field)
                .map(|b| b[*value as usize].clone())
                .unwrap_or_default(),
            Cond::Range { field, lo, hi } if self.time_field.as_ref() == Some(field) => {
                // Datetimes are integer ms: a fractional bound rounds inwards (`round` is ceil
                // for the lower bound, floor for the upper).
                let ms = |b: Bound<f64>, round: fn(f64) -> f64| match b {
                    Bound::Included(x) | Bound::Excluded(x) if x.fract() != 0.0 => {
                        Bound::Included(round(x) as i64)
                    }
                    b => b.map(|x| x as i64),
                };
                let (lo, hi) = (ms(*lo, f64::ceil), ms(*hi, f64::floor));
                self.time.range(lo, hi)
            }
            Cond::Range { field, lo, hi } => {
                let Some(m) = self.numeric.get(field) else {
                    return RoaringBitmap::new();
                };
                let map = |b: &Bound<f64>| match b {
                    Bound::Included(x) => Bound::Included(ord_key(*x)),
                    Bound::Excluded(x) => Bound::Excluded(ord_key(*x)),
                    Bound::Unbounded => Bound::Unbounded,
                };
                let (lo, hi) = (map(lo), map(hi));
                let empty = match (lo, hi) {
                    (Bound::Included(a), Bound::Included(b)) => a > b,
                    (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
                    | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
                    _ => false,
                };
                if empty {
                    return RoaringBitmap::new();
                }
                m.range((lo, hi)).map(|(_, b)| b).union()
            }
            Cond::Exists { field, exists } => {
                let has = self.present.get(field).cloned().unwrap_or_default();
                if *exists {
                    has
                } else {
                    &self.all - has
                }
            }
        }
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        let maps: usize = self
            .keyword
            .values()
            .flat_map(|m| m.iter().map(|(k, b)| k.len() + b.serialized_size() + 48))
            .sum::<usize>()
            + self
                .numeric
                .values()
                .flat_map(|m| m.values().map(|b| b.serialized_size() + 40))
                .sum::<usize>();
        maps + self.all.serialized_size()
            + self
                .present
                .values()
                .map(|b| b.serialized_size())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ord_key_keeps_the_order_of_numbers() {
        let xs = [
            f64::MIN,
            -1e10,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            2.5,
            1e10,
            f64::MAX,
        ];
        for w in xs.windows(2) {
            assert!(ord_key(w[0]) <= ord_key(w[1]), "{} vs {}", w[0], w[1]);
        }
        assert_eq!(ord_key(-0.0), ord_key(0.0));
    }
}
