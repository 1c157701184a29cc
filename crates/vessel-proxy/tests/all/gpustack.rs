//! GPUStack's load-balancing band (the `gpustack-higress-plugins` wheel,
//! Go, ABI 0.2.100), unmodified, through `vessel run` with vessel's default
//! limits: gpustack-lb `mode: context` → gpustack-lb-session-affinity →
//! gpustack-lb-least-load → gpustack-lb `mode: finisher`, in front of real
//! loopback workers that say who answered, on a route that takes its
//! cluster from `x-higress-target-cluster` (the README's prerequisite).
//!
//! What the scenario files (`spec-tests/scenarios/higress_gpustack_lb_*`)
//! cannot show, because their streams run one after another: requests
//! spread by load, `maxRunningRequests` answering 429 when every candidate
//! is full (shared data and Redis), and the plugin's own passive health
//! ejecting a worker whose connections fail, then taking it back.
//!
//! The wheel is downloaded by `cargo xtask test` (target/higress) and the
//! Redis tests need the server it starts (`VESSEL_REDIS`). Without them a
//! test prints that it was skipped, and fails under `CI=true`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use vessel_testkit::bootstrap::{Bootstrap, Cluster, Listener, Route, WasmFilter};

use crate::support::{self, Answer, TestClient, eventually, redis};

const TARGET_HEADER: &str = "x-higress-target-cluster";

/// The wheel's plugin directory, or `None` (skipped; a failure under
/// `CI=true`).
fn plugins_dir(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/higress/gpustack_higress_plugins/plugins");
    if dir.join("gpustack-lb/0.1.2/plugin.wasm").exists() {
        return Some(dir.canonicalize().unwrap());
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true needs the gpustack-higress-plugins wheel in target/higress (cargo xtask test)"
    );
    eprintln!("skipped {test}: the gpustack-higress-plugins wheel is not in target/higress");
    None
}

/// A worker's controls and counters.
#[derive(Default)]
struct Ctl {
    /// Hold every request until `release`.
    hold: AtomicBool,
    release: tokio::sync::Notify,
    /// Accept connections and drop them at once (the proxy sees the
    /// connection end before any response: Envoy's `UC`).
    broken: AtomicBool,
    /// Requests that reached it (held ones included).
    received: AtomicUsize,
    /// Connections it dropped while broken.
    dropped: AtomicUsize,
}

/// A worker on loopback answering `200` with `x-worker: <name>` and the
/// model it was asked for in `x-model`.
async fn worker(name: &'static str) -> (SocketAddr, Arc<Ctl>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ctl = Arc::new(Ctl::default());
    let c = ctl.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            if c.broken.load(Ordering::SeqCst) {
                c.dropped.fetch_add(1, Ordering::SeqCst);
                drop(stream);
                continue;
            }
            let c = c.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let c = c.clone();
                    async move {
                        c.received.fetch_add(1, Ordering::SeqCst);
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let model = body
                            .ok()
                            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                            .and_then(|v| v["model"].as_str().map(str::to_owned))
                            .unwrap_or_default();
                        if c.hold.load(Ordering::SeqCst) {
                            c.release.notified().await;
                        }
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("x-worker", name)
                                .header("x-model", model)
                                .body(Full::new(Bytes::from(name)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, ctl)
}

/// The candidate cluster of worker `name`, as GPUStack names them.
fn cluster_of(name: &str) -> String {
    format!("outbound|80||worker-{name}.static")
}

/// What the band is configured with.
struct Band<'a> {
    workers: &'a [(&'static str, SocketAddr)],
    /// `maxRunningRequests` of every candidate (0: unlimited).
    cap: u32,
    /// The finisher's `health.cooldownMs`.
    cooldown_ms: u64,
    /// The Redis server and the key prefix, for the Redis backend.
    redis: Option<(SocketAddr, String)>,
}

