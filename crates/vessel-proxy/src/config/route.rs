//! `envoy.config.route.v3.RouteConfiguration`: the static route table of an
//! HTTP connection manager, and Envoy's request-to-route selection.
//!
//! Selection follows Envoy's `RouteMatcher`: the virtual host is chosen by
//! the lower-cased `:authority` (port included, as Envoy does without
//! `strip_*_host_port`): an exact domain first, then the longest suffix
//! wildcard (`*.example.com`), then the longest prefix wildcard
//! (`example.*`), then `*`. A wildcard never matches the empty string.
//! Within the virtual host the first route whose match accepts the request
//! wins. Path matchers see the path without its query string and fragment,
//! as Envoy's `PathMatcher` does.

use std::collections::HashMap;
use std::time::Duration;

use super::error::ErrorKind;
use super::yaml::{Node, Res};

/// A route table (`route_config`).
#[derive(Debug, Clone)]
pub struct RouteConfig {
    name: String,
    internal_only_headers: Vec<String>,
    virtual_hosts: Vec<VirtualHost>,
    exact: HashMap<String, usize>,
    /// `*.suffix` domains as (`.suffix`, vhost), longest first.
    suffixes: Vec<(String, usize)>,
    /// `prefix.*` domains as (`prefix.`, vhost), longest first.
    prefixes: Vec<(String, usize)>,
    default: Option<usize>,
}

/// A virtual host: a set of domains and their ordered routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualHost {
    /// `name`.
    pub name: String,
    /// `domains`, lower-cased.
    pub domains: Vec<String>,
    /// `routes`, in match order.
    pub routes: Vec<Route>,
}

/// One route: a match and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `name` (may be empty).
    pub name: String,
    /// `match`.
    pub matcher: RouteMatch,
    /// `route` or `direct_response`.
    pub action: RouteAction,
}

/// `match`: a path matcher and header matchers (all must match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// `prefix`, `path` or `safe_regex`.
    pub path: PathMatch,
    /// `headers`.
    pub headers: Vec<HeaderMatcher>,
}

/// How the path is matched (case-sensitively, without the query string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// `prefix`: the path starts with it.
    Prefix(String),
    /// `path`: the path equals it.
    Exact(String),
    /// `safe_regex.regex`: the regex matches the whole path.
    Regex(SafeRegex),
}

/// A compiled RE2-syntax regex that must match a whole value.
#[derive(Debug, Clone)]
pub struct SafeRegex {
    pattern: String,
    regex: regex::Regex,
}

impl SafeRegex {
    /// Compiles `pattern` for full-string matching.
    pub(crate) fn new(pattern: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            pattern: pattern.to_owned(),
            regex: regex::Regex::new(&format!("^(?:{pattern})$"))?,
        })
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }
}

impl PartialEq for SafeRegex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for SafeRegex {}

/// A header matcher (`headers[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatcher {
    /// `name`, lower-cased (may be a pseudo-header such as `:method`).
    pub name: String,
    /// What the value must satisfy.
    pub kind: HeaderMatch,
    /// `invert_match`.
    pub invert: bool,
}

/// The value test of a [`HeaderMatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    /// `exact_match`, `string_match.exact`.
    Exact(String),
    /// `string_match.prefix`.
    Prefix(String),
    /// `string_match.suffix`.
    Suffix(String),
    /// `string_match.contains`.
    Contains(String),
    /// `string_match` with `ignore_case: true`: (kind, lower-cased pattern).
    IgnoreCase(StringMatchKind, String),
    /// `present_match`: true = the header must be present, false = absent.
    Present(bool),
}

/// The comparison of a case-insensitive [`HeaderMatch::IgnoreCase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StringMatchKind {
    /// Equal.
    Exact,
    /// Starts with.
    Prefix,
    /// Ends with.
    Suffix,
    /// Contains.
    Contains,
}

