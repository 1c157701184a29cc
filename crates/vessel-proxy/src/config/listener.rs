//! `envoy.config.listener.v3.Listener`: an address and its filter chains.
//!
//! Each filter chain (`filter_chains[]`, and `default_filter_chain`) has a
//! `filter_chain_match` (`destination_port`, `server_names`), zero or more
//! `envoy.filters.network.wasm` network filters, and one terminal network
//! filter: the HTTP connection manager
//! (`envoy.extensions.filters.network.http_connection_manager.v3`, with its
//! HTTP filter chain: `envoy.filters.http.wasm` filters followed by
//! `envoy.filters.http.router`), or `envoy.filters.network.tcp_proxy`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::any::open_typed;
use super::cluster::ip_socket_address;
use super::dynamic::{Resolver, ads_config_source};
use super::error::ErrorKind;
use super::route::{RouteConfig, route_config};
use super::wasm::{WasmFilter, plugin_config};
use super::yaml::{Node, Res, YamlPath};

/// A listener: an address and the filter chains a connection is matched
/// against.
#[derive(Debug, Clone)]
pub struct Listener {
    /// `name` (unique). An unnamed listener is called `listener_<index>`.
    pub name: String,
    /// `address.socket_address`: an IP literal and a port.
    pub addr: SocketAddr,
    /// `per_connection_buffer_limit_bytes`: the most a stopped filter makes
    /// the proxy buffer of a body or of a connection's data (Envoy's
    /// default: 1 MiB). Above it a request gets 413 and a response 500
    /// (ABI reference §11.2).
    pub buffer_limit: usize,
    /// `filter_chains`, in document order.
    pub filter_chains: Vec<FilterChain>,
    /// `default_filter_chain`: the chain of a connection that matches none
    /// of `filter_chains` (without one, such a connection is closed).
    pub default_filter_chain: Option<FilterChain>,
    /// `listener_filters` names the TLS inspector. With it (or with a chain
    /// matching `server_names`, for which Envoy adds it itself) a TLS
    /// connection's SNI is its `connection.requested_server_name`.
    pub tls_inspector: bool,
}

/// One filter chain.
#[derive(Debug, Clone)]
pub struct FilterChain {
    /// `name` (may be empty).
    pub name: String,
    /// `filter_chain_match`.
    pub matcher: FilterChainMatch,
    /// The `envoy.filters.network.wasm` filters before the terminal filter,
    /// in order: they see the connection's bytes (network filters).
    pub network_filters: Vec<WasmFilter>,
    /// The last network filter.
    pub terminal: Terminal,
    /// `transport_socket`: TLS termination (a `DownstreamTlsContext`).
    pub tls: Option<super::tls::DownstreamTls>,
}

/// `filter_chain_match`: which connections a chain takes. An empty match
/// takes every connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FilterChainMatch {
    /// `destination_port`: the local port the connection reached.
    pub destination_port: Option<u16>,
    /// `server_names`: the SNI of the TLS ClientHello, each exact
    /// (`api.example.com`) or a wildcard prefix (`*.example.com`), lower
    /// case.
    pub server_names: Vec<String>,
}

/// The terminal network filter of a chain.
#[derive(Debug, Clone)]
pub enum Terminal {
    /// `envoy.filters.network.http_connection_manager`.
    Http(Box<HttpManager>),
    /// `envoy.filters.network.tcp_proxy`.
    TcpProxy(TcpProxy),
}

/// An HTTP connection manager: an HTTP codec, a route table and the wasm
/// filters every request passes through (in order) before the router.
#[derive(Debug, Clone)]
pub struct HttpManager {
    /// `stat_prefix`.
    pub stat_prefix: String,
    /// `codec_type` (default AUTO).
    pub codec: Codec,
    /// `route_config`, or the route config RDS delivered.
    pub routes: RouteConfig,
    /// `rds.route_config_name`: the routes come from RDS.
    pub rds: Option<String>,
    /// The `envoy.filters.http.wasm` entries of `http_filters`, in order.
    pub wasm_filters: Vec<WasmFilter>,
    /// The router's `suppress_envoy_headers`: when true the router adds no
    /// `x-envoy-upstream-service-time` to responses.
    pub suppress_envoy_headers: bool,
}

