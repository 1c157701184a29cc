//! The loopback peers of a scenario run through a real proxy process
//! ([`super::real`]): canned servers for the upstream and the callout
//! clusters, which record what reached them, and the client body that sends
//! a scripted request chunk by chunk, with its trailers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::ObservedMessage;
use super::scenario::{CannedResponse, Headers};

/// What a canned server saw, one entry per request.
pub(crate) type Recorded = Arc<Mutex<Vec<ObservedMessage>>>;

/// The answers a canned server gives: the front one, again and again.
pub(crate) type Answers = Arc<Mutex<VecDeque<CannedResponse>>>;

/// Header pairs of an `http` map, values decoded lossily.
pub(crate) fn pairs(h: &HeaderMap) -> Headers {
    h.iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn header_map(h: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in h {
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), v.parse()) {
            map.append(n, v);
        }
    }
    map
}

/// A body sent frame by frame from a channel: the scripted chunks, a short
/// pause between them so a proxy sees them as separate reads, then the
/// trailers.
pub(crate) struct Scripted {
    rx: mpsc::Receiver<Frame<Bytes>>,
    /// Frames not yet yielded: at 0 the body reports its end, so the last
    /// chunk carries the end of stream (no extra empty frame).
    left: usize,
}

/// The pause between two scripted chunks.
const CHUNK_GAP: Duration = Duration::from_millis(80);

impl Scripted {
    /// A body of `chunks` then `trailers` (if any).
    pub(crate) fn new(chunks: Vec<Bytes>, trailers: Option<&Headers>) -> Self {
        // One frame at a time: the gap starts once the previous frame was
        // taken by the connection, so a slow start cannot bunch chunks
        // into one write.
        let (tx, rx) = mpsc::channel(1);
        let trailers = trailers.map(header_map);
        let left = chunks.len() + usize::from(trailers.is_some());
        tokio::spawn(async move {
            for (i, chunk) in chunks.into_iter().enumerate() {
                if i > 0 {
                    if tx.reserve().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(CHUNK_GAP).await;
                }
                if tx.send(Frame::data(chunk)).await.is_err() {
                    return;
                }
            }
            if let Some(t) = trailers {
                if tx.reserve().await.is_err() {
                    return;
                }
                tokio::time::sleep(CHUNK_GAP).await;
                let _ = tx.send(Frame::trailers(t)).await;
            }
        });
        Self { rx, left }
    }
}

impl http_body::Body for Scripted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let frame = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = &frame {
            self.left -= 1;
        }
        frame.map(|f| f.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

fn response_of(c: &CannedResponse) -> Response<Scripted> {
    let chunks = c
        .body_chunks()
        .into_iter()
        .filter(|b| !b.is_empty())
        .map(|b| Bytes::from(b.to_owned()))
        .collect();
    let trailers = (!c.trailers.is_empty()).then_some(&c.trailers);
    let mut resp = Response::new(Scripted::new(chunks, trailers));
    for (k, v) in &c.headers {
        if k == ":status" {
            if let Ok(s) = v.parse::<u16>().map(http::StatusCode::from_u16) {
                *resp.status_mut() = s.unwrap_or(http::StatusCode::OK);
            }
        } else if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), v.parse()) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

/// What a server does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Answer with the front of the answers.
    Answer,
    /// Read the request and never answer (a callout that times out).
    Hang,
    /// Answer a unary gRPC call (over HTTP/2) with this status: 0 sends
    /// the canned body as the one length-prefixed response message and
    /// `grpc-status: 0` in the trailers; any other status is a
    /// trailers-only answer with `grpc-status` and the body as
    /// `grpc-message`.
    Grpc(u32),
}

/// The gRPC answer of a canned cluster (see [`Behaviour::Grpc`]).
fn grpc_response(status: u32, c: &CannedResponse) -> Response<Scripted> {
    let grpc_headers = |status: u32, message: Option<&str>| {
        let mut h: Headers = vec![
            ("content-type".into(), "application/grpc".into()),
            ("grpc-status".into(), status.to_string()),
        ];
        if let Some(m) = message {
            h.push(("grpc-message".into(), m.to_owned()));
        }
        h
    };
    if status != 0 {
        let mut resp = Response::new(Scripted::new(Vec::new(), None));
        *resp.headers_mut() = header_map(&grpc_headers(status, Some(&c.body)));
        return resp;
    }
    let mut framed = Vec::with_capacity(c.body.len() + 5);
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(c.body.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(c.body.as_bytes());
    let trailers = vec![("grpc-status".to_owned(), "0".to_owned())];
    let mut resp = Response::new(Scripted::new(vec![Bytes::from(framed)], Some(&trailers)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// A loopback server (HTTP/1.1 and HTTP/2 cleartext) answering the front of
/// `answers` and recording each request with Envoy-style pseudo-headers.
pub(crate) async fn canned_server(
    answers: Answers,
    seen: Recorded,
    behaviour: Behaviour,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let answers = answers.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let answers = answers.clone();
                    let seen = seen.clone();
                    async move {
                        record(req, &seen).await;
                        if behaviour == Behaviour::Hang {
                            std::future::pending::<()>().await;
                        }
                        let answer = answers
                            .lock()
                            .ok()
                            .and_then(|a| a.front().cloned())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(match behaviour {
                            Behaviour::Grpc(status) => grpc_response(status, &answer),
                            _ => response_of(&answer),
                        })
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Records a request: its headers as a proxy's map has them, as soon as
/// they arrive, then its body and trailers once they are complete (a body
/// cut short by a reset keeps what arrived before).
async fn record(req: Request<Incoming>, seen: &Recorded) {
    let (parts, mut body) = req.into_parts();
    let mut headers = vec![
        (":method".to_owned(), parts.method.to_string()),
        (
            ":path".to_owned(),
            parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
        ),
    ];
    let authority = parts.uri.authority().map(ToString::to_string).or_else(|| {
        parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    if let Some(a) = authority {
        headers.push((":authority".to_owned(), a));
    }
    headers.extend(
        pairs(&parts.headers)
            .into_iter()
            .filter(|(k, _)| k != "host"),
    );
    let index = match seen.lock() {
        Ok(mut s) => {
            s.push(ObservedMessage {
                status: None,
                headers,
                body: String::new(),
                trailers: Vec::new(),
            });
            s.len() - 1
        }
        Err(_) => return,
    };
    let mut bytes = Vec::new();
    let mut trailers = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        match frame.into_data() {
            Ok(d) => bytes.extend_from_slice(&d),
            Err(f) => {
                if let Ok(t) = f.into_trailers() {
                    trailers = pairs(&t);
                }
            }
        }
        if let Ok(mut s) = seen.lock()
            && let Some(m) = s.get_mut(index)
        {
            m.body = String::from_utf8_lossy(&bytes).into_owned();
            m.trailers = trailers.clone();
        }
    }
}

/// A loopback port that refuses connections for as long as the returned
/// socket lives: bound, never listening, so no one else can take the port
/// and every connection to it is refused.
pub(crate) fn refusing_port() -> std::io::Result<(tokio::net::TcpSocket, SocketAddr)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = socket.local_addr()?;
    Ok((socket, addr))
}
