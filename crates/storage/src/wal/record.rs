//! WAL record framing and the batch payload codec. Byte layout: docs/design/storage.md.
//!
//! ```text
//! record = payload_len u32 | seq u64 | kind u8 | header_crc u32 | payload_crc u32 | payload
//! header_crc  = crc32c(payload_len ++ seq ++ kind)        (all little-endian)
//! payload_crc = crc32c(payload)
//! ```
//! The header has its own checksum so that a damaged length is recognised as damage: without it, a flipped
//! bit in a length mid-log would look like a record running past the end of the file, a torn tail, and
//! recovery would cut every record after it. Each writer checksums its own payload before it queues it;
//! the group-commit leader only checksums the 13 header bytes once the sequence number is known.

use bytes::{BufMut, Bytes};

use crate::codec::{u32_at, u64_at};

/// Bytes before the payload.
pub(crate) const HEADER_BYTES: usize = 21;
/// A write batch: puts and deletes applied all-or-nothing.
pub(crate) const KIND_BATCH: u8 = 1;
/// The creation of a keyspace.
pub(crate) const KIND_CREATE_KEYSPACE: u8 = 2;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
/// A put with an expiry time (`expires_at_ms`, Unix milliseconds) before the value length.
const OP_PUT_EXPIRING: u8 = 3;
/// `start u64 | end u64` (inclusive). Resolved by the WAL writer into point deletes before the record is
/// written: never found in the log.
const OP_DELETE_RANGE: u8 = 4;
/// `cond u8 | seq u64`: a condition the whole batch depends on. Checked by the WAL writer, then
/// stripped: never found in the log.
const OP_CHECK: u8 = 5;
const COND_ABSENT: u8 = 1;
const COND_SEQ: u8 = 2;

fn header_fields(payload_len: u32, seq: u64, kind: u8) -> [u8; 13] {
    let mut h = [0u8; 13];
    h[0..4].copy_from_slice(&payload_len.to_le_bytes());
    h[4..12].copy_from_slice(&seq.to_le_bytes());
    h[12] = kind;
    h
}

/// Appends a full header for a payload whose CRC32C the caller computed.
pub(crate) fn put_header(
    out: &mut Vec<u8>,
    payload_len: u32,
    seq: u64,
    kind: u8,
    payload_crc: u32,
) {
    let fields = header_fields(payload_len, seq, kind);
    out.put_slice(&fields);
    out.put_u32_le(crc32c::crc32c(&fields));
    out.put_u32_le(payload_crc);
}

/// A parsed header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub payload_len: u32,
    pub seq: u64,
    pub kind: u8,
    header_crc: u32,
    pub payload_crc: u32,
}

impl Header {
    /// Whether the header's own checksum matches: only then is `payload_len` trusted.
    pub(crate) fn verified(&self) -> bool {
        crc32c::crc32c(&header_fields(self.payload_len, self.seq, self.kind)) == self.header_crc
    }
}

/// Parses a header from at least `HEADER_BYTES` bytes (unverified: see [`Header::verified`]).
pub(crate) fn parse_header(b: &[u8]) -> Option<Header> {
    let b = b.get(..HEADER_BYTES)?;
    Some(Header {
        payload_len: u32_at(b, 0)?,
        seq: u64_at(b, 4)?,
        kind: b[12],
        header_crc: u32_at(b, 13)?,
        payload_crc: u32_at(b, 17)?,
    })
}

/// What a conditional batch requires of one key, checked when the batch is sequenced: the public
/// [`crate::Condition`] itself (one type, encoded here as a tag and a sequence number).
pub(crate) use crate::condition::Condition as Cond;

/// One operation of a batch, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `value` is a slice of the record payload (no copy). `expires_ms` is 0 for no expiry.
    Put {
        keyspace: u32,
        key: u64,
        value: Bytes,
        expires_ms: u64,
    },
    Delete {
        keyspace: u32,
        key: u64,
    },
    /// Only before sequencing: every live key in `start..=end`.
    DeleteRange {
        keyspace: u32,
        start: u64,
        end: u64,
    },
    /// Only before sequencing: a condition on `key`.
    Check {
        keyspace: u32,
        key: u64,
        cond: Cond,
    },
}

/// Builds a batch payload: `count u32 | op*`; each op starts `tag u8 | keyspace u32 | key u64` and
/// continues by tag (docs/design/storage.md has the table).
#[derive(Debug, Clone)]
pub(crate) struct BatchEncoder {
    buf: Vec<u8>,
    count: u32,
    value_len_max: usize,
    /// Holds a delete-range or a condition: the WAL writer must resolve it before writing.
    needs_resolve: bool,
}

impl Default for BatchEncoder {
    fn default() -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.put_u32_le(0);
        Self {
            buf,
            count: 0,
            value_len_max: 0,
            needs_resolve: false,
        }
    }
}