/// The bootstrap: one listener with the band (the READMEs' configs), the
/// route on `cluster_header`, one cluster per worker (and Redis's).
fn band(dir: &Path, b: &Band<'_>) -> Bootstrap {
    let redis_block = b.redis.as_ref().map(|(_, prefix)| {
        json!({"service_name": "redis.static", "timeout": 2000, "key_prefix": prefix})
    });
    let candidates: Vec<_> = b
        .workers
        .iter()
        .map(|(n, _)| {
            json!({"cluster": cluster_of(n), "targetId": n, "kind": "instance",
                   "maxRunningRequests": b.cap})
        })
        .collect();
    let mut context = json!({
        "mode": "context",
        "health": {"failOpen": true},
        "candidates": candidates,
        "modelMappers": {"a": {"*": "qwen3-8b"}, "b": {"*": "qwen3-8b"}, "c": {"*": "qwen3-8b"}},
    });
    let mut finisher = json!({
        "mode": "finisher",
        "health": {"unhealthyThreshold": 3, "cooldownMs": b.cooldown_ms},
        "maxInflightAgeMs": 600_000,
        "reject": {"status": 503, "message": "no healthy model instance available"},
    });
    if let Some(r) = &redis_block {
        context["redis"] = r.clone();
        finisher["redis"] = r.clone();
    }
    let lb = dir.join("gpustack-lb/0.1.2/plugin.wasm");
    let listener = Listener::new("main")
        .route_config_field(
            "internal_only_headers",
            json!(["x-higress-fallback-from", TARGET_HEADER]),
        )
        .route(Route::prefix("/").route_field("cluster_header", json!(TARGET_HEADER)))
        .filter(WasmFilter::new("gpustack-lb-context", &lb).configuration(context.to_string()))
        .filter(
            WasmFilter::new(
                "gpustack-lb-session-affinity",
                dir.join("gpustack-lb-session-affinity/0.1.0/plugin.wasm"),
            )
            .configuration(json!({"sessionKeys": [{"header": "session_id"}]}).to_string()),
        )
        .filter(
            WasmFilter::new(
                "gpustack-lb-least-load",
                dir.join("gpustack-lb-least-load/0.1.0/plugin.wasm"),
            )
            .configuration(json!({"enabled": true, "weight": 1}).to_string()),
        )
        .filter(WasmFilter::new("gpustack-lb-finisher", &lb).configuration(finisher.to_string()));
    let mut config = Bootstrap::new().listener(listener);
    for (n, addr) in b.workers {
        config = config.cluster(Cluster::new(cluster_of(n)).endpoint(*addr));
    }
    if let Some((addr, _)) = &b.redis {
        config = config.cluster(Cluster::new("outbound|80||redis.static").endpoint(*addr));
    }
    config
}

/// Starts `vessel run` with the band; the compiled plugins are shared by
/// every test of this file through one module cache.
async fn start(name: &str, config: &Bootstrap) -> vessel_testkit::VesselProcess {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vessel-gpustack-{name}"));
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vessel-gpustack-module-cache");
    let mut vessel = vessel_testkit::VesselProcess::start(
        Path::new(env!("CARGO_BIN_EXE_vessel")),
        &dir,
        &config.to_yaml(),
        &[
            "-l",
            "info",
            "--concurrency",
            "2",
            "--module-cache-dir",
            &cache.to_string_lossy(),
        ],
    );
    // Cold, the band's four Go modules compile for about a minute on a
    // loaded 2-core machine, and the tests of this file start together.
    vessel
        .wait_ready_within(std::time::Duration::from_secs(300))
        .await;
    vessel
}

/// One chat completion, bounded by `vessel_testkit::WAIT`.
async fn chat(c: &TestClient, addr: SocketAddr, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-higress-llm-model", "gpt-4o");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    support::answer(c, req).await
}

/// Sends requests one at a time while both workers hold them: each must
/// reach a worker before the next is sent, so the band sees it in flight.
/// Least-load sends each to the less busy worker; with a cap of 2 the
/// fifth finds both full and gets the finisher's 429.
/// The keys that start with `prefix` in the Redis server at `addr`.
fn redis_keys(addr: SocketAddr, prefix: &str) -> Vec<String> {
    support::redis_command(addr, &["KEYS", &format!("{prefix}*")])
        .into_iter()
        .flatten()
        .collect()
}