/// What a matched route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// `route`: forward to a cluster.
    Cluster {
        /// `cluster`, `cluster_header` or `weighted_clusters`.
        cluster: ClusterSpecifier,
        /// `prefix_rewrite`: see [`Route::rewritten_path`].
        prefix_rewrite: Option<String>,
        /// `timeout`: `None` when set to `0s` (no timeout); 15 s when absent,
        /// as in Envoy.
        timeout: Option<Duration>,
        /// `retry_policy`.
        retry: Option<RetryPolicy>,
        /// `vessel_policy_fallback` (a vessel extension).
        policy_fallback: Option<PolicyFallback>,
    },
    /// `direct_response`: answer locally.
    Direct {
        /// `status` (200..=599).
        status: u16,
        /// `body.inline_string`, if given.
        body: Option<String>,
    },
}

/// Which cluster a forwarding route sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterSpecifier {
    /// `cluster`: a name from `static_resources.clusters` (checked).
    Named(String),
    /// `cluster_header`: the cluster named by this request header (lower-
    /// cased) when the router sees the request, after the filters. An
    /// absent header or an unknown name gives 503, as in Envoy.
    Header(String),
    /// `weighted_clusters.clusters[]`: `(name, weight)`, each name checked;
    /// the weights sum to more than 0.
    Weighted(Vec<(String, u32)>),
}

/// `vessel_policy_fallback` of a route (a vessel extension; Envoy rejects
/// it): the route's routing policy is the wasm filter `plugin`, and when it
/// fails the request is routed anyway, by the cluster's own policy, and
/// counted (`wasm.<plugin>.policy_fallbacks`). The policy fails when its
/// filter fails (trap, deadline, memory: the stream skips the filter
/// instead of failing), when the override-host header it sets names no
/// healthy endpoint of the cluster, or when the `cluster_header` it sets
/// names no cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFallback {
    /// `plugin`: the `name` of a wasm filter of the listener.
    pub plugin: String,
    /// `cluster`: where a `cluster_header` route goes when the header names
    /// no cluster (required there; not allowed on other routes).
    pub cluster: Option<String>,
}

/// `retry_policy` of a route (Envoy's `x-envoy-retry-on` semantics for the
/// supported conditions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `retry_on`, parsed.
    pub retry_on: RetryOn,
    /// `num_retries` (default 1): retries after the first try.
    pub num_retries: u32,
    /// `per_try_timeout`: each try's limit until its response head; when it
    /// fires the try counts as a timeout (retried under `5xx`,
    /// `gateway-error` and `reset`).
    pub per_try_timeout: Option<Duration>,
    /// `retriable_status_codes` (used with `retriable-status-codes`).
    pub retriable_status_codes: Vec<u16>,
    /// `retry_back_off.base_interval` (default 25 ms).
    pub backoff_base: Duration,
    /// `retry_back_off.max_interval` (default 10 × base).
    pub backoff_max: Duration,
    /// `retry_host_predicate` has `envoy.retry_host_predicates.previous_hosts`:
    /// a retry avoids the endpoints already tried (when it can).
    pub previous_hosts: bool,
    /// `host_selection_retry_max_attempts` (default 1): how many picks a
    /// retry may make to find an endpoint the predicate accepts.
    pub host_selection_attempts: u32,
}

/// The conditions of `retry_on` that vessel implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(clippy::struct_excessive_bools)]
pub struct RetryOn {
    /// `5xx`: any 5xx answer, a reset, a connect failure or a per-try timeout.
    pub any_5xx: bool,
    /// `gateway-error`: 502, 503, 504, a reset, a connect failure or a
    /// per-try timeout.
    pub gateway_error: bool,
    /// `reset`: no answer (disconnect, reset, per-try timeout).
    pub reset: bool,
    /// `connect-failure`: the connection could not be made.
    pub connect_failure: bool,
    /// `retriable-status-codes`: an answer whose status is listed.
    pub retriable_status_codes: bool,
}

/// Envoy's default upstream timeout for a route.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

impl RouteConfig {
    /// `name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `internal_only_headers`, lower-cased: removed from every downstream
    /// request before the filters see it (vessel treats every downstream
    /// request as external; see docs/envoy-config.md).
    pub fn internal_only_headers(&self) -> &[String] {
        &self.internal_only_headers
    }

