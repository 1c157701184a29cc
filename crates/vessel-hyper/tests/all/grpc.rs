//! gRPC callouts (unary calls and streams) over HTTP/2 to a real gRPC
//! server on loopback: tonic's server (`tonic::server::Grpc`) with
//! hand-written services and a bytes codec, served by hyper's HTTP/2
//! server. The guests are `guest_grpc_call` and `guest_grpc_stream`
//! (contract: spec-tests/guests/README.md).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use bytes::{Buf, BufMut, Bytes};
use http::Response;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status, Streaming};
use vessel_host::{Engine, EngineConfig, HostEnv, LogRecord, LogSink, Plugin, PluginConfig};
use vessel_hyper::{Cluster, Clusters, FailurePolicy, FilterPool, Runtime, VesselLayer};

/// Messages are raw bytes (no protobuf).
#[derive(Debug, Clone, Copy, Default)]
struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;
    fn encoder(&mut self) -> Self {
        Self
    }
    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

type Out = ReceiverStream<Result<Bytes, Status>>;

/// What the server saw, and a signal when a `Ticker` client went away.
#[derive(Clone, Default)]
struct ServerLog {
    lines: Arc<Mutex<Vec<String>>>,
    ticker_gone: Arc<Notify>,
}

impl ServerLog {
    fn push(&self, line: impl Into<String>) {
        self.lines.lock().unwrap().push(line.into());
    }
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `echo.Echo` (streaming methods):
/// * `Chat`: initial metadata `x-echo-init: yes`; echoes each message as
///   `echo:<m>`; when the client half-closes sends `bye` and ends OK.
/// * `Fail`: initial metadata `x-fail-init: yes`; sends `a`, `b`, then ends
///   with PERMISSION_DENIED (7), message `nope`, trailer `x-reason: test`.
/// * `Deny`: fails at once with UNAUTHENTICATED (16) `denied`
///   (a trailers-only answer).
/// * `Ticker`: sends `tick 1`, `tick 2`, ... every 20 ms until the client
///   goes away.
///
/// `auth.Auth/Check` (unary): message `good` → `alice`; anything else →
/// PERMISSION_DENIED `bad token` (trailers-only).
async fn handle_stream(
    method: String,
    req: tonic::Request<Streaming<Bytes>>,
    log: ServerLog,
) -> Result<tonic::Response<Out>, Status> {
    let trace = req
        .metadata()
        .get("x-trace")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    log.push(format!("{method} x-trace={trace}"));
    let mut inbound = req.into_inner();
    let (tx, rx) = mpsc::channel(16);
    let mut resp = tonic::Response::new(ReceiverStream::new(rx));
    match method.as_str() {
        "Chat" => {
            resp.metadata_mut()
                .insert("x-echo-init", MetadataValue::from_static("yes"));
            tokio::spawn(async move {
                loop {
                    match inbound.message().await {
                        Ok(Some(m)) => {
                            log.push(format!("Chat got {}", text(&m)));
                            let echo = Bytes::from(format!("echo:{}", text(&m)));
                            if tx.send(Ok(echo)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            log.push("Chat inbound ended");
                            let _ = tx.send(Ok(Bytes::from_static(b"bye"))).await;
                            return;
                        }
                        Err(e) => {
                            log.push(format!("Chat inbound error {}", e.code() as i32));
                            return;
                        }
                    }
                }
            });
        }
        "Fail" => {
            resp.metadata_mut()
                .insert("x-fail-init", MetadataValue::from_static("yes"));
            tokio::spawn(async move {
                let _keep = inbound;
                for m in ["a", "b"] {
                    let _ = tx.send(Ok(Bytes::from_static(m.as_bytes()))).await;
                }
                let mut md = tonic::metadata::MetadataMap::new();
                md.insert("x-reason", MetadataValue::from_static("test"));
                let _ = tx
                    .send(Err(Status::with_metadata(
                        Code::PermissionDenied,
                        "nope",
                        md,
                    )))
                    .await;
            });
        }
        "Deny" => return Err(Status::unauthenticated("denied")),
        "Ticker" => {
            tokio::spawn(async move {
                let _keep = inbound;
                for i in 1.. {
                    if tx.send(Ok(Bytes::from(format!("tick {i}")))).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                log.push("Ticker client gone");
                log.ticker_gone.notify_one();
            });
        }
        _ => return Err(Status::unimplemented(method)),
    }
    Ok(resp)
}

async fn grpc_server() -> (SocketAddr, ServerLog) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = ServerLog::default();
    let server_log = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let log = server_log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let mut grpc = tonic::server::Grpc::new(BytesCodec);
                        let resp: Response<tonic::body::Body> = if path == "/auth.Auth/Check" {
                            let log = log.clone();
                            let check = tower::service_fn(move |r: tonic::Request<Bytes>| {
                                let log = log.clone();
                                async move {
                                    let trace = r
                                        .metadata()
                                        .get("x-trace")
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("-")
                                        .to_owned();
                                    let timeout = r
                                        .metadata()
                                        .get("grpc-timeout")
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("-")
                                        .to_owned();
                                    log.push(format!(
                                        "Check x-trace={trace} grpc-timeout={timeout}"
                                    ));
                                    if r.get_ref().as_ref() == b"good" {
                                        Ok(tonic::Response::new(Bytes::from_static(b"alice")))
                                    } else {
                                        Err(Status::permission_denied("bad token"))
                                    }
                                }
                            });
                            grpc.unary(check, req).await
                        } else if let Some(method) = path.strip_prefix("/echo.Echo/") {
                            let method = method.to_owned();
                            let svc =
                                tower::service_fn(move |r: tonic::Request<Streaming<Bytes>>| {
                                    handle_stream(method.clone(), r, log.clone())
                                });
                            grpc.streaming(svc, req).await
                        } else {
                            Status::unimplemented(path).into_http()
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, log)
}

/// Guest log lines, in order.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl LogSink for Lines {
    fn log(&self, record: &LogRecord<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(record.message).into_owned());
    }
}

