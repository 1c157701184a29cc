//! No context leaks: 10,000 streams whose clients go away while the
//! upstream is still working end every filter context, and guest memory
//! stays where it was.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use vessel_hyper::{Clusters, FailurePolicy, VesselLayer};

async fn abort_one(proxy: std::net::SocketAddr) {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(b"GET /slow HTTP/1.1\r\nhost: example.com\r\n\r\n")
        .await
        .unwrap();
    tcp.flush().await.unwrap();
    // Give the proxy time to run the request headers through the filter,
    // then vanish.
    tokio::time::sleep(Duration::from_millis(2)).await;
    drop(tcp);
}

async fn settle(pool: &vessel_hyper::FilterPool, baseline: usize) -> usize {
    let mut n = pool.context_count();
    for _ in 0..500 {
        if n == baseline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        n = pool.context_count();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_aborted_streams_leak_no_context_or_memory() {
    let (up, reached) = black_hole().await;
    let (pool, _rt) = pool("hello", "", Clusters::new(), FailurePolicy::FailClosed);
    let baseline = pool.context_count();
    assert_eq!(baseline, pool.len(), "only the root contexts are alive");
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;

    // Warm up, so that the guests' allocators reach their working size.
    for chunk in 0..10 {
        let tasks: Vec<_> = (0..50).map(|_| tokio::spawn(abort_one(proxy))).collect();
        for t in tasks {
            t.await.unwrap();
        }
        let _ = chunk;
    }
    assert_eq!(settle(&pool, baseline).await, baseline);
    let memory_after_warmup = pool.memory_size();

    for _ in 0..190 {
        let tasks: Vec<_> = (0..50).map(|_| tokio::spawn(abort_one(proxy))).collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    assert_eq!(
        settle(&pool, baseline).await,
        baseline,
        "every stream context was deleted"
    );
    assert_eq!(
        pool.memory_size(),
        memory_after_warmup,
        "guest memory did not grow"
    );
    // Most requests really were in flight upstream when their client left.
    assert!(
        reached.load(Ordering::SeqCst) > 5_000,
        "{}",
        reached.load(Ordering::SeqCst)
    );
}
