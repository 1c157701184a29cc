//! Hot reload through the crate API: [`VesselLayer::reload`] /
//! [`VesselLayer::swap_filters`] swap the chain atomically, streams in
//! flight finish on the old VMs, the old pool is dropped when its last
//! stream ends, and a plugin that does not load or start leaves the old
//! one serving.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::common::{eventually, gated_upstream, guest, proxy};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use vessel_host::{Engine, EngineConfig, HostEnv, Plugin, PluginConfig, VmError};
use vessel_hyper::{Clusters, FailurePolicy, FilterPool, PluginError, Runtime, VesselLayer};

/// What the plugins of one test share: the engine, env and runtime.
struct Host {
    engine: Engine,
    env: HostEnv,
    runtime: Arc<Runtime>,
}

impl Host {
    fn new() -> Self {
        Self {
            engine: Engine::new(EngineConfig::default()).expect("the default engine builds"),
            env: HostEnv::default(),
            runtime: Runtime::new(Clusters::new()),
        }
    }

    /// Loads `wasm` with plugin configuration `config` and starts 2 VMs.
    fn pool(&self, wasm: &[u8], config: &str) -> Result<Arc<FilterPool>, PluginError> {
        let plugin = Plugin::load(
            &self.engine,
            wasm,
            PluginConfig {
                configuration: config.as_bytes().to_vec(),
                ..PluginConfig::named("misbehave")
            },
        )?;
        self.start(&plugin)
    }

    /// Starts 2 VMs of `plugin`.
    fn start(&self, plugin: &Plugin) -> Result<Arc<FilterPool>, PluginError> {
        Ok(FilterPool::builder(plugin, &self.env, &self.runtime)
            .vms(2)
            .policy(FailurePolicy::FailClosed)
            .build()?)
    }
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(http)
}

/// One GET; returns (status, `x-plugin-config`), status 0 on a cut body.
async fn send(c: &TestClient, addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = c
        .request(
            http::Request::get(format!("http://{addr}{path}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let config = resp
        .headers()
        .get("x-plugin-config")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    match resp.into_body().collect().await {
        Ok(_) => (status, config),
        Err(_) => (0, config),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_stream_finishes_on_the_old_vm_which_is_dropped_after_it() {
    let host = Host::new();
    let wasm = guest("misbehave");
    let (up, release) = gated_upstream().await;
    let v1 = host.pool(&wasm, "v1").unwrap();
    let layer = VesselLayer::new(vec![v1.clone()]);
    let proxy = proxy(layer.clone(), up).await;
    let c = client();
    assert_eq!(send(&c, proxy, "/").await, (200, "v1".to_owned()));

    // A stream in flight on v1.
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { send(&c, proxy, "/slow").await })
    };
    eventually("the slow stream is in a v1 VM", || {
        v1.context_count() == v1.len() + 1
    })
    .await;

    let old: Weak<FilterPool> = Arc::downgrade(&v1);
    let replaced = layer
        .reload(|current| {
            assert_eq!(current.len(), 1);
            Ok(vec![host.pool(&wasm, "v2")?])
        })
        .unwrap();
    drop(replaced);
    drop(v1);
    // New streams see v2 at once.
    assert_eq!(send(&c, proxy, "/").await, (200, "v2".to_owned()));
    // The old pool lives on while its stream does (held upstream until
    // the release below)...
    assert_eq!(
        old.upgrade().map(|p| p.context_count() - p.len()),
        Some(1),
        "dropped under a stream in flight"
    );
    // ...which finishes on it, then it goes away.
    release.notify_one();
    assert_eq!(slow.await.unwrap(), (200, "v1".to_owned()));
    eventually("the old pool is dropped", || old.upgrade().is_none()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_does_not_load_or_start_leaves_the_old_one_serving() {
    let host = Host::new();
    let wasm = guest("misbehave");
    let (up, _) = gated_upstream().await;
    let layer = VesselLayer::new(vec![host.pool(&wasm, "v1").unwrap()]);
    let proxy = proxy(layer.clone(), up).await;
    let c = client();

    // on_configure returns false.
    let err = layer
        .reload(|_| Ok(vec![host.pool(&wasm, "fail-configure")?]))
        .unwrap_err();
    assert!(
        matches!(err, PluginError::Start(VmError::ConfigureRefused { .. })),
        "{err:?}"
    );
    assert_eq!(send(&c, proxy, "/").await, (200, "v1".to_owned()));

    // Not a module at all.
    let err = layer
        .reload(|_| Ok(vec![host.pool(b"not wasm", "v2")?]))
        .unwrap_err();
    assert!(matches!(err, PluginError::Load(_)), "{err:?}");
    assert_eq!(send(&c, proxy, "/").await, (200, "v1".to_owned()));
    assert_eq!(layer.filters().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_filter_swaps_one_filter_of_a_chain() {
    let host = Host::new();
    let wasm = guest("misbehave");
    let (up, _) = gated_upstream().await;
    let first = host.pool(&wasm, "a").unwrap();
    let layer = VesselLayer::new(vec![first.clone()]);
    let proxy = proxy(layer.clone(), up).await;
    let c = client();
    assert_eq!(send(&c, proxy, "/").await.1, "a");
    let old = layer.replace_filter(0, host.pool(&wasm, "b").unwrap());
    assert!(Arc::ptr_eq(&old.unwrap(), &first));
    assert_eq!(send(&c, proxy, "/").await.1, "b");
    assert!(layer.replace_filter(5, first).is_none());
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// 50 reloads while 8 connections send requests: not one request fails,
/// and RSS after the reloads is within 8 MiB of RSS after a warm-up of
/// 50 reloads (a leaked pool of 2 VMs is ≥ 2 MiB of guest memory alone).
/// The RSS is the process's, so the test runs alone in a child process
/// (`crate::alone`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_lose_no_request() {
    if !crate::alone::alone("reload::fifty_reloads_under_load_lose_no_request") {
        return;
    }
    let host = Arc::new(Host::new());
    // Compiled once; each reload starts a new pool of new VMs with a new
    // plugin configuration (the module is shared, as Envoy shares it by
    // code hash).
    let plugin = Plugin::load(
        &host.engine,
        &guest("misbehave"),
        PluginConfig::named("misbehave"),
    )
    .unwrap();
    let (up, _) = gated_upstream().await;
    let layer = VesselLayer::new(vec![host.pool(&guest("misbehave"), "gen-0").unwrap()]);
    let proxy = proxy(layer.clone(), up).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let (status, config) = send(&c, proxy, "/").await;
                if status == 200 && config.starts_with("gen-") {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let reload = |generation: u32| {
        let (host, plugin, layer) = (host.clone(), plugin.clone(), layer.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let config = PluginConfig {
                    configuration: format!("gen-{generation}").into_bytes(),
                    ..plugin.config().clone()
                };
                layer
                    .reload(|_| Ok(vec![host.start(&plugin.with_config(config))?]))
                    .unwrap();
            })
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    for g in 1..=50 {
        reload(g).await;
    }
    let before = rss_kib();
    let served_before = ok.load(Ordering::Relaxed);
    for g in 51..=100 {
        reload(g).await;
    }
    let after = rss_kib();
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "fifty_reloads_under_load: {ok} requests served ({} during the measured 50 reloads), \
         {failed} failed; RSS {before} KiB -> {after} KiB",
        ok - served_before
    );
    assert_eq!(failed, 0);
    assert!(ok > served_before, "the load ran during the reloads");
    assert!(
        after <= before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(
        send(&client(), proxy, "/").await,
        (200, "gen-100".to_owned())
    );
}