/// `envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpProxy {
    /// `stat_prefix`.
    pub stat_prefix: String,
    /// `cluster`: where the bytes go.
    pub cluster: String,
    /// `idle_timeout`: a connection with no bytes either way for this long
    /// is closed. Envoy's default is 1 hour; `0s` disables it (`None`).
    pub idle_timeout: Option<Duration>,
}

/// Envoy's default `tcp_proxy.idle_timeout`.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Downstream HTTP codec (`codec_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `AUTO`: HTTP/1.1, or HTTP/2 when the client starts with the preface.
    Auto,
    /// `HTTP1`.
    Http1,
    /// `HTTP2` (prior knowledge).
    Http2,
}

impl Listener {
    /// Every chain: `filter_chains`, then `default_filter_chain`. The index
    /// of a chain in this order is the one [`Listener::select`] gives.
    pub fn chains(&self) -> impl Iterator<Item = &FilterChain> {
        self.filter_chains
            .iter()
            .chain(self.default_filter_chain.as_ref())
    }

    /// Every HTTP connection manager, with its chain's index.
    pub fn http_managers(&self) -> impl Iterator<Item = (usize, &HttpManager)> {
        self.chains()
            .enumerate()
            .filter_map(|(i, c)| match &c.terminal {
                Terminal::Http(h) => Some((i, &**h)),
                Terminal::TcpProxy(_) => None,
            })
    }

    /// Whether a TLS connection's SNI is recorded
    /// (`connection.requested_server_name`): as in Envoy, when the TLS
    /// inspector runs, i.e. `listener_filters` names it or a chain matches
    /// on `server_names`.
    pub fn records_server_name(&self) -> bool {
        self.tls_inspector || self.needs_server_name()
    }

    /// True if choosing a chain needs the TLS ClientHello's SNI (some chain
    /// matches on `server_names`).
    pub fn needs_server_name(&self) -> bool {
        self.filter_chains
            .iter()
            .any(|c| !c.matcher.server_names.is_empty())
    }

    /// The chain (an index into [`Listener::chains`]) of a connection to
    /// local port `destination_port` whose ClientHello named
    /// `server_name`, by Envoy's rules: each criterion in turn
    /// (destination port, then server name) keeps the chains that match it
    /// most specifically (a chain that names the port over one that names
    /// none; an exact name over the longest matching wildcard over a chain
    /// that names none). `None` when nothing matches and there is no
    /// default chain: the connection is closed.
    pub fn select(&self, destination_port: u16, server_name: Option<&str>) -> Option<usize> {
        let chains = &self.filter_chains;
        let by_port: Vec<usize> = {
            let exact: Vec<usize> = (0..chains.len())
                .filter(|&i| chains[i].matcher.destination_port == Some(destination_port))
                .collect();
            if exact.is_empty() {
                (0..chains.len())
                    .filter(|&i| chains[i].matcher.destination_port.is_none())
                    .collect()
            } else {
                exact
            }
        };
        let name = server_name.map(str::to_ascii_lowercase);
        let score = |i: usize| -> Option<usize> {
            let names = &chains[i].matcher.server_names;
            if names.is_empty() {
                return Some(0);
            }
            let name = name.as_deref()?;
            names
                .iter()
                .filter_map(|n| {
                    if n == name {
                        Some(usize::MAX)
                    } else {
                        let suffix = n.strip_prefix('*')?;
                        (name.len() > suffix.len() && name.ends_with(suffix))
                            .then_some(suffix.len())
                    }
                })
                .max()
        };
        let best = by_port
            .iter()
            .filter_map(|&i| score(i).map(|s| (s, i)))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        match best {
            Some((_, i)) => Some(i),
            None => self.default_filter_chain.as_ref().map(|_| chains.len()),
        }
    }
}

const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const NETWORK_WASM: &str = "envoy.extensions.filters.network.wasm.v3.Wasm";
const TLS_INSPECTOR: &str = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
const WASM: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
const ROUTER_NAME: &str = "envoy.filters.http.router";
const WASM_NAME: &str = "envoy.filters.http.wasm";

