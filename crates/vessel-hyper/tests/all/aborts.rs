//! No context leaks: 10,000 streams whose clients go away while the
//! upstream is still working end every filter context, and guest memory
//! stays where it was.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use vessel_hyper::{Clusters, FailurePolicy, VesselLayer};

/// Sends `n` requests on `n` connections, waits until the upstream has
/// received every one of them (so each stream is in flight upstream), and
/// then drops every connection: the clients go away mid-request.
async fn abort_chunk(proxy: std::net::SocketAddr, reached: &AtomicUsize, n: usize) {
    let before = reached.load(Ordering::SeqCst);
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let mut tcp = TcpStream::connect(proxy).await.unwrap();
        tcp.write_all(b"GET /slow HTTP/1.1\r\nhost: example.com\r\n\r\n")
            .await
            .unwrap();
        tcp.flush().await.unwrap();
        clients.push(tcp);
    }
    eventually("every request of the chunk reached the upstream", || {
        reached.load(Ordering::SeqCst) >= before + n
    })
    .await;
    drop(clients);
}

/// Waits until only the root contexts are alive.
async fn settle(pool: &vessel_hyper::FilterPool, baseline: usize, what: &str) {
    eventually(what, || pool.context_count() == baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_aborted_streams_leak_no_context_or_memory() {
    let (up, reached) = black_hole().await;
    let (pool, _rt) = pool("hello", "", Clusters::new(), FailurePolicy::FailClosed);
    let baseline = pool.context_count();
    assert_eq!(baseline, pool.len(), "only the root contexts are alive");
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;

    // Warm up, so that the guests' allocators reach their working size.
    for _ in 0..10 {
        abort_chunk(proxy, &reached, 50).await;
    }
    settle(&pool, baseline, "every warm-up stream context was deleted").await;
    let memory_after_warmup = pool.memory_size();

    for _ in 0..190 {
        abort_chunk(proxy, &reached, 50).await;
    }
    settle(&pool, baseline, "every stream context was deleted").await;
    assert_eq!(
        pool.memory_size(),
        memory_after_warmup,
        "guest memory did not grow"
    );
    // Every request was in flight upstream, once, when its client left.
    assert_eq!(reached.load(Ordering::SeqCst), 10_000);
}
