//! Real hyper upstreams on 127.0.0.1, each on a port-0 listener whose
//! address it returns. They serve HTTP/1.1 and cleartext HTTP/2 (prior
//! knowledge) with TCP_NODELAY, and run until the test's runtime ends.
//!
//! * [`serve_fn`] / [`serve`]: any handler;
//! * [`upstream`]: a fixed status and body, recording every request;
//! * [`fixed`]: a fixed 200 `ok` that keeps nothing (load tests);
//! * [`black_hole`]: never answers, counts requests;
//! * [`gated_upstream`]: `/slow` waits for a [`tokio::sync::Notify`];
//! * [`resetting_upstream`]: starts a response and drops the connection;
//! * [`RefusingPort`]: an address where connections are refused.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A boxed error, as hyper takes from a response body.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A listener on 127.0.0.1, port 0, and the address the system gave it.
///
/// # Panics
/// If the loopback address cannot be bound.
pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("a bound listener's address");
    (listener, addr)
}

/// Serves `handler` on `listener` (HTTP/1.1 and h2c, TCP_NODELAY) until
/// the runtime ends.
pub fn serve<F, Fut, B>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let answer = handler(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}

/// [`bind`] then [`serve`]: the server's address.
pub async fn serve_fn<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (listener, addr) = bind().await;
    serve(listener, handler);
    addr
}

/// What an upstream saw of one request.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query, if any.
    pub query: Option<String>,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The whole body (empty if it failed).
    pub body: Vec<u8>,
}

/// The requests an upstream saw, in order.
pub type Recorder = Arc<Mutex<Vec<Seen>>>;

/// Reads `req` whole and appends it to `into`; returns its body.
pub async fn record(req: Request<Incoming>, into: &Recorder) -> Bytes {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body: body.to_vec(),
    };
    into.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(seen);
    body
}

/// A response of `status` with `body`.
///
/// # Panics
/// If `status` is not a valid HTTP status.
pub fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    resp
}

/// An upstream that answers every request `status` with `body` and
/// `x-upstream: 1`, and records each request (read whole first).
pub async fn upstream(status: u16, body: &'static str) -> (SocketAddr, Recorder) {
    let seen = Recorder::default();
    let log = seen.clone();
    let addr = serve_fn(move |req| {
        let log = log.clone();
        async move {
            record(req, &log).await;
            let mut resp = reply(status, body);
            resp.headers_mut()
                .insert("x-upstream", http::HeaderValue::from_static("1"));
            resp
        }
    })
    .await;
    (addr, seen)
}

/// An upstream that answers 200 `ok` and keeps nothing (for load tests).
pub async fn fixed() -> SocketAddr {
    serve_fn(|_req| async { reply(200, "ok") }).await
}

/// An upstream that never answers (it holds each request until the
/// connection goes away) and counts the requests it saw.
pub async fn black_hole() -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let addr = serve_fn(move |_req| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            std::future::pending::<()>().await;
            reply(200, "")
        }
    })
    .await;
    (addr, count)
}

/// An upstream answering 200 `ok`; its `/slow` requests wait until
/// `release` is notified.
pub async fn gated_upstream() -> (SocketAddr, Arc<tokio::sync::Notify>) {
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let addr = serve_fn(move |req| {
        let gate = gate.clone();
        async move {
            if req.uri().path() == "/slow" {
                gate.notified().await;
            }
            reply(200, "ok")
        }
    })
    .await;
    (addr, release)
}

/// An upstream that reads the request, starts a response with a large
/// content-length, sends a few bytes and then drops the connection.
pub async fn resetting_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\npartial")
                    .await;
                let _ = tcp.flush().await;
                // Let the head and the first bytes reach the peer before
                // the connection goes.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                drop(tcp);
            });
        }
    });
    addr
}

/// A loopback address whose connections are refused, for as long as this
/// value lives: a socket bound to port 0 that never listens, so no one
/// else can take the port (unlike a port that was free a moment ago).
#[derive(Debug)]
pub struct RefusingPort {
    _socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl RefusingPort {
    /// Binds one.
    ///
    /// # Panics
    /// If the loopback address cannot be bound.
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("a bound socket's address");
        Self {
            _socket: socket,
            addr,
        }
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for RefusingPort {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    async fn get(addr: SocketAddr, path: &str, http2: bool) -> (u16, http::HeaderMap, String) {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http::<Full<Bytes>>();
        let req = Request::post(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::from_static(b"hi")))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn upstream_answers_and_records_over_both_protocols() {
        let (addr, seen) = upstream(201, "made").await;
        assert_ne!(addr.port(), 0);
        for http2 in [false, true] {
            let (status, headers, body) = get(addr, "/a?b=c", http2).await;
            assert_eq!((status, body.as_str()), (201, "made"));
            assert_eq!(headers["x-upstream"], "1");
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("POST", "/a")
        );
        assert_eq!(seen[0].query.as_deref(), Some("b=c"));
        assert_eq!(seen[1].body, b"hi");
    }

    #[tokio::test]
    async fn a_refusing_port_refuses() {
        let port = RefusingPort::new();
        let err = tokio::net::TcpStream::connect(port.addr())
            .await
            .expect_err("nothing listens");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn the_gate_holds_slow_requests() {
        let (addr, release) = gated_upstream().await;
        let slow = tokio::spawn(get(addr, "/slow", false));
        assert_eq!(get(addr, "/fast", false).await.0, 200);
        assert!(!slow.is_finished());
        release.notify_one();
        assert_eq!(slow.await.unwrap().0, 200);
    }
}