    /// `virtual_hosts`, in document order.
    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.virtual_hosts
    }

    /// The virtual host serving `authority` (the `:authority`/`Host` value,
    /// port included), by Envoy's domain precedence.
    pub fn find_virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let host = authority.to_ascii_lowercase();
        let index = self
            .exact
            .get(&host)
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| s.len() < host.len() && host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| p.len() < host.len() && host.starts_with(p.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(self.default)?;
        self.virtual_hosts.get(index)
    }

    /// The first route of the selected virtual host that matches.
    ///
    /// `headers` looks a request header up by lower-case name (pseudo-headers
    /// such as `:method` included). For a header sent several times it should
    /// return the values joined with `,`, as Envoy matches them.
    pub fn find_route<F, S>(&self, authority: &str, path: &str, headers: F) -> Option<&Route>
    where
        F: Fn(&str) -> Option<S>,
        S: AsRef<str>,
    {
        self.find_virtual_host(authority)?
            .routes
            .iter()
            .find(|r| r.matcher.matches(path, &headers))
    }

    /// The action of [`RouteConfig::find_route`]'s route.
    pub fn route<F, S>(&self, authority: &str, path: &str, headers: F) -> Option<&RouteAction>
    where
        F: Fn(&str) -> Option<S>,
        S: AsRef<str>,
    {
        self.find_route(authority, path, headers).map(|r| &r.action)
    }

    /// Every cluster name the routes forward to, with the route's YAML path
    /// suffix (`virtual_hosts[i].routes[j]`).
    pub(crate) fn cluster_refs(&self) -> impl Iterator<Item = (String, &str)> {
        self.virtual_hosts.iter().enumerate().flat_map(|(v, vh)| {
            vh.routes
                .iter()
                .enumerate()
                .flat_map(move |(r, route)| match &route.action {
                    RouteAction::Cluster {
                        cluster: ClusterSpecifier::Named(name),
                        ..
                    } => vec![(
                        format!("virtual_hosts[{v}].routes[{r}].route.cluster"),
                        name.as_str(),
                    )],
                    RouteAction::Cluster {
                        policy_fallback:
                            Some(PolicyFallback {
                                cluster: Some(name),
                                ..
                            }),
                        ..
                    } => vec![(
                        format!(
                            "virtual_hosts[{v}].routes[{r}].route.vessel_policy_fallback.cluster"
                        ),
                        name.as_str(),
                    )],
                    RouteAction::Cluster {
                        cluster: ClusterSpecifier::Weighted(w),
                        ..
                    } => w
                        .iter()
                        .enumerate()
                        .map(|(i, (name, _))| {
                            (
                                format!(
                                    "virtual_hosts[{v}].routes[{r}].route.weighted_clusters.clusters[{i}].name"
                                ),
                                name.as_str(),
                            )
                        })
                        .collect(),
                    _ => Vec::new(),
                })
        })
    }
}

/// The path without its query string and fragment.
fn strip_query(path: &str) -> &str {
    path.find(['?', '#']).map_or(path, |i| &path[..i])
}

impl RouteMatch {
    /// Whether a request with `path` (the `:path` value) and `headers`
    /// matches.
    pub fn matches<F, S>(&self, path: &str, headers: &F) -> bool
    where
        F: Fn(&str) -> Option<S>,
        S: AsRef<str>,
    {
        let p = strip_query(path);
        let path_ok = match &self.path {
            PathMatch::Prefix(prefix) => p.starts_with(prefix.as_str()),
            PathMatch::Exact(exact) => p == exact,
            PathMatch::Regex(re) => re.is_match(p),
        };
        path_ok
            && self
                .headers
                .iter()
                .all(|h| h.matches(headers(&h.name).as_ref().map(AsRef::as_ref)))
    }
}

