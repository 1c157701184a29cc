//! `vessel run` with TCP listeners: `envoy.filters.network.tcp_proxy` to a
//! loopback TCP upstream, half-closes passed on, the idle timeout, the
//! `tcp.<stat_prefix>.*` counters, and chains chosen per connection.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vessel_testkit::bootstrap::{Bootstrap, Cluster, Listener, Route, WasmFilter};
use vessel_testkit::{VesselProcess, WAIT, admin_get, eventually_async};

/// A loopback TCP upstream: reads each connection to its end, records the
/// bytes, answers `got <n> bytes` and closes.
async fn counting_upstream() -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_ok() {
                    let answer = format!("got {} bytes", got.len());
                    log.lock().unwrap().push(got);
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    (addr, seen)
}

fn config(upstream: SocketAddr, idle_timeout: &str) -> String {
    let mut v = Bootstrap::new()
        .listener(
            Listener::new("main")
                .stat_prefix("t")
                .tcp_proxy("backend")
                .tcp_idle_timeout(idle_timeout),
        )
        // Only its chain is used, below.
        .listener(
            Listener::new("unused")
                .stat_prefix("wrong")
                .tcp_proxy("nowhere"),
        )
        .cluster(Cluster::new("backend").endpoint(upstream))
        .cluster(Cluster::new("nowhere").endpoint(SocketAddr::from(([127, 0, 0, 1], 1))))
        .to_value();
    // The main chain becomes the default one, behind the other listener's
    // chain, which is never taken: no connection reaches port 1.
    let listeners = v["static_resources"]["listeners"].as_array_mut().unwrap();
    let mut wrong = listeners.pop().unwrap()["filter_chains"][0].clone();
    wrong["filter_chain_match"] = serde_json::json!({ "destination_port": 1 });
    let main = &mut listeners[0];
    main["default_filter_chain"] = main["filter_chains"][0].clone();
    main["filter_chains"] = serde_json::json!([wrong]);
    vessel_test::yaml::to_string(&v).unwrap()
}

async fn start(name: &str, config: &str) -> VesselProcess {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vessel-tcp-{name}"));
    let mut vessel = VesselProcess::start(
        Path::new(env!("CARGO_BIN_EXE_vessel")),
        &dir,
        config,
        &["--concurrency", "2", "-l", "info"],
    );
    vessel.wait_ready().await;
    vessel
}

