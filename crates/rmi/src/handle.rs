//! An index together with its keys, and a handle that rebuilds it in the background.
//!
//! Readers `load` the current [`KeyedRmi`] from an `ArcSwap` (wait-free) and keep using it for as long
//! as they hold it; a rebuild builds and verifies a new one on its own thread, then swaps the pointer.
//! A reader therefore never waits for a rebuild and never sees a half-built or unverified index.

use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;

use crate::config::RmiConfig;
use crate::error::{Result, RmiError};
use crate::model::Rmi;

/// A learned index bundled with the key array it was built over (owned, shared or mapped).
#[derive(Debug)]
pub struct KeyedRmi<K> {
    keys: K,
    rmi: Rmi,
}

impl<K: AsRef<[u64]>> KeyedRmi<K> {
    /// Builds an index over `keys` (sorted, deduplicated).
    pub fn build(keys: K, config: &RmiConfig) -> Result<Self> {
        let rmi = Rmi::build(keys.as_ref(), config)?;
        Ok(KeyedRmi { keys, rmi })
    }

    /// Pairs `keys` with an index built elsewhere (e.g. loaded from a file) after verifying that every
    /// key lies in its window — O(n).
    pub fn with_index(keys: K, rmi: Rmi) -> Result<Self> {
        rmi.verify(keys.as_ref())?;
        Ok(KeyedRmi { keys, rmi })
    }

    /// Position of `key`, if present.
    #[inline]
    pub fn find(&self, key: u64) -> Option<usize> {
        self.rmi.find(self.keys.as_ref(), key)
    }

    /// First position whose key is `>= key`.
    #[inline]
    pub fn lower_bound(&self, key: u64) -> usize {
        self.rmi.lower_bound(self.keys.as_ref(), key)
    }

    /// The keys.
    pub fn keys(&self) -> &[u64] {
        self.keys.as_ref()
    }

    /// The model.
    pub fn rmi(&self) -> &Rmi {
        &self.rmi
    }
}

/// The current index behind an atomic pointer, replaced by background rebuilds.
#[derive(Debug)]
pub struct RmiHandle<K> {
    current: Arc<ArcSwap<KeyedRmi<K>>>,
    config: RmiConfig,
}

impl<K> Clone for RmiHandle<K> {
    fn clone(&self) -> Self {
        RmiHandle {
            current: Arc::clone(&self.current),
            config: self.config,
        }
    }
}

impl<K: AsRef<[u64]> + Send + Sync + 'static> RmiHandle<K> {
    /// Builds the first index over `keys`.
    pub fn new(keys: K, config: RmiConfig) -> Result<Self> {
        let first = KeyedRmi::build(keys, &config)?;
        Ok(RmiHandle {
            current: Arc::new(ArcSwap::from_pointee(first)),
            config,
        })
    }

    /// The current index; hold it for a consistent view across several lookups.
    pub fn load(&self) -> Arc<KeyedRmi<K>> {
        self.current.load_full()
    }

    /// Position of `key` in the current index's keys.
    pub fn find(&self, key: u64) -> Option<usize> {
        self.current.load().find(key)
    }

    /// Lower bound of `key` in the current index's keys.
    pub fn lower_bound(&self, key: u64) -> usize {
        self.current.load().lower_bound(key)
    }

    /// Builds over `keys`, verifies every key's window, then swaps it in. On error the current index
    /// stays.
    pub fn rebuild(&self, keys: K) -> Result<()> {
        let result =
            build_verified(keys, &self.config).map(|next| self.current.store(Arc::new(next)));
        crate::metrics::record_rebuild(result.is_ok());
        result
    }

    /// [`RmiHandle::rebuild`] on a new thread. Lookups keep using the current index until the swap.
    /// Errors only if the thread cannot be started; the thread's result says whether the swap happened.
    pub fn rebuild_in_background(&self, keys: K) -> Result<JoinHandle<Result<()>>> {
        let handle = self.clone();
        std::thread::Builder::new()
            .name("kyrodb-rmi-rebuild".into())
            .spawn(move || handle.rebuild(keys))
            .map_err(RmiError::Spawn)
    }
}

fn build_verified<K: AsRef<[u64]>>(keys: K, config: &RmiConfig) -> Result<KeyedRmi<K>> {
    let next = KeyedRmi::build(keys, config)?;
    next.rmi.verify(next.keys.as_ref())?;
    Ok(next)
}
