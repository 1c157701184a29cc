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
//!   debounced by [`WATCH_DEBOUNCE`]), the config is read again and
//!   applied (module `apply`, `Reloader::apply`, which an xDS client calls
//!   with the config it assembles): listeners and clusters are added,
//!   changed and removed by name while serving, wasm filters and routes
//!   swapped ([`vessel_hyper::VesselLayer::swap_filters`]: streams in
//!   flight finish on the old VMs; a filter whose spec and module bytes did
//!   not change keeps its VMs), and connections in flight finish on the
//!   chains they started with, drained as on shutdown (after
//!   [`DRAIN_GRACE`]). Everything is built before anything is switched: if
//!   anything fails (the YAML, a module that does not load, a VM that does
//!   not start or configure, an address in use, a TLS file, a name that
//!   does not resolve) the old config keeps serving and the error is logged
//!   (and returned by `/reload`). Only a new admin address (and fuel
//!   metering the engine was started without) needs a restart.
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
mod apply;
mod clusters;
mod dns;
mod health;
mod lb;
pub mod remote;
mod router;
mod tcp;
pub mod tls;

use std::collections::{BTreeMap, HashSet};
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
use apply::LiveFilter;
pub(crate) use apply::Reloader;
use router::{PolicyFallbacks, Router, RouterBody};

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
    /// How long in-flight connections may take to finish on shutdown, and
    /// after a reload replaced or removed their listener's chains.
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
    /// Reserve the address space of wasmtime's pooling allocator (about
    /// 4 GiB per VM slot, [`vessel_host::PoolingConfig`]) up front, which
    /// makes VMs fast to create (default true). `--no-pooling` turns it
    /// off: for a small `ulimit -v`, and for tools that cap the address
    /// space, such as valgrind (`cargo xtask bench instructions`).
    pub pooling: bool,
}

