//! A typed builder for the Envoy v3 bootstrap subset `vessel run` reads
//! (docs/envoy-config.md), instead of YAML formatted by hand: listeners
//! with an HTTP connection manager (its routes, wasm filters and the
//! router) or a TCP proxy, network wasm filters before either; wasm filters
//! with their plugin name, root_id, configuration, vm_config, failure
//! policy, reload backoff, capability restriction, environment, vessel's
//! own `vessel_limits` and `vessel_hidden`; clusters; the node and ADS
//! (`dynamic_resources`); the admin listener.
//!
//! Listeners and the admin listener default to 127.0.0.1 `port_value: 0`:
//! the proxy binds what the system gives it, and a test reads the ports
//! back from the admin (`crate::VesselProcess`). [`Bootstrap::to_yaml`]
//! writes YAML through `vessel_test::yaml`, the workspace's one YAML path.
//! Without `vessel_limits` and `vessel_hidden` (which only vessel knows),
//! Envoy 1.40 accepts what it writes too: the wasm filters have `runtime:
//! envoy.wasm.runtime.v8` and the router its typed config.
//!
//! ```
//! use vessel_testkit::bootstrap::{Bootstrap, Cluster, Listener, Route, WasmFilter};
//! let upstream: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
//! let yaml = Bootstrap::new()
//!     .listener(
//!         Listener::new("main")
//!             .route(Route::prefix("/").to("backend"))
//!             .filter(WasmFilter::new("auth", "/filters/auth.wasm").configuration("v1")),
//!     )
//!     .cluster(Cluster::new("backend").endpoint(upstream))
//!     .to_yaml();
//! assert!(yaml.contains("envoy.filters.http.wasm"));
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const WASM: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const NETWORK_WASM: &str = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm";
const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// 127.0.0.1, port 0.
fn loopback_any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn socket_address(host: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": host, "port_value": port } })
}

fn string_value(s: &str) -> Value {
    json!({ "@type": STRING_VALUE, "value": s })
}

/// An Envoy bootstrap: listeners, clusters and (by default) an admin
/// listener on 127.0.0.1 port 0.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    admin: Option<SocketAddr>,
    node: Option<(String, String)>,
    ads_cluster: Option<String>,
    listeners: Vec<Listener>,
    clusters: Vec<Cluster>,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self::new()
    }
}

impl Bootstrap {
    /// No listeners, no clusters, an admin listener on 127.0.0.1:0.
    pub fn new() -> Self {
        Self {
            admin: Some(loopback_any()),
            node: None,
            ads_cluster: None,
            listeners: Vec::new(),
            clusters: Vec::new(),
        }
    }

    /// `node`: its `id` and `cluster` (what an xDS control plane sees).
    pub fn node(mut self, id: impl Into<String>, cluster: impl Into<String>) -> Self {
        self.node = Some((id.into(), cluster.into()));
        self
    }

    /// `dynamic_resources`: listeners and clusters over ADS (gRPC, API v3)
    /// from the static cluster `cluster` (give it with
    /// [`Bootstrap::cluster`], speaking HTTP/2).
    pub fn ads(mut self, cluster: impl Into<String>) -> Self {
        self.ads_cluster = Some(cluster.into());
        self
    }

    /// The admin listener on `addr` (port 0: any).
    pub fn admin(mut self, addr: SocketAddr) -> Self {
        self.admin = Some(addr);
        self
    }

    /// No admin section.
    pub fn without_admin(mut self) -> Self {
        self.admin = None;
        self
    }

    /// Adds a listener.
    pub fn listener(mut self, l: Listener) -> Self {
        self.listeners.push(l);
        self
    }

    /// Adds a cluster.
    pub fn cluster(mut self, c: Cluster) -> Self {
        self.clusters.push(c);
        self
    }

    /// The listener named `name`, to change it (e.g. a test's next config).
    ///
    /// # Panics
    /// If there is none.
    pub fn listener_mut(&mut self, name: &str) -> &mut Listener {
        self.listeners
            .iter_mut()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no listener `{name}` in the bootstrap"))
    }

