//! The router: the service behind a listener's filter chain, in the place
//! of Envoy's `envoy.filters.http.router`. It matches the route, answers
//! `direct_response` routes itself and forwards the others to their
//! cluster with a pooled hyper-util client. Upstream failures become the
//! local replies Envoy sends (503 / 504, `text/plain`).
//!
//! The route `timeout` is Envoy's: it covers the whole response and starts
//! when the downstream request has ended. If it fires before the response
//! head, the client gets 504 `upstream request timeout`; after the head has
//! left, the stream is reset.
//!
//! Each forwarded response carries a [`vessel_hyper::UpstreamInfo`] (the
//! endpoint, the local address of the connection, the cluster), which
//! becomes the `upstream.*` and `xds.cluster_name` properties of the
//! response path (ABI reference §10.2), and, as Envoy's router adds it,
//! `x-envoy-upstream-service-time` (milliseconds from the end of the
//! downstream request to the response head) unless the router's `suppress_envoy_headers` is
//! set. The filters see it in the response headers.
//!
//! The upstream request keeps the client's authority (`Host` over
//! HTTP/1.1, `:authority` over HTTP/2), as Envoy's router does without a
//! `host_rewrite`; the endpoint only decides where the connection goes.
//!
//! [`connection_manager`] is the part of Envoy's HTTP connection manager
//! that edits a request before the filter chain (with the defaults:
//! `use_remote_address: false`, no trusted hops): hop-by-hop headers go,
//! `x-forwarded-proto` and `x-request-id` (a UUID v4) are added when
//! absent, and an HTTP/1 request's `:scheme` follows `x-forwarded-proto`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{HttpConnector, HttpInfo};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::oneshot;
use tower::Service;
use vessel_hyper::tls::{Conn, Connector, UpstreamTls};
use vessel_hyper::{BoxError, ResponseInfo, RouteInfo, SkippedFilters, UpstreamInfo, VesselBody};

use super::lb::{Balancer, InFlight, Outcome};
use crate::config::{ClusterSpecifier, RetryPolicy, RouteAction, RouteConfig};

/// The router's response body.
pub(crate) type RouterBody = UnsyncBoxBody<Bytes, BoxError>;

/// Envoy's body for a 503 when a cluster has no endpoint.
pub(crate) const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";
/// Envoy's body for a 503 when the upstream refuses the connection.
pub(crate) const CONNECT_FAILURE: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";
/// Envoy's body for a 503 when connecting to the upstream times out.
pub(crate) const CONNECT_TIMEOUT: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection timeout";
/// Envoy's body for a 503 when the upstream connection is lost before the
/// response headers.
pub(crate) const CONNECTION_TERMINATION: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
/// Envoy's body for a 504 when the route timeout fires.
pub(crate) const UPSTREAM_TIMEOUT: &str = "upstream request timeout";

/// The header Envoy's router adds to responses.
const SERVICE_TIME: &str = "x-envoy-upstream-service-time";

/// Headers that describe one hop and are not forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// One cluster's balancer and its client.
pub(crate) struct Upstream {
    /// The endpoints (replaced when a DNS cluster is resolved again), their
    /// state and the pick.
    pub(crate) balancer: Arc<Balancer>,
    http2: bool,
    connect_timeout: Duration,
    /// HTTP/1.1 clusters: a pooled client (the URI names the endpoint; the
    /// `Host` header keeps the client's authority).
    client: Client<Connector, NotifyEnd<Prefixed>>,
    /// TLS to the endpoints (`transport_socket`).
    tls: Option<Arc<UpstreamTls>>,
    /// HTTP/2 clusters: one multiplexed connection per endpoint, so that
    /// `:authority` (taken from the request URI) can be the client's.
    h2: Mutex<HashMap<SocketAddr, H2Conn>>,
}

/// An HTTP/2 connection to one endpoint.
#[derive(Clone)]
struct H2Conn {
    send: http2::SendRequest<NotifyEnd<Prefixed>>,
    local: Option<SocketAddr>,
}

/// Why a request got no response head from the upstream.
#[derive(Debug)]
enum UpstreamError {
    /// The connection could not be made (refused, or timed out).
    Connect { timeout: bool },
    /// The connection was lost before the response head.
    Terminated,
    /// The route's `per_try_timeout` fired before the response head.
    PerTryTimeout,
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        cur = err.source();
    }
    false
}

