//! The second backend of the scenario runner: the same scenario file run
//! through a real `vessel run` process, with real loopback servers for the
//! upstream and the callout clusters and a real HTTP/2 client. The
//! observations are checked against the same `expect` keys as the
//! in-process driver, so one scenario pins both paths.
//!
//! Scenario features that only the in-process driver can express
//! (`properties`, `foreign_functions`, `ticks_before`, `buffer_limit`, gRPC
//! clusters) make [`run_file_via_vessel_run`] report the file as
//! unsupported instead of guessing.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::scenario::{CannedResponse, Scenario};
use super::{Error, Observation, ObservedMessage};

/// Why a scenario cannot run through `vessel run`.
pub fn unsupported(s: &Scenario) -> Option<&'static str> {
    if !s.properties.is_empty() {
        return Some("properties");
    }
    if !s.foreign_functions.is_empty() {
        return Some("foreign_functions");
    }
    if s.buffer_limit.is_some() {
        return Some("buffer_limit");
    }
    if s.streams.iter().any(|st| st.ticks_before > 0) {
        return Some("ticks_before");
    }
    if s.clusters
        .values()
        .any(|c| c.grpc_status.is_some() || c.timeout || c.reset)
    {
        // A real proxy turns a dead cluster into a 503 response, not the
        // response-less failure `reset` scripts; timeouts take real time.
        return Some("grpc_status, timeout or reset clusters");
    }
    None
}

type Recorded = Arc<Mutex<Vec<ObservedMessage>>>;

fn pairs(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn response_of(c: &CannedResponse) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(c.body.clone())));
    for (k, v) in &c.headers {
        if k == ":status" {
            if let Ok(s) = v.parse::<u16>().map(http::StatusCode::from_u16) {
                *resp.status_mut() = s.unwrap_or(http::StatusCode::OK);
            }
        } else if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), v.parse()) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

/// A loopback server answering the front of `answers` (or the last one) and
/// recording each request with Envoy-style pseudo-headers.
async fn canned_server(
    answers: Arc<Mutex<VecDeque<CannedResponse>>>,
    seen: Recorded,
) -> SocketAddr {
    let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else {
        return SocketAddr::from(([127, 0, 0, 1], 9));
    };
    let addr = listener
        .local_addr()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9)));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let answers = answers.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let answers = answers.clone();
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let collected = body.collect().await.ok();
                        let trailers = collected
                            .as_ref()
                            .and_then(|c| c.trailers().map(pairs))
                            .unwrap_or_default();
                        let body = collected.map(|c| c.to_bytes()).unwrap_or_default();
                        let mut headers = vec![
                            (":method".to_owned(), parts.method.to_string()),
                            (
                                ":path".to_owned(),
                                parts
                                    .uri
                                    .path_and_query()
                                    .map_or("/", |p| p.as_str())
                                    .to_owned(),
                            ),
                        ];
                        let authority =
                            parts.uri.authority().map(ToString::to_string).or_else(|| {
                                parts
                                    .headers
                                    .get(http::header::HOST)
                                    .and_then(|h| h.to_str().ok())
                                    .map(str::to_owned)
                            });
                        if let Some(a) = authority {
                            headers.push((":authority".to_owned(), a));
                        }
                        headers.extend(
                            pairs(&parts.headers)
                                .into_iter()
                                .filter(|(k, _)| k != "host"),
                        );
                        if let Ok(mut s) = seen.lock() {
                            s.push(ObservedMessage {
                                status: None,
                                headers,
                                body: String::from_utf8_lossy(&body).into_owned(),
                                trailers,
                            });
                        }
                        let answer = answers
                            .lock()
                            .ok()
                            .and_then(|a| a.front().cloned())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(response_of(&answer))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn bootstrap(
    s: &Scenario,
    wasm: &Path,
    name: &str,
    port: u16,
    upstream: SocketAddr,
    clusters: &[(String, SocketAddr)],
) -> String {
    let p = &s.plugin;
    let mut out = format!(
        r#"static_resources:
  listeners:
  - name: scenario
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: scenario
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: vessel_test_upstream }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                root_id: {root_id}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {config}
                vm_config:
                  vm_id: {vm_id}
                  runtime: envoy.wasm.runtime.v8
                  configuration:
                    "@type": type.googleapis.com/google.protobuf.StringValue
                    value: {vm_config}
                  code: {{ local: {{ filename: {wasm} }} }}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
"#,
        name = yaml_str(name),
        root_id = yaml_str(&p.root_id),
        vm_id = yaml_str(&p.vm_id),
        config = yaml_str(&p.configuration),
        vm_config = yaml_str(&p.vm_configuration),
        wasm = yaml_str(&wasm.to_string_lossy()),
    );
    let mut all = vec![("vessel_test_upstream".to_owned(), upstream)];
    all.extend(clusters.iter().cloned());
    for (cname, addr) in all {
        out.push_str(&format!(
            "  - name: {}\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: {}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
            yaml_str(&cname),
            yaml_str(&cname),
            addr.port()
        ));
    }
    out
}

