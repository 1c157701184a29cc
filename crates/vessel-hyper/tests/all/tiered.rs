//! Tiered compilation through the crate API: a pool built from a Winch
//! (baseline) plugin serves at once; `FilterPool::optimize` compiles the
//! Cranelift build, starts new VMs from it and swaps them in while traffic
//! runs. Streams in flight finish on the baseline VMs; a build that does not
//! start leaves the baseline VMs serving and is counted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{eventually, gated_upstream, guest, proxy};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use vessel_host::{Engine, EngineConfig, HostEnv, Plugin, PluginConfig, Tier, VmError};
use vessel_hyper::{Clusters, FailurePolicy, FilterPool, PluginError, Runtime, VesselLayer};

type TestClient = Client<HttpConnector, Full<Bytes>>;

/// One GET; returns (status, `x-plugin-config`, `x-vm-requests`), status 0
/// on a cut body.
async fn send(c: &TestClient, addr: SocketAddr, path: &str) -> (u16, String, u64) {
    let resp = c
        .request(
            http::Request::get(format!("http://{addr}{path}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let config = header("x-plugin-config");
    let count = header("x-vm-requests").parse().unwrap_or(0);
    match resp.into_body().collect().await {
        Ok(_) => (status, config, count),
        Err(_) => (0, config, count),
    }
}

/// A baseline pool of 2 VMs of `guest_misbehave` with configuration `v1`,
/// behind the layer and a proxy in front of a gated upstream.
async fn baseline() -> (Arc<FilterPool>, SocketAddr, Arc<tokio::sync::Notify>) {
    let engine = Engine::new(EngineConfig {
        tiered: true,
        ..EngineConfig::default()
    })
    .unwrap();
    assert!(engine.is_tiered(), "Winch is built into vessel-host");
    let plugin = Plugin::load(
        &engine,
        &guest("misbehave"),
        PluginConfig {
            configuration: b"v1".to_vec(),
            ..PluginConfig::named("misbehave")
        },
    )
    .unwrap();
    assert_eq!(plugin.tier(), Tier::Baseline, "no cache: Winch first");
    let runtime = Runtime::new(Clusters::new());
    let pool = FilterPool::builder(&plugin, &HostEnv::default(), &runtime)
        .vms(2)
        .policy(FailurePolicy::FailClosed)
        .build()
        .unwrap();
    let (up, release) = gated_upstream().await;
    let addr = proxy(VesselLayer::new(vec![pool.clone()]), up).await;
    (pool, addr, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_runs_across_the_switch_to_the_optimized_vms() {
    let (pool, addr, release) = baseline().await;
    let c = Client::builder(TokioExecutor::new()).build_http();
    assert_eq!(pool.tier(), Tier::Baseline);
    let (status, config, _) = send(&c, addr, "/").await;
    assert_eq!((status, config.as_str()), (200, "v1"));

    // A stream in flight on a baseline VM.
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { send(&c, addr, "/slow").await })
    };
    eventually("the slow stream is on a baseline VM", || {
        pool.context_count() == pool.len() + 1
    })
    .await;

    // Traffic on 4 connections while the Cranelift build compiles and
    // its VMs are swapped in.
    let upgrade = {
        let pool = pool.clone();
        tokio::task::spawn_blocking(move || pool.optimize())
    };
    let done = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let c = Client::builder(TokioExecutor::new()).build_http();
        let done = done.clone();
        senders.push(tokio::spawn(async move {
            let mut served = Vec::new();
            // Until the upgrade returned, then 5 more.
            let mut after = 0;
            while after < 5 {
                served.push(send(&c, addr, "/").await);
                if done.load(Ordering::Acquire) {
                    after += 1;
                }
            }
            served
        }));
    }
    let upgraded = upgrade.await.unwrap();
    done.store(true, Ordering::Release);
    assert!(upgraded.unwrap(), "the pool switched");
    let mut total = 0;
    for s in senders {
        for (status, config, _) in s.await.unwrap() {
            assert_eq!((status, config.as_str()), (200, "v1"));
            total += 1;
        }
    }
    assert!(total >= 20);

    assert_eq!(pool.tier(), Tier::Optimized);
    assert_eq!(pool.plugin().tier(), Tier::Optimized);
    assert_eq!(pool.stats().tier_upgrade_success(), 1);
    assert_eq!(pool.stats().tier_upgrade_failure(), 0);
    // The stream in flight finishes on its baseline VM.
    release.notify_one();
    let (status, config, _) = slow.await.unwrap();
    assert_eq!((status, config.as_str()), (200, "v1"));
    // The optimized pool holds only its root contexts once it ended.
    eventually("the baseline VM's stream ended", || {
        pool.context_count() == pool.len()
    })
    .await;
    // A second optimize has nothing to do.
    let again = pool.clone();
    assert!(
        !tokio::task::spawn_blocking(move || again.optimize())
            .await
            .unwrap()
            .unwrap()
    );
    assert_eq!(pool.stats().tier_upgrade_success(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optimized_build_that_does_not_start_leaves_the_baseline_serving() {
    let (pool, addr, _release) = baseline().await;
    let c = Client::builder(TokioExecutor::new()).build_http();
    let before = send(&c, addr, "/").await;
    assert_eq!((before.0, before.1.as_str()), (200, "v1"));

    // The Cranelift build with a configuration its on_configure refuses.
    let base = pool.plugin();
    let refused = tokio::task::spawn_blocking(move || base.optimized())
        .await
        .unwrap()
        .unwrap()
        .expect("a baseline plugin has an optimized build")
        .with_config(PluginConfig {
            configuration: b"fail-configure".to_vec(),
            ..PluginConfig::named("misbehave")
        });
    assert_eq!(refused.tier(), Tier::Optimized);
    let err = pool.upgrade(&refused).unwrap_err();
    assert!(
        matches!(err, PluginError::Start(VmError::ConfigureRefused { .. })),
        "{err:?}"
    );
    assert_eq!(pool.tier(), Tier::Baseline);
    assert_eq!(pool.stats().tier_upgrade_failure(), 1);
    assert_eq!(pool.stats().tier_upgrade_success(), 0);
    // The same baseline VMs serve on: their counts go on.
    let after = send(&c, addr, "/").await;
    assert_eq!((after.0, after.1.as_str()), (200, "v1"));
    let more = send(&c, addr, "/").await;
    assert!(
        after.2 + more.2 > 2,
        "baseline VMs kept: {after:?} {more:?}"
    );
}
