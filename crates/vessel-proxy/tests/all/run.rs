//! End-to-end tests of `vessel run`: the real binary on a generated Envoy
//! config with loopback ports, a real hyper upstream and real hyper
//! clients (HTTP/1.1 and h2c).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The reload/load tests' helpers, for the limits and capabilities tests.
use crate::support;

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(60);

fn guest(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec-tests/guests/target/wasm32-wasip1/release")
        .join(format!("guest_{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing; run `cargo xtask guests`",
        p.display()
    );
    p
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `vessel` child process; killed when dropped.
struct Vessel {
    child: Child,
    stderr: PathBuf,
}

impl Vessel {
    fn start(name: &str, config: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vessel-run");
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join(format!("{name}.yaml"));
        std::fs::write(&cfg, config).unwrap();
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_vessel"))
            .args([
                "run",
                "--concurrency",
                "2",
                "--access-log",
                "-l",
                "info",
                "-c",
            ])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Self { child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (bounded) for the process to exit.
    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Waits (bounded) until `/ready` on `admin` answers 200.
    async fn wait_ready(&mut self, admin: SocketAddr) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("vessel exited early ({status}):\n{}", self.stderr());
            }
            if let Ok(Ok((200, _, _))) =
                tokio::time::timeout(Duration::from_secs(2), try_get(admin, "/ready", &[])).await
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "vessel not ready:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }
}

impl Drop for Vessel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the upstream saw: (path, headers).
type Seen = Arc<Mutex<Vec<(String, http::HeaderMap)>>>;

/// A loopback upstream answering 200 `upstream\n`; paths starting with
/// `/slow` wait one second first.
async fn upstream() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        log.lock()
                            .unwrap()
                            .push((path.clone(), req.headers().clone()));
                        let _ = req.into_body().collect().await;
                        if path.starts_with("/slow") {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"upstream\n")));
                        resp.headers_mut()
                            .insert("x-upstream", "1".parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    http2: bool,
) -> Result<(u16, http::HeaderMap, String), Box<dyn std::error::Error + Send + Sync>> {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http();
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(Full::new(Bytes::new()))?).await?;
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((
        status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

async fn try_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, http::HeaderMap, String), Box<dyn std::error::Error + Send + Sync>> {
    request(addr, path, headers, false).await
}

/// A bounded request that must succeed.
async fn get(addr: SocketAddr, path: &str, http2: bool) -> (u16, http::HeaderMap, String) {
    tokio::time::timeout(WAIT, request(addr, path, &[], http2))
        .await
        .unwrap_or_else(|_| panic!("GET {path}: timed out"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn hcm(stat_prefix: &str, routes: &str, filter: &Path) -> String {
    format!(
        r#"
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat_prefix}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {stat_prefix}
                vm_config:
                  code: {{ local: {{ filename: "{}" }} }}
          - name: envoy.filters.http.router
"#,
        filter.display()
    )
}

struct Ports {
    main: SocketAddr,
    metrics: SocketAddr,
    admin: SocketAddr,
}

fn config(ports: &Ports, upstream: SocketAddr) -> String {
    let dead = free_port();
    let main_routes = r#"              - match: { path: "/direct" }
                direct_response: { status: 201, body: { inline_string: "direct\n" } }
              - match: { prefix: "/timeout/" }
                route: { cluster: backend, prefix_rewrite: "/slow/", timeout: 0.2s }
              - match: { prefix: "/dead/" }
                route: { cluster: dead }
              - match: { prefix: "/empty/" }
                route: { cluster: empty }
              - match: { prefix: "/api/" }
                route: { cluster: backend, prefix_rewrite: "/" }"#;
    let metrics_routes = r#"              - match: { prefix: "/" }
                route: { cluster: backend }"#;
    format!(
        r#"
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}
{}
  - name: metrics
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}
{}
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
  - name: dead
    connect_timeout: 1s
    load_assignment:
      cluster_name: dead
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {dead} }} }} }}
  - name: empty
    connect_timeout: 1s
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}
"#,
        ports.main.port(),
        hcm("ingress", main_routes, &guest("hello")),
        ports.metrics.port(),
        hcm("metered", metrics_routes, &guest("metrics")),
        upstream.port(),
        ports.admin.port(),
    )
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_routes_filters_admin_and_drains_on_sigterm() {
    let (up, seen) = upstream().await;
    let ports = Ports {
        main: loopback(free_port()),
        metrics: loopback(free_port()),
        admin: loopback(free_port()),
    };
    let mut vessel = Vessel::start("main", &config(&ports, up));
    vessel.wait_ready(ports.admin).await;

    // (a) routed to the cluster through the hello filter, prefix rewritten.
    let (status, headers, body) = get(ports.main, "/api/items?x=1", false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "upstream\n");
    assert_eq!(headers.get("x-upstream").unwrap(), "1");
    // Envoy's router adds the upstream's service time (milliseconds).
    let ms = headers
        .get("x-envoy-upstream-service-time")
        .expect("x-envoy-upstream-service-time");
    assert!(ms.to_str().unwrap().parse::<u64>().is_ok(), "{ms:?}");
    {
        let seen = seen.lock().unwrap();
        let (path, h) = seen.last().expect("the upstream saw the request");
        assert_eq!(path, "/items");
        assert_eq!(h.get("x-hello").expect("x-hello"), "seen");
        // Envoy's connection manager: added before the filters.
        assert_eq!(
            h.get("x-forwarded-proto").expect("x-forwarded-proto"),
            "http"
        );
        assert_eq!(h.get("x-request-id").expect("x-request-id").len(), 36);
    }

    // (b) the filter's local reply.
    let (status, headers, body) = get(ports.main, "/hello", false).await;
    assert_eq!((status, body.as_str()), (200, "Hello, World!\n"));
    assert_eq!(headers.get("hello").unwrap(), "World");

    // (c) direct_response.
    let (status, _, body) = get(ports.main, "/direct", false).await;
    assert_eq!((status, body.as_str()), (201, "direct\n"));

    // (d) no route.
    let (status, _, _) = get(ports.main, "/nowhere", false).await;
    assert_eq!(status, 404);

    // Upstream failures, as Envoy answers them.
    let (status, _, body) = get(ports.main, "/dead/x", false).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
    );
    let (status, _, body) = get(ports.main, "/empty/x", false).await;
    assert_eq!((status, body.as_str()), (503, "no healthy upstream"));
    let (status, _, body) = get(ports.main, "/timeout/x", false).await;
    assert_eq!((status, body.as_str()), (504, "upstream request timeout"));

    // (f) h2c with prior knowledge: local reply and upstream.
    let (status, _, body) = get(ports.main, "/hello", true).await;
    assert_eq!((status, body.as_str()), (200, "Hello, World!\n"));
    let (status, _, body) = get(ports.main, "/api/h2", true).await;
    assert_eq!((status, body.as_str()), (200, "upstream\n"));
    assert_eq!(
        seen.lock()
            .unwrap()
            .last()
            .unwrap()
            .1
            .get("x-hello")
            .unwrap(),
        "seen"
    );

    // (e) guest metrics on the admin listener.
    for _ in 0..3 {
        let (status, headers, _) = get(ports.metrics, "/m", false).await;
        assert_eq!(status, 200);
        assert!(headers.contains_key("x-metric-counter"), "{headers:?}");
    }
    let (status, _, body) = get(ports.admin, "/ready", false).await;
    assert_eq!((status, body.as_str()), (200, "LIVE\n"));
    let (status, _, stats) = get(ports.admin, "/stats", false).await;
    assert_eq!(status, 200);
    assert!(
        stats.lines().any(|l| l == "guest_requests_total: 3"),
        "{stats}"
    );
    assert!(stats.lines().any(|l| l.starts_with("guest_header_count: ")));
    assert!(
        stats.lines().any(|l| l == "guest_value: count=3 sum=126"),
        "{stats}"
    );
    assert!(
        stats
            .lines()
            .any(|l| l == "http.metered.downstream_rq_total: 3"),
        "{stats}"
    );
    let (status, _, prom) = get(ports.admin, "/stats/prometheus", false).await;
    assert_eq!(status, 200);
    assert!(
        prom.contains("# TYPE guest_requests_total counter\nguest_requests_total{} 3\n"),
        "{prom}"
    );
    assert!(prom.contains("# TYPE guest_header_count gauge\n"), "{prom}");
    assert!(prom.contains("guest_value_count{} 3\n"), "{prom}");
    assert!(prom.contains("guest_value_sum{} 126\n"), "{prom}");

    // (g) SIGTERM while a request is in flight: it completes, then the
    // process exits 0.
    let slow = tokio::spawn(request(ports.main, "/api/slow/drain", &[], false));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !seen.lock().unwrap().iter().any(|(p, _)| p == "/slow/drain") {
        assert!(tokio::time::Instant::now() < deadline, "slow request lost");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    vessel.sigterm();
    let (status, _, body) = tokio::time::timeout(WAIT, slow)
        .await
        .expect("in-flight request timed out")
        .unwrap()
        .expect("in-flight request failed");
    assert_eq!((status, body.as_str()), (200, "upstream\n"));
    let exit = vessel
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", vessel.stderr()));
    assert!(exit.success(), "{exit}:\n{}", vessel.stderr());
    assert!(
        try_get(ports.main, "/hello", &[]).await.is_err(),
        "still accepting after exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_field_fails_naming_its_path() {
    let port = free_port();
    let cfg = format!(
        r#"
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200 }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                vm_config:
                  allow_precompiled: true
                  code: {{ local: {{ filename: "{}" }} }}
          - name: envoy.filters.http.router
"#,
        guest("hello").display()
    );
    let mut vessel = Vessel::start("unsupported", &cfg);
    let exit = vessel
        .wait_exit(WAIT)
        .await
        .expect("vessel kept running on a bad config");
    assert!(!exit.success());
    let stderr = vessel.stderr();
    assert!(
        stderr.contains("vm_config.allow_precompiled"),
        "stderr does not name the field:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_wasm_file_fails_at_start() {
    let port = free_port();
    let cfg = format!(
        r#"
static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
{}"#,
        hcm(
            "ingress",
            r#"              - match: { prefix: "/" }
                direct_response: { status: 200 }"#,
            Path::new("/nonexistent/filter.wasm")
        )
    );
    let mut vessel = Vessel::start("missing", &cfg);
    let exit = vessel
        .wait_exit(WAIT)
        .await
        .expect("vessel kept running without its module");
    assert!(!exit.success());
    let stderr = vessel.stderr();
    assert!(
        stderr.contains("/nonexistent/filter.wasm"),
        "stderr does not name the file:\n{stderr}"
    );
}

/// Serves `svc` (HTTP/1.1 and h2c) on `listener` until the test ends.
fn serve<F, Fut>(listener: TcpListener, svc: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Result<
                Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>,
                Infallible,
            >,
        > + Send
        + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let svc = svc.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service_fn(svc))
                    .await;
            });
        }
    });
}

