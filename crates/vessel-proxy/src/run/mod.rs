//! `vessel run -c envoy.yaml`: serves the listeners of an Envoy bootstrap
//! (read by [`crate::config`]) with their proxy-wasm HTTP filters in front
//! of a router, plus the admin listener.
//!
//! * Each accepted connection takes the filter chain it matches
//!   ([`config::Listener::select`]): an HTTP connection manager, or a
//!   `tcp_proxy` (module `tcp`) that moves its bytes to an endpoint of a
//!   cluster. A connection no chain takes is closed. A chain with a
//!   `transport_socket` terminates TLS ([`tls`]: rustls, certificates by
//!   SNI and reloaded when their files change, client certificates); the
//!   ClientHello's SNI, read without consuming it, also chooses among
//!   chains by `server_names`. Clusters with an `UpstreamTlsContext`
//!   connect with TLS.
//! * Each `envoy.filters.http.wasm` filter becomes a
//!   [`vessel_hyper::FilterPool`] of `concurrency` VMs (ABI reference §9:
//!   plugin and VM configuration; §6.6: failure policy, `FAIL_CLOSED`,
//!   `FAIL_OPEN` and `FAIL_RELOAD` with `reload_config.backoff`). All
//!   filters share one [`HostEnv`], so shared data, queues and metrics are
//!   process-wide as in Envoy. Each plugin's failures and reloads are
//!   counted as `wasm.<plugin name>.vm_failures`, `.vm_reload_success`,
//!   `.vm_reload_failure` and `.vm_reload_backoff` in `/stats`.
//! * Hot reload: on `POST /reload` on the admin listener, and when the
//!   config file or a module file it names changes (watched with `notify`,
//!   debounced by [`WATCH_DEBOUNCE`]), the config is read again and the
//!   wasm filters and routes are swapped atomically
//!   ([`vessel_hyper::VesselLayer::swap_filters`]): streams in flight
//!   finish on the old VMs. A filter whose spec and module bytes did not
//!   change keeps its VMs. If anything fails (the YAML, a module that does
//!   not load, a VM that does not start or configure) the old config keeps
//!   serving and the error is logged (and returned by `/reload`). Changes
//!   to listeners (names, addresses, buffer limits, filter chains, codecs,
//!   stat prefixes, tcp_proxy, network filters, transport sockets), clusters or the admin
//!   address need a restart and are refused.
//! * The router (module `router`) answers `direct_response` routes, forwards the
//!   others round-robin to their cluster's endpoints, and answers upstream
//!   failures as Envoy does (503 `no healthy upstream`, 503 `upstream
//!   connect error…`, 504 `upstream request timeout`, 404 when no route
//!   matches).
//! * HTTP/1.1 and HTTP/2 (prior knowledge in cleartext, ALPN over TLS) on
//!   every listener unless its `codec_type` says otherwise.
//! * SIGTERM or Ctrl-C stops accepting and lets connections in flight
//!   finish (bounded by [`RunOptions::drain_timeout`]), so every stream's
//!   `on_log`/`on_done` runs.
//!
//! * STRICT_DNS / LOGICAL_DNS clusters are resolved at start-up and again
//!   every `dns_refresh_rate` (module `dns`); routes and callouts use the
//!   new endpoints.
//!
//! * Per plugin, `capability_restriction_config.allowed_capabilities`
//!   restricts the hostcalls the module may use (ABI reference §6.5;
//!   [`vessel_host::hostcalls::capabilities`]), and vessel's own
//!   `vm_config.vessel_limits` sets its per-VM [`vessel_host::Limits`]
//!   (§6.6), and `vm_config.vessel_hidden` the headers and properties it
//!   must never see ([`vessel_host::Hidden`]). One engine serves every filter: it has epoch interruption,
//!   fuel metering if any filter sets `fuel_per_callback` at start-up, and
//!   the on-disk module cache of [`RunOptions::module_cache`]
//!   (`docs/operations.md`, "vessel run knobs").

mod access;
mod admin;
mod dns;
mod health;
mod lb;
pub mod remote;
mod router;
mod tcp;
pub mod tls;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};
use vessel_host::{
    CacheConfig, Engine, EngineConfig, HostEnv, LogLevel, Plugin, PluginConfig, PropertyMap,
};
use vessel_hyper::{ConnectionInfo, FilterPool, PluginStats, Runtime, VesselBody, VesselLayer};

use crate::config::{self, Bootstrap, ClusterKind, Codec, ConfigError, WasmCode, WasmFilter};
use access::{AccessLog, Entry, ListenerStats, LoggedBody};
use admin::Admin;
pub use admin::{Address, ListenerStatus, ListenersStatus, SocketAddress};
use lb::Balancer;
use router::{PolicyFallbacks, Router, RouterBody, Upstream, Upstreams};

/// How long connections in flight may take to finish after a shutdown
/// signal, by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the config and module files must stay quiet after a change
/// before `vessel run` reloads them.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);

/// The options of `vessel run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The Envoy bootstrap file.
    pub config: PathBuf,
    /// Worker threads, and VMs per filter. `None`: the number of cores, as
    /// Envoy's `--concurrency` default.
    pub concurrency: Option<usize>,
    /// Write one access log line per request on stdout.
    pub access_log: bool,
    /// How long in-flight connections may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// Reload when the config file or a module file it names changes
    /// (default true). `POST /reload` works either way.
    pub watch: bool,
    /// The on-disk compiled-module cache. Default:
    /// [`CacheConfig::user_default`] (`$XDG_CACHE_HOME/vessel/modules` or
    /// `~/.cache/vessel/modules`); `--module-cache-dir` and
    /// `--no-module-cache` change it.
    pub module_cache: CacheConfig,
    /// Write the admin listener's bound address (`127.0.0.1:41867`, no
    /// newline) to this file once every listener and the admin listener
    /// are bound, as Envoy's `--admin-address-path` does. With `port_value:
    /// 0` listeners, the admin's `/listeners?format=json` then tells their
    /// ports. Nothing is written without an `admin` section.
    pub admin_address_path: Option<PathBuf>,
    /// How modules are compiled (`--compilation`); default
    /// [`Compilation::Tiered`].
    pub compilation: Compilation,
}

/// How `vessel run` compiles a module that is not in the module cache
/// (`docs/operations.md`, "Tiered compilation").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compilation {
    /// Winch first, so the filter serves sooner; Cranelift in the
    /// background, stored in the module cache, and the filter's VMs switch
    /// to it. The default.
    #[default]
    Tiered,
    /// Cranelift before the filter serves (vessel before tiering).
    Cranelift,
    /// Winch only, never upgraded (to measure the baseline tier; a module
    /// cache hit is still Cranelift code).
    Winch,
}

