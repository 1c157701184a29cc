//! The admin listener: `GET /ready`, `GET /stats`,
//! `GET /stats/prometheus` and `GET /listeners` (`?format=json`), in
//! Envoy's formats, and `POST /reload` (hot reload; see the parent module).
//!
//! `/listeners` tells the bound address of each listener serving now
//! (reloads add, move and remove listeners), the port the system chose for
//! a `port_value: 0` listener included: `name::ip:port` lines, or
//! with `?format=json` Envoy's `ListenersStatus`:
//! `{"listener_statuses":[{"name":"main","local_address":{"socket_address":
//! {"address":"127.0.0.1","port_value":41023}}}]}`.
//!
//! Besides the listeners' counters, `/stats` has each plugin's failure and
//! reload counters under Envoy's plugin scope `wasm.<plugin name>.`
//! (`vm_reload_success`, `vm_reload_failure`, `vm_reload_backoff`, and
//! vessel's `vm_failures`; ABI reference §6.6), and `vessel.reload.success`
//! / `vessel.reload.failure` for the hot reloads, and the `wasm_remote.*`
//! counters of remote wasm code (`run::remote`).
//!
//! Guest metrics (ABI reference §4.6) are named `wasmcustom.<name>` in
//! Envoy, a registered custom stat namespace: `/stats` prints them without
//! the prefix, and `/stats/prometheus` prints them sanitized and without
//! the `envoy_` prefix that Envoy's own stats get (a name that starts with
//! a digit after sanitizing is left out, as Envoy does).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use http::{Method, Request, Response, StatusCode, header};
use vessel_host::shared::metrics::{MetricValue, Metrics};

use super::access::ListenerStats;
use super::dns::DnsStats;
use super::{PluginStatsMap, ReloadCounters, ReloadError};
use vessel_hyper::VesselBody;

/// What the admin endpoints read.
pub(crate) struct Admin {
    pub(crate) metrics: Arc<Metrics>,
    /// `wasm.<plugin>.policy_fallbacks`.
    pub(crate) fallbacks: super::router::PolicyFallbacks,
    pub(crate) plugins: PluginStatsMap,
    /// `wasm_remote.*` (remote wasm code).
    pub(crate) remote: Arc<super::remote::RemoteStats>,
    pub(crate) reloads: Arc<ReloadCounters>,
    /// The listeners and clusters serving now (replaced by each reload).
    pub(crate) view: SharedView,
    /// The xDS client (`/config_dump`, `control_plane.*` and the xDS
    /// update counters), when the config has `dynamic_resources`.
    pub(crate) xds: Option<Arc<crate::xds::Shared>>,
}

/// The admin's view of what serves, shared with the reloader.
pub(crate) type SharedView = Arc<RwLock<AdminView>>;

/// The listeners and clusters serving now, for the admin.
#[derive(Default)]
pub(crate) struct AdminView {
    /// Each HTTP connection manager's counters (one per stat prefix).
    pub(crate) listeners: Vec<Arc<ListenerStats>>,
    /// Stats of the DNS clusters.
    pub(crate) clusters: Vec<Arc<DnsStats>>,
    /// Every cluster's balancer (load-balancing stats, `/clusters`).
    pub(crate) balancers: Vec<Arc<super::lb::Balancer>>,
    /// Every tcp_proxy's counters (one per stat prefix).
    pub(crate) tcp: Vec<Arc<super::tcp::TcpStats>>,
    /// Each listener's name and bound address, in config order.
    pub(crate) bound: Vec<(String, SocketAddr)>,
}

/// The answer of the admin `GET /listeners?format=json`, in Envoy's shape
/// (`admin.v3.ListenersStatus`): what `vessel run` serves, and what a
/// client reads from `vessel run` or Envoy to learn the port of a
/// `port_value: 0` listener ([`ListenersStatus::address_of`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListenersStatus {
    /// One entry per listener, in config order. Envoy's JSON leaves out an
    /// empty list (proto3): its answer with no listener is `{}`.
    #[serde(default)]
    pub listener_statuses: Vec<ListenerStatus>,
}

/// One listener of [`ListenersStatus`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListenerStatus {
    /// The listener's `name`.
    pub name: String,
    /// The address it is bound to.
    pub local_address: Address,
}

/// Envoy's `core.v3.Address` (its socket form).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Address {
    /// The IP address and port.
    pub socket_address: SocketAddress,
}

/// Envoy's `core.v3.SocketAddress`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SocketAddress {
    /// The IP address, as text.
    #[serde(default)]
    pub address: String,
    /// The bound port (never 0 once bound; Envoy's JSON leaves a 0 out).
    #[serde(default)]
    pub port_value: u16,
}

