//! Hot reload of `vessel run`: `POST /reload` and file watching, refusals
//! that leave the old config serving, FAIL_RELOAD counters in `/stats`,
//! listeners and clusters added, changed and removed while serving, and 50
//! reloads under load (`cargo xtask test` or `cargo xtask load`).

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

use tokio::sync::watch;

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

    // A new admin address needs a restart.
    let moved = config(s.up, plugin(&module, "v3")).admin("127.0.0.2:0".parse().unwrap());
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

/// An upstream answering 200 with `body`; a `/slow` request is counted in
/// `arrived` when it arrives and answered once `release` turns true.
async fn held_upstream(body: &'static str) -> (SocketAddr, Arc<AtomicU64>, watch::Sender<bool>) {
    let arrived = Arc::new(AtomicU64::new(0));
    let (release, released) = watch::channel(false);
    let seen = arrived.clone();
    let addr = vessel_testkit::servers::serve_fn(move |req| {
        let seen = seen.clone();
        let mut released = released.clone();
        async move {
            if req.uri().path() == "/slow" {
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = released.wait_for(|r| *r).await;
            }
            vessel_testkit::servers::reply(200, body)
        }
    })
    .await;
    (addr, arrived, release)
}

/// Waits until `arrived` counts `n` requests.
async fn arrivals(arrived: &Arc<AtomicU64>, n: u64) {
    let arrived = arrived.clone();
    eventually("the slow request reaches the upstream", move || {
        let arrived = arrived.clone();
        async move { arrived.load(Ordering::SeqCst) == n }
    })
    .await;
}

/// Waits until nothing accepts connections on `addr` any more.
async fn refused(addr: SocketAddr) {
    eventually("the old socket refuses connections", move || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
}

/// Listeners named `names` (each routing everything to `backend`), and
/// the cluster `backend` on `up`.
fn listeners(names: &[&str], up: SocketAddr) -> Bootstrap {
    names
        .iter()
        .fold(Bootstrap::new(), |b, n| {
            b.listener(Listener::new(*n).route(Route::prefix("/").to("backend")))
        })
        .cluster(Cluster::new("backend").endpoint(up))
}

/// A reload adds a listener (bound, serving, in `/listeners` and
/// `/stats`), removes one (it refuses new connections while a request in
/// flight on it completes) and moves one (the new address serves, the old
/// one closes); the others keep their sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_removed_and_moved_by_reload() {
    let (up, arrived, release) = held_upstream("up").await;
    let mut vessel = start_vessel("listeners", &listeners(&["main", "side"], up), 1).await;
    let (admin, main, side) = (
        vessel.admin(),
        vessel.listener("main"),
        vessel.listener("side"),
    );
    let c = client();

    vessel.write_config(&listeners(&["main", "side", "added"], up).to_yaml());
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("listeners: 1 added, 0 removed, 0 rebuilt, 2 kept"),
        "{body}"
    );
    vessel.refresh_listeners().await;
    let added = vessel.listener("added");
    assert_eq!(
        (vessel.listener("main"), vessel.listener("side")),
        (main, side)
    );
    let a = send(&c, added, "/", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (200, "up"));
    assert_eq!(stat(admin, "http.added.downstream_rq_2xx").await, Some(1));

    // A request in flight on `side` when it is removed.
    let slow = tokio::spawn(async move { send(&client(), side, "/slow", &[]).await });
    arrivals(&arrived, 1).await;
    vessel.write_config(&listeners(&["main", "added"], up).to_yaml());
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("listeners: 0 added, 1 removed"), "{body}");
    assert_eq!(vessel.refresh_listeners().await.address_of("side"), None);
    refused(side).await;
    assert_eq!(send(&c, main, "/", &[]).await.status, 200);
    assert!(
        !slow.is_finished(),
        "the request in flight waits for its answer"
    );
    release.send_replace(true);
    let a = slow.await.unwrap();
    assert_eq!((a.status, a.body.as_str()), (200, "up"), "it completes");

    // `added` moves to another address.
    let moved = Bootstrap::new()
        .listener(Listener::new("main").route(Route::prefix("/").to("backend")))
        .listener(
            Listener::new("added")
                .addr("127.0.0.2:0".parse().unwrap())
                .route(Route::prefix("/").to("backend")),
        )
        .cluster(Cluster::new("backend").endpoint(up));
    vessel.write_config(&moved.to_yaml());
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 rebuilt, 1 kept"), "{body}");
    vessel.refresh_listeners().await;
    let now = vessel.listener("added");
    assert_eq!(now.ip().to_string(), "127.0.0.2");
    assert_eq!(send(&client(), now, "/", &[]).await.body, "up");
    refused(added).await;
    assert_eq!(vessel.listener("main"), main);
    assert_eq!(stat(admin, "http.added.downstream_rq_2xx").await, Some(2));

    // `main` renamed on its own address: the socket is handed over.
    let renamed = Bootstrap::new()
        .listener(
            Listener::new("renamed")
                .addr(main)
                .route(Route::prefix("/").to("backend")),
        )
        .cluster(Cluster::new("backend").endpoint(up));
    vessel.write_config(&renamed.to_yaml());
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("listeners: 1 added, 2 removed"), "{body}");
    assert_eq!(
        vessel.refresh_listeners().await.address_of("renamed"),
        Some(main)
    );
    assert_eq!(send(&client(), main, "/", &[]).await.body, "up");
    assert_eq!(stat(admin, "http.renamed.downstream_rq_2xx").await, Some(1));
}

