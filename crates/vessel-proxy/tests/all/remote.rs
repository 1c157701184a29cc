//! Remote wasm code (`vm_config.code.remote`) on the real `vessel run`:
//! the module comes from a real hyper server on loopback (a cluster),
//! checked against its sha256, cached on disk by digest; failures stop
//! start-up or refuse a reload unless the filter is fail-open.

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
use http_body_util::Full;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vessel_testkit::servers::{RefusingPort, serve_fn};

use crate::support::*;

/// The path the module server serves the module at.
const MODULE_PATH: &str = "/filters/hello.wasm";

/// A module server: `GET /filters/hello.wasm` answers the module, after
/// `fail_first` requests answered 503; every request is counted.
struct ModuleServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    fail_first: Arc<AtomicUsize>,
    /// Serve other bytes than the module (a digest mismatch).
    tampered: Arc<AtomicBool>,
}

impl ModuleServer {
    async fn start(module: Vec<u8>, fail_first: usize) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(AtomicUsize::new(fail_first));
        let tampered = Arc::new(AtomicBool::new(false));
        let module = Bytes::from(module);
        let (h, f, t) = (hits.clone(), fail.clone(), tampered.clone());
        let addr = serve_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (h, f, t, module) = (h.clone(), f.clone(), t.clone(), module.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let failing = f
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let (status, body) = if req.uri().path() != MODULE_PATH {
                    (404, Bytes::from_static(b"no such module"))
                } else if failing {
                    (503, Bytes::from_static(b"not yet"))
                } else if t.load(Ordering::SeqCst) {
                    (200, Bytes::from_static(b"\0asm tampered"))
                } else {
                    (200, module)
                };
                http::Response::builder()
                    .status(status)
                    .body(Full::new(body))
                    .unwrap()
            }
        })
        .await;
        Self {
            addr,
            hits,
            fail_first: fail,
            tampered,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `vm_config.code.remote` for the module server's module.
fn remote_code(sha256: &str, retries: u32) -> Value {
    json!({ "remote": {
        "http_uri": {
            "uri": format!("http://modules.example{MODULE_PATH}"),
            "cluster": "modules",
            "timeout": "5s",
        },
        "sha256": sha256,
        "retry_policy": {
            "num_retries": retries,
            "retry_back_off": { "base_interval": "0.01s", "max_interval": "0.05s" },
        },
    }})
}

/// Listener `main` through the hello filter with remote code (`code`) to
/// cluster `backend` (`up`); cluster `modules` at `modules`.
fn remote_config(up: SocketAddr, modules: SocketAddr, filter: WasmFilter) -> Bootstrap {
    config(up, filter).cluster(Cluster::new("modules").endpoint(modules))
}

/// [`remote_code`] with `http_uri.timeout: 0s` (no limit).
fn zero_timeout(sha256: &str) -> Value {
    let mut code = remote_code(sha256, 0);
    code["remote"]["http_uri"]["timeout"] = json!("0s");
    code
}

fn hello(code: Value) -> WasmFilter {
    WasmFilter::new("hello", guest("hello")).code(code)
}

/// A directory under the test target dir, emptied.
fn fresh_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vessel-remote-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `vessel run` on `config` in `dir/run` with the module cache `cache`.
fn spawn(dir: &Path, cache: &Path, config: &str) -> VesselProcess {
    VesselProcess::start(
        Path::new(env!("CARGO_BIN_EXE_vessel")),
        &dir.join("run"),
        config,
        &[
            "-l",
            "info",
            "--concurrency",
            "1",
            "--module-cache-dir",
            &cache.to_string_lossy(),
        ],
    )
}

/// Waits for `vessel` to exit: its stderr, after checking it failed.
async fn start_up_fails(vessel: &mut VesselProcess) -> String {
    let status = vessel
        .wait_exit(WAIT)
        .await
        .unwrap_or_else(|| panic!("vessel did not exit:\n{}", vessel.stderr()));
    assert!(!status.success(), "vessel exited 0:\n{}", vessel.stderr());
    vessel.stderr()
}

async fn hello_answer(main: SocketAddr) -> Answer {
    send(&client(), main, "/hello", &[]).await
}

/// The module is fetched, verified and served; it is cached by digest;
/// a reload with the same spec fetches nothing; a later run with the
/// same cache and the server down serves the cached copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_module_serves_is_cached_and_outlives_its_server() {
    let module = std::fs::read(guest("hello")).unwrap();
    let sha = sha256_hex(&module);
    let server = ModuleServer::start(module.clone(), 0).await;
    let up = upstream().await;
    let dir = fresh_dir("fetch");
    let cache = dir.join("cache");
    let config = remote_config(up, server.addr, hello(remote_code(&sha, 1))).to_yaml();

    let mut vessel = spawn(&dir, &cache, &config);
    vessel.wait_ready().await;
    let a = hello_answer(vessel.listener("main")).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "Hello, World!\n"),
        "{}",
        vessel.stderr()
    );
    assert_eq!(server.hits(), 1);
    let admin = vessel.admin();
    assert_eq!(stat(admin, "wasm_remote.fetch_success").await, Some(1));
    assert_eq!(stat(admin, "wasm_remote.fetch_failure").await, Some(0));
    let cached = cache.join("remote").join(format!("{sha}.wasm"));
    assert_eq!(std::fs::read(&cached).unwrap(), module, "the cached copy");
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("remote"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The same spec again: the filter keeps its VMs, nothing is fetched.
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("wasm filters: 0 rebuilt, 1 unchanged"),
        "{body}"
    );
    assert_eq!(server.hits(), 1, "an unchanged filter is not fetched again");
    assert_eq!(stat(admin, "wasm_remote.reused").await, Some(1));
    assert_eq!(hello_answer(vessel.listener("main")).await.status, 200);
    drop(vessel);

    // The server is gone: a new run with the same cache serves the copy.
    let gone = RefusingPort::new();
    let config = remote_config(up, gone.addr(), hello(remote_code(&sha, 1))).to_yaml();
    let mut vessel = spawn(&dir, &cache, &config);
    vessel.wait_ready().await;
    let a = hello_answer(vessel.listener("main")).await;
    assert_eq!((a.status, a.body.as_str()), (200, "Hello, World!\n"));
    let admin = vessel.admin();
    assert_eq!(stat(admin, "wasm_remote.fetch_failure").await, Some(1));
    assert_eq!(stat(admin, "wasm_remote.cache_hit").await, Some(1));
    assert_eq!(stat(admin, "wasm_remote.fetch_success").await, Some(0));
    assert!(
        vessel.stderr().contains("using the cached copy"),
        "{}",
        vessel.stderr()
    );

    // A corrupt cached copy is not used.
    drop(vessel);
    std::fs::write(&cached, b"\0asm corrupt").unwrap();
    let mut vessel = spawn(&dir, &cache, &config);
    let err = start_up_fails(&mut vessel).await;
    assert!(err.contains("was corrupt"), "{err}");
    assert!(!cached.exists(), "the corrupt copy is removed");
}

