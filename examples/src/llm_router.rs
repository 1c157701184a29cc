//! Embedding vessel in a Rust LLM router, as sgl-router would: the
//! router keeps its own worker list and HTTP app, and vessel runs two
//! kinds of proxy-wasm filters inside it.
//!
//! * **A routing policy** behind the router's own trait:
//!   [`RoutingPolicy::select_worker`]`(request, workers) -> Option<index>`.
//!   [`WasmPolicy`] adapts a proxy-wasm filter to it: it renders the
//!   workers into the property `vessel.cluster.workers.endpoints` (the text
//!   form `vessel run` serves, docs/envoy-config.md), runs the request
//!   through the filter, and maps the `ip:port` the filter names in
//!   `x-gateway-destination-endpoint` back to an index. Any failure (a
//!   trap, a loop past the deadline, memory exhausted, no choice, an
//!   unknown choice) is `None`. [`WasmPolicy::reload`] swaps the module
//!   atomically; a failed VM is rebuilt on the next decision.
//! * **Middleware** (auth, token limits, PII, billing, moderation) as a
//!   [`VesselLayer`] on the axum app ([`Middleware`]), hot-swapped with
//!   [`VesselLayer::swap_filters`].
//!
//! [`Router`] asks the policy, and falls back to its native policy
//! ([`LeastInFlight`]) when the answer is `None`, out of range or an
//! unhealthy worker, counting each fallback. [`app`] is the axum app:
//! `/v1/*` forwarded to the chosen worker with a pooled hyper-util client,
//! responses streamed frame by frame, in-flight counts kept per worker.
//!
//! The policy runs synchronously on the request's task, as a router's
//! policy trait does: a decision costs microseconds, and a misbehaving
//! filter holds the task at most its `callback_timeout`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use vessel_host::{
    Engine, HeaderMap, HostEnv, Limits, LoadError, MapType, Plugin, PluginConfig, PropertyMap, Vm,
    VmError,
};
use vessel_hyper::{Clusters, FailurePolicy, FilterPool, Runtime, VesselLayer};

/// The cluster name under which [`WasmPolicy`] publishes the workers
/// (`vessel.cluster.workers.endpoints`); the policy's configuration must
/// name it (`guest_llm_policy`'s default).
pub const CLUSTER: &str = "workers";

/// The request header a policy names its worker in (the Gateway API
/// Inference Extension's), as `ip:port`.
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";

/// The response header [`app`] adds: `policy` when the wasm policy's choice
/// was used, `fallback` when the native policy picked.
pub const DECISION_HEADER: &str = "x-router-decision";

/// The largest request body [`app`] reads (the policy decides on it).
pub const MAX_REQUEST_BODY: usize = 16 << 20;

/// A worker as the router knows it when it routes one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether it may get requests (health checks are the router's job).
    pub healthy: bool,
    /// The router's requests to it now.
    pub in_flight: u64,
    /// Its queue depth (waiting requests), if the router knows it (e.g.
    /// from its `/metrics`).
    pub queue: Option<u64>,
}

/// What a policy sees of a request.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    /// The method.
    pub method: http::Method,
    /// The path and query.
    pub path: String,
    /// The headers (after the middleware).
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// A router's load-balancing policy.
pub trait RoutingPolicy: Send + Sync {
    /// The index in `workers` of the worker for `req`, or `None` to let the
    /// router's fallback decide.
    fn select_worker(&self, req: &RouteRequest, workers: &[Worker]) -> Option<usize>;
}

/// The native policy: the healthy worker with the fewest requests in
/// flight (the first of equals).
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastInFlight;

impl RoutingPolicy for LeastInFlight {
    fn select_worker(&self, _req: &RouteRequest, workers: &[Worker]) -> Option<usize> {
        workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.healthy)
            .min_by_key(|(i, w)| (w.in_flight, *i))
            .map(|(i, _)| i)
    }
}

/// Why a policy or middleware module could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The module does not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A VM does not start (instantiation, start-up trap, `on_configure`
    /// returning false).
    #[error(transparent)]
    Start(#[from] VmError),
}