impl Compilation {
    /// Parses `tiered`, `cranelift` or `winch`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tiered" => Some(Self::Tiered),
            "cranelift" => Some(Self::Cranelift),
            "winch" => Some(Self::Winch),
            _ => None,
        }
    }
}

impl RunOptions {
    /// Options for `config` with the defaults.
    pub fn new(config: impl Into<PathBuf>) -> Self {
        Self {
            config: config.into(),
            concurrency: None,
            access_log: false,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            watch: true,
            module_cache: CacheConfig::user_default(),
            admin_address_path: None,
            compilation: Compilation::Tiered,
        }
    }
}

/// Why `vessel run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bootstrap is invalid or unsupported.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A filter's module file cannot be read.
    #[error("{filter}: cannot read {}: {source}", path.display())]
    ReadWasm {
        /// `listener/filter`.
        filter: String,
        /// The module file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A filter's remote code (`vm_config.code.remote`) cannot be fetched
    /// or does not have its sha256 (and no cached copy does).
    #[error(transparent)]
    Remote(Box<remote::RemoteError>),
    /// A filter's module does not load.
    #[error("{filter}: {source}")]
    Load {
        /// `listener/filter`.
        filter: String,
        /// Why.
        source: vessel_host::LoadError,
    },
    /// A filter's VM does not start (a trap or a failed `on_vm_start` /
    /// `on_configure`).
    #[error("{filter}: cannot start the VM: {source}")]
    Vm {
        /// `listener/filter`.
        filter: String,
        /// Why.
        source: vessel_host::VmError,
    },
    /// The wasm engine cannot be built.
    #[error(transparent)]
    Engine(vessel_host::EngineError),
    /// A cluster's or a listener's TLS context cannot be set up (a
    /// certificate, key or CA that does not read).
    #[error("{context}: {source}")]
    Tls {
        /// The cluster or listener.
        context: String,
        /// Why.
        source: tls::TlsError,
    },
    /// A cluster endpoint's host name does not resolve.
    #[error("cluster `{cluster}`: cannot resolve {host}: {source}")]
    Resolve {
        /// The cluster.
        cluster: String,
        /// `host:port`.
        host: String,
        /// Why.
        source: std::io::Error,
    },
    /// A listener's address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The tokio runtime or the signal handlers cannot start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// The admin address cannot be written to `--admin-address-path`.
    #[error("cannot write the admin address to {}: {source}", path.display())]
    AdminAddressPath {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl From<remote::RemoteError> for RunError {
    fn from(e: remote::RemoteError) -> Self {
        Self::Remote(Box::new(e))
    }
}

/// Why a hot reload was refused. The config that was serving keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config is invalid or unsupported.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new config changes what only a restart can change.
    #[error("{0}; restart vessel to apply it (nothing was changed)")]
    RestartRequired(String),
    /// A filter's module cannot be read or loaded, or its VMs do not start.
    #[error(transparent)]
    Filter(RunError),
    /// The reload task died.
    #[error("the reload task failed: {0}")]
    Task(String),
}

impl ReloadError {
    /// The HTTP status `POST /reload` answers with: 409 when a restart is
    /// needed, 500 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::RestartRequired(_) => 409,
            _ => 500,
        }
    }
}

/// Loads `options.config` and serves it until SIGTERM or Ctrl-C.
pub fn run(options: &RunOptions) -> Result<(), RunError> {
    let boot = config::load(&options.config)?;
    let threads = options
        .concurrency
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let result = rt.block_on(async {
        let shutdown = shutdown_signal().map_err(RunError::Runtime)?;
        serve(boot, threads, options, shutdown).await
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Resolves when SIGTERM or Ctrl-C arrives.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => log::info!("Ctrl-C: shutting down"),
            _ = term.recv() => log::info!("SIGTERM: shutting down"),
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            log::info!("Ctrl-C: shutting down");
        }
    })
}

/// The per-connection service every listener runs.
type ConnService = BoxCloneService<Request<Incoming>, Response<LoggedBody>, Infallible>;

/// A filter kept across a reload: its module bytes and pool.
type Reused = (Arc<Vec<u8>>, Arc<FilterPool>);

/// One wasm filter as it serves: what it was built from, and its pool.
struct LiveFilter {
    spec: WasmFilter,
    code: Arc<Vec<u8>>,
    pool: Arc<FilterPool>,
}

/// One HTTP connection manager's swappable parts.
struct LiveHttp {
    layer: VesselLayer,
    routes: Arc<RwLock<Router>>,
    filters: Vec<LiveFilter>,
}

/// One listener's swappable parts: for each chain (in
/// [`config::Listener::chains`] order), its HTTP connection manager's, if it
/// ends in one.
struct LiveListener {
    chains: Vec<Option<LiveHttp>>,
}

/// The config that serves.
struct Live {
    boot: Bootstrap,
    listeners: Vec<LiveListener>,
}

/// The per-plugin counters, by plugin name (Envoy's `wasm.<name>.` scope);
/// kept across reloads.
pub(crate) type PluginStatsMap = Arc<Mutex<BTreeMap<String, Arc<PluginStats>>>>;

/// What building filters needs; shared by start-up and reloads.
#[derive(Clone)]
struct FilterHost {
    /// Upgrade baseline (Winch) pools in the background (`tier_up`).
    tier_up: bool,
    engine: Engine,
    env: HostEnv,
    runtime: Arc<Runtime>,
    vms: usize,
    stats: PluginStatsMap,
    /// Remote wasm code (`run::remote`): fetched, verified, cached.
    remote: Arc<remote::Resolver>,
}

/// Counts of `vessel run`'s own reloads (`/stats`: `vessel.reload.*`).
#[derive(Debug, Default)]
pub(crate) struct ReloadCounters {
    pub(crate) success: AtomicU64,
    pub(crate) failure: AtomicU64,
}

/// Reloads the config: see the module docs.
struct Reloader {
    path: PathBuf,
    host: FilterHost,
    upstreams: Upstreams,
    fallbacks: PolicyFallbacks,
    live: tokio::sync::Mutex<Live>,
    counters: Arc<ReloadCounters>,
}