impl Upstream {
    /// A pooled client for the balancer's endpoints.
    pub(crate) fn new(
        balancer: Arc<Balancer>,
        connect_timeout: Duration,
        http2: bool,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build(Connector::new(connector, tls.clone()));
        Self {
            balancer,
            http2,
            tls,
            connect_timeout,
            client,
            h2: Mutex::new(HashMap::new()),
        }
    }

    /// How long a connection to an endpoint may take.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Whether the cluster speaks HTTP/2.
    pub(crate) fn http2(&self) -> bool {
        self.http2
    }

    /// The cluster's TLS (`transport_socket`), if any.
    pub(crate) fn tls(&self) -> Option<&Arc<UpstreamTls>> {
        self.tls.as_ref()
    }

    /// The HTTP/2 connection to `endpoint`, made when there is none (or
    /// the last one closed).
    async fn h2_conn(&self, endpoint: SocketAddr) -> Result<H2Conn, UpstreamError> {
        let cached = self
            .h2
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&endpoint)
            .filter(|c| !c.send.is_closed())
            .cloned();
        if let Some(c) = cached {
            return Ok(c);
        }
        let tcp = match tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(endpoint),
        )
        .await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                log::debug!("upstream {endpoint}: {e}");
                return Err(UpstreamError::Connect {
                    timeout: e.kind() == std::io::ErrorKind::TimedOut,
                });
            }
            Err(_) => return Err(UpstreamError::Connect { timeout: true }),
        };
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().ok();
        let io = match &self.tls {
            None => Conn::Plain(TokioIo::new(tcp)),
            Some(tls) => {
                let handshake =
                    tokio::time::timeout(self.connect_timeout, tls.handshake(tcp, endpoint.ip()));
                match handshake.await {
                    Ok(Ok(s)) => Conn::Tls(Box::new(TokioIo::new(s))),
                    Ok(Err(e)) => {
                        log::debug!("upstream {endpoint}: TLS handshake: {e}");
                        return Err(UpstreamError::Connect { timeout: false });
                    }
                    Err(_) => return Err(UpstreamError::Connect { timeout: true }),
                }
            }
        };
        let (send, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| {
                log::debug!("upstream {endpoint}: HTTP/2 handshake: {e}");
                UpstreamError::Terminated
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                log::debug!("upstream {endpoint}: HTTP/2 connection: {e}");
            }
        });
        let c = H2Conn { send, local };
        self.h2
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(endpoint, c.clone());
        Ok(c)
    }

    /// Sends `req` to `endpoint`; the response and the local address of
    /// the connection.
    async fn send(
        &self,
        endpoint: SocketAddr,
        req: Request<NotifyEnd<Prefixed>>,
    ) -> Result<(Response<Incoming>, Option<SocketAddr>), UpstreamError> {
        if self.http2 {
            let mut c = self.h2_conn(endpoint).await?;
            c.send
                .ready()
                .await
                .map_err(|_| UpstreamError::Terminated)?;
            let resp = c.send.send_request(req).await.map_err(|e| {
                log::debug!("upstream {endpoint}: {e}");
                UpstreamError::Terminated
            })?;
            return Ok((resp, c.local));
        }
        match self.client.request(req).await {
            Ok(resp) => {
                let local = resp
                    .extensions()
                    .get::<HttpInfo>()
                    .map(HttpInfo::local_addr);
                Ok((resp, local))
            }
            Err(e) => {
                log::debug!("upstream {endpoint}: {e:?}");
                Err(if e.is_connect() {
                    UpstreamError::Connect {
                        timeout: is_timeout(&e),
                    }
                } else {
                    UpstreamError::Terminated
                })
            }
        }
    }

    /// The endpoints in use.
    pub(crate) fn endpoints(&self) -> Vec<SocketAddr> {
        self.balancer.snapshot().iter().map(|e| e.addr).collect()
    }

    /// Replaces the endpoints (new requests use them).
    pub(crate) fn set_endpoints(&self, endpoints: Vec<SocketAddr>) {
        self.balancer.set_endpoints(&endpoints);
    }
}

