//! VM pools, failure policies and effect dispatch (ABI reference §6.6).
//!
//! Each filter of a chain has a [`FilterPool`]: N VMs of one plugin (by
//! default one per runtime worker thread). A stream is pinned to one VM per
//! filter for its whole life; every guest callback takes that VM's lock for
//! the length of the callback only. After each callback the effects the
//! guest queued are dispatched here, still under the lock but without
//! calling the guest: a signal for a stream (continue, local reply, close;
//! [`StreamSignal::from_effect`]) goes to the task of the stream that owns
//! the context, callouts (HTTP, gRPC, Redis) start as tokio tasks, tick
//! periods (re)arm a timer, and queue notifications go to the VM that
//! registered the queue. gRPC calls and streams are tracked per VM (module
//! `grpc`) so that `proxy_grpc_send`, `proxy_grpc_close` and
//! `proxy_grpc_cancel` reach them.
//!
//! A trap (or a limit hit) fails the VM for good. Its streams then follow
//! the plugin's [`FailurePolicy`] (applied by [`vessel_host::HttpStream`];
//! the streams paused on the VM are told at once). Under
//! [`FailurePolicy::FailReload`] the pool replaces a failed VM with a fresh
//! one, built from the compiled module and the plugin configuration, when a
//! new stream picks it and its [`vessel_host::ReloadGate`] allows (the
//! [`ReloadBackoff`]); the failed VM lives on until its last stream ends.
//! Every failure and reload is counted in [`PluginStats`] and logged at
//! error level with its cause.
//!
//! Tiered compilation ([`vessel_host::EngineConfig::tiered`]): a pool built
//! from a [`Tier::Baseline`] (Winch) plugin serves at once;
//! [`FilterPool::upgrade`] (or [`FilterPool::optimize`], which compiles
//! first) later starts a full set of VMs from the Cranelift build and only
//! then swaps them into the slots. Streams in flight finish on the VMs they
//! were pinned to; those VMs are shut down when their last stream ends. If
//! the optimized build or a VM of it fails to start, the pool keeps its
//! baseline VMs, and the failure is counted (`tier_upgrade_failure`) and
//! logged.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use vessel_host::{
    ContextId, Effect, Hidden, HostEnv, IdHasher, LoadError, Plugin, ReloadDecision, ReloadGate,
    StreamSignal, Tier, Vm, VmError, VmInstanceId,
};
pub use vessel_host::{FailurePolicy, ReloadBackoff};

use crate::callout;
use crate::cluster::Clusters;
use crate::grpc::{self, GrpcCalls};
use crate::signal::SignalTx;

/// Per-plugin failure and reload counters. Names follow Envoy's
/// `wasm.<plugin>.*` plugin stats (`vm_reload_success`, `vm_reload_failure`,
/// `vm_reload_backoff`); `vm_failures` is vessel's own. Share one between
/// pools (e.g. across hot reloads) to keep counting.
#[derive(Debug, Default)]
pub struct PluginStats {
    vm_failures: AtomicU64,
    vm_reload_success: AtomicU64,
    vm_reload_failure: AtomicU64,
    vm_reload_backoff: AtomicU64,
    tier_upgrade_success: AtomicU64,
    tier_upgrade_failure: AtomicU64,
}

impl PluginStats {
    /// Pools switched from the baseline (Winch) VMs to optimized
    /// (Cranelift) ones ([`FilterPool::upgrade`]).
    pub fn tier_upgrade_success(&self) -> u64 {
        self.tier_upgrade_success.load(Ordering::Relaxed)
    }

    /// Upgrades that failed (the optimized build did not compile or a VM of
    /// it did not start); the pool kept its baseline VMs.
    pub fn tier_upgrade_failure(&self) -> u64 {
        self.tier_upgrade_failure.load(Ordering::Relaxed)
    }

    /// VMs that failed at run time (a trap or a limit hit).
    pub fn vm_failures(&self) -> u64 {
        self.vm_failures.load(Ordering::Relaxed)
    }

