//! `vessel run -c envoy.yaml`: serves the listeners of an Envoy bootstrap
//! (read by [`crate::config`]) with their proxy-wasm HTTP filters in front
//! of a router, plus the admin listener.
//!
//! * Each `envoy.filters.http.wasm` filter becomes a
//!   [`vessel_hyper::FilterPool`] of `concurrency` VMs (ABI reference §9:
//!   plugin and VM configuration; §6.6: failure policy). All filters share
//!   one [`HostEnv`], so shared data, queues and metrics are process-wide as
//!   in Envoy.
//! * The router (module `router`) answers `direct_response` routes, forwards the
//!   others round-robin to their cluster's endpoints, and answers upstream
//!   failures as Envoy does (503 `no healthy upstream`, 503 `upstream
//!   connect error…`, 504 `upstream request timeout`, 404 when no route
//!   matches).
//! * HTTP/1.1 and cleartext HTTP/2 (prior knowledge) on every listener
//!   unless its `codec_type` says otherwise.
//! * SIGTERM or Ctrl-C stops accepting and lets connections in flight
//!   finish (bounded by [`RunOptions::drain_timeout`]), so every stream's
//!   `on_log`/`on_done` runs.
//!
//! * STRICT_DNS / LOGICAL_DNS clusters are resolved at start-up and again
//!   every `dns_refresh_rate` (module `dns`); routes and callouts use the
//!   new endpoints.
//!
//! Not supported yet: `FAIL_RELOAD` (run as `FAIL_CLOSED`, with a warning),
//! capability restriction (accepted, not enforced).

mod access;
mod admin;
mod dns;
mod router;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
use vessel_host::{Engine, HostEnv, LogLevel, Plugin, PluginConfig, PropertyMap};
use vessel_hyper::{ConnectionInfo, FilterPool, Runtime, VesselLayer};

use crate::config::{self, Bootstrap, ClusterKind, Codec, ConfigError, WasmCode, WasmFilter};
use access::{AccessLog, Entry, ListenerStats, LoggedBody};
use admin::Admin;
use router::{Router, Upstream, Upstreams};

/// How long connections in flight may take to finish after a shutdown
/// signal, by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
}