/// How `vessel run` compiles a module that is not in the module cache
/// (`docs/operations.md`, "Tiered compilation").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compilation {
    /// Winch first, so the filter serves sooner; Cranelift in the
    /// background, stored in the module cache, and the filter's VMs switch
    /// to it: new VMs, so the guest's memory starts over there
    /// (spec-tests/DEVIATIONS.md A9). The default.
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
            pooling: true,
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
    /// The pooling allocator's slots do not fit in the process's address
    /// space; `--no-pooling` serves without reserving them.
    #[error("{0} (`vessel run --no-pooling` reserves no VM slots up front)")]
    Pool(#[source] vessel_host::EngineError),
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
    /// The xDS client cannot start.
    #[error("xDS: {0}")]
    Xds(String),
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
    /// Another part of the new config cannot be built: a listener's
    /// address cannot be bound, a TLS context or a cluster's names do not
    /// resolve.
    #[error(transparent)]
    Build(RunError),
    /// The reload task died, or vessel is shutting down.
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
        // With `dynamic_resources`, the first configuration comes from the
        // control plane (crate::xds).
        let (boot, xds) = if boot.dynamic.is_some() {
            let xds = crate::xds::Xds::start(&boot, &options.config)
                .map_err(|e| RunError::Xds(e.to_string()))?;
            let boot = xds.initial_boot(crate::xds::INITIAL_FETCH_TIMEOUT).await?;
            (boot, Some(xds))
        } else {
            (boot, None)
        };
        serve(boot, threads, options, shutdown, xds).await
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
    boot: Bootstrap,
    vms: usize,
    options: &RunOptions,
    shutdown: impl Future<Output = ()>,
    xds: Option<crate::xds::Xds>,
) -> Result<(), RunError> {
    // The callout clusters and the balancers filters read: empty until the
    // reloader switches the first config in, replaced by every reload.
    let runtime = Runtime::new(vessel_hyper::Clusters::new());
    let balancers = lb::LbRegistry::default();
    let names = runtime.clone();
    let env = HostEnv::builder()
        .known_clusters(move |c| names.knows_cluster(c))
        .property_provider(lb::LbProperties::new(balancers.clone()))
        .build();
    let engine = Engine::new(EngineConfig {
        consume_fuel: needs_fuel(&boot),
        cache: options.module_cache.clone(),
        tiered: options.compilation != Compilation::Cranelift,
        pooling: if options.pooling {
            EngineConfig::default().pooling
        } else {
            None
        },
        ..EngineConfig::default()
    })
    .map_err(|e| match e {
        e @ vessel_host::EngineError::Pool { .. } => RunError::Pool(e),
        e => RunError::Engine(e),
    })?;
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
        remote: Arc::new(remote::Resolver::new(&options.module_cache)),
    };
    let fallbacks = PolicyFallbacks::default();
    let counters = Arc::new(ReloadCounters::default());
    let view = admin::SharedView::default();
    let admin_addr = boot.admin;
    let reloader = Arc::new(Reloader::new(
        host.clone(),
        apply::ReloaderParts {
            path: options.config.clone(),
            fallbacks: fallbacks.clone(),
            lb: balancers,
            view: view.clone(),
            access_log: options.access_log,
            drain: options.drain_timeout,
            counters: counters.clone(),
            admin: admin_addr,
        },
    ));
    // Clusters (with their first health-check round, as Envoy's cluster
    // warming), filters, then the listeners, bound and accepting.
    reloader.start(boot).await?;
    // Updates from the control plane are applied as a reload is.
    if let Some(xds) = &xds {
        let r = reloader.clone();
        xds.set_applier(Arc::new(move |boot| {
            let r = r.clone();
            Box::pin(async move { r.apply(boot).await.map_err(|e| e.to_string()) })
        }));
    }

    let (stop_tx, stop_rx) = watch::channel(Stop::Serve);
    let mut tasks = Vec::new();
    if options.watch && xds.is_none() {
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
    // Kept until shutdown: the admin's chains never change.
    let mut admin_serve = None;
    if let Some(addr) = admin_addr {
        let admin = Arc::new(Admin {
            metrics: env.metrics().clone(),
            fallbacks,
            plugins: host.stats.clone(),
            remote: host.remote.stats(),
            reloads: counters,
            view,
            xds: xds.as_ref().map(crate::xds::Xds::shared),
        });
        let listener = bind(addr).await?;
        let local = listener.local_addr().unwrap_or(addr);
        log::info!("admin on {local}");
        if let Some(path) = &options.admin_address_path {
            write_admin_address(path, local)?;
        }
        let reloader = reloader.clone();
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
                draining: Arc::default(),
                network: Vec::new(),
                buffer_limit: 0,
            })],
            tls: vec![None],
            inspect: false,
        };
        let (serve_tx, serve_rx) = watch::channel(Arc::new(serve));
        admin_serve = Some(serve_tx);
        tasks.push(tokio::spawn(accept_loop(
            Arc::new(listener),
            serve_rx,
            stop_rx.clone(),
            options.drain_timeout,
        )));
    }

    shutdown.await;
    if let Some(xds) = &xds {
        xds.abort();
    }
    tasks.extend(reloader.shutdown().await);
    let _ = stop_tx.send(Stop::Shutdown);
    for t in tasks {
        if let Err(e) = t.await {
            log::warn!("a listener task failed: {e}");
        }
    }
    drop(admin_serve);
    log::info!("all connections closed");
    Ok(())
}

/// Watches the config file and the module files (their directories, so
/// files replaced by a rename are seen) and reloads after changes, once
/// they have been quiet for [`WATCH_DEBOUNCE`].
async fn watch_files(
    reloader: Arc<Reloader>,
    mut stop: watch::Receiver<Stop>,
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
    /// Set when its chains are replaced or its listener removed: HTTP/1
    /// responses then carry `connection: close`.
    draining: Arc<std::sync::atomic::AtomicBool>,
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

/// What an accept loop is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Accept.
    Serve,
    /// The listener was removed or moved: stop accepting and drain, giving
    /// idle HTTP/1 connections [`DRAIN_GRACE`] to be used once more.
    Remove,
    /// vessel is shutting down: stop accepting and drain.
    Shutdown,
}

/// How long the connections of replaced or removed chains stay open before
/// the idle ones are closed: meanwhile each HTTP/1 response carries
/// `connection: close` (HTTP/2 gets GOAWAY when it ends), so a client that
/// sends its next request on a kept-alive connection gets it answered
/// instead of racing the close (bounded by the drain timeout too).
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The connections a listener accepted while it served one
/// [`ListenerServe`]: they are drained together when the listener stops or
/// its chains are replaced.
struct Generation {
    serve: Arc<ListenerServe>,
    builders: Arc<Vec<Option<Builder<TokioExecutor>>>>,
    graceful: GracefulShutdown,
    open: Arc<OpenConnections>,
    close_tx: watch::Sender<bool>,
    close_rx: watch::Receiver<bool>,
}