impl Reloader {
    /// Reads the config again and swaps what changed; the summary or why not.
    async fn reload(&self) -> Result<String, ReloadError> {
        let mut live = self.live.lock().await;
        let result = self.try_reload(&mut live).await;
        match &result {
            Ok(summary) => {
                self.counters.success.fetch_add(1, Ordering::Relaxed);
                log::info!("{summary}");
            }
            Err(e) => {
                self.counters.failure.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "reload of {} refused, the old config keeps serving: {e}",
                    self.path.display()
                );
            }
        }
        result
    }

    async fn try_reload(&self, live: &mut Live) -> Result<String, ReloadError> {
        let mut boot = config::load(&self.path)?;
        // Hook (remote code): fetch and verify `code.remote` modules before
        // anything is compared or built; unchanged digests are not fetched.
        self.host
            .remote
            .resolve_all(&mut boot)
            .await
            .map_err(|e| ReloadError::Filter(e.into()))?;
        restart_required(&live.boot, &boot)
            .map_or(Ok(()), |why| Err(ReloadError::RestartRequired(why)))?;
        if needs_fuel(&boot) && !self.host.engine.config().consume_fuel {
            return Err(ReloadError::RestartRequired(
                "a wasm filter now sets vm_config.vessel_limits.fuel_per_callback, which \
                 needs fuel metering in the engine"
                    .to_owned(),
            ));
        }
        // Reuse a filter whose spec and module did not change; build the
        // others off the async workers (compiling can take seconds).
        let node_same = live.boot.node == boot.node;
        let mut reuse: HashMap<(usize, usize, usize), Reused> = HashMap::new();
        let mut plan = Vec::new();
        for (li, l) in boot.listeners.iter().enumerate() {
            for (ci, h) in l.http_managers() {
                for (fi, f) in h.wasm_filters.iter().enumerate() {
                    let label = filter_label(l, ci, fi, f);
                    let code = Arc::new(read_code(f, &label).map_err(ReloadError::Filter)?);
                    let skip = is_policy(h, f);
                    let old = live.listeners[li].chains[ci]
                        .as_ref()
                        .and_then(|c| c.filters.get(fi))
                        .filter(|old| {
                            node_same
                                && old.spec == *f
                                && *old.code == *code
                                && old.pool.skips_on_failure() == skip
                        });
                    match old {
                        Some(o) => {
                            reuse.insert((li, ci, fi), (o.code.clone(), o.pool.clone()));
                        }
                        None => plan.push((li, ci, fi, f.clone(), code, label, skip)),
                    }
                }
            }
        }
        let rebuilt = plan.len();
        let host = self.host.clone();
        let boot_for_build = boot.clone();
        let built = tokio::task::spawn_blocking(move || {
            plan.into_iter()
                .map(|(li, ci, fi, f, code, label, skip)| {
                    build_filter(&host, &f, code, &boot_for_build, &label, skip)
                        .map(|lf| ((li, ci, fi), lf))
                })
                .collect::<Result<HashMap<_, _>, RunError>>()
        })
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))?
        .map_err(ReloadError::Filter)?;
        let mut built = built;
        // Everything is ready: swap, connection manager by connection
        // manager.
        let mut kept = 0;
        let mut managers = 0;
        for (li, l) in boot.listeners.iter().enumerate() {
            for (ci, h) in l.http_managers() {
                let mut filters = Vec::new();
                for (fi, f) in h.wasm_filters.iter().enumerate() {
                    let key = (li, ci, fi);
                    let lf = match (built.remove(&key), reuse.remove(&key)) {
                        (Some(lf), _) => lf,
                        (None, Some((code, pool))) => {
                            kept += 1;
                            LiveFilter {
                                spec: f.clone(),
                                code,
                                pool,
                            }
                        }
                        (None, None) => {
                            return Err(ReloadError::Task(format!(
                                "filter {key:?} was neither built nor kept"
                            )));
                        }
                    };
                    filters.push(lf);
                }
                let Some(target) = live.listeners[li].chains[ci].as_mut() else {
                    return Err(ReloadError::RestartRequired(format!(
                        "listener `{}` filter chain #{ci} is now an HTTP connection manager",
                        l.name
                    )));
                };
                *target
                    .routes
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Router::new(
                    h.routes.clone(),
                    self.upstreams.clone(),
                    self.fallbacks.clone(),
                )
                .suppress_envoy_headers(h.suppress_envoy_headers);
                target
                    .layer
                    .swap_filters(filters.iter().map(|f| f.pool.clone()).collect());
                target.filters = filters;
                managers += 1;
            }
        }
        live.boot = boot;
        Ok(format!(
            "reloaded {}: {rebuilt} wasm filter(s) rebuilt, {kept} unchanged, routes of {managers} \
             HTTP connection manager(s) replaced",
            self.path.display(),
        ))
    }

    /// The files whose changes trigger a reload: the config and every
    /// module file it names.
    async fn watched_files(&self) -> Vec<PathBuf> {
        let live = self.live.lock().await;
        let mut files = vec![self.path.clone()];
        for l in &live.boot.listeners {
            for (_, h) in l.http_managers() {
                for f in &h.wasm_filters {
                    if let WasmCode::File(p) = &f.code {
                        files.push(p.clone());
                    }
                }
            }
        }
        files
    }
}

/// Why `new` cannot replace `old` without a restart, if it cannot.
fn restart_required(old: &Bootstrap, new: &Bootstrap) -> Option<String> {
    /// What of a chain only a restart changes.
    #[derive(PartialEq)]
    enum Kind<'a> {
        Http(Codec, &'a str),
        Tcp(&'a config::TcpProxy),
    }
    type Shape<'a> = (
        &'a config::FilterChainMatch,
        &'a [WasmFilter],
        Kind<'a>,
        Option<&'a config::DownstreamTls>,
    );
    fn describe(b: &Bootstrap) -> Vec<(String, SocketAddr, usize, Vec<Shape<'_>>)> {
        b.listeners
            .iter()
            .map(|l| {
                let chains = l
                    .chains()
                    .map(|c| {
                        let kind = match &c.terminal {
                            config::Terminal::Http(h) => Kind::Http(h.codec, &h.stat_prefix),
                            config::Terminal::TcpProxy(t) => Kind::Tcp(t),
                        };
                        (
                            &c.matcher,
                            c.network_filters.as_slice(),
                            kind,
                            c.tls.as_ref(),
                        )
                    })
                    .collect();
                (l.name.clone(), l.addr, l.buffer_limit, chains)
            })
            .collect()
    }
    if describe(old) != describe(new) {
        return Some(
            "the listeners changed (added, removed, renamed, or a new address, buffer limit, \
             filter chain, codec, stat_prefix, network filter, tcp_proxy or transport socket)"
                .to_owned(),
        );
    }
    if old.clusters != new.clusters {
        return Some("the clusters changed".to_owned());
    }
    if old.admin != new.admin {
        return Some("the admin address changed".to_owned());
    }
    None
}

