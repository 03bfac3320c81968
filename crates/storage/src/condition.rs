//! Conditions of a conditional write: what the API, the WAL records and the errors share.

/// What a conditional write requires of a key (compare-and-set). Checked in the WAL thread when the
/// batch is sequenced, against every write sequenced before it: no other write can come between the
/// check and the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The key has no live value: never written, deleted, or expired (`if_absent`).
    Absent,
    /// The key's live value was written by the write with this sequence number (`if_seq`), as
    /// returned by that write and by [`Keyspace::get_entry`]. Values written before sequence numbers
    /// were recorded (a version-1 snapshot) report, and match, 0.
    Seq(u64),
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Absent => f.write_str("no live value"),
            Condition::Seq(s) => write!(f, "a live value written at sequence {s}"),
        }
    }
}