/// Reads one listener (`index` names an unnamed one).
pub(crate) fn listener(
    node: &Node<'_>,
    index: usize,
    base_dir: &Path,
    dynamic: &dyn Resolver,
) -> Res<Listener> {
    let o = node.obj(&[
        "name",
        "address",
        "filter_chains",
        "default_filter_chain",
        "listener_filters",
        "per_connection_buffer_limit_bytes",
    ])?;
    let name = match o.get("name") {
        Some(n) => n.non_empty_str()?.to_owned(),
        None => format!("listener_{index}"),
    };
    let addr = ip_socket_address(&o.req("address")?)?;
    let buffer_limit = match o.get("per_connection_buffer_limit_bytes") {
        Some(n) => usize::try_from(n.u32()?).unwrap_or(usize::MAX),
        None => vessel_host::DEFAULT_BUFFER_LIMIT,
    };
    let mut tls_inspector = false;
    if let Some(lf) = o.get("listener_filters") {
        for f in lf.list() {
            listener_filter(&f)?;
            tls_inspector = true;
        }
    }

    let mut filter_chains = Vec::new();
    if let Some(chains_node) = o.get("filter_chains") {
        let mut seen: Vec<(Option<u16>, Option<String>, usize)> = Vec::new();
        for (ci, chain) in chains_node.list().into_iter().enumerate() {
            let c = filter_chain(&chain, base_dir, true, dynamic)?;
            // Envoy refuses two chains with the same match.
            let names: Vec<Option<String>> = if c.matcher.server_names.is_empty() {
                vec![None]
            } else {
                c.matcher.server_names.iter().cloned().map(Some).collect()
            };
            for n in names {
                let key = (c.matcher.destination_port, n);
                if let Some((_, _, other)) = seen.iter().find(|(p, s, _)| (*p, s.clone()) == key) {
                    return Err(chain.path.key("filter_chain_match").err(
                        ErrorKind::Duplicate,
                        format!(
                            "filter_chains[{other}] has the same match (destination port \
                             {:?}, server name {:?})",
                            key.0, key.1
                        ),
                    ));
                }
                seen.push((key.0, key.1, ci));
            }
            filter_chains.push(c);
        }
    }
    let default_filter_chain = o
        .get("default_filter_chain")
        .map(|d| filter_chain(&d, base_dir, false, dynamic))
        .transpose()?;
    if filter_chains.is_empty() && default_filter_chain.is_none() {
        return Err(node.err(
            ErrorKind::Missing,
            "a listener needs `filter_chains` or a `default_filter_chain`",
        ));
    }
    Ok(Listener {
        name,
        addr,
        buffer_limit,
        filter_chains,
        default_filter_chain,
        tls_inspector,
    })
}

/// One `listener_filters` entry: only the TLS inspector, which vessel
/// needs no filter for (it reads the SNI whenever a chain matches on it).
fn listener_filter(node: &Node<'_>) -> Res<()> {
    let f = node.obj(&["name", "typed_config"])?;
    let name_node = f.req("name")?;
    let name = name_node.non_empty_str()?;
    match f.get("typed_config") {
        Some(tc) => {
            let any = open_typed(&tc)?;
            if any.type_name != TLS_INSPECTOR {
                return Err(any.type_path.err(
                    ErrorKind::Unsupported,
                    format!(
                        "listener filter `{}` is not supported; only \
                         type.googleapis.com/{TLS_INSPECTOR} is",
                        any.type_name
                    ),
                ));
            }
            any.body.obj(&any.keys(&[]))?;
            Ok(())
        }
        None if name == "envoy.filters.listener.tls_inspector" => Ok(()),
        None => Err(name_node.err(
            ErrorKind::Unsupported,
            format!(
                "listener filter `{name}` is not supported; only \
                 envoy.filters.listener.tls_inspector is"
            ),
        )),
    }
}

