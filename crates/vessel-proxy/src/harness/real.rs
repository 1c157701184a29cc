//! A scenario run through a real proxy process: `vessel run`
//! ([`super::via_run`]) or Envoy ([`super::envoy`]). Both get the same
//! generated Envoy bootstrap (one listener with the wasm filter and the
//! router; one cluster for the upstream and one per scenario `clusters`
//! entry), the same loopback servers (`harness/servers.rs`) and the same
//! HTTP/2 client; only the command line and the shape of the guest log
//! lines differ ([`Proxy`]).
//!
//! The router has `suppress_envoy_headers: true`: its
//! `x-envoy-upstream-service-time` holds a timing, whose number of digits
//! would change the header map sizes guests log from run to run (callout
//! answers still carry it, as in Envoy; its value is masked in log lines).
//!
//! Clusters: a `timeout: true` cluster is a server that never answers, an
//! `unreachable: true` cluster a port bound by a socket that never listens
//! (connections are refused; no one can take the port), a `grpc_status`
//! cluster an HTTP/2 gRPC server answering every unary call with its
//! canned message or status (`servers::Behaviour::Grpc`). Files with
//! `reset: true` clusters or `only_in_process` do not run here.
//!
//! The listener and the admin listener are on `port_value: 0`: each proxy
//! binds what the system gives it and writes the admin address to the
//! file of `--admin-address-path` (both Envoy and `vessel run` have the
//! flag); the run waits for the admin's `/ready` and reads the listener's
//! port from `/listeners?format=json`, so no port is picked in advance
//! (and none can be taken by someone else before the proxy binds it).
//!
//! Every process is bounded in time: start-up, each request and each
//! scenario have deadlines, and a guard kills the process (and removes its
//! files) when the run ends, whether it succeeded, failed or panicked.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioExecutor;
use vessel_host::FailurePolicy;

use super::scenario::{CannedResponse, PluginSpec, Scenario, Stream};
use super::servers::{self, Behaviour, Recorded, Scripted};
use super::{Error, Observation, ObservedMessage};

/// How long a proxy may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stream may go without a response before it counts as stalled.
const STREAM_TIMEOUT: Duration = Duration::from_secs(8);
/// How long the guest's end-of-stream logs (`on_log`, `on_done`,
/// `on_delete`) may take to appear after the response.
const SETTLE: Duration = Duration::from_millis(150);

/// A proxy binary that scenarios run through.
#[derive(Debug, Clone, Copy)]
pub enum Proxy<'a> {
    /// `vessel run`: the path of the `vessel` binary.
    VesselRun(&'a Path),
    /// Envoy with the V8 runtime: the path of the `envoy` binary.
    Envoy(&'a Path),
}

/// The outcome of a scenario file on a real proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// One observation per stream.
    Observed(Vec<Observation>),
    /// The scenario cannot run on this proxy, and why.
    Skipped(String),
}

/// Scenario features no real proxy can be driven to reproduce.
fn unsupported_anywhere(s: &Scenario) -> Option<String> {
    if let Some(why) = &s.only_in_process {
        return Some(format!("runs only in-process: {why}"));
    }
    if !s.properties.is_empty() {
        return Some("uses properties".into());
    }
    if !s.foreign_functions.is_empty() {
        return Some("uses foreign_functions".into());
    }
    if s.streams.iter().any(|st| st.ticks_before > 0) {
        return Some("uses ticks_before".into());
    }
    if s.clusters.values().any(|c| c.reset) {
        return Some(
            "uses `reset: true` clusters (no real proxy resets a callout on cue; \
             `unreachable: true` is the connection failure both proxies show)"
                .into(),
        );
    }
    None
}

impl Proxy<'_> {
    /// Why a scenario cannot run on this proxy, if it cannot.
    pub fn unsupported(&self, s: &Scenario) -> Option<String> {
        if let Some(why) = unsupported_anywhere(s) {
            return Some(why);
        }
        match self {
            // Per-VM limits have no field in Envoy's `PluginConfig` or
            // `VmConfig`; the generated bootstrap is Envoy's, so it has no
            // place for them either.
            Proxy::VesselRun(_) if has_limits(s) => Some(
                "plugin.limits: the generated bootstrap is an Envoy bootstrap, and Envoy has no per-VM limit fields".into(),
            ),
            Proxy::Envoy(_) if has_limits(s) => {
                Some("plugin.limits: Envoy has no per-VM memory, CPU-time or fuel limit".into())
            }
            Proxy::Envoy(_) if has_hidden(s) => Some(
                "plugin.hidden: Envoy cannot hide headers or properties from a plugin \
                 (vessel's `vm_config.vessel_hidden`, which Envoy rejects)"
                    .into(),
            ),
            Proxy::Envoy(_) if tiny_reload_base(s) => Some(
                "reload_backoff.base_ms 1: Envoy 1.40 divides by zero computing the jitter of a 1 ms backoff (SIGFPE)".into(),
            ),
            _ => None,
        }
    }

    fn command(&self, config: &Path, log: &Path, admin: &Path, s: &Scenario) -> Command {
        let level = level_of(s);
        match self {
            Proxy::VesselRun(bin) => {
                let mut cmd = Command::new(bin);
                let level = match level {
                    "warning" => "warn",
                    "critical" => "error",
                    l => l,
                };
                // Not tiered: when the module cache has no Cranelift build
                // yet, a tiered `vessel run` swaps new VMs in while the
                // scenario runs, and the guest's state starts over there
                // (DEVIATIONS.md A9): a scenario compares one VM's life
                // with Envoy's, whatever the cache holds.
                cmd.args(["run", "-c"])
                    .arg(config)
                    .args(["--compilation", "cranelift"])
                    .args(["--concurrency", "1", "-l"])
                    .arg(format!("warn,vessel::guest={level}"))
                    .arg("--admin-address-path")
                    .arg(admin)
                    .stdout(Stdio::null());
                match std::fs::File::create(log) {
                    Ok(f) => cmd.stderr(f),
                    Err(_) => cmd.stderr(Stdio::null()),
                };
                cmd
            }
            Proxy::Envoy(bin) => {
                let mut cmd = Command::new(bin);
                cmd.arg("-c")
                    .arg(config)
                    .args(["--concurrency", "1", "--base-id"])
                    .arg(unique_base_id().to_string())
                    .args(["-l", "warning", "--component-log-level"])
                    .arg(format!("wasm:{level}"))
                    .args(["--log-format", super::envoy::LOG_FORMAT, "--log-path"])
                    .arg(log)
                    // Flush the log file often, so each stream's lines are
                    // on disk when the stream is done.
                    .args(["--file-flush-interval-msec", "10"])
                    .arg("--admin-address-path")
                    .arg(admin)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                cmd
            }
        }
    }

    /// The guest's log lines among the proxy's log lines, and the first VM
    /// failure they report.
    fn guest_lines(&self, raw: &[String]) -> (Vec<String>, Option<String>) {
        match self {
            Proxy::VesselRun(_) => super::via_run::guest_lines(raw),
            Proxy::Envoy(_) => super::envoy::guest_lines(raw),
        }
    }

    /// The proxy refused the plugin at start-up (as Envoy refuses a config
    /// whose plugin fails to start).
    fn refused(&self, log: &str) -> bool {
        match self {
            Proxy::VesselRun(_) => log.contains("cannot start the VM"),
            Proxy::Envoy(_) => super::envoy::refused(log),
        }
    }
}