impl HeaderMatcher {
    /// Whether a header with `value` (`None` = absent) satisfies this
    /// matcher, as Envoy's `HeaderUtility::matchHeaders` decides: an absent
    /// header fails every value test, inverted or not; only `present_match`
    /// can accept an absent header.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let Some(v) = value else {
            return match self.kind {
                HeaderMatch::Present(want) => want == self.invert,
                _ => false,
            };
        };
        let m = match &self.kind {
            HeaderMatch::Exact(s) => v == s,
            HeaderMatch::Prefix(s) => v.starts_with(s.as_str()),
            HeaderMatch::Suffix(s) => v.ends_with(s.as_str()),
            HeaderMatch::Contains(s) => v.contains(s.as_str()),
            HeaderMatch::IgnoreCase(kind, s) => {
                let v = v.to_lowercase();
                match kind {
                    StringMatchKind::Exact => v == *s,
                    StringMatchKind::Prefix => v.starts_with(s.as_str()),
                    StringMatchKind::Suffix => v.ends_with(s.as_str()),
                    StringMatchKind::Contains => v.contains(s.as_str()),
                }
            }
            HeaderMatch::Present(want) => *want,
        };
        m != self.invert
    }
}

impl Route {
    /// The path to send upstream when the action has a `prefix_rewrite`
    /// (`None` otherwise): the matched part is replaced, the rest (query
    /// included) kept. For a `prefix` route the matched part is the prefix;
    /// for `path` and `safe_regex` routes it is the whole path before `?`.
    pub fn rewritten_path(&self, path: &str) -> Option<String> {
        let RouteAction::Cluster {
            prefix_rewrite: Some(rewrite),
            ..
        } = &self.action
        else {
            return None;
        };
        let matched = match &self.matcher.path {
            PathMatch::Prefix(p) => p.len(),
            PathMatch::Exact(_) | PathMatch::Regex(_) => strip_query(path).len(),
        };
        let rest = path.get(matched..).unwrap_or("");
        Some(format!("{rewrite}{rest}"))
    }
}

// ---------------------------------------------------------------- parsing

/// Reads `route_config`.
pub(crate) fn route_config(node: &Node<'_>) -> Res<RouteConfig> {
    let o = node.obj(&["name", "virtual_hosts", "internal_only_headers"])?;
    let name = o.string_or_default("name")?;
    let mut internal_only_headers = Vec::new();
    for h in o
        .get("internal_only_headers")
        .map(|h| h.list())
        .unwrap_or_default()
    {
        let name = h.non_empty_str()?.to_ascii_lowercase();
        if name.starts_with(':') || name == "host" {
            return Err(h.err(
                ErrorKind::Invalid,
                "a pseudo-header or `host` cannot be removed",
            ));
        }
        internal_only_headers.push(name);
    }
    let mut rc = RouteConfig {
        name,
        internal_only_headers,
        virtual_hosts: Vec::new(),
        exact: HashMap::new(),
        suffixes: Vec::new(),
        prefixes: Vec::new(),
        default: None,
    };
    let mut seen_names: HashMap<String, ()> = HashMap::new();
    let mut seen_domains: HashMap<String, ()> = HashMap::new();
    for vh_node in o.get("virtual_hosts").map(|v| v.list()).unwrap_or_default() {
        let index = rc.virtual_hosts.len();
        let v = vh_node.obj(&["name", "domains", "routes"])?;
        let name_node = v.req("name")?;
        let name = name_node.non_empty_str()?.to_owned();
        if seen_names.insert(name.clone(), ()).is_some() {
            return Err(name_node.err(
                ErrorKind::Duplicate,
                format!("virtual host name `{name}` is used twice"),
            ));
        }
        let domains_node = v.req("domains")?;
        let mut domains = Vec::new();
        for d in domains_node.list() {
            let domain = d.non_empty_str()?.to_ascii_lowercase();
            if seen_domains.insert(domain.clone(), ()).is_some() {
                return Err(d.err(
                    ErrorKind::Duplicate,
                    format!("domain `{domain}` appears twice in this route config"),
                ));
            }
            let stars = domain.matches('*').count();
            if domain == "*" {
                rc.default = Some(index);
            } else if stars == 0 {
                rc.exact.insert(domain.clone(), index);
            } else if stars == 1 && domain.starts_with('*') {
                rc.suffixes.push((domain[1..].to_owned(), index));
            } else if stars == 1 && domain.ends_with('*') {
                rc.prefixes
                    .push((domain[..domain.len() - 1].to_owned(), index));
            } else {
                return Err(d.err(
                    ErrorKind::Invalid,
                    format!(
                        "`{domain}`: a wildcard must be the whole domain, or one `*` at its \
                         start or end"
                    ),
                ));
            }
            domains.push(domain);
        }
        if domains.is_empty() {
            return Err(domains_node.err(ErrorKind::Invalid, "at least one domain is required"));
        }
        let routes = v
            .get("routes")
            .map(|r| r.list())
            .unwrap_or_default()
            .iter()
            .map(route)
            .collect::<Res<Vec<_>>>()?;
        rc.virtual_hosts.push(VirtualHost {
            name,
            domains,
            routes,
        });
    }
    // Longest wildcard first; ties keep document order (stable sort).
    rc.suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    rc.prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    Ok(rc)
}