/// Settings of a [`WasmPolicy`].
#[derive(Debug, Clone)]
pub struct WasmPolicyOptions {
    /// VMs, each behind its own lock (decisions run in parallel up to this).
    pub vms: usize,
    /// Linear memory limit of each VM.
    pub memory_bytes: usize,
    /// Deadline of each guest callback.
    pub callback_timeout: Duration,
}

impl Default for WasmPolicyOptions {
    fn default() -> Self {
        Self {
            vms: 2,
            memory_bytes: 64 << 20,
            callback_timeout: Limits::DEFAULT_CALLBACK_TIMEOUT,
        }
    }
}

/// Counters of a [`WasmPolicy`].
#[derive(Debug, Default)]
pub struct PolicyStats {
    decisions: AtomicU64,
    failures: AtomicU64,
    no_choice: AtomicU64,
    unknown_choice: AtomicU64,
    rebuilds: AtomicU64,
    reloads: AtomicU64,
}

impl PolicyStats {
    /// Decisions asked for.
    pub fn decisions(&self) -> u64 {
        self.decisions.load(Ordering::Relaxed)
    }
    /// Decisions the filter failed (trap, deadline, memory, a VM that did
    /// not rebuild).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
    /// Decisions where the filter named no worker.
    pub fn no_choice(&self) -> u64 {
        self.no_choice.load(Ordering::Relaxed)
    }
    /// Decisions where it named something that is not a worker.
    pub fn unknown_choice(&self) -> u64 {
        self.unknown_choice.load(Ordering::Relaxed)
    }
    /// Failed VMs replaced by a fresh one.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }
    /// Successful [`WasmPolicy::reload`]s.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }
}

/// One loaded policy module and its VMs.
struct PolicyModule {
    plugin: Plugin,
    /// `None`: the VM failed and is rebuilt on the next decision that
    /// picks this slot.
    slots: Vec<Mutex<Option<Vm>>>,
    next: AtomicUsize,
}

impl PolicyModule {
    /// A free slot if there is one, else waits for the next in turn.
    fn slot(&self) -> MutexGuard<'_, Option<Vm>> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(guard) = self.slots[(start + i) % n].try_lock() {
                return guard;
            }
        }
        self.slots[start % n]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A [`RoutingPolicy`] backed by a proxy-wasm filter (see the module docs).
pub struct WasmPolicy {
    engine: Engine,
    env: HostEnv,
    options: WasmPolicyOptions,
    current: RwLock<Arc<PolicyModule>>,
    reloading: Mutex<()>,
    stats: PolicyStats,
}