impl Lines {
    fn matching(&self, prefix: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// A pool of `guest_<name>` with a `grpc` cluster at `grpc` and a log sink.
fn grpc_pool(name: &str, grpc: SocketAddr) -> (Arc<FilterPool>, Arc<Runtime>, Lines) {
    let mut clusters = Clusters::new();
    clusters.add(Cluster::new("grpc", grpc).http2());
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let plugin = Plugin::load(&engine, &guest(name), PluginConfig::named(name)).unwrap();
    let runtime = Runtime::new(clusters);
    let names = runtime.clone();
    let lines = Lines::default();
    let env = HostEnv::builder()
        .known_clusters(move |c| names.knows_cluster(c))
        .log_sink(lines.clone())
        .build();
    let pool = FilterPool::new(&plugin, &env, &runtime, 1, FailurePolicy::FailClosed).unwrap();
    (pool, runtime, lines)
}

async fn stream_request(proxy: SocketAddr, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, _, body) =
        tokio::time::timeout(Duration::from_secs(10), get(proxy, "/stream", headers))
            .await
            .expect("the guest answers once the stream closes");
    (status, String::from_utf8(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_grpc_auth_allows_and_denies() {
    let (up, seen) = upstream(200, "ok").await;
    let (grpc, server) = grpc_server().await;
    let (pool, _rt, _lines) = grpc_pool("grpc_call", grpc);
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
    assert_eq!(
        server.lines(),
        vec![
            "Check x-trace=t1 grpc-timeout=5000m",
            "Check x-trace=t1 grpc-timeout=5000m"
        ],
        "the initial metadata and the call's timeout reached the server"
    );
    assert_eq!(pool.context_count(), pool.len());
    assert_eq!(pool.grpc_in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_grpc_cluster_closes_with_unavailable() {
    let (up, seen) = upstream(200, "ok").await;
    let refusing = vessel_testkit::servers::RefusingPort::new();
    let dead = refusing.addr();
    let mut clusters = Clusters::new();
    clusters.add(Cluster::new("grpc", dead).http2());
    let (pool, _rt) = pool("grpc_call", "", clusters, FailurePolicy::FailClosed);
    let proxy = proxy(VesselLayer::new(vec![pool]), up).await;
    let (status, headers, _) = get(proxy, "/in", &[("x-token", "good")]).await;
    assert_eq!(status, 403);
    assert_eq!(headers["x-grpc-status"], "14");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_stream_delivers_metadata_each_message_trailers_and_close() {
    let (up, seen) = upstream(200, "ok").await;
    let (grpc, server) = grpc_server().await;
    let (pool, _rt, _lines) = grpc_pool("grpc_stream", grpc);
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;

    // end_stream on the last send half-closes: the server then says bye.
    let (status, body) = stream_request(
        proxy,
        &[("x-grpc-send", "hello,world"), ("x-grpc-end", "eos")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 6, "{body}");
    assert!(lines[0].starts_with("initial n="), "{body}");
    assert!(lines[0].ends_with(" x-echo-init=yes"), "{body}");
    assert_eq!(
        &lines[1..],
        &[
            "message echo:hello",
            "message echo:world",
            "message bye",
            "trailing n=1 grpc-status=0",
            "close status=0 message=",
        ],
        "{body}"
    );
    assert_eq!(
        server.lines(),
        vec![
            "Chat x-trace=t1",
            "Chat got hello",
            "Chat got world",
            "Chat inbound ended"
        ]
    );
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(pool.context_count(), pool.len());
    assert_eq!(pool.grpc_in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_close_half_closes_and_the_server_still_answers() {
    let (up, _) = upstream(200, "ok").await;
    let (grpc, server) = grpc_server().await;
    let (pool, _rt, _lines) = grpc_pool("grpc_stream", grpc);
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;

    // proxy_grpc_close after the sends: messages already queued still go
    // out, the server sees the end of its inbound stream, and what it sends
    // afterwards still reaches the guest.
    let (status, body) =
        stream_request(proxy, &[("x-grpc-send", "one"), ("x-grpc-end", "close")]).await;
    assert_eq!(status, 200, "{body}");
    let tail: Vec<&str> = body.lines().skip(1).collect();
    assert_eq!(
        tail,
        [
            "message echo:one",
            "message bye",
            "trailing n=1 grpc-status=0",
            "close status=0 message=",
        ],
        "{body}"
    );
    assert_eq!(
        server.lines(),
        vec!["Chat x-trace=t1", "Chat got one", "Chat inbound ended"]
    );

    // After the remote close the token stays valid until the guest closes
    // it too (Envoy): proxy_grpc_close then answers OK, once.
    let (status, body) = stream_request(
        proxy,
        &[
            ("x-grpc-send", "two"),
            ("x-grpc-end", "eos"),
            ("x-grpc-close-after-remote", "1"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.ends_with("close status=0 message=\nlocal close after remote close: Ok(())\n"),
        "{body}"
    );
    assert_eq!(pool.context_count(), pool.len());
    assert_eq!(pool.grpc_in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stream_ending_with_non_ok_status_and_trailing_metadata() {
    let (up, _) = upstream(200, "ok").await;
    let (grpc, _server) = grpc_server().await;
    let (pool, _rt, _lines) = grpc_pool("grpc_stream", grpc);
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;

    let (status, body) =
        stream_request(proxy, &[("x-grpc-method", "Fail"), ("x-grpc-send", "go")]).await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert!(lines[0].ends_with(" x-fail-init=yes"), "{body}");
    assert_eq!(
        &lines[1..],
        &[
            "message a",
            "message b",
            "trailing n=3 x-reason=test grpc-status=7 grpc-message=nope",
            "close status=7 message=nope",
        ],
        "{body}"
    );

    // A trailers-only answer: empty initial metadata, the head as trailing
    // metadata, its status.
    let (status, body) = stream_request(proxy, &[("x-grpc-method", "Deny")]).await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "initial n=0", "{body}");
    assert!(
        lines[1].starts_with("trailing n=")
            && lines[1].ends_with(" grpc-status=16 grpc-message=denied"),
        "{body}"
    );
    assert_eq!(&lines[2..], &["close status=16 message=denied"], "{body}");
    assert_eq!(pool.grpc_in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_resets_the_stream_and_no_callback_follows() {
    let (up, _) = upstream(200, "ok").await;
    let (grpc, server) = grpc_server().await;
    let (pool, _rt, lines) = grpc_pool("grpc_stream", grpc);
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;

    // The ticker never stops by itself; the guest cancels after 2 messages.
    let gone = server.ticker_gone.notified();
    let (status, body) = stream_request(
        proxy,
        &[("x-grpc-method", "Ticker"), ("x-grpc-cancel-after", "2")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let tail: Vec<&str> = body.lines().skip(1).collect();
    assert_eq!(
        tail,
        ["message tick 1", "message tick 2", "cancelled"],
        "{body}"
    );
    // The server sees the reset...
    tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .expect("the server sees the stream reset");
    // ...and ticks it sent meanwhile never reach the guest: once the pool
    // has released the stream (no call in flight), nothing can be
    // delivered on its token.
    eventually("the reset gRPC stream is released", || {
        pool.grpc_in_flight() == 0
    })
    .await;
    assert_eq!(lines.matching("grpc_stream message").len(), 2);
    assert!(lines.matching("grpc_stream trailing").is_empty());
    assert!(lines.matching("grpc_stream close").is_empty());

    // Cancelled in the same callback that opened it: no callback at all.
    let (status, body) = stream_request(
        proxy,
        &[("x-grpc-send", "never"), ("x-grpc-cancel-after", "0")],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "cancelled\n"));
    eventually("the cancelled gRPC stream is released", || {
        pool.grpc_in_flight() == 0
    })
    .await;
    assert_eq!(lines.matching("grpc_stream initial").len(), 1);
    assert_eq!(pool.context_count(), pool.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_to_unknown_cluster_or_dead_upstream_fails_as_envoy() {
    let (up, _) = upstream(200, "ok").await;
    let refusing = vessel_testkit::servers::RefusingPort::new();
    let dead = refusing.addr();
    let (pool, _rt, _lines) = grpc_pool("grpc_stream", dead);
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;

    // Unknown cluster: proxy_grpc_stream fails at once (PARSE_FAILURE).
    let (status, body) = stream_request(proxy, &[("x-grpc-cluster", "nope")]).await;
    assert_eq!((status, body.as_str()), (503, "open failed ParseFailure\n"));

    // Nothing listens: a trailers-only UNAVAILABLE, as Envoy's router
    // answers a gRPC request it cannot forward.
    let reason = "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
    let (status, body) = stream_request(proxy, &[("x-grpc-send", "x")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        format!(
            "initial n=0\ntrailing n=4 grpc-status=14 grpc-message={reason}\nclose status=14 message={reason}\n"
        )
    );
    assert_eq!(pool.grpc_in_flight(), 0);
    assert_eq!(pool.context_count(), pool.len());
}
