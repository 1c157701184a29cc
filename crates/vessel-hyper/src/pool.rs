//! VM pools and effect dispatch.
//!
//! Each filter of a chain has a [`FilterPool`]: N VMs of one plugin (by
//! default one per runtime worker thread). A stream is pinned to one VM per
//! filter for its whole life; every guest callback takes that VM's lock for
//! the length of the callback only. After each callback the effects the
//! guest queued are dispatched here, still under the lock but without
//! calling the guest: stream effects go to the stream's task over a
//! channel, callouts start as tokio tasks, tick periods (re)arm a timer, and
//! queue notifications go to the VM that registered the queue. gRPC calls
//! and streams are tracked per VM (module `grpc`) so that
//! `proxy_grpc_send`, `proxy_grpc_close` and `proxy_grpc_cancel` reach them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use vessel_host::{
    ContextId, Effect, HostEnv, LocalResponse, Plugin, StreamType, Vm, VmError, VmInstanceId,
};

use crate::callout;
use crate::cluster::Clusters;
use crate::grpc::{self, GrpcCalls};
use crate::signal::SignalTx;

/// What happens to a stream when its filter's VM has failed (Envoy's
/// `failure_policy`; ABI reference §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Every stream on the failed VM gets a 503 local reply (Envoy's default).
    #[default]
    FailClosed,
    /// Streams pass through as if the filter were absent.
    FailOpen,
}

/// A message to a stream's task.
#[derive(Debug)]
pub(crate) enum Signal {
    Continue(StreamType),
    LocalReply(LocalResponse),
    Reset,
    /// The VM failed; streams waiting on it follow the failure policy.
    Failed,
}

pub(crate) struct VmShared {
    pub(crate) vm: Vm,
    pub(crate) streams: HashMap<ContextId, SignalTx>,
    tick: Option<JoinHandle<()>>,
    failure_announced: bool,
    /// gRPC calls and streams in flight.
    pub(crate) grpc: GrpcCalls,
}

impl Drop for VmShared {
    fn drop(&mut self) {
        if let Some(t) = self.tick.take() {
            t.abort();
        }
        self.grpc.abort_all();
    }
}

/// One VM behind a lock.
pub(crate) struct VmCell {
    pub(crate) inner: Mutex<VmShared>,
    pub(crate) runtime: Arc<Runtime>,
}

impl VmCell {
    pub(crate) fn lock(&self) -> MutexGuard<'_, VmShared> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Process-wide adapter state: clusters and the VM registry that routes
/// queue notifications.
pub struct Runtime {
    pub(crate) clusters: Arc<Clusters>,
    vms: Mutex<HashMap<VmInstanceId, Weak<VmCell>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("clusters", &self.clusters)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime with these callout clusters.
    pub fn new(clusters: Clusters) -> Arc<Self> {
        Arc::new(Self {
            clusters: Arc::new(clusters),
            vms: Mutex::default(),
        })
    }

    /// Replaces the endpoints of callout cluster `name` (e.g. after a DNS
    /// refresh). Returns false if there is no such cluster.
    pub fn set_cluster_endpoints(&self, name: &str, endpoints: Vec<std::net::SocketAddr>) -> bool {
        self.clusters.set_endpoints(name, endpoints)
    }

    /// The endpoints callout cluster `name` uses now.
    pub fn cluster_endpoints(&self, name: &str) -> Option<Vec<std::net::SocketAddr>> {
        self.clusters.endpoints(name)
    }

    /// True if callouts may use `cluster`.
    pub fn knows_cluster(&self, cluster: &str) -> bool {
        self.clusters.contains(cluster)
    }

    fn register(&self, id: VmInstanceId, cell: &Arc<VmCell>) {
        self.lock_vms().insert(id, Arc::downgrade(cell));
    }

    fn lock_vms(&self) -> MutexGuard<'_, HashMap<VmInstanceId, Weak<VmCell>>> {
        self.vms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn find(&self, id: VmInstanceId) -> Option<Arc<VmCell>> {
        let mut vms = self.lock_vms();
        let found = vms.get(&id).and_then(Weak::upgrade);
        if found.is_none() {
            vms.remove(&id);
        }
        found
    }
}

/// The VMs of one filter.
pub struct FilterPool {
    plugin: Plugin,
    policy: FailurePolicy,
    cells: Vec<Arc<VmCell>>,
    next: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for FilterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterPool")
            .field("plugin", &self.plugin.config().name)
            .field("vms", &self.cells.len())
            .field("policy", &self.policy)
            .finish()
    }
}

