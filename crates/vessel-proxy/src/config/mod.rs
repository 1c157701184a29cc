//! The Envoy-config reader of `vessel run -c envoy.yaml`.
//!
//! Reads the subset of an Envoy v3 bootstrap YAML needed to serve wasm
//! filters: static listeners whose filter chains (matched on destination
//! port and SNI) end in an HTTP connection manager (routes,
//! `envoy.filters.http.wasm` filters, the router) or a `tcp_proxy`, after
//! optional `envoy.filters.network.wasm` filters; static clusters, the
//! admin address and the node. The wasm part follows Envoy's
//! `envoy.extensions.wasm.v3.PluginConfig`/`VmConfig` (ABI reference §9),
//! including the failure policy (§6.6) and capability restriction (§6.5).
//!
//! Every key of the document is checked: a key outside the supported subset
//! is an error naming its full path, with the keys supported there, e.g.
//!
//! ```text
//! static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]
//!   .typed_config.config.vm_config.allow_precompiled: not supported; supported keys here:
//!   vm_id, runtime, code, configuration, environment_variables
//! ```
//!
//! Fields that are accepted but have no effect in vessel are listed in
//! `docs/envoy-config.md`, which documents the whole subset.
//!
//! ```
//! use std::path::Path;
//! let yaml = r#"
//! static_resources:
//!   listeners:
//!   - name: main
//!     address: { socket_address: { address: 127.0.0.1, port_value: 10000 } }
//!     filter_chains:
//!     - filters:
//!       - name: envoy.filters.network.http_connection_manager
//!         typed_config:
//!           "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
//!           stat_prefix: ingress
//!           route_config:
//!             virtual_hosts:
//!             - name: all
//!               domains: ["*"]
//!               routes:
//!               - match: { prefix: "/" }
//!                 direct_response: { status: 200, body: { inline_string: "hi" } }
//!           http_filters:
//!           - name: envoy.filters.http.wasm
//!             typed_config:
//!               "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
//!               config:
//!                 root_id: hello
//!                 vm_config: { code: { local: { filename: hello.wasm } } }
//!           - name: envoy.filters.http.router
//! "#;
//! let boot = vessel_proxy::config::parse(yaml, Path::new("/etc/vessel")).unwrap();
//! let (_, hcm) = boot.listeners[0].http_managers().next().unwrap();
//! let filter = &hcm.wasm_filters[0];
//! assert_eq!(filter.root_id, "hello");
//! assert_eq!(
//!     filter.code,
//!     vessel_proxy::config::WasmCode::File("/etc/vessel/hello.wasm".into())
//! );
//! ```

mod any;
mod cluster;
pub(crate) mod dynamic;
mod error;
mod lb;
mod listener;
mod route;
mod tls;
mod wasm;
mod yaml;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

pub use cluster::{Cluster, ClusterKind, DEFAULT_DNS_REFRESH_RATE, Endpoint};
pub use dynamic::DynamicResources;
pub use error::{ConfigError, ErrorKind};
pub use lb::{
    DEFAULT_CHOICE_COUNT, DEFAULT_PANIC_THRESHOLD_BP, HealthCheck, LbPolicy, LoadBalancing,
    MetricsScrape, OutlierDetection,
};
pub use listener::{
    Codec, DEFAULT_TCP_IDLE_TIMEOUT, FilterChain, FilterChainMatch, HttpManager, Listener,
    TcpProxy, Terminal,
};
pub use route::{
    ClusterSpecifier, DEFAULT_ROUTE_TIMEOUT, HeaderMatch, HeaderMatcher, PathMatch, PolicyFallback,
    RetryOn, RetryPolicy, Route, RouteAction, RouteConfig, RouteMatch, SafeRegex, StringMatchKind,
    VirtualHost,
};
pub use tls::{
    CertificateSource, CommonTls, DownstreamTls, PemSource, SdsSecret, TlsCertificate, TlsVersion,
    UpstreamTls, sds_certificate,
};
pub use vessel_host::{FailurePolicy, ReloadBackoff};
pub use wasm::{EnvSpec, RemoteCode, RemoteRetry, WasmCode, WasmFilter};

use dynamic::{NoDynamic, Resolver};
use yaml::{Node as YNode, Res, YamlPath};

/// The parsed, validated bootstrap.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// `static_resources.listeners`, in document order.
    pub listeners: Vec<Listener>,
    /// `static_resources.clusters`, in document order.
    pub clusters: Vec<Cluster>,
    /// `admin.address`, if an admin section is given.
    pub admin: Option<SocketAddr>,
    /// `node`, if given (exposed to filters as the `node` property).
    pub node: Option<Node>,
    /// `dynamic_resources`: the control plane (docs/xds.md).
    pub dynamic: Option<DynamicResources>,
}

