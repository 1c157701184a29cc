//! [`VesselLayer`]: a tower layer that runs a chain of proxy-wasm filters
//! in front of any inner service (the upstream), and swaps the chain
//! atomically on a hot reload.
//!
//! Every stream takes a snapshot of the chain ([`ChainConfig`]) when it
//! starts and keeps it (its pools and the VMs it was pinned to) until it
//! ends. A swap therefore never touches a stream in flight: new streams
//! use the new filters, streams in flight finish on the old VMs, and the
//! old pools and VMs are dropped when their last stream ends (their root
//! contexts get `on_done` / `on_delete` then, as in Envoy when a plugin
//! goes away).

use std::sync::{Arc, PoisonError, RwLock};

use tower::Layer;

use crate::pool::{FilterPool, PluginError};
use crate::service::VesselService;

pub use vessel_host::DEFAULT_BUFFER_LIMIT;

/// The filters of a chain and its settings: one immutable snapshot, shared
/// by every stream that started while it was current.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub(crate) pools: Vec<Arc<FilterPool>>,
    pub(crate) buffer_limit: usize,
}

impl ChainConfig {
    /// The filter pools, in chain order.
    pub fn filters(&self) -> &[Arc<FilterPool>] {
        &self.pools
    }

    /// The body buffer limit.
    pub fn buffer_limit(&self) -> usize {
        self.buffer_limit
    }
}

/// The current chain, shared by a layer, its clones and every service they
/// made.
#[derive(Debug)]
pub(crate) struct CurrentChain(RwLock<Arc<ChainConfig>>);

impl CurrentChain {
    /// The chain for a new stream.
    pub(crate) fn load(&self) -> Arc<ChainConfig> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn store(&self, f: impl FnOnce(&ChainConfig) -> ChainConfig) -> Arc<ChainConfig> {
        let mut current = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let new = Arc::new(f(&current));
        std::mem::replace(&mut *current, new)
    }
}

/// Wraps a service with a chain of proxy-wasm filters. Clones share the
/// chain: a swap through any clone is seen by every service they made.
#[derive(Debug, Clone)]
pub struct VesselLayer {
    chain: Arc<CurrentChain>,
}

impl VesselLayer {
    /// A layer running `filters` in order on requests, in reverse order on
    /// responses.
    pub fn new(filters: Vec<Arc<FilterPool>>) -> Self {
        Self {
            chain: Arc::new(CurrentChain(RwLock::new(Arc::new(ChainConfig {
                pools: filters,
                buffer_limit: DEFAULT_BUFFER_LIMIT,
            })))),
        }
    }

    /// Sets the largest body a stopped filter makes the chain buffer; above
    /// it a request gets 413 and a response 500, as in Envoy.
    pub fn buffer_limit(self, bytes: usize) -> Self {
        self.chain.store(|c| ChainConfig {
            pools: c.pools.clone(),
            buffer_limit: bytes,
        });
        self
    }

    /// The current chain.
    pub fn chain(&self) -> Arc<ChainConfig> {
        self.chain.load()
    }

    /// The current filter pools, in chain order.
    pub fn filters(&self) -> Vec<Arc<FilterPool>> {
        self.chain.load().pools.clone()
    }

    /// Atomically replaces the whole chain of filters; returns the old one.
    /// Streams in flight keep the filters they started with.
    pub fn swap_filters(&self, filters: Vec<Arc<FilterPool>>) -> Vec<Arc<FilterPool>> {
        let old = self.chain.store(|c| ChainConfig {
            pools: filters,
            buffer_limit: c.buffer_limit,
        });
        old.pools.clone()
    }

    /// Atomically replaces filter `index`; returns the old one, or `None`
    /// (and changes nothing) if there is no such filter.
    pub fn replace_filter(&self, index: usize, pool: Arc<FilterPool>) -> Option<Arc<FilterPool>> {
        let mut old = None;
        self.chain.store(|c| {
            let mut pools = c.pools.clone();
            if let Some(slot) = pools.get_mut(index) {
                old = Some(std::mem::replace(slot, pool));
            }
            ChainConfig {
                pools,
                buffer_limit: c.buffer_limit,
            }
        });
        old
    }

    /// A hot reload: `build` gets the current filters and makes the new
    /// ones (typically loading the new module and starting its VMs with
    /// [`FilterPool::builder`]). If it succeeds, the new chain replaces the
    /// old one atomically and the old filters are returned. If it fails —
    /// the module does not load, or a VM does not start or configure — the
    /// old chain keeps serving, the error is logged, and returned.
    ///
    /// Reloads through clones of one layer should be serialized by the
    /// caller; a swap made while `build` runs would be overwritten.
    pub fn reload<F>(&self, build: F) -> Result<Vec<Arc<FilterPool>>, PluginError>
    where
        F: FnOnce(&[Arc<FilterPool>]) -> Result<Vec<Arc<FilterPool>>, PluginError>,
    {
        let current = self.chain.load();
        match build(&current.pools) {
            Ok(new) => Ok(self.swap_filters(new)),
            Err(e) => {
                log::error!(
                    target: "vessel::hyper",
                    "hot reload refused, the current filters keep serving: {e}"
                );
                Err(e)
            }
        }
    }
}

impl<S> Layer<S> for VesselLayer {
    type Service = VesselService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VesselService::new(inner, self.chain.clone())
    }
}