/// Serves a listener's current routes: the router is swapped on reload,
/// each request uses the one current when it reaches the router.
#[derive(Clone)]
struct SwapRouter(Arc<RwLock<Router>>);

impl tower::Service<Request<VesselBody>> for SwapRouter {
    type Response = Response<RouterBody>;
    type Error = Infallible;
    type Future = <Router as tower::Service<Request<VesselBody>>>::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<VesselBody>) -> Self::Future {
        let mut router = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        router.call(req)
    }
}

/// Serves `boot` until `shutdown` resolves, then drains.
async fn serve(
    mut boot: Bootstrap,
    vms: usize,
    options: &RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    // Clusters: the router's clients and the callout clusters.
    let mut callout_clusters = vessel_hyper::Clusters::new();
    let mut upstreams = HashMap::new();
    let mut dns_clusters = Vec::new();
    let mut balancers = Vec::new();
    let mut checkers = Vec::new();
    let mut scrapers = Vec::new();
    for c in &boot.clusters {
        let endpoints = resolve(c)?;
        let upstream_tls = c
            .tls
            .as_ref()
            .map(|t| tls::upstream_tls(t, c.http2).map(Arc::new))
            .transpose()
            .map_err(|source| RunError::Tls {
                context: format!("cluster `{}`", c.name),
                source,
            })?;
        callout_clusters.add(vessel_hyper::Cluster {
            name: c.name.clone(),
            endpoints: endpoints.clone(),
            connect_timeout: c.connect_timeout,
            http2: c.http2,
            tls: upstream_tls.clone(),
        });
        let balancer = Arc::new(Balancer::new(
            &c.name,
            &endpoints,
            &c.load_balancing,
            c.outlier_detection.clone(),
            c.health_check.is_some(),
        ));
        if let Some(hc) = &c.health_check {
            checkers.push(Arc::new(health::Checker::new(
                balancer.clone(),
                hc.clone(),
                upstream_tls.clone(),
            )));
        }
        if let Some(m) = &c.metrics_scrape {
            scrapers.push(Arc::new(health::Scraper::new(
                balancer.clone(),
                m.clone(),
                upstream_tls.clone(),
            )));
        }
        balancers.push(balancer.clone());
        let upstream = Arc::new(Upstream::new(
            balancer,
            c.connect_timeout,
            c.http2,
            upstream_tls,
        ));
        if matches!(c.kind, ClusterKind::StrictDns | ClusterKind::LogicalDns) {
            let stats = Arc::new(dns::DnsStats::new(&c.name));
            dns::record_startup(&stats, &endpoints);
            dns_clusters.push((c.clone(), upstream.clone(), stats));
        }
        upstreams.insert(c.name.clone(), upstream);
    }
    let upstreams: Upstreams = Arc::new(upstreams);
    let fallbacks = PolicyFallbacks::default();
    for (_, h) in boot.listeners.iter().flat_map(|l| l.http_managers()) {
        for (_, plugin) in h.routes.policy_plugins() {
            fallbacks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(plugin.to_owned())
                .or_insert(0);
        }
    }
    // Active health checks: the first round before the listeners bind (as
    // Envoy's cluster warming waits for it), then every interval.
    for c in &checkers {
        c.round().await;
    }
    let mut dns_tasks: Vec<tokio::task::JoinHandle<()>> =
        checkers.into_iter().map(health::Checker::spawn).collect();
    dns_tasks.extend(scrapers.into_iter().map(health::Scraper::spawn));
    let runtime = Runtime::new(callout_clusters);
    let mut dns_stats = Vec::new();
    for (c, upstream, stats) in dns_clusters {
        dns_stats.push(stats.clone());
        dns_tasks.push(dns::spawn_refresh(c, upstream, runtime.clone(), stats));
    }
    let names = runtime.clone();
    let env = HostEnv::builder()
        .known_clusters(move |c| names.knows_cluster(c))
        .property_provider(lb::LbProperties::new(&balancers))
        .build();
    let engine = Engine::new(EngineConfig {
        consume_fuel: needs_fuel(&boot),
        cache: options.module_cache.clone(),
        tiered: options.compilation != Compilation::Cranelift,
        ..EngineConfig::default()
    })
    .map_err(RunError::Engine)?;
    if let Some(dir) = &options.module_cache.dir {
        log::info!("module cache: {}", dir.display());
    }
    let host = FilterHost {
        tier_up: options.compilation == Compilation::Tiered,
        engine,
        env: env.clone(),
        runtime,
        vms,
        stats: PluginStatsMap::default(),
        remote: Arc::new(remote::Resolver::new(
            upstreams.clone(),
            &options.module_cache,
        )),
    };
    // Hook (remote code): fetch and verify `code.remote` modules before the
    // filters are built (after the clusters' first health checks).
    host.remote.resolve_all(&mut boot).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut all_stats = Vec::new();
    let mut bound = Vec::new();
    let mut live_listeners = Vec::new();
    let mut listener_addrs = Vec::new();
    let mut tcp_stats = Vec::new();
    for l in &boot.listeners {
        let mut chains = Vec::new();
        let mut live_chains = Vec::new();
        let mut chain_tls = Vec::new();
        for (ci, chain) in l.chains().enumerate() {
            chain_tls.push(
                chain
                    .tls
                    .as_ref()
                    .map(|t| tls::ServerTls::new(t).map(Arc::new))
                    .transpose()
                    .map_err(|source| RunError::Tls {
                        context: format!("listener `{}` filter chain #{ci}", l.name),
                        source,
                    })?,
            );
            let mut network = Vec::new();
            for (fi, f) in chain.network_filters.iter().enumerate() {
                let label = format!(
                    "listener `{}` filter chain #{ci} network wasm filter #{fi} `{}`",
                    l.name, f.name
                );
                let code = Arc::new(read_code(f, &label)?);
                network.push(build_filter(&host, f, code, &boot, &label, false)?.pool);
            }
            match &chain.terminal {
                config::Terminal::Http(h) => {
                    let (mut serve, live) =
                        http_chain(&host, &boot, l, ci, h, &upstreams, &fallbacks, options)?;
                    serve.network = network;
                    all_stats.push(serve.stats.clone());
                    chains.push(ChainServe::Http(serve));
                    live_chains.push(Some(live));
                }
                config::Terminal::TcpProxy(t) => {
                    let stats = Arc::new(tcp::TcpStats::new(&t.stat_prefix));
                    tcp_stats.push(stats.clone());
                    let upstream = upstreams.get(&t.cluster).cloned().ok_or_else(|| {
                        RunError::Config(ConfigError::Field {
                            kind: config::ErrorKind::UnknownReference,
                            path: format!("listener `{}` filter chain #{ci}", l.name),
                            message: format!("unknown cluster `{}`", t.cluster),
                        })
                    })?;
                    chains.push(ChainServe::Tcp(Arc::new(tcp::TcpProxyServe {
                        config: t.clone(),
                        upstream,
                        stats,
                        filters: network,
                        buffer_limit: l.buffer_limit,
                    })));
                    live_chains.push(None);
                }
            }
        }
        live_listeners.push(LiveListener {
            chains: live_chains,
        });
        let listener = bind(l.addr).await?;
        let local = listener.local_addr().unwrap_or(l.addr);
        log::info!("listener `{}` on {local}", l.name);
        listener_addrs.push((l.name.clone(), local));
        bound.push((
            listener,
            Arc::new(ListenerServe {
                name: l.name.clone(),
                matcher: Some(l.clone()),
                chains,
                inspect: l.needs_server_name() || chain_tls.iter().any(Option::is_some),
                tls: chain_tls,
            }),
        ));
    }
    for (listener, serve) in bound {
        tasks.push(tokio::spawn(accept_loop(
            listener,
            serve,
            stop_rx.clone(),
            options.drain_timeout,
        )));
    }

    let counters = Arc::new(ReloadCounters::default());
    let admin_addr = boot.admin;
    let reloader = Arc::new(Reloader {
        path: options.config.clone(),
        host: host.clone(),
        upstreams,
        fallbacks: fallbacks.clone(),
        live: tokio::sync::Mutex::new(Live {
            boot,
            listeners: live_listeners,
        }),
        counters: counters.clone(),
    });
    if options.watch {
        match watch_files(reloader.clone(), stop_rx.clone()).await {
            Ok(task) => tasks.push(task),
            Err(e) => log::warn!("cannot watch the config files, reload with POST /reload: {e}"),
        }
    }

    if admin_addr.is_none()
        && let Some(path) = &options.admin_address_path
    {
        log::warn!(
            "--admin-address-path {}: the config has no admin section, so nothing is written",
            path.display()
        );
    }
    if let Some(addr) = admin_addr {
        let admin = Arc::new(Admin {
            metrics: env.metrics().clone(),
            listeners: all_stats,
            clusters: dns_stats,
            balancers,
            fallbacks,
            tcp: tcp_stats,
            plugins: host.stats.clone(),
            remote: host.remote.stats(),
            reloads: counters,
            bound: listener_addrs,
        });
        let listener = bind(addr).await?;
        let local = listener.local_addr().unwrap_or(addr);
        log::info!("admin on {local}");
        if let Some(path) = &options.admin_address_path {
            write_admin_address(path, local)?;
        }
        let make = move |_info: ConnectionInfo| -> ConnService {
            let admin = admin.clone();
            let reloader = reloader.clone();
            BoxCloneService::new(tower::service_fn(move |req: Request<Incoming>| {
                let admin = admin.clone();
                let reloader = reloader.clone();
                async move {
                    let resp = if req.uri().path() == "/reload" {
                        if req.method() == http::Method::POST {
                            admin::reload_response(reloader.reload().await)
                        } else {
                            admin::post_only()
                        }
                    } else {
                        admin.handle(&req)
                    };
                    Ok::<_, Infallible>(resp.map(|b| LoggedBody::new(b, None)))
                }
            }))
        };
        let serve = ListenerServe {
            name: "admin".to_owned(),
            matcher: None,
            chains: vec![ChainServe::Http(HttpServe {
                codec: Codec::Auto,
                make: Arc::new(make),
                stats: Arc::new(ListenerStats::new("admin")),
                network: Vec::new(),
                buffer_limit: 0,
            })],
            tls: vec![None],
            inspect: false,
        };
        tasks.push(tokio::spawn(accept_loop(
            listener,
            Arc::new(serve),
            stop_rx.clone(),
            options.drain_timeout,
        )));
    }

    shutdown.await;
    for t in dns_tasks {
        t.abort();
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        if let Err(e) = t.await {
            log::warn!("a listener task failed: {e}");
        }
    }
    log::info!("all connections closed");
    Ok(())
}