impl std::fmt::Debug for WasmPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmPolicy")
            .field("options", &self.options)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl WasmPolicy {
    /// Loads `wasm` with `configuration` (the plugin configuration) and
    /// starts its VMs.
    pub fn new(
        engine: &Engine,
        wasm: &[u8],
        configuration: &[u8],
        options: WasmPolicyOptions,
    ) -> Result<Self, RouterError> {
        let env = HostEnv::default();
        let module = Self::build(engine, &env, &options, wasm, configuration)?;
        Ok(Self {
            engine: engine.clone(),
            env,
            options,
            current: RwLock::new(Arc::new(module)),
            reloading: Mutex::new(()),
            stats: PolicyStats::default(),
        })
    }

    fn build(
        engine: &Engine,
        env: &HostEnv,
        options: &WasmPolicyOptions,
        wasm: &[u8],
        configuration: &[u8],
    ) -> Result<PolicyModule, RouterError> {
        let mut config = PluginConfig::named("router_policy");
        config.configuration = configuration.to_vec();
        // The policy decides on the body: its headers callback pauses.
        config.allow_on_headers_stop_iteration = true;
        config.limits.memory_bytes = options.memory_bytes;
        config.limits.callback_timeout = Some(options.callback_timeout);
        let plugin = Plugin::load(engine, wasm, config)?;
        let slots = (0..options.vms.max(1))
            .map(|_| Vm::new(&plugin, env).map(|vm| Mutex::new(Some(vm))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PolicyModule {
            plugin,
            slots,
            next: AtomicUsize::new(0),
        })
    }

    /// Replaces the module (or only its configuration) atomically: new
    /// decisions use the new VMs, decisions in flight finish on the old
    /// ones. If the new module does not load or start, the old one keeps
    /// deciding and the error is returned.
    pub fn reload(&self, wasm: &[u8], configuration: &[u8]) -> Result<(), RouterError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let module = Self::build(&self.engine, &self.env, &self.options, wasm, configuration)
            .inspect_err(|e| {
                log::error!("policy reload refused, the old one keeps deciding: {e}")
            })?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(module);
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> &PolicyStats {
        &self.stats
    }

    fn module(&self) -> Arc<PolicyModule> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The text of `vessel.cluster.<name>.endpoints`: `<ip:port> <healthy>
/// <in_flight> <running> <waiting> <kv_cache> <scrape_age_ms>`, `-` for
/// what the router does not know.
pub fn render_endpoints(workers: &[Worker]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(workers.len() * 40);
    for w in workers {
        let _ = write!(
            text,
            "{} {} {} - ",
            w.addr,
            u8::from(w.healthy),
            w.in_flight
        );
        match w.queue {
            Some(q) => {
                let _ = writeln!(text, "{q} - -");
            }
            None => text.push_str("- - -\n"),
        }
    }
    text
}

/// The request as the filter's header map: pseudo-headers, then the rest.
fn request_headers(req: &RouteRequest) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(req.headers.len() + 4);
    map.append(b":method", req.method.as_str().as_bytes());
    map.append(b":path", req.path.as_bytes());
    let authority = req
        .headers
        .get(header::HOST)
        .map_or(&b"router"[..], HeaderValue::as_bytes);
    map.append(b":authority", authority);
    map.append(b":scheme", b"http");
    for (name, value) in &req.headers {
        if name != header::HOST {
            map.append(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    map
}

/// One decision on `vm`: the header value the filter set, if any.
fn decide(vm: &mut Vm, req: &RouteRequest, endpoints: String) -> Result<Option<Vec<u8>>, VmError> {
    let mut properties = PropertyMap::new();
    properties.insert_dotted(&format!("vessel.cluster.{CLUSTER}.endpoints"), endpoints);
    let ctx = vm.create_http_context_with(properties)?;
    let run = (|| {
        let has_body = !req.body.is_empty();
        vm.on_request_headers(ctx, request_headers(req), !has_body)?;
        if has_body {
            vm.on_request_body(ctx, &req.body, true)?;
        }
        Ok(vm
            .headers(ctx, MapType::HttpRequestHeaders)
            .and_then(|h| h.get(DESTINATION_HEADER.as_bytes()))
            .map(<[u8]>::to_vec))
    })();
    let finished = vm.finish_http_stream(ctx);
    // Local replies, logs, metrics: a policy only picks here.
    vm.drain_effects();
    let choice = run?;
    finished?;
    Ok(choice)
}

impl RoutingPolicy for WasmPolicy {
    fn select_worker(&self, req: &RouteRequest, workers: &[Worker]) -> Option<usize> {
        self.stats.decisions.fetch_add(1, Ordering::Relaxed);
        let module = self.module();
        let mut slot = module.slot();
        if slot.is_none() {
            match Vm::new(&module.plugin, &self.env) {
                Ok(vm) => {
                    self.stats.rebuilds.fetch_add(1, Ordering::Relaxed);
                    *slot = Some(vm);
                }
                Err(e) => {
                    log::error!("policy VM does not rebuild: {e}");
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        let vm = slot.as_mut()?;
        let result = decide(vm, req, render_endpoints(workers));
        if vm.is_failed() {
            *slot = None;
        }
        drop(slot);
        let chosen = match result {
            Ok(Some(chosen)) => chosen,
            Ok(None) => {
                self.stats.no_choice.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Err(e) => {
                log::warn!("policy failed, the router falls back: {e}");
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let found = std::str::from_utf8(&chosen)
            .ok()
            .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            .and_then(|addr| workers.iter().position(|w| w.addr == addr));
        if found.is_none() {
            self.stats.unknown_choice.fetch_add(1, Ordering::Relaxed);
        }
        found
    }
}

/// A worker's live state, shared with the in-flight guards.
#[derive(Debug)]
struct WorkerState {
    addr: SocketAddr,
    healthy: AtomicBool,
    in_flight: AtomicU64,
    /// `u64::MAX`: unknown.
    queue: AtomicU64,
}

/// Counts one request to a worker until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<WorkerState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where [`Router::route`] sends a request.
#[derive(Debug)]
pub struct Routed {
    /// The worker's index.
    pub index: usize,
    /// Its address.
    pub addr: SocketAddr,
    /// True if the policy's choice was used, false if the fallback picked.
    pub by_policy: bool,
    /// Keeps the worker's in-flight count up while it lives.
    pub in_flight: InFlight,
}

/// A router: its workers, a policy, and the native fallback.
pub struct Router {
    workers: Vec<Arc<WorkerState>>,
    policy: Arc<dyn RoutingPolicy>,
    fallback: Box<dyn RoutingPolicy>,
    fallbacks: AtomicU64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("workers", &self.workers())
            .field("fallbacks", &self.fallbacks())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router over `addrs` (all healthy, queues unknown) asking `policy`,
    /// with [`LeastInFlight`] as the fallback.
    pub fn new(addrs: &[SocketAddr], policy: Arc<dyn RoutingPolicy>) -> Self {
        Self {
            workers: addrs
                .iter()
                .map(|&addr| {
                    Arc::new(WorkerState {
                        addr,
                        healthy: AtomicBool::new(true),
                        in_flight: AtomicU64::new(0),
                        queue: AtomicU64::new(u64::MAX),
                    })
                })
                .collect(),
            policy,
            fallback: Box::new(LeastInFlight),
            fallbacks: AtomicU64::new(0),
        }
    }

    /// The workers now.
    pub fn workers(&self) -> Vec<Worker> {
        self.workers
            .iter()
            .map(|w| Worker {
                addr: w.addr,
                healthy: w.healthy.load(Ordering::Relaxed),
                in_flight: w.in_flight.load(Ordering::Relaxed),
                queue: match w.queue.load(Ordering::Relaxed) {
                    u64::MAX => None,
                    q => Some(q),
                },
            })
            .collect()
    }

    /// Marks worker `index` healthy or not (false if there is none).
    pub fn set_healthy(&self, index: usize, healthy: bool) -> bool {
        self.workers
            .get(index)
            .map(|w| w.healthy.store(healthy, Ordering::Relaxed))
            .is_some()
    }

    /// Sets worker `index`'s queue depth, as a metrics scrape would (false
    /// if there is no such worker).
    pub fn set_queue(&self, index: usize, queue: Option<u64>) -> bool {
        self.workers
            .get(index)
            .map(|w| w.queue.store(queue.unwrap_or(u64::MAX), Ordering::Relaxed))
            .is_some()
    }

    /// Requests the fallback routed because the policy's answer was `None`,
    /// out of range or an unhealthy worker.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Picks the worker for `req` and counts it in flight; `None` if no
    /// worker is healthy.
    pub fn route(&self, req: &RouteRequest) -> Option<Routed> {
        let workers = self.workers();
        let (index, by_policy) = match self.policy.select_worker(req, &workers) {
            Some(i) if workers.get(i).is_some_and(|w| w.healthy) => (i, true),
            _ => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                (self.fallback.select_worker(req, &workers)?, false)
            }
        };
        let state = self.workers.get(index)?.clone();
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Routed {
            index,
            addr: state.addr,
            by_policy,
            in_flight: InFlight(state),
        })
    }
}

/// The middleware chain of an [`app`]: a [`VesselLayer`] and what its
/// filter pools need.
#[derive(Debug, Clone)]
pub struct Middleware {
    engine: Engine,
    env: HostEnv,
    runtime: Arc<Runtime>,
    layer: VesselLayer,
}

impl Middleware {
    /// An empty chain.
    pub fn new(engine: &Engine) -> Self {
        Self {
            engine: engine.clone(),
            env: HostEnv::default(),
            runtime: Runtime::new(Clusters::new()),
            layer: VesselLayer::new(Vec::new()),
        }
    }

    /// One filter of the chain: `wasm` with its plugin `name` and
    /// `configuration`, two VMs, `FAIL_CLOSED`. Must run inside a tokio
    /// runtime.
    pub fn filter(
        &self,
        name: &str,
        wasm: &[u8],
        configuration: &[u8],
    ) -> Result<Arc<FilterPool>, RouterError> {
        let mut config = PluginConfig::named(name);
        config.configuration = configuration.to_vec();
        let plugin = Plugin::load(&self.engine, wasm, config)?;
        Ok(FilterPool::new(
            &plugin,
            &self.env,
            &self.runtime,
            2,
            FailurePolicy::FailClosed,
        )?)
    }

    /// The layer (clones share the chain).
    pub fn layer(&self) -> &VesselLayer {
        &self.layer
    }

    /// Replaces the whole chain atomically; streams in flight keep theirs.
    pub fn swap(&self, filters: Vec<Arc<FilterPool>>) {
        self.layer.swap_filters(filters);
    }
}

/// What the app's handler shares.
#[derive(Clone)]
struct AppState {
    router: Arc<Router>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// The router's axum app: every `/v1/*` request goes through the
/// middleware, then to the worker [`Router::route`] picks.
pub fn app(router: Arc<Router>, middleware: &Middleware) -> axum::Router {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(http);
    axum::Router::new()
        .route("/v1/{*rest}", axum::routing::any(forward))
        .with_state(AppState { router, client })
        .layer(middleware.layer().clone())
}

/// Serves `app` on `listener` (TCP_NODELAY on every connection) until the
/// task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

/// Connection-level headers, not forwarded either way.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

fn error(status: StatusCode, message: &str) -> Response {
    let body = format!(
        r#"{{"error":{{"message":"{message}","type":"router_error","param":null,"code":null}}}}"#
    );
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn forward(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let route_req = RouteRequest {
        method: parts.method.clone(),
        path,
        headers: parts.headers,
        body,
    };
    let Some(routed) = state.router.route(&route_req) else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no healthy worker");
    };
    let Ok(uri) = format!("http://{}{}", routed.addr, route_req.path).parse::<http::Uri>() else {
        return error(StatusCode::BAD_REQUEST, "bad path");
    };
    let mut upstream = http::Request::new(Full::new(route_req.body));
    *upstream.method_mut() = route_req.method;
    *upstream.uri_mut() = uri;
    let mut headers = route_req.headers;
    for h in HOP_BY_HOP
        .iter()
        .chain([&header::HOST, &header::CONTENT_LENGTH])
    {
        headers.remove(h);
    }
    *upstream.headers_mut() = headers;
    let resp = match state.client.request(upstream).await {
        Ok(resp) => resp,
        Err(e) => {
            log::warn!("worker {} failed: {e}", routed.addr);
            return error(StatusCode::BAD_GATEWAY, "the worker did not answer");
        }
    };
    let decision = if routed.by_policy {
        "policy"
    } else {
        "fallback"
    };
    let (mut parts, body) = resp.into_parts();
    for h in &HOP_BY_HOP {
        parts.headers.remove(h);
    }
    parts
        .headers
        .insert(DECISION_HEADER, HeaderValue::from_static(decision));
    let body = Body::new(CountedBody {
        inner: body,
        _in_flight: routed.in_flight,
    });
    Response::from_parts(parts, body)
}

/// The worker's response body, passed frame by frame; the request counts
/// as in flight until it ends or the client goes away (dropped).
struct CountedBody {
    inner: Incoming,
    _in_flight: InFlight,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(port: u16, healthy: bool, in_flight: u64, queue: Option<u64>) -> Worker {
        Worker {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            healthy,
            in_flight,
            queue,
        }
    }

    #[test]
    fn endpoints_render_as_vessel_run_serves_them() {
        let text = render_endpoints(&[worker(1, true, 2, Some(7)), worker(2, false, 0, None)]);
        assert_eq!(text, "127.0.0.1:1 1 2 - 7 - -\n127.0.0.1:2 0 0 - - - -\n");
    }

    #[test]
    fn least_in_flight_skips_unhealthy_workers() {
        let req = RouteRequest {
            method: http::Method::GET,
            path: "/".into(),
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
        };
        let ws = [
            worker(1, false, 0, None),
            worker(2, true, 3, None),
            worker(3, true, 1, None),
        ];
        assert_eq!(LeastInFlight.select_worker(&req, &ws), Some(2));
        let none = [worker(1, false, 0, None)];
        assert_eq!(LeastInFlight.select_worker(&req, &none), None);
    }
}
