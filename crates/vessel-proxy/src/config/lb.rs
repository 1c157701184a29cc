//! A cluster's load balancing: `lb_policy` or `load_balancing_policy`
//! (with Envoy's override-host policy, which the Gateway API Inference
//! Extension's endpoint pickers use), `common_lb_config`, active
//! `health_checks` and passive `outlier_detection`.

use std::time::Duration;

use super::any::open_typed;
use super::error::ErrorKind;
use super::yaml::{Node, Res};

/// How a cluster picks an endpoint for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LbPolicy {
    /// `ROUND_ROBIN` (Envoy's default): endpoints in turn.
    #[default]
    RoundRobin,
    /// `LEAST_REQUEST`: the fewest requests in flight among `choice_count`
    /// endpoints drawn at random (Envoy's power-of-two-choices when the
    /// weights are equal, as they are in vessel).
    LeastRequest {
        /// `least_request_lb_config.choice_count` (default 2, at least 2).
        choice_count: u32,
    },
    /// `RANDOM`: an endpoint drawn uniformly.
    Random,
}

/// Envoy's default `choice_count` for `LEAST_REQUEST`.
pub const DEFAULT_CHOICE_COUNT: u32 = 2;

/// A cluster's load-balancing settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancing {
    /// The policy (with `override_host`: its `fallback_policy`).
    pub policy: LbPolicy,
    /// `envoy.load_balancing_policies.override_host`: the request headers
    /// that may name the endpoint (`ip:port`, or a comma-separated list
    /// tried in order). An endpoint named there is used when it is in the
    /// cluster and healthy; otherwise the policy above picks.
    pub override_host_headers: Vec<String>,
    /// `common_lb_config.healthy_panic_threshold`, in hundredths of a
    /// percent (Envoy's default 50% = 5000). Below it the cluster is in
    /// panic mode and balances over every endpoint, healthy or not.
    pub panic_threshold_bp: u32,
}

/// Envoy's default `healthy_panic_threshold` (50%), in hundredths of a percent.
pub const DEFAULT_PANIC_THRESHOLD_BP: u32 = 5000;

impl Default for LoadBalancing {
    fn default() -> Self {
        Self {
            policy: LbPolicy::RoundRobin,
            override_host_headers: Vec::new(),
            panic_threshold_bp: DEFAULT_PANIC_THRESHOLD_BP,
        }
    }
}

/// An active HTTP health check (`health_checks[0]` with `http_health_check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `timeout` for one check (required, > 0).
    pub timeout: Duration,
    /// `interval` between checks of an endpoint (required, > 0).
    pub interval: Duration,
    /// `unhealthy_threshold`: failed checks in a row that mark a healthy
    /// endpoint unhealthy (required, ≥ 1).
    pub unhealthy_threshold: u32,
    /// `healthy_threshold`: passed checks in a row that mark an unhealthy
    /// endpoint healthy again (required, ≥ 1). An endpoint's first check
    /// counts alone, as in Envoy.
    pub healthy_threshold: u32,
    /// `http_health_check.path` (required).
    pub path: String,
    /// `http_health_check.host`: the `Host` of the check (default: the
    /// cluster's name, as in Envoy).
    pub host: Option<String>,
    /// `http_health_check.expected_statuses`: `[start, end)` ranges; default
    /// `[200, 201)`.
    pub expected_statuses: Vec<(u16, u16)>,
}

/// Passive health: `outlier_detection` (the consecutive-5xx detector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    /// `consecutive_5xx` (default 5): 5xx answers (or connect failures and
    /// resets) in a row that eject an endpoint.
    pub consecutive_5xx: u32,
    /// `base_ejection_time` (default 30 s): an endpoint ejected for the
    /// n-th time stays out n × this, up to `max_ejection_time`.
    pub base_ejection_time: Duration,
    /// `max_ejection_time` (default 300 s).
    pub max_ejection_time: Duration,
    /// `max_ejection_percent` (default 10): at most this share of the
    /// endpoints is ejected at once, but always at least one, as in Envoy.
    pub max_ejection_percent: u32,
    /// `enforcing_consecutive_5xx` (default 100): the percentage of
    /// detections that eject.
    pub enforcing_consecutive_5xx: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            enforcing_consecutive_5xx: 100,
        }
    }
}

const LB_TYPES: [(&str, &str); 3] = [
    (
        "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
        "ROUND_ROBIN",
    ),
    (
        "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
        "LEAST_REQUEST",
    ),
    (
        "envoy.extensions.load_balancing_policies.random.v3.Random",
        "RANDOM",
    ),
];
const OVERRIDE_HOST: &str =
    "envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost";

