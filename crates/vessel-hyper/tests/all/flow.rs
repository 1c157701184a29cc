//! Flow control on real traffic: a filter paused on a callout holds a
//! request body far past the buffer limit with a watermark (the pump stops
//! reading the client), and the whole body still reaches the upstream once
//! the filter continues, or once its VM fails under FAIL_OPEN (ABI
//! reference §11.2, §6.6).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{eventually, pool, post, proxy, upstream};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::Notify;
use vessel_hyper::{Cluster, Clusters, FailurePolicy, VesselLayer};

/// An `auth` server that counts its calls and answers 200 once `release`
/// is notified.
async fn held_auth() -> (SocketAddr, Arc<AtomicUsize>, Arc<Notify>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (c, r) = (calls.clone(), release.clone());
    let addr = vessel_testkit::servers::serve_fn(move |_req: Request<Incoming>| {
        let (c, r) = (c.clone(), r.clone());
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            r.notified().await;
            Response::new(Full::new(Bytes::from_static(b"ann")))
        }
    })
    .await;
    (addr, calls, release)
}

/// POSTs 256 KiB through `guest` (paused on its `auth` callout) behind a
/// 1 KiB buffer limit, releases the callout once it is in flight, and
/// returns the status and the bodies the upstream saw.
async fn held_post(guest: &str, policy: FailurePolicy, headers: &[(&str, &str)]) -> (u16, usize) {
    let (up, seen) = upstream(200, "ok").await;
    let (auth, calls, release) = held_auth().await;
    let mut clusters = Clusters::new();
    clusters.add(Cluster::new("auth", auth));
    let (pool, _rt) = pool(guest, "", clusters, policy);
    let layer = VesselLayer::new(vec![pool.clone()]).buffer_limit(1024);
    let proxy = proxy(layer, up).await;
    let body = vec![b'x'; 256 << 10];
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let request = tokio::spawn(async move {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        post(proxy, "/upload", &h, body).await
    });
    eventually("the callout is in flight", || {
        calls.load(Ordering::SeqCst) == 1
    })
    .await;
    release.notify_one();
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .expect("the request finishes: the held body was read on")
        .unwrap();
    let seen = seen.lock().unwrap();
    let len = seen.first().map_or(0, |s| s.body.len());
    (status, len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_held_past_the_limit_flows_once_the_filter_continues() {
    let (status, len) = held_post("http_call", FailurePolicy::FailClosed, &[]).await;
    assert_eq!((status, len), (200, 256 << 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_held_past_the_limit_flows_once_the_vm_fails_open() {
    // guest_trap pauses on the callout and traps in its answer (a root
    // callback): FAIL_OPEN lets the held request go on as if the filter
    // were absent, and the pump reads the rest of the body.
    let (status, len) = held_post(
        "trap",
        FailurePolicy::FailOpen,
        &[("x-trap-in", "http_call_response")],
    )
    .await;
    assert_eq!((status, len), (200, 256 << 10));
}