/// A filter of the scenario sets `limits`.
fn has_limits(s: &Scenario) -> bool {
    s.chain()
        .unwrap_or_default()
        .iter()
        .any(|p| p.limits.as_ref().is_some_and(|l| !l.is_empty()))
}

/// A filter of the scenario sets `hidden`.
fn has_hidden(s: &Scenario) -> bool {
    s.chain()
        .unwrap_or_default()
        .iter()
        .any(|p| p.hidden.is_some())
}

/// A FAIL_RELOAD filter with a 1 ms `reload_backoff.base_ms`.
fn tiny_reload_base(s: &Scenario) -> bool {
    s.chain().unwrap_or_default().iter().any(|p| {
        p.reload_backoff.is_some()
            && matches!(p.policy(), Ok(FailurePolicy::FailReload(b)) if b.base_interval < Duration::from_millis(2))
    })
}

/// The Envoy fields of a filter's `failure_policy`, `allowed_capabilities`
/// and `allow_on_headers_stop_iteration` (in `config`, indented for it) and
/// `environment` (in `vm_config`), and vessel's `vessel_hidden` (in
/// `vm_config`; only `vessel run` gets a scenario that has it, see
/// [`Proxy::unsupported`]).
fn policy_yaml(f: &Filter<'_>) -> (String, String) {
    let p = f.spec;
    let mut config = String::new();
    if p.failure_policy.is_some() {
        config.push_str(&format!(
            "                failure_policy: {}\n",
            f.policy.envoy_name()
        ));
    }
    if let (Some(_), FailurePolicy::FailReload(b)) = (&p.reload_backoff, f.policy) {
        // Absent, Envoy's default (1 s base, 10 s max) is also vessel's.
        config.push_str(&format!(
            "                reload_config: {{ backoff: {{ base_interval: {}s, max_interval: {}s }} }}\n",
            b.base_interval.as_secs_f64(),
            b.max_interval.as_secs_f64()
        ));
    }
    if let Some(caps) = &p.allowed_capabilities {
        config.push_str("                capability_restriction_config:\n");
        if caps.is_empty() {
            config.push_str("                  allowed_capabilities: {}\n");
        } else {
            config.push_str("                  allowed_capabilities:\n");
            for c in caps {
                config.push_str(&format!("                    {}: {{}}\n", yaml_str(c)));
            }
        }
    }
    if p.allow_on_headers_stop_iteration {
        // A field of `PluginConfig` (Envoy >= 1.33), as `failure_policy`.
        config.push_str("                allow_on_headers_stop_iteration: true\n");
    }
    let mut vm = String::new();
    if let Some(env) = &p.environment {
        vm.push_str("                  environment_variables:\n");
        if !env.host_env_keys.is_empty() {
            let keys: Vec<String> = env.host_env_keys.iter().map(|k| yaml_str(k)).collect();
            vm.push_str(&format!(
                "                    host_env_keys: [{}]\n",
                keys.join(", ")
            ));
        }
        if !env.key_values.is_empty() {
            vm.push_str("                    key_values:\n");
            for (k, v) in &env.key_values {
                vm.push_str(&format!(
                    "                      {}: {}\n",
                    yaml_str(k),
                    yaml_str(v)
                ));
            }
        }
    }
    if let Some(h) = &p.hidden {
        vm.push_str("                  vessel_hidden:\n");
        for (key, list) in [
            ("request_headers", &h.request_headers),
            ("response_headers", &h.response_headers),
            ("properties", &h.properties),
        ] {
            let items: Vec<String> = list.iter().map(|i| yaml_str(i)).collect();
            vm.push_str(&format!(
                "                    {key}: [{}]\n",
                items.join(", ")
            ));
        }
    }
    (config, vm)
}

