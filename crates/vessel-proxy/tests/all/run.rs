//! End-to-end tests of `vessel run`: the real binary on a generated Envoy
//! config with loopback ports, a real hyper upstream and real hyper
//! clients (HTTP/1.1 and h2c).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use vessel_testkit::bootstrap::{Bootstrap, Cluster, ClusterType, Listener, Route, WasmFilter};
use vessel_testkit::servers::{self, Recorder, RefusingPort};
use vessel_testkit::{VesselProcess, WAIT};

/// The reload/load tests' helpers, for the limits and capabilities tests.
use crate::support;

fn guest(name: &str) -> PathBuf {
    support::guest(name)
}

/// Starts `vessel run --concurrency 2 --access-log -l info` on `config` in
/// a directory of its own (not waiting for it to serve).
fn start(name: &str, config: &str) -> VesselProcess {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vessel-run-{name}"));
    VesselProcess::start(
        Path::new(env!("CARGO_BIN_EXE_vessel")),
        &dir,
        config,
        &["--concurrency", "2", "--access-log", "-l", "info"],
    )
}

/// A loopback upstream answering 200 `upstream\n` with `x-upstream: 1`,
/// recording each request; paths starting with `/slow` wait one second
/// first.
async fn upstream() -> (SocketAddr, Recorder) {
    let seen = Recorder::default();
    let log = seen.clone();
    let addr = servers::serve_fn(move |req: Request<Incoming>| {
        let log = log.clone();
        async move {
            let slow = req.uri().path().starts_with("/slow");
            servers::record(req, &log).await;
            if slow {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut resp = servers::reply(200, "upstream\n");
            resp.headers_mut()
                .insert("x-upstream", "1".parse().unwrap());
            resp
        }
    })
    .await;
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

/// A listener whose connection manager runs `filter` as the wasm filter
/// named after `stat_prefix`.
fn hcm(name: &str, stat_prefix: &str, filter: &Path) -> Listener {
    Listener::new(name)
        .stat_prefix(stat_prefix)
        .filter(WasmFilter::new(stat_prefix, filter))
}

/// Two listeners (`main` through guest_hello, `metrics` through
/// guest_metrics), the clusters `backend` (`upstream`), `dead` (refuses
/// connections) and `empty` (no endpoints), and the admin.
fn config(upstream: SocketAddr, dead: &RefusingPort) -> String {
    Bootstrap::new()
        .listener(
            hcm("main", "ingress", &guest("hello"))
                .route(Route::path("/direct").direct(201, Some("direct\n")))
                .route(
                    Route::prefix("/timeout/")
                        .to("backend")
                        .prefix_rewrite("/slow/")
                        .timeout("0.2s"),
                )
                .route(Route::prefix("/dead/").to("dead"))
                .route(Route::prefix("/empty/").to("empty"))
                .route(Route::prefix("/api/").to("backend").prefix_rewrite("/")),
        )
        .listener(
            hcm("metrics", "metered", &guest("metrics")).route(Route::prefix("/").to("backend")),
        )
        .cluster(Cluster::new("backend").endpoint(upstream))
        .cluster(Cluster::new("dead").endpoint(dead.addr()))
        .cluster(Cluster::new("empty"))
        .to_yaml()
}

struct Ports {
    main: SocketAddr,
    metrics: SocketAddr,
    admin: SocketAddr,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_routes_filters_admin_and_drains_on_sigterm() {
    let (up, seen) = upstream().await;
    let dead = RefusingPort::new();
    let mut vessel = start("main", &config(up, &dead));
    vessel.wait_ready().await;
    let ports = Ports {
        main: vessel.listener("main"),
        metrics: vessel.listener("metrics"),
        admin: vessel.admin(),
    };

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
        let last = seen.last().expect("the upstream saw the request");
        let (path, h) = (&last.path, &last.headers);
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
            .headers
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
    while !seen.lock().unwrap().iter().any(|s| s.path == "/slow/drain") {
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
    let cfg = Bootstrap::new()
        .listener(
            Listener::new("main")
                .route(Route::prefix("/").direct(200, None))
                .filter(
                    WasmFilter::new("hello", guest("hello"))
                        .vm_field("allow_precompiled", true.into()),
                ),
        )
        .to_yaml();
    let mut vessel = start("unsupported", &cfg);
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
    let cfg = Bootstrap::new()
        .listener(
            hcm("main", "ingress", Path::new("/nonexistent/filter.wasm"))
                .route(Route::prefix("/").direct(200, None)),
        )
        .to_yaml();
    let mut vessel = start("missing", &cfg);
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

/// One listener `main` running guest_phase_properties (which reports
/// upstream properties) with `route`, the cluster `backend`, and the admin.
fn phase_properties_config(backend: Cluster, route: Route) -> String {
    Bootstrap::new()
        .listener(Listener::new("main").route(route).filter(
            WasmFilter::new("props", guest("phase_properties")).configuration(
                "upstream.address,upstream.port:int,upstream.local_address,xds.cluster_name",
            ),
        ))
        .cluster(backend)
        .to_yaml()
}

/// Starts `vessel run` on `config`; returns it and its `main` and admin
/// addresses once it serves.
async fn start_ready(name: &str, config: &str) -> (VesselProcess, SocketAddr, SocketAddr) {
    let mut vessel = start(name, config);
    vessel.wait_ready().await;
    let (main, admin) = (vessel.listener("main"), vessel.admin());
    (vessel, main, admin)
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
        servers::serve(l, |_req| async { servers::reply(200, "dns\n") });
    }
    let backend = Cluster::new("backend")
        .kind(ClusterType::StrictDns)
        .dns_refresh_rate("0.05s")
        .host("localhost", port);
    let (_vessel, main, admin) = start_ready(
        "dns-props",
        &phase_properties_config(backend, Route::prefix("/").to("backend")),
    )
    .await;

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
    let up = servers::serve_fn(|req: Request<Incoming>| async move {
        if req.uri().path() == "/slow-body" {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"part1\n")).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = tx.send(Bytes::from_static(b"part2\n")).await;
            });
            return Response::new(Trickle { rx }.boxed());
        }
        let n = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().len())
            .unwrap_or(0);
        let body: Bytes = format!("got {n} bytes\n").into();
        Response::new(Full::new(body).boxed())
    })
    .await;
    let (_vessel, main, _admin) = start_ready(
        "route-timeout",
        &phase_properties_config(
            Cluster::new("backend").endpoint(up),
            Route::prefix("/").to("backend").timeout("0.3s"),
        ),
    )
    .await;

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
fn all_but_request_headers() -> Vec<String> {
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
    names
}

