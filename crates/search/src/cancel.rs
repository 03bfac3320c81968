//! Stopping blocking search work whose answer nobody will read.
//!
//! A search runs on a blocking thread; the HTTP request that asked for it may time out or its
//! client may go away meanwhile. A [`Cancel`] token is handed to the search: the server sets it
//! when the request's future is dropped ([`Cancel::cancel_on_drop`]), and a token may also carry a
//! deadline. The loops that can run long — the HNSW beam, exact scans, the BM25 and block-max WAND
//! loops, phrase matching, filter evaluation, newest-first listing — look at the token every few
//! hundred iterations ([`Poll`]: one relaxed atomic load, plus a clock read when there is a
//! deadline), stop, and the search returns [`Error::Cancelled`]. A token never un-fires (the flag
//! stays set, time only moves on), so work that stopped early is always reported as cancelled,
//! never returned as a complete answer.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use crate::{Error, Result};

/// A cancellation token: a shared flag, an optional deadline. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Option<Arc<AtomicBool>>,
    deadline: Option<Instant>,
    /// Tests: checks left before the token fires on its own ([`Cancel::after_checks`]).
    budget: Option<Arc<AtomicU64>>,
}

/// A token that never fires.
pub(crate) static NEVER: Cancel = Cancel::never();

impl Cancel {
    /// A token that never fires (work that must run to the end).
    pub const fn never() -> Cancel {
        Cancel {
            flag: None,
            deadline: None,
            budget: None,
        }
    }

    /// A token that fires when [`cancel`](Self::cancel) is called on it or on a clone.
    pub fn new() -> Cancel {
        Cancel {
            flag: Some(Arc::new(AtomicBool::new(false))),
            ..Cancel::never()
        }
    }

    /// This token, also firing once `at` has passed.
    pub fn with_deadline(mut self, at: Instant) -> Cancel {
        self.deadline = Some(at);
        self
    }

    /// A token that fires by itself after it has been looked at `checks` times: cancels a search
    /// in the middle of its loops deterministically (tests), without threads or clocks.
    pub fn after_checks(checks: u64) -> Cancel {
        Cancel {
            budget: Some(Arc::new(AtomicU64::new(checks))),
            ..Cancel::new()
        }
    }

    /// Fires the token (and every clone of it). A no-op on [`Cancel::never`].
    pub fn cancel(&self) {
        if let Some(f) = &self.flag {
            f.store(true, Ordering::Relaxed);
        }
    }

    /// Has the token fired (flag set or deadline passed)?
    pub fn is_cancelled(&self) -> bool {
        let Some(f) = &self.flag else {
            return self.deadline.is_some_and(|d| Instant::now() >= d);
        };
        if f.load(Ordering::Relaxed) {
            return true;
        }
        if let Some(b) = &self.budget {
            if b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
            {
                f.store(true, Ordering::Relaxed);
                return true;
            }
        }
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// `Err(Error::Cancelled)` once the token has fired.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// A guard that fires the token when it is dropped: keep it in the future that waits for the
    /// blocking work, so dropping that future (client gone, request timed out) stops the work.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }
}

/// Fires its token when dropped ([`Cancel::cancel_on_drop`]).
#[derive(Debug)]
pub struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A loop's view of a token: looks at it once every `every` calls of [`stop`](Self::stop)
/// (a power of two), and stays stopped once it saw it fire.
#[derive(Debug)]
pub(crate) struct Poll<'a> {
    cancel: &'a Cancel,
    mask: u32,
    n: u32,
    stopped: bool,
}

impl<'a> Poll<'a> {
    /// Looks at `cancel` every `every` calls (rounded up to a power of two).
    pub(crate) fn new(cancel: &'a Cancel, every: u32) -> Poll<'a> {
        Poll {
            cancel,
            mask: every.clamp(1, 1 << 31).next_power_of_two() - 1,
            n: 0,
            stopped: false,
        }
    }

    /// A loop that runs to its end (it never stops).
    pub(crate) fn never() -> Poll<'static> {
        Poll::new(&NEVER, 1 << 31)
    }

    /// Should the loop stop now?
    #[inline]
    pub(crate) fn stop(&mut self) -> bool {
        if self.stopped {
            return true;
        }
        self.n = self.n.wrapping_add(1);
        if self.n & self.mask == 0 && self.cancel.is_cancelled() {
            self.stopped = true;
        }
        self.stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_fire_by_flag_deadline_drop_and_budget_and_never_unfire() {
        assert!(!NEVER.is_cancelled());
        NEVER.cancel();
        assert!(NEVER.check().is_ok());
        let c = Cancel::new();
        let clone = c.clone();
        assert!(!clone.is_cancelled());
        c.cancel();
        assert!(matches!(clone.check(), Err(Error::Cancelled)));
        let past = Cancel::never().with_deadline(Instant::now());
        assert!(past.is_cancelled());
        let later =
            Cancel::new().with_deadline(Instant::now() + std::time::Duration::from_secs(3600));
        assert!(!later.is_cancelled());
        {
            let _g = later.cancel_on_drop();
            assert!(!later.is_cancelled());
        }
        assert!(later.is_cancelled());
        let b = Cancel::after_checks(2);
        assert!(!b.is_cancelled() && !b.is_cancelled());
        assert!(b.is_cancelled() && b.is_cancelled());
        let mut p = Poll::new(&b, 4);
        assert!((0..3).all(|_| !p.stop()));
        assert!(p.stop() && p.stop());
    }
}
