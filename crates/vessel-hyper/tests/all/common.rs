//! Shared e2e fixtures: vessel-hyper's layer served on loopback, pools of
//! real guests, and clients; the upstreams and `eventually` are
//! vessel-testkit's.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{Service, ServiceBuilder};
use vessel_host::{Engine, EngineConfig, HostEnv, Plugin, PluginConfig};
use vessel_hyper::{Clusters, FailurePolicy, FilterPool, Runtime, VesselBody, VesselLayer};
pub use vessel_testkit::eventually;
pub use vessel_testkit::servers::{black_hole, gated_upstream, resetting_upstream, upstream};

pub fn guest(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec-tests/guests/target/wasm32-wasip1/release")
        .join(format!("guest_{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask guests`", path.display()))
}

pub type UpstreamClient = Client<HttpConnector, VesselBody>;

/// The inner service: forwards to `addr` with a pooled hyper client.
pub fn forwarder(
    addr: SocketAddr,
) -> impl Service<
    Request<VesselBody>,
    Response = Response<Incoming>,
    Error = hyper_util::client::legacy::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: UpstreamClient = Client::builder(TokioExecutor::new()).build(http);
    tower::service_fn(move |mut req: Request<VesselBody>| {
        let client = client.clone();
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *req.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
        async move { client.request(req).await }
    })
}

/// Serves `layer` in front of `upstream_addr` on a loopback port, with
/// TCP_NODELAY on every socket as `vessel run` does (without it, a response
/// whose head and body leave in two writes waits for a delayed ACK).
pub async fn proxy(layer: VesselLayer, upstream_addr: SocketAddr) -> SocketAddr {
    let (listener, addr) = vessel_testkit::servers::bind().await;
    let forward = forwarder(upstream_addr);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let svc = ServiceBuilder::new()
                .layer(layer.clone())
                .service(forward.clone());
            tokio::spawn(async move {
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

pub fn pool(
    name: &str,
    config: &str,
    clusters: Clusters,
    policy: FailurePolicy,
) -> (Arc<FilterPool>, Arc<Runtime>) {
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let plugin = Plugin::load(
        &engine,
        &guest(name),
        PluginConfig {
            configuration: config.as_bytes().to_vec(),
            ..PluginConfig::named(name)
        },
    )
    .unwrap();
    let runtime = Runtime::new(clusters);
    let names = runtime.clone();
    let env = HostEnv::builder()
        .known_clusters(move |c| names.knows_cluster(c))
        .build();
    (
        FilterPool::new(&plugin, &env, &runtime, 2, policy).unwrap(),
        runtime,
    )
}

/// A plain client request; returns (status, headers, body).
pub async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Vec<u8>) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    (status, parts.headers, body)
}

/// A request with a body; returns (status, headers, body).
pub async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, http::HeaderMap, Vec<u8>) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::post(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    (status, parts.headers, body)
}
