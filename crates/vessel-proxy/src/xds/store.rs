//! What the control plane delivered and vessel accepted, by type and name,
//! and the assembly of a bootstrap from it (the bootstrap file's static
//! resources plus the dynamic ones, leaving out what still warms).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use crate::config::dynamic::Resolver;
use crate::config::{self, Bootstrap, ConfigError};
use crate::yaml::Value;

/// An xDS resource type vessel follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    Route,
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// ECDS: `envoy.config.core.v3.TypedExtensionConfig`.
    Extension,
}

impl Kind {
    /// Every kind, in the order Envoy subscribes (clusters first).
    pub const ALL: [Kind; 5] = [
        Kind::Cluster,
        Kind::Endpoint,
        Kind::Listener,
        Kind::Route,
        Kind::Extension,
    ];

    /// The type URL.
    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            Kind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Kind::Extension => "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        }
    }

    /// The kind of a type URL.
    pub fn from_type_url(url: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// Short name: `lds`, `rds`, `cds`, `eds`, `ecds`.
    pub fn short(self) -> &'static str {
        match self {
            Kind::Listener => "lds",
            Kind::Route => "rds",
            Kind::Cluster => "cds",
            Kind::Endpoint => "eds",
            Kind::Extension => "ecds",
        }
    }

    /// LDS and CDS responses carry every resource (a missing one is
    /// removed); RDS, EDS and ECDS responses carry those they update.
    pub fn full_state(self) -> bool {
        matches!(self, Kind::Listener | Kind::Cluster)
    }

    /// The field naming a resource of this kind.
    pub fn name_field(self) -> &'static str {
        match self {
            Kind::Endpoint => "cluster_name",
            _ => "name",
        }
    }
}

/// One accepted resource.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Envoy's JSON form, as decoded.
    pub json: serde_json::Value,
    /// The same as the config reader's tree.
    pub value: Value,
    /// The `version_info` of the response that last changed it.
    pub version: String,
    /// When it was last changed.
    pub last_updated: SystemTime,
}

/// The accepted resources of every kind.
#[derive(Debug, Clone, Default)]
pub struct Store {
    /// By kind, then by name.
    pub resources: BTreeMap<Kind, BTreeMap<String, Resource>>,
    /// The listeners and clusters that serve (name → value): a listener or
    /// cluster whose new version still warms keeps serving its last one.
    pub serving_listeners: BTreeMap<String, Value>,
    /// See `serving_listeners`.
    pub serving_clusters: BTreeMap<String, Value>,
}

impl Store {
    /// The resources of `kind`.
    pub fn of(&self, kind: Kind) -> impl Iterator<Item = (&String, &Resource)> {
        self.resources.get(&kind).into_iter().flatten()
    }

    fn get(&self, kind: Kind, name: &str) -> Option<&Resource> {
        self.resources.get(&kind).and_then(|m| m.get(name))
    }

    /// Takes a response's resources of `kind` (at `version`): replaces the
    /// set (LDS, CDS) or the named ones (RDS, EDS, ECDS). A resource whose
    /// content did not change keeps its version and time.
    pub fn take(
        &mut self,
        kind: Kind,
        version: &str,
        delivered: Vec<(String, serde_json::Value, Value)>,
    ) {
        let now = SystemTime::now();
        let old = self.resources.remove(&kind).unwrap_or_default();
        let mut new = if kind.full_state() {
            BTreeMap::new()
        } else {
            old.clone()
        };
        for (name, json, value) in delivered {
            let r = match old.get(&name) {
                Some(o) if o.json == json => o.clone(),
                _ => Resource {
                    json,
                    value,
                    version: version.to_owned(),
                    last_updated: now,
                },
            };
            new.insert(name, r);
        }
        self.resources.insert(kind, new);
    }

    /// Drops the RDS, EDS and ECDS resources no longer subscribed to.
    pub fn retain_subscribed(&mut self, subs: &Subscriptions) {
        for kind in [Kind::Route, Kind::Endpoint, Kind::Extension] {
            if let Some(m) = self.resources.get_mut(&kind) {
                m.retain(|name, _| subs.names(kind).contains(name));
            }
        }
    }
}

/// The names of the RDS, EDS and ECDS resources the listeners and clusters
/// (static, dynamic and still serving) need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriptions {
    /// RDS route config names.
    pub routes: BTreeSet<String>,
    /// EDS service names.
    pub endpoints: BTreeSet<String>,
    /// ECDS filter config names.
    pub extensions: BTreeSet<String>,
}

