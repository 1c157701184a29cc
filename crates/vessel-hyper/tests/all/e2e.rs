//! End-to-end: a real hyper server running the vessel layer in front of a
//! real upstream, with real clients, all on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common::*;
use vessel_hyper::{Cluster, Clusters, FailurePolicy, VesselLayer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_reply_and_pass_through() {
    let (up, seen) = upstream(200, "from upstream").await;
    let (pool, _rt) = pool("hello", "", Clusters::new(), FailurePolicy::FailClosed);
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;

    let (status, headers, body) = get(proxy, "/hello", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("hello").unwrap(), "World");
    assert_eq!(body, b"Hello, World!\n");
    assert!(
        seen.lock().unwrap().is_empty(),
        "local reply: upstream not reached"
    );

    let (status, headers, body) = get(proxy, "/other", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, b"from upstream");
    assert_eq!(headers.get("x-upstream").unwrap(), "1");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0]
            .headers
            .iter()
            .any(|(k, v)| k == "x-hello" && v == "seen"),
        "{:?}",
        seen[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_until_http_call_returns_then_add_header() {
    let (up, seen) = upstream(200, "ok").await;
    let (auth, auth_seen) = upstream(200, "alice").await;
    let mut clusters = Clusters::new();
    clusters.add(Cluster::new("auth", auth));
    let (pool, _rt) = pool("http_call", "", clusters, FailurePolicy::FailClosed);
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;

    let (status, _, body) = get(proxy, "/resource", &[("x-token", "t1")]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0]
            .headers
            .iter()
            .any(|(k, v)| k == "x-auth-user" && v == "alice"),
        "{:?}",
        seen[0].headers
    );
    let auth_seen = auth_seen.lock().unwrap();
    assert_eq!(auth_seen.len(), 1);
    assert_eq!(auth_seen[0].path, "/auth");
    // Every stream context was deleted again.
    assert_eq!(pool.context_count(), pool.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callout_to_dead_cluster_gets_envoy_503_and_local_403() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (up, seen) = upstream(200, "ok").await;
    // A port nothing listens on.
    let refusing = vessel_testkit::servers::RefusingPort::new();
    let dead = refusing.addr();
    let mut clusters = Clusters::new();
    clusters.add(Cluster::new("auth", dead));
    let (pool, _rt) = pool("http_call", "", clusters, FailurePolicy::FailClosed);
    let proxy = proxy(VesselLayer::new(vec![pool]), up).await;
    let (status, _, _) = get(proxy, "/resource", &[]).await;
    assert_eq!(status, 403);
    assert!(seen.lock().unwrap().is_empty());
}