/// Watches the config file and the module files (their directories, so
/// files replaced by a rename are seen) and reloads after changes, once
/// they have been quiet for [`WATCH_DEBOUNCE`].
async fn watch_files(
    reloader: Arc<Reloader>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = tx.send(event);
        }
    })?;
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    let mut files = watch_targets(&reloader.watched_files().await);
    update_watches(&mut watcher, &mut dirs, &files)?;
    Ok(tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.changed() => return,
                e = rx.recv() => match e { Some(e) => e, None => return },
            };
            if matches!(event.kind, notify::EventKind::Access(_)) || !touches(&event, &files) {
                continue;
            }
            // Debounce: wait until the files have been quiet for a while.
            while let Ok(Some(_)) = tokio::time::timeout(WATCH_DEBOUNCE, rx.recv()).await {}
            log::info!("a config or module file changed: reloading");
            let _ = reloader.reload().await;
            files = watch_targets(&reloader.watched_files().await);
            if let Err(e) = update_watches(&mut watcher, &mut dirs, &files) {
                log::warn!("cannot watch the new config's files: {e}");
            }
        }
    }))
}

/// `(directory, file name)` of each file, the directory canonicalized.
fn watch_targets(files: &[PathBuf]) -> Vec<(PathBuf, std::ffi::OsString)> {
    files
        .iter()
        .filter_map(|f| {
            let name = f.file_name()?.to_owned();
            let dir = f
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            Some((dir.canonicalize().ok()?, name))
        })
        .collect()
}

fn update_watches(
    watcher: &mut notify::RecommendedWatcher,
    dirs: &mut HashSet<PathBuf>,
    files: &[(PathBuf, std::ffi::OsString)],
) -> Result<(), notify::Error> {
    use notify::Watcher as _;
    for (dir, _) in files {
        if dirs.insert(dir.clone()) {
            watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
        }
    }
    Ok(())
}

