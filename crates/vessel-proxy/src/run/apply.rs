//! Replacing what `vessel run` serves while it serves: [`Reloader::apply`]
//! takes a whole new [`Bootstrap`] (from the config file on a reload, or
//! assembled from xDS resources) and moves the running proxy to it.
//!
//! Everything that can fail is built first, while the old config serves:
//! new and changed clusters (names resolved, TLS, the first health-check
//! round), wasm filters (compiled, started, configured; a filter whose spec
//! and module bytes did not change keeps its pool), listeners' TLS
//! contexts, and the sockets of new listeners and of listeners whose
//! address changed. Any error leaves everything as it was. Then, with
//! nothing left that can fail, the new config is switched in:
//!
//! * clusters by name: an unchanged one (`==` config) keeps its upstream,
//!   balancer state and tasks; a changed one is replaced, a removed one
//!   stopped; the callout clusters ([`vessel_hyper::Runtime`]), the
//!   `vessel.cluster.<name>.endpoints` property and `known_clusters` follow;
//! * listeners by name: one whose shape is unchanged (address, buffer
//!   limit, TLS inspector, and per chain its match, TLS, network filters
//!   and their code, codec and stat prefix, or tcp_proxy and its cluster)
//!   keeps its socket and chains, and gets its new routes and wasm filters
//!   in place (streams in flight finish on the old VMs); any other change
//!   builds new chains: new connections take them, connections in flight
//!   finish on the old ones, which are drained (bounded by the drain
//!   timeout); a new address is bound before the old socket closes; a new
//!   listener is bound and accepts; a removed one stops accepting and
//!   drains.
//!
//! Only the admin address, and fuel metering once the engine runs without
//! it, need a restart ([`restart_required`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vessel_hyper::{FilterPool, VesselLayer};

use super::access::ListenerStats;
use super::admin::{AdminView, SharedView};
use super::clusters::LiveCluster;
use super::lb::LbRegistry;
use super::router::{PolicyFallbacks, Router, Upstreams};
use super::tcp::{TcpProxyServe, TcpStats};
use super::{
    ChainServe, FilterHost, ListenerServe, ReloadCounters, ReloadError, RunError, Stop,
    accept_loop, bind, build_filter, filter_label, http_chain, is_policy, needs_fuel, read_code,
    reconfigure_filter, tls,
};
use crate::config::{self, Bootstrap, ConfigError, Terminal, WasmCode, WasmFilter};

/// One wasm filter as it serves: what it was built from, and its pool.
pub(super) struct LiveFilter {
    pub(super) spec: WasmFilter,
    pub(super) code: Arc<Vec<u8>>,
    pub(super) pool: Arc<FilterPool>,
}

/// One HTTP connection manager's swappable parts.
pub(super) struct LiveHttp {
    pub(super) layer: VesselLayer,
    pub(super) routes: Arc<RwLock<Router>>,
    pub(super) filters: Vec<LiveFilter>,
    pub(super) stats: Arc<ListenerStats>,
    /// The connection manager's `stat_prefix`.
    pub(super) stat_prefix: String,
}

/// A listener's chains as they serve, each list in
/// [`config::Listener::chains`] order.
#[derive(Default)]
struct Chains {
    network: Vec<Vec<LiveFilter>>,
    http: Vec<Option<LiveHttp>>,
    tcp: Vec<Option<Arc<TcpProxyServe>>>,
    tls: Vec<Option<Arc<tls::ServerTls>>>,
}

/// One listener as it serves.
struct LiveListener {
    config: config::Listener,
    chains: Chains,
    /// Kept to hand the socket over to a listener of another name that
    /// takes the address in the same update.
    socket: Arc<TcpListener>,
    local: SocketAddr,
    /// The chains new connections take.
    serve: watch::Sender<Arc<ListenerServe>>,
    /// Stop accepting and drain.
    stop: watch::Sender<Stop>,
    task: JoinHandle<()>,
}

impl LiveListener {
    /// Starts accepting on `socket` with `serve`.
    fn spawn(
        config: &config::Listener,
        chains: Chains,
        serve: Arc<ListenerServe>,
        socket: Arc<TcpListener>,
        drain: Duration,
    ) -> Self {
        let local = socket.local_addr().unwrap_or(config.addr);
        log::info!("listener `{}` on {local}", config.name);
        let (serve, serve_rx) = watch::channel(serve);
        let (stop, stop_rx) = watch::channel(Stop::Serve);
        let task = tokio::spawn(accept_loop(socket.clone(), serve_rx, stop_rx, drain));
        Self {
            config: config.clone(),
            chains,
            socket,
            local,
            serve,
            stop,
            task,
        }
    }
}