/// `vessel run`'s `-l`: the guest level follows `plugin.log_level` (vessel
/// run gives guests the host's most verbose level).
fn log_filter(s: &Scenario) -> String {
    let level = match s
        .plugin
        .log_level
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("debug") => "debug",
        Some("info") => "info",
        Some("warn" | "warning") => "warn",
        Some("error" | "critical") => "error",
        _ => "trace",
    };
    format!("warn,vessel::guest={level}")
}

struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn guest_lines(raw: &[String]) -> (Vec<String>, Option<String>) {
    let mut logs: Vec<String> = Vec::new();
    let mut failure = None;
    let mut in_guest = false;
    for line in raw {
        if let Some(i) = line.find("] wasm log ") {
            let rest = &line[i + "] wasm log ".len()..];
            let msg = rest.split_once(": ").map_or(rest, |(_, m)| m);
            logs.push(msg.to_owned());
            in_guest = true;
        } else if line.contains(" vessel::vm] ") && line.contains("trapped") {
            failure.get_or_insert_with(|| line.clone());
            in_guest = false;
        } else if !line.starts_with('[') && in_guest {
            if let Some(last) = logs.last_mut() {
                last.push('\n');
                last.push_str(line);
            }
        } else {
            in_guest = false;
        }
    }
    (logs, failure)
}