/// One filter chain; `with_match` is false for `default_filter_chain`,
/// which takes no `filter_chain_match`.
fn filter_chain(
    node: &Node<'_>,
    base_dir: &Path,
    with_match: bool,
    dynamic: &dyn Resolver,
) -> Res<FilterChain> {
    let keys: &[&str] = if with_match {
        &["name", "filters", "filter_chain_match", "transport_socket"]
    } else {
        &["name", "filters", "transport_socket"]
    };
    let c = node.obj(keys)?;
    let name = match c.get("name") {
        Some(n) => n.str()?.to_owned(),
        None => String::new(),
    };
    let matcher = match c.get("filter_chain_match") {
        Some(m) => chain_match(&m)?,
        None => FilterChainMatch::default(),
    };
    let tls = c
        .get("transport_socket")
        .map(|ts| super::tls::downstream_tls_context(&ts, base_dir))
        .transpose()?;
    let filters_node = c.req("filters")?;
    let filters = filters_node.list();
    let Some((last, front)) = filters.split_last() else {
        return Err(filters_node.err(
            ErrorKind::Missing,
            "a filter chain needs a terminal network filter \
             (envoy.filters.network.http_connection_manager or envoy.filters.network.tcp_proxy)",
        ));
    };
    let mut network_filters = Vec::new();
    for f in front {
        match network_filter(f, base_dir, dynamic)? {
            NetworkFilter::Wasm(w) => network_filters.push(*w),
            NetworkFilter::Terminal(_) => {
                return Err(f.err(
                    ErrorKind::Invalid,
                    "a terminal network filter (HTTP connection manager, tcp_proxy) must be \
                     the last filter of its chain",
                ));
            }
        }
    }
    let terminal = match network_filter(last, base_dir, dynamic)? {
        NetworkFilter::Terminal(t) => t,
        NetworkFilter::Wasm(_) => {
            return Err(last.err(
                ErrorKind::Invalid,
                "the last filter of a chain must be a terminal network filter \
                 (envoy.filters.network.http_connection_manager or \
                 envoy.filters.network.tcp_proxy)",
            ));
        }
    };
    Ok(FilterChain {
        name,
        matcher,
        network_filters,
        terminal,
        tls,
    })
}

fn chain_match(node: &Node<'_>) -> Res<FilterChainMatch> {
    let m = node.obj(&["destination_port", "server_names"])?;
    let destination_port = m.get("destination_port").map(|p| p.port()).transpose()?;
    let mut server_names = Vec::new();
    if let Some(list) = m.get("server_names") {
        for n in list.list() {
            let s = n.non_empty_str()?;
            let wildcard_ok =
                !s.contains('*') || (s.starts_with("*.") && s[1..].find('*').is_none());
            if !wildcard_ok {
                return Err(n.err(
                    ErrorKind::Invalid,
                    format!("`{s}`: a wildcard may only be a leading `*.`"),
                ));
            }
            server_names.push(s.to_ascii_lowercase());
        }
    }
    Ok(FilterChainMatch {
        destination_port,
        server_names,
    })
}

enum NetworkFilter {
    Wasm(Box<WasmFilter>),
    Terminal(Terminal),
}

/// One `filters` entry of a chain, chosen by its typed_config type.
fn network_filter(node: &Node<'_>, base_dir: &Path, dynamic: &dyn Resolver) -> Res<NetworkFilter> {
    let f = node.obj(&["name", "typed_config"])?;
    f.req("name")?.non_empty_str()?;
    let tc = f.req("typed_config")?;
    let any = open_typed(&tc)?;
    match any.type_name {
        HCM => Ok(NetworkFilter::Terminal(Terminal::Http(Box::new(
            http_manager(
                &any.body,
                &any.keys(&[
                    "stat_prefix",
                    "codec_type",
                    "route_config",
                    "rds",
                    "http_filters",
                ]),
                base_dir,
                dynamic,
            )?,
        )))),
        TCP_PROXY => {
            let o = any
                .body
                .obj(&any.keys(&["stat_prefix", "cluster", "idle_timeout"]))?;
            let stat_prefix = o.req("stat_prefix")?.non_empty_str()?.to_owned();
            let cluster = o.req("cluster")?.non_empty_str()?.to_owned();
            let idle_timeout = match o.get("idle_timeout") {
                None => Some(DEFAULT_TCP_IDLE_TIMEOUT),
                Some(d) => Some(d.duration()?).filter(|d| !d.is_zero()),
            };
            Ok(NetworkFilter::Terminal(Terminal::TcpProxy(TcpProxy {
                stat_prefix,
                cluster,
                idle_timeout,
            })))
        }
        NETWORK_WASM => {
            let o = any.body.obj(&any.keys(&["config"]))?;
            let w = plugin_config(&o.req("config")?, base_dir)?;
            Ok(NetworkFilter::Wasm(Box::new(w)))
        }
        other => Err(any.type_path.err(
            ErrorKind::Unsupported,
            format!(
                "network filter `{other}` is not supported; vessel runs \
                 type.googleapis.com/{NETWORK_WASM}, type.googleapis.com/{HCM} and \
                 type.googleapis.com/{TCP_PROXY}"
            ),
        )),
    }
}