    /// The bootstrap as a JSON-shaped tree (what [`Bootstrap::to_yaml`]
    /// writes).
    pub fn to_value(&self) -> Value {
        let mut top = Map::new();
        if let Some((id, cluster)) = &self.node {
            top.insert("node".into(), json!({ "id": id, "cluster": cluster }));
        }
        if let Some(cluster) = &self.ads_cluster {
            let ads = json!({ "ads": {}, "resource_api_version": "V3" });
            top.insert(
                "dynamic_resources".into(),
                json!({
                    "ads_config": {
                        "api_type": "GRPC",
                        "transport_api_version": "V3",
                        "grpc_services": [{ "envoy_grpc": { "cluster_name": cluster } }],
                    },
                    "lds_config": ads,
                    "cds_config": ads,
                }),
            );
        }
        if let Some(a) = self.admin {
            top.insert(
                "admin".into(),
                json!({ "address": socket_address(&a.ip().to_string(), a.port()) }),
            );
        }
        top.insert(
            "static_resources".into(),
            json!({
                "listeners": self.listeners.iter().map(Listener::to_value).collect::<Vec<_>>(),
                "clusters": self.clusters.iter().map(Cluster::to_value).collect::<Vec<_>>(),
            }),
        );
        Value::Object(top)
    }

    /// The bootstrap as YAML, through `vessel_test::yaml`.
    ///
    /// # Panics
    /// If the YAML writer fails (it does not on these trees).
    pub fn to_yaml(&self) -> String {
        vessel_test::yaml::to_string(&self.to_value()).expect("a bootstrap serialises")
    }
}

/// `codec_type` of a connection manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// `AUTO`: HTTP/1.1 and h2c (the default).
    Auto,
    /// `HTTP1`.
    Http1,
    /// `HTTP2`.
    Http2,
}

/// A listener with one HTTP connection manager: its routes (one virtual
/// host for every domain) and its wasm filters, then the router.
#[derive(Debug, Clone)]
pub struct Listener {
    name: String,
    addr: SocketAddr,
    stat_prefix: Option<String>,
    codec: Option<Codec>,
    buffer_limit: Option<u32>,
    suppress_envoy_headers: bool,
    routes: Vec<Route>,
    filters: Vec<WasmFilter>,
    route_config_extra: Map<String, Value>,
    network_filters: Vec<WasmFilter>,
    tcp_proxy: Option<(String, Option<String>)>,
}