/// The config that serves.
pub(super) struct Live {
    boot: Bootstrap,
    /// In `boot.clusters` order.
    clusters: Vec<Arc<LiveCluster>>,
    /// In `boot.listeners` order.
    listeners: Vec<LiveListener>,
    /// Counters by stat prefix, kept for the listeners that use it next.
    http_stats: HashMap<String, Arc<ListenerStats>>,
    tcp_stats: HashMap<String, Arc<TcpStats>>,
    /// Accept loops of removed or moved listeners, draining.
    draining: Vec<JoinHandle<()>>,
    /// Nothing serves yet (start-up).
    empty: bool,
    /// Shut down: no more updates.
    closed: bool,
}

/// Applies configs: see the module docs. One per `vessel run`.
pub(crate) struct Reloader {
    path: PathBuf,
    host: FilterHost,
    fallbacks: PolicyFallbacks,
    lb: LbRegistry,
    view: SharedView,
    access_log: bool,
    drain: Duration,
    live: tokio::sync::Mutex<Live>,
    counters: Arc<ReloadCounters>,
}

/// What [`Reloader::new`] needs besides the filter host.
pub(super) struct ReloaderParts {
    pub(super) path: PathBuf,
    pub(super) fallbacks: PolicyFallbacks,
    pub(super) lb: LbRegistry,
    pub(super) view: SharedView,
    pub(super) access_log: bool,
    pub(super) drain: Duration,
    pub(super) counters: Arc<ReloadCounters>,
    pub(super) admin: Option<SocketAddr>,
}

/// A listener of the new config, built.
enum Staged {
    /// Same shape: per chain, the new router and wasm filters of its HTTP
    /// connection manager, swapped in place.
    InPlace(Vec<Option<(Router, Vec<LiveFilter>)>>),
    /// New chains on the listener's socket.
    Swap(Chains, Arc<ListenerServe>),
    /// New chains on a new socket (a new listener, or a new address).
    Bind(Chains, Arc<ListenerServe>, Arc<TcpListener>),
}

/// Counts for the summary.
#[derive(Default)]
struct Counts {
    filters_rebuilt: usize,
    filters_kept: usize,
}

/// Builds the listeners of a new config against the old ones.
struct Stage<'a> {
    host: &'a FilterHost,
    boot: &'a Bootstrap,
    node_same: bool,
    upstreams: &'a Upstreams,
    fallbacks: &'a PolicyFallbacks,
    access_log: bool,
    old_http_stats: &'a HashMap<String, Arc<ListenerStats>>,
    old_tcp_stats: &'a HashMap<String, Arc<TcpStats>>,
    http_stats: HashMap<String, Arc<ListenerStats>>,
    tcp_stats: HashMap<String, Arc<TcpStats>>,
    counts: Counts,
}