fn http_manager(
    body: &Node<'_>,
    keys: &[&str],
    base_dir: &Path,
    dynamic: &dyn Resolver,
) -> Res<HttpManager> {
    let h = body.obj(keys)?;
    let stat_prefix = h.req("stat_prefix")?.non_empty_str()?.to_owned();
    let codec = match h.get("codec_type") {
        None => Codec::Auto,
        Some(c) => match c.enumeration(&["AUTO", "HTTP1", "HTTP2"], &["HTTP3"])? {
            "HTTP1" => Codec::Http1,
            "HTTP2" => Codec::Http2,
            _ => Codec::Auto,
        },
    };
    let (routes, rds) = match (h.get("route_config"), h.get("rds")) {
        (Some(_), Some(r)) => {
            return Err(r.err(
                ErrorKind::Invalid,
                "only one of route_config, rds may be given",
            ));
        }
        (Some(rc), None) => (route_config(&rc)?, None),
        (None, Some(r)) => {
            let o = r.obj(&["config_source", "route_config_name"])?;
            ads_config_source(&o.req("config_source")?)?;
            let name_node = o.req("route_config_name")?;
            let name = name_node.non_empty_str()?;
            let Some(v) = dynamic.route_config(name) else {
                return Err(name_node.err(
                    ErrorKind::UnknownReference,
                    format!(
                        "route config `{name}` has not been delivered by RDS (needs \
                         dynamic_resources.ads_config)"
                    ),
                ));
            };
            let rc = route_config(&Node {
                v,
                path: YamlPath::named(format!("rds[{name}]")),
            })?;
            (rc, Some(name.to_owned()))
        }
        (None, None) => {
            return Err(h.path.key("route_config").err(
                ErrorKind::Missing,
                "required field is missing (route_config or rds)",
            ));
        }
    };

    let hf_node = h.req("http_filters")?;
    let mut wasm_filters = Vec::new();
    let mut router_seen: Option<Node<'_>> = None;
    let mut suppress_envoy_headers = false;
    for entry in hf_node.list() {
        if let Some(router) = &router_seen {
            return Err(entry.err(
                ErrorKind::Invalid,
                format!(
                    "the router filter ({}) must be the last HTTP filter",
                    router.path.display()
                ),
            ));
        }
        match http_filter(&entry, base_dir, dynamic)? {
            HttpFilter::Wasm(w) => wasm_filters.push(*w),
            HttpFilter::Router { suppress } => {
                suppress_envoy_headers = suppress;
                router_seen = Some(entry);
            }
        }
    }
    if router_seen.is_none() {
        return Err(hf_node.err(
            ErrorKind::Invalid,
            "the last HTTP filter must be envoy.filters.http.router",
        ));
    }
    Ok(HttpManager {
        stat_prefix,
        codec,
        routes,
        rds,
        wasm_filters,
        suppress_envoy_headers,
    })
}

