//! The `upstream.*` properties of the response path (ABI reference §10.2),
//! read by `guest_phase_properties` from a real upstream on loopback: from
//! hyper-util's connection info, or from the [`UpstreamInfo`] the inner
//! service adds.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;

use crate::common::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use vessel_hyper::{Clusters, FailurePolicy, UpstreamInfo, VesselLayer};

const PATHS: &str = "upstream.address,upstream.port:int,upstream.local_address,\
                     xds.cluster_name,cluster_name";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_properties_come_from_the_connection_on_the_response_path() {
    let (up, _) = upstream(200, "ok").await;
    let (pool, _rt) = pool(
        "phase_properties",
        PATHS,
        Clusters::new(),
        FailurePolicy::FailClosed,
    );
    let proxy = proxy(VesselLayer::new(vec![pool]), up).await;
    let (status, h, _) = get(proxy, "/p", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-resp-upstream-address"], up.to_string().as_str());
    assert_eq!(h["x-resp-upstream-port"], up.port().to_string().as_str());
    let local: SocketAddr = h["x-resp-upstream-local_address"]
        .to_str()
        .unwrap()
        .parse()
        .expect("ip:port");
    assert!(local.ip().is_loopback() && local != up, "{local}");
    // No cluster in hyper-util's info.
    assert_eq!(h["x-resp-xds-cluster_name"], "<none>");
    // The request path has no upstream yet (Envoy: NOT_FOUND).
    for p in [
        "upstream-address",
        "upstream-port",
        "upstream-local_address",
    ] {
        assert_eq!(h[format!("x-req-{p}").as_str()], "<none>", "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_info_from_the_inner_service_names_the_cluster() {
    let (up, _) = upstream(200, "ok").await;
    let (pool, _rt) = pool(
        "phase_properties",
        PATHS,
        Clusters::new(),
        FailurePolicy::FailClosed,
    );
    let layer = VesselLayer::new(vec![pool]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let reported: SocketAddr = "127.0.0.1:4242".parse().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let inner = forwarder(up).map_response(move |mut r| {
                r.extensions_mut().insert(UpstreamInfo {
                    address: reported,
                    local_address: None,
                    cluster: Some("backend".into()),
                });
                r
            });
            let svc = ServiceBuilder::new().layer(layer.clone()).service(inner);
            tokio::spawn(async move {
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let (status, h, _) = get(proxy, "/p", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-resp-upstream-address"], "127.0.0.1:4242");
    assert_eq!(h["x-resp-upstream-port"], "4242");
    assert_eq!(h["x-resp-upstream-local_address"], "<none>");
    assert_eq!(h["x-resp-xds-cluster_name"], "backend");
    assert_eq!(h["x-resp-cluster_name"], "backend");
    assert_eq!(h["x-req-xds-cluster_name"], "<none>");
}
