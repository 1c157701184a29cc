//! Hot reload of `vessel run`: `POST /reload` and file watching, refusals
//! that leave the old config serving, FAIL_RELOAD counters in `/stats`,
//! and 50 reloads under load (`cargo xtask test` or `cargo xtask load`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::*;

struct Setup {
    vessel: VesselProcess,
    main: SocketAddr,
    admin: SocketAddr,
    up: SocketAddr,
}

impl Setup {
    async fn start(name: &str, plugin: WasmFilter, workers: usize) -> Self {
        let up = upstream().await;
        let vessel = start_vessel(name, &config(up, plugin), workers).await;
        Self {
            main: vessel.listener("main"),
            admin: vessel.admin(),
            vessel,
            up,
        }
    }

    fn config(&self, plugin: WasmFilter) -> String {
        config(self.up, plugin).to_yaml()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_swaps_the_filter_or_refuses_and_keeps_serving() {
    let module = guest("misbehave");
    let s = Setup::start("post", plugin(&module, "v1"), 1).await;
    let c = client();
    assert_eq!(
        send(&c, s.main, "/", &[]).await.header("x-plugin-config"),
        Some("v1")
    );

    s.vessel.write_config(&s.config(plugin(&module, "v2")));
    let (status, body) = post_reload(s.admin).await;
    assert_eq!(status, 200, "{body}\n{}", s.vessel.stderr());
    assert!(body.starts_with("reloaded "), "{body}");
    assert_eq!(
        send(&c, s.main, "/", &[]).await.header("x-plugin-config"),
        Some("v2")
    );

    // on_configure refuses the new plugin configuration.
    s.vessel
        .write_config(&s.config(plugin(&module, "fail-configure")));
    let (status, body) = post_reload(s.admin).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("proxy_on_configure returned false"), "{body}");
    assert_eq!(
        send(&c, s.main, "/", &[]).await.header("x-plugin-config"),
        Some("v2")
    );

    // Not YAML.
    s.vessel.write_config("static_resources: [");
    let (status, body) = post_reload(s.admin).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        send(&c, s.main, "/", &[]).await.header("x-plugin-config"),
        Some("v2")
    );