    /// Failed VMs replaced by a fresh one that started.
    pub fn vm_reload_success(&self) -> u64 {
        self.vm_reload_success.load(Ordering::Relaxed)
    }

    /// Reload attempts whose new VM did not start (instantiation, a trap
    /// in start-up, or `on_vm_start` / `on_configure` returning false).
    pub fn vm_reload_failure(&self) -> u64 {
        self.vm_reload_failure.load(Ordering::Relaxed)
    }

    /// Streams that found their VM failed and the reload held back by the
    /// backoff (they got a 503).
    pub fn vm_reload_backoff(&self) -> u64 {
        self.vm_reload_backoff.load(Ordering::Relaxed)
    }

    /// Every counter as `(stat name suffix, value)`, for `wasm.<plugin>.<suffix>`.
    pub fn counters(&self) -> [(&'static str, u64); 6] {
        [
            ("tier_upgrade_failure", self.tier_upgrade_failure()),
            ("tier_upgrade_success", self.tier_upgrade_success()),
            ("vm_failures", self.vm_failures()),
            ("vm_reload_backoff", self.vm_reload_backoff()),
            ("vm_reload_failure", self.vm_reload_failure()),
            ("vm_reload_success", self.vm_reload_success()),
        ]
    }
}

/// Why a plugin could not be made ready to serve: the module did not load,
/// or a VM did not start.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The module does not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A VM does not start (instantiation, a trap in start-up, or
    /// `on_vm_start` / `on_configure` returning false).
    #[error(transparent)]
    Start(#[from] VmError),
}

pub(crate) struct VmShared {
    pub(crate) vm: Vm,
    /// The stream contexts on this VM: where their signals go (the
    /// stream's queue), and the index of this VM's filter in their chain.
    pub(crate) streams: HashMap<ContextId, (SignalTx, usize), BuildHasherDefault<IdHasher>>,
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
        // A VM retired by a hot reload (or a dropped pool): end its root
        // context as Envoy does when a plugin goes away (on_done, on_delete).
        // What it queues now is not carried out.
        if !self.vm.is_failed()
            && let Err(e) = self.vm.shutdown()
        {
            log::debug!(target: "vessel::hyper", "shutting a VM down: {e}");
        }
    }
}

/// What the VMs of one pool share: the plugin's name, policy and counters.
#[derive(Debug)]
pub(crate) struct PoolMeta {
    name: String,
    policy: FailurePolicy,
    stats: Arc<PluginStats>,
    skip_on_failure: bool,
}

/// One VM behind a lock.
pub(crate) struct VmCell {
    pub(crate) inner: Mutex<VmShared>,
    pub(crate) runtime: Arc<Runtime>,
    meta: Arc<PoolMeta>,
    /// Set once the VM failed (read without the lock by [`FilterPool::pick`]).
    failed: AtomicBool,
    /// Set when a stream finished on this VM while it worked.
    served: AtomicBool,
}

impl VmCell {
    pub(crate) fn lock(&self) -> MutexGuard<'_, VmShared> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that a stream finished on this VM; called as it ends.
    pub(crate) fn stream_finished(&self, vm_ok: bool) {
        if vm_ok {
            self.served.store(true, Ordering::Relaxed);
        }
    }

    /// Starts one VM of `plugin`, registers it and dispatches what its
    /// start-up queued.
    fn start(
        plugin: &Plugin,
        env: &HostEnv,
        runtime: &Arc<Runtime>,
        meta: &Arc<PoolMeta>,
    ) -> Result<Arc<Self>, VmError> {
        let vm = Vm::new(plugin, env)?;
        let id = vm.instance_id();
        let cell = Arc::new(VmCell {
            inner: Mutex::new(VmShared {
                vm,
                streams: HashMap::default(),
                tick: None,
                failure_announced: false,
                grpc: GrpcCalls::default(),
            }),
            runtime: runtime.clone(),
            meta: meta.clone(),
            failed: AtomicBool::new(false),
            served: AtomicBool::new(false),
        });
        runtime.register(id, &cell);
        {
            let mut shared = cell.lock();
            dispatch(&cell, &mut shared);
        }
        Ok(cell)
    }
}