/// True if `event` is about one of `files`.
fn touches(event: &notify::Event, files: &[(PathBuf, std::ffi::OsString)]) -> bool {
    event.paths.iter().any(|p| {
        files.iter().any(|(dir, name)| {
            p.file_name() == Some(name.as_os_str()) && p.parent() == Some(dir.as_path())
        })
    })
}

/// Writes the admin listener's address to `path` (as Envoy's
/// `--admin-address-path`: `ip:port`, no newline), through a temporary file
/// renamed over it, so a reader never sees half of it.
fn write_admin_address(path: &Path, addr: SocketAddr) -> Result<(), RunError> {
    let err = |source| RunError::AdminAddressPath {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, addr.to_string()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })
}

/// Process-unique connection ids (`connection.id`).
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// What a listener serves: its chains, and how a connection picks one.
struct ListenerServe {
    name: String,
    /// The listener's config, for [`config::Listener::select`]; `None`:
    /// always the first chain (the admin listener).
    matcher: Option<config::Listener>,
    /// In [`config::Listener::chains`] order.
    chains: Vec<ChainServe>,
    /// Per chain (same order): its TLS, when it terminates TLS
    /// (`transport_socket`).
    tls: Vec<Option<Arc<tls::ServerTls>>>,
    /// Whether a connection's TLS ClientHello is read before its chain is
    /// chosen (some chain matches `server_names` or terminates TLS).
    inspect: bool,
}

/// One filter chain as it serves.
enum ChainServe {
    /// An HTTP connection manager.
    Http(HttpServe),
    /// A tcp_proxy.
    Tcp(Arc<tcp::TcpProxyServe>),
}

/// The per-connection service maker of an HTTP connection manager.
type MakeService = Arc<dyn Fn(ConnectionInfo) -> ConnService + Send + Sync>;

/// An HTTP connection manager as it serves.
struct HttpServe {
    codec: Codec,
    make: MakeService,
    stats: Arc<ListenerStats>,
    /// The chain's network wasm filters, before the connection manager
    /// (empty: none).
    network: Vec<Arc<FilterPool>>,
    /// The listener's `per_connection_buffer_limit_bytes`, for `network`.
    buffer_limit: usize,
}

/// Counts the TCP connections a listener has open, so a drain can wait for
/// them.
#[derive(Default)]
struct OpenConnections {
    count: AtomicU64,
    idle: tokio::sync::Notify,
}

/// Decrements [`OpenConnections`] when a connection task ends.
struct OpenGuard(Arc<OpenConnections>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Accepts connections until `stop`, gives each to the filter chain it
/// matches, then lets the open ones finish within `drain` (TCP proxy
/// connections still open then are closed).
async fn accept_loop(
    listener: TcpListener,
    serve: Arc<ListenerServe>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let builders: Arc<Vec<Option<Builder<TokioExecutor>>>> = serve
        .chains
        .iter()
        .map(|c| match c {
            ChainServe::Http(h) => {
                let mut b = Builder::new(TokioExecutor::new());
                match h.codec {
                    Codec::Http1 => b = b.http1_only(),
                    Codec::Http2 => b = b.http2_only(),
                    Codec::Auto => {}
                }
                Some(b)
            }
            ChainServe::Tcp(_) => None,
        })
        .collect::<Vec<_>>()
        .into();
    let local = listener.local_addr().ok();
    let graceful = GracefulShutdown::new();
    let open = Arc::new(OpenConnections::default());
    let (close_tx, close_rx) = watch::channel(false);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        log::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let destination = tcp.local_addr().ok().or(local).unwrap_or(peer);
                let info = ConnectionInfo {
                    source: peer,
                    destination,
                    id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
                };
                let serve = serve.clone();
                let builders = builders.clone();
                let watcher = graceful.watcher();
                let open = open.clone();
                let close = close_rx.clone();
                tokio::spawn(async move {
                    serve_connection(
                        &serve, &builders, tcp, destination, info, watcher, open, close,
                    )
                    .await;
                });
            }
        }
    }
    drop(listener);
    let tcp_drained = async {
        loop {
            let idle = open.idle.notified();
            if open.count.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    };
    tokio::select! {
        ((), ()) = async { tokio::join!(graceful.shutdown(), tcp_drained) } => {}
        () = tokio::time::sleep(drain) => {
            log::warn!("connections still open after {drain:?}; closing them");
            let _ = close_tx.send(true);
        }
    }
}

/// Serves one accepted connection: reads its ClientHello when the listener
/// needs it, chooses the filter chain (destination port, SNI), terminates
/// TLS when the chain has a transport socket, and serves the chain.
#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    serve: &ListenerServe,
    builders: &[Option<Builder<TokioExecutor>>],
    tcp: tokio::net::TcpStream,
    destination: SocketAddr,
    info: ConnectionInfo,
    watcher: hyper_util::server::graceful::Watcher,
    open: Arc<OpenConnections>,
    close: watch::Receiver<bool>,
) {
    let peer = info.source;
    let server_name = if serve.inspect {
        match tls::peek_server_name(&tcp, tls::CLIENT_HELLO_TIMEOUT).await {
            Ok(name) => name,
            Err(e) => {
                log::debug!("listener `{}`: connection from {peer}: {e}", serve.name);
                return;
            }
        }
    } else {
        None
    };
    let chain = match &serve.matcher {
        None => Some(0),
        Some(l) => l.select(destination.port(), server_name.as_deref()),
    };
    let Some(ci) = chain else {
        log::debug!(
            "listener `{}`: no filter chain matches the connection from {peer} \
             to {destination}; closing it",
            serve.name
        );
        return;
    };
    match &serve.tls[ci] {
        None => serve_chain(serve, builders, ci, tcp, info, None, watcher, open, close).await,
        Some(t) => {
            let (stream, tls_info) =
                match tokio::time::timeout(tls::CLIENT_HELLO_TIMEOUT, t.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        log::debug!("listener `{}`: TLS handshake with {peer}: {e}", serve.name);
                        return;
                    }
                    Err(_) => {
                        log::debug!(
                            "listener `{}`: TLS handshake with {peer} timed out",
                            serve.name
                        );
                        return;
                    }
                };
            // Without the TLS inspector Envoy records no SNI.
            let tls_info = if serve
                .matcher
                .as_ref()
                .is_some_and(config::Listener::records_server_name)
            {
                tls_info
            } else {
                let mut t = (*tls_info).clone();
                t.requested_server_name.clear();
                Arc::new(t)
            };
            serve_chain(
                serve,
                builders,
                ci,
                stream,
                info,
                Some(tls_info),
                watcher,
                open,
                close,
            )
            .await;
        }
    }
}

