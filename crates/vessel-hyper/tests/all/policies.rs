//! Failure policies on real traffic (ABI reference §6.6): FAIL_CLOSED,
//! FAIL_OPEN and FAIL_RELOAD with `guest_misbehave` behind a loopback proxy,
//! the per-plugin counters, and the FAIL_RELOAD load tests (100,000 requests,
//! 20,000 for `loop` and `grow`; 1% of them trapping, looping forever or growing memory without end; run
//! by `cargo xtask test` and `cargo xtask load`, see `fail_reload_under_load_*`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{eventually, gated_upstream, guest, proxy, upstream};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use vessel_host::{Engine, EngineConfig, HostEnv, Limits, Plugin, PluginConfig};
use vessel_hyper::{Clusters, FailurePolicy, FilterPool, ReloadBackoff, Runtime, VesselLayer};

/// A pool of `vms` VMs of `guest_misbehave`.
fn misbehave(
    policy: FailurePolicy,
    vms: usize,
    vm_config: &str,
) -> (Arc<FilterPool>, Arc<Runtime>) {
    misbehave_limited(policy, vms, vm_config, Limits::default())
}

/// [`misbehave`] with per-VM `limits`.
fn misbehave_limited(
    policy: FailurePolicy,
    vms: usize,
    vm_config: &str,
    limits: Limits,
) -> (Arc<FilterPool>, Arc<Runtime>) {
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let plugin = Plugin::load(
        &engine,
        &guest("misbehave"),
        PluginConfig {
            configuration: b"v1".to_vec(),
            vm_configuration: vm_config.as_bytes().to_vec(),
            limits,
            ..PluginConfig::named("misbehave")
        },
    )
    .unwrap();
    let runtime = Runtime::new(Clusters::new());
    let env = HostEnv::default();
    let pool = FilterPool::builder(&plugin, &env, &runtime)
        .vms(vms)
        .policy(policy)
        .build()
        .unwrap();
    (pool, runtime)
}

/// A loopback upstream that answers 200 `ok` and keeps nothing (for the
/// load tests: `common::upstream` records every request).
async fn ok_upstream() -> SocketAddr {
    gated_upstream().await.0
}

/// Reload on the next stream, always (no backoff): deterministic tests.
fn reload_now() -> FailurePolicy {
    FailurePolicy::FailReload(ReloadBackoff::new(Duration::ZERO, Duration::ZERO))
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(http)
}

