//! Helpers for the `vessel run` tests: the real binary on a typed
//! bootstrap (vessel-testkit) in a temp directory, its listeners on port 0,
//! a loopback upstream that keeps nothing, and keep-alive clients with
//! TCP_NODELAY.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
pub use vessel_testkit::bootstrap::{Bootstrap, Cluster, Limit, Listener, Route, WasmFilter};
pub use vessel_testkit::{VesselProcess, WAIT, eventually_async as eventually, replace_file};

/// A guest of `spec-tests/guests` (built by `cargo xtask guests`).
pub fn guest(name: &str) -> PathBuf {
    built("spec-tests/guests", &format!("guest_{name}.wasm"))
}

/// A module of `examples/llm` (built by `cargo xtask guests`).
pub fn llm_filter(name: &str) -> PathBuf {
    built("examples/llm", &format!("llm_{name}.wasm"))
}

/// `file` in the wasm release output of the workspace at `dir`.
fn built(dir: &str, file: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir)
        .join("target/wasm32-wasip1/release")
        .join(file);
    assert!(
        p.exists(),
        "{} is missing; run `cargo xtask guests`",
        p.display()
    );
    p.canonicalize().unwrap()
}

/// The `vessel` binary the tests run: `VESSEL_BIN` when set (`cargo xtask
/// bench xds` points it at the release build), else this build's.
///
/// # Panics
/// If `VESSEL_BIN` names no file.
pub fn vessel_bin() -> PathBuf {
    match std::env::var_os("VESSEL_BIN").map(PathBuf::from) {
        Some(p) => {
            assert!(p.is_file(), "VESSEL_BIN={} is not a file", p.display());
            p
        }
        None => PathBuf::from(env!("CARGO_BIN_EXE_vessel")),
    }
}

/// Starts `vessel run` on `config` in a fresh directory named after
/// `name`, with `--concurrency <workers>` and a module cache in that
/// directory, and waits until it serves; its listeners are on port 0, their
/// addresses read back from the admin ([`VesselProcess::listener`]).
/// `--compilation cranelift`: these tests count requests per VM and look
/// at the cache, so a background switch from Winch must not happen under
/// them; `run::tiered_*` covers the default, tiered compilation.
pub async fn start_vessel(name: &str, config: &Bootstrap, workers: usize) -> VesselProcess {
    start_vessel_with(name, config, workers, &["--compilation", "cranelift"]).await
}

/// [`start_vessel`] with `extra` arguments in place of `--compilation
/// cranelift`.
pub async fn start_vessel_with(
    name: &str,
    config: &Bootstrap,
    workers: usize,
    extra: &[&str],
) -> VesselProcess {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vessel-reload-{name}"));
    let cache = dir.join("module-cache");
    let workers = workers.to_string();
    let cache = cache.to_string_lossy();
    let mut args = vec![
        "-l",
        "info",
        "--concurrency",
        &workers,
        "--module-cache-dir",
        &cache,
    ];
    args.extend_from_slice(extra);
    let mut vessel = VesselProcess::start(&vessel_bin(), &dir, &config.to_yaml(), &args);
    vessel.wait_ready().await;
    vessel
}

/// The Redis server `cargo xtask test` starts (`VESSEL_REDIS`), or `None`:
/// the test `test` is skipped (printed), and fails under `CI=true`.
#[allow(clippy::print_stderr)]
pub fn redis(test: &str) -> Option<SocketAddr> {
    match std::env::var("VESSEL_REDIS")
        .ok()
        .and_then(|a| a.parse().ok())
    {
        Some(a) => Some(a),
        None => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true needs VESSEL_REDIS (a redis-server address)"
            );
            eprintln!("skipped {test}: VESSEL_REDIS is not set");
            None
        }
    }
}

