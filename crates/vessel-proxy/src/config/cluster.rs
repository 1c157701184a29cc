//! `envoy.config.cluster.v3.Cluster`: static upstream clusters (the targets
//! of routes, and of `proxy_http_call`/`proxy_grpc_call`).

use std::net::IpAddr;
use std::time::Duration;

use super::any::open_typed;
use super::dynamic::{Resolver, ads_config_source};
use super::error::ErrorKind;
use super::lb::{HealthCheck, LoadBalancing, MetricsScrape, OutlierDetection};
use super::yaml::{Node, Res, YamlPath};

/// An upstream cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `name` (unique).
    pub name: String,
    /// `type` (default STATIC).
    pub kind: ClusterKind,
    /// `connect_timeout` (default 5 s).
    pub connect_timeout: Duration,
    /// `load_assignment.endpoints[].lb_endpoints[].endpoint`, flattened in
    /// document order.
    pub endpoints: Vec<Endpoint>,
    /// `lb_policy` (with `least_request_lb_config`) or
    /// `load_balancing_policy`, and `common_lb_config`.
    pub load_balancing: LoadBalancing,
    /// `health_checks[0]`: an active HTTP health check.
    pub health_check: Option<HealthCheck>,
    /// `outlier_detection`: passive health (consecutive 5xx).
    pub outlier_detection: Option<OutlierDetection>,
    /// `vessel_metrics_scrape` (a vessel extension): the endpoints' model-
    /// server metrics, scraped for load-aware policies.
    pub metrics_scrape: Option<MetricsScrape>,
    /// Whether upstream connections speak HTTP/2 (prior knowledge, as for
    /// gRPC): `http2_protocol_options: {}`, or
    /// `typed_extension_protocol_options` with
    /// `explicit_http_config.http2_protocol_options`.
    pub http2: bool,
    /// `dns_refresh_rate`: how often STRICT_DNS / LOGICAL_DNS names are
    /// resolved again (Envoy's default 5 s; must be over 1 ms). Ignored for
    /// STATIC clusters, as in Envoy.
    pub dns_refresh_rate: Duration,
    /// `transport_socket`: TLS to the endpoints (an `UpstreamTlsContext`).
    pub tls: Option<super::tls::UpstreamTls>,
}

/// Envoy's default `dns_refresh_rate`.
pub const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_millis(5000);

/// How a cluster's endpoint addresses are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterKind {
    /// `STATIC`: addresses are IP literals.
    Static,
    /// `EDS`: the endpoints (IP literals) come from the control plane; the
    /// cluster serves the `ClusterLoadAssignment` delivered last.
    Eds,
    /// `STRICT_DNS`: every address is resolved; all results are endpoints.
    StrictDns,
    /// `LOGICAL_DNS`: a single address; the first resolution result is used
    /// per new connection.
    LogicalDns,
}