impl Listener {
    /// A listener on 127.0.0.1:0 whose `stat_prefix` is its name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            addr: loopback_any(),
            stat_prefix: None,
            codec: None,
            buffer_limit: None,
            suppress_envoy_headers: false,
            routes: Vec::new(),
            filters: Vec::new(),
            route_config_extra: Map::new(),
            network_filters: Vec::new(),
            tcp_proxy: None,
        }
    }

    /// Adds a network wasm filter (`envoy.filters.network.wasm`), run in
    /// order before the connection manager (or the TCP proxy).
    pub fn network_filter(mut self, f: WasmFilter) -> Self {
        self.network_filters.push(f);
        self
    }

    /// Ends the filter chain with `envoy.filters.network.tcp_proxy` to
    /// `cluster` (its `stat_prefix` is the listener's) instead of an HTTP
    /// connection manager; routes and HTTP filters are then not written.
    pub fn tcp_proxy(mut self, cluster: impl Into<String>) -> Self {
        self.tcp_proxy = Some((cluster.into(), None));
        self
    }

    /// The TCP proxy's `idle_timeout`, an Envoy duration.
    ///
    /// # Panics
    /// Before [`Listener::tcp_proxy`].
    pub fn tcp_idle_timeout(mut self, d: impl Into<String>) -> Self {
        let tcp = self.tcp_proxy.as_mut().expect("tcp_proxy first");
        tcp.1 = Some(d.into());
        self
    }

    /// Sets a field of the `route_config` the builder has no method for
    /// (e.g. `internal_only_headers`), as JSON.
    pub fn route_config_field(mut self, key: &str, value: Value) -> Self {
        self.route_config_extra.insert(key.to_owned(), value);
        self
    }

    /// Its address (default 127.0.0.1:0).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Its `stat_prefix` (default: its name).
    pub fn stat_prefix(mut self, p: impl Into<String>) -> Self {
        self.stat_prefix = Some(p.into());
        self
    }

    /// Its `codec_type`.
    pub fn codec(mut self, c: Codec) -> Self {
        self.codec = Some(c);
        self
    }

    /// `per_connection_buffer_limit_bytes`.
    pub fn buffer_limit(mut self, bytes: u32) -> Self {
        self.buffer_limit = Some(bytes);
        self
    }

    /// The router's `suppress_envoy_headers: true`.
    pub fn suppress_envoy_headers(mut self) -> Self {
        self.suppress_envoy_headers = true;
        self
    }

    /// Adds a route (matched in order).
    pub fn route(mut self, r: Route) -> Self {
        self.routes.push(r);
        self
    }

    /// Adds a wasm filter (run in order, before the router).
    pub fn filter(mut self, f: WasmFilter) -> Self {
        self.filters.push(f);
        self
    }

    /// Its wasm filters, to change them.
    pub fn filters_mut(&mut self) -> &mut Vec<WasmFilter> {
        &mut self.filters
    }

    fn to_value(&self) -> Value {
        let mut hcm = Map::new();
        hcm.insert("@type".into(), HCM.into());
        hcm.insert(
            "stat_prefix".into(),
            self.stat_prefix.as_deref().unwrap_or(&self.name).into(),
        );
        if let Some(c) = self.codec {
            let name = match c {
                Codec::Auto => "AUTO",
                Codec::Http1 => "HTTP1",
                Codec::Http2 => "HTTP2",
            };
            hcm.insert("codec_type".into(), name.into());
        }
        let mut rc = json!({ "virtual_hosts": [{
            "name": "all",
            "domains": ["*"],
            "routes": self.routes.iter().map(Route::to_value).collect::<Vec<_>>(),
        }]});
        if let Value::Object(m) = &mut rc {
            m.extend(self.route_config_extra.clone());
        }
        hcm.insert("route_config".into(), rc);
        let mut filters: Vec<Value> = self.filters.iter().map(WasmFilter::to_value).collect();
        let mut router = Map::new();
        router.insert("@type".into(), ROUTER.into());
        if self.suppress_envoy_headers {
            router.insert("suppress_envoy_headers".into(), true.into());
        }
        filters.push(json!({ "name": "envoy.filters.http.router", "typed_config": router }));
        hcm.insert("http_filters".into(), filters.into());
        let mut l = Map::new();
        l.insert("name".into(), self.name.clone().into());
        l.insert(
            "address".into(),
            socket_address(&self.addr.ip().to_string(), self.addr.port()),
        );
        if let Some(b) = self.buffer_limit {
            l.insert("per_connection_buffer_limit_bytes".into(), b.into());
        }
        let mut chain: Vec<Value> = self
            .network_filters
            .iter()
            .map(WasmFilter::to_network_value)
            .collect();
        chain.push(match &self.tcp_proxy {
            Some((cluster, idle)) => {
                let mut tcp = Map::new();
                tcp.insert("@type".into(), TCP_PROXY.into());
                tcp.insert(
                    "stat_prefix".into(),
                    self.stat_prefix.as_deref().unwrap_or(&self.name).into(),
                );
                tcp.insert("cluster".into(), cluster.clone().into());
                if let Some(d) = idle {
                    tcp.insert("idle_timeout".into(), d.clone().into());
                }
                json!({ "name": "envoy.filters.network.tcp_proxy", "typed_config": tcp })
            }
            None => json!({
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": hcm,
            }),
        });
        l.insert("filter_chains".into(), json!([{ "filters": chain }]));
        Value::Object(l)
    }
}

/// A route: a `prefix` or `path` match, and a cluster or a direct response.
#[derive(Debug, Clone)]
pub struct Route {
    matcher: (&'static str, String),
    action: Action,
    extra: Map<String, Value>,
}

#[derive(Debug, Clone)]
enum Action {
    Cluster {
        name: String,
        prefix_rewrite: Option<String>,
        timeout: Option<String>,
    },
    Direct {
        status: u16,
        body: Option<String>,
    },
}

impl Route {
    /// Matches paths that start with `p`; routes to no cluster until
    /// [`Route::to`] or [`Route::direct`].
    pub fn prefix(p: impl Into<String>) -> Self {
        Self {
            matcher: ("prefix", p.into()),
            action: Action::Direct {
                status: 404,
                body: None,
            },
            extra: Map::new(),
        }
    }