/// A module whose sha256 is not the configured one stops start-up, the
/// error naming both digests; a reload to a wrong digest is refused and
/// the old filter keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_digest_fails_start_up_and_is_refused_on_reload() {
    let module = std::fs::read(guest("hello")).unwrap();
    let sha = sha256_hex(&module);
    let wrong = sha256_hex(b"some other module");
    let server = ModuleServer::start(module, 0).await;
    let up = upstream().await;
    let dir = fresh_dir("digest");
    let cache = dir.join("cache");

    let bad = remote_config(up, server.addr, hello(remote_code(&wrong, 1))).to_yaml();
    let mut vessel = spawn(&dir, &cache, &bad);
    let err = start_up_fails(&mut vessel).await;
    assert!(
        err.contains(&format!("expected {wrong}, got {sha}")),
        "the error names both digests:\n{err}"
    );
    assert_eq!(server.hits(), 2, "one try and one retry");
    assert!(!cache.join("remote").join(format!("{wrong}.wasm")).exists());

    // (`timeout: 0s` is no limit, as in Envoy.)
    let good = remote_config(up, server.addr, hello(zero_timeout(&sha))).to_yaml();
    let mut vessel = spawn(&dir, &cache, &good);
    vessel.wait_ready().await;
    let main = vessel.listener("main");
    assert_eq!(hello_answer(main).await.status, 200);
    // The server now serves other bytes under the good digest's name: a
    // reload to a new digest (the tampered one) is refused.
    server.tampered.store(true, Ordering::SeqCst);
    let tampered_sha = sha256_hex(b"\0asm tampered");
    let expect_other = sha256_hex(b"yet another module");
    let reload = remote_config(
        up,
        server.addr,
        hello(remote_code(&expect_other, 0)).configuration("v2"),
    );
    vessel.write_config(&reload.to_yaml());
    let (status, body) = post_reload(vessel.admin()).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains(&format!("expected {expect_other}, got {tampered_sha}")),
        "{body}"
    );
    let a = hello_answer(main).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "Hello, World!\n"),
        "the old filter keeps serving"
    );
    assert_eq!(stat(vessel.admin(), "vessel.reload.failure").await, Some(1));
}

