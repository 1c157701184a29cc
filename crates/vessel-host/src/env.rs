//! [`HostEnv`]: what every VM of a process shares. It bundles the embedder's
//! clock, log sink, property provider, randomness and foreign functions with
//! the process-wide shared data, queues and metrics (ABI reference §11.14,
//! §11.15). Cloning is cheap (an `Arc`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::embedder::{
    Clock, ForeignFn, ForeignFunction, LogFacade, LogSink, OsRandom, PropertyProvider, Random,
    SystemClock,
};
use crate::ids::VmInstanceId;
use crate::shared::data::{SharedData, SharedDataLimits};
use crate::shared::metrics::Metrics;
use crate::shared::queues::{SharedQueueLimits, SharedQueues};

pub(crate) struct EnvInner {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) logs: Arc<dyn LogSink>,
    pub(crate) properties: Option<Arc<dyn PropertyProvider>>,
    pub(crate) random: Arc<dyn Random>,
    pub(crate) foreign: HashMap<String, ForeignFn>,
    pub(crate) shared_data: Arc<SharedData>,
    pub(crate) queues: Arc<SharedQueues>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clusters: Option<ClusterFilter>,
    next_instance: AtomicU64,
}

/// Decides which upstream (cluster) names callouts may use.
pub type ClusterFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Process-wide host services shared by VMs. See the module docs.
#[derive(Clone)]
pub struct HostEnv {
    pub(crate) inner: Arc<EnvInner>,
}

impl fmt::Debug for HostEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostEnv")
            .field(
                "foreign_functions",
                &self.inner.foreign.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Default for HostEnv {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl HostEnv {
    /// Starts a builder with the defaults: system clock, `log` facade, OS
    /// randomness, no property provider, no foreign functions.
    pub fn builder() -> HostEnvBuilder {
        HostEnvBuilder::default()
    }

    /// The shared-data store.
    pub fn shared_data(&self) -> &Arc<SharedData> {
        &self.inner.shared_data
    }

    /// The shared-queue registry.
    pub fn queues(&self) -> &Arc<SharedQueues> {
        &self.inner.queues
    }

    /// The metric registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// True if callouts may go to `cluster` (every name, unless the embedder
    /// set [`HostEnvBuilder::known_clusters`]).
    pub fn knows_cluster(&self, cluster: &str) -> bool {
        self.inner.clusters.as_ref().is_none_or(|f| f(cluster))
    }

    pub(crate) fn next_instance_id(&self) -> VmInstanceId {
        VmInstanceId::new(self.inner.next_instance.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// Builds a [`HostEnv`].
pub struct HostEnvBuilder {
    clock: Arc<dyn Clock>,
    logs: Arc<dyn LogSink>,
    properties: Option<Arc<dyn PropertyProvider>>,
    random: Arc<dyn Random>,
    foreign: HashMap<String, ForeignFn>,
    shared_data_limits: SharedDataLimits,
    queue_limits: SharedQueueLimits,
    shared_data: Option<Arc<SharedData>>,
    queues: Option<Arc<SharedQueues>>,
    metrics: Option<Arc<Metrics>>,
    clusters: Option<ClusterFilter>,
}

impl fmt::Debug for HostEnvBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostEnvBuilder").finish_non_exhaustive()
    }
}

impl Default for HostEnvBuilder {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            logs: Arc::new(LogFacade),
            properties: None,
            random: Arc::new(OsRandom),
            foreign: HashMap::new(),
            shared_data_limits: SharedDataLimits::default(),
            queue_limits: SharedQueueLimits::default(),
            shared_data: None,
            queues: None,
            metrics: None,
            clusters: None,
        }
    }
}

impl HostEnvBuilder {
    /// The clock guests read.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
    /// Where guest logs go.
    pub fn log_sink(mut self, sink: impl LogSink) -> Self {
        self.logs = Arc::new(sink);
        self
    }
    /// Where guest logs go, as a shared handle.
    pub fn log_sink_arc(mut self, sink: Arc<dyn LogSink>) -> Self {
        self.logs = sink;
        self
    }
    /// The provider of host attributes.
    pub fn property_provider(mut self, provider: impl PropertyProvider) -> Self {
        self.properties = Some(Arc::new(provider));
        self
    }
    /// The source of randomness for WASI `random_get`.
    pub fn random(mut self, random: impl Random) -> Self {
        self.random = Arc::new(random);
        self
    }
    /// Offers a foreign function under `name`.
    pub fn foreign_function(mut self, name: impl Into<String>, f: impl ForeignFunction) -> Self {
        self.foreign.insert(name.into(), Arc::new(f));
        self
    }
    /// Limits of the shared-data store.
    pub fn shared_data_limits(mut self, limits: SharedDataLimits) -> Self {
        self.shared_data_limits = limits;
        self
    }
    /// Largest number of items waiting in one shared queue.
    pub fn queue_max_len(mut self, max_len: usize) -> Self {
        self.queue_limits.max_len = max_len;
        self
    }
    /// Limits of the shared-queue registry.
    pub fn queue_limits(mut self, limits: SharedQueueLimits) -> Self {
        self.queue_limits = limits;
        self
    }
    /// Shares an existing shared-data store (e.g. with another `HostEnv`).
    pub fn shared_data(mut self, store: Arc<SharedData>) -> Self {
        self.shared_data = Some(store);
        self
    }
    /// Shares an existing queue registry.
    pub fn queues(mut self, queues: Arc<SharedQueues>) -> Self {
        self.queues = Some(queues);
        self
    }
    /// Shares an existing metric registry.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
    /// Restricts callouts to the clusters `filter` accepts. A call to another
    /// cluster gets BAD_ARGUMENT (HTTP) or PARSE_FAILURE (gRPC), as in Envoy.
    pub fn known_clusters(mut self, filter: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.clusters = Some(Arc::new(filter));
        self
    }
    /// Finishes the builder.
    pub fn build(self) -> HostEnv {
        let limits = self.shared_data_limits;
        let queue_limits = self.queue_limits;
        HostEnv {
            inner: Arc::new(EnvInner {
                clock: self.clock,
                logs: self.logs,
                properties: self.properties,
                random: self.random,
                foreign: self.foreign,
                shared_data: self
                    .shared_data
                    .unwrap_or_else(|| Arc::new(SharedData::new(limits))),
                queues: self
                    .queues
                    .unwrap_or_else(|| Arc::new(SharedQueues::with_limits(queue_limits))),
                metrics: self.metrics.unwrap_or_default(),
                clusters: self.clusters,
                next_instance: AtomicU64::new(0),
            }),
        }
    }
}