fn full_body(b: &'static [u8]) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    Full::new(Bytes::from_static(b)).boxed()
}

/// A listener on `localhost:port` for every address `localhost` resolves to
/// (the first one picks the port).
async fn bind_localhost() -> (u16, Vec<TcpListener>, Vec<SocketAddr>) {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(("localhost", 0))
        .await
        .unwrap()
        .collect();
    let first = TcpListener::bind(addrs[0]).await.unwrap();
    let port = first.local_addr().unwrap().port();
    let mut listeners = vec![first];
    let mut bound = vec![SocketAddr::new(addrs[0].ip(), port)];
    for a in &addrs[1..] {
        let a = SocketAddr::new(a.ip(), port);
        if !bound.contains(&a) {
            listeners.push(TcpListener::bind(a).await.unwrap());
            bound.push(a);
        }
    }
    (port, listeners, bound)
}

fn phase_properties_config(
    main: SocketAddr,
    admin: SocketAddr,
    clusters: &str,
    routes: &str,
) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: props
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: "upstream.address,upstream.port:int,upstream.local_address,xds.cluster_name"
                vm_config:
                  code: {{ local: {{ filename: "{}" }} }}
          - name: envoy.filters.http.router
  clusters:
{clusters}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}
"#,
        main.port(),
        guest("phase_properties").display(),
        admin.port(),
    )
}