/// One upstream endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `address.socket_address.address`: an IP literal (STATIC) or a DNS name.
    pub address: String,
    /// `address.socket_address.port_value`.
    pub port: u16,
    /// `endpoint.hostname`, if given (Envoy uses it for `auto_host_rewrite`
    /// and health checks).
    pub hostname: Option<String>,
}

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Reads one cluster.
pub(crate) fn cluster(
    node: &Node<'_>,
    base_dir: &std::path::Path,
    dynamic: &dyn Resolver,
) -> Res<Cluster> {
    let o = node.obj(&[
        "name",
        "type",
        "connect_timeout",
        "dns_refresh_rate",
        "lb_policy",
        "least_request_lb_config",
        "load_balancing_policy",
        "common_lb_config",
        "health_checks",
        "outlier_detection",
        "vessel_metrics_scrape",
        "load_assignment",
        "eds_cluster_config",
        "http2_protocol_options",
        "typed_extension_protocol_options",
        "transport_socket",
    ])?;
    let name = o.req("name")?.non_empty_str()?.to_owned();
    let kind = match o.get("type") {
        None => ClusterKind::Static,
        Some(t) => match t.enumeration(
            &["STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS"],
            &["ORIGINAL_DST"],
        )? {
            "STRICT_DNS" => ClusterKind::StrictDns,
            "EDS" => ClusterKind::Eds,
            "LOGICAL_DNS" => ClusterKind::LogicalDns,
            _ => ClusterKind::Static,
        },
    };
    let connect_timeout = match o.get("connect_timeout") {
        None => Duration::from_secs(5),
        Some(t) => {
            let d = t.duration()?;
            if d.is_zero() {
                return Err(t.err(ErrorKind::Invalid, "must be greater than 0s"));
            }
            d
        }
    };
    let dns_refresh_rate = match o.get("dns_refresh_rate") {
        None => DEFAULT_DNS_REFRESH_RATE,
        Some(t) => {
            let d = t.duration()?;
            if d <= Duration::from_millis(1) {
                return Err(t.err(ErrorKind::Invalid, "must be greater than 0.001s"));
            }
            d
        }
    };
    let mut load_balancing = match o.get("load_balancing_policy") {
        Some(p) => {
            for other in ["lb_policy", "least_request_lb_config"] {
                if let Some(n) = o.get(other) {
                    return Err(n.err(
                        ErrorKind::Invalid,
                        "cannot be combined with load_balancing_policy",
                    ));
                }
            }
            super::lb::load_balancing_policy(&p)?
        }
        None => LoadBalancing {
            policy: super::lb::lb_policy(o.get("lb_policy"), o.get("least_request_lb_config"))?,
            ..LoadBalancing::default()
        },
    };
    load_balancing.panic_threshold_bp = match o.get("common_lb_config") {
        Some(c) => super::lb::panic_threshold(&c)?,
        None => super::lb::DEFAULT_PANIC_THRESHOLD_BP,
    };
    let health_check = o
        .get("health_checks")
        .map(|h| super::lb::health_checks(&h))
        .transpose()?
        .flatten();
    let outlier_detection = o
        .get("outlier_detection")
        .map(|n| super::lb::outlier_detection(&n))
        .transpose()?;
    let metrics_scrape = o
        .get("vessel_metrics_scrape")
        .map(|n| super::lb::metrics_scrape(&n))
        .transpose()?;

    let eds_assignment = match (kind, o.get("eds_cluster_config")) {
        (ClusterKind::Eds, Some(e)) => {
            if let Some(la) = o.get("load_assignment") {
                return Err(la.err(
                    ErrorKind::Invalid,
                    "an EDS cluster takes its endpoints from EDS, not load_assignment",
                ));
            }
            let eo = e.obj(&["eds_config", "service_name"])?;
            ads_config_source(&eo.req("eds_config")?)?;
            let service = match eo.get("service_name") {
                Some(n) => n.non_empty_str()?.to_owned(),
                None => name.clone(),
            };
            match dynamic.endpoints(&service) {
                Some(v) => Some(Node {
                    v,
                    path: YamlPath::named(format!("eds[{service}]")),
                }),
                None => {
                    return Err(e.err(
                        ErrorKind::UnknownReference,
                        format!(
                            "the endpoints of `{service}` have not been delivered by EDS \
                             (needs dynamic_resources.ads_config)"
                        ),
                    ));
                }
            }
        }
        (ClusterKind::Eds, None) => {
            return Err(o.path.key("eds_cluster_config").err(
                ErrorKind::Missing,
                "an EDS cluster needs eds_cluster_config",
            ));
        }
        (_, Some(e)) => {
            return Err(e.err(
                ErrorKind::Invalid,
                "only an EDS cluster takes eds_cluster_config",
            ));
        }
        (_, None) => None,
    };
    let mut endpoints = Vec::new();
    if let Some(la) = eds_assignment.or_else(|| o.get("load_assignment")) {
        let la = la.obj(&["cluster_name", "endpoints"])?;
        la.req("cluster_name")?.non_empty_str()?;
        for locality in la.get("endpoints").map(|e| e.list()).unwrap_or_default() {
            let l = locality.obj(&["lb_endpoints"])?;
            for lb in l.get("lb_endpoints").map(|e| e.list()).unwrap_or_default() {
                let ep = lb.obj(&["endpoint"])?.req("endpoint")?;
                let e = ep.obj(&["address", "hostname"])?;
                let addr_node = e.req("address")?;
                let (address, port, at) = socket_address(&addr_node)?;
                if port == 0 {
                    return Err(at.err(ErrorKind::Invalid, "an endpoint needs a port_value"));
                }
                let host_path = addr_node.path.key("socket_address").key("address");
                if matches!(kind, ClusterKind::Static | ClusterKind::Eds)
                    && address.parse::<IpAddr>().is_err()
                {
                    return Err(host_path.err(
                        ErrorKind::Invalid,
                        format!(
                            "`{address}` is not an IP address; a STATIC cluster needs IP \
                             literals (use type: STRICT_DNS for host names)"
                        ),
                    ));
                }
                let hostname = e
                    .get("hostname")
                    .map(|h| h.str().map(str::to_owned))
                    .transpose()?;
                endpoints.push(Endpoint {
                    address: address.to_owned(),
                    port,
                    hostname,
                });
            }
        }
    }
    if kind == ClusterKind::LogicalDns && endpoints.len() != 1 {
        return Err(o.err(
            ErrorKind::Invalid,
            format!(
                "a LOGICAL_DNS cluster needs exactly one endpoint, found {}",
                endpoints.len()
            ),
        ));
    }

    let legacy_h2 = o
        .get("http2_protocol_options")
        .map(|h| h.obj(&[]).map(|_| h))
        .transpose()?;
    let mut http2 = legacy_h2.is_some();
    if let Some(t) = o.get("typed_extension_protocol_options") {
        for (key, value) in t.map()? {
            if key != HTTP_PROTOCOL_OPTIONS {
                return Err(value.err(
                    ErrorKind::Unsupported,
                    format!("not supported; supported keys here: {HTTP_PROTOCOL_OPTIONS}"),
                ));
            }
            let explicit_h2 = http_protocol_options(&value)?;
            if legacy_h2.is_some() {
                return Err(value.err(
                    ErrorKind::Invalid,
                    "cannot be combined with the deprecated http2_protocol_options",
                ));
            }
            http2 = explicit_h2;
        }
    }

    let tls = o
        .get("transport_socket")
        .map(|t| super::tls::upstream_tls_context(&t, base_dir))
        .transpose()?;

    Ok(Cluster {
        tls,
        name,
        kind,
        connect_timeout,
        endpoints,
        load_balancing,
        health_check,
        outlier_detection,
        metrics_scrape,
        http2,
        dns_refresh_rate,
    })
}