/// The in-memory pipe between network filters and the HTTP connection
/// manager after them: bytes in flight each way.
const NETWORK_PIPE: usize = 64 * 1024;

/// Serves chain `ci` on `io` (TCP, or TLS over it with `tls_info`).
#[allow(clippy::too_many_arguments)]
async fn serve_chain<IO>(
    serve: &ListenerServe,
    builders: &[Option<Builder<TokioExecutor>>],
    ci: usize,
    io: IO,
    info: ConnectionInfo,
    tls_info: Option<Arc<vessel_hyper::TlsInfo>>,
    watcher: hyper_util::server::graceful::Watcher,
    open: Arc<OpenConnections>,
    mut close: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.source;
    match (&serve.chains[ci], &builders[ci]) {
        (ChainServe::Http(h), Some(builder)) => {
            let mut svc = (h.make)(info);
            if let Some(t) = &tls_info {
                svc = BoxCloneService::new(tls::with_tls_info(svc, t.clone()));
            }
            if h.network.is_empty() {
                let conn = builder
                    .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc))
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    log::debug!("connection from {peer}: {e}");
                }
                return;
            }
            // Network filters before the connection manager: the bytes pass
            // them as they would before a tcp_proxy, and their "upstream" is
            // the connection manager at the other end of an in-memory pipe
            // (what it writes back is the upstream data).
            let (near, far) = tokio::io::duplex(NETWORK_PIPE);
            let conn = builder
                .serve_connection(TokioIo::new(far), TowerToHyperService::new(svc))
                .into_owned();
            let http = async {
                if let Err(e) = watcher.watch(conn).await {
                    log::debug!("connection from {peer}: {e}");
                }
            };
            let filtered = vessel_hyper::tcp::proxy_filtered(
                io,
                std::future::ready(Ok(near)),
                &h.network,
                vessel_hyper::connection_properties(info, tls_info),
                h.buffer_limit,
                vessel_hyper::tcp::TcpOptions {
                    idle_timeout: None,
                    ..Default::default()
                },
            );
            tokio::join!(http, filtered);
        }
        (ChainServe::Tcp(t), _) => {
            drop(watcher);
            open.count.fetch_add(1, Ordering::AcqRel);
            let _guard = OpenGuard(open);
            tokio::select! {
                () = t.serve(io, info, tls_info) => {}
                _ = close.wait_for(|c| *c) => {}
            }
        }
        (ChainServe::Http(_), None) => {}
    }
}

/// The serving parts of HTTP connection manager `h` (chain `ci` of `l`):
/// its filters started, its router, and the per-connection service.
#[allow(clippy::too_many_arguments)]
fn http_chain(
    host: &FilterHost,
    boot: &Bootstrap,
    l: &config::Listener,
    ci: usize,
    h: &config::HttpManager,
    upstreams: &Upstreams,
    fallbacks: &PolicyFallbacks,
    options: &RunOptions,
) -> Result<(HttpServe, LiveHttp), RunError> {
    let mut filters = Vec::new();
    for (fi, f) in h.wasm_filters.iter().enumerate() {
        let label = filter_label(l, ci, fi, f);
        let code = Arc::new(read_code(f, &label)?);
        filters.push(build_filter(host, f, code, boot, &label, is_policy(h, f))?);
    }
    let stats = Arc::new(ListenerStats::new(&h.stat_prefix));
    let log = Arc::new(AccessLog {
        enabled: options.access_log,
        stats: stats.clone(),
    });
    let layer = VesselLayer::new(filters.iter().map(|f| f.pool.clone()).collect())
        .buffer_limit(l.buffer_limit);
    let routes = Arc::new(RwLock::new(
        Router::new(h.routes.clone(), upstreams.clone(), fallbacks.clone())
            .suppress_envoy_headers(h.suppress_envoy_headers),
    ));
    let live = LiveHttp {
        layer: layer.clone(),
        routes: routes.clone(),
        filters,
    };
    let current_routes = routes.clone();
    let chain = ServiceBuilder::new()
        .layer(layer)
        .service(SwapRouter(routes));
    let make = move |info: ConnectionInfo| -> ConnService {
        let chain = chain.clone();
        let log = log.clone();
        let current_routes = current_routes.clone();
        BoxCloneService::new(tower::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(info);
            router::connection_manager(&mut req);
            current_routes
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .prepare(&mut req);
            let start = Instant::now();
            let head = log.enabled.then(|| {
                (
                    req.method().to_string(),
                    req.uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned(),
                    access::protocol(req.version()),
                )
            });
            let call = chain.clone().oneshot(req);
            let log = log.clone();
            async move {
                let resp = call.await?;
                let status = resp.status().as_u16();
                log.stats.record(status);
                let entry = head.map(|(method, path, protocol)| Entry {
                    start,
                    method,
                    path,
                    protocol,
                    status,
                    bytes_sent: 0,
                });
                Ok::<_, Infallible>(resp.map(|b| LoggedBody::new(b, entry)))
            }
        }))
    };
    Ok((
        HttpServe {
            codec: h.codec,
            make: Arc::new(make),
            stats,
            network: Vec::new(),
            buffer_limit: l.buffer_limit,
        },
        live,
    ))
}

/// How logs and errors name wasm filter `fi` of chain `ci` of `l`.
fn filter_label(l: &config::Listener, ci: usize, fi: usize, f: &WasmFilter) -> String {
    if l.filter_chains.len() + usize::from(l.default_filter_chain.is_some()) > 1 {
        format!(
            "listener `{}` filter chain #{ci} wasm filter #{fi} `{}`",
            l.name, f.name
        )
    } else {
        format!("listener `{}` wasm filter #{fi} `{}`", l.name, f.name)
    }
}

/// The endpoints of `c`, resolved.
fn resolve(c: &config::Cluster) -> Result<Vec<SocketAddr>, RunError> {
    let mut out = Vec::new();
    for e in &c.endpoints {
        let host = format!("{}:{}", e.address, e.port);
        let addrs: Vec<SocketAddr> = match e.address.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, e.port)],
            Err(_) => (e.address.as_str(), e.port)
                .to_socket_addrs()
                .map_err(|source| RunError::Resolve {
                    cluster: c.name.clone(),
                    host: host.clone(),
                    source,
                })?
                .collect(),
        };
        match c.kind {
            ClusterKind::LogicalDns => out.extend(addrs.into_iter().take(1)),
            ClusterKind::Static | ClusterKind::StrictDns => out.extend(addrs),
        }
    }
    Ok(out)
}