impl Stage<'_> {
    /// `f` with `code`: `old`'s pool when nothing it was built from
    /// changed, else a new one (from `old`'s compiled module when the code
    /// is the same).
    fn filter(
        &mut self,
        f: &WasmFilter,
        code: Arc<Vec<u8>>,
        old: Option<&LiveFilter>,
        label: &str,
        skip: bool,
    ) -> Result<LiveFilter, RunError> {
        if let Some(o) = old.filter(|o| {
            self.node_same && o.spec == *f && *o.code == *code && o.pool.skips_on_failure() == skip
        }) {
            self.counts.filters_kept += 1;
            return Ok(LiveFilter {
                spec: f.clone(),
                code: o.code.clone(),
                pool: o.pool.clone(),
            });
        }
        self.counts.filters_rebuilt += 1;
        match old.filter(|o| *o.code == *code) {
            Some(o) => reconfigure_filter(self.host, f, o, self.boot, label, skip),
            None => build_filter(self.host, f, code, self.boot, label, skip),
        }
    }

    /// The wasm filters of HTTP connection manager `h` (chain `ci` of `l`).
    fn http_filters(
        &mut self,
        l: &config::Listener,
        ci: usize,
        h: &config::HttpManager,
        old: Option<&LiveHttp>,
    ) -> Result<Vec<LiveFilter>, RunError> {
        let mut out = Vec::new();
        for (fi, f) in h.wasm_filters.iter().enumerate() {
            let label = filter_label(l, ci, fi, f);
            let code = Arc::new(read_code(f, &label)?);
            let old = old.and_then(|o| o.filters.get(fi));
            out.push(self.filter(f, code, old, &label, is_policy(h, f))?);
        }
        Ok(out)
    }

    fn router(&self, h: &config::HttpManager) -> Router {
        Router::new(
            h.routes.clone(),
            self.upstreams.clone(),
            self.fallbacks.clone(),
        )
        .suppress_envoy_headers(h.suppress_envoy_headers)
    }

    fn http_stats(&mut self, prefix: &str) -> Arc<ListenerStats> {
        let stats = self
            .http_stats
            .get(prefix)
            .or_else(|| self.old_http_stats.get(prefix))
            .cloned()
            .unwrap_or_else(|| Arc::new(ListenerStats::new(prefix)));
        self.http_stats.insert(prefix.to_owned(), stats.clone());
        stats
    }

    fn tcp_stats(&mut self, prefix: &str) -> Arc<TcpStats> {
        let stats = self
            .tcp_stats
            .get(prefix)
            .or_else(|| self.old_tcp_stats.get(prefix))
            .cloned()
            .unwrap_or_else(|| Arc::new(TcpStats::new(prefix)));
        self.tcp_stats.insert(prefix.to_owned(), stats.clone());
        stats
    }

    /// Whether `l` can keep `old`'s socket and chains (only its routes and
    /// HTTP wasm filters differ); `net_codes` are `l`'s network filters'
    /// module bytes.
    fn same_shape(
        &self,
        old: &LiveListener,
        l: &config::Listener,
        net_codes: &[Vec<Arc<Vec<u8>>>],
    ) -> bool {
        let o = &old.config;
        let has_network = l.chains().any(|c| !c.network_filters.is_empty());
        o.addr == l.addr
            && o.buffer_limit == l.buffer_limit
            && o.tls_inspector == l.tls_inspector
            && (self.node_same || !has_network)
            && o.filter_chains.len() == l.filter_chains.len()
            && o.default_filter_chain.is_some() == l.default_filter_chain.is_some()
            && o.chains().zip(l.chains()).enumerate().all(|(ci, (a, b))| {
                let same_terminal = match (&a.terminal, &b.terminal) {
                    (Terminal::Http(x), Terminal::Http(y)) => {
                        x.codec == y.codec && x.stat_prefix == y.stat_prefix
                    }
                    (Terminal::TcpProxy(x), Terminal::TcpProxy(y)) => {
                        x == y
                            && old
                                .chains
                                .tcp
                                .get(ci)
                                .cloned()
                                .flatten()
                                .zip(self.upstreams.get(&y.cluster))
                                .is_some_and(|(t, u)| Arc::ptr_eq(&t.upstream, u))
                    }
                    _ => false,
                };
                let same_code = old.chains.network.get(ci).is_some_and(|fs| {
                    fs.len() == net_codes[ci].len()
                        && fs.iter().zip(&net_codes[ci]).all(|(f, c)| *f.code == **c)
                });
                a.matcher == b.matcher
                    && a.tls == b.tls
                    && a.network_filters == b.network_filters
                    && same_code
                    && same_terminal
            })
    }

    /// Builds listener `l` of the new config; `old`: the serving listener
    /// of the same name.
    fn listener(
        &mut self,
        l: &config::Listener,
        old: Option<&LiveListener>,
    ) -> Result<Staged, RunError> {
        let mut net_codes = Vec::new();
        for (ci, c) in l.chains().enumerate() {
            let mut codes = Vec::new();
            for (fi, f) in c.network_filters.iter().enumerate() {
                codes.push(Arc::new(read_code(f, &network_label(l, ci, fi, f))?));
            }
            net_codes.push(codes);
        }
        if let Some(o) = old
            && self.same_shape(o, l, &net_codes)
        {
            let mut http = Vec::new();
            for (ci, c) in l.chains().enumerate() {
                http.push(match &c.terminal {
                    Terminal::Http(h) => {
                        let old = o.chains.http.get(ci).and_then(Option::as_ref);
                        Some((self.router(h), self.http_filters(l, ci, h, old)?))
                    }
                    Terminal::TcpProxy(_) => None,
                });
            }
            return Ok(Staged::InPlace(http));
        }
        let mut chains = Chains::default();
        let mut serves = Vec::new();
        for (ci, c) in l.chains().enumerate() {
            let old_tls = old
                .filter(|o| o.config.chains().nth(ci).is_some_and(|oc| oc.tls == c.tls))
                .and_then(|o| o.chains.tls.get(ci).cloned().flatten());
            let tls = match (&c.tls, old_tls) {
                (None, _) => None,
                (Some(_), Some(t)) => Some(t),
                (Some(t), None) => Some(Arc::new(tls::ServerTls::new(t).map_err(|source| {
                    RunError::Tls {
                        context: format!("listener `{}` filter chain #{ci}", l.name),
                        source,
                    }
                })?)),
            };
            let mut network = Vec::new();
            for (fi, f) in c.network_filters.iter().enumerate() {
                let old = old.and_then(|o| o.chains.network.get(ci)?.get(fi));
                let label = network_label(l, ci, fi, f);
                network.push(self.filter(f, net_codes[ci][fi].clone(), old, &label, false)?);
            }
            let pools: Vec<Arc<FilterPool>> = network.iter().map(|f| f.pool.clone()).collect();
            match &c.terminal {
                Terminal::Http(h) => {
                    let old = old.and_then(|o| o.chains.http.get(ci)?.as_ref());
                    let filters = self.http_filters(l, ci, h, old)?;
                    let stats = self.http_stats(&h.stat_prefix);
                    let (mut serve, live) =
                        http_chain(l, h, filters, self.router(h), stats, self.access_log);
                    serve.network = pools;
                    serves.push(ChainServe::Http(serve));
                    chains.http.push(Some(live));
                    chains.tcp.push(None);
                }
                Terminal::TcpProxy(t) => {
                    let upstream = self.upstreams.get(&t.cluster).cloned().ok_or_else(|| {
                        RunError::Config(ConfigError::Field {
                            kind: config::ErrorKind::UnknownReference,
                            path: format!("listener `{}` filter chain #{ci}", l.name),
                            message: format!("unknown cluster `{}`", t.cluster),
                        })
                    })?;
                    let serve = Arc::new(TcpProxyServe {
                        config: t.clone(),
                        upstream,
                        stats: self.tcp_stats(&t.stat_prefix),
                        filters: pools,
                        buffer_limit: l.buffer_limit,
                    });
                    serves.push(ChainServe::Tcp(serve.clone()));
                    chains.http.push(None);
                    chains.tcp.push(Some(serve));
                }
            }
            chains.network.push(network);
            chains.tls.push(tls);
        }
        let serve = Arc::new(ListenerServe {
            name: l.name.clone(),
            matcher: Some(l.clone()),
            chains: serves,
            inspect: l.needs_server_name() || chains.tls.iter().any(Option::is_some),
            tls: chains.tls.clone(),
        });
        Ok(Staged::Swap(chains, serve))
    }
}