impl BatchEncoder {
    pub(crate) fn put(&mut self, keyspace: u32, key: u64, value: &[u8]) {
        self.put_expiring(keyspace, key, value, 0);
    }

    /// A put that expires at `expires_ms` (Unix milliseconds; 0 = never).
    pub(crate) fn put_expiring(&mut self, keyspace: u32, key: u64, value: &[u8], expires_ms: u64) {
        self.buf.reserve(25 + value.len());
        self.buf.put_u8(if expires_ms == 0 {
            OP_PUT
        } else {
            OP_PUT_EXPIRING
        });
        self.buf.put_u32_le(keyspace);
        self.buf.put_u64_le(key);
        if expires_ms != 0 {
            self.buf.put_u64_le(expires_ms);
        }
        // Values longer than u32::MAX are refused by `value_bytes_max` before they are written.
        self.buf
            .put_u32_le(u32::try_from(value.len()).unwrap_or(u32::MAX));
        self.buf.put_slice(value);
        self.count += 1;
        self.value_len_max = self.value_len_max.max(value.len());
    }

    pub(crate) fn delete(&mut self, keyspace: u32, key: u64) {
        self.buf.put_u8(OP_DELETE);
        self.buf.put_u32_le(keyspace);
        self.buf.put_u64_le(key);
        self.count += 1;
    }

    pub(crate) fn delete_range(&mut self, keyspace: u32, start: u64, end: u64) {
        self.buf.put_u8(OP_DELETE_RANGE);
        self.buf.put_u32_le(keyspace);
        self.buf.put_u64_le(start);
        self.buf.put_u64_le(end);
        self.count += 1;
        self.needs_resolve = true;
    }

    pub(crate) fn check(&mut self, keyspace: u32, key: u64, cond: Cond) {
        self.buf.put_u8(OP_CHECK);
        self.buf.put_u32_le(keyspace);
        self.buf.put_u64_le(key);
        let (c, seq) = match cond {
            Cond::Absent => (COND_ABSENT, 0),
            Cond::Seq(s) => (COND_SEQ, s),
        };
        self.buf.put_u8(c);
        self.buf.put_u64_le(seq);
        self.count += 1;
        self.needs_resolve = true;
    }