/// An HTTP filter's `config_discovery` (ECDS): the `typed_config` of the
/// `TypedExtensionConfig` named like the filter, or the `default_config`
/// with `apply_default_config_without_warming`.
fn discovered_config<'a>(cd: &Node<'a>, name: &str, dynamic: &'a dyn Resolver) -> Res<Node<'a>> {
    let o = cd.obj(&[
        "config_source",
        "default_config",
        "apply_default_config_without_warming",
        "type_urls",
    ])?;
    ads_config_source(&o.req("config_source")?)?;
    let type_urls_node = o.req("type_urls")?;
    let mut type_urls = Vec::new();
    for t in type_urls_node.list() {
        let url = t.non_empty_str()?;
        type_urls.push(super::yaml::type_name(url).unwrap_or(url).to_owned());
    }
    if type_urls.is_empty() {
        return Err(type_urls_node.err(ErrorKind::Missing, "at least one type URL is required"));
    }
    let without_warming = o
        .get("apply_default_config_without_warming")
        .map(|b| b.bool())
        .transpose()?
        .unwrap_or(false);
    let default = o.get("default_config");
    if without_warming && default.is_none() {
        return Err(o.path.key("default_config").err(
            ErrorKind::Missing,
            "apply_default_config_without_warming needs a default_config",
        ));
    }
    let check_type = |tc: &Node<'_>| -> Res<()> {
        let ty = super::yaml::any_type(tc)?;
        if type_urls.iter().any(|t| t == ty) {
            Ok(())
        } else {
            Err(tc.path.key("@type").err(
                ErrorKind::Invalid,
                format!(
                    "type `{ty}` is not one of the filter's type_urls ({})",
                    type_urls.join(", ")
                ),
            ))
        }
    };
    if let Some(d) = &default {
        check_type(d)?;
    }
    match dynamic.extension_config(name) {
        Some(v) => {
            let root = Node {
                v,
                path: YamlPath::named(format!("ecds[{name}]")),
            };
            let e = root.obj(&["name", "typed_config"])?;
            let tc = e.req("typed_config")?;
            check_type(&tc)?;
            Ok(tc)
        }
        None => match default {
            Some(d) if without_warming => Ok(d),
            _ => Err(cd.err(
                ErrorKind::UnknownReference,
                format!(
                    "filter config `{name}` has not been delivered by ECDS (needs \
                     dynamic_resources.ads_config)"
                ),
            )),
        },
    }
}

enum HttpFilter {
    Wasm(Box<WasmFilter>),
    Router { suppress: bool },
}

/// One `http_filters` entry. The filter is chosen by its typed_config type
/// (as Envoy does), or by name when typed_config is absent.
fn http_filter(node: &Node<'_>, base_dir: &Path, dynamic: &dyn Resolver) -> Res<HttpFilter> {
    let f = node.obj(&["name", "typed_config", "config_discovery"])?;
    let name_node = f.req("name")?;
    let name = name_node.non_empty_str()?;
    let discovered;
    let typed_config = match (f.get("typed_config"), f.get("config_discovery")) {
        (Some(_), Some(cd)) => {
            return Err(cd.err(
                ErrorKind::Invalid,
                "only one of typed_config, config_discovery may be given",
            ));
        }
        (tc, None) => tc,
        (None, Some(cd)) => {
            discovered = discovered_config(&cd, name, dynamic)?;
            Some(discovered)
        }
    };
    let Some(tc) = typed_config else {
        return match name {
            ROUTER_NAME => Ok(HttpFilter::Router { suppress: false }),
            WASM_NAME => Err(f.path.key("typed_config").err(
                ErrorKind::Missing,
                "required field is missing (the Wasm plugin config)",
            )),
            other => Err(name_node.err(
                ErrorKind::Unsupported,
                format!(
                    "HTTP filter `{other}` is not supported; vessel runs \
                     {WASM_NAME} and {ROUTER_NAME}"
                ),
            )),
        };
    };
    let any = open_typed(&tc)?;
    match any.type_name {
        WASM => {
            let o = any.body.obj(&any.keys(&["config"]))?;
            let w = plugin_config(&o.req("config")?, base_dir)?;
            Ok(HttpFilter::Wasm(Box::new(w)))
        }
        ROUTER => {
            let o = any.body.obj(&any.keys(&["suppress_envoy_headers"]))?;
            let suppress = match o.get("suppress_envoy_headers") {
                Some(b) => b.bool()?,
                None => false,
            };
            Ok(HttpFilter::Router { suppress })
        }
        other => Err(any.type_path.err(
            ErrorKind::Unsupported,
            format!(
                "HTTP filter type `{other}` is not supported; vessel runs \
                 type.googleapis.com/{WASM} and type.googleapis.com/{ROUTER}"
            ),
        )),
    }
}
