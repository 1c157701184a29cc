//! `envoy.config.listener.v3.Listener` with one HTTP connection manager
//! (`envoy.extensions.filters.network.http_connection_manager.v3`) and its
//! HTTP filter chain: `envoy.filters.http.wasm` filters (ABI reference §9)
//! followed by `envoy.filters.http.router`.

use std::net::SocketAddr;
use std::path::Path;

use super::any::open_typed;
use super::cluster::ip_socket_address;
use super::error::ErrorKind;
use super::route::{RouteConfig, route_config};
use super::wasm::{WasmFilter, plugin_config};
use super::yaml::{Node, Res};

/// A listener: an address, an HTTP codec, a route table and the wasm filters
/// every request passes through (in order) before the router.
#[derive(Debug, Clone)]
pub struct Listener {
    /// `name` (unique). An unnamed listener is called `listener_<index>`.
    pub name: String,
    /// `address.socket_address`: an IP literal and a port.
    pub addr: SocketAddr,
    /// The connection manager's `stat_prefix`.
    pub stat_prefix: String,
    /// The connection manager's `codec_type` (default AUTO).
    pub codec: Codec,
    /// The connection manager's `route_config`.
    pub routes: RouteConfig,
    /// The `envoy.filters.http.wasm` entries of `http_filters`, in order.
    pub wasm_filters: Vec<WasmFilter>,
    /// `per_connection_buffer_limit_bytes`: the most a stopped filter makes
    /// the proxy buffer of a body (Envoy's default: 1 MiB). Above it a
    /// request gets 413 and a response 500 (ABI reference §11.2).
    pub buffer_limit: usize,
    /// The router's `suppress_envoy_headers`: when true the router adds no
    /// `x-envoy-upstream-service-time` to responses.
    pub suppress_envoy_headers: bool,
}

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

const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const WASM: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
const ROUTER_NAME: &str = "envoy.filters.http.router";
const WASM_NAME: &str = "envoy.filters.http.wasm";

/// Reads one listener (`index` names an unnamed one).
pub(crate) fn listener(node: &Node<'_>, index: usize, base_dir: &Path) -> Res<Listener> {
    let o = node.obj(&[
        "name",
        "address",
        "filter_chains",
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

    let chains_node = o.req("filter_chains")?;
    let chains = chains_node.list();
    let [chain] = chains.as_slice() else {
        return Err(chains_node.err(
            ErrorKind::Unsupported,
            format!(
                "exactly one filter chain is supported, found {}",
                chains.len()
            ),
        ));
    };
    let c = chain.obj(&["name", "filters"])?;
    if let Some(n) = c.get("name") {
        n.str()?;
    }
    let filters_node = c.req("filters")?;
    let filters = filters_node.list();
    let [filter] = filters.as_slice() else {
        return Err(filters_node.err(
            ErrorKind::Unsupported,
            format!(
                "exactly one network filter (envoy.filters.network.http_connection_manager) \
                 is supported, found {}",
                filters.len()
            ),
        ));
    };
    let f = filter.obj(&["name", "typed_config"])?;
    f.req("name")?.non_empty_str()?;
    let tc = f.req("typed_config")?;
    let any = open_typed(&tc)?;
    if any.type_name != HCM {
        return Err(any.type_path.err(
            ErrorKind::Unsupported,
            format!(
                "network filter `{}` is not supported; only \
                 type.googleapis.com/{HCM} is",
                any.type_name
            ),
        ));
    }
    let h =
        any.body
            .obj(&any.keys(&["stat_prefix", "codec_type", "route_config", "http_filters"]))?;
    let stat_prefix = h.req("stat_prefix")?.non_empty_str()?.to_owned();
    let codec = match h.get("codec_type") {
        None => Codec::Auto,
        Some(c) => match c.enumeration(&["AUTO", "HTTP1", "HTTP2"], &["HTTP3"])? {
            "HTTP1" => Codec::Http1,
            "HTTP2" => Codec::Http2,
            _ => Codec::Auto,
        },
    };
    let routes = route_config(&h.req("route_config")?)?;

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
        match http_filter(&entry, base_dir)? {
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

    Ok(Listener {
        name,
        addr,
        stat_prefix,
        codec,
        routes,
        wasm_filters,
        buffer_limit,
        suppress_envoy_headers,
    })
}

enum HttpFilter {
    Wasm(Box<WasmFilter>),
    Router { suppress: bool },
}

/// One `http_filters` entry. The filter is chosen by its typed_config type
/// (as Envoy does), or by name when typed_config is absent.
fn http_filter(node: &Node<'_>, base_dir: &Path) -> Res<HttpFilter> {
    let f = node.obj(&["name", "typed_config"])?;
    let name_node = f.req("name")?;
    let name = name_node.non_empty_str()?;
    let Some(tc) = f.get("typed_config") else {
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