/// `HttpProtocolOptions` with `explicit_http_config`: returns whether it
/// selects HTTP/2.
fn http_protocol_options(node: &Node<'_>) -> Res<bool> {
    let any = open_typed(node)?;
    if any.type_name != HTTP_PROTOCOL_OPTIONS {
        return Err(any.type_path.err(
            ErrorKind::Unsupported,
            format!(
                "`{}` is not supported here; expected type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
                any.type_name
            ),
        ));
    }
    let o = any.body.obj(&any.keys(&["explicit_http_config"]))?;
    let e = o.req("explicit_http_config")?;
    let eo = e.obj(&["http_protocol_options", "http2_protocol_options"])?;
    match (
        eo.get("http_protocol_options"),
        eo.get("http2_protocol_options"),
    ) {
        (Some(h1), None) => {
            h1.obj(&[])?;
            Ok(false)
        }
        (None, Some(h2)) => {
            h2.obj(&[])?;
            Ok(true)
        }
        (None, None) => Err(e.err(
            ErrorKind::Missing,
            "one of http_protocol_options, http2_protocol_options is required",
        )),
        (Some(_), Some(h2)) => Err(h2.err(
            ErrorKind::Invalid,
            "only one of http_protocol_options, http2_protocol_options may be given",
        )),
    }
}

/// Reads `address.socket_address.{address, port_value, protocol}`. Returns
/// the address text, the port (0 if absent) and the `socket_address` node.
pub(crate) fn socket_address<'a>(node: &Node<'a>) -> Res<(&'a str, u16, Node<'a>)> {
    let a = node.obj(&["socket_address"])?;
    let sa = a.req("socket_address")?;
    let s = sa.obj(&["address", "port_value", "protocol"])?;
    if let Some(p) = s.get("protocol") {
        p.enumeration(&["TCP"], &["UDP"])?;
    }
    let address = s.req("address")?.non_empty_str()?;
    let port = s
        .get("port_value")
        .map(|p| p.port())
        .transpose()?
        .unwrap_or(0);
    Ok((address, port, sa))
}

/// Reads an address that must be an IP literal (listeners, admin).
pub(crate) fn ip_socket_address(node: &Node<'_>) -> Res<std::net::SocketAddr> {
    let (address, port, sa) = socket_address(node)?;
    let ip: IpAddr = address.parse().map_err(|_| {
        sa.path.key("address").err(
            ErrorKind::Invalid,
            format!("`{address}` is not an IP address (host names are not resolved here)"),
        )
    })?;
    Ok(std::net::SocketAddr::new(ip, port))
}
