//! [`PooledStream`] driven directly, as a proxy other than the tower layer
//! (Pingora, say) drives it: events in, actions out, and
//! [`PooledStream::next_signal`] while a filter holds the stream. The
//! filter is `guest_http_call`, which pauses the request on a real HTTP
//! callout to a loopback server.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use crate::common::{pool, upstream};
use vessel_host::{Action, Direction, HeaderMap, StreamConfig};
use vessel_hyper::{Cluster, Clusters, FailurePolicy, PooledStream};

fn request() -> HeaderMap {
    HeaderMap::from_pairs([
        (":authority", "example.com"),
        (":path", "/"),
        (":method", "GET"),
        (":scheme", "http"),
    ])
}

/// Waits (bounded) for the signal that resumes the stream.
async fn signalled(stream: &mut PooledStream) {
    tokio::time::timeout(Duration::from_secs(10), stream.next_signal())
        .await
        .expect("the callout's answer resumes the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_held_by_a_callout_resumes_on_its_signal_and_ends_on_drop() {
    let (auth, seen) = upstream(200, "alice").await;
    let mut clusters = Clusters::new();
    clusters.add(Cluster::new("auth", auth));
    let (pool, _rt) = pool("http_call", "", clusters, FailurePolicy::FailClosed);
    let pools = vec![pool.clone()];

    let mut stream = PooledStream::new(&pools, StreamConfig::new(1));
    stream.request_headers(request(), true);
    assert_eq!(stream.poll_action(), None, "the filter holds the request");
    assert!(stream.is_held(Direction::Request));
    assert_eq!(pool.context_count(), pool.len() + 1);

    signalled(&mut stream).await;
    let Some(Action::UpstreamHeaders {
        headers,
        end_stream: true,
    }) = stream.poll_action()
    else {
        panic!("the request goes upstream once the callout allowed it");
    };
    assert_eq!(headers.get_str("x-auth-user"), Some("alice"));
    assert_eq!(seen.lock().unwrap().len(), 1, "one callout");

    stream.response_headers(HeaderMap::from_pairs([(":status", "204")]), true);
    let Some(Action::DownstreamHeaders {
        headers,
        end_stream: true,
    }) = stream.poll_action()
    else {
        panic!("the response goes downstream");
    };
    assert_eq!(headers.get_str(":status"), Some("204"));
    assert!(stream.stream().is_complete(Direction::Response));

    // Dropping the stream ends its context (on_log, on_done, on_delete).
    drop(stream);
    assert_eq!(pool.context_count(), pool.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reply_from_a_callout_answers_a_held_stream() {
    let (auth, _) = upstream(401, "no").await;
    let mut clusters = Clusters::new();
    clusters.add(Cluster::new("auth", auth));
    let (pool, _rt) = pool("http_call", "", clusters, FailurePolicy::FailClosed);
    let pools = vec![pool.clone()];

    let mut stream = PooledStream::new(&pools, StreamConfig::new(1));
    stream.request_headers(request(), false);
    // The body arrives while the headers are held: the filter's body
    // callback is not run (the headers stopped all iteration), it waits.
    stream.request_data(b"payload".to_vec(), true);
    assert_eq!(stream.poll_action(), None);

    signalled(&mut stream).await;
    let mut actions = Vec::new();
    while let Some(a) = stream.poll_action() {
        actions.push(a);
    }
    let [
        Action::DownstreamHeaders {
            headers,
            end_stream: false,
        },
        Action::DownstreamData {
            data,
            end_stream: true,
        },
    ] = actions.as_slice()
    else {
        panic!("a 403 local reply, no upstream request: {actions:?}");
    };
    assert_eq!(headers.get_str(":status"), Some("403"));
    assert_eq!(headers.get_str("x-auth-status"), Some("401"));
    assert_eq!(data.as_slice(), b"forbidden\n");
    assert!(stream.is_done());
    drop(stream);
    assert_eq!(pool.context_count(), pool.len());
}