/// How logs and errors name network wasm filter `fi` of chain `ci` of `l`.
fn network_label(l: &config::Listener, ci: usize, fi: usize, f: &WasmFilter) -> String {
    format!(
        "listener `{}` filter chain #{ci} network wasm filter #{fi} `{}`",
        l.name, f.name
    )
}

/// A build error as a refusal: a filter's, or another part's.
fn refused(e: RunError) -> ReloadError {
    match e {
        RunError::ReadWasm { .. } | RunError::Load { .. } | RunError::Vm { .. } => {
            ReloadError::Filter(e)
        }
        RunError::Config(c) => ReloadError::Config(c),
        other => ReloadError::Build(other),
    }
}

impl Reloader {
    pub(super) fn new(host: FilterHost, parts: ReloaderParts) -> Self {
        Self {
            path: parts.path,
            host,
            fallbacks: parts.fallbacks,
            lb: parts.lb,
            view: parts.view,
            access_log: parts.access_log,
            drain: parts.drain,
            live: tokio::sync::Mutex::new(Live {
                boot: Bootstrap {
                    listeners: Vec::new(),
                    clusters: Vec::new(),
                    admin: parts.admin,
                    node: None,
                    dynamic: None,
                },
                clusters: Vec::new(),
                listeners: Vec::new(),
                http_stats: HashMap::new(),
                tcp_stats: HashMap::new(),
                draining: Vec::new(),
                empty: true,
                closed: false,
            }),
            counters: parts.counters,
        }
    }

    /// Serves `boot` first (start-up): clusters, filters and listeners as
    /// a reload builds them.
    pub(super) async fn start(&self, boot: Bootstrap) -> Result<(), RunError> {
        let mut live = self.live.lock().await;
        live.boot.node.clone_from(&boot.node);
        match self.try_apply(&mut live, boot).await {
            Ok(_) => Ok(()),
            Err(ReloadError::Config(e)) => Err(RunError::Config(e)),
            Err(ReloadError::Filter(e) | ReloadError::Build(e)) => Err(e),
            Err(e @ (ReloadError::RestartRequired(_) | ReloadError::Task(_))) => {
                Err(RunError::Runtime(std::io::Error::other(e.to_string())))
            }
        }
    }

    /// Replaces the serving config with `boot` (see the module docs); a
    /// one-line summary, or why nothing was changed. Counted in
    /// `vessel.reload.success`/`.failure` and logged, as file reloads are.
    /// Runs on `vessel run`'s multi-threaded runtime (building compiles
    /// modules in `block_in_place`); updates are applied one at a time.
    pub(crate) async fn apply(&self, boot: Bootstrap) -> Result<String, ReloadError> {
        let result = {
            let mut live = self.live.lock().await;
            self.try_apply(&mut live, boot)
                .await
                .map(|s| format!("applied a new config: {s}"))
        };
        self.record(&result, "config update");
        result
    }