    /// Sets a field of the `route` action the builder has no method for
    /// (`retry_policy`, `cluster_header`, `weighted_clusters`...), as JSON.
    /// A `cluster_header` or `weighted_clusters` replaces [`Route::to`]'s
    /// `cluster`.
    pub fn route_field(mut self, key: &str, value: Value) -> Self {
        if matches!(self.action, Action::Direct { .. }) {
            self = self.to("");
        }
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// Matches the path `p` exactly.
    pub fn path(p: impl Into<String>) -> Self {
        Self {
            matcher: ("path", p.into()),
            ..Self::prefix("")
        }
    }

    /// Routes to `cluster`.
    pub fn to(mut self, cluster: impl Into<String>) -> Self {
        self.action = Action::Cluster {
            name: cluster.into(),
            prefix_rewrite: None,
            timeout: None,
        };
        self
    }

    /// Rewrites the matched prefix to `p` (after [`Route::to`]).
    pub fn prefix_rewrite(mut self, p: impl Into<String>) -> Self {
        if let Action::Cluster { prefix_rewrite, .. } = &mut self.action {
            *prefix_rewrite = Some(p.into());
        }
        self
    }

    /// The route's `timeout`, an Envoy duration such as `"0.2s"` (after
    /// [`Route::to`]).
    pub fn timeout(mut self, t: impl Into<String>) -> Self {
        if let Action::Cluster { timeout, .. } = &mut self.action {
            *timeout = Some(t.into());
        }
        self
    }

    /// Answers `status` with `body` (if any) itself.
    pub fn direct(mut self, status: u16, body: Option<&str>) -> Self {
        self.action = Action::Direct {
            status,
            body: body.map(str::to_owned),
        };
        self
    }

    fn to_value(&self) -> Value {
        let mut r = Map::new();
        let mut m = Map::new();
        m.insert(self.matcher.0.into(), self.matcher.1.clone().into());
        r.insert("match".into(), m.into());
        match &self.action {
            Action::Cluster {
                name,
                prefix_rewrite,
                timeout,
            } => {
                let mut a = Map::new();
                let specified = self.extra.contains_key("cluster_header")
                    || self.extra.contains_key("weighted_clusters");
                if !specified {
                    a.insert("cluster".into(), name.clone().into());
                }
                a.extend(self.extra.clone());
                if let Some(p) = prefix_rewrite {
                    a.insert("prefix_rewrite".into(), p.clone().into());
                }
                if let Some(t) = timeout {
                    a.insert("timeout".into(), t.clone().into());
                }
                r.insert("route".into(), a.into());
            }
            Action::Direct { status, body } => {
                let mut d = Map::new();
                d.insert("status".into(), (*status).into());
                if let Some(b) = body {
                    d.insert("body".into(), json!({ "inline_string": b }));
                }
                r.insert("direct_response".into(), d.into());
            }
        }
        Value::Object(r)
    }
}

/// A cluster's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterType {
    /// `STATIC` (the default): IP endpoints.
    Static,
    /// `STRICT_DNS`: every address a name resolves to.
    StrictDns,
    /// `LOGICAL_DNS`: the first address.
    LogicalDns,
}

/// A cluster: its endpoints, `connect_timeout` 1 s, HTTP/1.1 unless
/// [`Cluster::http2`].
#[derive(Debug, Clone)]
pub struct Cluster {
    name: String,
    kind: ClusterType,
    connect_timeout: String,
    dns_refresh_rate: Option<String>,
    http2: bool,
    endpoints: Vec<(String, u16)>,
    extra: Map<String, Value>,
}

impl Cluster {
    /// A `STATIC` cluster with no endpoints yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: ClusterType::Static,
            connect_timeout: "1s".into(),
            dns_refresh_rate: None,
            http2: false,
            endpoints: Vec::new(),
            extra: Map::new(),
        }
    }

    /// Its type.
    pub fn kind(mut self, kind: ClusterType) -> Self {
        self.kind = kind;
        self
    }

    /// `dns_refresh_rate`, an Envoy duration such as `"0.05s"`.
    pub fn dns_refresh_rate(mut self, d: impl Into<String>) -> Self {
        self.dns_refresh_rate = Some(d.into());
        self
    }

    /// `connect_timeout`, an Envoy duration (default `"1s"`).
    pub fn connect_timeout(mut self, d: impl Into<String>) -> Self {
        self.connect_timeout = d.into();
        self
    }

    /// Sets a cluster field the builder has no method for (`lb_policy`,
    /// `health_checks`, `outlier_detection`, `load_balancing_policy`...),
    /// as JSON.
    pub fn field(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// Speak HTTP/2 to the endpoints.
    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// Adds an endpoint.
    pub fn endpoint(self, addr: SocketAddr) -> Self {
        self.host(addr.ip().to_string(), addr.port())
    }

    /// Adds an endpoint by host name (for DNS clusters).
    pub fn host(mut self, host: impl Into<String>, port: u16) -> Self {
        self.endpoints.push((host.into(), port));
        self
    }

    fn to_value(&self) -> Value {
        let mut c = Map::new();
        c.insert("name".into(), self.name.clone().into());
        let kind = match self.kind {
            ClusterType::Static => "STATIC",
            ClusterType::StrictDns => "STRICT_DNS",
            ClusterType::LogicalDns => "LOGICAL_DNS",
        };
        c.insert("type".into(), kind.into());
        c.insert(
            "connect_timeout".into(),
            self.connect_timeout.clone().into(),
        );
        if let Some(d) = &self.dns_refresh_rate {
            c.insert("dns_refresh_rate".into(), d.clone().into());
        }
        if self.http2 {
            c.insert(
                "typed_extension_protocol_options".into(),
                json!({ HTTP_OPTIONS: {
                    "@type": format!("type.googleapis.com/{HTTP_OPTIONS}"),
                    "explicit_http_config": { "http2_protocol_options": {} },
                }}),
            );
        }
        if !self.endpoints.is_empty() {
            let lb: Vec<Value> = self
                .endpoints
                .iter()
                .map(|(h, p)| json!({ "endpoint": { "address": socket_address(h, *p) } }))
                .collect();
            c.insert(
                "load_assignment".into(),
                json!({ "cluster_name": self.name, "endpoints": [{ "lb_endpoints": lb }] }),
            );
        }
        c.extend(self.extra.clone());
        Value::Object(c)
    }
}