    // A new listener address needs a restart.
    let moved = config_at("127.0.0.2:0".parse().unwrap(), s.up, plugin(&module, "v3"));
    s.vessel.write_config(&moved.to_yaml());
    let (status, body) = post_reload(s.admin).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("restart"), "{body}");
    assert_eq!(
        send(&c, s.main, "/", &[]).await.header("x-plugin-config"),
        Some("v2")
    );

    assert!(stat(s.admin, "vessel.reload.failure").await.unwrap() >= 3);
    assert!(stat(s.admin, "vessel.reload.success").await.unwrap() >= 1);
    let (status, _) = admin_request(s.admin, "GET", "/reload").await.unwrap();
    assert_eq!(status, 405);
    assert!(
        s.vessel.stderr().contains("the old config keeps serving"),
        "the refusal is logged:\n{}",
        s.vessel.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_module_file_is_reloaded_without_a_request() {
    let s0 = tempdir("watch");
    let module = s0.join("filter.wasm");
    replace_file(&module, &std::fs::read(guest("misbehave")).unwrap());
    let s = Setup::start("watch", plugin(&module, "v1"), 1).await;
    let c = client();
    assert_eq!(
        send(&c, s.main, "/hello", &[])
            .await
            .header("x-plugin-config"),
        Some("v1")
    );
    // Swap the module for guest_hello: `GET /hello` gets its local reply.
    replace_file(&module, &std::fs::read(guest("hello")).unwrap());
    let (main, c2) = (s.main, c.clone());
    eventually("the new module serves", || {
        let c = c2.clone();
        async move { send(&c, main, "/hello", &[]).await.body == "Hello, World!\n" }
    })
    .await;
    assert!(stat(s.admin, "vessel.reload.success").await.unwrap() >= 1);

    // And the config file: a new plugin configuration.
    replace_file(&module, &std::fs::read(guest("misbehave")).unwrap());
    s.vessel.write_config(&s.config(plugin(&module, "v2")));
    eventually("the new config serves", || {
        let c = c2.clone();
        async move { send(&c, main, "/", &[]).await.header("x-plugin-config") == Some("v2") }
    })
    .await;
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vessel-files-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_reload_replaces_the_vm_and_counts_it_in_stats() {
    let module = guest("misbehave");
    let fail_reload = |configuration| {
        plugin(&module, configuration)
            .failure_policy("FAIL_RELOAD")
            .reload_backoff("0.001s", Some("0.002s"))
    };
    let s = Setup::start("fail-reload", fail_reload("v1"), 1).await;
    let c = client();
    assert_eq!(
        send(&c, s.main, "/", &[]).await.header("x-vm-requests"),
        Some("1")
    );
    assert_eq!(
        send(&c, s.main, "/", &[("x-misbehave", "trap")])
            .await
            .status,
        503
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    let a = send(&c, s.main, "/", &[]).await;
    assert_eq!(
        (a.status, a.header("x-vm-requests")),
        (200, Some("1")),
        "a fresh VM"
    );
    assert_eq!(stat(s.admin, "wasm.misbehave.vm_failures").await, Some(1));
    assert_eq!(
        stat(s.admin, "wasm.misbehave.vm_reload_success").await,
        Some(1)
    );
    assert_eq!(
        stat(s.admin, "wasm.misbehave.vm_reload_failure").await,
        Some(0)
    );
    let stderr = s.vessel.stderr();
    assert!(
        stderr.contains("VM failed in `proxy_on_request_headers` (FAIL_RELOAD)")
            && stderr.contains("misbehave: trap requested"),
        "the failure is logged with its callback and cause:\n{stderr}"
    );
    // The counters survive a hot reload of the plugin.
    s.vessel.write_config(&s.config(fail_reload("v2")));
    assert_eq!(post_reload(s.admin).await.0, 200);
    assert_eq!(stat(s.admin, "wasm.misbehave.vm_failures").await, Some(1));
    let (_, prom) = admin_request(s.admin, "GET", "/stats/prometheus")
        .await
        .unwrap();
    assert!(
        prom.contains("envoy_wasm_misbehave_vm_reload_success{} 1\n"),
        "{prom}"
    );
}

/// 50 reloads (each a new plugin configuration, so new VMs) while 8
/// connections send requests: no request fails, and the vessel process's
/// RSS after them is within 16 MiB of its RSS after 50 warm-up reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: run by `cargo xtask test` or `cargo xtask load`"]
async fn fifty_reloads_under_load_lose_no_request() {
    let module = guest("misbehave");
    let s = Setup::start("fifty", plugin(&module, "gen-0"), 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failed, main) = (stop.clone(), ok.clone(), failed.clone(), s.main);
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let a = send(&c, main, "/", &[]).await;
                if a.status == 200
                    && a.header("x-plugin-config")
                        .is_some_and(|v| v.starts_with("gen-"))
                {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let reload = |g: u32| {
        s.vessel
            .write_config(&s.config(plugin(&module, &format!("gen-{g}"))));
        post_reload(s.admin)
    };
    for g in 1..=50 {
        let (status, body) = reload(g).await;
        assert_eq!(status, 200, "{body}");
    }
    let before = s.vessel.rss_kib();
    let served_before = ok.load(Ordering::Relaxed);
    for g in 51..=100 {
        let (status, body) = reload(g).await;
        assert_eq!(status, 200, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = s.vessel.rss_kib();
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "vessel run, 50 reloads under load: {} requests during them, {ok} in all, {failed} failed; \
         vessel RSS {before} KiB -> {after} KiB",
        ok - served_before
    );
    assert_eq!(failed, 0);
    assert!(ok > served_before);
    assert!(
        after <= before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}