fn route(node: &Node<'_>) -> Res<Route> {
    let o = node.obj(&["name", "match", "route", "direct_response"])?;
    let name = o.string_or_default("name")?;
    let matcher = route_match(&o.req("match")?)?;
    let action = match (o.get("route"), o.get("direct_response")) {
        (Some(r), None) => cluster_action(&r)?,
        (None, Some(d)) => direct_action(&d)?,
        (None, None) => {
            return Err(o.err(
                ErrorKind::Missing,
                "one of route, direct_response is required",
            ));
        }
        (Some(_), Some(d)) => {
            return Err(d.err(
                ErrorKind::Invalid,
                "only one of route, direct_response may be given",
            ));
        }
    };
    Ok(Route {
        name,
        matcher,
        action,
    })
}

fn route_match(node: &Node<'_>) -> Res<RouteMatch> {
    let o = node.obj(&["prefix", "path", "safe_regex", "headers"])?;
    let specs: Vec<&str> = ["prefix", "path", "safe_regex"]
        .into_iter()
        .filter(|k| o.get(k).is_some())
        .collect();
    let path = match specs.as_slice() {
        ["prefix"] => PathMatch::Prefix(o.req("prefix")?.str()?.to_owned()),
        ["path"] => PathMatch::Exact(o.req("path")?.str()?.to_owned()),
        ["safe_regex"] => PathMatch::Regex(regex_matcher(&o.req("safe_regex")?)?),
        [] => {
            return Err(o.err(
                ErrorKind::Missing,
                "one of prefix, path, safe_regex is required",
            ));
        }
        several => {
            return Err(o.err(
                ErrorKind::Invalid,
                format!("only one of {} may be given", several.join(", ")),
            ));
        }
    };
    let headers = o
        .get("headers")
        .map(|h| h.list())
        .unwrap_or_default()
        .iter()
        .map(header_matcher)
        .collect::<Res<Vec<_>>>()?;
    Ok(RouteMatch { path, headers })
}

/// `type.matcher.v3.RegexMatcher`.
fn regex_matcher(node: &Node<'_>) -> Res<SafeRegex> {
    let o = node.obj(&["regex", "google_re2"])?;
    if let Some(g) = o.get("google_re2") {
        g.obj(&[])?;
    }
    let r = o.req("regex")?;
    let pattern = r.non_empty_str()?;
    SafeRegex::new(pattern).map_err(|e| r.err(ErrorKind::Invalid, format!("bad regex: {e}")))
}

fn header_matcher(node: &Node<'_>) -> Res<HeaderMatcher> {
    let o = node.obj(&[
        "name",
        "exact_match",
        "string_match",
        "present_match",
        "invert_match",
    ])?;
    let name = o.req("name")?.non_empty_str()?.to_ascii_lowercase();
    let invert = o
        .get("invert_match")
        .map(|b| b.bool())
        .transpose()?
        .unwrap_or(false);
    let specs: Vec<&str> = ["exact_match", "string_match", "present_match"]
        .into_iter()
        .filter(|k| o.get(k).is_some())
        .collect();
    let kind = match specs.as_slice() {
        ["exact_match"] => HeaderMatch::Exact(o.req("exact_match")?.str()?.to_owned()),
        ["present_match"] => HeaderMatch::Present(o.req("present_match")?.bool()?),
        ["string_match"] => string_match(&o.req("string_match")?)?,
        // Envoy: no match specifier means "present".
        [] => HeaderMatch::Present(true),
        several => {
            return Err(o.err(
                ErrorKind::Invalid,
                format!("only one of {} may be given", several.join(", ")),
            ));
        }
    };
    Ok(HeaderMatcher { name, kind, invert })
}

