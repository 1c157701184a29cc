//! Helpers for the `vessel run` reload and load tests: the real binary on a
//! config file in a temp directory, a loopback upstream that keeps nothing,
//! keep-alive clients with TCP_NODELAY, and the child's RSS.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn guest(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec-tests/guests/target/wasm32-wasip1/release")
        .join(format!("guest_{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing; run `cargo xtask guests`",
        p.display()
    );
    p.canonicalize().unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `vessel run` child on `dir/envoy.yaml`; killed when dropped.
pub struct Vessel {
    pub child: Child,
    pub dir: PathBuf,
    stderr: PathBuf,
}

impl Vessel {
    /// Writes `config` to a fresh directory and starts `vessel run` on it
    /// with `--concurrency <workers>` and a module cache in that directory.
    pub fn start(name: &str, config: &str, workers: usize) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vessel-reload-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        std::fs::write(dir.join("envoy.yaml"), config).unwrap();
        let stderr = dir.join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_vessel"))
            .args([
                "run",
                "-l",
                "info",
                "--concurrency",
                &workers.to_string(),
                "--module-cache-dir",
            ])
            .arg(dir.join("module-cache"))
            .arg("-c")
            .arg(dir.join("envoy.yaml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Self { child, dir, stderr }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Replaces the config file (write + rename, as editors and config
    /// management do).
    pub fn write_config(&self, config: &str) {
        replace_file(&self.dir.join("envoy.yaml"), config.as_bytes());
    }

    /// Waits (bounded) until the admin listener answers `/ready`.
    pub async fn wait_ready(&mut self, admin: SocketAddr) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("vessel exited early ({status}):\n{}", self.stderr());
            }
            if let Ok(Ok((200, _))) = tokio::time::timeout(
                Duration::from_secs(2),
                admin_request(admin, "GET", "/ready"),
            )
            .await
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The child's resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Vessel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `bytes` next to `path` and renames it over `path`.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A loopback upstream answering 200 `ok`; it keeps nothing.
pub async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |_req: http::Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
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
    let req = req.body(Full::new(Bytes::new())).unwrap();
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
) -> Result<(u16, String), hyper_util::client::legacy::Error> {
    let c: TestClient = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = c.request(req).await?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
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

/// A bootstrap with one listener on `port` running one wasm filter named
/// `misbehave` (`plugin` is the YAML of its `config` minus name and
/// vm_config), routing everything to `upstream`, and an admin listener.
pub fn config(port: u16, admin: u16, upstream: SocketAddr, module: &Path, plugin: &str) -> String {
    config_vm(port, admin, upstream, module, "", plugin)
}

/// [`config`] with `vm_extra` (YAML lines, e.g. `vessel_limits: {...}`)
/// added to the filter's `vm_config`.
pub fn config_vm(
    port: u16,
    admin: u16,
    upstream: SocketAddr,
    module: &Path,
    vm_extra: &str,
    plugin: &str,
) -> String {
    let vm_extra: String = vm_extra
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("                  {}\n", l.trim_start()))
        .collect();
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: backend }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: misbehave
                vm_config:
                  code: {{ local: {{ filename: "{module}" }} }}
{vm_extra}{plugin}
          - name: envoy.filters.http.router
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {up} }}
"#,
        module = module.display(),
        up = upstream.port(),
    )
}

/// The `config` fields of [`config`]'s filter: a plugin configuration
/// string and extra lines (indented to match).
pub fn plugin(configuration: &str, extra: &str) -> String {
    let mut s = format!(
        "                configuration:\n                  \"@type\": type.googleapis.com/google.protobuf.StringValue\n                  value: \"{configuration}\"\n"
    );
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str("                ");
        s.push_str(line.trim_start());
        s.push('\n');
    }
    s
}

/// Waits (bounded) until `f` returns true.
pub async fn eventually<F, Fut>(what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}