impl Subscriptions {
    /// The names of `kind` (empty for LDS and CDS, which are wildcards).
    pub fn names(&self, kind: Kind) -> &BTreeSet<String> {
        static EMPTY: BTreeSet<String> = BTreeSet::new();
        match kind {
            Kind::Route => &self.routes,
            Kind::Endpoint => &self.endpoints,
            Kind::Extension => &self.extensions,
            _ => &EMPTY,
        }
    }
}

/// What a listener or cluster value needs from RDS, ECDS or EDS.
#[derive(Debug, Default)]
struct Needs {
    routes: Vec<String>,
    /// ECDS names, with whether the default may serve without warming.
    extensions: Vec<(String, bool)>,
    endpoints: Vec<String>,
}

fn field<'a>(v: &'a Value, snake: &str) -> Option<&'a Value> {
    v.get(snake).or_else(|| {
        let mut camel = String::new();
        let mut up = false;
        for c in snake.chars() {
            if c == '_' {
                up = true;
            } else if up {
                camel.push(c.to_ascii_uppercase());
                up = false;
            } else {
                camel.push(c);
            }
        }
        v.get(&camel)
    })
}

fn string(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// Scans a listener for `rds.route_config_name` and `config_discovery`.
fn scan(v: &Value, needs: &mut Needs) {
    match v {
        Value::Mapping(m) => {
            if let Some(name) = field(v, "rds").and_then(|r| string(field(r, "route_config_name")))
            {
                needs.routes.push(name.to_owned());
            }
            if let (Some(cd), Some(name)) = (field(v, "config_discovery"), string(v.get("name"))) {
                let without_warming = matches!(
                    field(cd, "apply_default_config_without_warming"),
                    Some(Value::Bool(true))
                ) && field(cd, "default_config").is_some();
                needs.extensions.push((name.to_owned(), without_warming));
            }
            for (_, child) in m {
                scan(child, needs);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|c| scan(c, needs)),
        _ => {}
    }
}

fn cluster_needs(v: &Value) -> Option<String> {
    let ty = string(v.get("type"))?;
    if !ty.eq_ignore_ascii_case("EDS") {
        return None;
    }
    let name = string(v.get("name"))?;
    let service = field(v, "eds_cluster_config")
        .and_then(|e| string(field(e, "service_name")))
        .unwrap_or(name);
    Some(service.to_owned())
}

/// The bootstrap file, read once.
#[derive(Debug, Clone)]
pub struct BootstrapFile {
    /// The document.
    pub doc: Value,
    /// Its directory (relative file names resolve against it).
    pub base_dir: std::path::PathBuf,
}

impl BootstrapFile {
    fn statics(&self, key: &str) -> Vec<&Value> {
        match self.doc.get("static_resources").and_then(|s| s.get(key)) {
            Some(Value::Sequence(s)) => s.iter().collect(),
            Some(v @ Value::Mapping(_)) => vec![v],
            _ => Vec::new(),
        }
    }
}

/// A candidate configuration: the bootstrap and the resources chosen to
/// serve, with what still warms.
pub struct Assembly {
    /// The parsed bootstrap, or why not.
    pub boot: Result<Bootstrap, ConfigError>,
    /// The listeners that serve (name → value).
    pub listeners: BTreeMap<String, Value>,
    /// The clusters that serve (name → value).
    pub clusters: BTreeMap<String, Value>,
    /// Dynamic listeners whose newest version waits for RDS or ECDS.
    pub warming_listeners: BTreeSet<String>,
    /// Dynamic clusters whose newest version waits for EDS.
    pub warming_clusters: BTreeSet<String>,
    /// How many of the file's listeners and clusters still warm.
    pub left_out_static: usize,
}

struct View<'a> {
    store: &'a Store,
    listeners: &'a BTreeMap<String, Value>,
    clusters: &'a BTreeMap<String, Value>,
}

impl Resolver for View<'_> {
    fn listeners(&self) -> Vec<(&str, &Value)> {
        self.listeners
            .iter()
            .map(|(n, v)| (n.as_str(), v))
            .collect()
    }
    fn clusters(&self) -> Vec<(&str, &Value)> {
        self.clusters.iter().map(|(n, v)| (n.as_str(), v)).collect()
    }
    fn route_config(&self, name: &str) -> Option<&Value> {
        self.store.get(Kind::Route, name).map(|r| &r.value)
    }
    fn extension_config(&self, name: &str) -> Option<&Value> {
        self.store.get(Kind::Extension, name).map(|r| &r.value)
    }
    fn endpoints(&self, name: &str) -> Option<&Value> {
        self.store.get(Kind::Endpoint, name).map(|r| &r.value)
    }
}

