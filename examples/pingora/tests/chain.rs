//! A vessel filter chain in the Pingora proxy, with real SDK-built guests
//! (`spec-tests/guests`, built by `cargo xtask guests`), a real hyper
//! upstream on 127.0.0.1, the proxy on a port-0 listener, and a real hyper
//! client.
//!
//! Without the guests each test prints a skip, and fails under `CI=true`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Channel, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use vessel_host::{Engine, EngineConfig, HostEnv, LogRecord, LogSink, Plugin, PluginConfig};
use vessel_hyper::{Cluster, Clusters, FailurePolicy, FilterPool, Runtime};
use vessel_pingora_example::{SetupError, VesselProxy, serve};
use vessel_testkit::servers::{Recorder, RefusingPort, record, serve_fn};

type Body = BoxBody<Bytes, Infallible>;

// ---- guests ---------------------------------------------------------------

static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// A guest's bytes; `None` (a printed, counted skip) if it is not built,
/// a panic under `CI=true`.
fn guest(name: &str) -> Option<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec-tests/guests/target/wasm32-wasip1/release")
        .join(format!("guest_{name}.wasm"));
    match std::fs::read(&path) {
        Ok(wasm) => Some(wasm),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "{}: {e}; CI=true needs `cargo xtask guests`",
                path.display()
            )
        }
        Err(e) => {
            let n = SKIPPED.fetch_add(1, Ordering::Relaxed) + 1;
            // Straight to stderr: the test harness captures `eprintln!` of
            // passing tests, and a skip must show.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED ({n} in this binary): {} is missing ({e}); run `cargo xtask guests`",
                path.display()
            );
            None
        }
    }
}

/// Guest log lines, kept.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl LogSink for Lines {
    fn log(&self, record: &LogRecord<'_>) {
        let line = String::from_utf8_lossy(record.message).into_owned();
        self.0.lock().unwrap().push(line);
    }
}

