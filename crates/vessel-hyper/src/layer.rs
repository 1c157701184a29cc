//! [`VesselLayer`]: a tower layer that runs a chain of proxy-wasm filters
//! in front of any inner service (the upstream).

use std::sync::Arc;

use tower::Layer;

use crate::pool::FilterPool;
use crate::service::VesselService;

/// Envoy's default `per_connection_buffer_limit_bytes`: 1 MiB.
pub const DEFAULT_BUFFER_LIMIT: usize = 1 << 20;

/// The filters of a chain and its settings, shared by every stream.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub(crate) pools: Vec<Arc<FilterPool>>,
    pub(crate) buffer_limit: usize,
}

/// Wraps a service with a chain of proxy-wasm filters.
#[derive(Debug, Clone)]
pub struct VesselLayer {
    config: Arc<ChainConfig>,
}

impl VesselLayer {
    /// A layer running `filters` in order on requests, in reverse order on
    /// responses.
    pub fn new(filters: Vec<Arc<FilterPool>>) -> Self {
        Self {
            config: Arc::new(ChainConfig {
                pools: filters,
                buffer_limit: DEFAULT_BUFFER_LIMIT,
            }),
        }
    }

    /// Sets the largest body a stopped filter makes the chain buffer; above
    /// it a request gets 413 and a response 500, as in Envoy.
    pub fn buffer_limit(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).buffer_limit = bytes;
        self
    }

    /// The filter pools, in chain order.
    pub fn filters(&self) -> &[Arc<FilterPool>] {
        &self.config.pools
    }
}

impl<S> Layer<S> for VesselLayer {
    type Service = VesselService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VesselService::new(inner, self.config.clone())
    }
}