/// Whether a filter of `boot` sets `vessel_limits.fuel_per_callback`, so
/// the engine must meter fuel (which slows every guest down a little).
fn needs_fuel(boot: &Bootstrap) -> bool {
    boot.listeners.iter().flat_map(|l| l.chains()).any(|c| {
        let http: &[WasmFilter] = match &c.terminal {
            config::Terminal::Http(h) => &h.wasm_filters,
            config::Terminal::TcpProxy(_) => &[],
        };
        c.network_filters
            .iter()
            .chain(http)
            .any(|f| f.limits.fuel_per_callback.is_some())
    })
}

/// The guest log level matching the host's `-l`.
fn guest_log_level() -> LogLevel {
    match log::max_level() {
        log::LevelFilter::Trace => LogLevel::Trace,
        log::LevelFilter::Debug => LogLevel::Debug,
        log::LevelFilter::Info => LogLevel::Info,
        log::LevelFilter::Warn => LogLevel::Warn,
        log::LevelFilter::Error | log::LevelFilter::Off => LogLevel::Error,
    }
}

/// The host's view of a filter's config (ABI reference §9).
fn plugin_config(f: &WasmFilter, boot: &Bootstrap) -> PluginConfig {
    let mut environment: Vec<(String, String)> = f
        .environment
        .key_values
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for key in &f.environment.host_env_keys {
        if let Ok(v) = std::env::var(key) {
            environment.push((key.clone(), v));
        }
    }
    let mut properties = PropertyMap::new();
    if let Some(node) = &boot.node {
        if !node.id.is_empty() {
            properties.insert_dotted("node.id", node.id.clone());
        }
        if !node.cluster.is_empty() {
            properties.insert_dotted("node.cluster", node.cluster.clone());
        }
    }
    PluginConfig {
        name: f.name.clone(),
        root_id: f.root_id.clone(),
        vm_id: f.vm_id.clone(),
        vm_configuration: f.vm_configuration.clone(),
        configuration: f.configuration.clone(),
        log_level: guest_log_level(),
        allow_on_headers_stop_iteration: f.allow_on_headers_stop_iteration,
        environment,
        properties,
        limits: f.limits.clone(),
        allowed_capabilities: f.allowed_capabilities.clone(),
        hidden: f.hidden.clone(),
    }
}

/// The module bytes of `f`.
fn read_code(f: &WasmFilter, label: &str) -> Result<Vec<u8>, RunError> {
    match &f.code {
        WasmCode::File(path) => std::fs::read(path).map_err(|source| RunError::ReadWasm {
            filter: label.to_owned(),
            path: path.clone(),
            source,
        }),
        WasmCode::Inline(bytes) => Ok(bytes.clone()),
        WasmCode::Fetched { code, .. } => Ok(code.to_vec()),
        // `remote::Resolver::resolve_all` replaces every `Remote` first.
        WasmCode::Remote(r) => Err(RunError::ReadWasm {
            filter: label.to_owned(),
            path: PathBuf::from(&r.uri),
            source: std::io::Error::other("remote code was not fetched"),
        }),
    }
}

/// Loads one filter from `code` and starts its VMs.
/// Whether a route of `l` names `f` in its `vessel_policy_fallback`: then
/// its failures skip it instead of failing the stream.
fn is_policy(h: &config::HttpManager, f: &WasmFilter) -> bool {
    h.routes.policy_plugins().any(|(_, p)| p == f.name)
}

fn build_filter(
    host: &FilterHost,
    f: &WasmFilter,
    code: Arc<Vec<u8>>,
    boot: &Bootstrap,
    label: &str,
    skip_on_failure: bool,
) -> Result<LiveFilter, RunError> {
    let plugin = Plugin::load(&host.engine, &code, plugin_config(f, boot)).map_err(|source| {
        RunError::Load {
            filter: label.to_owned(),
            source,
        }
    })?;
    let stats = host
        .stats
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(f.name.clone())
        .or_default()
        .clone();
    let policy = f.failure_policy;
    let pool = FilterPool::builder(&plugin, &host.env, &host.runtime)
        .vms(host.vms)
        .policy(policy)
        .stats(stats)
        .skip_on_failure(skip_on_failure)
        .build()
        .map_err(|source| RunError::Vm {
            filter: label.to_owned(),
            source,
        })?;
    log::info!(
        "{label}: {} VM(s) started ({}, {})",
        host.vms,
        policy.envoy_name(),
        pool.tier()
    );
    if host.tier_up {
        tier_up(&pool, label);
    }
    Ok(LiveFilter {
        spec: f.clone(),
        code,
        pool,
    })
}

// --- Hook (tiered compilation, issue 12) -----------------------------------

/// A pool whose plugin Winch compiled (`Tier::Baseline`) gets its Cranelift
/// build in the background: compiled on a blocking thread (one such compile
/// at a time, so that filters sharing a module find the first one's build
/// in the module cache, and the workers keep the other cores), then the
/// pool starts the optimized VMs and swaps them in (`FilterPool::upgrade`).
/// A pool dropped meanwhile (a reload replaced it) is left alone. Failures
/// are logged and counted by the pool (`wasm.<plugin>.tier_upgrade_failure`).
fn tier_up(pool: &Arc<FilterPool>, label: &str) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    if pool.tier() != vessel_host::Tier::Baseline {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        log::warn!("{label}: no runtime for the background compile; staying on Winch");
        return;
    };
    let weak = Arc::downgrade(pool);
    let label = label.to_owned();
    rt.spawn_blocking(move || {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(plugin) = weak.upgrade().map(|p| p.plugin()) else {
            return;
        };
        let started = std::time::Instant::now();
        let built = plugin.optimized();
        let compiled = started.elapsed();
        drop(plugin);
        let Some(pool) = weak.upgrade() else {
            log::debug!("{label}: replaced before its optimized build was ready");
            return;
        };
        // An error is logged and counted by the pool.
        if let Ok(true) = pool.optimize_with(built) {
            log::info!("{label}: optimized (Cranelift) VMs serve now; compiled in {compiled:?}");
        }
    });
}