impl FilterPool {
    /// Starts `vms` VMs of `plugin`. Must run inside a tokio runtime (ticks
    /// and callouts the filter starts during start-up are spawned on it).
    pub fn new(
        plugin: &Plugin,
        env: &HostEnv,
        runtime: &Arc<Runtime>,
        vms: usize,
        policy: FailurePolicy,
    ) -> Result<Arc<Self>, VmError> {
        let mut cells = Vec::with_capacity(vms.max(1));
        for _ in 0..vms.max(1) {
            let vm = Vm::new(plugin, env)?;
            let id = vm.instance_id();
            let cell = Arc::new(VmCell {
                inner: Mutex::new(VmShared {
                    vm,
                    streams: HashMap::new(),
                    tick: None,
                    failure_announced: false,
                    grpc: GrpcCalls::default(),
                }),
                runtime: runtime.clone(),
            });
            runtime.register(id, &cell);
            {
                let mut shared = cell.lock();
                dispatch(&cell, &mut shared);
            }
            cells.push(cell);
        }
        Ok(Arc::new(Self {
            plugin: plugin.clone(),
            policy,
            cells,
            next: Default::default(),
        }))
    }

    /// The plugin.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// The failure policy.
    pub fn policy(&self) -> FailurePolicy {
        self.policy
    }

    /// Number of VMs.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// True if the pool has no VMs (never: a pool has at least one).
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Live contexts over all VMs (root contexts included).
    pub fn context_count(&self) -> usize {
        self.cells.iter().map(|c| c.lock().vm.context_count()).sum()
    }

    /// gRPC calls and streams in flight over all VMs.
    pub fn grpc_in_flight(&self) -> usize {
        self.cells.iter().map(|c| c.lock().grpc.len()).sum()
    }

    /// Guest linear memory over all VMs, in bytes.
    pub fn memory_size(&self) -> usize {
        self.cells.iter().map(|c| c.lock().vm.memory_size()).sum()
    }

    pub(crate) fn pick(&self) -> Arc<VmCell> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.cells.len();
        self.cells[i].clone()
    }
}

/// Dispatches the effects queued in `shared.vm`. Called with the VM's lock
/// held, after every guest callback.
pub(crate) fn dispatch(cell: &Arc<VmCell>, shared: &mut VmShared) {
    let effects: Vec<Effect> = shared.vm.drain_effects().collect();
    for effect in effects {
        match effect {
            Effect::ContinueStream { context, stream } => {
                signal(shared, context, Signal::Continue(stream));
            }
            Effect::LocalResponse { context, response } => {
                signal(shared, context, Signal::LocalReply(response));
            }
            Effect::CloseStream { context, .. } => signal(shared, context, Signal::Reset),
            Effect::HttpCall { token, request, .. } => {
                let weak = Arc::downgrade(cell);
                let clusters = cell.runtime.clusters.clone();
                tokio::spawn(async move {
                    let outcome = callout::http_call(&clusters, request).await;
                    if let Some(cell) = weak.upgrade() {
                        let mut shared = cell.lock();
                        if let Err(e) = shared.vm.on_http_call_response(token, outcome) {
                            log::debug!(target: "vessel::hyper", "http call response: {e}");
                        }
                        dispatch(&cell, &mut shared);
                    }
                });
            }
            Effect::GrpcCall { token, call, .. } => {
                grpc::start_call(cell, shared, token, call);
            }
            Effect::GrpcStream { token, call, .. } => {
                grpc::start_stream(cell, shared, token, call);
            }
            Effect::GrpcSend {
                token,
                message,
                end_stream,
            } => shared.grpc.send(token, &message, end_stream),
            Effect::GrpcClose { token } => shared.grpc.close(token),
            Effect::GrpcCancel { token } => shared.grpc.cancel(token),
            Effect::TickPeriod { period, .. } => {
                if let Some(t) = shared.tick.take() {
                    t.abort();
                }
                if let Some(period) = period {
                    shared.tick = Some(spawn_ticks(Arc::downgrade(cell), period));
                }
            }
            Effect::QueueReady { vm, root, token } => {
                if let Some(target) = cell.runtime.find(vm) {
                    tokio::spawn(async move {
                        let mut shared = target.lock();
                        if let Err(e) = shared.vm.on_queue_ready(root, token) {
                            log::debug!(target: "vessel::hyper", "queue ready: {e}");
                        }
                        dispatch(&target, &mut shared);
                    });
                }
            }
            Effect::ClearRouteCache { .. } => {}
        }
    }
    if shared.vm.is_failed() && !shared.failure_announced {
        // Streams paused on this VM would otherwise wait forever.
        shared.failure_announced = true;
        for tx in shared.streams.values() {
            let _ = tx.send(Signal::Failed);
        }
    }
}

fn signal(shared: &VmShared, context: ContextId, s: Signal) {
    if let Some(tx) = shared.streams.get(&context) {
        let _ = tx.send(s);
    }
}

fn spawn_ticks(cell: Weak<VmCell>, period: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(cell) = cell.upgrade() else { return };
            let mut shared = cell.lock();
            if shared.vm.is_failed() {
                return;
            }
            if let Err(e) = shared.vm.on_tick() {
                log::warn!(target: "vessel::hyper", "on_tick: {e}");
            }
            dispatch(&cell, &mut shared);
        }
    })
}