/// How often each routing policy's choice was not used
/// (`wasm.<plugin>.policy_fallbacks`), by plugin name.
pub(crate) type PolicyFallbacks = Arc<Mutex<std::collections::BTreeMap<String, u64>>>;

/// The upstream clusters by name, shared by every listener.
pub(crate) type Upstreams = Arc<HashMap<String, Arc<Upstream>>>;

/// A listener's router.
#[derive(Clone)]
pub(crate) struct Router {
    routes: Arc<RouteConfig>,
    upstreams: Upstreams,
    /// `wasm.<plugin>.policy_fallbacks`, shared by every router.
    fallbacks: PolicyFallbacks,
    /// The router's `suppress_envoy_headers`.
    suppress_envoy_headers: bool,
    /// Some route has a `name`: only then does [`Router::prepare`] match
    /// the request before the filters.
    named_routes: bool,
}

impl Router {
    pub(crate) fn new(
        routes: RouteConfig,
        upstreams: Upstreams,
        fallbacks: PolicyFallbacks,
    ) -> Self {
        let named_routes = routes
            .virtual_hosts()
            .iter()
            .flat_map(|v| &v.routes)
            .any(|r| !r.name.is_empty());
        Self {
            routes: Arc::new(routes),
            upstreams,
            fallbacks,
            suppress_envoy_headers: false,
            named_routes,
        }
    }

    /// Removes the route table's `internal_only_headers` (every downstream
    /// request is external to vessel; see docs/envoy-config.md).
    pub(crate) fn strip_internal_only(&self, headers: &mut http::HeaderMap) {
        for h in self.routes.internal_only_headers() {
            headers.remove(h.as_str());
        }
    }

    /// Gets a downstream request ready for the filters: strips the route
    /// table's `internal_only_headers` and, when the request matches a
    /// route with a `name`, records it as a [`RouteInfo`] (the
    /// `xds.route_name` and `route_name` properties). Envoy matches the
    /// route before the filters too; vessel does not match again when a
    /// filter changes the headers (Envoy does after `clearRouteCache`),
    /// so the name is the one of the request as it arrived.
    pub(crate) fn prepare<B>(&self, req: &mut Request<B>) {
        self.strip_internal_only(req.headers_mut());
        if !self.named_routes {
            return;
        }
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let host = authority(req);
        let name = self
            .routes
            .find_route(&host, path, |name| header_value(req, name))
            .map(|r| r.name.as_str())
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        if let Some(name) = name {
            req.extensions_mut().insert(RouteInfo { name });
        }
    }

    /// Sets the router's `suppress_envoy_headers`.
    pub(crate) fn suppress_envoy_headers(mut self, suppress: bool) -> Self {
        self.suppress_envoy_headers = suppress;
        self
    }
}