/// `capability_restriction_config` takes effect in `vessel run`: without
/// `proxy_on_request_headers` allowed, the guest's request-headers callback
/// never runs, so `x-misbehave: trap` cannot trap (with everything allowed
/// it fails the VM: 503), and the response callback sees no request counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_capability_takes_effect_in_vessel_run() {
    let up = support::upstream().await;
    for (name, restriction, trap_status) in [
        ("caps-all", None, 503),
        ("caps-denied", Some(all_but_request_headers()), 200),
    ] {
        let mut filter = support::plugin(&guest("misbehave"), "caps");
        if let Some(allowed) = restriction {
            filter = filter.allowed_capabilities(allowed);
        }
        let vessel = support::start_vessel(name, &support::config(up, filter), 1).await;
        let port = vessel.listener("main");
        let c = support::client();
        let a = support::send(&c, port, "/", &[("x-misbehave", "trap")]).await;
        assert_eq!(a.status, trap_status, "{name}:\n{}", vessel.stderr());
        if trap_status == 200 {
            assert_eq!(
                a.header("x-vm-requests"),
                Some("0"),
                "on_request_headers never ran"
            );
            let again = support::send(&c, port, "/", &[]).await;
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
    // A long callback deadline: on a loaded machine the bomb must reach
    // the memory cap before the CPU deadline stops it.
    let filter = support::plugin(&guest("misbehave"), "capped")
        .vessel_limit("memory_bytes", 67_108_864)
        .vessel_limit("callback_timeout", "10s");
    let vessel = support::start_vessel("memory-cap", &support::config(up, filter), 1).await;
    let (port, admin) = (vessel.listener("main"), vessel.admin());
    // `--module-cache-dir` (given by `support::start_vessel`) took effect too: the
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
    assert_eq!(support::send(&c, port, "/", &[]).await.status, 200);
    let a = support::send(&c, port, "/", &[("x-misbehave", "grow")]).await;
    assert_eq!(a.status, 503, "{}", vessel.stderr());
    support::eventually("the failure is logged", || {
        let log = vessel.stderr();
        async move { log.contains("the limit is 67108864 bytes") }
    })
    .await;
    assert_eq!(
        support::stat(admin, "wasm.misbehave.vm_failures").await,
        Some(1)
    );
}

/// The bootstrap of the port-0 tests: listeners `main` (guest_hello, a
/// direct 201 on `/direct`) and `second` (a direct 202), both and the admin
/// on port 0.
fn port_zero_config() -> Bootstrap {
    Bootstrap::new()
        .listener(
            Listener::new("main")
                .route(Route::path("/direct").direct(201, Some("main\n")))
                .filter(
                    WasmFilter::new("hello", guest("hello"))
                        .configuration("from the builder")
                        .failure_policy("FAIL_CLOSED"),
                ),
        )
        .listener(Listener::new("second").route(Route::prefix("/").direct(202, Some("second\n"))))
}

/// Checks what a proxy on [`port_zero_config`] reports: the admin address
/// it wrote to `file` (`ip:port`, no newline), `/listeners` in both
/// formats, and that each reported listener serves its routes.
async fn check_reported_listeners(proxy: &str, file: &Path) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(!text.ends_with('\n'), "{proxy}: {text:?}");
    let admin: SocketAddr = text
        .parse()
        .unwrap_or_else(|e| panic!("{proxy}: {text:?}: {e}"));
    assert_ne!(admin.port(), 0, "{proxy}");
    let (status, headers, json) = get(admin, "/listeners?format=json", false).await;
    assert_eq!(status, 200, "{proxy}: {json}");
    assert_eq!(headers["content-type"], "application/json", "{proxy}");
    let listeners = vessel_proxy::run::ListenersStatus::from_json(json.as_bytes())
        .unwrap_or_else(|e| panic!("{proxy}: {e}: {json}"));
    let names: Vec<&str> = listeners
        .listener_statuses
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["main", "second"], "{proxy}: {json}");
    let main = listeners.address_of("main").expect("main is bound");
    let second = listeners.address_of("second").expect("second is bound");
    assert_eq!(main.ip().to_string(), "127.0.0.1", "{proxy}");
    assert!(
        ![0, admin.port()].contains(&main.port()) && main.port() != second.port(),
        "{proxy}: {json}"
    );
    let (status, _, text) = get(admin, "/listeners", false).await;
    assert_eq!(status, 200, "{proxy}");
    assert_eq!(
        text.trim_end(),
        format!("main::{main}\nsecond::{second}"),
        "{proxy}"
    );
    let (status, headers, body) = get(main, "/hello", false).await;
    assert_eq!((status, body.as_str()), (200, "Hello, World!\n"), "{proxy}");
    assert_eq!(headers["hello"], "World", "{proxy}");
    let (status, _, body) = get(main, "/direct", false).await;
    assert_eq!((status, body.as_str()), (201, "main\n"), "{proxy}");
    let (status, _, body) = get(second, "/x", false).await;
    assert_eq!((status, body.as_str()), (202, "second\n"), "{proxy}");
}