/// Process-wide adapter state: clusters and the VM registry that routes
/// queue notifications.
pub struct Runtime {
    /// The callout clusters; replaced whole by [`Runtime::update_clusters`]
    /// (a callout keeps the set it started with).
    clusters: std::sync::RwLock<Arc<Clusters>>,
    vms: Mutex<HashMap<VmInstanceId, Weak<VmCell>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("clusters", &self.clusters())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime with these callout clusters.
    pub fn new(clusters: Clusters) -> Arc<Self> {
        Arc::new(Self {
            clusters: std::sync::RwLock::new(Arc::new(clusters)),
            vms: Mutex::default(),
        })
    }

    /// The callout clusters as they are now.
    pub(crate) fn clusters(&self) -> Arc<Clusters> {
        self.clusters
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Changes the set of callout clusters while filters run: each cluster
    /// of `upsert` is added, or replaces the one of its name (a new client,
    /// its configured endpoints, no idle connections); each name of
    /// `remove` is removed. Every other cluster is kept as it is (client,
    /// endpoints set by [`Runtime::set_cluster_endpoints`], idle Redis
    /// connections). Callouts already started finish on the clusters they
    /// started with; new ones, and [`Runtime::knows_cluster`], see the new
    /// set.
    pub fn update_clusters(
        &self,
        upsert: impl IntoIterator<Item = crate::Cluster>,
        remove: impl IntoIterator<Item = impl AsRef<str>>,
    ) {
        let mut guard = self
            .clusters
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = guard.share();
        for name in remove {
            next.remove(name.as_ref());
        }
        for c in upsert {
            next.add(c);
        }
        *guard = Arc::new(next);
    }

    /// Replaces the endpoints of callout cluster `name` (e.g. after a DNS
    /// refresh). Returns false if there is no such cluster.
    pub fn set_cluster_endpoints(&self, name: &str, endpoints: Vec<std::net::SocketAddr>) -> bool {
        self.clusters().set_endpoints(name, endpoints)
    }

    /// The endpoints callout cluster `name` uses now.
    pub fn cluster_endpoints(&self, name: &str) -> Option<Vec<std::net::SocketAddr>> {
        self.clusters().endpoints(name)
    }

    /// True if callouts may use `cluster`.
    pub fn knows_cluster(&self, cluster: &str) -> bool {
        self.clusters().contains(cluster)
    }

    fn register(&self, id: VmInstanceId, cell: &Arc<VmCell>) {
        let mut vms = self.lock_vms();
        // Forget VMs that are gone, so reloads do not grow the map.
        vms.retain(|_, w| w.strong_count() > 0);
        vms.insert(id, Arc::downgrade(cell));
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

/// One VM slot of a pool: its current VM and, under `FAIL_RELOAD`, its
/// reload state.
struct VmSlot {
    cell: Arc<VmCell>,
    gate: Option<ReloadGate>,
}

/// The VMs of one filter.
pub struct FilterPool {
    /// The plugin new VMs start from: the baseline build until
    /// [`FilterPool::upgrade`] swaps in the optimized one.
    plugin: Mutex<Plugin>,
    /// Held by [`FilterPool::upgrade`], so that two upgrades never race.
    upgrading: Mutex<()>,
    env: HostEnv,
    runtime: Arc<Runtime>,
    meta: Arc<PoolMeta>,
    slots: Vec<Mutex<VmSlot>>,
    next: AtomicU64,
}

impl std::fmt::Debug for FilterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterPool")
            .field("plugin", &self.meta.name)
            .field("vms", &self.slots.len())
            .field("policy", &self.meta.policy)
            .finish()
    }
}

/// Builds a [`FilterPool`]; see [`FilterPool::builder`].
#[derive(Debug)]
pub struct FilterPoolBuilder<'a> {
    plugin: &'a Plugin,
    env: &'a HostEnv,
    runtime: &'a Arc<Runtime>,
    vms: usize,
    policy: FailurePolicy,
    stats: Option<Arc<PluginStats>>,
    skip_on_failure: bool,
    hidden: Option<Hidden>,
}