/// The value of stat `name` on the admin `/stats`.
async fn stat(admin: SocketAddr, name: &str) -> Option<u64> {
    let (_, _, text) = get(admin, "/stats", false).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_dns_localhost_is_resolved_again_and_upstream_properties_reach_the_filter() {
    let (port, listeners, bound) = bind_localhost().await;
    for l in listeners {
        serve(l, |_req| async { Ok(Response::new(full_body(b"dns\n"))) });
    }
    let main = loopback(free_port());
    let admin = loopback(free_port());
    let clusters = format!(
        r#"  - name: backend
    type: STRICT_DNS
    dns_refresh_rate: 0.05s
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: localhost, port_value: {port} }} }} }}"#
    );
    let routes = r#"              - match: { prefix: "/" }
                route: { cluster: backend }"#;
    let mut vessel = Vessel::start(
        "dns-props",
        &phase_properties_config(main, admin, &clusters, routes),
    );
    vessel.wait_ready(admin).await;

    let (status, h, body) = get(main, "/x", false).await;
    assert_eq!((status, body.as_str()), (200, "dns\n"));
    let address: SocketAddr = h["x-resp-upstream-address"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bound.contains(&address), "{address} not in {bound:?}");
    assert_eq!(h["x-resp-upstream-port"], port.to_string().as_str());
    let local: SocketAddr = h["x-resp-upstream-local_address"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(local.ip().is_loopback(), "{local}");
    assert_eq!(h["x-resp-xds-cluster_name"], "backend");
    // Not on the request path: the route has not reached an upstream yet.
    assert_eq!(h["x-req-upstream-address"], "<none>");

    // The name is resolved again every 50 ms: the start-up resolution and
    // at least two refreshes, all successful.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ok = stat(admin, "cluster.backend.update_success")
            .await
            .unwrap_or(0);
        if ok >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no DNS refresh seen:\n{}",
            get(admin, "/stats", false).await.2
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stat(admin, "cluster.backend.update_failure").await, Some(0));
    assert_eq!(
        stat(admin, "cluster.backend.membership_total").await,
        Some(bound.len() as u64)
    );
    // Requests still go through after the refreshes.
    let (status, _, _) = get(main, "/y", false).await;
    assert_eq!(status, 200);
}