async fn spread_then_cap(name: &str, redis: Option<(SocketAddr, String)>) {
    let Some(dir) = plugins_dir(name) else {
        return;
    };
    let (a, a_ctl) = worker("a").await;
    let (b, b_ctl) = worker("b").await;
    for c in [&a_ctl, &b_ctl] {
        c.hold.store(true, Ordering::SeqCst);
    }
    let band_cfg = Band {
        workers: &[("a", a), ("b", b)],
        cap: 2,
        cooldown_ms: 10_000,
        redis: redis.clone(),
    };
    let vessel = start(name, &band(&dir, &band_cfg)).await;
    let addr = vessel.listener("main");
    let mut held = Vec::new();
    for i in 0..4 {
        let c = support::client();
        held.push(tokio::spawn(async move { chat(&c, addr, &[]).await }));
        let want = i + 1;
        let (a_ctl, b_ctl) = (a_ctl.clone(), b_ctl.clone());
        eventually(&format!("request {want} reaches a worker"), move || {
            let n = a_ctl.received.load(Ordering::SeqCst) + b_ctl.received.load(Ordering::SeqCst);
            async move { n == want }
        })
        .await;
    }
    // Spread by load: whichever took the first, the next went to the
    // other, and so on.
    assert_eq!(a_ctl.received.load(Ordering::SeqCst), 2);
    assert_eq!(b_ctl.received.load(Ordering::SeqCst), 2);

    // Every candidate is at its maxRunningRequests: the finisher's
    // check-and-reserve answers itself.
    let full = chat(&support::client(), addr, &[]).await;
    assert_eq!(full.status, 429, "{full:?}");
    assert!(
        full.body.contains("max inflight requests reached"),
        "{full:?}"
    );
    assert_eq!(
        a_ctl.received.load(Ordering::SeqCst) + b_ctl.received.load(Ordering::SeqCst),
        4
    );

    for c in [&a_ctl, &b_ctl] {
        c.hold.store(false, Ordering::SeqCst);
        c.release.notify_waiters();
    }
    for t in held {
        let answer = t.await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        // The finisher rewrote the model for the candidate it chose.
        assert_eq!(answer.header("x-model"), Some("qwen3-8b"), "{answer:?}");
    }
    // The reservations were released in on_done: there is room again.
    released(redis.as_ref()).await;
    let again = chat(&support::client(), addr, &[("session_id", "s-1")]).await;
    assert_eq!(again.status, 200, "{again:?}");
    // Session affinity through vessel run: s-1's owner is worker-a
    // (higress_gpustack_lb_band.yaml), and it stays there.
    assert_eq!(again.header("x-worker"), Some("a"), "{again:?}");
    for _ in 0..3 {
        released(redis.as_ref()).await;
        let a = chat(&support::client(), addr, &[("session_id", "s-1")]).await;
        assert_eq!(a.header("x-worker"), Some("a"), "{a:?}");
    }
}

/// With Redis, the finisher releases a request's reservation with a
/// script from `on_done`, after the client has its answer: waits until no
/// reservation is left, or the next request may still see its worker busy
/// (and least-load outranks the session's owner).
async fn released(redis: Option<&(SocketAddr, String)>) {
    let Some((addr, prefix)) = redis else {
        return;
    };
    let (addr, pattern) = (*addr, format!("{{{prefix}}}:inflight:"));
    eventually("the band's reservations in Redis are released", move || {
        let reserved = redis_keys(addr, &pattern);
        async move { reserved.is_empty() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_band_spreads_by_load_caps_with_429_and_keeps_sessions_shared_data() {
    spread_then_cap("spread-shared", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_band_spreads_by_load_caps_with_429_and_keeps_sessions_redis() {
    let Some(addr) = redis("spread-redis") else {
        return;
    };
    // A key prefix of its own: nothing of an earlier run is counted.
    let prefix = format!("vessel_test_{}_{}", std::process::id(), rand_suffix());
    spread_then_cap("spread-redis", Some((addr, prefix))).await;
}

/// A per-run suffix (the clock's nanoseconds).
fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Passive health (the finisher's `response.flags` check): worker c drops
/// every connection (UC), so after three consecutive failures the
/// finisher ejects it for `cooldownMs` and context stops publishing it;
/// once c works again and the cooldown is over it comes back (on
/// probation, with a decaying load penalty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_keeps_failing_is_ejected_then_ramps_back() {
    let Some(dir) = plugins_dir("eject") else {
        return;
    };
    let (a, a_ctl) = worker("a").await;
    let (c, c_ctl) = worker("c").await;
    c_ctl.broken.store(true, Ordering::SeqCst);
    let band_cfg = Band {
        workers: &[("a", a), ("c", c)],
        cap: 0,
        cooldown_ms: 4_000,
        redis: None,
    };
    let vessel = start("eject", &band(&dir, &band_cfg)).await;
    let addr = vessel.listener("main");
    let client = support::client();
    // Idle workers tie, and the finisher breaks ties at random: c gets its
    // share of requests until its third failure ejects it.
    let mut failures = 0;
    let mut sent = 0;
    while c_ctl.dropped.load(Ordering::SeqCst) < 3 {
        sent += 1;
        assert!(sent < 200, "c never got three requests");
        let answer = chat(&client, addr, &[]).await;
        if answer.status == 503 {
            failures += 1;
        } else {
            assert_eq!(answer.header("x-worker"), Some("a"), "{answer:?}");
        }
    }
    assert_eq!(failures, 3);
    // Ejected: every request goes to a (the cooldown is far longer than
    // these requests take).
    for _ in 0..6 {
        let answer = chat(&client, addr, &[]).await;
        assert_eq!(
            (answer.status, answer.header("x-worker")),
            (200, Some("a")),
            "{answer:?}"
        );
    }
    assert_eq!(c_ctl.dropped.load(Ordering::SeqCst), 3);

    // c works again; after its cooldown the band sends it traffic again.
    c_ctl.broken.store(false, Ordering::SeqCst);
    eventually("c is back after its cooldown", || {
        let client = client.clone();
        async move { chat(&client, addr, &[]).await.header("x-worker") == Some("c") }
    })
    .await;
    assert!(a_ctl.received.load(Ordering::SeqCst) >= 6);
}