/// A random UUID v4 in its text form (Envoy's `x-request-id`): 122 bits
/// from the process's random hashing keys, a counter and the clock.
fn uuid_v4() -> String {
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let keys = KEYS.get_or_init(std::collections::hash_map::RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let word = |salt: u64| {
        let mut h = keys.build_hasher();
        h.write_u64(salt);
        h.write_u64(n);
        h.write_u128(nanos);
        h.finish()
    };
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&word(1).to_be_bytes());
    b[8..].copy_from_slice(&word(2).to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    // 8-4-4-4-12 hex digits, written in place (no allocation per byte).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 36];
    let mut at = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text[at] = b'-';
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    text.iter().map(|&c| char::from(c)).collect()
}

/// What Envoy's HTTP connection manager does to a request before the
/// filter chain, with its defaults (`use_remote_address: false`, no
/// trusted hops, no tracing):
///
/// * the hop-by-hop headers `connection`, `keep-alive`,
///   `proxy-connection`, `transfer-encoding` and `upgrade` are removed (an
///   upgrade keeps `connection` and `upgrade`);
/// * `x-forwarded-proto` is added (`http`) when absent, a client's value is
///   kept; `x-forwarded-for` is left as the client sent it;
/// * `x-request-id` is added (a random UUID v4) when absent;
/// * over HTTP/1, `:scheme` is the `x-forwarded-proto` value when that is
///   `http` or `https`.
pub(crate) fn connection_manager<B>(req: &mut Request<B>) {
    let upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    let h = req.headers_mut();
    for name in ["keep-alive", "proxy-connection", "transfer-encoding"] {
        h.remove(name);
    }
    if !upgrade {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
    if !h.contains_key("x-forwarded-proto") {
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if !h.contains_key("x-request-id")
        && let Ok(v) = HeaderValue::from_str(&uuid_v4())
    {
        h.insert("x-request-id", v);
    }
    if req.version() < Version::HTTP_2 {
        let scheme = match req
            .headers()
            .get("x-forwarded-proto")
            .map(HeaderValue::as_bytes)
        {
            Some(b"https") => "https",
            _ => "http",
        };
        let host = authority(req);
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        if !host.is_empty()
            && let Ok(u) = format!("{scheme}://{host}{path}").parse()
        {
            *req.uri_mut() = u;
        }
    }
}

/// A [`local_reply`] of the router that says why, as Envoy's stream info
/// does: the `response.code_details` and `response.flags` properties
/// ([`ResponseInfo`]).
fn router_reply(status: StatusCode, body: &str, details: &str, flags: u64) -> Response<RouterBody> {
    let mut resp = local_reply(status, body);
    resp.extensions_mut()
        .insert(ResponseInfo::new(details, flags));
    resp
}

/// A local reply with a `text/plain` body (empty body: no content type).
pub(crate) fn local_reply(status: StatusCode, body: &str) -> Response<RouterBody> {
    let mut resp = Response::new(
        Full::new(Bytes::copy_from_slice(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    if !body.is_empty() {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    resp
}

/// The request's authority: the URI's (HTTP/2, absolute form) or `Host`.
fn authority<B>(req: &Request<B>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// A header's value for route matching: pseudo-headers from the request
/// head, repeated headers joined with `,` (as Envoy matches them).
fn header_value<B>(req: &Request<B>, name: &str) -> Option<String> {
    match name {
        ":method" => return Some(req.method().as_str().to_owned()),
        ":path" => {
            return Some(
                req.uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned(),
            );
        }
        ":authority" => return Some(authority(req)),
        ":scheme" => return Some(req.uri().scheme_str().unwrap_or("http").to_owned()),
        _ => {}
    }
    let values: Vec<&str> = req
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(HeaderName::from_static(name));
    }
}

impl Service<Request<VesselBody>> for Router {
    type Response = Response<RouterBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<VesselBody>) -> Self::Future {
        let router = self.clone();
        Box::pin(async move { Ok(router.handle(req).await) })
    }
}

impl Router {
    /// The cluster a forwarding route sends this request to, if there is
    /// one (Envoy answers 503 with no body when there is not).
    fn target<'r>(
        &'r self,
        spec: &'r ClusterSpecifier,
        req: &Request<VesselBody>,
    ) -> Option<(&'r str, &'r Arc<Upstream>)> {
        let name: &str = match spec {
            ClusterSpecifier::Named(n) => n,
            ClusterSpecifier::Header(h) => {
                match req.headers().get(h.as_str()).and_then(|v| v.to_str().ok()) {
                    Some(v) => match self.upstreams.get_key_value(v) {
                        Some((k, _)) => k,
                        None => {
                            log::debug!("cluster_header {h}: no cluster `{v}`");
                            return None;
                        }
                    },
                    None => {
                        log::debug!("cluster_header {h}: absent");
                        return None;
                    }
                }
            }
            ClusterSpecifier::Weighted(w) => pick_weighted(w),
        };
        // The config reader checks named and weighted references.
        self.upstreams
            .get_key_value(name)
            .map(|(k, u)| (k.as_str(), u))
    }

    async fn handle(self, mut req: Request<VesselBody>) -> Response<RouterBody> {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let host = authority(&req);
        let Some(route) = self
            .routes
            .find_route(&host, &path, |name| header_value(&req, name))
        else {
            log::debug!("no route for {host}{path}");
            return router_reply(
                StatusCode::NOT_FOUND,
                "",
                "route_not_found",
                ResponseInfo::NO_ROUTE_FOUND,
            );
        };
        let (spec, timeout, retry, fallback) = match &route.action {
            RouteAction::Direct { status, body } => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
                return router_reply(status, body.as_deref().unwrap_or(""), "direct_response", 0);
            }
            RouteAction::Cluster {
                cluster,
                timeout,
                retry,
                policy_fallback,
                ..
            } => (cluster, *timeout, retry.as_ref(), policy_fallback.as_ref()),
        };
        // The route's routing policy failed (its filter was skipped): its
        // choices are not used.
        let policy_failed = fallback.is_some_and(|f| {
            req.extensions()
                .get::<SkippedFilters>()
                .is_some_and(|s| s.0.contains(&f.plugin))
        });
        let mut fell_back = policy_failed;
        let fallback_cluster = || {
            fallback
                .and_then(|f| f.cluster.as_deref())
                .and_then(|c| self.upstreams.get_key_value(c))
                .map(|(k, u)| (k.as_str(), u))
        };
        let target = if policy_failed && matches!(spec, ClusterSpecifier::Header(_)) {
            fallback_cluster()
        } else {
            self.target(spec, &req).or_else(|| {
                let f = fallback_cluster();
                fell_back |= f.is_some();
                f
            })
        };
        let Some((cluster, upstream)) = target else {
            return router_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "",
                "cluster_not_found",
                ResponseInfo::NO_CLUSTER_FOUND,
            );
        };
        let upstream_path = route.rewritten_path(&path).unwrap_or(path);
        // The override-host policy reads the request as the filters left it.
        let override_ep = if policy_failed {
            None
        } else {
            upstream
                .balancer
                .override_headers()
                .iter()
                .find_map(|h| req.headers().get(h))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| upstream.balancer.pick_override(v))
        };
        if let Some(f) = fallback {
            // A policy that named no usable endpoint falls back too.
            fell_back |= override_ep.is_none() && !upstream.balancer.override_headers().is_empty();
            if fell_back {
                log::debug!(
                    "route policy `{}`: fallback to the cluster's policy",
                    f.plugin
                );
                *self
                    .fallbacks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(f.plugin.clone())
                    .or_default() += 1;
            }
        }
        // HTTP/2: the URI names the client's authority, which becomes
        // `:authority`; the connection goes to the endpoint all the same.
        // HTTP/1.1: the URI names the endpoint (set per try) and `Host`
        // keeps the client's authority.
        *req.version_mut() = if upstream.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        strip_hop_by_hop(req.headers_mut());
        if upstream.http2 {
            // The authority travels as `:authority`, taken from the URI.
            req.headers_mut().remove(header::HOST);
        } else if !host.is_empty()
            && !req.headers().contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(&host)
        {
            req.headers_mut().insert(header::HOST, v);
        }
        let (parts, body) = req.into_parts();
        // A route with retries buffers the request body (up to
        // RETRY_BUFFER_LIMIT) so that a retry can send it again.
        let mut body = match retry {
            Some(_) => Prefixed::collect(body, RETRY_BUFFER_LIMIT).await,
            None => Prefixed::stream(body),
        };
        let tries = match retry {
            Some(r) if body.replayable() => r.num_retries.saturating_add(1),
            Some(_) => {
                log::debug!("request body over {RETRY_BUFFER_LIMIT} bytes: sent without retries");
                1
            }
            None => 1,
        };

        // The route timeout starts when the downstream request has ended.
        let (ended, request_done) = oneshot::channel();
        let mut ended = Some(ended);
        let ended_at = Arc::new(OnceLock::new());
        let mut deadline: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = timeout.map(|t| {
            Box::pin(async move {
                let _ = request_done.await;
                tokio::time::sleep(t).await;
            }) as Pin<Box<dyn Future<Output = ()> + Send>>
        });
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last_error = None;
        for attempt in 0..tries {
            if attempt > 0 {
                upstream
                    .balancer
                    .counters
                    .retries
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(r) = retry {
                    let wait = Balancer::backoff(r.backoff_base, r.backoff_max, attempt);
                    let sleep = tokio::time::sleep(wait);
                    match deadline.as_mut() {
                        Some(d) => tokio::select! {
                            () = sleep => {}
                            () = d => return timeout_reply(),
                        },
                        None => sleep.await,
                    }
                }
            }
            let ep = match (&override_ep, attempt) {
                (Some(ep), 0) => ep.clone(),
                _ => {
                    let (avoid, picks) = match retry {
                        Some(r) if r.previous_hosts => {
                            (tried.as_slice(), r.host_selection_attempts)
                        }
                        _ => (&[][..], 1),
                    };
                    match upstream.balancer.pick(avoid, picks) {
                        Some(ep) => ep,
                        None => {
                            return router_reply(
                                StatusCode::SERVICE_UNAVAILABLE,
                                NO_HEALTHY_UPSTREAM,
                                "no_healthy_upstream",
                                ResponseInfo::NO_HEALTHY_UPSTREAM,
                            );
                        }
                    }
                }
            };
            let endpoint = ep.addr;
            tried.push(endpoint);
            let uri = if upstream.http2 && !host.is_empty() {
                format!("http://{host}{upstream_path}")
            } else {
                format!("http://{endpoint}{upstream_path}")
            };
            let Ok(uri) = uri.parse::<http::Uri>() else {
                return local_reply(StatusCode::BAD_REQUEST, "");
            };
            let mut try_req = Request::new(NotifyEnd::new(
                body.for_try(attempt + 1 < tries),
                ended.take(),
                ended_at.clone(),
            ));
            *try_req.method_mut() = parts.method.clone();
            *try_req.uri_mut() = uri;
            *try_req.version_mut() = parts.version;
            *try_req.headers_mut() = parts.headers.clone();
            let in_flight = InFlight::new(ep.clone());
            let per_try = retry.and_then(|r| r.per_try_timeout);
            let call = async {
                match per_try {
                    Some(t) => tokio::time::timeout(t, upstream.send(endpoint, try_req))
                        .await
                        .unwrap_or(Err(UpstreamError::PerTryTimeout)),
                    None => upstream.send(endpoint, try_req).await,
                }
            };
            let result = match deadline.as_mut() {
                Some(d) => tokio::select! {
                    r = call => r,
                    () = d => {
                        log::debug!("upstream {cluster} ({endpoint}): route timeout before the response head");
                        upstream.balancer.report(&ep, Outcome::Failure);
                        return timeout_reply();
                    }
                },
                None => call.await,
            };
            let more = attempt + 1 < tries;
            match result {
                Ok((resp, local)) => {
                    let status = resp.status().as_u16();
                    upstream.balancer.report(&ep, Outcome::Status(status));
                    if more && retry.is_some_and(|r| retries_status(r, status)) {
                        log::debug!("upstream {cluster} ({endpoint}): {status}, retrying");
                        continue;
                    }
                    return self.forward(
                        resp, local, endpoint, cluster, &ended_at, deadline, in_flight,
                    );
                }
                Err(e) => {
                    log::debug!("upstream {cluster} ({endpoint}): {e:?}");
                    upstream.balancer.report(&ep, Outcome::Failure);
                    if more && retry.is_some_and(|r| retries_error(r, &e)) {
                        last_error = Some(e);
                        continue;
                    }
                    return error_reply(&e);
                }
            }
        }
        // Every try was retried away: only reachable when the last try's
        // outcome was itself retriable, which `more` prevents; answer as for
        // the last error.
        error_reply(&last_error.unwrap_or(UpstreamError::Terminated))
    }

    /// The upstream's answer, on its way to the filters and the client.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        resp: Response<Incoming>,
        local: Option<SocketAddr>,
        endpoint: SocketAddr,
        cluster: &str,
        ended_at: &OnceLock<Instant>,
        deadline: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
        in_flight: InFlight,
    ) -> Response<RouterBody> {
        let (mut parts, body) = resp.into_parts();
        // `transfer-encoding` stays: Envoy's filters see it on an
        // HTTP/1.1 chunked response, and the downstream codec
        // frames the body itself (hyper drops it over HTTP/2).
        for name in HOP_BY_HOP {
            if name != "transfer-encoding" {
                parts.headers.remove(HeaderName::from_static(name));
            }
        }
        if !self.suppress_envoy_headers {
            parts.headers.insert(
                HeaderName::from_static(SERVICE_TIME),
                HeaderValue::from(
                    u64::try_from(
                        ended_at
                            .get()
                            .map_or(Duration::ZERO, Instant::elapsed)
                            .as_millis(),
                    )
                    .unwrap_or(u64::MAX),
                ),
            );
        }
        parts.extensions.insert(UpstreamInfo {
            address: endpoint,
            local_address: local,
            cluster: Some(cluster.to_owned()),
        });
        let body = Deadline {
            inner: body.map_err(BoxError::from),
            deadline,
            _in_flight: in_flight,
        };
        Response::from_parts(parts, body.boxed_unsync())
    }
}

/// The most request-body bytes a route with retries keeps to send again
/// (Envoy's default `per_request_buffer_limit_bytes`, 1 MiB). A longer body
/// is streamed and the request is not retried.
pub(crate) const RETRY_BUFFER_LIMIT: usize = 1 << 20;

/// Picks a weighted cluster (weights sum to more than 0, checked at load).
fn pick_weighted(w: &[(String, u32)]) -> &str {
    let total: u64 = w.iter().map(|(_, n)| u64::from(*n)).sum();
    let mut at = super::lb::random_u64() % total.max(1);
    for (name, weight) in w {
        if at < u64::from(*weight) {
            return name;
        }
        at -= u64::from(*weight);
    }
    w.last().map_or("", |(n, _)| n)
}

/// Whether `retry_on` retries an answer with `status`.
fn retries_status(r: &RetryPolicy, status: u16) -> bool {
    let on = r.retry_on;
    (on.any_5xx && status >= 500)
        || (on.gateway_error && matches!(status, 502..=504))
        || (on.retriable_status_codes && r.retriable_status_codes.contains(&status))
}

/// Whether `retry_on` retries a try that got no answer (a connect failure
/// is a reset too, as in Envoy's `wouldRetryFromReset`).
fn retries_error(r: &RetryPolicy, e: &UpstreamError) -> bool {
    let on = r.retry_on;
    let connect = matches!(e, UpstreamError::Connect { .. });
    on.any_5xx || on.gateway_error || on.reset || (on.connect_failure && connect)
}

/// Envoy's 504 when the route timeout fires before the response head.
fn timeout_reply() -> Response<RouterBody> {
    router_reply(
        StatusCode::GATEWAY_TIMEOUT,
        UPSTREAM_TIMEOUT,
        "upstream_response_timeout",
        ResponseInfo::UPSTREAM_REQUEST_TIMEOUT,
    )
}

/// Envoy's local reply for a try that got no answer.
fn error_reply(e: &UpstreamError) -> Response<RouterBody> {
    match e {
        UpstreamError::Connect { timeout: false } => router_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            CONNECT_FAILURE,
            "upstream_reset_before_response_started{remote_connection_failure}",
            ResponseInfo::UPSTREAM_CONNECTION_FAILURE,
        ),
        UpstreamError::Connect { timeout: true } => router_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            CONNECT_TIMEOUT,
            "upstream_reset_before_response_started{connection_timeout}",
            ResponseInfo::UPSTREAM_CONNECTION_FAILURE,
        ),
        UpstreamError::Terminated => router_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            CONNECTION_TERMINATION,
            "upstream_reset_before_response_started{connection_termination}",
            ResponseInfo::UPSTREAM_CONNECTION_TERMINATION,
        ),
        UpstreamError::PerTryTimeout => router_reply(
            StatusCode::GATEWAY_TIMEOUT,
            UPSTREAM_TIMEOUT,
            "upstream_per_try_timeout",
            ResponseInfo::UPSTREAM_REQUEST_TIMEOUT,
        ),
    }
}