/// Reads `lb_policy` (an enum name) with `least_request_lb_config`.
pub(crate) fn lb_policy(policy: Option<Node<'_>>, least: Option<Node<'_>>) -> Res<LbPolicy> {
    let name = match &policy {
        None => "ROUND_ROBIN",
        Some(p) => p.enumeration(
            &["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"],
            &[
                "RING_HASH",
                "MAGLEV",
                "CLUSTER_PROVIDED",
                "LOAD_BALANCING_POLICY_CONFIG",
            ],
        )?,
    };
    if let Some(l) = &least
        && name != "LEAST_REQUEST"
    {
        return Err(l.err(
            ErrorKind::Invalid,
            "least_request_lb_config needs lb_policy: LEAST_REQUEST",
        ));
    }
    named_policy(name, least.as_ref())
}

fn named_policy(name: &str, least: Option<&Node<'_>>) -> Res<LbPolicy> {
    Ok(match name {
        "LEAST_REQUEST" => LbPolicy::LeastRequest {
            choice_count: match least {
                None => DEFAULT_CHOICE_COUNT,
                Some(l) => choice_count(l)?,
            },
        },
        "RANDOM" => LbPolicy::Random,
        _ => LbPolicy::RoundRobin,
    })
}

/// `least_request_lb_config` / `LeastRequest`: `choice_count` only.
fn choice_count(node: &Node<'_>) -> Res<u32> {
    choice_count_in(node, &["choice_count"])
}

fn choice_count_in(node: &Node<'_>, keys: &[&str]) -> Res<u32> {
    let o = node.obj(keys)?;
    match o.get("choice_count") {
        None => Ok(DEFAULT_CHOICE_COUNT),
        Some(c) => {
            let n = wrapped_u32(&c)?;
            if n < 2 {
                return Err(c.err(ErrorKind::Invalid, "must be at least 2"));
            }
            Ok(n)
        }
    }
}

/// A `google.protobuf.UInt32Value`: `{value: n}` or, as protobuf's JSON
/// form allows, the bare number.
fn wrapped_u32(node: &Node<'_>) -> Res<u32> {
    if node.u32().is_ok() {
        return node.u32();
    }
    node.obj(&["value"])?.req("value")?.u32()
}

/// Reads `load_balancing_policy.policies[0].typed_extension_config`: one
/// of the three built-in policies, or `override_host` with one of them as
/// its `fallback_policy`.
pub(crate) fn load_balancing_policy(node: &Node<'_>) -> Res<LoadBalancing> {
    let typed = first_policy(node)?;
    let any = open_typed(&typed)?;
    if any.type_name == OVERRIDE_HOST {
        let o = any
            .body
            .obj(&any.keys(&["override_host_sources", "fallback_policy"]))?;
        let mut headers = Vec::new();
        for source in o
            .get("override_host_sources")
            .map(|s| s.list())
            .unwrap_or_default()
        {
            let s = source.obj(&["header", "metadata"])?;
            match (s.get("header"), s.get("metadata")) {
                (Some(h), None) => headers.push(h.non_empty_str()?.to_ascii_lowercase()),
                (None, Some(m)) => {
                    // Dynamic metadata (`envoy.lb`) is set by Envoy's own
                    // filters (ext_proc, set_metadata); proxy-wasm cannot
                    // set it and vessel has none. The source is accepted,
                    // so the Inference Extension's standard config loads,
                    // and never names a host.
                    m.obj(&["key", "path"])?;
                    log::warn!(
                        "{}: metadata override-host sources never match in vessel (no dynamic metadata); the header sources are used",
                        source.path.display()
                    );
                }
                _ => {
                    return Err(source.err(
                        ErrorKind::Invalid,
                        "exactly one of header, metadata is required",
                    ));
                }
            }
        }
        let fallback = o.req("fallback_policy")?;
        let fallback_typed = first_policy(&fallback)?;
        let policy = builtin(&fallback_typed)?;
        return Ok(LoadBalancing {
            policy,
            override_host_headers: headers,
            ..LoadBalancing::default()
        });
    }
    Ok(LoadBalancing {
        policy: builtin(&typed)?,
        ..LoadBalancing::default()
    })
}

