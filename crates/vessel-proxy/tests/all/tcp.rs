//! `vessel run` with TCP listeners: `envoy.filters.network.tcp_proxy` to a
//! loopback TCP upstream, half-closes passed on, the idle timeout, the
//! `tcp.<stat_prefix>.*` counters, and chains chosen per connection.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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
    format!(
        r#"
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    # Never taken: no connection reaches port 1.
    - filter_chain_match: {{ destination_port: 1 }}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: wrong
          cluster: nowhere
    default_filter_chain:
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: backend
          idle_timeout: {idle_timeout}
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }}
  - name: nowhere
    connect_timeout: 1s
    load_assignment:
      cluster_name: nowhere
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }} }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
"#,
        ip = upstream.ip(),
        port = upstream.port(),
    )
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
