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

/// `Runtime::update_clusters` while the filter serves: a replaced cluster
/// is used by the next callout, a cluster left alone keeps the endpoints
/// set on it, a new one becomes known, and a removed one is unknown to
/// `proxy_http_call` (dispatch fails: the guest's 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callout_clusters_change_while_serving() {
    let (up, _) = upstream(200, "ok").await;
    let (alice, alice_seen) = upstream(200, "alice").await;
    let (bob, bob_seen) = upstream(200, "bob").await;
    let refusing = vessel_testkit::servers::RefusingPort::new();
    let mut clusters = Clusters::new();
    clusters.add(Cluster::new("auth", refusing.addr()));
    clusters.add(Cluster::new("other", refusing.addr()));
    let (pool, rt) = pool("http_call", "", clusters, FailurePolicy::FailClosed);
    let proxy = proxy(VesselLayer::new(vec![pool]), up).await;
    assert_eq!(get(proxy, "/", &[]).await.0, 403, "auth refuses");

    // Replaced: the next callout reaches the new endpoint.
    rt.update_clusters([Cluster::new("auth", alice)], [] as [&str; 0]);
    assert_eq!(get(proxy, "/", &[]).await.0, 200);
    assert_eq!(alice_seen.lock().unwrap().len(), 1);

    // Left alone: `other` keeps the endpoints set on it; `new` is known.
    assert!(rt.set_cluster_endpoints("other", vec![bob]));
    rt.update_clusters([Cluster::new("new", refusing.addr())], ["auth"]);
    assert_eq!(rt.cluster_endpoints("other"), Some(vec![bob]));
    assert!(rt.knows_cluster("new") && rt.knows_cluster("other"));
    assert!(!rt.knows_cluster("auth"));
    let (status, _, _) = get(proxy, "/", &[("x-auth-cluster", "other")]).await;
    assert_eq!(status, 200);
    assert_eq!(bob_seen.lock().unwrap().len(), 1);

    // Removed: the dispatch fails, nothing reaches the old endpoint.
    let (status, _, body) = get(proxy, "/", &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (503, b"auth dispatch failed\n".as_slice())
    );
    assert_eq!(alice_seen.lock().unwrap().len(), 1);
}