impl FilterPoolBuilder<'_> {
    /// The request and response headers and properties the plugin's VMs
    /// must never see, in place of the plugin's own
    /// [`PluginConfig::hidden`](vessel_host::PluginConfig::hidden) (see
    /// [`vessel_host::hidden`]). The hidden values still reach the
    /// upstream and the client unchanged, and the other filters of a chain
    /// still see them unless they hide them too.
    pub fn hidden(mut self, hidden: Hidden) -> Self {
        self.hidden = Some(hidden);
        self
    }

    /// Marks the filter a routing policy with a native fallback: when it
    /// fails, a stream skips it instead of failing
    /// ([`StreamConfig::skip_on_failure`](vessel_host::StreamConfig::skip_on_failure));
    /// the upstream request then carries [`SkippedFilters`](crate::SkippedFilters)
    /// so the embedder's router can fall back. The failure policy still
    /// decides whether a failed VM is replaced (`FAIL_RELOAD`).
    pub fn skip_on_failure(mut self, skip: bool) -> Self {
        self.skip_on_failure = skip;
        self
    }

    /// Number of VMs (at least 1; default 1).
    pub fn vms(mut self, vms: usize) -> Self {
        self.vms = vms.max(1);
        self
    }

    /// The failure policy (default [`FailurePolicy::FailClosed`]).
    pub fn policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Counts into `stats` instead of new counters (to keep counting across
    /// hot reloads of the same plugin).
    pub fn stats(mut self, stats: Arc<PluginStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Starts the VMs. Must run inside a tokio runtime (ticks and callouts
    /// the filter starts during start-up are spawned on it).
    pub fn build(self) -> Result<Arc<FilterPool>, VmError> {
        let plugin = match self.hidden {
            Some(hidden) => self.plugin.with_config(vessel_host::PluginConfig {
                hidden,
                ..self.plugin.config().clone()
            }),
            None => self.plugin.clone(),
        };
        let meta = Arc::new(PoolMeta {
            name: plugin.config().name.clone(),
            policy: self.policy,
            stats: self.stats.unwrap_or_default(),
            skip_on_failure: self.skip_on_failure,
        });
        let now = Instant::now();
        let mut slots = Vec::with_capacity(self.vms);
        for _ in 0..self.vms {
            let cell = VmCell::start(&plugin, self.env, self.runtime, &meta)?;
            let gate = match self.policy {
                FailurePolicy::FailReload(backoff) => Some(ReloadGate::new(backoff, now)),
                _ => None,
            };
            slots.push(Mutex::new(VmSlot { cell, gate }));
        }
        Ok(Arc::new(FilterPool {
            plugin: Mutex::new(plugin),
            upgrading: Mutex::new(()),
            env: self.env.clone(),
            runtime: self.runtime.clone(),
            meta,
            slots,
            next: AtomicU64::new(0),
        }))
    }
}

impl FilterPool {
    /// Starts `vms` VMs of `plugin`. Must run inside a tokio runtime (ticks
    /// and callouts the filter starts during start-up are spawned on it).
    /// Same as `FilterPool::builder(..).vms(vms).policy(policy).build()`.
    pub fn new(
        plugin: &Plugin,
        env: &HostEnv,
        runtime: &Arc<Runtime>,
        vms: usize,
        policy: FailurePolicy,
    ) -> Result<Arc<Self>, VmError> {
        Self::builder(plugin, env, runtime)
            .vms(vms)
            .policy(policy)
            .build()
    }

    /// A builder for a pool of `plugin`.
    pub fn builder<'a>(
        plugin: &'a Plugin,
        env: &'a HostEnv,
        runtime: &'a Arc<Runtime>,
    ) -> FilterPoolBuilder<'a> {
        FilterPoolBuilder {
            plugin,
            env,
            runtime,
            vms: 1,
            policy: FailurePolicy::default(),
            stats: None,
            skip_on_failure: false,
            hidden: None,
        }
    }

    /// The plugin new VMs start from (cheap to clone): after a successful
    /// [`upgrade`](Self::upgrade), the optimized build.
    pub fn plugin(&self) -> Plugin {
        lock_plugin(&self.plugin).clone()
    }

    /// The compiler tier of the pool's current VMs.
    pub fn tier(&self) -> Tier {
        lock_plugin(&self.plugin).tier()
    }

    /// Compiles the optimized (Cranelift) build of a baseline pool's plugin
    /// ([`Plugin::optimized`], which also stores it in the module cache)
    /// and [`upgrade`](Self::upgrade)s to it. `Ok(false)`: the pool is
    /// already optimized. Blocks for the compile (seconds for a large
    /// plugin): call it from `tokio::task::spawn_blocking` (the new VMs'
    /// start-up spawns on the runtime, so a runtime must be current).
    ///
    /// # Errors
    /// The compile's or a new VM's error; the pool keeps its baseline VMs
    /// and counts `tier_upgrade_failure`.
    pub fn optimize(&self) -> Result<bool, PluginError> {
        self.optimize_with(self.plugin().optimized())
    }

    /// [`optimize`](Self::optimize) split in two for an embedder that
    /// compiles without holding the pool (so that a pool dropped meanwhile,
    /// by a reload, is not kept alive): `built` is what
    /// `pool.plugin().optimized()` returned. An error is counted
    /// (`tier_upgrade_failure`) and logged like a VM that does not start.
    ///
    /// # Errors
    /// `built`'s error, or a new VM's.
    pub fn optimize_with(
        &self,
        built: Result<Option<Plugin>, LoadError>,
    ) -> Result<bool, PluginError> {
        match built {
            Ok(Some(optimized)) => self.upgrade(&optimized),
            Ok(None) => Ok(false),
            Err(e) => {
                self.upgrade_failed(&e);
                Err(e.into())
            }
        }
    }

    /// Switches the pool to `optimized` (a build of the same module and
    /// configuration, from [`Plugin::optimized`]): starts a VM of it for
    /// every slot first (`on_vm_start`, `on_configure`), then swaps them in.
    /// New streams go to the new VMs; streams in flight finish on the old
    /// ones, which shut down when their last stream ends. `Ok(false)`: the
    /// pool is already optimized, or `optimized` is not (nothing changes).
    ///
    /// # Errors
    /// A new VM did not start: the pool keeps every baseline VM, counts
    /// `tier_upgrade_failure` and logs the error.
    pub fn upgrade(&self, optimized: &Plugin) -> Result<bool, PluginError> {
        let _one = self
            .upgrading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.tier() == Tier::Optimized || optimized.tier() != Tier::Optimized {
            return Ok(false);
        }
        let mut cells = Vec::with_capacity(self.slots.len());
        for _ in 0..self.slots.len() {
            match VmCell::start(optimized, &self.env, &self.runtime, &self.meta) {
                Ok(cell) => cells.push(cell),
                Err(e) => {
                    self.upgrade_failed(&e);
                    return Err(e.into());
                }
            }
        }
        *lock_plugin(&self.plugin) = optimized.clone();
        for (slot, cell) in self.slots.iter().zip(cells) {
            // The old cell lives on in the streams pinned to it.
            lock(slot).cell = cell;
        }
        self.meta
            .stats
            .tier_upgrade_success
            .fetch_add(1, Ordering::Relaxed);
        log::info!(
            target: "vessel::hyper",
            "wasm plugin `{}`: {} optimized VM(s) replace the baseline ones",
            self.meta.name,
            self.slots.len()
        );
        Ok(true)
    }

    fn upgrade_failed(&self, e: &dyn std::fmt::Display) {
        self.meta
            .stats
            .tier_upgrade_failure
            .fetch_add(1, Ordering::Relaxed);
        log::error!(
            target: "vessel::hyper",
            "wasm plugin `{}`: the optimized build failed, the baseline VMs go on serving: {e}",
            self.meta.name
        );
    }

    /// The failure policy.
    pub fn policy(&self) -> FailurePolicy {
        self.meta.policy
    }

    /// Whether a stream skips this filter when it fails
    /// ([`FilterPoolBuilder::skip_on_failure`]).
    pub fn skips_on_failure(&self) -> bool {
        self.meta.skip_on_failure
    }

    /// The failure and reload counters.
    pub fn stats(&self) -> &Arc<PluginStats> {
        &self.meta.stats
    }

    /// Number of VMs.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True if the pool has no VMs (never: a pool has at least one).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The current VM of every slot.
    fn cells(&self) -> Vec<Arc<VmCell>> {
        self.slots.iter().map(|s| lock(s).cell.clone()).collect()
    }

    /// Live contexts over the current VMs (root contexts included).
    pub fn context_count(&self) -> usize {
        self.cells()
            .iter()
            .map(|c| c.lock().vm.context_count())
            .sum()
    }

    /// gRPC calls and streams in flight over the current VMs.
    pub fn grpc_in_flight(&self) -> usize {
        self.cells().iter().map(|c| c.lock().grpc.len()).sum()
    }

    /// Guest linear memory over the current VMs, in bytes.
    pub fn memory_size(&self) -> usize {
        self.cells().iter().map(|c| c.lock().vm.memory_size()).sum()
    }

    /// Number of current VMs that have failed (and are not replaced yet).
    pub fn failed_vms(&self) -> usize {
        self.cells()
            .iter()
            .filter(|c| c.failed.load(Ordering::Relaxed))
            .count()
    }

    /// The VM for a new stream: the next slot's, round-robin. Under
    /// `FailReload` a failed one is replaced first if the backoff allows.
    pub(crate) fn pick(&self) -> Arc<VmCell> {
        let i = (self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len() as u64) as usize;
        let mut slot = lock(&self.slots[i]);
        if !slot.cell.failed.load(Ordering::Acquire) {
            return slot.cell.clone();
        }
        let served = slot.cell.served.swap(false, Ordering::Relaxed);
        let Some(gate) = slot.gate.as_mut() else {
            return slot.cell.clone();
        };
        if served {
            // The failed VM had worked: no query of death.
            gate.served();
        }
        if !matches!(gate.decide(Instant::now()), ReloadDecision::Reload) {
            self.meta
                .stats
                .vm_reload_backoff
                .fetch_add(1, Ordering::Relaxed);
            return slot.cell.clone();
        }
        let next_wait = gate.next_wait();
        let plugin = lock_plugin(&self.plugin).clone();
        match VmCell::start(&plugin, &self.env, &self.runtime, &self.meta) {
            Ok(cell) => {
                self.meta
                    .stats
                    .vm_reload_success
                    .fetch_add(1, Ordering::Relaxed);
                log::info!(
                    target: "vessel::hyper",
                    "wasm plugin `{}`: a new VM replaces the failed one (FAIL_RELOAD)",
                    self.meta.name
                );
                slot.cell = cell;
            }
            Err(e) => {
                self.meta
                    .stats
                    .vm_reload_failure
                    .fetch_add(1, Ordering::Relaxed);
                log::error!(
                    target: "vessel::hyper",
                    "wasm plugin `{}`: reloading the failed VM failed, next attempt in {:?} \
                     at the earliest: {e}",
                    self.meta.name,
                    next_wait
                );
            }
        }
        slot.cell.clone()
    }
}