/// The server down and no cached copy: start-up fails, unless the filter
/// is fail-open, which is then left out (its traffic passes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_without_a_cached_copy_fails_start_up_unless_fail_open() {
    let module = std::fs::read(guest("hello")).unwrap();
    let sha = sha256_hex(&module);
    let gone = RefusingPort::new();
    let up = upstream().await;
    let dir = fresh_dir("down");
    let cache = dir.join("cache");

    let closed = remote_config(up, gone.addr(), hello(remote_code(&sha, 1))).to_yaml();
    let mut vessel = spawn(&dir, &cache, &closed);
    let err = start_up_fails(&mut vessel).await;
    assert!(
        err.contains(&format!(
            "cannot fetch http://modules.example{MODULE_PATH} through cluster `modules`"
        )) && err.contains("2 attempt(s)")
            && err.contains("no cached copy"),
        "{err}"
    );

    let open = hello(remote_code(&sha, 1)).failure_policy("FAIL_OPEN");
    let config = remote_config(up, gone.addr(), open).to_yaml();
    let mut vessel = spawn(&dir, &cache, &config);
    vessel.wait_ready().await;
    // No filter: /hello reaches the upstream.
    let a = hello_answer(vessel.listener("main")).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "ok"),
        "{}",
        vessel.stderr()
    );
    assert_eq!(stat(vessel.admin(), "wasm_remote.left_out").await, Some(1));
    assert!(
        vessel.stderr().contains("the filter is fail-open"),
        "{}",
        vessel.stderr()
    );
    drop(vessel);

    // A server that answers 503 until it is fixed: the fail-open filter is
    // left out at start-up and comes in with the next reload.
    let server = ModuleServer::start(module, usize::MAX / 2).await;
    let open = hello(remote_code(&sha, 0)).failure_policy("FAIL_OPEN");
    let config = remote_config(up, server.addr, open).to_yaml();
    let mut vessel = spawn(&dir, &dir.join("cache-2"), &config);
    vessel.wait_ready().await;
    let main = vessel.listener("main");
    assert_eq!(hello_answer(main).await.body, "ok");
    server.fail_first.store(0, Ordering::SeqCst);
    let (status, body) = post_reload(vessel.admin()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("wasm filters: 1 rebuilt"), "{body}");
    assert_eq!(hello_answer(main).await.body, "Hello, World!\n");
    assert_eq!(server.hits(), 2);
}

/// A server that fails the first requests: the retries reach it (its
/// hit count is exactly the attempts), and too few retries fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_reach_a_server_that_fails_first() {
    let module = std::fs::read(guest("hello")).unwrap();
    let sha = sha256_hex(&module);
    let server = ModuleServer::start(module, 2).await;
    let up = upstream().await;
    let dir = fresh_dir("retries");
    let cache = dir.join("cache");

    // One retry is not enough for two failures.
    let config = remote_config(up, server.addr, hello(remote_code(&sha, 1))).to_yaml();
    let mut vessel = spawn(&dir, &cache, &config);
    let err = start_up_fails(&mut vessel).await;
    assert!(err.contains("status 503"), "{err}");
    assert_eq!(server.hits(), 2);

    server.fail_first.store(2, Ordering::SeqCst);
    let config = remote_config(up, server.addr, hello(remote_code(&sha, 3))).to_yaml();
    let mut vessel = spawn(&dir, &cache, &config);
    vessel.wait_ready().await;
    assert_eq!(server.hits(), 2 + 3, "two failures, then the module");
    assert_eq!(hello_answer(vessel.listener("main")).await.status, 200);
    assert_eq!(
        stat(vessel.admin(), "wasm_remote.fetch_success").await,
        Some(1)
    );
}

/// A network wasm filter with remote code: fetched and run before the
/// connection manager; fail-open and unreachable, it is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_filter_with_remote_code() {
    let module = std::fs::read(guest("tcp_rewrite")).unwrap();
    let sha = sha256_hex(&module);
    let server = ModuleServer::start(module, 0).await;
    let dir = fresh_dir("network");
    let gone = RefusingPort::new();

    // (The second run has its own, empty cache: no copy to fall back on.)
    for (modules, fail_open, body, cache) in [
        (server.addr, false, "the SECRET path\n", "cache-1"),
        (gone.addr(), true, "the secret path\n", "cache-2"),
    ] {
        let cache = dir.join(cache);
        let config = network_config(modules, &sha, fail_open);
        let mut vessel = spawn(&dir, &cache, &config);
        vessel.wait_ready().await;
        let a = send(&client(), vessel.listener("main"), "/secret", &[]).await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (200, body),
            "{}",
            vessel.stderr()
        );
    }
    assert_eq!(server.hits(), 1);
}