impl Generation {
    fn new(serve: Arc<ListenerServe>) -> Self {
        let builders = serve
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
        let (close_tx, close_rx) = watch::channel(false);
        Self {
            serve,
            builders,
            graceful: GracefulShutdown::new(),
            open: Arc::new(OpenConnections::default()),
            close_tx,
            close_rx,
        }
    }

    /// Lets the connections finish within `drain` (HTTP connections close
    /// once their requests in flight are answered); those still open then
    /// are closed.
    async fn drain(self, drain: Duration, grace: Duration) {
        let deadline = tokio::time::Instant::now() + drain;
        if !grace.is_zero() {
            for c in &self.serve.chains {
                if let ChainServe::Http(h) = c {
                    h.draining.store(true, Ordering::Relaxed);
                }
            }
            let until = tokio::time::Instant::now() + grace.min(drain);
            while self.graceful.count() > 0 && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let open = self.open;
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
            ((), ()) = async { tokio::join!(self.graceful.shutdown(), tcp_drained) } => {}
            () = tokio::time::sleep_until(deadline) => {
                log::warn!(
                    "listener `{}`: connections still open after {drain:?}; closing them",
                    self.serve.name
                );
                let _ = self.close_tx.send(true);
            }
        }
    }
}

/// Accepts connections until `stop`, gives each to the filter chain it
/// matches in the current `serve` (a new one replaces it for the
/// connections accepted next, and the connections of the old one drain),
/// then lets the open ones finish within `drain` (connections still open
/// then are closed).
async fn accept_loop(
    listener: Arc<TcpListener>,
    mut serve: watch::Receiver<Arc<ListenerServe>>,
    mut stop: watch::Receiver<Stop>,
    drain: Duration,
) {
    let local = listener.local_addr().ok();
    let mut current = Generation::new(serve.borrow_and_update().clone());
    let mut draining = tokio::task::JoinSet::new();
    let mut swappable = true;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = draining.join_next(), if !draining.is_empty() => {}
            changed = serve.changed(), if swappable => {
                if changed.is_err() {
                    swappable = false;
                    continue;
                }
                let next = Generation::new(serve.borrow_and_update().clone());
                let old = std::mem::replace(&mut current, next);
                draining.spawn(old.drain(drain, DRAIN_GRACE));
            }
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        log::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                // A connection accepted after new chains were sent takes
                // them, even if this loop has not seen the change yet.
                if swappable && serve.has_changed().unwrap_or(false) {
                    let next = Generation::new(serve.borrow_and_update().clone());
                    let old = std::mem::replace(&mut current, next);
                    draining.spawn(old.drain(drain, DRAIN_GRACE));
                }
                let _ = tcp.set_nodelay(true);
                let destination = tcp.local_addr().ok().or(local).unwrap_or(peer);
                let info = ConnectionInfo {
                    source: peer,
                    destination,
                    id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
                };
                let serve = current.serve.clone();
                let builders = current.builders.clone();
                let watcher = current.graceful.watcher();
                let open = current.open.clone();
                let close = current.close_rx.clone();
                tokio::spawn(async move {
                    serve_connection(
                        &serve, &builders, tcp, destination, info, watcher, open, close,
                    )
                    .await;
                });
            }
        }
    }
    // Stop accepting: the socket closes unless a listener that took its
    // address over still accepts on it.
    drop(listener);
    let grace = match *stop.borrow() {
        Stop::Remove => DRAIN_GRACE,
        Stop::Serve | Stop::Shutdown => Duration::ZERO,
    };
    tokio::join!(current.drain(drain, grace), async {
        while draining.join_next().await.is_some() {}
    });
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
            // Past the drain timeout (`close`), the connection is dropped.
            if h.network.is_empty() {
                let conn = builder
                    .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc))
                    .into_owned();
                tokio::select! {
                    r = watcher.watch(conn) => {
                        if let Err(e) = r {
                            log::debug!("connection from {peer}: {e}");
                        }
                    }
                    _ = close.wait_for(|c| *c) => {}
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
            tokio::select! {
                _ = async { tokio::join!(http, filtered) } => {}
                _ = close.wait_for(|c| *c) => {}
            }
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

/// The serving parts of HTTP connection manager `h` (a chain of `l`) with
/// its wasm `filters` started and its `router`: the per-connection service
/// and what a reload swaps.
fn http_chain(
    l: &config::Listener,
    h: &config::HttpManager,
    filters: Vec<apply::LiveFilter>,
    router: Router,
    stats: Arc<ListenerStats>,
    access_log: bool,
) -> (HttpServe, apply::LiveHttp) {
    let log = Arc::new(AccessLog {
        enabled: access_log,
        stats: stats.clone(),
    });
    let layer = VesselLayer::new(filters.iter().map(|f| f.pool.clone()).collect())
        .buffer_limit(l.buffer_limit);
    let routes = Arc::new(RwLock::new(router));
    let live = apply::LiveHttp {
        layer: layer.clone(),
        routes: routes.clone(),
        filters,
        stats: stats.clone(),
        stat_prefix: h.stat_prefix.clone(),
    };
    let current_routes = routes.clone();
    let chain = ServiceBuilder::new()
        .layer(layer)
        .service(SwapRouter(routes));
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closing = draining.clone();
    let make = move |info: ConnectionInfo| -> ConnService {
        let chain = chain.clone();
        let log = log.clone();
        let current_routes = current_routes.clone();
        let closing = closing.clone();
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
            let http1 = req.version() < http::Version::HTTP_2;
            let call = chain.clone().oneshot(req);
            let log = log.clone();
            let closing = closing.clone();
            async move {
                let mut resp = call.await?;
                if http1 && closing.load(Ordering::Relaxed) {
                    resp.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
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
    (
        HttpServe {
            codec: h.codec,
            make: Arc::new(make),
            draining,
            network: Vec::new(),
            buffer_limit: l.buffer_limit,
        },
        live,
    )
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
            ClusterKind::Static | ClusterKind::StrictDns | ClusterKind::Eds => out.extend(addrs),
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

/// Whether a route of `l` names `f` in its `vessel_policy_fallback`: then
/// its failures skip it instead of failing the stream.
fn is_policy(h: &config::HttpManager, f: &WasmFilter) -> bool {
    h.routes.policy_plugins().any(|(_, p)| p == f.name)
}

/// Loads one filter from `code` and starts its VMs.
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
    start_filter(host, f, code, &plugin, label, skip_on_failure)
}

/// [`build_filter`] for the same module as `old` under a new
/// configuration: `old`'s compiled code (its Cranelift build once a tiered
/// pool has it) serves the new VMs, nothing is compiled again. Before,
/// every new configuration of a module compiled it again, and on a tiered
/// engine, until the background Cranelift build reached the module cache,
/// that was a new Winch compile each time: seconds for a Go plugin, under
/// the Cranelift compile's load (`xds::push_to_serving_benchmark`).
fn reconfigure_filter(
    host: &FilterHost,
    f: &WasmFilter,
    old: &LiveFilter,
    boot: &Bootstrap,
    label: &str,
    skip_on_failure: bool,
) -> Result<LiveFilter, RunError> {
    let plugin = old.pool.plugin().with_config(plugin_config(f, boot));
    start_filter(host, f, old.code.clone(), &plugin, label, skip_on_failure)
}

/// Starts the VMs of `plugin` for `f` (and, on a tiered engine, its
/// background Cranelift build).
fn start_filter(
    host: &FilterHost,
    f: &WasmFilter,
    code: Arc<Vec<u8>>,
    plugin: &Plugin,
    label: &str,
    skip_on_failure: bool,
) -> Result<LiveFilter, RunError> {
    let stats = host
        .stats
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(f.name.clone())
        .or_default()
        .clone();
    let policy = f.failure_policy;
    let pool = FilterPool::builder(plugin, &host.env, &host.runtime)
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
            log::info!(
                "{label}: optimized (Cranelift) VMs serve now; compiled in {compiled:?} (new VMs: the guest's state starts over, DEVIATIONS.md A9)"
            );
        }
    });
}