fn lock_plugin(plugin: &Mutex<Plugin>) -> MutexGuard<'_, Plugin> {
    plugin
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock(slot: &Mutex<VmSlot>) -> MutexGuard<'_, VmSlot> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// After a callback: if the VM just failed, count and log it once, mark the
/// cell, and tell the streams waiting on it (they would otherwise wait
/// forever) to follow the policy.
fn announce_failure(cell: &Arc<VmCell>, shared: &mut VmShared) {
    if shared.failure_announced {
        return;
    }
    let Some(error) = shared.vm.failure() else {
        return;
    };
    shared.failure_announced = true;
    cell.failed.store(true, Ordering::Release);
    let meta = &cell.meta;
    meta.stats.vm_failures.fetch_add(1, Ordering::Relaxed);
    let (callback, cause) = match error.trap() {
        Some(t) => (t.callback, t.message.as_str()),
        None => ("?", ""),
    };
    let then = match meta.policy {
        FailurePolicy::FailOpen => {
            "its streams get a 503 (those waiting on it pass on); every new stream skips the filter"
        }
        FailurePolicy::FailReload(_) => {
            "its streams get a 503; new streams get a new VM when the backoff allows"
        }
        _ => "its streams and every new stream get a 503",
    };
    log::error!(
        target: "vessel::hyper",
        "wasm plugin `{}`: VM failed in `{callback}` ({}): {cause}; {then}",
        meta.name,
        meta.policy.envoy_name(),
    );
    for (tx, filter) in shared.streams.values() {
        tx.send((*filter, StreamSignal::VmFailed));
    }
}