/// `type.matcher.v3.StringMatcher` (exact, prefix, suffix, contains,
/// ignore_case).
fn string_match(node: &Node<'_>) -> Res<HeaderMatch> {
    let o = node.obj(&["exact", "prefix", "suffix", "contains", "ignore_case"])?;
    let ignore_case = o
        .get("ignore_case")
        .map(|b| b.bool())
        .transpose()?
        .unwrap_or(false);
    let specs: Vec<&str> = ["exact", "prefix", "suffix", "contains"]
        .into_iter()
        .filter(|k| o.get(k).is_some())
        .collect();
    let (kind, value) = match specs.as_slice() {
        [k] => {
            let n = o.req(k)?;
            let v = if *k == "exact" {
                n.str()?
            } else {
                n.non_empty_str()?
            };
            let kind = match *k {
                "exact" => StringMatchKind::Exact,
                "prefix" => StringMatchKind::Prefix,
                "suffix" => StringMatchKind::Suffix,
                _ => StringMatchKind::Contains,
            };
            (kind, v.to_owned())
        }
        [] => {
            return Err(o.err(
                ErrorKind::Missing,
                "one of exact, prefix, suffix, contains is required",
            ));
        }
        several => {
            return Err(o.err(
                ErrorKind::Invalid,
                format!("only one of {} may be given", several.join(", ")),
            ));
        }
    };
    Ok(if ignore_case {
        HeaderMatch::IgnoreCase(kind, value.to_lowercase())
    } else {
        match kind {
            StringMatchKind::Exact => HeaderMatch::Exact(value),
            StringMatchKind::Prefix => HeaderMatch::Prefix(value),
            StringMatchKind::Suffix => HeaderMatch::Suffix(value),
            StringMatchKind::Contains => HeaderMatch::Contains(value),
        }
    })
}

fn cluster_action(node: &Node<'_>) -> Res<RouteAction> {
    let o = node.obj(&[
        "cluster",
        "cluster_header",
        "weighted_clusters",
        "prefix_rewrite",
        "timeout",
        "retry_policy",
        "vessel_policy_fallback",
    ])?;
    let cluster = match (
        o.get("cluster"),
        o.get("cluster_header"),
        o.get("weighted_clusters"),
    ) {
        (Some(c), None, None) => ClusterSpecifier::Named(c.non_empty_str()?.to_owned()),
        (None, Some(h), None) => {
            let name = h.non_empty_str()?.to_ascii_lowercase();
            if name.starts_with(':') {
                return Err(h.err(ErrorKind::Invalid, "cannot be a pseudo-header"));
            }
            ClusterSpecifier::Header(name)
        }
        (None, None, Some(w)) => weighted_clusters(&w)?,
        (None, None, None) => {
            return Err(o.err(
                ErrorKind::Missing,
                "one of cluster, cluster_header, weighted_clusters is required",
            ));
        }
        _ => {
            return Err(o.err(
                ErrorKind::Invalid,
                "only one of cluster, cluster_header, weighted_clusters may be given",
            ));
        }
    };
    let prefix_rewrite = o
        .get("prefix_rewrite")
        .map(|p| p.str().map(str::to_owned))
        .transpose()?;
    let timeout = match o.get("timeout") {
        None => Some(DEFAULT_ROUTE_TIMEOUT),
        Some(t) => Some(t.duration()?).filter(|d| !d.is_zero()),
    };
    let retry = o
        .get("retry_policy")
        .map(|r| retry_policy(&r))
        .transpose()?;
    let policy_fallback = match o.get("vessel_policy_fallback") {
        None => None,
        Some(f) => {
            let fo = f.obj(&["plugin", "cluster"])?;
            let plugin = fo.req("plugin")?.non_empty_str()?.to_owned();
            let fallback_cluster = fo
                .get("cluster")
                .map(|c| c.non_empty_str().map(str::to_owned))
                .transpose()?;
            let header_route = matches!(cluster, ClusterSpecifier::Header(_));
            if header_route && fallback_cluster.is_none() {
                return Err(f.err(
                    ErrorKind::Missing,
                    "a cluster_header route needs `cluster`: where to go when the header names no cluster",
                ));
            }
            if !header_route && fallback_cluster.is_some() {
                return Err(fo.req("cluster")?.err(
                    ErrorKind::Invalid,
                    "only a cluster_header route takes a fallback cluster",
                ));
            }
            Some(PolicyFallback {
                plugin,
                cluster: fallback_cluster,
            })
        }
    };
    Ok(RouteAction::Cluster {
        cluster,
        prefix_rewrite,
        timeout,
        retry,
        policy_fallback,
    })
}