/// The value of counter `name` on the admin `/stats`.
async fn stat(admin: SocketAddr, name: &str) -> Option<u64> {
    let (_, text) = admin_get(admin, "GET", "/stats").await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_passes_bytes_and_half_closes_both_ways() {
    let (upstream, seen) = counting_upstream().await;
    let vessel = start("proxy", &config(upstream, "60s")).await;
    let main = vessel.listener("main");

    for payload in [&b"hello world"[..], &vec![7u8; 300_000][..]] {
        let mut c = TcpStream::connect(main).await.unwrap();
        c.write_all(payload).await.unwrap();
        // The client's end of stream reaches the upstream, which answers
        // only then; its close reaches the client.
        c.shutdown().await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(WAIT, c.read_to_string(&mut answer))
            .await
            .expect("the answer and the close arrive")
            .unwrap();
        assert_eq!(answer, format!("got {} bytes", payload.len()));
        assert_eq!(seen.lock().unwrap().last().unwrap().as_slice(), payload);
    }
    let admin = vessel.admin();
    let rx = 11 + 300_000;
    let tx = "got 11 bytes".len() + "got 300000 bytes".len();
    eventually_async("the byte counters", || async {
        stat(admin, "tcp.t.downstream_cx_rx_bytes_total").await == Some(rx as u64)
            && stat(admin, "tcp.t.downstream_cx_tx_bytes_total").await == Some(tx as u64)
            && stat(admin, "tcp.t.downstream_cx_total").await == Some(2)
    })
    .await;
    assert_eq!(stat(admin, "tcp.wrong.downstream_cx_total").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_closes_an_idle_connection_and_counts_it() {
    let (upstream, _) = counting_upstream().await;
    let vessel = start("idle", &config(upstream, "0.3s")).await;
    let mut c = TcpStream::connect(vessel.listener("main")).await.unwrap();
    // Nothing is sent: the proxy closes the connection after the idle
    // timeout (the read sees the end of stream, not an error).
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, c.read_to_end(&mut rest))
        .await
        .expect("the proxy closes the idle connection")
        .unwrap();
    assert_eq!(n, 0);
    let admin = vessel.admin();
    eventually_async("tcp.t.idle_timeout", || async {
        stat(admin, "tcp.t.idle_timeout").await == Some(1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_to_a_refusing_endpoint_closes_the_client_and_counts_it() {
    // A port with nothing listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let vessel = start("refused", &config(closed, "60s")).await;
    let mut c = TcpStream::connect(vessel.listener("main")).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, c.read_to_end(&mut rest))
        .await
        .expect("the proxy closes the connection");
    assert!(rest.is_empty(), "{read:?} {rest:?}");
    let admin = vessel.admin();
    eventually_async("tcp.t.upstream_cx_connect_fail", || async {
        stat(admin, "tcp.t.upstream_cx_connect_fail").await == Some(1)
    })
    .await;
}

/// A listener whose chain is `envoy.filters.network.wasm` filters (each
/// `(guest, configuration)`) then the HTTP connection manager: `/secret`
/// answers `the secret path`, anything else 404.
fn network_before_hcm(filters: &[(&str, &str)]) -> String {
    let mut listener = Listener::new("main")
        .stat_prefix("ingress")
        .route(Route::prefix("/secret").direct(200, Some("the secret path\n")))
        .route(Route::prefix("/").direct(404, Some("elsewhere\n")));
    for (i, (guest, configuration)) in filters.iter().enumerate() {
        listener = listener.network_filter(
            WasmFilter::new(format!("net{i}"), crate::support::guest(guest))
                .root_id(format!("net{i}"))
                .configuration(*configuration),
        );
    }
    Bootstrap::new().listener(listener).to_yaml()
}

/// Sends `request` on a new connection to `addr` and reads until the
/// proxy closes it: the status line and the body (what follows the blank
/// line), or `None` for a connection closed with no answer.
async fn exchange(addr: SocketAddr, request: &str) -> Option<(String, String)> {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A reset after a close is an end too.
    let _ = tokio::time::timeout(WAIT, c.read_to_end(&mut answer))
        .await
        .expect("the proxy ends the connection");
    if answer.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    Some((status, body.to_owned()))
}

/// Network wasm filters before the HTTP connection manager, on `vessel
/// run` and on real Envoy with the same config: the bytes a filter
/// rewrites are what the connection manager parses (the request path) and
/// what the client gets (the response body); a filter that closes on a
/// pattern ends the connection before any answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_filters_before_the_http_connection_manager() {
    let config = network_before_hcm(&[
        ("tcp_close", "EVIL"),
        (
            "tcp_rewrite",
            "downstream /before /secret\nupstream secret SECRET",
        ),
    ]);
    let mut proxies = vec![("vessel", start("before-hcm", &config).await)];
    if let Some(envoy) = vessel_testkit::envoy_from_env("network_filters_before_the_hcm") {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("envoy-tcp-before-hcm");
        let mut e = VesselProcess::start_envoy(
            &envoy,
            &dir,
            &config,
            &["--concurrency", "1", "-l", "warning"],
        );
        e.wait_ready().await;
        proxies.push(("envoy", e));
    }
    for (name, proxy) in &proxies {
        let addr = proxy.listener("main");
        let get =
            |path: &str| format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        // The client asks for /before; the connection manager sees
        // /secret, and the body it answers is rewritten on the way back.
        assert_eq!(
            exchange(addr, &get("/before")).await,
            Some(("HTTP/1.1 200 OK".into(), "the SECRET path\n".into())),
            "{name}"
        );
        assert_eq!(
            exchange(addr, &get("/other")).await,
            Some(("HTTP/1.1 404 Not Found".into(), "elsewhere\n".into())),
            "{name}"
        );
        // The first filter closes the connection: no answer at all.
        assert_eq!(exchange(addr, &get("/EVIL")).await, None, "{name}");
    }
}

/// A reload that changes the tcp_proxy's cluster gives the listener new
/// chains: a new connection reaches the new endpoint, the connection in
/// flight finishes on the old one, and the counters go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_new_connections_to_the_changed_cluster() {
    let (a, a_seen) = counting_upstream().await;
    let (b, b_seen) = counting_upstream().await;
    let vessel = start("reload", &config(a, "60s")).await;
    let (main, admin) = (vessel.listener("main"), vessel.admin());
    let mut first = TcpStream::connect(main).await.unwrap();
    first.write_all(b"first").await.unwrap();
    eventually_async("the first connection is proxied", || async {
        stat(admin, "tcp.t.downstream_cx_total").await == Some(1)
    })
    .await;

    vessel.write_config(&config(b, "60s"));
    let (status, body) = admin_get(admin, "POST", "/reload").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("1 rebuilt") && body.contains("1 changed"),
        "{body}"
    );
    let mut second = TcpStream::connect(main).await.unwrap();
    second.write_all(b"second").await.unwrap();
    second.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, second.read_to_string(&mut answer))
        .await
        .expect("the second answer")
        .unwrap();
    assert_eq!(answer, "got 6 bytes");
    assert_eq!(b_seen.lock().unwrap().as_slice(), [b"second".to_vec()]);

    first.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, first.read_to_string(&mut answer))
        .await
        .expect("the first answer")
        .unwrap();
    assert_eq!(answer, "got 5 bytes");
    assert_eq!(a_seen.lock().unwrap().as_slice(), [b"first".to_vec()]);
    assert_eq!(stat(admin, "tcp.t.downstream_cx_total").await, Some(2));
}