    /// Reads the config file again and applies it; the summary or why not.
    pub(super) async fn reload(&self) -> Result<String, ReloadError> {
        let result = match config::load(&self.path) {
            Ok(boot) if boot.dynamic.is_some() => Err(ReloadError::RestartRequired(
                "the config follows a control plane (dynamic_resources): the file is not \
                 reloaded"
                    .to_owned(),
            )),
            Ok(boot) => {
                let mut live = self.live.lock().await;
                self.try_apply(&mut live, boot)
                    .await
                    .map(|s| format!("reloaded {}: {s}", self.path.display()))
            }
            Err(e) => Err(e.into()),
        };
        self.record(&result, &format!("reload of {}", self.path.display()));
        result
    }

    fn record(&self, result: &Result<String, ReloadError>, what: &str) {
        match result {
            Ok(summary) => {
                self.counters.success.fetch_add(1, Ordering::Relaxed);
                log::info!("{summary}");
            }
            Err(e) => {
                self.counters.failure.fetch_add(1, Ordering::Relaxed);
                log::error!("{what} refused, the old config keeps serving: {e}");
            }
        }
    }

    /// Builds everything `boot` needs, then switches to it.
    async fn try_apply(&self, live: &mut Live, boot: Bootstrap) -> Result<String, ReloadError> {
        if live.closed {
            return Err(ReloadError::Task("vessel is shutting down".to_owned()));
        }
        if let Some(why) = restart_required(&live.boot, &boot) {
            return Err(ReloadError::RestartRequired(why));
        }
        if needs_fuel(&boot) && !self.host.engine.config().consume_fuel {
            return Err(ReloadError::RestartRequired(
                "a wasm filter now sets vm_config.vessel_limits.fuel_per_callback, which \
                 needs fuel metering in the engine"
                    .to_owned(),
            ));
        }

        // Clusters: keep the unchanged, build the others.
        let old: HashMap<&str, &Arc<LiveCluster>> =
            live.clusters.iter().map(|c| (c.name(), c)).collect();
        let mut slots: Vec<Option<Arc<LiveCluster>>> = Vec::new();
        let mut plan = Vec::new();
        for c in &boot.clusters {
            match old.get(c.name.as_str()) {
                Some(o) if o.config == *c => slots.push(Some((*o).clone())),
                o => {
                    plan.push((slots.len(), c, o.and_then(|o| o.dns.clone())));
                    slots.push(None);
                }
            }
        }
        let clusters_added = plan
            .iter()
            .filter(|(_, c, _)| !old.contains_key(c.name.as_str()))
            .count();
        let clusters_changed = plan.len() - clusters_added;
        let clusters_kept = boot.clusters.len() - plan.len();
        let built = tokio::task::block_in_place(|| {
            plan.into_iter()
                .map(|(i, c, dns)| LiveCluster::build(c, dns).map(|lc| (i, Arc::new(lc))))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(refused)?;
        futures_join_all(built.iter().map(|(_, c)| c.warm())).await;
        let fresh: Vec<Arc<LiveCluster>> = built.iter().map(|(_, c)| c.clone()).collect();
        for (i, c) in built {
            slots[i] = Some(c);
        }
        let clusters: Vec<Arc<LiveCluster>> = slots.into_iter().flatten().collect();
        let retired: Vec<Arc<LiveCluster>> = live
            .clusters
            .iter()
            .filter(|o| !clusters.iter().any(|c| Arc::ptr_eq(c, o)))
            .cloned()
            .collect();
        let clusters_removed: Vec<String> = retired
            .iter()
            .filter(|o| boot.cluster(o.name()).is_none())
            .map(|o| o.name().to_owned())
            .collect();
        let upstreams: Upstreams = Arc::new(
            clusters
                .iter()
                .map(|c| (c.name().to_owned(), c.upstream.clone()))
                .collect(),
        );
        // Remote code (`vm_config.code.remote`): fetched through the new
        // clusters and verified before any filter is built; a digest the
        // serving config holds is not fetched again.
        let mut boot = boot;
        self.host
            .remote
            .resolve_all(&mut boot, &upstreams)
            .await
            .map_err(|e| ReloadError::Filter(e.into()))?;
        if live.empty {
            // Nothing serves yet: the filters' on_configure may call them.
            self.switch_clusters(&clusters, &fresh, &retired, &clusters_removed);
        }

        // Listeners: build them against the old ones. Meanwhile the
        // clusters of new names are known to callouts already, so a new
        // filter's on_configure may call them (taken back if this fails).
        let new_names: Vec<&Arc<LiveCluster>> = fresh
            .iter()
            .filter(|c| !old.contains_key(c.name()))
            .collect();
        if !live.empty && !new_names.is_empty() {
            self.host
                .runtime
                .update_clusters(new_names.iter().map(|c| c.callout.clone()), [] as [&str; 0]);
        }
        let node_same = live.boot.node == boot.node;
        let (staged, counts) = match self
            .stage_listeners(live, &boot, &upstreams, node_same)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                if !live.empty && !new_names.is_empty() {
                    self.host
                        .runtime
                        .update_clusters([], new_names.iter().map(|c| c.name()));
                }
                return Err(e);
            }
        };

        // Nothing can fail from here on: switch.
        if !live.empty {
            self.switch_clusters(&clusters, &fresh, &retired, &clusters_removed);
        }
        for (_, h) in boot.listeners.iter().flat_map(|l| l.http_managers()) {
            for (_, plugin) in h.routes.policy_plugins() {
                self.fallbacks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(plugin.to_owned())
                    .or_insert(0);
            }
        }
        let mut old: HashMap<String, LiveListener> = live
            .listeners
            .drain(..)
            .map(|l| (l.config.name.clone(), l))
            .collect();
        let (mut added, mut changed, mut unchanged) = (0, 0, 0);
        let mut next = Vec::new();
        for (l, s) in boot.listeners.iter().zip(staged) {
            let prev = old.remove(&l.name);
            match (s, prev) {
                (Staged::InPlace(http), Some(mut p)) => {
                    for (target, new) in p.chains.http.iter_mut().zip(http) {
                        if let (Some(target), Some((router, filters))) = (target, new) {
                            *target
                                .routes
                                .write()
                                .unwrap_or_else(PoisonError::into_inner) = router;
                            target
                                .layer
                                .swap_filters(filters.iter().map(|f| f.pool.clone()).collect());
                            target.filters = filters;
                        }
                    }
                    p.config = l.clone();
                    unchanged += 1;
                    next.push(p);
                }
                (Staged::Swap(chains, serve), Some(mut p)) => {
                    p.serve.send_replace(serve);
                    p.chains = chains;
                    p.config = l.clone();
                    log::info!(
                        "listener `{}`: new connections take the new filter chains, \
                         connections in flight drain",
                        l.name
                    );
                    changed += 1;
                    next.push(p);
                }
                (Staged::Bind(chains, serve, socket), prev) => {
                    next.push(LiveListener::spawn(l, chains, serve, socket, self.drain));
                    if let Some(p) = prev {
                        log::info!(
                            "listener `{}` moved from {} to {}; the old socket drains",
                            l.name,
                            p.local,
                            l.addr
                        );
                        p.stop.send_replace(Stop::Remove);
                        live.draining.push(p.task);
                        changed += 1;
                    } else {
                        added += 1;
                    }
                }
                (Staged::InPlace(_) | Staged::Swap(..), None) => {
                    // Not built that way without a listener of that name.
                    log::error!("listener `{}` has nothing to update", l.name);
                }
            }
        }
        let removed = old.len();
        for (name, p) in old {
            log::info!("listener `{name}` removed: it stops accepting and drains");
            p.stop.send_replace(Stop::Remove);
            live.draining.push(p.task);
        }
        live.draining.retain(|t| !t.is_finished());
        live.listeners = next;
        live.http_stats = live
            .listeners
            .iter()
            .flat_map(|l| l.chains.http.iter().flatten())
            .map(|h| (h.stat_prefix.clone(), h.stats.clone()))
            .collect();
        live.tcp_stats = live
            .listeners
            .iter()
            .flat_map(|l| l.chains.tcp.iter().flatten())
            .map(|t| (t.config.stat_prefix.clone(), t.stats.clone()))
            .collect();
        live.clusters = clusters;
        live.boot = boot;
        live.empty = false;
        self.update_view(live);
        Ok(format!(
            "listeners: {added} added, {removed} removed, {changed} rebuilt, {unchanged} kept; \
             clusters: {clusters_added} added, {} removed, {clusters_changed} changed, \
             {clusters_kept} unchanged; wasm filters: {} rebuilt, {} unchanged",
            clusters_removed.len(),
            counts.filters_rebuilt,
            counts.filters_kept,
        ))
    }