/// A value of `vm_config.vessel_limits`: an integer or a duration text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// An integer (bytes, counts, fuel).
    Int(u64),
    /// Text, such as a duration (`"0.05s"`).
    Text(String),
}

impl From<u64> for Limit {
    fn from(v: u64) -> Self {
        Self::Int(v)
    }
}

impl From<&str> for Limit {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

/// One `envoy.filters.http.wasm` filter: Envoy's `PluginConfig` and its
/// `VmConfig`, code from a local file.
#[derive(Debug, Clone)]
pub struct WasmFilter {
    name: String,
    module: PathBuf,
    root_id: Option<String>,
    vm_id: Option<String>,
    configuration: Option<String>,
    vm_configuration: Option<String>,
    failure_policy: Option<String>,
    reload_backoff: Option<(String, Option<String>)>,
    allowed_capabilities: Option<Vec<String>>,
    allow_on_headers_stop_iteration: bool,
    env_keys: Vec<String>,
    env_values: Vec<(String, String)>,
    vessel_limits: Vec<(String, Limit)>,
    vessel_hidden: Vec<(String, Vec<String>)>,
    code: Option<Value>,
    extra: Map<String, Value>,
    vm_extra: Map<String, Value>,
}

impl WasmFilter {
    /// Plugin `name` running the module file `module`.
    pub fn new(name: impl Into<String>, module: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            module: module.into(),
            root_id: None,
            vm_id: None,
            configuration: None,
            vm_configuration: None,
            failure_policy: None,
            reload_backoff: None,
            allowed_capabilities: None,
            allow_on_headers_stop_iteration: false,
            env_keys: Vec::new(),
            env_values: Vec::new(),
            vessel_limits: Vec::new(),
            vessel_hidden: Vec::new(),
            code: None,
            extra: Map::new(),
            vm_extra: Map::new(),
        }
    }

    /// Sets a field of `vm_config` the builder has no method for (e.g.
    /// one vessel refuses, such as `allow_precompiled`), as JSON.
    pub fn vm_field(mut self, key: &str, value: Value) -> Self {
        self.vm_extra.insert(key.to_owned(), value);
        self
    }