/// Runs a scenario file through `vessel run` (the binary at `vessel`).
/// `Ok(None)` means the file uses a feature this backend cannot express, or
/// its plugin fails to start (which `vessel run`, like Envoy, refuses).
pub fn run_file_via_vessel_run(
    vessel: &Path,
    path: &Path,
) -> Result<Option<Vec<Observation>>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let scenario: Scenario = serde_yaml::from_str(&text).map_err(|e| Error::Yaml {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if unsupported(&scenario).is_some() {
        return Ok(None);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let wasm: PathBuf =
        std::fs::canonicalize(dir.join(&scenario.plugin.wasm)).map_err(|e| Error::Io {
            path: dir.join(&scenario.plugin.wasm),
            message: format!("plugin.wasm: {e}"),
        })?;
    let name = scenario.plugin.name.clone().unwrap_or_else(|| {
        wasm.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    rt.block_on(async move { drive(vessel, path, &scenario, &wasm, &name).await })
}

/// `Ok(None)`: `vessel run` refused the plugin at start-up, as Envoy refuses
/// a config whose plugin fails to start (the in-process driver instead fails
/// every stream closed).
async fn drive(
    vessel: &Path,
    path: &Path,
    scenario: &Scenario,
    wasm: &Path,
    name: &str,
) -> Result<Option<Vec<Observation>>, Error> {
    let io = |message: String| Error::Io {
        path: path.to_owned(),
        message,
    };
    let answers = Arc::new(Mutex::new(VecDeque::new()));
    let seen: Recorded = Arc::default();
    let upstream = canned_server(answers.clone(), seen.clone()).await;
    let mut clusters = Vec::new();
    for (cname, canned) in &scenario.clusters {
        let redis = canned
            .redis_address()
            .map_err(|e| io(format!("{cname}: {e}")))?;
        if let (Some(addr), true) = (redis, canned.redis_flush) {
            super::runner::flush_redis(addr).map_err(io)?;
        }
        let addr = if let Some(addr) = redis {
            // A Redis cluster points at the real server.
            addr
        } else if canned.reset {
            // Nothing listens there: a connection failure.
            SocketAddr::from(([127, 0, 0, 1], free_port()))
        } else {
            let a = Arc::new(Mutex::new(VecDeque::from([canned.clone()])));
            canned_server(a, Arc::default()).await
        };
        clusters.push((cname.clone(), addr));
    }
    let port = free_port();
    let config = bootstrap(scenario, wasm, name, port, upstream, &clusters);
    let config_path = std::env::temp_dir().join(format!(
        "vessel-scenario-{}-{port}.yaml",
        std::process::id()
    ));
    std::fs::write(&config_path, config).map_err(|e| io(e.to_string()))?;
    let mut child = Command::new(vessel)
        .args(["run", "-c"])
        .arg(&config_path)
        .args(["--concurrency", "1", "-l", &log_filter(scenario)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io(format!("starting {}: {e}", vessel.display())))?;
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    if let Some(stderr) = child.stderr.take() {
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
    }
    let mut proc = Proc { child, lines };
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(front).await.is_err() {
        if let Ok(Some(_)) = proc.child.try_wait() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let log = proc.lines.lock().map(|l| l.join("\n")).unwrap_or_default();
            let _ = std::fs::remove_file(&config_path);
            if log.contains("cannot start the VM") {
                return Ok(None);
            }
            return Err(io(format!("vessel run exited:\n{log}")));
        }
        if Instant::now() > deadline {
            let log = proc.lines.lock().map(|l| l.join("\n")).unwrap_or_default();
            return Err(io(format!("vessel run did not start listening:\n{log}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut out = Vec::new();
    let mut failure: Option<String> = None;
    for (index, stream) in scenario.streams.iter().enumerate() {
        // Start-up logs belong to the first stream, as in the in-process driver.
        let start = if index == 0 {
            0
        } else {
            proc.lines.lock().map_or(0, |l| l.len())
        };
        let before = seen.lock().map_or(0, |s| s.len());
        if let Ok(mut a) = answers.lock() {
            a.clear();
            a.push_back(stream.upstream.clone().unwrap_or_else(|| CannedResponse {
                headers: vec![(":status".into(), "200".into())],
                ..CannedResponse::default()
            }));
        }
        let get = |k: &str| {
            stream
                .request
                .headers
                .iter()
                .find(|(h, _)| h == k)
                .map(|(_, v)| v.clone())
        };
        let method = get(":method").unwrap_or_else(|| "GET".into());
        let p = get(":path").unwrap_or_else(|| "/".into());
        let authority = get(":authority").unwrap_or_else(|| "localhost".into());
        let mut req = Request::builder()
            .method(method.as_str())
            .uri(format!("http://{authority}{p}"));
        for (k, v) in &stream.request.headers {
            if !k.starts_with(':') {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let body = match (&stream.request.body, &stream.request.chunks) {
            (_, Some(c)) => c.concat(),
            (Some(b), None) => b.clone(),
            (None, None) => String::new(),
        };
        let mut obs = Observation::default();
        match req.body(Full::new(Bytes::from(body))) {
            Ok(mut request) => {
                // Send to the listener while keeping the scenario's authority.
                let uri: http::Uri = format!("http://{front}{p}")
                    .parse()
                    .map_err(|e| io(format!("{e}")))?;
                *request.uri_mut() = uri;
                request.headers_mut().insert(
                    http::header::HOST,
                    authority.parse().map_err(|e| io(format!("{e}")))?,
                );
                match tokio::time::timeout(Duration::from_secs(30), client.request(request)).await {
                    Ok(Ok(resp)) => {
                        let (parts, body) = resp.into_parts();
                        let mut headers =
                            vec![(":status".to_owned(), parts.status.as_str().to_owned())];
                        headers.extend(pairs(&parts.headers));
                        match body.collect().await {
                            Ok(c) => {
                                let trailers = c.trailers().map(pairs).unwrap_or_default();
                                obs.response = Some(ObservedMessage {
                                    status: Some(parts.status.as_u16()),
                                    headers,
                                    body: String::from_utf8_lossy(&c.to_bytes()).into_owned(),
                                    trailers,
                                });
                            }
                            Err(_) => obs.reset = true,
                        }
                    }
                    Ok(Err(_)) => obs.reset = true,
                    Err(_) => obs.stalled = Some("no response within 30 s".into()),
                }
            }
            Err(e) => return Err(io(format!("building the request: {e}"))),
        }
        // on_log/on_done/on_delete run when the response is done with.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let new: Vec<String> = proc
            .lines
            .lock()
            .map(|l| l[start.min(l.len())..].to_vec())
            .unwrap_or_default();
        let (logs, failed) = guest_lines(&new);
        obs.logs = logs;
        if failure.is_none() {
            failure = failed;
        }
        obs.vm_failure = failure.clone();
        obs.upstream_request = seen.lock().ok().and_then(|s| s.get(before).cloned());
        out.push(obs);
    }
    drop(proc);
    let _ = std::fs::remove_file(&config_path);
    Ok(Some(out))
}