impl Bootstrap {
    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// `node`: the proxy's identity (`config.core.v3.Node`, subset).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    /// `id` (may be empty).
    pub id: String,
    /// `cluster` (may be empty).
    pub cluster: String,
    /// `metadata` (a `google.protobuf.Struct`), as a JSON object.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Reads and validates the bootstrap at `path`. Relative wasm file names are
/// resolved against the file's directory.
pub fn load(path: &Path) -> Result<Bootstrap, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    parse(&text, base_dir)
}

/// Parses and validates a bootstrap from YAML `text`. Relative wasm file
/// names are resolved against `base_dir`.
pub fn parse(text: &str, base_dir: &Path) -> Result<Bootstrap, ConfigError> {
    // Merge keys are applied and duplicate keys rejected by the reader.
    let doc: crate::yaml::Value = crate::yaml::from_str(text)?;
    bootstrap(&YNode::root(&doc), base_dir, &NoDynamic)
}

/// Parses a bootstrap document with what a control plane delivered: its
/// listeners (LDS) and clusters (CDS) after the static ones, and the route
/// configs (RDS), HTTP filter configs (ECDS) and endpoints (EDS) they name.
pub(crate) fn parse_dynamic(
    doc: &crate::yaml::Value,
    base_dir: &Path,
    dynamic: &dyn Resolver,
) -> Result<Bootstrap, ConfigError> {
    bootstrap(&YNode::root(doc), base_dir, dynamic)
}