impl Lines {
    fn starting(&self, prefix: &str) -> Vec<String> {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// One filter of a chain: a guest and its plugin configuration.
struct Filter {
    guest: &'static str,
    config: &'static str,
}

const fn filter(guest: &'static str, config: &'static str) -> Filter {
    Filter { guest, config }
}

/// A module of spec-tests/wat (in the repository: never missing).
fn wat_guest(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec-tests/wat")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap()
}

/// The pools of a chain (one VM each), logging into `lines`; `None` if a
/// guest is missing.
fn pools(chain: &[Filter], clusters: Clusters, lines: &Lines) -> Option<Vec<Arc<FilterPool>>> {
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let runtime = Runtime::new(clusters);
    let names = Arc::clone(&runtime);
    let env = HostEnv::builder()
        .log_sink(lines.clone())
        .known_clusters(move |c| names.knows_cluster(c))
        .build();
    let mut pools = Vec::new();
    for f in chain {
        let config = PluginConfig {
            configuration: f.config.as_bytes().to_vec(),
            ..PluginConfig::named(f.guest)
        };
        let wasm = match f.guest.strip_suffix(".wat") {
            Some(name) => wat_guest(name),
            None => guest(f.guest)?,
        };
        let plugin = Plugin::load(&engine, &wasm, config).unwrap();
        let pool = FilterPool::builder(&plugin, &env, &runtime)
            .policy(FailurePolicy::FailClosed)
            .build()
            .unwrap();
        pools.push(pool);
    }
    Some(pools)
}

// ---- servers and client ---------------------------------------------------

/// A recording upstream: answers `upstream saw <n> bytes at <path>` (with
/// `x-upstream: 1`, `content-type: text/plain`); at `/echo`, answers
/// `echo:<the request body>` in two chunks (no `content-length`).
async fn upstream() -> (SocketAddr, Recorder) {
    let seen = Recorder::default();
    let log = Arc::clone(&seen);
    let addr = serve_fn(move |req: Request<Incoming>| {
        let log = Arc::clone(&log);
        async move {
            let path = req.uri().path().to_owned();
            let body = record(req, &log).await;
            let answer = if path == "/echo" {
                let (mut tx, rx) = Channel::<Bytes, Infallible>::new(2);
                tokio::spawn(async move {
                    let _ = tx.send_data(Bytes::from_static(b"echo:")).await;
                    let _ = tx.send_data(body).await;
                });
                rx.boxed()
            } else {
                let text = format!("upstream saw {} bytes at {path}", body.len());
                Full::new(Bytes::from(text)).boxed()
            };
            Response::builder()
                .header("x-upstream", "1")
                .header("content-type", "text/plain")
                .body(answer)
                .unwrap()
        }
    })
    .await;
    (addr, seen)
}

/// A running proxy; it stops when dropped.
struct Proxy {
    addr: SocketAddr,
    pools: Vec<Arc<FilterPool>>,
    _stop: watch::Sender<bool>,
}

impl Proxy {
    async fn start(pools: Vec<Arc<FilterPool>>, upstream: SocketAddr) -> Self {
        let proxy = VesselProxy::new(pools.clone(), upstream).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(serve(listener, proxy, shutdown));
        Self {
            addr,
            pools,
            _stop: stop,
        }
    }

    /// Waits (at most 10 s) until every stream context was deleted again:
    /// `logging` ran `on_log`, `on_done` and `on_delete`.
    async fn streams_ended(&self) {
        let all_ended = || self.pools.iter().all(|p| p.context_count() == p.len());
        tokio::time::timeout(Duration::from_secs(10), async {
            while !all_ended() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every stream ended within 10 s");
    }
}

/// Sends `req` on a fresh connection; returns the response head and the
/// response body (not read yet).
async fn send(addr: SocketAddr, req: Request<Body>) -> (http::response::Parts, Incoming) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender.send_request(req).await.unwrap().into_parts()
}

/// A request with a `host` header.
fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> http::request::Builder {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "example.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req
}

/// Sends a request and reads the whole answer.
async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (http::response::Parts, String) {
    let body = Full::new(Bytes::from(body.to_owned())).boxed();
    let req = request(method, path, headers).body(body).unwrap();
    let (head, body) = send(addr, req).await;
    let body = body.collect().await.unwrap().to_bytes();
    (head, String::from_utf8_lossy(&body).into_owned())
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

// ---- tests ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_rewritten_both_ways() {
    let (up, seen) = upstream().await;
    let lines = Lines::default();
    let config = r#"{
        "request": {"remove": ["x-remove-me"], "set": [["x-set", "1"]], "add": [["x-added", "a"]]},
        "response": {"remove": ["x-upstream"], "add": [["x-resp-added", "b"]]},
        "copy_to_response": ["x-copy"]
    }"#;
    let chain = [filter("sdk_header_rewrite", config)];
    let Some(pools) = pools(&chain, Clusters::new(), &lines) else {
        return;
    };
    let proxy = Proxy::start(pools, up).await;

    let sent = [
        ("x-remove-me", "gone"),
        ("x-set", "0"),
        ("x-copy", "copied"),
    ];
    let (head, body) = exchange(proxy.addr, "GET", "/h?q=1", &sent, "").await;
    assert_eq!(head.status, 200);
    assert_eq!(body, "upstream saw 0 bytes at /h");
    // The response, as the filter left it.
    assert_eq!(header(&head.headers, "x-upstream"), None);
    assert_eq!(header(&head.headers, "x-resp-added"), Some("b"));
    assert_eq!(header(&head.headers, "x-copy"), Some("copied"));
    assert_eq!(header(&head.headers, "content-type"), Some("text/plain"));
    // The request, as the filter left it.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(header(h, "x-remove-me"), None);
    assert_eq!(header(h, "x-set"), Some("1"));
    assert_eq!(header(h, "x-added"), Some("a"));
    assert_eq!(header(h, "x-copy"), Some("copied"));
    assert_eq!(header(h, "host"), Some("example.test"));
    assert_eq!(
        lines.starting("sdk_header_rewrite: request"),
        [
            "sdk_header_rewrite: request remove x-remove-me",
            "sdk_header_rewrite: request set x-set=1",
            "sdk_header_rewrite: request add x-added=a"
        ]
    );
    proxy.streams_ended().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_of_a_kept_alive_connection_is_its_own_stream() {
    let (up, seen) = upstream().await;
    let lines = Lines::default();
    let config = r#"{"copy_to_response": ["x-n"]}"#;
    let chain = [filter("sdk_header_rewrite", config)];
    let Some(pools) = pools(&chain, Clusters::new(), &lines) else {
        return;
    };
    let proxy = Proxy::start(pools, up).await;

    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    for n in ["1", "2", "3"] {
        let body = Full::new(Bytes::new()).boxed();
        let req = request("GET", &format!("/k{n}"), &[("x-n", n)]);
        // The connection takes the next request once the last one is done.
        sender.ready().await.unwrap();
        let resp = sender.send_request(req.body(body).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(resp.headers(), "x-n"), Some(n));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("upstream saw 0 bytes at /k{n}"));
    }
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(lines.starting("sdk_header_rewrite: copy x-n=").len(), 3);
    proxy.streams_ended().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_from_request_headers_request_body_and_response_headers() {
    let (up, seen) = upstream().await;
    let lines = Lines::default();
    let Some(pools) = pools(&[filter("local_response", "")], Clusters::new(), &lines) else {
        return;
    };
    let proxy = Proxy::start(pools, up).await;

    // From the request headers: written by request_filter, the upstream is
    // never asked.
    let (head, body) = exchange(proxy.addr, "GET", "/local/headers", &[], "").await;
    assert_eq!(head.status, 403);
    assert_eq!(header(&head.headers, "x-local"), Some("headers"));
    assert_eq!(body, "denied by headers\n");
    proxy.streams_ended().await;
    assert!(seen.lock().unwrap().is_empty());

    // From the request body, at its end: written by fail_to_proxy.
    let (head, body) = exchange(proxy.addr, "POST", "/local/body", &[], "abc").await;
    assert_eq!(head.status, 400);
    assert_eq!(header(&head.headers, "x-local"), Some("body"));
    assert_eq!(body, "request body was: abc\n");

    // From the response headers: the reply replaces the upstream's answer.
    let (head, body) = exchange(proxy.addr, "GET", "/local/response", &[], "").await;
    assert_eq!(head.status, 500);
    assert_eq!(header(&head.headers, "x-local"), Some("response"));
    assert_eq!(header(&head.headers, "x-upstream"), None);
    assert_eq!(body, "replaced upstream 200\n");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|s| s.path == "/local/response")
    );
    // Envoy runs a local reply sent from the request path through the
    // response callbacks too.
    assert!(
        lines
            .starting("local_response: response headers of local reply status=")
            .contains(&"local_response: response headers of local reply status=403".to_owned()),
        "{:?}",
        lines.starting("local_response:")
    );
    proxy.streams_ended().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bodies_are_rewritten_in_both_directions() {
    let (up, seen) = upstream().await;
    let lines = Lines::default();
    let Some(pools) = pools(&[filter("bodies", "")], Clusters::new(), &lines) else {
        return;
    };
    let proxy = Proxy::start(pools, up).await;

    // The request body streams in from the client in three chunks.
    let (mut tx, rx) = Channel::<Bytes, Infallible>::new(1);
    let req = Request::builder()
        .method("POST")
        .uri("/echo")
        .header("host", "example.test")
        .header("x-body-mode", "prepend")
        .header("x-resp-body-mode", "append")
        .body(rx.boxed())
        .unwrap();
    let client = tokio::spawn(send(proxy.addr, req));
    for part in ["one,", "two,", "three"] {
        tx.send_data(Bytes::from_static(part.as_bytes()))
            .await
            .unwrap();
    }
    drop(tx);
    let (head, body) = client.await.unwrap();
    let body = body.collect().await.unwrap().to_bytes();

    assert_eq!(head.status, 200);
    assert_eq!(body, "echo:prepended:one,two,three:appended");
    assert_eq!(header(&head.headers, "content-length"), None);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].body, b"prepended:one,two,three");
    assert_eq!(header(&seen[0].headers, "content-length"), None);
    assert_eq!(
        lines.starting("request-body buffered"),
        ["request-body buffered size=13 body=one,two,three"]
    );
    assert_eq!(
        lines.starting("response-body buffered"),
        ["response-body buffered size=28 body=echo:prepended:one,two,three"]
    );
    // Each body's end came as one more callback with no new data (the
    // size is what the filter has buffered).
    for (side, size) in [("request", 13), ("response", 28)] {
        let chunks = lines.starting(&format!("{side}-body chunk size="));
        let last = [
            format!("{side}-body chunk size={size} eos=false"),
            format!("{side}-body chunk size={size} eos=true"),
        ];
        assert!(chunks.ends_with(&last), "{chunks:?}");
    }

