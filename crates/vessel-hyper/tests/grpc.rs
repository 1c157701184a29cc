//! Unary gRPC callouts over HTTP/2 to a gRPC server on loopback (a hyper
//! HTTP/2 server speaking gRPC's wire format: length-prefixed messages,
//! `grpc-status` trailers).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use vessel_hyper::{Cluster, Clusters, FailurePolicy, VesselLayer};

struct Frames(VecDeque<Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// `auth.Auth/Check`: token "good" → message "alice"; anything else →
/// PERMISSION_DENIED (7) as a trailers-only answer.
async fn grpc_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    assert_eq!(req.uri().path(), "/auth.Auth/Check");
                    assert_eq!(req.headers()["content-type"], "application/grpc");
                    assert_eq!(req.headers()["x-trace"], "t1");
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let token = &body[5..];
                    let mut resp = Response::builder().header("content-type", "application/grpc");
                    let mut frames = VecDeque::new();
                    if token == b"good" {
                        let msg = b"alice";
                        let mut framed = vec![0u8];
                        framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
                        framed.extend_from_slice(msg);
                        frames.push_back(Frame::data(Bytes::from(framed)));
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        frames.push_back(Frame::trailers(trailers));
                    } else {
                        resp = resp
                            .header("grpc-status", "7")
                            .header("grpc-message", "bad token");
                    }
                    Ok::<_, Infallible>(resp.body(Frames(frames)).unwrap())
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_grpc_auth_allows_and_denies() {
    let (up, seen) = upstream(200, "ok").await;
    let grpc = grpc_server().await;
    let mut clusters = Clusters::new();
    clusters.add(Cluster::new("grpc", grpc).http2());
    let (pool, _rt) = pool("grpc_call", "", clusters, FailurePolicy::FailClosed);
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;

    let (status, _, _) = get(proxy, "/in", &[("x-token", "good")]).await;
    assert_eq!(status, 200);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(
            seen[0]
                .headers
                .iter()
                .any(|(k, v)| k == "x-grpc-user" && v == "alice"),
            "{:?}",
            seen[0]
        );
    }
    let (status, headers, body) = get(proxy, "/in", &[("x-token", "bad")]).await;
    assert_eq!(status, 403);
    assert_eq!(headers["x-grpc-status"], "7");
    assert_eq!(body, b"denied\n");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(pool.context_count(), pool.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_grpc_cluster_closes_with_unavailable() {
    let (up, seen) = upstream(200, "ok").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut clusters = Clusters::new();
    clusters.add(Cluster::new("grpc", dead).http2());
    let (pool, _rt) = pool("grpc_call", "", clusters, FailurePolicy::FailClosed);
    let proxy = proxy(VesselLayer::new(vec![pool]), up).await;
    let (status, headers, _) = get(proxy, "/in", &[("x-token", "good")]).await;
    assert_eq!(status, 403);
    assert_eq!(headers["x-grpc-status"], "14");
    assert!(seen.lock().unwrap().is_empty());
}