/// One GET; returns (status, `x-vm-requests`); status 0 if the stream was
/// reset (before its head, or with its body cut).
async fn send(
    client: &TestClient,
    addr: SocketAddr,
    path: &str,
    misbehave: Option<&str>,
) -> (u16, Option<u64>) {
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    if let Some(m) = misbehave {
        req = req.header("x-misbehave", m);
    }
    // A stream in flight on a VM that fails may be reset before its head
    // (Envoy's failStream): counted as status 0 too.
    let Ok(resp) = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
    else {
        return (0, None);
    };
    let status = resp.status().as_u16();
    let count = resp
        .headers()
        .get("x-vm-requests")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    // A stream whose VM fails after its response headers left is reset,
    // as in Envoy: the body ends in an error. Status 0 stands for it.
    match resp.into_body().collect().await {
        Ok(_) => (status, count),
        Err(_) => (0, count),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_answers_503_and_the_vm_stays_failed() {
    let (up, seen) = upstream(200, "ok").await;
    let (pool, _rt) = misbehave(FailurePolicy::FailClosed, 1, "");
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;
    let c = client();
    assert_eq!(send(&c, proxy, "/", None).await, (200, Some(1)));
    assert_eq!(send(&c, proxy, "/", Some("trap")).await, (503, None));
    // The VM stays failed: every later stream gets the 503 too.
    for _ in 0..3 {
        assert_eq!(send(&c, proxy, "/", None).await, (503, None));
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the first request went upstream"
    );
    let s = pool.stats();
    assert_eq!(s.vm_failures(), 1);
    assert_eq!(
        (
            s.vm_reload_success(),
            s.vm_reload_failure(),
            s.vm_reload_backoff()
        ),
        (0, 0, 0)
    );
    assert_eq!(pool.failed_vms(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_answers_the_failing_stream_503_and_passes_later_ones_through() {
    let (up, seen) = upstream(200, "ok").await;
    let (pool, _rt) = misbehave(FailurePolicy::FailOpen, 1, "");
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;
    let c = client();
    assert_eq!(send(&c, proxy, "/", None).await, (200, Some(1)));
    // The stream whose own callback trapped gets Envoy's 503
    // (`wasm_fail_stream`), under every policy.
    assert_eq!(send(&c, proxy, "/", Some("trap")).await, (503, None));
    // Later streams skip the failed filter, the trapping header included.
    assert_eq!(send(&c, proxy, "/", Some("trap")).await, (200, None));
    assert_eq!(send(&c, proxy, "/", None).await, (200, None));
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(pool.stats().vm_failures(), 1);
    assert_eq!(pool.stats().vm_reload_success(), 0);
    assert_eq!(pool.failed_vms(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_reload_gives_new_streams_a_fresh_vm_without_the_old_state() {
    let (up, _) = upstream(200, "ok").await;
    let (pool, _rt) = misbehave(reload_now(), 1, "");
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;
    let c = client();
    assert_eq!(send(&c, proxy, "/", None).await, (200, Some(1)));
    assert_eq!(send(&c, proxy, "/", None).await, (200, Some(2)));
    assert_eq!(send(&c, proxy, "/", Some("trap")).await, (503, None));
    // A new VM: its request count starts again.
    assert_eq!(send(&c, proxy, "/", None).await, (200, Some(1)));
    assert_eq!(send(&c, proxy, "/", None).await, (200, Some(2)));
    assert_eq!(send(&c, proxy, "/", Some("trap")).await, (503, None));
    assert_eq!(send(&c, proxy, "/", None).await, (200, Some(1)));
    let s = pool.stats();
    assert_eq!((s.vm_failures(), s.vm_reload_success()), (2, 2));
    assert_eq!((s.vm_reload_failure(), s.vm_reload_backoff()), (0, 0));
    assert_eq!(pool.failed_vms(), 0);
    assert_eq!(pool.context_count(), 1, "only the new VM's root context");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_reload_fails_closed_while_the_backoff_holds() {
    let (up, _) = upstream(200, "ok").await;
    // The VM was loaded just now; an hour must pass before a reload.
    let policy = FailurePolicy::FailReload(ReloadBackoff::new(
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    ));
    let (pool, _rt) = misbehave(policy, 1, "");
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;
    let c = client();
    assert_eq!(send(&c, proxy, "/", Some("trap")).await, (503, None));
    for _ in 0..3 {
        assert_eq!(send(&c, proxy, "/", None).await, (503, None));
    }
    let s = pool.stats();
    assert_eq!((s.vm_failures(), s.vm_reload_backoff()), (1, 3));
    assert_eq!((s.vm_reload_success(), s.vm_reload_failure()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_reload_whose_new_vm_does_not_start_keeps_failing_closed() {
    let (up, _) = upstream(200, "ok").await;
    // `start-once`: every VM after the first refuses on_vm_start.
    let (pool, _rt) = misbehave(reload_now(), 1, "start-once");
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;
    let c = client();
    assert_eq!(send(&c, proxy, "/", None).await, (200, Some(1)));
    assert_eq!(send(&c, proxy, "/", Some("trap")).await, (503, None));
    for _ in 0..3 {
        assert_eq!(send(&c, proxy, "/", None).await, (503, None));
    }
    let s = pool.stats();
    assert_eq!((s.vm_failures(), s.vm_reload_failure()), (1, 3));
    assert_eq!(s.vm_reload_success(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_in_flight_on_the_failed_vm_gets_503_under_fail_reload() {
    let (up, release) = gated_upstream().await;
    let (pool, _rt) = misbehave(reload_now(), 1, "");
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;
    let c = client();
    // A stream waits upstream, pinned to the only VM.
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { send(&c, proxy, "/slow", None).await })
    };
    eventually("the slow stream is in the VM", || pool.context_count() == 2).await;
    // Another stream on the same VM traps it.
    assert_eq!(send(&c, proxy, "/", Some("trap")).await, (503, None));
    // A new stream gets a new VM...
    assert_eq!(send(&c, proxy, "/", None).await, (200, Some(1)));
    // ...while the slow one, still on the failed VM, fails when its
    // response reaches the filter (Envoy's failStream: one 503).
    release.notify_one();
    assert_eq!(slow.await.unwrap(), (503, None));
    assert_eq!(pool.stats().vm_failures(), 1);
}

/// The process's resident set size in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// What a load run saw.
#[derive(Debug, Default)]
struct LoadResult {
    ok: u64,
    /// Requests without the misbehave header that did not get a 200.
    other_failures: u64,
    /// Requests with the header that got the expected 503.
    misbehaved_503: u64,
    /// Requests with the header that got something else.
    misbehaved_other: u64,
}

/// Sends `n` requests over `connections` keep-alive connections; request
/// `i` misbehaves (`kind`) when `i % 100 == 50`: 1% of them.
async fn load(proxy: SocketAddr, n: u64, connections: u64, kind: &'static str) -> LoadResult {
    let mut tasks = Vec::new();
    for c in 0..connections {
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut r = LoadResult::default();
            let mut i = c;
            while i < n {
                let bad = i % 100 == 50;
                let (status, _) = send(&client, proxy, "/", bad.then_some(kind)).await;
                match (bad, status) {
                    (false, 200) => r.ok += 1,
                    (false, _) => r.other_failures += 1,
                    (true, 503) => r.misbehaved_503 += 1,
                    (true, _) => r.misbehaved_other += 1,
                }
                i += connections;
            }
            r
        }));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        let r = t.await.unwrap();
        total.ok += r.ok;
        total.other_failures += r.other_failures;
        total.misbehaved_503 += r.misbehaved_503;
        total.misbehaved_other += r.misbehaved_other;
    }
    total
}

/// How many of requests `0..n` misbehave (`i % 100 == 50`).
fn traps(n: u64) -> u64 {
    n / 100 + u64::from(n % 100 > 50)
}

/// Requests in the load tests after the warm-up: 100,000 for `trap` (issue
/// 5's run: 1,000 traps), 20,000 for `loop` and `grow`, whose every
/// misbehaving request costs a callback timeout or a 16 MiB memory bomb
/// (200 failed VMs each: one leaked VM would be ≥ 1 MiB, so 200 would
/// still overshoot [`RSS_TOLERANCE_KIB`] by far). `VESSEL_LOAD_REQUESTS`
/// overrides both.
fn load_requests(kind: &str) -> u64 {
    std::env::var("VESSEL_LOAD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if kind == "trap" { 100_000 } else { 20_000 })
}

/// RSS may grow by at most this much between the end of the warm-up and
/// the end of the run. One leaked VM per reload would be ≥ 1 MiB each
/// (the guest's linear memory alone), so 1,000 reloads would overshoot it
/// by far.
const RSS_TOLERANCE_KIB: u64 = 8 * 1024;

/// The callback timeout of the `loop` load test: 220 endless loops cost
/// 220 × (this + up to one 10 ms epoch period) of wall-clock time, about
/// 13 s, instead of 24 s at the 100 ms default. The timeout is wall-clock
/// time: at 20 ms, on a loaded 2-core machine, a well-behaved callback was
/// once descheduled past it and failed its VM.
const LOOP_TIMEOUT: Duration = Duration::from_millis(50);

/// The per-VM memory cap of the `grow` load test; each memory bomb fills it
/// (the guest writes every page) before `memory.grow` fails.
const GROW_MEMORY_BYTES: usize = 16 << 20;

/// 100,000 requests (20,000 for `loop` and `grow`), one connection, 1% of
/// them misbehaving (`kind`), under
/// FAIL_RELOAD with two VMs under `limits`: every other request succeeds,
/// every misbehaving one gets a 503, each failed VM is replaced, and RSS
/// stays flat. Slow in a debug build: `cargo xtask test` and `cargo xtask
/// load` run these (`--ignored`, one test at a time).
async fn fail_reload_under_load(kind: &'static str, limits: Limits) {
    let up = ok_upstream().await;
    let (pool, _rt) = misbehave_limited(reload_now(), 2, "", limits);
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;
    let n = load_requests(kind);
    let start = std::time::Instant::now();
    let warm = load(proxy, n / 10, 1, kind).await;
    assert_eq!(warm.other_failures, 0, "{warm:?}");
    let before = rss_kib();
    let run = load(proxy, n, 1, kind).await;
    let after = rss_kib();
    let s = pool.stats();
    eprintln!(
        "fail_reload_under_load_{kind}: {n} requests after a {} warm-up: {run:?}; \
         vm_failures={} vm_reload_success={}; RSS {before} KiB -> {after} KiB; \
         {:.1} s in all",
        n / 10,
        s.vm_failures(),
        s.vm_reload_success(),
        start.elapsed().as_secs_f64()
    );
    assert_eq!(run.other_failures, 0, "{run:?}");
    assert_eq!(run.misbehaved_other, 0, "{run:?}");
    assert_eq!(run.misbehaved_503, traps(n), "{run:?}");
    assert_eq!(s.vm_failures(), traps(n / 10) + traps(n));
    assert_eq!(s.vm_reload_success(), s.vm_failures());
    assert!(
        after <= before + RSS_TOLERANCE_KIB,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(pool.context_count(), pool.len(), "no leaked contexts");
}

/// 1% of requests trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: run by `cargo xtask test` or `cargo xtask load`"]
async fn fail_reload_under_load_trap() {
    fail_reload_under_load("trap", Limits::default()).await;
}

/// 1% of requests loop forever; the CPU deadline ([`LOOP_TIMEOUT`]) stops
/// each loop and fails its VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: run by `cargo xtask test` or `cargo xtask load`"]
async fn fail_reload_under_load_loop() {
    let limits = Limits {
        callback_timeout: Some(LOOP_TIMEOUT),
        ..Limits::default()
    };
    fail_reload_under_load("loop", limits).await;
}

/// 1% of requests allocate until the memory cap ([`GROW_MEMORY_BYTES`])
/// makes the guest's allocator fail, which traps and fails the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: run by `cargo xtask test` or `cargo xtask load`"]
async fn fail_reload_under_load_grow() {
    let limits = Limits {
        memory_bytes: GROW_MEMORY_BYTES,
        ..Limits::default()
    };
    fail_reload_under_load("grow", limits).await;
}

/// The same with 8 connections at once. A stream in flight on a VM when
/// another stream traps it fails too (Envoy's failStream), so a request
/// without the header may fail only if it shared its VM with a trap:
/// at most 7 per trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: run by `cargo xtask test` or `cargo xtask load`"]
async fn fail_reload_under_load_trap_concurrent() {
    let up = ok_upstream().await;
    let (pool, _rt) = misbehave(reload_now(), 2, "");
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;
    let n = load_requests("trap");
    load(proxy, n / 10, 8, "trap").await;
    let before = rss_kib();
    let run = load(proxy, n, 8, "trap").await;
    let after = rss_kib();
    eprintln!(
        "fail_reload_under_load_trap_concurrent: {n} requests, 8 connections: {run:?}; \
         RSS {before} KiB -> {after} KiB"
    );
    assert_eq!(run.misbehaved_other, 0, "{run:?}");
    assert_eq!(run.misbehaved_503, traps(n), "{run:?}");
    assert!(run.other_failures <= 7 * traps(n), "{run:?}");
    assert_eq!(run.ok + run.other_failures, n - traps(n));
    assert!(
        after <= before + RSS_TOLERANCE_KIB,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(pool.context_count(), pool.len(), "no leaked contexts");
}