    // A response framed by `content-length` whose filter removed it goes
    // on chunked.
    let (head, body) = exchange(
        proxy.addr,
        "GET",
        "/plain",
        &[("x-resp-body-mode", "replace")],
        "",
    )
    .await;
    assert_eq!((head.status.as_u16(), body.as_str()), (200, "replaced"));
    assert_eq!(header(&head.headers, "content-length"), None);
    assert_eq!(header(&head.headers, "transfer-encoding"), Some("chunked"));
    proxy.streams_ended().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_through_body_streams_chunk_by_chunk() {
    let lines = Lines::default();
    let Some(pools) = pools(&[filter("bodies", "")], Clusters::new(), &lines) else {
        return;
    };
    // The upstream takes the first request chunk, reports it, then answers
    // with one chunk and holds the second until the test says so.
    let (got_first, mut first_rx) = mpsc::unbounded_channel::<Bytes>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let go = Arc::new(Mutex::new(Some(go_rx)));
    let up = serve_fn(move |req: Request<Incoming>| {
        let got_first = got_first.clone();
        let go = go.lock().unwrap().take();
        async move {
            let mut body = req.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            got_first.send(first).unwrap();
            let rest = body.collect().await.unwrap().to_bytes();
            let (mut tx, rx) = Channel::<Bytes, Infallible>::new(1);
            tokio::spawn(async move {
                tx.send_data(Bytes::from_static(b"first;")).await.unwrap();
                if let Some(go) = go {
                    let _ = go.await;
                }
                tx.send_data(rest).await.unwrap();
            });
            Response::new(rx.boxed())
        }
    })
    .await;
    let proxy = Proxy::start(pools, up).await;

    let (mut tx, rx) = Channel::<Bytes, Infallible>::new(1);
    let req = Request::builder()
        .method("POST")
        .uri("/stream")
        .header("host", "example.test")
        .body(rx.boxed())
        .unwrap();
    let client = tokio::spawn(send(proxy.addr, req));
    tx.send_data(Bytes::from_static(b"ping")).await.unwrap();
    // Bounded waits: a proxy that held a body until its end would never
    // let these through.
    let first = tokio::time::timeout(Duration::from_secs(10), first_rx.recv())
        .await
        .expect("the first request chunk within 10 s")
        .unwrap();
    assert_eq!(first, "ping");
    tx.send_data(Bytes::from_static(b"pong")).await.unwrap();
    drop(tx);

    let (head, mut body) = client.await.unwrap();
    assert_eq!(head.status, 200);
    let chunk = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first response chunk within 10 s")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(chunk, "first;");
    go_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "pong");
    assert!(
        lines
            .starting("request-body chunk data=")
            .starts_with(&["request-body chunk data=ping".to_owned()]),
        "{:?}",
        lines.starting("request-body")
    );
    assert!(
        lines
            .starting("response-body chunk data=")
            .starts_with(&["response-body chunk data=first;".to_owned()]),
        "{:?}",
        lines.starting("response-body")
    );
    proxy.streams_ended().await;
}