/// A request body sent in `chunks`, `gap` apart.
struct Trickle {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl http_body::Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_covers_the_whole_response_from_the_end_of_the_request() {
    // `/slow-body`: the head at once, then `part1`, then (after 1 s) the rest.
    // Anything else: reads the whole request, answers `got <n> bytes`.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    serve(listener, |req: Request<Incoming>| async move {
        if req.uri().path() == "/slow-body" {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"part1\n")).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = tx.send(Bytes::from_static(b"part2\n")).await;
            });
            return Ok(Response::new(Trickle { rx }.boxed()));
        }
        let n = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().len())
            .unwrap_or(0);
        let body: Bytes = format!("got {n} bytes\n").into();
        Ok(Response::new(Full::new(body).boxed()))
    });
    let main = loopback(free_port());
    let admin = loopback(free_port());
    let clusters = format!(
        r#"  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}"#,
        up.port()
    );
    let routes = r#"              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 0.3s }"#;
    let mut vessel = Vessel::start(
        "route-timeout",
        &phase_properties_config(main, admin, &clusters, routes),
    );
    vessel.wait_ready(admin).await;

    // The head arrived in time, the body did not: the stream is reset.
    let outcome = tokio::time::timeout(WAIT, request(main, "/slow-body", &[], false))
        .await
        .expect("bounded");
    assert!(outcome.is_err(), "the body must not complete: {outcome:?}");
    let outcome = tokio::time::timeout(WAIT, request(main, "/slow-body", &[], true))
        .await
        .expect("bounded");
    assert!(
        outcome.is_err(),
        "h2: the body must not complete: {outcome:?}"
    );

    // A request body that takes longer than the timeout to arrive is fine:
    // the timeout starts when the request has ended, as in Envoy.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for _ in 0..4 {
            let _ = tx.send(Bytes::from_static(b"0123456789")).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let client: Client<HttpConnector, Trickle> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{main}/upload"))
        .body(Trickle { rx })
        .unwrap();
    let resp = tokio::time::timeout(WAIT, client.request(req))
        .await
        .expect("bounded")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"got 40 bytes\n");
}