    /// Builds the listeners of `boot` against the serving ones, and binds
    /// the sockets of new and moved listeners.
    async fn stage_listeners(
        &self,
        live: &Live,
        boot: &Bootstrap,
        upstreams: &Upstreams,
        node_same: bool,
    ) -> Result<(Vec<Staged>, Counts), ReloadError> {
        let mut stage = Stage {
            host: &self.host,
            boot,
            node_same,
            upstreams,
            fallbacks: &self.fallbacks,
            access_log: self.access_log,
            old_http_stats: &live.http_stats,
            old_tcp_stats: &live.tcp_stats,
            http_stats: HashMap::new(),
            tcp_stats: HashMap::new(),
            counts: Counts::default(),
        };
        let mut staged = tokio::task::block_in_place(|| {
            boot.listeners
                .iter()
                .map(|l| {
                    let old = live.listeners.iter().find(|o| o.config.name == l.name);
                    stage.listener(l, old)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(refused)?;
        let counts = stage.counts;
        // Sockets: new listeners, new addresses.
        for (l, s) in boot.listeners.iter().zip(staged.iter_mut()) {
            let old = live.listeners.iter().find(|o| o.config.name == l.name);
            if old.is_some_and(|o| o.config.addr == l.addr) {
                continue;
            }
            let socket = match handover(live, boot, l.addr) {
                Some(s) => s,
                None => Arc::new(bind(l.addr).await.map_err(refused)?),
            };
            let next = match std::mem::replace(s, Staged::InPlace(Vec::new())) {
                Staged::Swap(chains, serve) | Staged::Bind(chains, serve, _) => {
                    Staged::Bind(chains, serve, socket)
                }
                Staged::InPlace(_) => {
                    return Err(ReloadError::Task(format!(
                        "listener `{}` was built in place but needs a socket",
                        l.name
                    )));
                }
            };
            *s = next;
        }
        Ok((staged, counts))
    }

    /// Switches the callout clusters, the balancers filters read and the
    /// cluster tasks to `clusters` (`fresh`: the ones just built;
    /// `retired`: the old ones not kept, `removed`: the names gone).
    fn switch_clusters(
        &self,
        clusters: &[Arc<LiveCluster>],
        fresh: &[Arc<LiveCluster>],
        retired: &[Arc<LiveCluster>],
        removed: &[String],
    ) {
        for c in retired {
            c.stop();
        }
        self.host
            .runtime
            .update_clusters(fresh.iter().map(|c| c.callout.clone()), removed);
        *self.lb.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(
            clusters
                .iter()
                .map(|c| (c.name().to_owned(), c.balancer().clone()))
                .collect(),
        );
        for c in fresh {
            log::debug!("cluster `{}`: endpoints {:?}", c.name(), c.endpoints());
            c.start(&self.host.runtime);
        }
    }

    /// What the admin shows.
    fn update_view(&self, live: &Live) {
        let mut listeners: Vec<Arc<ListenerStats>> = live.http_stats.values().cloned().collect();
        listeners.sort_by_key(|s| s.prefix().to_owned());
        let mut tcp: Vec<Arc<TcpStats>> = live.tcp_stats.values().cloned().collect();
        tcp.sort_by_key(|s| s.prefix().to_owned());
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = AdminView {
            listeners,
            tcp,
            clusters: live.clusters.iter().filter_map(|c| c.dns.clone()).collect(),
            balancers: live.clusters.iter().map(|c| c.balancer().clone()).collect(),
            bound: live
                .listeners
                .iter()
                .map(|l| (l.config.name.clone(), l.local))
                .collect(),
        };
    }

    /// The files whose changes trigger a reload: the config and every
    /// module file it names.
    pub(super) async fn watched_files(&self) -> Vec<PathBuf> {
        let live = self.live.lock().await;
        let mut files = vec![self.path.clone()];
        for c in live
            .boot
            .listeners
            .iter()
            .flat_map(config::Listener::chains)
        {
            let http: &[WasmFilter] = match &c.terminal {
                Terminal::Http(h) => &h.wasm_filters,
                Terminal::TcpProxy(_) => &[],
            };
            for f in c.network_filters.iter().chain(http) {
                if let WasmCode::File(p) = &f.code {
                    files.push(p.clone());
                }
            }
        }
        files
    }

    /// Stops every listener and cluster task (no more updates after it):
    /// the accept loops to wait for, each draining its connections.
    pub(super) async fn shutdown(&self) -> Vec<JoinHandle<()>> {
        let mut live = self.live.lock().await;
        live.closed = true;
        for c in &live.clusters {
            c.stop();
        }
        let mut handles: Vec<JoinHandle<()>> = live.draining.drain(..).collect();
        for l in live.listeners.drain(..) {
            l.stop.send_replace(Stop::Shutdown);
            handles.push(l.task);
        }
        handles
    }
}

/// The socket of a serving listener that is on `addr` (as configured, or
/// as bound: a `port_value: 0` listener's port) and leaves it in `boot`
/// (removed, or moved), for a listener that takes `addr`: the socket goes
/// on accepting, so no connection is refused in between.
fn handover(live: &Live, boot: &Bootstrap, addr: SocketAddr) -> Option<Arc<TcpListener>> {
    if addr.port() == 0 {
        return None;
    }
    live.listeners
        .iter()
        .find(|o| {
            (o.config.addr == addr || o.local == addr)
                && boot
                    .listeners
                    .iter()
                    .find(|n| n.name == o.config.name)
                    .is_none_or(|n| n.addr != o.config.addr)
        })
        .map(|o| o.socket.clone())
}

/// Awaits every future (concurrently).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Why `new` cannot replace `old` without a restart, if it cannot: only
/// the admin address (the engine's fuel metering is checked apart).
pub(super) fn restart_required(old: &Bootstrap, new: &Bootstrap) -> Option<String> {
    (old.admin != new.admin).then(|| "the admin address changed".to_owned())
}

#[cfg(test)]
mod tests {
    //! `Reloader::apply` as the xDS client calls it: a whole `Bootstrap`,
    //! a summary or a refusal that changes nothing.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use vessel_host::{Engine, EngineConfig, HostEnv};
    use vessel_hyper::{Clusters, Runtime};

    use super::*;

    /// Listeners `(name, address, body)`, each answering `GET /` with its
    /// body (a direct response).
    fn boot(listeners: &[(&str, &str, &str)]) -> Bootstrap {
        let mut yaml = String::from("static_resources:\n  listeners:\n");
        for (name, addr, body) in listeners {
            let (ip, port) = addr.rsplit_once(':').unwrap();
            yaml.push_str(&format!(
                r#"  - name: {name}
    address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "{body}" }} }}
          http_filters:
          - name: envoy.filters.http.router
"#
            ));
        }
        config::parse(&yaml, Path::new(".")).unwrap()
    }

