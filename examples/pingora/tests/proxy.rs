//! A request through the Pingora proxy: a real hyper upstream on 127.0.0.1,
//! the proxy on a port-0 listener, and a real hyper client.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use vessel_pingora_example::{HOLD_BODY, LogEntry, LoopbackProxy, serve};

/// What the upstream received: method, path, `x-via`, body.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>, Bytes)>>>;

/// A hyper HTTP/1.1 upstream on 127.0.0.1 that records each request and
/// answers `upstream saw <n> bytes at <path>`.
async fn upstream() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let record = Arc::clone(&record);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let via = parts
                            .headers
                            .get("x-via")
                            .map(|v| v.to_str().unwrap_or_default().to_owned());
                        let reply =
                            format!("upstream saw {} bytes at {}", body.len(), parts.uri.path());
                        record.lock().unwrap().push((
                            parts.method.to_string(),
                            parts.uri.path().to_owned(),
                            via,
                            body,
                        ));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(reply))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

struct Proxy {
    addr: SocketAddr,
    log: mpsc::UnboundedReceiver<LogEntry>,
    upstream_responses: Arc<std::sync::atomic::AtomicUsize>,
    _stop: watch::Sender<bool>,
}

async fn proxy_to(upstream: SocketAddr) -> Proxy {
    let (proxy, log) = LoopbackProxy::new(upstream);
    let upstream_responses = proxy.upstream_responses();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(serve(listener, proxy, shutdown));
    Proxy {
        addr,
        log,
        upstream_responses,
        _stop: stop,
    }
}

/// Sends one request through a fresh connection; returns the response head
/// and body.
async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> (http::response::Parts, Bytes) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

fn request(method: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "example.test")
}

/// The next log entry, waiting at most 10 s (logging runs after the
/// response is written, so it may trail the client).
async fn next_log(proxy: &mut Proxy) -> LogEntry {
    tokio::time::timeout(Duration::from_secs(10), proxy.log.recv())
        .await
        .expect("a log entry within 10 s")
        .expect("the proxy is running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_passes_through_with_headers_added_both_ways() {
    let (up, seen) = upstream().await;
    let mut proxy = proxy_to(up).await;

    let req = request("GET", "/hello")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (head, body) = send(proxy.addr, req).await;

    assert_eq!(head.status, 200);
    assert_eq!(&body[..], b"upstream saw 0 bytes at /hello");
    // response_filter ran on the way back ...
    assert_eq!(head.headers.get("x-proxied-by").unwrap(), "pingora");
    // ... and upstream_request_filter on the way there.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].0.as_str(), seen[0].1.as_str(), seen[0].2.as_deref()),
        ("GET", "/hello", Some("pingora"))
    );
    assert_eq!(proxy.upstream_responses.load(Ordering::Relaxed), 1);

    let entry = next_log(&mut proxy).await;
    assert_eq!(
        entry,
        LogEntry {
            path: "/hello".into(),
            status: 200,
            request_body_bytes: 0,
            response_body_bytes: body.len(),
            error: None,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reply_from_request_filter_never_reaches_the_upstream() {
    let (up, seen) = upstream().await;
    let mut proxy = proxy_to(up).await;

    let req = request("GET", "/local")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (head, body) = send(proxy.addr, req).await;
    assert_eq!(head.status, 403);
    assert_eq!(&body[..], b"denied by the proxy\n");

    // `logging` runs for a local reply too, and it runs after the request
    // is done: by then the upstream would have been asked.
    let entry = next_log(&mut proxy).await;
    assert_eq!((entry.path.as_str(), entry.status), ("/local", 403));
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(proxy.upstream_responses.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_bodies_arrive_whole_in_both_directions() {
    let (up, seen) = upstream().await;
    let mut proxy = proxy_to(up).await;

    // A body in several chunks: request_body_filter holds each one (as an
    // empty chunk, not `None`) and releases all of it at the end.
    let payload = "0123456789".repeat(10_000);
    let req = request("POST", "/upload")
        .header(HOLD_BODY, "1")
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let (head, body) = send(proxy.addr, req).await;

    assert_eq!(head.status, 200);
    let expected = format!("upstream saw {} bytes at /upload", payload.len());
    assert_eq!(body, expected.as_bytes());
    // The held response went out chunked, without the upstream's length.
    assert!(head.headers.get("content-length").is_none(), "{head:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].3,
        payload.as_bytes(),
        "the upstream got the whole body"
    );

    let entry = next_log(&mut proxy).await;
    assert_eq!(entry.request_body_bytes, payload.len());
    assert_eq!(entry.response_body_bytes, expected.len());
    assert_eq!(entry.error, None);
}