/// `port_value: 0` listeners and admin: `vessel run` binds what the system
/// gives, writes the admin address to `--admin-address-path` and reports
/// the listeners on `/listeners` (`?format=json`: Envoy's shape), as Envoy
/// does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_zero_listeners_are_reported_on_the_admin() {
    let mut vessel = start("port-zero", &port_zero_config().to_yaml());
    vessel.wait_ready().await;
    check_reported_listeners("vessel run", &vessel.dir.join("admin-address")).await;
    assert_ne!(vessel.listener("main"), vessel.listener("second"));
}

/// The same bootstrap (from the typed builder, wasm filter included) on
/// real Envoy: Envoy accepts it and answers the same queries the same way.
/// Envoy comes from `VESSEL_ENVOY` (`cargo xtask test` sets it); without
/// it the test prints a skip, and fails under `CI=true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_zero_listeners_are_reported_by_envoy_alike() {
    let test = "port_zero_listeners_are_reported_by_envoy_alike";
    let Some(bin) = vessel_testkit::envoy_from_env(test) else {
        return;
    };
    let mut envoy = VesselProcess::start_envoy(
        &bin,
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("envoy-port-zero"),
        &port_zero_config().to_yaml(),
        &["--concurrency", "1", "-l", "warning"],
    );
    envoy.wait_ready().await;
    check_reported_listeners("envoy", &envoy.dir.join("admin-address")).await;
}