/// A listener whose chain changes (its stat prefix and its wasm filter's
/// configuration) keeps its socket: new connections take the new chain,
/// the request in flight on the old one completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_filter_chain_serves_new_connections_while_old_ones_finish() {
    let module = guest("misbehave");
    let (up, arrived, release) = held_upstream("up").await;
    let boot = |prefix: &str, configuration: &str| {
        Bootstrap::new()
            .listener(
                Listener::new("main")
                    .stat_prefix(prefix)
                    .route(Route::prefix("/").to("backend"))
                    .filter(plugin(&module, configuration)),
            )
            .cluster(Cluster::new("backend").endpoint(up))
    };
    let mut vessel = start_vessel("chain", &boot("before", "v1"), 1).await;
    let (admin, main) = (vessel.admin(), vessel.listener("main"));
    let a = send(&client(), main, "/", &[]).await;
    assert_eq!(a.header("x-plugin-config"), Some("v1"));
    let slow = tokio::spawn(async move { send(&client(), main, "/slow", &[]).await });
    arrivals(&arrived, 1).await;

    vessel.write_config(&boot("after", "v2").to_yaml());
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("0 removed, 1 rebuilt, 0 kept"), "{body}");
    assert_eq!(
        vessel.refresh_listeners().await.address_of("main"),
        Some(main)
    );
    let a = send(&client(), main, "/", &[]).await;
    assert_eq!((a.status, a.header("x-plugin-config")), (200, Some("v2")));
    assert_eq!(stat(admin, "http.after.downstream_rq_2xx").await, Some(1));
    assert!(
        !slow.is_finished(),
        "the request in flight waits for its answer"
    );
    release.send_replace(true);
    let a = slow.await.unwrap();
    assert_eq!((a.status, a.header("x-plugin-config")), (200, Some("v1")));
}

/// Clusters change by reload: an unchanged one keeps its balancer state,
/// a route moves to a new one, callouts reach a new one, and a removed one
/// is gone from routes, callouts (`known_clusters`) and `/clusters`; a
/// changed one serves its new endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_are_added_changed_and_removed_by_reload() {
    let (a, _) = vessel_testkit::servers::upstream(200, "a").await;
    let (b, _) = vessel_testkit::servers::upstream(200, "b").await;
    let (alice, _) = vessel_testkit::servers::upstream(200, "alice").await;
    let (bob, bob_seen) = vessel_testkit::servers::upstream(200, "bob").await;
    let auth = WasmFilter::new("http_call", guest("http_call"));
    let boot = |route: &str, clusters: &[(&str, SocketAddr)]| {
        clusters.iter().fold(
            Bootstrap::new().listener(
                Listener::new("main")
                    .route(Route::prefix("/").to(route))
                    .filter(auth.clone()),
            ),
            |boot, (name, addr)| boot.cluster(Cluster::new(*name).endpoint(*addr)),
        )
    };
    let vessel = start_vessel("clusters", &boot("one", &[("one", a), ("auth", alice)]), 1).await;
    let (admin, main) = (vessel.admin(), vessel.listener("main"));
    let c = client();
    for _ in 0..2 {
        assert_eq!(send(&c, main, "/", &[]).await.body, "a");
    }
    let clusters = || async move { admin_request(admin, "GET", "/clusters").await.unwrap().1 };
    assert!(clusters().await.contains(&format!("one::{a}::rq_total::2")));

    // Added: `two` (the route moves to it) and `extra` (for callouts).
    let both = [("one", a), ("two", b), ("auth", alice), ("extra", bob)];
    vessel.write_config(&boot("two", &both).to_yaml());
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("clusters: 2 added, 0 removed, 0 changed, 2 unchanged"),
        "{body}"
    );
    assert_eq!(send(&c, main, "/", &[]).await.body, "b");
    let via_extra = send(&c, main, "/", &[("x-auth-cluster", "extra")]).await;
    assert_eq!((via_extra.status, via_extra.body.as_str()), (200, "b"));
    assert_eq!(bob_seen.lock().unwrap().len(), 1);
    let text = clusters().await;
    assert!(
        text.contains(&format!("one::{a}::rq_total::2")),
        "kept:\n{text}"
    );
    assert!(text.contains(&format!("two::{b}::rq_total::2")), "{text}");

    // Removed: `one` and `extra`.
    vessel.write_config(&boot("two", &[("two", b), ("auth", alice)]).to_yaml());
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("clusters: 0 added, 2 removed, 0 changed, 2 unchanged"),
        "{body}"
    );
    let text = clusters().await;
    assert!(
        !text.contains("one::") && !text.contains("extra::"),
        "{text}"
    );
    assert_eq!(send(&c, main, "/", &[]).await.body, "b");
    let via_extra = send(&c, main, "/", &[("x-auth-cluster", "extra")]).await;
    assert_eq!(
        (via_extra.status, via_extra.body.as_str()),
        (503, "auth dispatch failed\n")
    );
    assert_eq!(bob_seen.lock().unwrap().len(), 1);

    // Changed: `two` now on `a`.
    vessel.write_config(&boot("two", &[("two", a), ("auth", alice)]).to_yaml());
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 changed, 1 unchanged"), "{body}");
    assert_eq!(send(&c, main, "/", &[]).await.body, "a");
    assert!(clusters().await.contains(&format!("two::{a}::rq_total::1")));
}