fn network_config(modules: SocketAddr, sha: &str, fail_open: bool) -> String {
    Bootstrap::new()
        .listener(
            Listener::new("main")
                .stat_prefix("ingress")
                .network_filter(
                    WasmFilter::new("rewrite", guest("tcp_rewrite"))
                        .configuration("upstream secret SECRET")
                        .code(remote_code(sha, 0))
                        .field("fail_open", json!(fail_open)),
                )
                .route(Route::prefix("/").direct(200, Some("the secret path\n"))),
        )
        .cluster(Cluster::new("modules").endpoint(modules))
        .to_yaml()
}

/// The same remote-code configs on real Envoy 1.40 (`VESSEL_ENVOY`), for
/// what vessel copies and where it differs (docs/envoy-config.md, "Remote
/// code"): the fetched module serves; with the server down and no
/// module, a fail-open filter is left out (traffic passes) and a
/// fail-closed one makes Envoy answer 503 where vessel refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_fetches_the_same_config() {
    let Some(envoy) = vessel_testkit::envoy_from_env("envoy_fetches_the_same_config") else {
        return;
    };
    let module = std::fs::read(guest("hello")).unwrap();
    let sha = sha256_hex(&module);
    let server = ModuleServer::start(module, 0).await;
    let up = upstream().await;
    let gone = RefusingPort::new();
    let dir = fresh_dir("envoy");
    let cases = [
        ("fetched", server.addr, hello(remote_code(&sha, 1))),
        (
            "down-open",
            gone.addr(),
            hello(remote_code(&sha, 0)).failure_policy("FAIL_OPEN"),
        ),
        ("down-closed", gone.addr(), hello(remote_code(&sha, 0))),
        (
            "wrong-digest",
            server.addr,
            hello(remote_code(&sha256_hex(b"other"), 0)),
        ),
        ("zero-timeout", server.addr, hello(zero_timeout(&sha))),
    ];
    let mut seen = Vec::new();
    for (name, modules, filter) in cases {
        let config = remote_config(up, modules, filter).to_yaml();
        let mut e = VesselProcess::start_envoy(
            &envoy,
            &dir.join(name),
            &config,
            &["--concurrency", "1", "-l", "warning"],
        );
        e.wait_ready().await;
        let a = hello_answer(e.listener("main")).await;
        seen.push((name, a.status, a.body));
    }
    eprintln!("{seen:?}");
    assert_eq!(
        seen,
        [
            ("fetched", 200, "Hello, World!\n".to_owned()),
            ("down-open", 200, "ok".to_owned()),
            ("down-closed", 503, String::new()),
            ("wrong-digest", 503, String::new()),
            ("zero-timeout", 200, "Hello, World!\n".to_owned()),
        ]
    );
}

/// A TLS module server (rustls, a certificate of `ca` for
/// `modules.test`, no client certificate asked): serves the module at
/// [`MODULE_PATH`], counts requests that got past the handshake.
async fn tls_module_server(
    ca: &vessel_testkit::certs::TestCa,
    module: Vec<u8>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = ca.server("modules", &["modules.test"]);
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.cert_der.clone())],
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let (h, module) = (hits.clone(), Bytes::from(module));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, h, module) = (acceptor.clone(), h.clone(), module.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = if req.uri().path() == MODULE_PATH {
                        (200, module.clone())
                    } else {
                        (404, Bytes::new())
                    };
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    (addr, hits)
}

/// The module cluster's `UpstreamTlsContext` (`sni`, the CA in `ca_file`):
/// the fetch speaks TLS and checks the server's chain; a CA that did not
/// sign it fails the fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_cluster_may_speak_tls() {
    let module = std::fs::read(guest("hello")).unwrap();
    let sha = sha256_hex(&module);
    let ca = vessel_testkit::certs::TestCa::new("module CA");
    let (addr, hits) = tls_module_server(&ca, module).await;
    let up = upstream().await;
    let dir = fresh_dir("tls");
    let ca_file = ca.write(&dir, "ca");
    let stranger = vessel_testkit::certs::TestCa::new("stranger").write(&dir, "stranger");
    let with_ca = |file: &Path| {
        config(up, hello(remote_code(&sha, 0))).cluster(
            Cluster::new("modules").endpoint(addr).field(
                "transport_socket",
                json!({
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        "sni": "modules.test",
                        "common_tls_context": {
                            "validation_context": { "trusted_ca": { "filename": file } },
                        },
                    },
                }),
            ),
        )
    };

    let mut vessel = spawn(&dir, &dir.join("cache-1"), &with_ca(&ca_file).to_yaml());
    vessel.wait_ready().await;
    let a = hello_answer(vessel.listener("main")).await;
    assert_eq!((a.status, a.body.as_str()), (200, "Hello, World!\n"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    drop(vessel);

    let mut vessel = spawn(&dir, &dir.join("cache-2"), &with_ca(&stranger).to_yaml());
    let err = start_up_fails(&mut vessel).await;
    assert!(err.contains("connection failed"), "{err}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "no request without a trusted server"
    );
}