/// An auth service: `200` with `x-auth-user: alice` for token `good`, else
/// `401`; records the paths asked.
async fn auth_service() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&asked);
    let addr = serve_fn(move |req: Request<Incoming>| {
        let record = Arc::clone(&record);
        async move {
            record.lock().unwrap().push(req.uri().path().to_owned());
            let good = req.headers().get("x-token").is_some_and(|t| t == "good");
            let status = if good { 200 } else { 401 };
            Response::builder()
                .status(status)
                .header("x-auth-user", "alice")
                .body(Full::new(Bytes::new()).boxed())
                .unwrap()
        }
    })
    .await;
    (addr, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_call_holds_the_request_until_its_answer() {
    let (up, seen) = upstream().await;
    let (auth, asked) = auth_service().await;
    let mut clusters = Clusters::new();
    clusters.add(Cluster::new("auth", auth));
    let lines = Lines::default();
    let Some(pools) = pools(&[filter("http_call", "")], clusters, &lines) else {
        return;
    };
    let proxy = Proxy::start(pools, up).await;

    let (head, body) = exchange(proxy.addr, "GET", "/r", &[("x-token", "good")], "").await;
    assert_eq!(head.status, 200, "{body}");
    assert_eq!(body, "upstream saw 0 bytes at /r");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(header(&seen[0].headers, "x-auth-user"), Some("alice"));
    }
    assert_eq!(*asked.lock().unwrap(), ["/auth"]);
    assert_eq!(
        lines.starting("http_call allowed"),
        ["http_call allowed user=alice"]
    );

    // Denied: the callout's answer becomes a local 403 from request_filter.
    let (head, body) = exchange(proxy.addr, "GET", "/r", &[("x-token", "bad")], "").await;
    assert_eq!(head.status, 403);
    assert_eq!(header(&head.headers, "x-auth-status"), Some("401"));
    assert_eq!(body, "forbidden\n");
    proxy.streams_ended().await;
    assert_eq!(seen.lock().unwrap().len(), 1, "the upstream was not asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_two_filters_runs_in_order() {
    let (up, seen) = upstream().await;
    let (auth, _asked) = auth_service().await;
    let mut clusters = Clusters::new();
    clusters.add(Cluster::new("auth", auth));
    let lines = Lines::default();
    let chain = [
        filter(
            "chain_probe",
            "tag=a add_request_header=x-a:1 add_response_header=x-a-response:1",
        ),
        filter("http_call", ""),
    ];
    let Some(pools) = pools(&chain, clusters, &lines) else {
        return;
    };
    let proxy = Proxy::start(pools, up).await;

    let (head, _) = exchange(proxy.addr, "GET", "/two", &[("x-token", "good")], "").await;
    assert_eq!(head.status, 200);
    assert_eq!(header(&head.headers, "x-a-response"), Some("1"));
    {
        let seen = seen.lock().unwrap();
        let h = &seen[0].headers;
        assert_eq!(header(h, "x-a"), Some("1"));
        assert_eq!(header(h, "x-auth-user"), Some("alice"));
    }
    // The second filter's local reply runs back through the first
    // filter's response callbacks.
    let (head, body) = exchange(proxy.addr, "GET", "/two", &[("x-token", "bad")], "").await;
    assert_eq!((head.status.as_u16(), body.as_str()), (403, "forbidden\n"));
    assert_eq!(header(&head.headers, "x-a-response"), Some("1"));
    assert_eq!(
        lines.starting("chain_probe a: response_headers"),
        [
            "chain_probe a: response_headers status=200 eos=false",
            "chain_probe a: response_headers status=403 eos=false"
        ]
    );
    proxy.streams_ended().await;
    assert_eq!(lines.starting("chain_probe a: on_log").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_gets_pingoras_502_through_the_chain() {
    // A port that refuses connections (and that no one else can take).
    let refusing = RefusingPort::new();
    let dead = refusing.addr();
    let lines = Lines::default();
    let chain = [filter("chain_probe", "tag=a add_response_header=x-a:1")];
    let Some(pools) = pools(&chain, Clusters::new(), &lines) else {
        return;
    };
    let proxy = Proxy::start(pools, dead).await;

    let (head, _) = exchange(proxy.addr, "GET", "/down", &[], "").await;
    assert_eq!(head.status, 502);
    assert_eq!(header(&head.headers, "x-a"), Some("1"));
    assert_eq!(
        lines.starting("chain_probe a: response_headers"),
        ["chain_probe a: response_headers status=502 eos=true"]
    );
    proxy.streams_ended().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_lets_headers_wait_for_the_body_is_refused() {
    let Some(wasm) = guest("chain_probe") else {
        return;
    };
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let config = PluginConfig {
        allow_on_headers_stop_iteration: true,
        ..PluginConfig::named("probe")
    };
    let plugin = Plugin::load(&engine, &wasm, config).unwrap();
    let runtime = Runtime::new(Clusters::new());
    let pool = FilterPool::builder(&plugin, &HostEnv::default(), &runtime)
        .build()
        .unwrap();
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    match VesselProxy::new(vec![pool], up) {
        Err(SetupError::HeadersStopIteration { plugin }) => assert_eq!(plugin, "probe"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_holds_the_end_of_the_response_body_fails_the_request_loudly() {
    let (up, _seen) = upstream().await;
    let lines = Lines::default();
    let Some(pools) = pools(&[filter("return_codes.wat", "")], Clusters::new(), &lines) else {
        return;
    };
    let proxy = Proxy::start(pools, up).await;

    // Every response body callback answers StopIterationAndBuffer (1), the
    // last one too: only a continue could release the body, and
    // response_body_filter cannot wait for one. The request fails: a 500
    // if Pingora had not written the head yet (it writes it with the first
    // body chunk), else a cut-short body; never bytes the filter held.
    let req = request("GET", "/held", &[("x-return-response-body", "1")])
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    let (head, body) = send(proxy.addr, req).await;
    let body = body.collect().await;
    match head.status.as_u16() {
        500 => assert_eq!(body.unwrap().to_bytes(), ""),
        200 => assert!(body.is_err(), "the response is cut short"),
        other => panic!("unexpected status {other}"),
    }
    assert!(
        lines
            .starting("return_codes: on_response_body=")
            .iter()
            .all(|l| l == "return_codes: on_response_body=1"),
    );
    proxy.streams_ended().await;

    // Without the hold, the same filter passes the response.
    let (head, body) = exchange(proxy.addr, "GET", "/free", &[], "").await;
    assert_eq!(
        (head.status.as_u16(), body.as_str()),
        (200, "upstream saw 0 bytes at /free")
    );
}