impl ListenersStatus {
    /// Reads an admin `/listeners?format=json` answer.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// The bound address of listener `name`: `None` if there is no such
    /// listener, its address is not an IP, or its port is 0 (not bound).
    pub fn address_of(&self, name: &str) -> Option<SocketAddr> {
        let status = self.listener_statuses.iter().find(|l| l.name == name)?;
        let sa = &status.local_address.socket_address;
        let ip: std::net::IpAddr = sa.address.parse().ok()?;
        (sa.port_value != 0).then_some(SocketAddr::new(ip, sa.port_value))
    }
}

/// One stat for rendering: (Envoy name, value).
enum Stat {
    Counter(u64),
    Gauge(i64),
    Histogram { count: u64, sum: u64 },
}

impl Admin {
    /// Every stat, sorted by name. `custom` is true for guest metrics.
    fn stats(&self) -> Vec<(String, bool, Stat)> {
        let mut out = Vec::new();
        let view = self.view();
        for l in &view.listeners {
            for (name, value) in l.counters() {
                out.push((name, false, Stat::Counter(value)));
            }
        }
        for t in &view.tcp {
            for (name, value) in t.counters() {
                out.push((name, false, Stat::Counter(value)));
            }
        }
        for c in &view.clusters {
            for (name, value) in c.counters() {
                out.push((name, false, Stat::Counter(value)));
            }
            for (name, value) in c.gauges() {
                out.push((name, false, Stat::Gauge(value)));
            }
        }
        for b in &view.balancers {
            for (name, value) in b.counters() {
                out.push((name, false, Stat::Counter(value)));
            }
            for (name, value) in b.gauges() {
                out.push((name, false, Stat::Gauge(value)));
            }
        }
        for (plugin, n) in self
            .fallbacks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            out.push((
                format!("wasm.{plugin}.policy_fallbacks"),
                false,
                Stat::Counter(*n),
            ));
        }
        out.push(("server.live".to_owned(), false, Stat::Gauge(1)));
        if let Some(x) = &self.xds {
            for (name, counter, v) in x.stat_lines() {
                let stat = if counter {
                    Stat::Counter(u64::try_from(v).unwrap_or(0))
                } else {
                    Stat::Gauge(v)
                };
                out.push((name, false, stat));
            }
        }
        for (plugin, stats) in self
            .plugins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            for (name, value) in stats.counters() {
                out.push((format!("wasm.{plugin}.{name}"), false, Stat::Counter(value)));
            }
        }
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        out.push((
            "vessel.reload.success".to_owned(),
            false,
            Stat::Counter(load(&self.reloads.success)),
        ));
        out.push((
            "vessel.reload.failure".to_owned(),
            false,
            Stat::Counter(load(&self.reloads.failure)),
        ));
        for (name, value) in self.remote.counters() {
            out.push((name.to_owned(), false, Stat::Counter(value)));
        }
        for (name, value) in self.metrics.snapshot() {
            let stat = match value {
                MetricValue::Counter(c) => Stat::Counter(c),
                MetricValue::Gauge(g) => Stat::Gauge(g),
                MetricValue::Histogram(h) => Stat::Histogram {
                    count: h.count,
                    sum: h.sum,
                },
                // A kind a newer vessel-host reports and /stats cannot show.
                other => {
                    log::warn!(target: "vessel::admin", "metric `{name}`: cannot show {other:?}; left out of /stats");
                    continue;
                }
            };
            out.push((name, true, stat));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// `/stats`: `name: value` lines.
    pub(crate) fn text(&self) -> String {
        let mut s = String::new();
        for (name, _, stat) in self.stats() {
            let _ = match stat {
                Stat::Counter(v) => writeln!(s, "{name}: {v}"),
                Stat::Gauge(v) => writeln!(s, "{name}: {v}"),
                Stat::Histogram { count, sum } => writeln!(s, "{name}: count={count} sum={sum}"),
            };
        }
        s
    }

    /// `/stats/prometheus`: the text exposition format.
    pub(crate) fn prometheus(&self) -> String {
        let mut s = String::new();
        for (name, custom, stat) in self.stats() {
            let Some(name) = prometheus_name(&name, custom) else {
                continue;
            };
            let _ = match stat {
                Stat::Counter(v) => writeln!(s, "# TYPE {name} counter\n{name}{{}} {v}"),
                Stat::Gauge(v) => writeln!(s, "# TYPE {name} gauge\n{name}{{}} {v}"),
                Stat::Histogram { count, sum } => writeln!(
                    s,
                    "# TYPE {name} histogram\n{name}_bucket{{le=\"+Inf\"}} {count}\n\
                     {name}_sum{{}} {sum}\n{name}_count{{}} {count}"
                ),
            };
        }
        s
    }

    fn view(&self) -> std::sync::RwLockReadGuard<'_, AdminView> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// `/listeners`: `name::address` lines, or Envoy's JSON with `json`.
    pub(crate) fn listeners(&self, json: bool) -> String {
        let view = self.view();
        if !json {
            return view
                .bound
                .iter()
                .map(|(name, addr)| format!("{name}::{addr}\n"))
                .collect();
        }
        let doc = ListenersStatus {
            listener_statuses: view
                .bound
                .iter()
                .map(|(name, addr)| ListenerStatus {
                    name: name.clone(),
                    local_address: Address {
                        socket_address: SocketAddress {
                            address: addr.ip().to_string(),
                            port_value: addr.port(),
                        },
                    },
                })
                .collect(),
        };
        serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
    }

    /// Serves one admin request.
    pub(crate) fn handle<B>(&self, req: &Request<B>) -> Response<VesselBody> {
        const TEXT: &str = "text/plain; charset=UTF-8";
        let (status, body, content_type) = if req.method() != Method::GET {
            (StatusCode::METHOD_NOT_ALLOWED, String::new(), TEXT)
        } else {
            match req.uri().path() {
                "/ready" => (StatusCode::OK, "LIVE\n".to_owned(), TEXT),
                "/stats" => (StatusCode::OK, self.text(), TEXT),
                "/stats/prometheus" => (
                    StatusCode::OK,
                    self.prometheus(),
                    "text/plain; version=0.0.4",
                ),
                "/listeners" if query_has(req.uri().query(), "format", "json") => {
                    (StatusCode::OK, self.listeners(true), "application/json")
                }
                "/listeners" => (StatusCode::OK, self.listeners(false), TEXT),
                "/config_dump" => match &self.xds {
                    Some(x) => (StatusCode::OK, x.config_dump(), "application/json"),
                    None => (
                        StatusCode::NOT_FOUND,
                        "vessel serves /config_dump when the config has dynamic_resources\n"
                            .to_owned(),
                        TEXT,
                    ),
                },
                "/clusters" => {
                    let mut text = String::new();
                    for b in &self.view().balancers {
                        b.clusters_text(&mut text);
                    }
                    (StatusCode::OK, text, TEXT)
                }
                _ => (StatusCode::NOT_FOUND, "invalid path\n".to_owned(), TEXT),
            }
        };
        let mut resp = Response::new(VesselBody::full(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        resp
    }
}

/// Whether the query string has `key=value`.
fn query_has(query: Option<&str>, key: &str, value: &str) -> bool {
    query
        .unwrap_or_default()
        .split('&')
        .any(|kv| kv.split_once('=') == Some((key, value)))
}

fn text_response(status: StatusCode, body: String) -> Response<VesselBody> {
    let mut resp = Response::new(VesselBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    resp
}

/// `POST /reload`'s answer: 200 with the summary, or the error's status
/// (409: needs a restart; 500: anything else) with the error.
pub(crate) fn reload_response(result: Result<String, ReloadError>) -> Response<VesselBody> {
    match result {
        Ok(summary) => text_response(StatusCode::OK, format!("{summary}\n")),
        Err(e) => text_response(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!("reload refused, the old config keeps serving: {e}\n"),
        ),
    }
}

/// `/reload` with another method than POST.
pub(crate) fn post_only() -> Response<VesselBody> {
    text_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "This endpoint is only available via POST\n".to_owned(),
    )
}

/// Envoy's Prometheus name: characters outside `[a-zA-Z0-9_]` become `_`;
/// Envoy's own stats get `envoy_`; custom ones must not start with a digit.
fn prometheus_name(name: &str, custom: bool) -> Option<String> {
    let sanitized: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !custom {
        return Some(format!("envoy_{sanitized}"));
    }
    match sanitized.chars().next() {
        Some(c) if !c.is_ascii_digit() => Some(sanitized),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use vessel_host::MetricType;

    use super::*;

    fn admin() -> Admin {
        let metrics = Arc::new(Metrics::default());
        metrics.define(MetricType::Counter, "reqs.total");
        metrics.define(MetricType::Gauge, "temp");
        metrics.define(MetricType::Histogram, "lat");
        metrics.define(MetricType::Counter, "9lives");
        let plugins = PluginStatsMap::default();
        plugins
            .lock()
            .expect("not poisoned")
            .insert("auth".to_owned(), Arc::default());
        Admin {
            metrics,
            fallbacks: Default::default(),
            plugins,
            remote: Arc::default(),
            reloads: Arc::default(),
            xds: None,
            view: Arc::new(RwLock::new(AdminView {
                clusters: vec![Arc::new(DnsStats::new("named"))],
                bound: vec![
                    ("main".to_owned(), SocketAddr::from(([127, 0, 0, 1], 41023))),
                    ("second".to_owned(), "[::1]:8080".parse().expect("address")),
                ],
                ..AdminView::default()
            })),
        }
    }

    fn get(path: &str) -> (StatusCode, String, String) {
        let req = Request::get(path).body(()).expect("request");
        let resp = admin().handle(&req);
        let content_type = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .to_owned();
        let status = resp.status();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let body = rt
            .block_on(http_body_util::BodyExt::collect(resp.into_body()))
            .expect("body")
            .to_bytes();
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// Envoy's answers leave out what is empty or 0 (proto3 JSON): with no
    /// listener yet (a proxy waiting for its control plane) the answer is
    /// `{}`, and an unbound listener has no `port_value`.
    #[test]
    fn envoys_answers_without_empty_fields_are_read() {
        let none = ListenersStatus::from_json(b"{}").expect("no listeners");
        assert!(none.listener_statuses.is_empty());
        assert_eq!(none.address_of("main"), None);
        let unbound = ListenersStatus::from_json(
            br#"{"listener_statuses":[{"name":"main","local_address":{"socket_address":{"address":"127.0.0.1"}}}]}"#,
        )
        .expect("an unbound listener");
        assert_eq!(unbound.listener_statuses.len(), 1);
        assert_eq!(unbound.address_of("main"), None);
    }

    /// `/listeners?format=json` has Envoy's shape: a `listener_statuses`
    /// list of `name` and `local_address.socket_address.{address,
    /// port_value}`; without the format, `name::address` lines.
    #[test]
    fn listeners_in_envoys_shapes() {
        let (status, content_type, body) = get("/listeners?format=json");
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "application/json")
        );
        let status = ListenersStatus::from_json(body.as_bytes()).expect("ListenersStatus");
        assert_eq!(
            status.address_of("main"),
            Some(SocketAddr::from(([127, 0, 0, 1], 41023)))
        );
        assert_eq!(status.address_of("second"), "[::1]:8080".parse().ok());
        assert_eq!(status.address_of("third"), None);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let statuses = v["listener_statuses"].as_array().expect("a list");
        assert_eq!(statuses.len(), 2, "{body}");
        assert_eq!(statuses[0]["name"], "main");
        let sa = &statuses[0]["local_address"]["socket_address"];
        assert_eq!(sa["address"], "127.0.0.1");
        assert_eq!(sa["port_value"], 41023);
        assert_eq!(
            statuses[1]["local_address"]["socket_address"]["address"],
            "::1"
        );
        let (status, content_type, body) = get("/listeners");
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        assert_eq!(body, "main::127.0.0.1:41023\nsecond::[::1]:8080\n");
        let (_, content_type, _) = get("/listeners?format=text&x=1");
        assert!(content_type.starts_with("text/plain"), "{content_type}");
    }

    #[test]
    fn text_lists_guest_metrics_without_prefix() {
        let text = admin().text();
        assert!(text.contains("reqs.total: 0\n"), "{text}");
        assert!(text.contains("temp: 0\n"), "{text}");
        assert!(text.contains("lat: count=0 sum=0\n"), "{text}");
        assert!(!text.contains("wasmcustom"), "{text}");
        assert!(text.contains("cluster.named.update_success: 0\n"), "{text}");
        assert!(
            text.contains("cluster.named.membership_total: 0\n"),
            "{text}"
        );
    }

    #[test]
    fn prometheus_sanitizes_and_types() {
        let p = admin().prometheus();
        assert!(
            p.contains("# TYPE reqs_total counter\nreqs_total{} 0\n"),
            "{p}"
        );
        assert!(p.contains("# TYPE temp gauge\n"), "{p}");
        assert!(p.contains("# TYPE lat histogram\n"), "{p}");
        assert!(p.contains("lat_count{} 0\n"), "{p}");
        assert!(p.contains("envoy_server_live{} 1\n"), "{p}");
        assert!(!p.contains("9lives"), "{p}");
    }

    #[test]
    fn plugin_counters_use_envoys_wasm_scope() {
        let text = admin().text();
        for name in [
            "vm_failures",
            "vm_reload_backoff",
            "vm_reload_failure",
            "vm_reload_success",
        ] {
            assert!(text.contains(&format!("wasm.auth.{name}: 0\n")), "{text}");
        }
        assert!(text.contains("vessel.reload.success: 0\n"), "{text}");
        let p = admin().prometheus();
        assert!(
            p.contains("# TYPE envoy_wasm_auth_vm_reload_success counter\n"),
            "{p}"
        );
    }
}