    /// Appends a decoded put or delete (the WAL writer re-encodes resolved batches with it).
    pub(crate) fn push(&mut self, op: &Op) {
        match op {
            Op::Put {
                keyspace,
                key,
                value,
                expires_ms,
            } => self.put_expiring(*keyspace, *key, value, *expires_ms),
            Op::Delete { keyspace, key } => self.delete(*keyspace, *key),
            Op::DeleteRange {
                keyspace,
                start,
                end,
            } => self.delete_range(*keyspace, *start, *end),
            Op::Check {
                keyspace,
                key,
                cond,
            } => self.check(*keyspace, *key, *cond),
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.count as usize
    }

    pub(crate) fn value_len_max(&self) -> usize {
        self.value_len_max
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the batch holds a delete-range or a condition, which the WAL writer resolves.
    pub(crate) fn needs_resolve(&self) -> bool {
        self.needs_resolve
    }

    /// The finished payload.
    pub(crate) fn finish(mut self) -> Bytes {
        self.buf[0..4].copy_from_slice(&self.count.to_le_bytes());
        Bytes::from(self.buf)
    }
}

/// Decodes every operation of a batch payload, in order. Fails (naming the byte offset inside the
/// payload) on any structural problem, so a checksummed-but-malformed record is refused, never half-applied:
/// callers decode fully before applying.
pub(crate) fn decode_batch(payload: &Bytes) -> Result<Vec<Op>, (usize, &'static str)> {
    let p = payload.as_ref();
    let count = u32_at(p, 0).ok_or((0, "batch shorter than its count"))? as usize;
    // Each op takes at least 13 bytes, which bounds `count` by the payload before we allocate.
    if count > p.len() / 13 {
        return Err((0, "batch count larger than the payload can hold"));
    }
    let mut ops = Vec::with_capacity(count);
    let mut at = 4;
    for _ in 0..count {
        let tag = *p.get(at).ok_or((at, "truncated op"))?;
        let keyspace = u32_at(p, at + 1).ok_or((at, "truncated op"))?;
        let key = u64_at(p, at + 5).ok_or((at, "truncated op"))?;
        match tag {
            OP_PUT | OP_PUT_EXPIRING => {
                let (expires_ms, len_at) = if tag == OP_PUT_EXPIRING {
                    let e = u64_at(p, at + 13).ok_or((at, "truncated put"))?;
                    if e == 0 {
                        return Err((at, "expiring put with expiry 0"));
                    }
                    (e, at + 21)
                } else {
                    (0, at + 13)
                };
                let len = u32_at(p, len_at).ok_or((at, "truncated put"))? as usize;
                let start = len_at + 4;
                let end = start
                    .checked_add(len)
                    .filter(|e| *e <= p.len())
                    .ok_or((at, "value runs past the payload"))?;
                ops.push(Op::Put {
                    keyspace,
                    key,
                    value: payload.slice(start..end),
                    expires_ms,
                });
                at = end;
            }
            OP_DELETE => {
                ops.push(Op::Delete { keyspace, key });
                at += 13;
            }
            OP_DELETE_RANGE => {
                let end = u64_at(p, at + 13).ok_or((at, "truncated delete-range"))?;
                ops.push(Op::DeleteRange {
                    keyspace,
                    start: key,
                    end,
                });
                at += 21;
            }
            OP_CHECK => {
                let c = *p.get(at + 13).ok_or((at, "truncated condition"))?;
                let seq = u64_at(p, at + 14).ok_or((at, "truncated condition"))?;
                let cond = match c {
                    COND_ABSENT => Cond::Absent,
                    COND_SEQ => Cond::Seq(seq),
                    _ => return Err((at, "unknown condition")),
                };
                ops.push(Op::Check {
                    keyspace,
                    key,
                    cond,
                });
                at += 22;
            }
            _ => return Err((at, "unknown op tag")),
        }
    }
    if at != p.len() {
        return Err((at, "trailing bytes after the last op"));
    }
    Ok(ops)
}

/// Payload of a keyspace creation: `id u32 | name_len u16 | name`.
pub(crate) fn encode_create_keyspace(id: u32, name: &str) -> Bytes {
    let mut b = Vec::with_capacity(6 + name.len());
    b.put_u32_le(id);
    b.put_u16_le(name.len() as u16);
    b.put_slice(name.as_bytes());
    Bytes::from(b)
}

pub(crate) fn decode_create_keyspace(p: &[u8]) -> Result<(u32, String), (usize, &'static str)> {
    let id = u32_at(p, 0).ok_or((0, "truncated keyspace record"))?;
    let len = p.get(4..6).ok_or((4, "truncated keyspace record"))?;
    let len = u16::from_le_bytes([len[0], len[1]]) as usize;
    let name = p
        .get(6..6 + len)
        .ok_or((6, "keyspace name runs past the payload"))?;
    if 6 + len != p.len() {
        return Err((6 + len, "trailing bytes after keyspace name"));
    }
    let name = std::str::from_utf8(name).map_err(|_| (6, "keyspace name is not UTF-8"))?;
    Ok((id, name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_and_rejects_every_truncation() {
        let mut enc = BatchEncoder::default();
        enc.put(0, 7, b"seven");
        enc.delete(3, u64::MAX);
        enc.put(1, 0, b"");
        enc.put_expiring(2, 9, b"ttl", 1_700_000_000_123);
        enc.delete_range(0, 5, 10);
        enc.check(0, 4, Cond::Absent);
        enc.check(1, 8, Cond::Seq(77));
        assert!(enc.needs_resolve());
        let payload = enc.finish();
        let ops = decode_batch(&payload).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::Put {
                    keyspace: 0,
                    key: 7,
                    value: Bytes::from_static(b"seven"),
                    expires_ms: 0,
                },
                Op::Delete {
                    keyspace: 3,
                    key: u64::MAX
                },
                Op::Put {
                    keyspace: 1,
                    key: 0,
                    value: Bytes::new(),
                    expires_ms: 0,
                },
                Op::Put {
                    keyspace: 2,
                    key: 9,
                    value: Bytes::from_static(b"ttl"),
                    expires_ms: 1_700_000_000_123,
                },
                Op::DeleteRange {
                    keyspace: 0,
                    start: 5,
                    end: 10,
                },
                Op::Check {
                    keyspace: 0,
                    key: 4,
                    cond: Cond::Absent,
                },
                Op::Check {
                    keyspace: 1,
                    key: 8,
                    cond: Cond::Seq(77),
                },
            ]
        );
        for cut in 0..payload.len() {
            assert!(
                decode_batch(&payload.slice(..cut)).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
    }

    #[test]
    fn header_checksum_covers_every_header_field() {
        let mut b = Vec::new();
        put_header(&mut b, 3, 7, KIND_BATCH, crc32c::crc32c(b"abc"));
        assert_eq!(b.len(), HEADER_BYTES);
        assert!(parse_header(&b).unwrap().verified());
        for i in 0..17 {
            let mut c = b.clone();
            c[i] ^= 0x08;
            assert!(
                !parse_header(&c).unwrap().verified(),
                "flip at {i} not caught"
            );
        }
    }

    #[test]
    fn keyspace_record_round_trips() {
        let p = encode_create_keyspace(9, "docs.v1");
        assert_eq!(
            decode_create_keyspace(&p).unwrap(),
            (9, "docs.v1".to_owned())
        );
        assert!(decode_create_keyspace(&p[..p.len() - 1]).is_err());
    }
}