/// Every host import vessel links (`env.proxy_*`, WASI) and the callbacks
/// `guest_misbehave` exports, except `proxy_on_request_headers`.
fn all_but_request_headers() -> String {
    let mut names: Vec<String> = vessel_host::hostcalls::import_table()
        .iter()
        .map(|s| s.name.to_owned())
        .collect();
    names.extend(
        [
            "proxy_on_context_create",
            "proxy_on_vm_start",
            "proxy_on_configure",
            "proxy_on_response_headers",
            "proxy_on_request_body",
            "proxy_on_response_body",
            "proxy_on_log",
            "proxy_on_done",
            "proxy_on_delete",
            "proxy_on_tick",
            "proxy_on_memory_allocate",
        ]
        .map(str::to_owned),
    );
    names.sort();
    names.dedup();
    let map: Vec<String> = names.iter().map(|n| format!("{n}: {{}}")).collect();
    format!(
        "capability_restriction_config: {{ allowed_capabilities: {{ {} }} }}",
        map.join(", ")
    )
}

/// `capability_restriction_config` takes effect in `vessel run`: without
/// `proxy_on_request_headers` allowed, the guest's request-headers callback
/// never runs, so `x-misbehave: trap` cannot trap (with everything allowed
/// it fails the VM: 503), and the response callback sees no request counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_capability_takes_effect_in_vessel_run() {
    let up = support::upstream().await;
    for (name, restriction, trap_status) in [
        ("caps-all", String::new(), 503),
        ("caps-denied", all_but_request_headers(), 200),
    ] {
        let (port, admin_port) = (support::free_port(), support::free_port());
        let cfg = support::config(
            port,
            admin_port,
            up,
            &guest("misbehave"),
            &support::plugin("caps", &restriction),
        );
        let mut vessel = support::Vessel::start(name, &cfg, 1);
        vessel.wait_ready(loopback(admin_port)).await;
        let c = support::client();
        let a = support::send(&c, loopback(port), "/", &[("x-misbehave", "trap")]).await;
        assert_eq!(a.status, trap_status, "{name}:\n{}", vessel.stderr());
        if trap_status == 200 {
            assert_eq!(
                a.header("x-vm-requests"),
                Some("0"),
                "on_request_headers never ran"
            );
            let again = support::send(&c, loopback(port), "/", &[]).await;
            assert_eq!(again.status, 200);
            assert_eq!(again.header("x-vm-requests"), Some("0"));
        }
    }
}

/// `vm_config.vessel_limits.memory_bytes` takes effect in `vessel run`: a
/// memory bomb fails its VM at the 64 MiB cap (FAIL_CLOSED: 503), and the
/// log names the limit. Also: `--module-cache-dir` puts the compiled module
/// in that directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_cap_from_vessel_limits_takes_effect_in_vessel_run() {
    let up = support::upstream().await;
    let (port, admin_port) = (support::free_port(), support::free_port());
    let cfg = support::config_vm(
        port,
        admin_port,
        up,
        &guest("misbehave"),
        "vessel_limits: { memory_bytes: 67108864 }",
        &support::plugin("capped", ""),
    );
    let mut vessel = support::Vessel::start("memory-cap", &cfg, 1);
    vessel.wait_ready(loopback(admin_port)).await;
    // `--module-cache-dir` (given by `Vessel::start`) took effect too: the
    // compiled module is in that directory.
    let cached = std::fs::read_dir(vessel.dir.join("module-cache"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "vmc"))
        })
        .count();
    assert_eq!(cached, 1, "one module cache entry");
    let c = support::client();
    assert_eq!(
        support::send(&c, loopback(port), "/", &[]).await.status,
        200
    );
    let a = support::send(&c, loopback(port), "/", &[("x-misbehave", "grow")]).await;
    assert_eq!(a.status, 503, "{}", vessel.stderr());
    support::eventually("the failure is logged", || {
        let log = vessel.stderr();
        async move { log.contains("the limit is 67108864 bytes") }
    })
    .await;
    assert_eq!(
        support::stat(loopback(admin_port), "wasm.misbehave.vm_failures").await,
        Some(1)
    );
}
