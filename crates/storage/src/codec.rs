//! Reading the little-endian files KyroDB writes: one bounds-checked cursor ([`Reader`]) for every
//! decoder above the engine's own (search's checkpoints, graph files, stored documents and text
//! sections; the Raft log's small files). A read past the end, or a string that is not UTF-8, is a
//! [`ReadError`] naming the byte offset where the read started, never a panic or a wrong value.
//! Fixed layouts read by position ([`u32_at`], [`u64_at`]: the engine's record headers, snapshot
//! and manifest fields) get `None` past the end instead.

/// The little-endian u32 at byte `at` of `b`, if `b` holds it.
#[inline]
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The little-endian u64 at byte `at` of `b`, if `b` holds it.
#[inline]
pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Why a read failed, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The bytes end before the value does.
    #[error("truncated at byte {at}")]
    Truncated {
        /// Where the read started.
        at: usize,
    },
    /// A length-prefixed string is not UTF-8.
    #[error("not UTF-8 at byte {at}")]
    NotUtf8 {
        /// Where the string's bytes start.
        at: usize,
    },
}

impl ReadError {
    /// The byte offset where the failed read started.
    pub fn offset(&self) -> usize {
        match *self {
            ReadError::Truncated { at } | ReadError::NotUtf8 { at } => at,
        }
    }

    /// What failed, in a word or two ("truncated", "not UTF-8").
    pub fn reason(&self) -> &'static str {
        match self {
            ReadError::Truncated { .. } => "truncated",
            ReadError::NotUtf8 { .. } => "not UTF-8",
        }
    }
}

/// A little-endian cursor over a byte slice: every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// Bytes consumed so far (the offset of the next read).
    pub fn at(&self) -> usize {
        self.at
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(ReadError::Truncated { at: self.at })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        debug_assert!(
            self.at <= self.bytes.len(),
            "the cursor stays inside the bytes"
        );
        Ok(s)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, ReadError> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16, ReadError> {
        self.array().map(u16::from_le_bytes)
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, ReadError> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, ReadError> {
        self.array().map(u64::from_le_bytes)
    }

    /// A UTF-8 string after its u16 byte length.
    pub fn str16(&mut self) -> Result<&'a str, ReadError> {
        let n = self.u16()? as usize;
        let at = self.at;
        std::str::from_utf8(self.take(n)?).map_err(|_| ReadError::NotUtf8 { at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_values_and_refuses_past_the_end_where_the_read_started() {
        let mut b = vec![7u8];
        b.extend_from_slice(&0x0102u16.to_le_bytes());
        b.extend_from_slice(&0x0304_0506u32.to_le_bytes());
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        b.extend_from_slice(&3u16.to_le_bytes());
        b.extend_from_slice(b"abc");
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&[0xff, 0xfe]);
        let mut r = Reader::new(&b);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(r.u32(), Ok(0x0304_0506));
        assert_eq!(r.u64(), Ok(u64::MAX));
        assert_eq!(r.str16(), Ok("abc"));
        assert_eq!(r.str16(), Err(ReadError::NotUtf8 { at: 22 }));
        let mut r = Reader::new(&b[..5]);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u64(), Err(ReadError::Truncated { at: 1 }));
        assert_eq!(r.at(), 1, "a failed read consumes nothing");
        assert_eq!(r.take(usize::MAX), Err(ReadError::Truncated { at: 1 }));
        assert_eq!(r.remaining(), 4);
    }
}