    fn reloader() -> Reloader {
        let host = FilterHost {
            engine: Engine::new(EngineConfig::default()).unwrap(),
            env: HostEnv::default(),
            runtime: Runtime::new(Clusters::new()),
            vms: 1,
            stats: super::super::PluginStatsMap::default(),
            remote: Arc::new(super::super::remote::Resolver::new(
                &vessel_host::CacheConfig::default(),
            )),
            tier_up: false,
        };
        Reloader::new(
            host,
            ReloaderParts {
                path: "envoy.yaml".into(),
                fallbacks: PolicyFallbacks::default(),
                lb: LbRegistry::default(),
                view: SharedView::default(),
                access_log: false,
                drain: Duration::from_secs(1),
                counters: Arc::default(),
                admin: None,
            },
        )
    }

    fn bound(r: &Reloader, name: &str) -> Option<SocketAddr> {
        let view = r.view.read().unwrap();
        view.bound.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// `GET /` on a new connection to `addr`: the response's body.
    async fn get(addr: SocketAddr) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        out.rsplit("\r\n\r\n").next().unwrap().to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn apply_adds_changes_and_removes_listeners_or_changes_nothing() {
        let r = reloader();
        r.start(boot(&[("a", "127.0.0.1:0", "one")])).await.unwrap();
        let a = bound(&r, "a").unwrap();
        assert_eq!(get(a).await, "one");

        let summary = r
            .apply(boot(&[
                ("a", "127.0.0.1:0", "two"),
                ("b", "127.0.0.1:0", "bee"),
            ]))
            .await
            .unwrap();
        assert!(
            summary.starts_with(
                "applied a new config: listeners: 1 added, 0 removed, 0 rebuilt, 1 kept"
            ),
            "{summary}"
        );
        assert_eq!(bound(&r, "a"), Some(a), "a keeps its socket");
        assert_eq!(get(a).await, "two", "and serves its new routes");
        let b = bound(&r, "b").unwrap();
        assert_eq!(get(b).await, "bee");

        // `b` on an address in use: refused, nothing changes.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = taken.local_addr().unwrap().to_string();
        let e = r
            .apply(boot(&[("a", "127.0.0.1:0", "three"), ("b", &at, "bee")]))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ReloadError::Build(RunError::Bind { .. })),
            "{e}"
        );
        assert_eq!(e.status(), 500);
        assert_eq!((bound(&r, "a"), bound(&r, "b")), (Some(a), Some(b)));
        assert_eq!(get(a).await, "two");
        assert_eq!(get(b).await, "bee");

        // `a` removed.
        r.apply(boot(&[("b", "127.0.0.1:0", "bee")])).await.unwrap();
        assert_eq!(bound(&r, "a"), None);
        assert_eq!(get(b).await, "bee");
        assert_eq!(r.counters.success.load(Ordering::Relaxed), 2);
        assert_eq!(r.counters.failure.load(Ordering::Relaxed), 1);
        for t in r.shutdown().await {
            t.await.unwrap();
        }
        assert!(tokio::net::TcpStream::connect(b).await.is_err(), "closed");
        assert!(matches!(
            r.apply(boot(&[])).await,
            Err(ReloadError::Task(_))
        ));
    }
}