fn weighted_clusters(node: &Node<'_>) -> Res<ClusterSpecifier> {
    let o = node.obj(&["clusters", "total_weight"])?;
    let list = o.req("clusters")?.list();
    if list.is_empty() {
        return Err(o.err(ErrorKind::Missing, "clusters needs at least one entry"));
    }
    let mut out = Vec::with_capacity(list.len());
    let mut sum: u64 = 0;
    for c in list {
        let co = c.obj(&["name", "weight"])?;
        let name = co.req("name")?.non_empty_str()?.to_owned();
        let weight = match co.get("weight") {
            None => 0,
            Some(w) => w
                .u32()
                .or_else(|_| w.obj(&["value"])?.req("value")?.u32())?,
        };
        sum += u64::from(weight);
        out.push((name, weight));
    }
    if sum == 0 {
        return Err(o.err(ErrorKind::Invalid, "the weights must sum to more than 0"));
    }
    if sum > u64::from(u32::MAX) {
        return Err(o.err(ErrorKind::Invalid, "the weights sum to more than 2^32 - 1"));
    }
    if let Some(t) = o.get("total_weight") {
        let total = t
            .u32()
            .or_else(|_| t.obj(&["value"])?.req("value")?.u32())?;
        if u64::from(total) != sum {
            return Err(t.err(
                ErrorKind::Invalid,
                format!("total_weight {total} is not the sum of the weights ({sum})"),
            ));
        }
    }
    Ok(ClusterSpecifier::Weighted(out))
}

const PREVIOUS_HOSTS: &str = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

