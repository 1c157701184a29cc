//! Slow and failing upstreams and callouts on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common::*;
use http_body_util::BodyExt;
use vessel_hyper::{Cluster, Clusters, FailurePolicy, VesselLayer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callout_timeout_is_a_504_to_the_filter() {
    let (up, seen) = upstream(200, "ok").await;
    let (silent, _) = black_hole().await;
    let mut clusters = Clusters::new();
    clusters.add(Cluster::new("auth", silent));
    // guest_http_call dispatches with a 5 s timeout; Envoy answers a timed
    // out call with a 504, so the guest denies with 403 and `x-auth-status: 504`.
    let (pool, _rt) = pool("http_call", "", clusters, FailurePolicy::FailClosed);
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;
    let started = std::time::Instant::now();
    let (status, headers, _) = get(proxy, "/", &[]).await;
    assert_eq!(status, 403);
    assert_eq!(headers.get("x-auth-status").unwrap(), "504");
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(pool.context_count(), pool.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_body_ends_the_stream_and_its_contexts() {
    let up = resetting_upstream().await;
    let (pool, _rt) = pool("bodies", "", Clusters::new(), FailurePolicy::FailClosed);
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let resp = client
        .request(
            http::Request::get(format!("http://{proxy}/"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await;
    assert!(body.is_err(), "the client sees the upstream's reset");
    eventually("the stream's contexts were deleted", || {
        pool.context_count() == pool.len()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_still_answers_through_the_filter() {
    let (up, reached) = black_hole().await;
    let (pool, _rt) = pool("hello", "", Clusters::new(), FailurePolicy::FailClosed);
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;
    // The request is in flight upstream; a local reply on another stream is
    // not held up by it.
    let slow = tokio::spawn(async move { get(proxy, "/slow", &[]).await });
    eventually("the slow request reached the upstream", || {
        reached.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let (status, _, body) = get(proxy, "/hello", &[]).await;
    assert_eq!((status, body.as_slice()), (200, &b"Hello, World!\n"[..]));
    assert!(!slow.is_finished());
    slow.abort();
}