/// Without an `admin` section, `--admin-address-path` writes nothing (as
/// Envoy) and says so; the listeners still serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_address_path_without_admin_writes_nothing_and_warns() {
    let cfg = Bootstrap::new()
        .without_admin()
        .listener(Listener::new("main").route(Route::prefix("/").direct(200, Some("up\n"))))
        .to_yaml();
    let vessel = start("no-admin", &cfg);
    let stderr = || vessel.stderr();
    vessel_testkit::eventually("the warning is logged", || {
        stderr().contains("the config has no admin section, so nothing is written")
    })
    .await;
    // The warning comes after the listeners are bound, where the address
    // would have been written.
    let listening = stderr()
        .lines()
        .find_map(|l| l.split("listener `main` on ").nth(1).map(str::to_owned))
        .expect("the listener's address is logged");
    let main: SocketAddr = listening.trim().parse().unwrap();
    let (status, _, body) = get(main, "/", false).await;
    assert_eq!((status, body.as_str()), (200, "up\n"));
    assert!(!vessel.dir.join("admin-address").exists());
}

/// Tiered compilation, `vessel run`'s default: with an empty module cache
/// the filter starts on Winch, serves, and switches to its Cranelift build
/// in the background while requests go on; every request is served, the
/// switch is counted in `/stats`, and the Cranelift build is in the module
/// cache afterwards (the next start is Cranelift directly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_vessel_run_serves_on_winch_then_switches_to_cranelift() {
    let up = support::upstream().await;
    let filter = support::plugin(&guest("misbehave"), "tiered");
    let vessel = support::start_vessel_with("tiered", &support::config(up, filter), 2, &[]).await;
    let (port, admin) = (vessel.listener("main"), vessel.admin());
    let c = support::client();
    let mut served = 0;
    loop {
        let a = support::send(&c, port, "/", &[]).await;
        assert_eq!(a.status, 200, "{}", vessel.stderr());
        served += 1;
        if stat(admin, "wasm.misbehave.tier_upgrade_success").await == Some(1) {
            break;
        }
        assert_eq!(
            stat(admin, "wasm.misbehave.tier_upgrade_failure").await,
            Some(0),
            "{}",
            vessel.stderr()
        );
    }
    for _ in 0..10 {
        assert_eq!(support::send(&c, port, "/", &[]).await.status, 200);
    }
    assert!(served >= 1);
    let stderr = vessel.stderr();
    assert!(
        stderr.contains(", baseline)") && stderr.contains("optimized (Cranelift) VMs serve now"),
        "the tiers are logged:\n{stderr}"
    );
    let cached = std::fs::read_dir(vessel.dir.join("module-cache"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "vmc"))
        })
        .count();
    assert_eq!(cached, 1, "the Cranelift build is cached");
}