impl RunOptions {
    /// Options for `config` with the defaults.
    pub fn new(config: impl Into<PathBuf>) -> Self {
        Self {
            config: config.into(),
            concurrency: None,
            access_log: false,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
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

/// Serves `boot` until `shutdown` resolves, then drains.
async fn serve(
    boot: Bootstrap,
    vms: usize,
    options: &RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    // Clusters: the router's clients and the callout clusters.
    let mut callout_clusters = vessel_hyper::Clusters::new();
    let mut upstreams = HashMap::new();
    let mut dns_clusters = Vec::new();
    for c in &boot.clusters {
        let endpoints = resolve(c)?;
        callout_clusters.add(vessel_hyper::Cluster {
            name: c.name.clone(),
            endpoints: endpoints.clone(),
            connect_timeout: c.connect_timeout,
            http2: c.http2,
        });
        let upstream = Arc::new(Upstream::new(endpoints.clone(), c.connect_timeout, c.http2));
        if matches!(c.kind, ClusterKind::StrictDns | ClusterKind::LogicalDns) {
            let stats = Arc::new(dns::DnsStats::new(&c.name));
            dns::record_startup(&stats, &endpoints);
            dns_clusters.push((c.clone(), upstream.clone(), stats));
        }
        upstreams.insert(c.name.clone(), upstream);
    }
    let upstreams: Upstreams = Arc::new(upstreams);
    let runtime = Runtime::new(callout_clusters);
    let mut dns_stats = Vec::new();
    let mut dns_tasks = Vec::new();
    for (c, upstream, stats) in dns_clusters {
        dns_stats.push(stats.clone());
        dns_tasks.push(dns::spawn_refresh(c, upstream, runtime.clone(), stats));
    }
    let names = runtime.clone();
    let env = HostEnv::builder()
        .known_clusters(move |c| names.knows_cluster(c))
        .build();
    let engine = Engine::default();

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut all_stats = Vec::new();
    let mut bound = Vec::new();
    for l in &boot.listeners {
        let mut pools = Vec::new();
        for (i, f) in l.wasm_filters.iter().enumerate() {
            let label = format!("listener `{}` wasm filter #{i} `{}`", l.name, f.name);
            pools.push(filter_pool(&engine, &env, &runtime, vms, f, &boot, &label)?);
        }
        let stats = Arc::new(ListenerStats::new(&l.stat_prefix));
        all_stats.push(stats.clone());
        let log = Arc::new(AccessLog {
            enabled: options.access_log,
            stats,
        });
        let chain = ServiceBuilder::new()
            .layer(VesselLayer::new(pools).buffer_limit(l.buffer_limit))
            .service(
                Router::new(l.routes.clone(), upstreams.clone())
                    .suppress_envoy_headers(l.suppress_envoy_headers),
            );
        let make = move |info: ConnectionInfo| -> ConnService {
            let chain = chain.clone();
            let log = log.clone();
            BoxCloneService::new(tower::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(info);
                router::connection_manager(&mut req);
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
        let listener = bind(l.addr).await?;
        log::info!(
            "listener `{}` on {}",
            l.name,
            listener.local_addr().unwrap_or(l.addr)
        );
        bound.push((listener, l.codec, make));
    }
    for (listener, codec, make) in bound {
        tasks.push(tokio::spawn(accept_loop(
            listener,
            codec,
            make,
            stop_rx.clone(),
            options.drain_timeout,
        )));
    }

    if let Some(addr) = boot.admin {
        let admin = Arc::new(Admin {
            metrics: env.metrics().clone(),
            listeners: all_stats,
            clusters: dns_stats,
        });
        let listener = bind(addr).await?;
        log::info!("admin on {}", listener.local_addr().unwrap_or(addr));
        let make = move |_info: ConnectionInfo| -> ConnService {
            let admin = admin.clone();
            BoxCloneService::new(tower::service_fn(move |req: Request<Incoming>| {
                let resp = admin.handle(&req);
                async move { Ok::<_, Infallible>(resp.map(|b| LoggedBody::new(b, None))) }
            }))
        };
        tasks.push(tokio::spawn(accept_loop(
            listener,
            Codec::Auto,
            make,
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

async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })
}

/// Process-unique connection ids (`connection.id`).
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// Accepts connections until `stop`, then lets the open ones finish within
/// `drain`.
async fn accept_loop<F>(
    listener: TcpListener,
    codec: Codec,
    make: F,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) where
    F: Fn(ConnectionInfo) -> ConnService + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    match codec {
        Codec::Http1 => builder = builder.http1_only(),
        Codec::Http2 => builder = builder.http2_only(),
        Codec::Auto => {}
    }
    let local = listener.local_addr().ok();
    let graceful = GracefulShutdown::new();
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
                let svc = TowerToHyperService::new(make(info));
                let conn = builder
                    .serve_connection(TokioIo::new(tcp), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        log::debug!("connection from {peer}: {e}");
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(drain) => {
            log::warn!("connections still open after {drain:?}; closing them");
        }
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
    }
}

/// Loads one filter and starts its VMs.
fn filter_pool(
    engine: &Engine,
    env: &HostEnv,
    runtime: &Arc<Runtime>,
    vms: usize,
    f: &WasmFilter,
    boot: &Bootstrap,
    label: &str,
) -> Result<Arc<FilterPool>, RunError> {
    let code = match &f.code {
        WasmCode::File(path) => std::fs::read(path).map_err(|source| RunError::ReadWasm {
            filter: label.to_owned(),
            path: path.clone(),
            source,
        })?,
        WasmCode::Inline(bytes) => bytes.clone(),
    };
    let plugin =
        Plugin::load(engine, &code, plugin_config(f, boot)).map_err(|source| RunError::Load {
            filter: label.to_owned(),
            source,
        })?;
    let policy = match f.failure_policy {
        config::FailurePolicy::FailClosed => vessel_hyper::FailurePolicy::FailClosed,
        config::FailurePolicy::FailOpen => vessel_hyper::FailurePolicy::FailOpen,
        config::FailurePolicy::FailReload => {
            log::warn!("{label}: FAIL_RELOAD is not supported yet; running it as FAIL_CLOSED");
            vessel_hyper::FailurePolicy::FailClosed
        }
    };
    if f.allowed_capabilities.is_some() {
        log::warn!("{label}: capability_restriction_config is not enforced by vessel");
    }
    let pool =
        FilterPool::new(&plugin, env, runtime, vms, policy).map_err(|source| RunError::Vm {
            filter: label.to_owned(),
            source,
        })?;
    log::info!("{label}: {vms} VM(s) started");
    Ok(pool)
}