/// Dispatches the effects queued in `shared.vm`. Called with the VM's lock
/// held, after every guest callback.
#[inline]
pub(crate) fn dispatch(cell: &Arc<VmCell>, shared: &mut VmShared) {
    // After most calls there is nothing to do: decided here, inlined.
    if shared.vm.has_effects() || (!shared.failure_announced && shared.vm.is_failed()) {
        dispatch_queued(cell, shared);
    }
}

/// [`dispatch`] when the VM queued effects or failed.
#[inline(never)]
fn dispatch_queued(cell: &Arc<VmCell>, shared: &mut VmShared) {
    if shared.vm.has_effects() {
        let effects: Vec<Effect> = shared.vm.drain_effects().collect();
        for effect in effects {
            carry_out(cell, shared, effect);
        }
    }
    announce_failure(cell, shared);
}

/// Carries out one effect: a signal for a stream goes to the stream that
/// owns the context, the rest starts here.
fn carry_out(cell: &Arc<VmCell>, shared: &mut VmShared, effect: Effect) {
    let effect = match StreamSignal::from_effect(effect) {
        Ok((context, signal)) => {
            // A stream that already ended has nothing left to signal.
            if let Some((tx, filter)) = shared.streams.get(&context) {
                tx.send((*filter, signal));
            }
            return;
        }
        Err(effect) => effect,
    };
    match effect {
        Effect::HttpCall { token, request, .. } => {
            let weak = Arc::downgrade(cell);
            let clusters = cell.runtime.clusters();
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
        Effect::RedisCall { token, call, .. } => {
            let weak = Arc::downgrade(cell);
            let clusters = cell.runtime.clusters();
            tokio::spawn(async move {
                let outcome = crate::redis::cluster_call(&clusters, &call).await;
                if let Some(cell) = weak.upgrade() {
                    let mut shared = cell.lock();
                    if let Err(e) = shared.vm.on_redis_call_response(token, outcome) {
                        log::debug!(target: "vessel::hyper", "redis call response: {e}");
                    }
                    dispatch(&cell, &mut shared);
                }
            });
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
        // Stream signals were routed above. `Effect` is non-exhaustive: a
        // newer vessel-host may ask for something this pump cannot carry
        // out. Say so; never guess.
        other => log::error!(
            target: "vessel::hyper",
            "wasm plugin `{}`: vessel-hyper cannot carry out {other:?}; ignored",
            cell.meta.name,
        ),
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