impl Store {
    fn listener_ready(&self, v: &Value) -> bool {
        let mut needs = Needs::default();
        scan(v, &mut needs);
        needs
            .routes
            .iter()
            .all(|r| self.get(Kind::Route, r).is_some())
            && needs
                .extensions
                .iter()
                .all(|(e, default)| *default || self.get(Kind::Extension, e).is_some())
    }

    fn cluster_ready(&self, v: &Value) -> bool {
        cluster_needs(v).is_none_or(|s| self.get(Kind::Endpoint, &s).is_some())
    }

    /// What the listeners and clusters (static, delivered, and still
    /// serving) need from RDS, EDS and ECDS.
    pub fn subscriptions(&self, file: &BootstrapFile) -> Subscriptions {
        let mut needs = Needs::default();
        let listeners = file
            .statics("listeners")
            .into_iter()
            .chain(self.of(Kind::Listener).map(|(_, r)| &r.value))
            .chain(self.serving_listeners.values());
        for l in listeners {
            scan(l, &mut needs);
        }
        let clusters = file
            .statics("clusters")
            .into_iter()
            .chain(self.of(Kind::Cluster).map(|(_, r)| &r.value))
            .chain(self.serving_clusters.values());
        needs.endpoints.extend(clusters.filter_map(cluster_needs));
        Subscriptions {
            routes: needs.routes.into_iter().collect(),
            endpoints: needs.endpoints.into_iter().collect(),
            extensions: needs.extensions.into_iter().map(|(n, _)| n).collect(),
        }
    }

    /// Builds the candidate bootstrap: the file's static resources (a
    /// static listener or cluster that still warms is left out), then each
    /// delivered listener and cluster that is ready, or else its serving
    /// version.
    pub fn assemble(&self, file: &BootstrapFile) -> Assembly {
        let mut warming_listeners = BTreeSet::new();
        let mut warming_clusters = BTreeSet::new();
        let mut listeners = BTreeMap::new();
        for (name, r) in self.of(Kind::Listener) {
            if self.listener_ready(&r.value) {
                listeners.insert(name.clone(), r.value.clone());
                continue;
            }
            warming_listeners.insert(name.clone());
            if let Some(old) = self
                .serving_listeners
                .get(name)
                .filter(|v| self.listener_ready(v))
            {
                listeners.insert(name.clone(), old.clone());
            }
        }
        let mut clusters = BTreeMap::new();
        for (name, r) in self.of(Kind::Cluster) {
            if self.cluster_ready(&r.value) {
                clusters.insert(name.clone(), r.value.clone());
                continue;
            }
            warming_clusters.insert(name.clone());
            if let Some(old) = self
                .serving_clusters
                .get(name)
                .filter(|v| self.cluster_ready(v))
            {
                clusters.insert(name.clone(), old.clone());
            }
        }
        // The file's own listeners and clusters that wait for RDS, ECDS or
        // EDS are left out of the document until they are ready.
        let mut left_out_static = 0;
        let mut doc = file.doc.clone();
        if let Value::Mapping(top) = &mut doc {
            for (k, sr) in top.iter_mut() {
                if !matches!(k, Value::String(s) if s == "static_resources") {
                    continue;
                }
                let Value::Mapping(sr) = sr else { continue };
                for (k, list) in sr.iter_mut() {
                    let ready: &dyn Fn(&Value) -> bool = match k {
                        Value::String(s) if s == "listeners" => &|v| self.listener_ready(v),
                        Value::String(s) if s == "clusters" => &|v| self.cluster_ready(v),
                        _ => continue,
                    };
                    if let Value::Sequence(items) = list {
                        let before = items.len();
                        items.retain(|v| ready(v));
                        left_out_static += before - items.len();
                    } else if !ready(list) {
                        left_out_static += 1;
                        *list = Value::Sequence(Vec::new());
                    }
                }
            }
        }
        let view = View {
            store: self,
            listeners: &listeners,
            clusters: &clusters,
        };
        let boot = config::parse_dynamic(&doc, &file.base_dir, &view);
        Assembly {
            boot,
            listeners,
            clusters,
            warming_listeners,
            warming_clusters,
            left_out_static,
        }
    }
}