/// Sends one command to the Redis server at `addr` over a plain RESP
/// exchange and returns its reply's bulk strings: one (`None` for nil) for
/// a bulk reply, one per element for an array of them. Any other reply
/// fails the test.
pub fn redis_command(addr: SocketAddr, args: &[&str]) -> Vec<Option<String>> {
    use std::io::{BufRead, BufReader, Write};
    let mut tcp = std::net::TcpStream::connect(addr).expect("redis connects");
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut query = format!("*{}\r\n", args.len());
    for a in args {
        query.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    tcp.write_all(query.as_bytes()).unwrap();
    let mut reader = BufReader::new(tcp);
    let mut header = String::new();
    reader.read_line(&mut header).unwrap();
    match header.strip_prefix('*') {
        Some(n) => {
            let n: usize = n.trim().parse().expect("an array length");
            (0..n)
                .map(|_| {
                    header.clear();
                    reader.read_line(&mut header).unwrap();
                    bulk(&mut reader, &header, args)
                })
                .collect()
        }
        None => vec![bulk(&mut reader, &header, args)],
    }
}

/// The bulk string whose `$<len>` line is `header` (`None` for `$-1`).
fn bulk(reader: &mut impl std::io::Read, header: &str, args: &[&str]) -> Option<String> {
    let len: i64 = header
        .strip_prefix('$')
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{args:?} answered {header:?}"));
    let len = usize::try_from(len).ok()?;
    let mut value = vec![0; len + 2];
    reader.read_exact(&mut value).unwrap();
    value.truncate(len);
    Some(String::from_utf8_lossy(&value).into_owned())
}

/// A loopback upstream answering 200 `ok`; it keeps nothing.
pub async fn upstream() -> SocketAddr {
    vessel_testkit::servers::fixed().await
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive client with TCP_NODELAY.
pub fn client() -> TestClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(http)
}

/// What one response said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status; 0 if the connection or the body failed.
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One GET with optional headers, bounded by [`WAIT`].
pub async fn send(
    c: &TestClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    answer(c, req.body(Full::new(Bytes::new())).unwrap()).await
}

/// Sends `req` and reads the whole answer, bounded by [`WAIT`] (status 0
/// if the connection or the body failed).
pub async fn answer(c: &TestClient, req: http::Request<Full<Bytes>>) -> Answer {
    let failed = Answer {
        status: 0,
        headers: http::HeaderMap::new(),
        body: String::new(),
    };
    let Ok(Ok(resp)) = tokio::time::timeout(WAIT, c.request(req)).await else {
        return failed;
    };
    let (parts, body) = resp.into_parts();
    match tokio::time::timeout(WAIT, body.collect()).await {
        Ok(Ok(b)) => Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        },
        _ => failed,
    }
}

/// A request to the admin listener; returns (status, body).
pub async fn admin_request(
    admin: SocketAddr,
    method: &str,
    path: &str,
) -> Result<(u16, String), String> {
    vessel_testkit::admin_get(admin, method, path).await
}

/// `POST /reload`.
pub async fn post_reload(admin: SocketAddr) -> (u16, String) {
    tokio::time::timeout(WAIT, admin_request(admin, "POST", "/reload"))
        .await
        .expect("POST /reload timed out")
        .expect("POST /reload")
}

/// The value of `name` in `/stats`, if listed.
pub async fn stat(admin: SocketAddr, name: &str) -> Option<u64> {
    let (_, text) = admin_request(admin, "GET", "/stats").await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.parse().ok())
}

/// A bootstrap with one listener `main` (port 0) running `filter`,
/// routing everything to `upstream`, and an admin listener (port 0).
pub fn config(upstream: SocketAddr, filter: WasmFilter) -> Bootstrap {
    config_at(SocketAddr::from(([127, 0, 0, 1], 0)), upstream, filter)
}

/// [`config`] with the listener on `addr`.
pub fn config_at(addr: SocketAddr, upstream: SocketAddr, filter: WasmFilter) -> Bootstrap {
    Bootstrap::new()
        .listener(
            Listener::new("main")
                .addr(addr)
                .route(Route::prefix("/").to("backend"))
                .filter(filter),
        )
        .cluster(Cluster::new("backend").endpoint(upstream))
}

/// The wasm filter `misbehave` running `module` with the plugin
/// `configuration`.
pub fn plugin(module: &Path, configuration: &str) -> WasmFilter {
    WasmFilter::new("misbehave", module).configuration(configuration)
}