/// `policies[0].typed_extension_config.typed_config` (only one policy is
/// supported: Envoy uses the first it knows, and vessel knows all it
/// accepts).
fn first_policy<'a>(node: &Node<'a>) -> Res<Node<'a>> {
    let o = node.obj(&["policies"])?;
    let policies = o.req("policies")?.list();
    let Some(first) = policies.first() else {
        return Err(o.err(ErrorKind::Missing, "policies needs one entry"));
    };
    if policies.len() > 1 {
        return Err(policies[1].err(
            ErrorKind::Unsupported,
            "only one policy is supported (vessel knows every policy it accepts, so there is nothing to fall back to)",
        ));
    }
    let p = first.obj(&["typed_extension_config"])?;
    let tec = p.req("typed_extension_config")?;
    let t = tec.obj(&["name", "typed_config"])?;
    t.req("name")?.str()?;
    t.req("typed_config")
}

fn builtin(typed: &Node<'_>) -> Res<LbPolicy> {
    let any = open_typed(typed)?;
    let Some((_, name)) = LB_TYPES.iter().find(|(t, _)| *t == any.type_name) else {
        return Err(any.type_path.err(
            ErrorKind::Unsupported,
            format!(
                "`{}` is not supported; supported: {}",
                any.type_name,
                LB_TYPES.map(|(t, _)| t).join(", ")
            ),
        ));
    };
    if *name == "LEAST_REQUEST" {
        return Ok(LbPolicy::LeastRequest {
            choice_count: choice_count_in(&any.body, &any.keys(&["choice_count"]))?,
        });
    }
    any.body.obj(&any.keys(&[]))?;
    named_policy(name, None)
}

/// Reads `common_lb_config`: `healthy_panic_threshold` only.
pub(crate) fn panic_threshold(node: &Node<'_>) -> Res<u32> {
    let o = node.obj(&["healthy_panic_threshold"])?;
    let Some(t) = o.get("healthy_panic_threshold") else {
        return Ok(DEFAULT_PANIC_THRESHOLD_BP);
    };
    let v = t.obj(&["value"])?.req("value")?;
    let pct =
        v.v.as_f64()
            .filter(|p| (0.0..=100.0).contains(p))
            .ok_or_else(|| v.err(ErrorKind::Invalid, "expected a percentage in 0..=100"))?;
    // In range, so the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok((pct * 100.0).round() as u32)
}

/// Reads `health_checks`: at most one, an HTTP check.
pub(crate) fn health_checks(node: &Node<'_>) -> Res<Option<HealthCheck>> {
    let list = node.list();
    let Some(first) = list.first() else {
        return Ok(None);
    };
    if list.len() > 1 {
        return Err(list[1].err(ErrorKind::Unsupported, "only one health check is supported"));
    }
    let o = first.obj(&[
        "timeout",
        "interval",
        "unhealthy_threshold",
        "healthy_threshold",
        "http_health_check",
        "tcp_health_check",
        "grpc_health_check",
    ])?;
    for other in ["tcp_health_check", "grpc_health_check"] {
        if let Some(n) = o.get(other) {
            return Err(n.err(
                ErrorKind::Unsupported,
                "not supported; only http_health_check is",
            ));
        }
    }
    let positive = |key: &str| -> Res<Duration> {
        let n = o.req(key)?;
        let d = n.duration()?;
        if d.is_zero() {
            return Err(n.err(ErrorKind::Invalid, "must be greater than 0s"));
        }
        Ok(d)
    };
    let timeout = positive("timeout")?;
    let interval = positive("interval")?;
    let threshold = |key: &str| -> Res<u32> {
        let n = o.req(key)?;
        let v = wrapped_u32(&n)?;
        if v == 0 {
            return Err(n.err(ErrorKind::Invalid, "must be at least 1"));
        }
        Ok(v)
    };
    let unhealthy_threshold = threshold("unhealthy_threshold")?;
    let healthy_threshold = threshold("healthy_threshold")?;
    let http = o.req("http_health_check")?;
    let h = http.obj(&["path", "host", "expected_statuses"])?;
    let path = h.req("path")?.non_empty_str()?.to_owned();
    if !path.starts_with('/') {
        return Err(h
            .req("path")?
            .err(ErrorKind::Invalid, "must start with `/`"));
    }
    let host = h
        .get("host")
        .map(|n| n.str().map(str::to_owned))
        .transpose()?
        .filter(|s| !s.is_empty());
    let mut expected_statuses = Vec::new();
    for r in h
        .get("expected_statuses")
        .map(|e| e.list())
        .unwrap_or_default()
    {
        let ro = r.obj(&["start", "end"])?;
        let read = |key: &str| -> Res<u16> {
            let n = ro.req(key)?;
            n.u32()
                .ok()
                .and_then(|v| u16::try_from(v).ok())
                .filter(|v| (100..=600).contains(v))
                .ok_or_else(|| n.err(ErrorKind::Invalid, "expected a status in 100..=600"))
        };
        let (start, end) = (read("start")?, read("end")?);
        if start >= end {
            return Err(r.err(ErrorKind::Invalid, "start must be below end ([start, end))"));
        }
        expected_statuses.push((start, end));
    }
    if expected_statuses.is_empty() {
        expected_statuses.push((200, 201));
    }
    Ok(Some(HealthCheck {
        timeout,
        interval,
        unhealthy_threshold,
        healthy_threshold,
        path,
        host,
        expected_statuses,
    }))
}