/// Reads the bootstrap file for the xDS client.
pub fn read_file(path: &Path) -> Result<BootstrapFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let doc: Value = crate::yaml::from_str(&text)?;
    Ok(BootstrapFile {
        doc,
        base_dir: path.parent().unwrap_or(Path::new("")).to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    fn value(json: serde_json::Value) -> (serde_json::Value, Value) {
        let v: Value = serde::Deserialize::deserialize(json.clone()).expect("a tree");
        (json, v)
    }

    fn listener(route: &str) -> serde_json::Value {
        serde_json::json!({
            "name": "main",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "main",
                "rds": {"config_source": {"ads": {}}, "route_config_name": route},
                "http_filters": [{"name": "envoy.filters.http.router"}]
            }}]}]
        })
    }

    fn routes(name: &str, body: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}
        ]}]})
    }

    fn take(store: &mut Store, kind: Kind, version: &str, items: Vec<serde_json::Value>) {
        let delivered = items
            .into_iter()
            .map(|j| {
                let name = j[kind.name_field()].as_str().expect("named").to_owned();
                let (j, v) = value(j);
                (name, j, v)
            })
            .collect();
        store.take(kind, version, delivered);
    }

    fn file() -> BootstrapFile {
        BootstrapFile {
            doc: crate::yaml::from_str("node: {id: n}").expect("yaml"),
            base_dir: "/".into(),
        }
    }

    fn body(boot: &Bootstrap) -> Option<String> {
        let (_, h) = boot.listeners.first()?.http_managers().next()?;
        match &h.routes.virtual_hosts()[0].routes[0].action {
            config::RouteAction::Direct { body, .. } => body.clone(),
            _ => None,
        }
    }

    #[test]
    fn a_listener_warms_until_its_routes_come_and_its_old_version_serves_meanwhile() {
        let file = file();
        let mut store = Store::default();
        take(&mut store, Kind::Listener, "l1", vec![listener("r1")]);
        let a = store.assemble(&file);
        assert_eq!(a.warming_listeners, BTreeSet::from(["main".to_owned()]));
        assert!(a.boot.expect("parses").listeners.is_empty());
        assert_eq!(
            store.subscriptions(&file).routes,
            BTreeSet::from(["r1".to_owned()])
        );

        take(&mut store, Kind::Route, "r1", vec![routes("r1", "one")]);
        let a = store.assemble(&file);
        assert!(a.warming_listeners.is_empty());
        assert_eq!(body(&a.boot.expect("parses")).as_deref(), Some("one"));
        store.serving_listeners = a.listeners;

        // The listener now wants r2: its version with r1 serves until r2
        // comes, and both stay subscribed.
        take(&mut store, Kind::Listener, "l2", vec![listener("r2")]);
        let a = store.assemble(&file);
        assert_eq!(a.warming_listeners, BTreeSet::from(["main".to_owned()]));
        assert_eq!(body(&a.boot.expect("parses")).as_deref(), Some("one"));
        assert_eq!(
            store.subscriptions(&file).routes,
            BTreeSet::from(["r1".to_owned(), "r2".to_owned()])
        );
        take(&mut store, Kind::Route, "r2", vec![routes("r2", "two")]);
        let a = store.assemble(&file);
        assert_eq!(body(&a.boot.expect("parses")).as_deref(), Some("two"));
        // RDS responses update the resources they carry; the others stay.
        assert_eq!(store.of(Kind::Route).count(), 2);
        assert_eq!(
            store
                .of(Kind::Route)
                .map(|(_, r)| r.version.as_str())
                .collect::<Vec<_>>(),
            ["r1", "r2"]
        );
    }

    #[test]
    fn an_eds_cluster_warms_until_its_endpoints_come() {
        let file = file();
        let mut store = Store::default();
        let cluster = serde_json::json!({"name": "b", "type": "EDS",
            "eds_cluster_config": {"eds_config": {"ads": {}}}});
        take(&mut store, Kind::Cluster, "c1", vec![cluster]);
        let a = store.assemble(&file);
        assert_eq!(a.warming_clusters, BTreeSet::from(["b".to_owned()]));
        assert!(a.boot.expect("parses").clusters.is_empty());
        assert_eq!(
            store.subscriptions(&file).endpoints,
            BTreeSet::from(["b".to_owned()])
        );
        let cla = serde_json::json!({"cluster_name": "b", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}}}}]}]});
        take(&mut store, Kind::Endpoint, "e1", vec![cla]);
        let boot = store.assemble(&file).boot.expect("parses");
        assert_eq!(boot.clusters[0].endpoints[0].port, 9);
        assert_eq!(boot.clusters[0].kind, config::ClusterKind::Eds);
    }
}