/// Envoy's `--base-id` must differ between Envoys running at once (it names
/// the hot-restart shared memory): the process id and a counter.
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 1000;
    (std::process::id() % 100_000) * 1000 + n
}

/// Envoy's log levels, most verbose first.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warning", "error", "critical"];

/// The guest log level of the scenario, in Envoy's words. A real proxy has
/// one level for the guest lines of every filter (Envoy's `wasm` logger):
/// for a chain, the most verbose level any of its filters asks for.
fn level_of(s: &Scenario) -> &'static str {
    let rank = |p: &PluginSpec| match p
        .log_level
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("debug") => 1,
        Some("info") => 2,
        Some("warn" | "warning") => 3,
        Some("error") => 4,
        Some("critical") => 5,
        _ => 0,
    };
    let min = s.chain().unwrap_or_default().iter().map(rank).min();
    LEVELS[min.unwrap_or(0)]
}

pub(crate) fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A stream of the scenario has request or response trailers: the client
/// and the upstream then speak HTTP/2 (HTTP/1.1 elsewhere).
fn has_trailers(s: &Scenario) -> bool {
    s.streams.iter().any(|st| {
        st.request.trailers.is_some()
            || st.upstream.as_ref().is_some_and(|u| !u.trailers.is_empty())
    })
}

/// One filter of a generated bootstrap: an entry of the scenario's chain,
/// with its module's absolute path and its plugin name.
#[derive(Debug, Clone)]
pub(crate) struct Filter<'a> {
    /// The scenario's entry.
    pub(crate) spec: &'a PluginSpec,
    /// Its failure policy, with the `reload_backoff` of a FAIL_RELOAD.
    pub(crate) policy: FailurePolicy,
    /// The module, absolute.
    pub(crate) wasm: PathBuf,
    /// `name`, else the module's file stem.
    pub(crate) name: String,
}

