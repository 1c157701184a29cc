//! The stream properties of the request path (ABI reference §10.2):
//! `request.protocol`, and `source.*`, `destination.*`, `connection.id`
//! from the [`ConnectionInfo`] the server puts in each request (and
//! `xds.route_name`, `route_name` from its [`RouteInfo`]), read by
//! `guest_phase_properties` on both paths over real loopback connections.
//! The adapter computes them only when a guest reads one.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::common::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use vessel_hyper::{Clusters, ConnectionInfo, FailurePolicy, RouteInfo, VesselLayer};

const PATHS: &str = "request.protocol,source.address,source.port:int,\
                     destination.address,destination.port:int,connection.id:int,\
                     xds.route_name,route_name";

/// Serves `layer` in front of `up`; with `with_info`, each request carries
/// the connection's [`ConnectionInfo`] (id 40 + the connection's index)
/// and the [`RouteInfo`] of a route named `chat-route`.
/// Returns the address and the peers accepted so far.
async fn proxy_with_info(
    layer: VesselLayer,
    up: SocketAddr,
    with_info: bool,
) -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                return;
            };
            seen.lock().unwrap().push(peer);
            let info = ConnectionInfo {
                source: peer,
                destination: tcp.local_addr().unwrap(),
                id: 40 + n,
            };
            n += 1;
            let svc = ServiceBuilder::new()
                .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                    if with_info {
                        req.extensions_mut().insert(info);
                        req.extensions_mut().insert(RouteInfo {
                            name: "chat-route".into(),
                        });
                    }
                    req
                })
                .layer(layer.clone())
                .service(forwarder(up));
            tokio::spawn(async move {
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_properties_come_from_connection_info() {
    let (up, _) = upstream(200, "ok").await;
    let (pool, _rt) = pool(
        "phase_properties",
        PATHS,
        Clusters::new(),
        FailurePolicy::FailClosed,
    );
    let (proxy, peers) = proxy_with_info(VesselLayer::new(vec![pool]), up, true).await;
    let (status, h, _) = get(proxy, "/p", &[]).await;
    assert_eq!(status, 200);
    let peer = peers.lock().unwrap()[0];
    for phase in ["req", "resp"] {
        let h = |name: &str| h[format!("x-{phase}-{name}").as_str()].to_str().unwrap();
        assert_eq!(h("request-protocol"), "HTTP/1.1", "{phase}");
        assert_eq!(h("source-address"), peer.to_string(), "{phase}");
        assert_eq!(h("source-port"), peer.port().to_string(), "{phase}");
        assert_eq!(h("destination-address"), proxy.to_string(), "{phase}");
        assert_eq!(h("destination-port"), proxy.port().to_string(), "{phase}");
        assert_eq!(h("connection-id"), "40", "{phase}");
        assert_eq!(h("xds-route_name"), "chat-route", "{phase}");
        assert_eq!(h("route_name"), "chat-route", "{phase}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_connection_info_only_the_protocol_is_known() {
    let (up, _) = upstream(200, "ok").await;
    let (pool, _rt) = pool(
        "phase_properties",
        PATHS,
        Clusters::new(),
        FailurePolicy::FailClosed,
    );
    let (proxy, _) = proxy_with_info(VesselLayer::new(vec![pool]), up, false).await;
    let (status, h, _) = get(proxy, "/p", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-req-request-protocol"], "HTTP/1.1");
    for name in [
        "source-address",
        "source-port",
        "destination-address",
        "destination-port",
        "connection-id",
        "xds-route_name",
        "route_name",
    ] {
        assert_eq!(h[format!("x-req-{name}").as_str()], "<none>", "{name}");
    }
}