fn retry_policy(node: &Node<'_>) -> Res<RetryPolicy> {
    let o = node.obj(&[
        "retry_on",
        "num_retries",
        "per_try_timeout",
        "retriable_status_codes",
        "retry_back_off",
        "retry_host_predicate",
        "host_selection_retry_max_attempts",
    ])?;
    let mut retry_on = RetryOn::default();
    if let Some(r) = o.get("retry_on") {
        for cond in r.str()?.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            match cond {
                "5xx" => retry_on.any_5xx = true,
                "gateway-error" => retry_on.gateway_error = true,
                "reset" => retry_on.reset = true,
                "connect-failure" => retry_on.connect_failure = true,
                "retriable-status-codes" => retry_on.retriable_status_codes = true,
                "refused-stream"
                | "retriable-4xx"
                | "envoy-ratelimited"
                | "retriable-headers"
                | "http3-post-connect-failure"
                | "reset-before-request"
                | "cancelled"
                | "deadline-exceeded"
                | "internal"
                | "resource-exhausted"
                | "unavailable" => {
                    return Err(r.err(
                        ErrorKind::Unsupported,
                        format!(
                            "`{cond}` is not supported; supported: 5xx, gateway-error, reset, \
                             connect-failure, retriable-status-codes"
                        ),
                    ));
                }
                other => {
                    return Err(r.err(
                        ErrorKind::Invalid,
                        format!("unknown retry condition `{other}`"),
                    ));
                }
            }
        }
    }
    let num_retries = match o.get("num_retries") {
        None => 1,
        Some(n) => n
            .u32()
            .or_else(|_| n.obj(&["value"])?.req("value")?.u32())?,
    };
    let per_try_timeout = o
        .get("per_try_timeout")
        .map(|t| t.duration())
        .transpose()?
        .filter(|d| !d.is_zero());
    let mut retriable_status_codes = Vec::new();
    for c in o
        .get("retriable_status_codes")
        .map(|c| c.list())
        .unwrap_or_default()
    {
        let code = c
            .u32()
            .ok()
            .and_then(|v| u16::try_from(v).ok())
            .filter(|v| (100..600).contains(v))
            .ok_or_else(|| c.err(ErrorKind::Invalid, "expected a status in 100..=599"))?;
        retriable_status_codes.push(code);
    }
    let (mut backoff_base, mut backoff_max) = (Duration::from_millis(25), None);
    if let Some(b) = o.get("retry_back_off") {
        let bo = b.obj(&["base_interval", "max_interval"])?;
        let base = bo.req("base_interval")?;
        backoff_base = base.duration()?;
        if backoff_base < Duration::from_millis(1) {
            return Err(base.err(ErrorKind::Invalid, "must be at least 1ms"));
        }
        if let Some(m) = bo.get("max_interval") {
            let max = m.duration()?;
            if max < backoff_base {
                return Err(m.err(ErrorKind::Invalid, "must be at least base_interval"));
            }
            backoff_max = Some(max);
        }
    }
    let mut previous_hosts = false;
    for p in o
        .get("retry_host_predicate")
        .map(|p| p.list())
        .unwrap_or_default()
    {
        let po = p.obj(&["name", "typed_config"])?;
        let name = po.req("name")?.str()?;
        let known = match po.get("typed_config") {
            Some(t) => {
                let any = super::any::open_typed(&t)?;
                any.body.obj(&any.keys(&[]))?;
                any.type_name == PREVIOUS_HOSTS
            }
            None => name == "envoy.retry_host_predicates.previous_hosts",
        };
        if !known {
            return Err(p.err(
                ErrorKind::Unsupported,
                format!("only the previous_hosts predicate ({PREVIOUS_HOSTS}) is supported"),
            ));
        }
        previous_hosts = true;
    }
    let host_selection_attempts = o
        .get("host_selection_retry_max_attempts")
        .map(|n| n.u64())
        .transpose()?
        .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX).max(1));
    Ok(RetryPolicy {
        retry_on,
        num_retries,
        per_try_timeout,
        retriable_status_codes,
        backoff_base,
        backoff_max: backoff_max.unwrap_or(backoff_base * 10),
        previous_hosts,
        host_selection_attempts,
    })
}

fn direct_action(node: &Node<'_>) -> Res<RouteAction> {
    let o = node.obj(&["status", "body"])?;
    let s = o.req("status")?;
    let status = s.u32()?;
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .ok_or_else(|| {
            s.err(
                ErrorKind::Invalid,
                format!("status {status} is not in 200..=599"),
            )
        })?;
    let body = o
        .get("body")
        .map(|b| {
            let bo = b.obj(&["inline_string"])?;
            bo.req("inline_string")?.str().map(str::to_owned)
        })
        .transpose()?;
    Ok(RouteAction::Direct { status, body })
}

impl RouteConfig {
    /// `(path suffix, plugin)` of every route's `vessel_policy_fallback`.
    pub(crate) fn policy_plugins(&self) -> impl Iterator<Item = (String, &str)> {
        self.virtual_hosts.iter().enumerate().flat_map(|(v, vh)| {
            vh.routes
                .iter()
                .enumerate()
                .filter_map(move |(r, route)| match &route.action {
                    RouteAction::Cluster {
                        policy_fallback: Some(f),
                        ..
                    } => Some((
                        format!(
                            "virtual_hosts[{v}].routes[{r}].route.vessel_policy_fallback.plugin"
                        ),
                        f.plugin.as_str(),
                    )),
                    _ => None,
                })
        })
    }
}