/// Reads `outlier_detection` (the consecutive-5xx detector).
pub(crate) fn outlier_detection(node: &Node<'_>) -> Res<OutlierDetection> {
    let o = node.obj(&[
        "consecutive_5xx",
        "base_ejection_time",
        "max_ejection_time",
        "max_ejection_percent",
        "enforcing_consecutive_5xx",
        "interval",
    ])?;
    let mut d = OutlierDetection::default();
    if let Some(n) = o.get("consecutive_5xx") {
        d.consecutive_5xx = wrapped_u32(&n)?;
        if d.consecutive_5xx == 0 {
            return Err(n.err(ErrorKind::Invalid, "must be at least 1"));
        }
    }
    let positive = |key: &str| -> Res<Option<Duration>> {
        o.get(key)
            .map(|n| {
                let v = n.duration()?;
                if v.is_zero() {
                    return Err(n.err(ErrorKind::Invalid, "must be greater than 0s"));
                }
                Ok(v)
            })
            .transpose()
    };
    if let Some(t) = positive("base_ejection_time")? {
        d.base_ejection_time = t;
    }
    if let Some(t) = positive("max_ejection_time")? {
        d.max_ejection_time = t;
    }
    // `interval` is when Envoy sweeps its ejections; vessel un-ejects an
    // endpoint when its time is up, so there is no sweep to time. It is
    // read (and checked) so that Envoy configs load.
    positive("interval")?;
    if d.max_ejection_time < d.base_ejection_time {
        return Err(o.err(
            ErrorKind::Invalid,
            "max_ejection_time must be at least base_ejection_time",
        ));
    }
    for (key, slot) in [
        ("max_ejection_percent", &mut d.max_ejection_percent),
        (
            "enforcing_consecutive_5xx",
            &mut d.enforcing_consecutive_5xx,
        ),
    ] {
        if let Some(n) = o.get(key) {
            let v = wrapped_u32(&n)?;
            if v > 100 {
                return Err(n.err(ErrorKind::Invalid, "must be a percentage (0..=100)"));
            }
            *slot = v;
        }
    }
    Ok(d)
}

/// `vessel_metrics_scrape` (a vessel extension; Envoy rejects it): scrape
/// each endpoint's model-server metrics (vLLM or SGLang, Prometheus text)
/// for the load-aware policies (docs/llm-gateway.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsScrape {
    /// `path` (default `/metrics`).
    pub path: String,
    /// `interval` (default 1 s, > 0).
    pub interval: Duration,
    /// `timeout` of one scrape (default 1 s, > 0).
    pub timeout: Duration,
}

/// Reads `vessel_metrics_scrape`.
pub(crate) fn metrics_scrape(node: &Node<'_>) -> Res<MetricsScrape> {
    let o = node.obj(&["path", "interval", "timeout"])?;
    let path = match o.get("path") {
        None => "/metrics".to_owned(),
        Some(p) => {
            let s = p.non_empty_str()?;
            if !s.starts_with('/') {
                return Err(p.err(ErrorKind::Invalid, "must start with `/`"));
            }
            s.to_owned()
        }
    };
    let positive = |key: &str| -> Res<Duration> {
        match o.get(key) {
            None => Ok(Duration::from_secs(1)),
            Some(n) => {
                let d = n.duration()?;
                if d.is_zero() {
                    return Err(n.err(ErrorKind::Invalid, "must be greater than 0s"));
                }
                Ok(d)
            }
        }
    };
    Ok(MetricsScrape {
        path,
        interval: positive("interval")?,
        timeout: positive("timeout")?,
    })
}