/// An upstream request body: a buffered prefix (and trailers), then the
/// rest of the downstream body. A fully buffered body can be sent again.
pub(crate) struct Prefixed {
    prefix: Option<Bytes>,
    rest: Option<VesselBody>,
    trailers: Option<http::HeaderMap>,
}

impl Prefixed {
    fn stream(body: VesselBody) -> Self {
        Self {
            prefix: None,
            rest: Some(body),
            trailers: None,
        }
    }

    /// Reads `body` until it ends or `limit` bytes are held.
    async fn collect(mut body: VesselBody, limit: usize) -> Self {
        let mut buf = bytes::BytesMut::new();
        let mut trailers = None;
        loop {
            if buf.len() > limit {
                return Self {
                    prefix: Some(buf.freeze()),
                    rest: Some(body),
                    trailers: None,
                };
            }
            match body.frame().await {
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => buf.extend_from_slice(&d),
                    Err(f) => {
                        if let Ok(t) = f.into_trailers() {
                            trailers = Some(t);
                        }
                    }
                },
                Some(Err(e)) => {
                    // The client's body failed: send what came, then end;
                    // the upstream sees a short body, as it would have.
                    log::debug!("request body: {e}");
                    break;
                }
                None => break,
            }
        }
        Self {
            prefix: Some(buf.freeze()),
            rest: None,
            trailers,
        }
    }

    /// True when the whole body is held.
    fn replayable(&self) -> bool {
        self.rest.is_none()
    }

    /// The body of one try: a copy when more tries may follow.
    fn for_try(&mut self, more: bool) -> Self {
        if more && self.replayable() {
            return Self {
                prefix: self.prefix.clone(),
                rest: None,
                trailers: self.trailers.clone(),
            };
        }
        Self {
            prefix: self.prefix.take(),
            rest: self.rest.take(),
            trailers: self.trailers.take(),
        }
    }
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(p) = self.prefix.take()
            && !p.is_empty()
        {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        if let Some(rest) = self.rest.as_mut() {
            let polled = Pin::new(rest).poll_frame(cx);
            if let Poll::Ready(None) = polled {
                self.rest = None;
            } else {
                return polled;
            }
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(Bytes::is_empty)
            && self.rest.as_ref().is_none_or(VesselBody::is_end_stream)
            && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let p = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(p),
            Some(r) => {
                let h = r.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + p);
                if let Some(u) = h.upper() {
                    out.set_upper(u + p);
                }
                out
            }
        }
    }
}

