//! Reading the little-endian files this crate writes (checkpoints and their text section).

/// Why bytes were refused: the byte offset and the reason.
pub(crate) type Refusal = (usize, String);

/// A little-endian cursor over a checked byte slice: every read is bounds-checked and a short read
/// is `(offset, "truncated")`.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    /// Bytes consumed so far.
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, at: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Refusal> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| (self.at, "truncated".to_string()))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub(crate) fn u16(&mut self) -> Result<u16, Refusal> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, Refusal> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, Refusal> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    pub(crate) fn str16(&mut self) -> Result<&'a str, Refusal> {
        let n = self.u16()? as usize;
        let at = self.at;
        std::str::from_utf8(self.take(n)?).map_err(|_| (at, "not UTF-8".to_string()))
    }

    /// The bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.b.len() - self.at
    }
}