fn bootstrap(root: &YNode<'_>, base_dir: &Path, dynamic: &dyn Resolver) -> Res<Bootstrap> {
    let top = root.obj(&["static_resources", "admin", "node", "dynamic_resources"])?;

    let mut clusters: Vec<Cluster> = Vec::new();
    let mut listeners: Vec<Listener> = Vec::new();
    // Listener index → its path, for cross-reference errors.
    let mut listener_paths = Vec::new();
    let static_resources = top
        .get("static_resources")
        .map(|sr| sr.obj(&["listeners", "clusters"]))
        .transpose()?;
    let listed = |key: &str| {
        static_resources
            .as_ref()
            .and_then(|sr| sr.get(key))
            .map(|l| l.list())
            .unwrap_or_default()
    };
    let cds = dynamic.clusters();
    let lds = dynamic.listeners();
    let static_clusters = listed("clusters").len();
    {
        let mut cluster_names: HashMap<String, ()> = HashMap::new();
        let dynamic_clusters = cds.iter().map(|(name, v)| YNode {
            v,
            path: YamlPath::named(format!("cds[{name}]")),
        });
        for c in listed("clusters").into_iter().chain(dynamic_clusters) {
            let cluster = cluster::cluster(&c, base_dir, dynamic)?;
            if cluster_names.insert(cluster.name.clone(), ()).is_some() {
                return Err(c.path.key("name").err(
                    ErrorKind::Duplicate,
                    format!("cluster name `{}` is used twice", cluster.name),
                ));
            }
            clusters.push(cluster);
        }
        let mut names: HashMap<String, ()> = HashMap::new();
        let mut addrs: HashMap<SocketAddr, ()> = HashMap::new();
        let dynamic_listeners = lds.iter().map(|(name, v)| YNode {
            v,
            path: YamlPath::named(format!("lds[{name}]")),
        });
        for (i, l) in listed("listeners")
            .into_iter()
            .chain(dynamic_listeners)
            .enumerate()
        {
            let listener = listener::listener(&l, i, base_dir, dynamic)?;
            if names.insert(listener.name.clone(), ()).is_some() {
                return Err(l.path.key("name").err(
                    ErrorKind::Duplicate,
                    format!("listener name `{}` is used twice", listener.name),
                ));
            }
            if listener.addr.port() != 0 && addrs.insert(listener.addr, ()).is_some() {
                return Err(l.path.key("address").err(
                    ErrorKind::Duplicate,
                    format!("address {} is used by two listeners", listener.addr),
                ));
            }
            listener_paths.push(l.path.clone());
            listeners.push(listener);
        }
    }

    // Routes and TCP proxies must name known clusters (Envoy's
    // validate_clusters default for static route tables).
    let known = |name: &str| clusters.iter().any(|c| c.name == name);
    for (listener, lpath) in listeners.iter().zip(&listener_paths) {
        for (ci, chain) in listener.chains().enumerate() {
            let chain_path = if ci < listener.filter_chains.len() {
                format!("{}.filter_chains[{ci}]", lpath.display())
            } else {
                format!("{}.default_filter_chain", lpath.display())
            };
            let terminal_path = format!(
                "{chain_path}.filters[{}].typed_config",
                chain.network_filters.len()
            );
            // Remote wasm code must be fetched through a known cluster
            // (Envoy finds out only when it fetches; vessel says so here).
            let remote_unknown = |filter_path: String, f: &WasmFilter| -> Res<()> {
                match f.code.remote() {
                    Some(r) if !known(&r.cluster) => Err(ConfigError::Field {
                        kind: ErrorKind::UnknownReference,
                        path: filter_path,
                        message: format!(
                            "config.vm_config.code.remote.http_uri.cluster: unknown cluster `{}` \
                             (not in static_resources.clusters)",
                            r.cluster
                        ),
                    }),
                    _ => Ok(()),
                }
            };
            for (k, f) in chain.network_filters.iter().enumerate() {
                remote_unknown(format!("{chain_path}.filters[{k}].typed_config"), f)?;
            }
            if let Terminal::Http(h) = &chain.terminal {
                for (j, f) in h.wasm_filters.iter().enumerate() {
                    remote_unknown(format!("{terminal_path}.http_filters[{j}].typed_config"), f)?;
                }
            }
            match &chain.terminal {
                Terminal::TcpProxy(t) => {
                    if !known(&t.cluster) {
                        return Err(ConfigError::Field {
                            kind: ErrorKind::UnknownReference,
                            path: format!("{terminal_path}.cluster"),
                            message: format!(
                                "unknown cluster `{}` (not in static_resources.clusters)",
                                t.cluster
                            ),
                        });
                    }
                }
                // Routes from RDS may name clusters not (yet) known: the
                // router answers 503 for them, as Envoy does
                // (`validate_clusters` defaults to false for RDS).
                Terminal::Http(h) if h.rds.is_none() => {
                    for (suffix, name) in h.routes.cluster_refs() {
                        if !known(name) {
                            return Err(ConfigError::Field {
                                kind: ErrorKind::UnknownReference,
                                path: format!("{terminal_path}.route_config.{suffix}"),
                                message: format!(
                                    "unknown cluster `{name}` (not in static_resources.clusters)"
                                ),
                            });
                        }
                    }
                    for (suffix, plugin) in h.routes.policy_plugins() {
                        if !h.wasm_filters.iter().any(|f| f.name == plugin) {
                            return Err(ConfigError::Field {
                                kind: ErrorKind::UnknownReference,
                                path: format!("{terminal_path}.route_config.{suffix}"),
                                message: format!(
                                    "no wasm filter of this connection manager is named `{plugin}`"
                                ),
                            });
                        }
                    }
                }
                Terminal::Http(_) => {}
            }
        }
    }

    let dynamic_resources = top
        .get("dynamic_resources")
        .map(|d| {
            let dr = dynamic::dynamic_resources(&d)?;
            let path = d.path.key("ads_config").key("grpc_services");
            match clusters[..static_clusters]
                .iter()
                .find(|c| c.name == dr.ads_cluster)
            {
                None => Err(path.err(
                    ErrorKind::UnknownReference,
                    format!(
                        "unknown cluster `{}` (the control plane's cluster must be in \
                         static_resources.clusters)",
                        dr.ads_cluster
                    ),
                )),
                Some(c) if !c.http2 => Err(path.err(
                    ErrorKind::Invalid,
                    format!(
                        "cluster `{}` must speak HTTP/2 (gRPC): add http2_protocol_options: {{}}",
                        dr.ads_cluster
                    ),
                )),
                Some(_) => Ok(dr),
            }
        })
        .transpose()?;
    let admin = top.get("admin").map(|a| admin(&a)).transpose()?.flatten();
    let node = top.get("node").map(|n| envoy_node(&n)).transpose()?;
    Ok(Bootstrap {
        listeners,
        clusters,
        admin,
        node,
        dynamic: dynamic_resources,
    })
}

/// `admin`: the address; `access_log_path` and `profile_path` are accepted
/// and ignored (vessel's admin writes no access log and has no profiler).
fn admin(node: &YNode<'_>) -> Res<Option<SocketAddr>> {
    let o = node.obj(&["address", "access_log_path", "profile_path"])?;
    for ignored in ["access_log_path", "profile_path"] {
        if let Some(n) = o.get(ignored) {
            n.str()?;
        }
    }
    o.get("address")
        .map(|a| cluster::ip_socket_address(&a))
        .transpose()
}

fn envoy_node(node: &YNode<'_>) -> Res<Node> {
    let o = node.obj(&["id", "cluster", "metadata"])?;
    let metadata = match o.get("metadata") {
        None => serde_json::Map::new(),
        Some(m) => match m.to_json()? {
            serde_json::Value::Object(map) => map,
            _ => {
                return Err(m.err(
                    ErrorKind::Invalid,
                    format!("expected a mapping, found {}", yaml::describe(m.v)),
                ));
            }
        },
    };
    Ok(Node {
        id: o.string_or_default("id")?,
        cluster: o.string_or_default("cluster")?,
        metadata,
    })
}