/// The filters of a scenario's chain, each module resolved against `dir`
/// (the scenario file's folder).
pub(crate) fn filters<'a>(s: &'a Scenario, path: &Path) -> Result<Vec<Filter<'a>>, Error> {
    let chain = s.chain().map_err(|(key, message)| Error::Invalid {
        path: path.to_owned(),
        key,
        message,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    chain
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let wasm = std::fs::canonicalize(dir.join(&spec.wasm)).map_err(|e| Error::Io {
                path: dir.join(&spec.wasm),
                message: format!("{}.wasm: {e}", s.plugin_key(i)),
            })?;
            let name = spec.name.clone().unwrap_or_else(|| {
                wasm.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            let policy = spec.policy().map_err(|(key, message)| Error::Invalid {
                path: path.to_owned(),
                key: format!("{}.{key}", s.plugin_key(i)),
                message,
            })?;
            Ok(Filter {
                spec,
                policy,
                wasm,
                name,
            })
        })
        .collect()
}

/// One `envoy.filters.http.wasm` entry of `http_filters`.
fn wasm_filter_yaml(f: &Filter<'_>) -> String {
    let p = f.spec;
    let (policy, vm_env) = policy_yaml(f);
    format!(
        r#"          - name: envoy.filters.http.wasm
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
{vm_env}{policy}"#,
        name = yaml_str(&f.name),
        root_id = yaml_str(&p.root_id),
        vm_id = yaml_str(&p.vm_id),
        config = yaml_str(&p.configuration),
        vm_config = yaml_str(&p.vm_configuration),
        wasm = yaml_str(&f.wasm.to_string_lossy()),
    )
}

/// The name of the generated bootstrap's listener.
const LISTENER: &str = "scenario";

/// The generated Envoy bootstrap of a scenario: one listener whose
/// `http_filters` are the chain's wasm filters, in order, then the router;
/// it and the admin listener on `port_value: 0`.
pub(crate) fn bootstrap(
    s: &Scenario,
    filters: &[Filter<'_>],
    upstream: SocketAddr,
    clusters: &[(String, SocketAddr)],
    tls: Option<&super::tls::RunTls>,
) -> String {
    let mut out = String::from(
        "admin:\n  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }\n",
    );
    let wasm_filters: String = filters.iter().map(wasm_filter_yaml).collect();
    let limit = s
        .buffer_limit
        .map(|l| format!("    per_connection_buffer_limit_bytes: {l}\n"))
        .unwrap_or_default();
    // The route's name gives Envoy's `xds.route_name` and `route_name`.
    let route_name = s
        .route_name
        .as_ref()
        .map(|n| format!("name: {}\n                ", yaml_str(n)))
        .unwrap_or_default();
    // With `tls`: the TLS inspector, and the chain's transport socket.
    let listener_filters = tls.map_or("", |t| t.listener_filters());
    let transport = tls
        .map(|t| format!("transport_socket: {}\n      ", t.transport_socket()))
        .unwrap_or_default();
    out.push_str(&format!(
        r#"static_resources:
  listeners:
  - name: {LISTENER}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
{limit}{listener_filters}    filter_chains:
    - {transport}filters:
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
              - {route_name}match: {{ prefix: "/" }}
                route: {{ cluster: vessel_test_upstream }}
          http_filters:
{wasm_filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
  clusters:
"#
    ));
    // HTTP/1.1 to the clusters (Envoy's default), except HTTP/2 to the
    // upstream when a stream has trailers, so they pass both ways.
    let trailers = s.streams.iter().any(|st| {
        st.request.trailers.is_some()
            || st.upstream.as_ref().is_some_and(|u| !u.trailers.is_empty())
    });
    out.push_str(&clusters_yaml(s, upstream, trailers, clusters));
    out
}

/// One `envoy.filters.network.wasm` entry of a chain's `filters`: the
/// same plugin config as [`wasm_filter_yaml`], four columns to the left.
fn network_wasm_yaml(f: &Filter<'_>) -> String {
    wasm_filter_yaml(f)
        .lines()
        .map(|l| {
            let l = l.strip_prefix("    ").unwrap_or(l);
            let l = l.replace("envoy.filters.http.wasm", "envoy.filters.network.wasm");
            let l = l.replace(
                "envoy.extensions.filters.http.wasm.v3.Wasm",
                "envoy.extensions.filters.network.wasm.v3.Wasm",
            );
            format!("{l}\n")
        })
        .collect()
}

/// The generated Envoy bootstrap of a TCP scenario: one listener whose
/// chain is the scenario's network wasm filters, in order, then a
/// `tcp_proxy` to the upstream; it and the admin listener on
/// `port_value: 0`.
pub(crate) fn tcp_bootstrap(
    s: &Scenario,
    filters: &[Filter<'_>],
    upstream: SocketAddr,
    clusters: &[(String, SocketAddr)],
    tls: Option<&super::tls::RunTls>,
) -> String {
    let network: String = filters.iter().map(network_wasm_yaml).collect();
    // With `tls`: the TLS inspector, and the chain's transport socket.
    let listener_filters = tls.map_or("", |t| t.listener_filters());
    let transport = tls
        .map(|t| format!("transport_socket: {}\n      ", t.transport_socket()))
        .unwrap_or_default();
    let limit = s
        .buffer_limit
        .map(|l| format!("    per_connection_buffer_limit_bytes: {l}\n"))
        .unwrap_or_default();
    let mut out = format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: {LISTENER}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
{limit}{listener_filters}    filter_chains:
    - {transport}filters:
{network}      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: scenario
          cluster: vessel_test_upstream
  clusters:
"#
    );
    out.push_str(&clusters_yaml(s, upstream, false, clusters));
    out
}

/// The `clusters` entries of a generated bootstrap: `vessel_test_upstream`
/// at `upstream` (HTTP/2 if `upstream_h2`), then the scenario's clusters.
fn clusters_yaml(
    s: &Scenario,
    upstream: SocketAddr,
    upstream_h2: bool,
    clusters: &[(String, SocketAddr)],
) -> String {
    let mut out = String::new();
    let mut all = vec![("vessel_test_upstream".to_owned(), upstream, upstream_h2)];
    // gRPC clusters, and clusters whose answers have trailers, speak
    // HTTP/2 (trailers do not cross HTTP/1.1 to a client that did not ask).
    all.extend(clusters.iter().map(|(n, a)| {
        let h2 = s
            .clusters
            .get(n)
            .is_some_and(|c| c.grpc_status.is_some() || !c.trailers.is_empty());
        (n.clone(), *a, h2)
    }));
    for (cname, addr, h2) in all {
        let h2 = if h2 {
            "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n"
        } else {
            ""
        };
        out.push_str(&format!(
            "  - name: {n}\n    type: STATIC\n    connect_timeout: 1s\n{h2}    load_assignment:\n      cluster_name: {n}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }}\n",
            n = yaml_str(&cname),
            p = addr.port()
        ));
    }
    out
}

/// The running proxy and its files; dropping it kills the process and
/// removes the files.
struct Guard {
    child: Child,
    files: Vec<PathBuf>,
    log: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Guard {
    fn lines(&self) -> Vec<String> {
        std::fs::read(&self.log)
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits at least `SETTLE`, then until the log has not grown for two
    /// polls in a row (bounded by `SETTLE` × 8).
    async fn settle(&self) {
        let size = || std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let deadline = Instant::now() + SETTLE * 8;
        tokio::time::sleep(SETTLE).await;
        let mut last = size();
        let mut quiet = 0;
        while quiet < 2 && Instant::now() < deadline {
            tokio::time::sleep(SETTLE / 3).await;
            let now = size();
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
        }
    }
}

fn scratch(tag: &str, ext: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "vessel-scenario-{}-{}-{tag}.{ext}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Runs a scenario file through a real proxy.
pub fn run_file(proxy: Proxy<'_>, path: &Path) -> Result<Run, Error> {
    let scenario = Scenario::from_file(path)?;
    if let Some(why) = proxy.unsupported(&scenario) {
        return Ok(Run::Skipped(why));
    }
    let filters = filters(&scenario, path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    let result = rt.block_on(drive(proxy, path, &scenario, &filters));
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn drive(
    proxy: Proxy<'_>,
    path: &Path,
    scenario: &Scenario,
    filters: &[Filter<'_>],
) -> Result<Run, Error> {
    let io = |message: String| Error::Io {
        path: path.to_owned(),
        message,
    };
    scenario
        .check_tls()
        .map_err(|(key, message)| Error::Invalid {
            path: path.to_owned(),
            key,
            message,
        })?;
    // With `tls`: the certificates, written into this run's files.
    let tls = match (&scenario.tls, scenario.alpn()) {
        (Some(spec), Some(alpn)) => {
            let certs = super::tls::Certs::of(path, spec).map_err(io)?;
            Some(Arc::new(
                super::tls::RunTls::new(&certs, spec, alpn, scratch).map_err(io)?,
            ))
        }
        _ => None,
    };
    let tls_files = tls.as_ref().map(|t| t.files.clone()).unwrap_or_default();
    // Removes them if the run ends before the guard takes them.
    struct Remove(Vec<PathBuf>);
    impl Drop for Remove {
        fn drop(&mut self) {
            for f in &self.0 {
                let _ = std::fs::remove_file(f);
            }
        }
    }
    let _remove = Remove(tls_files.clone());
    let answers = Arc::new(Mutex::new(VecDeque::new()));
    let seen: Recorded = Arc::default();
    let upstream = servers::canned_server(answers.clone(), seen.clone(), Behaviour::Answer)
        .await
        .map_err(|e| io(format!("upstream server: {e}")))?;
    let mut clusters = Vec::new();
    // Bound, never listening: connections to them are refused.
    let mut refusing = Vec::new();
    for (cname, canned) in &scenario.clusters {
        let redis = canned
            .redis_address()
            .map_err(|e| io(format!("{cname}: {e}")))?;
        if let (Some(addr), true) = (redis, canned.redis_flush) {
            super::flush_redis(addr).map_err(io)?;
        }
        let addr = if let Some(addr) = redis {
            // A Redis cluster points at the real server.
            addr
        } else if canned.unreachable {
            // Nothing listens there: a connection failure.
            let (socket, addr) =
                servers::refusing_port().map_err(|e| io(format!("cluster `{cname}`: {e}")))?;
            refusing.push(socket);
            addr
        } else {
            let behaviour = if canned.timeout {
                Behaviour::Hang
            } else if let Some(status) = canned.grpc_status {
                Behaviour::Grpc(status)
            } else {
                Behaviour::Answer
            };
            let a = Arc::new(Mutex::new(VecDeque::from([canned.clone()])));
            servers::canned_server(a, Arc::default(), behaviour)
                .await
                .map_err(|e| io(format!("cluster `{cname}` server: {e}")))?
        };
        clusters.push((cname.clone(), addr));
    }
    // The TCP form: the proxy's upstream connections come to this
    // listener.
    let tcp_upstream = if scenario.is_tcp() {
        Some(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| io(format!("TCP upstream: {e}")))?,
        )
    } else {
        None
    };
    let config = match &tcp_upstream {
        Some(l) => {
            let addr = l.local_addr().map_err(|e| io(e.to_string()))?;
            tcp_bootstrap(scenario, filters, addr, &clusters, tls.as_deref())
        }
        None => bootstrap(scenario, filters, upstream, &clusters, tls.as_deref()),
    };
    let config_path = scratch("config", "yaml");
    let log_path = scratch("proxy", "log");
    let admin_path = scratch("admin", "txt");
    std::fs::write(&config_path, config).map_err(|e| io(e.to_string()))?;
    let child = proxy
        .command(&config_path, &log_path, &admin_path, scenario)
        .spawn()
        .map_err(|e| io(format!("starting {proxy:?}: {e}")))?;
    let mut files = vec![config_path, log_path.clone(), admin_path.clone()];
    files.extend(tls_files);
    let mut guard = Guard {
        child,
        files,
        log: log_path,
    };
    let front = match wait_ready(proxy, &mut guard, &admin_path).await? {
        Ready::Serving(front) => front,
        Ready::Refused(skipped) => return Ok(skipped),
    };
    if let Some(listener) = &tcp_upstream {
        let out = drive_connections(proxy, &guard, front, listener, scenario, tls.as_deref()).await;
        drop(guard);
        drop(refusing);
        return Ok(Run::Observed(out));
    }
    // Every request goes to the listener, whatever authority its URI names;
    // with `tls`, over a TLS connection.
    let connect_tls = tls.clone();
    let connector = tower::service_fn(move |_: http::Uri| {
        let tls = connect_tls.clone();
        Box::pin(async move {
            match tls {
                Some(t) => t.connect(front).await,
                None => tokio::net::TcpStream::connect(front)
                    .await
                    .map(|s| super::tls::Conn::Plain(hyper_util::rt::TokioIo::new(s))),
            }
        })
    });
    // HTTP/1.1, the common client; HTTP/2 when trailers must pass, or
    // when `tls.alpn` is `h2`.
    let h2 = match &tls {
        Some(t) => t.alpn == vessel_test::scenario::Alpn::H2,
        None => has_trailers(scenario),
    };
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build::<_, Scripted>(connector);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut out = Vec::new();
    let mut failure: Option<String> = None;
    for (index, stream) in scenario.streams.iter().enumerate() {
        // Start-up logs belong to the first stream, as in the in-process driver.
        let start = if index == 0 { 0 } else { guard.lines().len() };
        // The time that passes before the stream (the in-process clock
        // moves by as much); what the guest logs meanwhile is the stream's.
        if stream.wait_ms > 0 {
            tokio::time::sleep(Duration::from_millis(stream.wait_ms)).await;
        }
        let before = seen.lock().map_or(0, |s| s.len());
        if let Ok(mut a) = answers.lock() {
            a.clear();
            a.push_back(stream.upstream.clone().unwrap_or_else(|| CannedResponse {
                headers: vec![(":status".into(), "200".into())],
                ..CannedResponse::default()
            }));
        }
        let mut obs = send(&client, stream, scheme)
            .await
            .map_err(|e| io(format!("stream {}: {e}", index + 1)))?;
        guard.settle().await;
        let lines = guard.lines();
        let (logs, failed) = proxy.guest_lines(&lines[start.min(lines.len())..]);
        obs.logs = logs;
        if failure.is_none() {
            failure = failed;
        }
        obs.vm_failure = failure.clone();
        obs.upstream_request = seen.lock().ok().and_then(|s| s.get(before).cloned());
        out.push(obs);
    }
    drop(guard);
    drop(refusing);
    Ok(Run::Observed(out))
}

/// Runs the connections of a TCP-form scenario, one after another, each
/// with its own client and upstream sockets.
async fn drive_connections(
    proxy: Proxy<'_>,
    guard: &Guard,
    front: SocketAddr,
    upstream: &tokio::net::TcpListener,
    scenario: &Scenario,
    tls: Option<&super::tls::RunTls>,
) -> Vec<Observation> {
    use super::tcp_drive::{self, Step as S};
    use vessel_test::scenario::Step;
    let mut out = Vec::new();
    let mut failure: Option<String> = None;
    for (index, conn) in scenario.connections.iter().enumerate() {
        let start = if index == 0 { 0 } else { guard.lines().len() };
        let steps: Vec<S> = conn
            .steps
            .iter()
            .map(|step| match step {
                Step::ClientSend(t) => S::ClientSend(t.as_bytes().to_vec()),
                Step::UpstreamReceive(t) => S::UpstreamReceive(t.as_bytes().to_vec()),
                Step::UpstreamSend(t) => S::UpstreamSend(t.as_bytes().to_vec()),
                Step::ClientReceive(t) => S::ClientReceive(t.as_bytes().to_vec()),
                Step::ClientClose(_) => S::ClientClose,
                Step::UpstreamClose(_) => S::UpstreamClose,
                Step::ClientReceiveClose(_) => S::ClientReceiveClose,
                Step::UpstreamReceiveClose(_) => S::UpstreamReceiveClose,
                Step::SleepMs(ms) => S::Sleep(std::time::Duration::from_millis(*ms)),
            })
            .collect();
        let seen = tcp_drive::drive(front, upstream, &steps, tls).await;
        guard.settle().await;
        let lines = guard.lines();
        let (logs, failed) = proxy.guest_lines(&lines[start.min(lines.len())..]);
        if failure.is_none() {
            failure = failed;
        }
        out.push(Observation {
            logs,
            vm_failure: failure.clone(),
            connection: Some(vessel_test::ObservedConnection {
                upstream_received: String::from_utf8_lossy(&seen.upstream_received).into_owned(),
                client_received: String::from_utf8_lossy(&seen.client_received).into_owned(),
                upstream_closed: seen.upstream_closed_by_proxy,
                client_closed: seen.client_closed_by_proxy,
                step_failures: seen.failures,
            }),
            ..Observation::default()
        });
    }
    out
}

/// A proxy that started, or refused the plugin.
enum Ready {
    /// It serves; the address its scenario listener is bound to.
    Serving(SocketAddr),
    /// It refused the plugin at start-up.
    Refused(Run),
}

/// Waits until the proxy serves and returns where its listener is.
async fn wait_ready(
    proxy: Proxy<'_>,
    guard: &mut Guard,
    admin_path: &Path,
) -> Result<Ready, Error> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(_)) = guard.child.try_wait() {
            let log = guard.lines().join("\n");
            if proxy.refused(&log) {
                return Ok(Ready::Refused(Run::Skipped(
                    "the proxy refuses the plugin at start-up".into(),
                )));
            }
            return Err(Error::Io {
                path: admin_path.to_owned(),
                message: format!("{proxy:?} exited at start-up:\n{log}"),
            });
        }
        if Instant::now() > deadline {
            return Err(Error::Io {
                path: admin_path.to_owned(),
                message: format!(
                    "{proxy:?} did not become ready in {START_TIMEOUT:?}:\n{}",
                    guard.lines().join("\n")
                ),
            });
        }
        if let Some(front) = listener_address(admin_path).await {
            return Ok(Ready::Serving(front));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The scenario listener's address, once the admin `/ready` answers 200
/// (the listeners serve): read from `/listeners?format=json` on the admin
/// address the proxy wrote to `admin_path`. `None` while not there yet.
async fn listener_address(admin_path: &Path) -> Option<SocketAddr> {
    let admin: SocketAddr = std::fs::read_to_string(admin_path)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let (status, _) = admin_get(admin, "/ready").await?;
    if status != http::StatusCode::OK {
        return None;
    }
    let (_, body) = admin_get(admin, "/listeners?format=json").await?;
    crate::run::ListenersStatus::from_json(&body)
        .ok()?
        .address_of(LISTENER)
}

/// One bounded admin GET: its status and body.
async fn admin_get(admin: SocketAddr, path: &str) -> Option<(http::StatusCode, Bytes)> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let uri = format!("http://{admin}{path}").parse::<http::Uri>().ok()?;
    tokio::time::timeout(Duration::from_secs(2), async {
        let resp = client.get(uri).await.ok()?;
        let status = resp.status();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    })
    .await
    .ok()?
}

/// Sends one scripted request and observes the response.
async fn send<C>(
    client: &hyper_util::client::legacy::Client<C, Scripted>,
    stream: &Stream,
    scheme: &str,
) -> Result<Observation, String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
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
    let chunks: Vec<Bytes> = match (&stream.request.body, &stream.request.chunks) {
        (_, Some(c)) => c.iter().map(|s| Bytes::from(s.clone())).collect(),
        (Some(b), None) if !b.is_empty() => vec![Bytes::from(b.clone())],
        _ => Vec::new(),
    };
    // The connector sends it to the listener.
    let mut req = Request::builder()
        .method(method.as_str())
        .uri(format!("{scheme}://{authority}{p}"));
    for (k, v) in &stream.request.headers {
        if !k.starts_with(':') {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    let request = req
        .body(Scripted::new(chunks, stream.request.trailers.as_ref()))
        .map_err(|e| format!("building the request: {e}"))?;
    let mut obs = Observation::default();
    let deadline = tokio::time::Instant::now() + STREAM_TIMEOUT;
    match tokio::time::timeout_at(deadline, client.request(request)).await {
        Ok(Ok(resp)) => {
            let (parts, mut body) = resp.into_parts();
            let mut headers = vec![(":status".to_owned(), parts.status.as_str().to_owned())];
            headers.extend(servers::pairs(&parts.headers));
            let mut bytes = Vec::new();
            let mut trailers = Vec::new();
            let mut complete = true;
            loop {
                match tokio::time::timeout_at(deadline, body.frame()).await {
                    Ok(None) => break,
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(d) => bytes.extend_from_slice(&d),
                        Err(f) => {
                            if let Ok(t) = f.into_trailers() {
                                trailers = servers::pairs(&t);
                            }
                        }
                    },
                    Ok(Some(Err(_))) => {
                        obs.reset = true;
                        complete = false;
                        break;
                    }
                    Err(_) => {
                        obs.stalled = Some(format!("the body stalled for {STREAM_TIMEOUT:?}"));
                        complete = false;
                        break;
                    }
                }
            }
            if complete {
                obs.response = Some(ObservedMessage {
                    status: Some(parts.status.as_u16()),
                    headers,
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                    trailers,
                });
            }
        }
        Ok(Err(_)) => obs.reset = true,
        Err(_) => obs.stalled = Some(format!("no response within {STREAM_TIMEOUT:?}")),
    }
    Ok(obs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, FailurePolicy, ReloadBackoff, WasmCode};

    const CHAIN: &str = r#"
plugins:
  - wasm: a.wasm
    name: first
    root_id: r1
    vm_id: one
    configuration: "tag=a"
    failure_policy: FAIL_OPEN
    allow_on_headers_stop_iteration: true
  - wasm: b.wasm
    vm_id: two
    configuration: "tag=b"
    vm_configuration: "vm b"
    failure_policy: FAIL_RELOAD
    reload_backoff: { base_ms: 10, max_ms: 40 }
  - wasm: a.wasm
    name: third
    log_level: info
  - wasm: b.wasm
    name: fourth
    failure_policy: FAIL_RELOAD
streams: []
"#;

    /// A scratch folder, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The bootstrap of a scenario text whose modules `a.wasm` and
    /// `b.wasm` exist (the reader does not load them).
    fn chain_bootstrap(text: &str) -> (Dir, String) {
        let dir = Dir(scratch("chain", "d"));
        std::fs::create_dir_all(dir.path()).expect("scratch folder");
        for f in ["a.wasm", "b.wasm"] {
            std::fs::write(dir.path().join(f), b"\0asm").expect("write");
        }
        let file = dir.path().join("chain.yaml");
        let scenario: Scenario = Scenario::from_yaml(text).expect("scenario");
        let filters = filters(&scenario, &file).expect("filters");
        let upstream = SocketAddr::from(([127, 0, 0, 1], 9001));
        let yaml = bootstrap(&scenario, &filters, upstream, &[], None);
        (dir, yaml)
    }

    /// The bootstrap of a `plugins:` chain has one wasm filter per entry,
    /// in order, before the router, each with its own name, root_id, vm_id,
    /// configurations, failure policy and knob, and vessel's config reader
    /// (the one `vessel run` uses) accepts it.
    #[test]
    fn a_chain_becomes_wasm_filters_in_order() {
        let (dir, yaml) = chain_bootstrap(CHAIN);
        let b = config::parse(&yaml, dir.path()).expect("vessel run reads the bootstrap");
        let f = &b.listeners[0]
            .http_managers()
            .next()
            .expect("an HTTP connection manager")
            .1
            .wasm_filters;
        assert_eq!(f.len(), 4, "{yaml}");
        let names: Vec<&str> = f.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["first", "b", "third", "fourth"]);
        assert_eq!(f[0].root_id, "r1");
        assert_eq!(
            [
                f[0].vm_id.as_str(),
                f[1].vm_id.as_str(),
                f[2].vm_id.as_str()
            ],
            ["one", "two", ""]
        );
        assert_eq!(f[0].configuration, b"tag=a");
        assert_eq!(f[1].configuration, b"tag=b");
        assert_eq!(f[1].vm_configuration, b"vm b");
        assert_eq!(f[0].failure_policy, FailurePolicy::FailOpen);
        let ms = Duration::from_millis;
        assert_eq!(
            f[1].failure_policy,
            FailurePolicy::FailReload(ReloadBackoff::new(ms(10), ms(40)))
        );
        assert_eq!(f[2].failure_policy, FailurePolicy::FailClosed);
        // No `reload_backoff`: Envoy's default, which is vessel's too.
        assert_eq!(
            f[3].failure_policy,
            FailurePolicy::FailReload(ReloadBackoff::default())
        );
        let knobs: Vec<bool> = f
            .iter()
            .map(|w| w.allow_on_headers_stop_iteration)
            .collect();
        assert_eq!(knobs, [true, false, false, false]);
        let code = |w: &config::WasmFilter| match &w.code {
            WasmCode::File(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            WasmCode::Inline(_) | WasmCode::Remote(_) | WasmCode::Fetched { .. } => None,
        };
        assert_eq!(code(&f[0]).as_deref(), Some("a.wasm"));
        assert_eq!(code(&f[1]).as_deref(), Some("b.wasm"));
        assert_eq!(code(&f[2]).as_deref(), Some("a.wasm"));
    }

    /// `plugin:` is a chain of one; a file with both keys, or neither, is
    /// refused with the key named.
    #[test]
    fn plugin_is_a_chain_of_one_and_plugins_excludes_it() {
        let (dir, yaml) =
            chain_bootstrap("plugin: { wasm: a.wasm, configuration: one }\nstreams: []\n");
        let b = config::parse(&yaml, dir.path()).expect("bootstrap");
        assert_eq!(
            b.listeners[0]
                .http_managers()
                .next()
                .expect("an HTTP connection manager")
                .1
                .wasm_filters
                .len(),
            1
        );
        assert_eq!(
            b.listeners[0]
                .http_managers()
                .next()
                .expect("an HTTP connection manager")
                .1
                .wasm_filters[0]
                .name,
            "a"
        );
        for (text, want) in [
            (
                "plugin: { wasm: a.wasm }\nplugins: [{ wasm: b.wasm }]\nstreams: []\n",
                "plugin, plugins",
            ),
            ("plugins: []\nstreams: []\n", "plugins"),
            ("streams: []\n", "plugin"),
        ] {
            let scenario: Scenario = Scenario::from_yaml(text).expect("parses");
            match filters(&scenario, Path::new("x.yaml")) {
                Err(Error::Invalid { key, .. }) => assert_eq!(key, want),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    /// The listener's address is read from Envoy's `ListenersStatus` JSON
    /// as Envoy 1.40 prints it, by listener name; a port of 0 (not bound
    /// yet) or another name is not an address.
    #[test]
    fn the_listener_address_comes_from_envoys_listeners_json() {
        let json = br#"{
 "listener_statuses": [
  { "name": "other", "local_address": { "socket_address": { "address": "127.0.0.1", "port_value": 1 } } },
  { "name": "scenario", "local_address": { "socket_address": { "address": "127.0.0.1", "port_value": 41023 } } }
 ]
}"#;
        let status = crate::run::ListenersStatus::from_json(json).expect("parses");
        assert_eq!(
            status.address_of(LISTENER),
            Some(SocketAddr::from(([127, 0, 0, 1], 41023)))
        );
        assert_eq!(status.address_of("missing"), None);
        let unbound = br#"{"listener_statuses":[{"name":"scenario","local_address":{"socket_address":{"address":"127.0.0.1","port_value":0}}}]}"#;
        let status = crate::run::ListenersStatus::from_json(unbound).expect("parses");
        assert_eq!(status.address_of(LISTENER), None);
        assert!(crate::run::ListenersStatus::from_json(b"not json").is_err());
    }

    /// A `tls` scenario's bootstrap has the TLS inspector when asked and a
    /// `DownstreamTlsContext` with the run's certificate files (the CA and
    /// `require_client_certificate` only with a client certificate), and
    /// vessel's config reader accepts it; without `tls` there is neither.
    #[test]
    fn a_tls_scenario_gets_a_tls_listener() {
        let dir = Dir(scratch("tls", "d"));
        std::fs::create_dir_all(dir.path()).expect("scratch folder");
        std::fs::write(dir.path().join("a.wasm"), b"\0asm").expect("write");
        let file = dir.path().join("tls.yaml");
        let upstream = SocketAddr::from(([127, 0, 0, 1], 9001));
        for (tls, inspector, mtls) in [
            (
                "{ sni: a.test, client_certificate: true, inspector: true }",
                true,
                true,
            ),
            ("{ alpn: h2 }", false, false),
        ] {
            let text = format!("plugin: {{ wasm: a.wasm }}\ntls: {tls}\nstreams: []\n");
            let scenario = Scenario::from_yaml(&text).expect("scenario");
            let spec = scenario.tls.as_ref().expect("tls");
            let certs = super::super::tls::Certs::of(&file, spec).expect("certificates");
            let alpn = scenario.alpn().expect("an ALPN protocol");
            let run = super::super::tls::RunTls::new(&certs, spec, alpn, |t, e| {
                dir.path().join(format!("{tls}-{t}.{e}"))
            })
            .expect("the run's files and client");
            let filters = filters(&scenario, &file).expect("filters");
            let yaml = bootstrap(&scenario, &filters, upstream, &[], Some(&run));
            let b = config::parse(&yaml, dir.path()).expect("vessel run reads it");
            let l = &b.listeners[0];
            assert_eq!(l.tls_inspector, inspector, "{yaml}");
            let t = l.filter_chains[0].tls.as_ref().expect("a TLS chain");
            assert_eq!(t.require_client_certificate, mtls, "{yaml}");
            assert_eq!(t.common.trusted_ca.is_some(), mtls, "{yaml}");
            assert_eq!(t.common.alpn_protocols, ["h2", "http/1.1"]);
            assert_eq!(t.common.certificates.len(), 1);
        }
        let plain =
            Scenario::from_yaml("plugin: { wasm: a.wasm }\nstreams: []\n").expect("scenario");
        let filters = filters(&plain, &file).expect("filters");
        let yaml = bootstrap(&plain, &filters, upstream, &[], None);
        let b = config::parse(&yaml, dir.path()).expect("vessel run reads it");
        assert!(!b.listeners[0].tls_inspector);
        assert!(b.listeners[0].filter_chains[0].tls.is_none());
    }

    /// One log level serves every filter of a chain on a real proxy: the
    /// most verbose one.
    #[test]
    fn a_chain_logs_at_its_most_verbose_level() {
        let scenario: Scenario = Scenario::from_yaml(CHAIN).expect("scenario");
        assert_eq!(level_of(&scenario), "trace");
        let quiet: Scenario = Scenario::from_yaml(
            "plugins: [{ wasm: a, log_level: warn }, { wasm: b, log_level: info }]\nstreams: []\n",
        )
        .expect("scenario");
        assert_eq!(level_of(&quiet), "info");
    }
}
