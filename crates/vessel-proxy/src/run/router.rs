//! The router: the service behind a listener's filter chain, in the place
//! of Envoy's `envoy.filters.http.router`. It matches the route, answers
//! `direct_response` routes itself and forwards the others to their
//! cluster with a pooled hyper-util client. Upstream failures become the
//! local replies Envoy sends (503 / 504, `text/plain`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::Service;
use vessel_hyper::{BoxError, VesselBody};

use crate::config::{RouteAction, RouteConfig};

/// The router's response body.
pub(crate) type RouterBody = UnsyncBoxBody<Bytes, BoxError>;

/// Envoy's body for a 503 when a cluster has no endpoint.
pub(crate) const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";
/// Envoy's body for a 503 when the upstream connection cannot be made.
pub(crate) const CONNECT_FAILURE: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
/// Envoy's body for a 503 when the upstream connection is lost before the
/// response headers.
pub(crate) const CONNECTION_TERMINATION: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
/// Envoy's body for a 504 when the route timeout fires.
pub(crate) const UPSTREAM_TIMEOUT: &str = "upstream request timeout";

/// Headers that describe one hop and are not forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// One cluster's endpoints and its client.
pub(crate) struct Upstream {
    endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
    http2: bool,
    client: Client<HttpConnector, VesselBody>,
}

impl Upstream {
    /// A pooled client for `endpoints`.
    pub(crate) fn new(endpoints: Vec<SocketAddr>, connect_timeout: Duration, http2: bool) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build(connector);
        Self {
            endpoints,
            next: AtomicUsize::new(0),
            http2,
            client,
        }
    }

    /// The next endpoint, round-robin.
    fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        Some(self.endpoints[i])
    }
}

/// The upstream clusters by name, shared by every listener.
pub(crate) type Upstreams = Arc<HashMap<String, Arc<Upstream>>>;

/// A listener's router.
#[derive(Clone)]
pub(crate) struct Router {
    routes: Arc<RouteConfig>,
    upstreams: Upstreams,
}

impl Router {
    pub(crate) fn new(routes: RouteConfig, upstreams: Upstreams) -> Self {
        Self {
            routes: Arc::new(routes),
            upstreams,
        }
    }
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
            return local_reply(StatusCode::NOT_FOUND, "");
        };
        let (cluster, timeout) = match &route.action {
            RouteAction::Direct { status, body } => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
                return local_reply(status, body.as_deref().unwrap_or(""));
            }
            RouteAction::Cluster { name, timeout, .. } => (name, *timeout),
        };
        let upstream_path = route.rewritten_path(&path).unwrap_or(path);
        let Some(upstream) = self.upstreams.get(cluster.as_str()) else {
            // The config reader checks route → cluster references.
            return local_reply(StatusCode::SERVICE_UNAVAILABLE, NO_HEALTHY_UPSTREAM);
        };
        let Some(endpoint) = upstream.pick() else {
            return local_reply(StatusCode::SERVICE_UNAVAILABLE, NO_HEALTHY_UPSTREAM);
        };
        let uri = format!("http://{endpoint}{upstream_path}");
        match uri.parse() {
            Ok(u) => *req.uri_mut() = u,
            Err(_) => return local_reply(StatusCode::BAD_REQUEST, ""),
        }
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
        req.headers_mut().insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("http"),
        );

        let call = upstream.client.request(req);
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, call).await {
                Ok(r) => r,
                Err(_) => {
                    log::debug!("upstream {cluster} ({endpoint}): timeout after {t:?}");
                    return local_reply(StatusCode::GATEWAY_TIMEOUT, UPSTREAM_TIMEOUT);
                }
            },
            None => call.await,
        };
        match result {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
            }
            Err(e) => {
                log::debug!("upstream {cluster} ({endpoint}): {e:?}");
                let body = if e.is_connect() {
                    CONNECT_FAILURE
                } else {
                    CONNECTION_TERMINATION
                };
                local_reply(StatusCode::SERVICE_UNAVAILABLE, body)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles_endpoints() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let u = Upstream::new(vec![a, b], Duration::from_secs(1), false);
        let picks: Vec<_> = (0..4).filter_map(|_| u.pick()).collect();
        assert_eq!(picks, vec![a, b, a, b]);
        let empty = Upstream::new(vec![], Duration::from_secs(1), false);
        assert_eq!(empty.pick(), None);
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