/// An update that fails to build (a module that does not compile; a new
/// listener on an address already in use) changes nothing: no new
/// listener or cluster, the old filter and listeners serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_update_changes_nothing() {
    let module = guest("misbehave");
    let mut s = Setup::start("failing", plugin(&module, "v1"), 1).await;
    let c = client();
    let dir = tempdir("failing-update");
    let bad = dir.join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0 not a module").unwrap();
    let grown = |filter: WasmFilter, at: SocketAddr| {
        config(s.up, filter)
            .listener(
                Listener::new("added")
                    .addr(at)
                    .route(Route::prefix("/").to("more")),
            )
            .cluster(Cluster::new("more").endpoint(s.up))
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    s.vessel
        .write_config(&grown(WasmFilter::new("misbehave", &bad), any).to_yaml());
    let (status, body) = post_reload(s.admin).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("wasm filter #0 `misbehave`: not a WebAssembly module"),
        "{body}"
    );

    let taken = std::net::TcpListener::bind(any).unwrap();
    let taken_addr = taken.local_addr().unwrap();
    s.vessel
        .write_config(&grown(plugin(&module, "v2"), taken_addr).to_yaml());
    let (status, body) = post_reload(s.admin).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains(&format!("cannot listen on {taken_addr}")),
        "{body}"
    );

    let listed = s.vessel.refresh_listeners().await.clone();
    assert_eq!(listed.listener_statuses.len(), 1, "{listed:?}");
    assert_eq!(listed.address_of("main"), Some(s.main));
    let a = send(&c, s.main, "/", &[]).await;
    assert_eq!((a.status, a.header("x-plugin-config")), (200, Some("v1")));
    let (_, clusters) = admin_request(s.admin, "GET", "/clusters").await.unwrap();
    assert!(!clusters.contains("more::"), "{clusters}");
    assert_eq!(stat(s.admin, "vessel.reload.failure").await, Some(2));
    assert_eq!(stat(s.admin, "vessel.reload.success").await, Some(0));
    drop(taken);
}

/// Reloads that replace a listener's chains while 4 keep-alive clients
/// send requests lose no request: connections of the old chains get
/// `connection: close` on their next response and move to the new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_changes_under_load_lose_no_request() {
    let up = upstream().await;
    let boot = |g: u32| {
        Bootstrap::new()
            .listener(
                Listener::new("main")
                    .stat_prefix(format!("gen{g}"))
                    .route(Route::prefix("/").to("backend")),
            )
            .cluster(Cluster::new("backend").endpoint(up))
    };
    let vessel = start_vessel("chain-load", &boot(0), 2).await;
    let (admin, main) = (vessel.admin(), vessel.listener("main"));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let a = send(&c, main, "/", &[]).await;
                if a.status == 200 && a.body == "ok" {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for g in 1..=10 {
        let before = ok.load(Ordering::Relaxed);
        let counted = ok.clone();
        eventually("requests flow", move || {
            let counted = counted.clone();
            async move { counted.load(Ordering::Relaxed) > before + 20 }
        })
        .await;
        vessel.write_config(&boot(g).to_yaml());
        let (status, body) = post_reload(admin).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("1 rebuilt"), "{body}");
        let name = format!("http.gen{g}.downstream_rq_2xx");
        eventually("the new chain serves", move || {
            let name = name.clone();
            async move { stat(admin, &name).await.is_some_and(|n| n > 0) }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("10 chain changes under load: {ok} requests, {failed} failed");
    assert_eq!(failed, 0);
}