/// A request body that reports when it has ended (or was dropped), and
/// records the instant.
pub(crate) struct NotifyEnd<B> {
    inner: B,
    ended: Option<oneshot::Sender<()>>,
    at: Arc<OnceLock<Instant>>,
}

impl<B: Body> NotifyEnd<B> {
    fn new(inner: B, ended: Option<oneshot::Sender<()>>, at: Arc<OnceLock<Instant>>) -> Self {
        let mut this = Self { inner, ended, at };
        if this.inner.is_end_stream() {
            this.fire();
        }
        this
    }

    fn fire(&mut self) {
        let _ = self.at.set(Instant::now());
        if let Some(tx) = self.ended.take() {
            let _ = tx.send(());
        }
    }
}

impl<B: Body + Unpin> Body for NotifyEnd<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => self.fire(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.fire(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that fails with `upstream request timeout` when the
/// route timeout fires before it has ended (the client's stream is reset).
struct Deadline<B> {
    inner: B,
    deadline: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The endpoint's in-flight count holds until the body is dropped.
    _in_flight: InFlight,
}

impl<B> Body for Deadline<B>
where
    B: Body<Error = BoxError> + Unpin,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        if let Some(d) = self.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            self.deadline = None;
            log::debug!("route timeout while the response body was still flowing");
            return Poll::Ready(Some(Err(UPSTREAM_TIMEOUT.into())));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.deadline = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4_text_and_differ() {
        let a = uuid_v4();
        let b = uuid_v4();
        assert_ne!(a, b);
        for id in [a, b] {
            let bytes = id.as_bytes();
            assert_eq!(bytes.len(), 36, "{id}");
            for (i, c) in bytes.iter().enumerate() {
                if matches!(i, 8 | 13 | 18 | 23) {
                    assert_eq!(*c, b'-', "{id}");
                } else {
                    assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{id}");
                }
            }
            assert_eq!(bytes[14], b'4', "version 4: {id}");
            assert!(b"89ab".contains(&bytes[19]), "RFC 4122 variant: {id}");
        }
    }

    #[test]
    fn match_headers_join_repeated_values() {
        let req = Request::get("/p?q=1")
            .header("host", "example.com")
            .header("x-a", "1")
            .header("x-a", "2")
            .body(())
            .expect("request");
        assert_eq!(header_value(&req, "x-a").as_deref(), Some("1,2"));
        assert_eq!(header_value(&req, ":method").as_deref(), Some("GET"));
        assert_eq!(header_value(&req, ":path").as_deref(), Some("/p?q=1"));
        assert_eq!(
            header_value(&req, ":authority").as_deref(),
            Some("example.com")
        );
        assert_eq!(header_value(&req, "x-missing"), None);
    }
}