/// A new configuration of the same module reuses the module's compiled
/// code: after a tiered pool switched to its Cranelift build, a reload
/// that only changes the plugin configuration starts the new VMs on that
/// build at once (no module cache here, so nothing else could give it),
/// with no second Winch compile and no second background upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_configuration_of_the_same_module_is_not_compiled_again() {
    let up = support::upstream().await;
    let module = guest("misbehave");
    let cfg = |configuration: &str| {
        support::config(up, support::plugin(&module, configuration)).to_yaml()
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vessel-run-same-module");
    let mut vessel = VesselProcess::start(
        &support::vessel_bin(),
        &dir,
        &cfg("first"),
        &["-l", "info", "--concurrency", "1", "--no-module-cache"],
    );
    vessel.wait_ready().await;
    let (port, admin) = (vessel.listener("main"), vessel.admin());
    vessel_testkit::eventually_async("the pool switches to Cranelift", || async {
        stat(admin, "wasm.misbehave.tier_upgrade_success").await == Some(1)
    })
    .await;

    vessel.write_config(&cfg("second"));
    let (status, body) = support::post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    let a = support::send(&support::client(), port, "/", &[]).await;
    assert_eq!(
        (a.status, a.header("x-plugin-config")),
        (200, Some("second"))
    );
    let stderr = vessel.stderr();
    let starts: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("VM(s) started ("))
        .collect();
    assert_eq!(starts.len(), 2, "{stderr}");
    assert!(starts[0].ends_with(", baseline)"), "{}", starts[0]);
    assert!(
        starts[1].ends_with(", optimized)"),
        "the new configuration starts on the Cranelift build: {}",
        starts[1]
    );
    // A pool that starts on Cranelift gets no background upgrade (tier_up
    // returns at once for it, before the reload answers): the count is
    // still the first pool's.
    assert_eq!(
        stat(admin, "wasm.misbehave.tier_upgrade_success").await,
        Some(1),
        "no second upgrade"
    );
}

/// `--no-pooling`: under an address-space limit (`ulimit -v`, 64 GiB) too
/// small for the pooling allocator's VM slots (about 4 GiB each, 1,000 of
/// them), `vessel run` refuses to start with an error that names the flag;
/// with the flag it serves through its wasm filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pooling_serves_under_an_address_space_limit() {
    let up = support::upstream().await;
    let config = support::config(up, support::plugin(&guest("misbehave"), "no-pooling")).to_yaml();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vessel-run-no-pooling");
    std::fs::create_dir_all(&dir).unwrap();
    // `vessel` under the limit, as `VesselProcess` starts it (`bin run ...`).
    let limited = dir.join("limited-vessel");
    std::fs::write(
        &limited,
        format!(
            "#!/bin/sh\nulimit -v {}\nexec '{}' \"$@\"\n",
            64 * 1024 * 1024,
            support::vessel_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &limited,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let mut pooled = VesselProcess::start(&limited, &dir.join("pooled"), &config, &[]);
    let status = vessel_testkit::eventually_some("vessel run exits", || {
        pooled.child.try_wait().expect("try_wait")
    })
    .await;
    assert!(!status.success(), "{}", pooled.stderr());
    let err = pooled.stderr();
    assert!(
        err.contains("cannot set up the pooling allocator") && err.contains("--no-pooling"),
        "{err}"
    );

    let mut unpooled = VesselProcess::start(
        &limited,
        &dir.join("unpooled"),
        &config,
        &["--no-pooling", "--concurrency", "1"],
    );
    unpooled.wait_ready().await;
    let c = support::client();
    let a = support::send(&c, unpooled.listener("main"), "/", &[]).await;
    assert_eq!(a.status, 200, "{}", unpooled.stderr());
    assert_eq!(
        support::stat(unpooled.admin(), "wasm.misbehave.vm_failures").await,
        Some(0),
        "{}",
        unpooled.stderr()
    );
}