    /// Sets a field of the plugin config the builder has no method for
    /// (e.g. the older `fail_open`), as JSON.
    pub fn field(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// `vm_config.code` given as is (e.g. `{"remote": {...}}`), instead of
    /// `local.filename` of the module file.
    pub fn code(mut self, code: Value) -> Self {
        self.code = Some(code);
        self
    }

    /// `root_id`.
    pub fn root_id(mut self, id: impl Into<String>) -> Self {
        self.root_id = Some(id.into());
        self
    }

    /// `vm_config.vm_id`.
    pub fn vm_id(mut self, id: impl Into<String>) -> Self {
        self.vm_id = Some(id.into());
        self
    }

    /// The plugin `configuration` (a `StringValue`).
    pub fn configuration(mut self, c: impl Into<String>) -> Self {
        self.configuration = Some(c.into());
        self
    }

    /// `vm_config.configuration` (a `StringValue`).
    pub fn vm_configuration(mut self, c: impl Into<String>) -> Self {
        self.vm_configuration = Some(c.into());
        self
    }

    /// `failure_policy`: `FAIL_CLOSED`, `FAIL_OPEN` or `FAIL_RELOAD`.
    pub fn failure_policy(mut self, p: impl Into<String>) -> Self {
        self.failure_policy = Some(p.into());
        self
    }

    /// `reload_config.backoff`: `base_interval` and, if given,
    /// `max_interval` (Envoy durations).
    pub fn reload_backoff(mut self, base: impl Into<String>, max: Option<&str>) -> Self {
        self.reload_backoff = Some((base.into(), max.map(str::to_owned)));
        self
    }

    /// `capability_restriction_config.allowed_capabilities`: these names
    /// (an empty list: the empty map).
    pub fn allowed_capabilities<S: Into<String>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Self {
        self.allowed_capabilities = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// `allow_on_headers_stop_iteration: true`.
    pub fn allow_on_headers_stop_iteration(mut self) -> Self {
        self.allow_on_headers_stop_iteration = true;
        self
    }

    /// Adds `vm_config.environment_variables.host_env_keys` entry `key`.
    pub fn host_env_key(mut self, key: impl Into<String>) -> Self {
        self.env_keys.push(key.into());
        self
    }

    /// Adds `vm_config.environment_variables.key_values` entry `key: value`.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env_values.push((key.into(), value.into()));
        self
    }

    /// Sets `vm_config.vessel_limits.<name>` (vessel's own; Envoy refuses a
    /// config that has it).
    pub fn vessel_limit(mut self, name: impl Into<String>, value: impl Into<Limit>) -> Self {
        self.vessel_limits.push((name.into(), value.into()));
        self
    }

    /// Sets `vm_config.vessel_hidden.<list>` (`request_headers`,
    /// `response_headers` or `properties`) to `items` (vessel's own; Envoy
    /// refuses a config that has it).
    pub fn vessel_hidden<S: Into<String>>(
        mut self,
        list: impl Into<String>,
        items: impl IntoIterator<Item = S>,
    ) -> Self {
        self.vessel_hidden
            .push((list.into(), items.into_iter().map(Into::into).collect()));
        self
    }

    /// The plugin config (`PluginConfig`).
    fn config_value(&self) -> Map<String, Value> {
        let mut vm = Map::new();
        if let Some(id) = &self.vm_id {
            vm.insert("vm_id".into(), id.clone().into());
        }
        vm.insert("runtime".into(), "envoy.wasm.runtime.v8".into());
        if let Some(c) = &self.vm_configuration {
            vm.insert("configuration".into(), string_value(c));
        }
        vm.insert(
            "code".into(),
            self.code.clone().unwrap_or_else(
                || json!({ "local": { "filename": self.module.to_string_lossy() } }),
            ),
        );
        if !self.env_keys.is_empty() || !self.env_values.is_empty() {
            let mut env = Map::new();
            if !self.env_keys.is_empty() {
                env.insert("host_env_keys".into(), self.env_keys.clone().into());
            }
            if !self.env_values.is_empty() {
                let kv: Map<String, Value> = self
                    .env_values
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect();
                env.insert("key_values".into(), kv.into());
            }
            vm.insert("environment_variables".into(), env.into());
        }
        if !self.vessel_limits.is_empty() {
            let limits: Map<String, Value> = self
                .vessel_limits
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Limit::Int(n) => Value::from(*n),
                        Limit::Text(t) => Value::from(t.clone()),
                    };
                    (k.clone(), v)
                })
                .collect();
            vm.insert("vessel_limits".into(), limits.into());
        }
        if !self.vessel_hidden.is_empty() {
            let hidden: Map<String, Value> = self
                .vessel_hidden
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            vm.insert("vessel_hidden".into(), hidden.into());
        }
        vm.extend(self.vm_extra.clone());
        let mut config = Map::new();
        config.insert("name".into(), self.name.clone().into());
        if let Some(r) = &self.root_id {
            config.insert("root_id".into(), r.clone().into());
        }
        if let Some(c) = &self.configuration {
            config.insert("configuration".into(), string_value(c));
        }
        config.insert("vm_config".into(), vm.into());
        if let Some(p) = &self.failure_policy {
            config.insert("failure_policy".into(), p.clone().into());
        }
        if let Some((base, max)) = &self.reload_backoff {
            let mut b = Map::new();
            b.insert("base_interval".into(), base.clone().into());
            if let Some(m) = max {
                b.insert("max_interval".into(), m.clone().into());
            }
            config.insert("reload_config".into(), json!({ "backoff": b }));
        }
        if let Some(caps) = &self.allowed_capabilities {
            let map: Map<String, Value> = caps
                .iter()
                .map(|c| (c.clone(), Value::Object(Map::new())))
                .collect();
            config.insert(
                "capability_restriction_config".into(),
                json!({ "allowed_capabilities": map }),
            );
        }
        if self.allow_on_headers_stop_iteration {
            config.insert("allow_on_headers_stop_iteration".into(), true.into());
        }
        config.extend(self.extra.clone());
        config
    }

    /// As an HTTP filter.
    fn to_value(&self) -> Value {
        json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": { "@type": WASM, "config": self.config_value() },
        })
    }

    /// As a network filter.
    fn to_network_value(&self) -> Value {
        json!({
            "name": "envoy.filters.network.wasm",
            "typed_config": { "@type": NETWORK_WASM, "config": self.config_value() },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::path::Path;
    use std::time::Duration;

    use vessel_proxy::config::{self, ClusterKind, FailurePolicy, ReloadBackoff, WasmCode};

    use super::*;

    fn everything() -> Bootstrap {
        let up: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        Bootstrap::new()
            .listener(
                Listener::new("main")
                    .stat_prefix("ingress")
                    .codec(Codec::Http1)
                    .buffer_limit(1024)
                    .suppress_envoy_headers()
                    .route(Route::path("/direct").direct(201, Some("direct\n")))
                    .route(
                        Route::prefix("/api/")
                            .to("backend")
                            .prefix_rewrite("/")
                            .timeout("0.2s"),
                    )
                    .filter(
                        WasmFilter::new("first", "/filters/a.wasm")
                            .root_id("r1")
                            .vm_id("one")
                            .configuration("1")
                            .vm_configuration("vm: yes")
                            .failure_policy("FAIL_RELOAD")
                            .reload_backoff("0.01s", Some("0.04s"))
                            .allowed_capabilities(["proxy_log", "proxy_on_request_headers"])
                            .allow_on_headers_stop_iteration()
                            .host_env_key("HOME")
                            .env("KEY", "value: with colon"),
                    )
                    .filter(
                        WasmFilter::new("second", "/filters/b.wasm")
                            .allowed_capabilities(Vec::<String>::new())
                            .vessel_limit("memory_bytes", 67_108_864)
                            .vessel_limit("callback_timeout", "0.05s"),
                    ),
            )
            .listener(
                Listener::new("other")
                    .addr("127.0.0.1:9000".parse().unwrap())
                    .route(Route::prefix("/").to("dns")),
            )
            .cluster(Cluster::new("backend").endpoint(up).http2())
            .cluster(
                Cluster::new("dns")
                    .kind(ClusterType::StrictDns)
                    .dns_refresh_rate("0.05s")
                    .host("localhost", 8081),
            )
            .cluster(Cluster::new("empty").kind(ClusterType::Static))
    }

    /// A TCP proxy listener with a network filter, and ADS from a cluster:
    /// vessel's config reader reads back each part.
    #[test]
    fn vessel_reads_back_tcp_proxies_network_filters_and_ads() {
        let up: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let yaml = Bootstrap::new()
            .node("n1", "c1")
            .ads("xds")
            .listener(
                Listener::new("tcp")
                    .network_filter(
                        WasmFilter::new("net", "/filters/n.wasm")
                            .configuration("cfg")
                            .field("fail_open", true.into()),
                    )
                    .tcp_proxy("backend")
                    .tcp_idle_timeout("2s"),
            )
            .listener(
                Listener::new("http")
                    .network_filter(WasmFilter::new("net2", "/filters/m.wasm"))
                    .route(Route::prefix("/").direct(200, None)),
            )
            .cluster(Cluster::new("backend").endpoint(up))
            .cluster(Cluster::new("xds").http2().endpoint(up))
            .to_yaml();
        let b = config::parse(&yaml, Path::new("/")).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let node = b.node.as_ref().unwrap();
        assert_eq!((node.id.as_str(), node.cluster.as_str()), ("n1", "c1"));
        let dynamic = b.dynamic.as_ref().unwrap();
        assert_eq!(dynamic.ads_cluster, "xds");
        assert!(dynamic.lds && dynamic.cds);
        let chain = &b.listeners[0].filter_chains[0];
        assert_eq!(chain.network_filters.len(), 1);
        assert_eq!(chain.network_filters[0].name, "net");
        assert_eq!(chain.network_filters[0].configuration, b"cfg");
        assert_eq!(
            chain.network_filters[0].failure_policy,
            FailurePolicy::FailOpen
        );
        match &chain.terminal {
            config::Terminal::TcpProxy(t) => {
                assert_eq!(
                    (t.stat_prefix.as_str(), t.cluster.as_str()),
                    ("tcp", "backend")
                );
                assert_eq!(t.idle_timeout, Some(Duration::from_secs(2)));
            }
            config::Terminal::Http(_) => panic!("a TCP proxy\n{yaml}"),
        }
        let chain = &b.listeners[1].filter_chains[0];
        assert_eq!(chain.network_filters[0].name, "net2");
        assert!(
            matches!(chain.terminal, config::Terminal::Http(_)),
            "{yaml}"
        );
    }

    /// What the builder writes, vessel's config reader (the one `vessel
    /// run` uses) reads back field for field.
    #[test]
    fn vessel_reads_back_what_the_builder_writes() {
        let yaml = everything().to_yaml();
        let b = config::parse(&yaml, Path::new("/")).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(b.admin, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(b.listeners.len(), 2);
        let listener = &b.listeners[0];
        assert_eq!(listener.name, "main");
        assert_eq!(listener.addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(listener.buffer_limit, 1024);
        let managers: Vec<_> = listener.http_managers().collect();
        assert_eq!(managers.len(), 1);
        let main = managers[0].1;
        assert_eq!(main.stat_prefix, "ingress");
        assert_eq!(main.codec, config::Codec::Http1);
        assert!(main.suppress_envoy_headers);
        assert_eq!(b.listeners[1].addr, "127.0.0.1:9000".parse().unwrap());
        let f = &main.wasm_filters;
        assert_eq!(f.len(), 2, "{yaml}");
        assert_eq!((f[0].name.as_str(), f[0].root_id.as_str()), ("first", "r1"));
        assert_eq!(f[0].vm_id, "one");
        assert_eq!(f[0].configuration, b"1");
        assert_eq!(f[0].vm_configuration, b"vm: yes");
        assert_eq!(
            f[0].failure_policy,
            FailurePolicy::FailReload(ReloadBackoff::new(
                Duration::from_millis(10),
                Duration::from_millis(40)
            ))
        );
        assert!(f[0].allow_on_headers_stop_iteration);
        assert_eq!(f[0].environment.host_env_keys, ["HOME"]);
        assert_eq!(
            f[0].environment.key_values.get("KEY").map(String::as_str),
            Some("value: with colon")
        );
        assert!(matches!(&f[0].code, WasmCode::File(p) if p == Path::new("/filters/a.wasm")));
        let mut caps = f[0].allowed_capabilities.clone().expect("a restriction");
        caps.sort();
        assert_eq!(caps, ["proxy_log", "proxy_on_request_headers"]);
        // An empty `allowed_capabilities` map allows everything, as in Envoy.
        assert_eq!(f[1].allowed_capabilities, None);
        assert!(yaml.contains("allowed_capabilities: {}"), "{yaml}");
        assert_eq!(f[1].failure_policy, FailurePolicy::FailClosed);
        assert_eq!(f[1].limits.memory_bytes, 67_108_864);
        assert_eq!(
            f[1].limits.callback_timeout,
            Some(Duration::from_millis(50))
        );
        assert_eq!(b.clusters.len(), 3);
        assert!(b.clusters[0].http2);
        assert_eq!(b.clusters[0].endpoints[0].port, 8080);
        assert_eq!(b.clusters[1].kind, ClusterKind::StrictDns);
        assert_eq!(b.clusters[1].endpoints[0].address, "localhost");
        assert!(b.clusters[2].endpoints.is_empty());
    }

    #[test]
    fn without_admin_there_is_no_admin_section() {
        let yaml = Bootstrap::new().without_admin().to_yaml();
        assert!(!yaml.contains("admin"), "{yaml}");
        let b = config::parse(&yaml, Path::new("/")).unwrap();
        assert_eq!(b.admin, None);
    }
}
