//! File descriptors: connections must never take the descriptors the engine needs to open files.
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit; then the connection caps of the
//! HTTP port and the Raft port are sized from it, keeping a reserve for the engine's files (WAL
//! segments, snapshot and index files while they are written, search checkpoints, the model). A
//! configured `connections_max` above what the limit allows is lowered, with a warning.

/// Descriptors kept for files whatever the limit: the engine's open files plus room for a snapshot
/// or a checkpoint being written while every connection slot is taken.
pub const FILES_RESERVE_MIN: u64 = 256;
/// Connections the Raft port takes at most (peers keep a few pooled connections each).
pub const RAFT_CONNECTIONS_MAX: usize = 256;

/// Linux's default `fs.nr_open`, the most descriptors a process can be allowed.
#[cfg(unix)]
const NR_OPEN_DEFAULT: u64 = 1 << 20;

/// The descriptor limit after trying to raise the soft limit to the hard one (`None` where the
/// limit cannot be read).
pub fn raise_nofile_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let r = getrlimit(Resource::Nofile);
        // No soft limit: nothing to size from but the kernel's own cap.
        let soft = r.current.unwrap_or(NR_OPEN_DEFAULT);
        // An unlimited hard limit cannot be set as the soft one (Linux caps it at fs.nr_open).
        let target = r.maximum.unwrap_or(NR_OPEN_DEFAULT);
        if target > soft {
            let mut raised = r;
            raised.current = Some(target);
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::warn!(soft, hard = target, error = %e, "cannot raise the open-file limit");
                return Some(soft);
            }
            return Some(target);
        }
        Some(soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// How many connections each port may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnBudget {
    /// Most connections on the HTTP port.
    pub http: usize,
    /// Most connections on the Raft port (0 on a single node).
    pub raft: usize,
    /// Descriptors left for files.
    pub files: u64,
}

/// Splits the descriptor limit `nofile`: a quarter (at least [`FILES_RESERVE_MIN`]) for files, the
/// Raft port (when `clustered`) up to an eighth of the rest, the HTTP port what is left, never above
/// `http_wanted`. At least one connection per port, so a tiny limit still serves.
pub fn budget(nofile: Option<u64>, http_wanted: usize, clustered: bool) -> ConnBudget {
    let Some(limit) = nofile else {
        return ConnBudget {
            http: http_wanted,
            raft: if clustered { RAFT_CONNECTIONS_MAX } else { 0 },
            files: 0,
        };
    };
    let files = (limit / 4).max(FILES_RESERVE_MIN).min(limit);
    let for_conns = (limit - files) as usize;
    let raft = if clustered {
        (for_conns / 8).clamp(1, RAFT_CONNECTIONS_MAX)
    } else {
        0
    };
    let http = for_conns.saturating_sub(raft).clamp(1, http_wanted.max(1));
    ConnBudget { http, raft, files }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_never_take_the_files_reserve() {
        // The usual 1,024 soft limit: 256 for files, the rest for connections.
        let b = budget(Some(1024), 4096, false);
        assert_eq!(b.files, 256);
        assert_eq!(b.http, 768);
        assert_eq!(b.raft, 0);
        let b = budget(Some(1024), 4096, true);
        assert_eq!(b.raft, 96);
        assert_eq!(b.http + b.raft + b.files as usize, 1024);
        // A large limit keeps the configured cap and a quarter for files.
        let b = budget(Some(1 << 20), 4096, true);
        assert_eq!((b.http, b.raft, b.files), (4096, 256, 1 << 18));
        // A tiny limit still serves one connection per port.
        let b = budget(Some(100), 4096, true);
        assert_eq!((b.http, b.raft, b.files), (1, 1, 100));
        // No limit known: what was asked for.
        assert_eq!(budget(None, 10, false).http, 10);
    }
}
