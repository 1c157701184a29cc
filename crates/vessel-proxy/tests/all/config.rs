//! Tests of the Envoy-config reader (`vessel_proxy::config`): fixtures under
//! `tests/data/configs/`, and single-field probes made by editing the
//! `minimal.yaml` document.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The HTTP connection manager of a listener's first chain that has one.
trait Hcm {
    fn hcm(&self) -> &vessel_proxy::config::HttpManager;
}

impl Hcm for vessel_proxy::config::Listener {
    fn hcm(&self) -> &vessel_proxy::config::HttpManager {
        self.http_managers()
            .next()
            .expect("the listener has an HTTP connection manager")
            .1
    }
}

use serde_json::Value;
use vessel_proxy::config::{
    self, Bootstrap, ClusterKind, ClusterSpecifier, Codec, ConfigError, DEFAULT_TCP_IDLE_TIMEOUT,
    Endpoint, ErrorKind, FailurePolicy, HeaderMatch, PathMatch, ReloadBackoff, RouteAction,
    Terminal, WasmCode,
};

// ------------------------------------------------------------------ helpers

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/configs")
}

fn load_fixture(name: &str) -> Bootstrap {
    let path = configs_dir().join(name);
    match config::load(&path) {
        Ok(b) => b,
        Err(e) => panic!("{name}: {e}"),
    }
}

/// The `minimal.yaml` document, to be edited.
fn base() -> Value {
    let text = std::fs::read_to_string(configs_dir().join("minimal.yaml")).expect("read fixture");
    yaml(&text)
}

/// A YAML snippet.
fn y(s: &str) -> Value {
    yaml(s)
}

/// Reads YAML into an editable tree (JSON's: the probes need no tags and no
/// non-string keys; its mappings sort their keys), with YAML 1.2 core scalars
/// as the reader uses them.
fn yaml(text: &str) -> Value {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
    };
    serde_saphyr::from_str_with_options(text, options).expect("YAML")
}

/// Writes the tree as YAML text.
fn to_yaml(doc: &Value) -> String {
    serde_saphyr::to_string(doc).expect("serialize")
}

enum Seg {
    Key(String),
    Index(usize),
}

/// Splits a path in the error format (`a.b[0].c`). Keys with dots are not
/// supported (none of the probed ones have any).
fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            out.push(Seg::Key(rest[..i].to_owned()));
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                out.push(Seg::Index(rest[1..end].parse().expect("index")));
                rest = &rest[end + 1..];
            }
        } else {
            out.push(Seg::Key(rest.to_owned()));
        }
    }
    out
}

/// Sets `path` in `doc` to `v`, creating mappings on the way.
fn set(doc: &mut Value, path: &str, v: Value) {
    let segs = segments(path);
    let mut cur = doc;
    for (i, s) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match s {
            Seg::Key(k) => {
                if cur.is_null() {
                    *cur = Value::Object(Default::default());
                }
                let m = cur.as_object_mut().expect("mapping on the path");
                if last {
                    m.insert(k.clone(), v);
                    return;
                }
                cur = m.entry(k.clone()).or_insert(Value::Null);
            }
            Seg::Index(n) => {
                let s = cur.as_array_mut().expect("list on the path");
                if last {
                    s[*n] = v;
                    return;
                }
                cur = &mut s[*n];
            }
        }
    }
}

/// Removes the key at `path`.
fn remove(doc: &mut Value, path: &str) {
    let (parent, key) = path.rsplit_once('.').expect("dotted path");
    let mut cur = doc;
    for s in segments(parent) {
        cur = match s {
            Seg::Key(k) => cur.get_mut(k.as_str()).expect("key on the path"),
            Seg::Index(n) => cur.get_mut(n).expect("index on the path"),
        };
    }
    cur.as_object_mut()
        .expect("mapping")
        .remove(key)
        .expect("key present");
}

fn parse_doc(doc: &Value) -> Result<Bootstrap, ConfigError> {
    let text = to_yaml(doc);
    config::parse(&text, Path::new("/cfg"))
}

fn ok(doc: &Value) -> Bootstrap {
    match parse_doc(doc) {
        Ok(b) => b,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// The field error of `doc`: (kind, path, message).
fn field_err(doc: &Value) -> (ErrorKind, String, String) {
    match parse_doc(doc) {
        Ok(_) => panic!("accepted: {}", to_yaml(doc)),
        Err(e) => match (e.kind(), e.path(), e.message()) {
            (Some(k), Some(p), Some(m)) => (k, p.to_owned(), m.to_owned()),
            _ => panic!("not a field error: {e}"),
        },
    }
}

/// Sets `path` to `v` and expects an error of `kind` at `at`.
fn expect_err(path: &str, v: Value, kind: ErrorKind, at: &str) -> String {
    let mut doc = base();
    set(&mut doc, path, v);
    let (k, p, m) = field_err(&doc);
    assert_eq!((k, p.as_str()), (kind, at), "setting {path}: {m}");
    m
}

const L: &str = "static_resources.listeners[0]";
fn hcm() -> String {
    format!("{L}.filter_chains[0].filters[0].typed_config")
}
fn plugin() -> String {
    format!("{}.http_filters[0].typed_config.config", hcm())
}
fn vm() -> String {
    format!("{}.vm_config", plugin())
}
fn vhost() -> String {
    format!("{}.route_config.virtual_hosts[0]", hcm())
}
const C: &str = "static_resources.clusters[0]";

fn no_headers(_: &str) -> Option<&'static str> {
    None
}

// ---------------------------------------------------------------- fixtures

#[test]
fn minimal_fixture_values_and_defaults() {
    let b = load_fixture("minimal.yaml");
    assert_eq!(b.listeners.len(), 1);
    let l = &b.listeners[0];
    assert_eq!(l.name, "main");
    assert_eq!(l.addr, "127.0.0.1:10000".parse::<SocketAddr>().unwrap());
    assert_eq!(l.hcm().codec, Codec::Auto);
    assert_eq!(l.hcm().stat_prefix, "ingress_http");
    assert_eq!(l.hcm().routes.name(), "local");
    assert_eq!(l.hcm().wasm_filters.len(), 1);
    let w = &l.hcm().wasm_filters[0];
    assert_eq!(w.name, "plugin");
    assert_eq!(w.root_id, "root");
    assert_eq!(w.vm_id, "vm");
    assert_eq!(w.code, WasmCode::File(configs_dir().join("plugin.wasm")));
    assert!(w.configuration.is_empty());
    assert!(w.vm_configuration.is_empty());
    assert_eq!(w.failure_policy, FailurePolicy::FailClosed);
    assert_eq!(w.allowed_capabilities, None);
    assert!(w.environment.host_env_keys.is_empty() && w.environment.key_values.is_empty());
    assert!(!w.allow_on_headers_stop_iteration);

    assert_eq!(b.clusters.len(), 1);
    let c = &b.clusters[0];
    assert_eq!(c.name, "backend");
    assert_eq!(c.kind, ClusterKind::Static);
    assert_eq!(c.connect_timeout, Duration::from_millis(250));
    assert_eq!(
        c.endpoints,
        vec![Endpoint {
            address: "127.0.0.1".into(),
            port: 8080,
            hostname: None
        }]
    );
    assert!(!c.http2);
    assert_eq!(b.admin, Some("127.0.0.1:9901".parse().unwrap()));
    assert!(b.node.is_none());
    assert_eq!(
        l.hcm().routes.route("anything", "/x", no_headers),
        Some(&RouteAction::Cluster {
            cluster: ClusterSpecifier::Named("backend".into()),
            prefix_rewrite: None,
            timeout: Some(Duration::from_secs(15)),
            retry: None,
            policy_fallback: None,
        })
    );
}

#[test]
fn full_fixture_every_field() {
    let b = load_fixture("full.yaml");
    let node = b.node.as_ref().expect("node");
    assert_eq!(node.id, "vessel-1");
    assert_eq!(node.cluster, "edge");
    assert_eq!(
        serde_json::Value::Object(node.metadata.clone()),
        serde_json::json!({"region": "eu-west", "weight": 3, "tags": ["a", "b"]})
    );

    assert_eq!(b.listeners.len(), 2);
    let l = &b.listeners[0];
    assert_eq!(l.name, "public");
    assert_eq!(l.addr, "[::]:8443".parse::<SocketAddr>().unwrap());
    assert_eq!(l.hcm().codec, Codec::Http2);
    assert_eq!(l.hcm().stat_prefix, "public");
    assert_eq!(l.hcm().routes.name(), "public_routes");
    let vhs = l.hcm().routes.virtual_hosts();
    assert_eq!(vhs.len(), 2);
    assert_eq!(vhs[0].name, "api");
    assert_eq!(vhs[0].domains, ["api.example.com", "api.example.com:8443"]);
    assert_eq!(vhs[1].domains, ["*.example.com", "example.*"]);
    let routes = &vhs[0].routes;
    assert_eq!(routes.len(), 4);
    assert_eq!(routes[0].name, "health");
    assert_eq!(routes[0].matcher.path, PathMatch::Exact("/healthz".into()));
    assert_eq!(
        routes[0].action,
        RouteAction::Direct {
            status: 204,
            body: None
        }
    );
    match &routes[1].matcher.path {
        PathMatch::Regex(r) => assert_eq!(r.pattern(), "/v[0-9]+/users/[^/]+"),
        other => panic!("{other:?}"),
    }
    let h = &routes[1].matcher.headers;
    assert_eq!(h[0].name, "x-tenant");
    assert_eq!(h[0].kind, HeaderMatch::Exact("acme".into()));
    assert!(!h[0].invert);
    assert_eq!(h[1].kind, HeaderMatch::Present(true));
    assert!(h[1].invert);
    assert_eq!(
        routes[1].action,
        RouteAction::Cluster {
            cluster: ClusterSpecifier::Named("users".into()),
            prefix_rewrite: None,
            timeout: Some(Duration::from_millis(2500)),
            retry: None,
            policy_fallback: None,
        }
    );
    assert_eq!(
        routes[2].action,
        RouteAction::Cluster {
            cluster: ClusterSpecifier::Named("grpc".into()),
            prefix_rewrite: Some("/rpc/".into()),
            timeout: None,
            retry: None,
            policy_fallback: None,
        }
    );
    assert_eq!(
        routes[2].matcher.headers[0].kind,
        HeaderMatch::Exact("application/grpc".into())
    );
    let h = &routes[3].matcher.headers;
    assert_eq!(h[0].kind, HeaderMatch::Prefix("curl/".into()));
    assert_eq!(h[1].kind, HeaderMatch::Suffix("json".into()));
    assert_eq!(h[2].kind, HeaderMatch::Contains("session=".into()));
    assert_eq!(
        h[3].kind,
        HeaderMatch::IgnoreCase(config::StringMatchKind::Exact, "fast".into())
    );
    assert_eq!(
        vhs[1].routes[0].action,
        RouteAction::Direct {
            status: 404,
            body: Some("no such host\n".into())
        }
    );

    assert_eq!(l.hcm().wasm_filters.len(), 2);
    let auth = &l.hcm().wasm_filters[0];
    assert_eq!(auth.name, "auth");
    assert_eq!(auth.root_id, "auth_root");
    assert_eq!(auth.vm_id, "shared");
    assert_eq!(auth.configuration, [0, 1, 2, 255]);
    assert_eq!(auth.vm_configuration, b"vm-config");
    assert_eq!(auth.code, WasmCode::Inline(b"\0asm\x01\0\0\0".to_vec()));
    assert_eq!(
        auth.failure_policy,
        FailurePolicy::FailReload(ReloadBackoff::new(
            Duration::from_millis(500),
            Duration::from_secs(30)
        ))
    );
    assert_eq!(
        auth.allowed_capabilities.as_deref(),
        Some(&["proxy_log", "proxy_get_header_map_value", "fd_write"].map(String::from)[..])
    );
    assert!(auth.allow_on_headers_stop_iteration);
    assert_eq!(auth.environment.host_env_keys, ["HOME", "PATH"]);
    assert_eq!(
        auth.environment.key_values,
        BTreeMap::from([
            ("LEVEL".to_owned(), "3".to_owned()),
            ("MODE".to_owned(), "strict".to_owned())
        ])
    );

    let headers = &l.hcm().wasm_filters[1];
    assert_eq!(headers.name, "headers");
    assert_eq!(headers.root_id, "");
    assert_eq!(headers.failure_policy, FailurePolicy::FailOpen);
    assert_eq!(
        headers.code,
        WasmCode::File(configs_dir().join("../modules/headers.wasm"))
    );
    assert_eq!(
        String::from_utf8(headers.configuration.clone()).unwrap(),
        r#"{"alpha":{"list":[1,2.5,"x"],"none":null},"count":10,"zeta":true}"#
    );

    let plain = &b.listeners[1];
    assert_eq!(plain.name, "plain");
    assert_eq!(plain.hcm().codec, Codec::Http1);
    assert!(plain.hcm().wasm_filters.is_empty());
    assert_eq!(plain.hcm().routes.name(), "");

    assert_eq!(b.clusters.len(), 3);
    let users = b.cluster("users").expect("users");
    assert_eq!(
        users
            .endpoints
            .iter()
            .map(|e| (e.address.as_str(), e.port))
            .collect::<Vec<_>>(),
        [("10.0.0.1", 8001), ("::1", 8002), ("10.0.0.3", 8003)]
    );
    let grpc = b.cluster("grpc").expect("grpc");
    assert_eq!(grpc.kind, ClusterKind::LogicalDns);
    assert_eq!(grpc.connect_timeout, Duration::from_secs(1));
    assert!(grpc.http2);
    assert_eq!(
        grpc.endpoints[0].hostname.as_deref(),
        Some("grpc.example.com")
    );
    let h1 = b.cluster("legacy_h1").expect("legacy_h1");
    assert_eq!(h1.kind, ClusterKind::StrictDns);
    assert!(!h1.http2);
    assert!(h1.endpoints.is_empty());
    assert_eq!(h1.connect_timeout, Duration::from_secs(5));
}

#[test]
fn sdk_example_shape_loads_as_written() {
    let b = load_fixture("sdk_example.yaml");
    let l = &b.listeners[0];
    assert_eq!(l.name, "listener_0");
    assert_eq!(l.addr, "0.0.0.0:10000".parse::<SocketAddr>().unwrap());
    let w = &l.hcm().wasm_filters[0];
    assert_eq!(w.name, "x");
    assert_eq!(w.root_id, "x_root");
    assert_eq!(w.vm_id, "x_vm");
    assert_eq!(
        w.code,
        WasmCode::File("/etc/envoy/proxy-wasm-plugins/x.wasm".into())
    );
    assert_eq!(
        w.configuration,
        b"The secret to life is meaningless unless you discover it yourself"
    );
    let echo = b.cluster("echo").expect("echo");
    assert_eq!(echo.kind, ClusterKind::StrictDns);
    assert_eq!(echo.endpoints[0].address, "httpbin.org");
    assert_eq!(echo.endpoints[0].port, 80);
    assert_eq!(echo.endpoints[0].hostname.as_deref(), Some("httpbin.org"));
    assert_eq!(
        b.cluster("local_static").expect("static").kind,
        ClusterKind::Static
    );
    assert_eq!(b.admin, Some("0.0.0.0:9901".parse().unwrap()));
    assert_eq!(
        l.hcm()
            .routes
            .route("localhost:10000", "/static/a", no_headers),
        Some(&RouteAction::Direct {
            status: 200,
            body: Some("Inspect the HTTP header: custom-header".into())
        })
    );
    assert!(matches!(
        l.hcm().routes.route("localhost:10000", "/other", no_headers),
        Some(RouteAction::Cluster { cluster: ClusterSpecifier::Named(name), .. }) if name == "echo"
    ));
}

#[test]
fn sdk_hello_world_shape_loads_as_written() {
    let b = load_fixture("sdk_hello_world.yaml");
    let l = &b.listeners[0];
    assert_eq!(l.hcm().codec, Codec::Auto);
    assert_eq!(l.hcm().routes.name(), "no_routes");
    assert!(l.hcm().routes.virtual_hosts().is_empty());
    assert_eq!(l.hcm().routes.route("h", "/", no_headers), None);
    let w = &l.hcm().wasm_filters[0];
    assert_eq!(w.root_id, "hello_world");
    assert_eq!(
        w.code,
        WasmCode::File(configs_dir().join("filters/proxy_wasm_hello_world.wasm"))
    );
    let c = &b.clusters[0];
    assert_eq!(c.kind, ClusterKind::StrictDns);
    assert_eq!(c.connect_timeout, Duration::from_secs(5000));
    assert!(c.http2);
    assert_eq!(b.admin, Some("0.0.0.0:9001".parse().unwrap()));
}

#[test]
fn load_reports_missing_file_and_bad_yaml() {
    let missing = configs_dir().join("does-not-exist.yaml");
    match config::load(&missing) {
        Err(ConfigError::Read { file, .. }) => assert_eq!(file, missing),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        config::parse("static_resources: [", Path::new(".")),
        Err(ConfigError::Yaml(_))
    ));
    // Duplicate keys are rejected by the YAML reader.
    assert!(matches!(
        config::parse("admin: {}\nadmin: {}\n", Path::new(".")),
        Err(ConfigError::Yaml(_))
    ));
    // An empty document or a scalar is not a bootstrap.
    let e = config::parse("", Path::new(".")).unwrap_err();
    assert_eq!(
        (e.kind(), e.path()),
        (Some(ErrorKind::Invalid), Some("<root>"))
    );
}

// ----------------------------------------------------- unsupported fields

#[test]
fn allow_precompiled_error_names_path_and_supported_keys() {
    let mut doc = base();
    set(&mut doc, &format!("{}.allow_precompiled", vm()), y("true"));
    let e = parse_doc(&doc).unwrap_err();
    assert_eq!(
        e.to_string(),
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.\
         http_filters[0].typed_config.config.vm_config.allow_precompiled: not supported; \
         supported keys here: vm_id, runtime, code, configuration, environment_variables, vessel_limits, vessel_hidden"
    );
    assert_eq!(e.kind(), Some(ErrorKind::Unsupported));
}

#[test]
fn buffer_limit_and_suppress_envoy_headers() {
    let b = ok(&base());
    assert_eq!(
        b.listeners[0].buffer_limit,
        vessel_host::DEFAULT_BUFFER_LIMIT
    );
    assert!(!b.listeners[0].hcm().suppress_envoy_headers);
    let mut doc = base();
    set(
        &mut doc,
        &format!("{L}.per_connection_buffer_limit_bytes"),
        y("16"),
    );
    set(
        &mut doc,
        &format!(
            "{}.http_filters[1].typed_config.suppress_envoy_headers",
            hcm()
        ),
        y("true"),
    );
    let b = ok(&doc);
    assert_eq!(b.listeners[0].buffer_limit, 16);
    assert!(b.listeners[0].hcm().suppress_envoy_headers);
    expect_err(
        &format!("{L}.per_connection_buffer_limit_bytes"),
        y("-1"),
        ErrorKind::Invalid,
        &format!("{L}.per_connection_buffer_limit_bytes"),
    );
}

#[test]
fn every_unsupported_field_is_named_by_path() {
    let cases: Vec<(String, &str)> = vec![
        ("layered_runtime".into(), "{}"),
        ("stats_sinks".into(), "[]"),
        ("static_resources.secrets".into(), "[]"),
        (format!("{L}.tcp_backlog_size"), "128"),
        (format!("{L}.address.socket_address.ipv4_compat"), "true"),
        (format!("{L}.address.pipe"), "{path: /tmp/x}"),
        (
            format!("{L}.filter_chains[0].transport_socket.name"),
            "envoy.transport_sockets.raw_buffer",
        ),
        (
            format!("{L}.filter_chains[0].filter_chain_match.transport_protocol"),
            "tls",
        ),
        (format!("{L}.default_filter_chain.filter_chain_match"), "{}"),
        (format!("{}.access_log", hcm()), "[]"),
        (format!("{}.use_remote_address", hcm()), "true"),
        (
            format!("{}.route_config.request_headers_to_add", hcm()),
            "[]",
        ),
        (format!("{}.require_tls", vhost()), "ALL"),
        (
            format!("{}.routes[0].match.case_sensitive", vhost()),
            "false",
        ),
        (
            format!("{}.routes[0].match.query_parameters", vhost()),
            "[]",
        ),
        (
            format!(
                "{}.routes[0].route.retry_policy.rate_limited_retry_back_off",
                vhost()
            ),
            "{}",
        ),
        (
            format!("{}.routes[0].route.host_rewrite_literal", vhost()),
            "x",
        ),
        (format!("{}.routes[0].redirect", vhost()), "{}"),
        (
            format!("{}.routes[0].typed_per_filter_config", vhost()),
            "{}",
        ),
        (format!("{}.http_filters[0].disabled", hcm()), "true"),
        (
            format!("{}.http_filters[1].typed_config.dynamic_stats", hcm()),
            "true",
        ),
        (format!("{}.sanitization", plugin()), "{}"),
        (format!("{}.nack_on_code_cache_miss", vm()), "true"),
        (format!("{}.code.local.environment_variable", vm()), "X"),
        (format!("{}.environment_variables.inherit", vm()), "true"),
        (format!("{}.reload_config.backoff.jitter", plugin()), "0.1"),
        (
            format!(
                "{}.capability_restriction_config.allowed_capabilities.proxy_log.x",
                plugin()
            ),
            "1",
        ),
        (format!("{C}.dns_lookup_family"), "V4_ONLY"),
        (format!("{C}.upstream_connection_options"), "{}"),
        (
            format!("{C}.transport_socket.name"),
            "envoy.transport_sockets.raw_buffer",
        ),
        (
            format!("{C}.http2_protocol_options.max_concurrent_streams"),
            "10",
        ),
        (format!("{C}.load_assignment.policy"), "{}"),
        (
            format!("{C}.load_assignment.endpoints[0].locality"),
            "{region: x}",
        ),
        (
            format!("{C}.load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight"),
            "2",
        ),
        (
            format!(
                "{C}.load_assignment.endpoints[0].lb_endpoints[0].endpoint.health_check_config"
            ),
            "{}",
        ),
        ("admin.access_log".into(), "[]"),
        ("node.locality".into(), "{region: x}"),
    ];
    for (path, value) in &cases {
        expect_err(path, y(value), ErrorKind::Unsupported, path);
    }
}

#[test]
fn unsupported_fields_in_typed_struct_and_header_matchers() {
    // A TypedStruct-wrapped filter: paths go through `value`.
    let mut doc = base();
    let f = format!("{}.http_filters[0].typed_config", hcm());
    set(
        &mut doc,
        &f,
        y(r#"
"@type": type.googleapis.com/udpa.type.v1.TypedStruct
type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
value:
  config:
    vm_config:
      code: { local: { filename: a.wasm } }
      allow_precompiled: false
"#),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(k, ErrorKind::Unsupported);
    assert_eq!(p, format!("{f}.value.config.vm_config.allow_precompiled"));

    let hm = format!("{}.routes[0].match.headers", vhost());
    expect_err(
        &hm,
        y("[{name: x, safe_regex_match: {regex: a}}]"),
        ErrorKind::Unsupported,
        &format!("{hm}[0].safe_regex_match"),
    );
    expect_err(
        &hm,
        y("[{name: x, string_match: {safe_regex: {regex: a}}}]"),
        ErrorKind::Unsupported,
        &format!("{hm}[0].string_match.safe_regex"),
    );
    expect_err(
        &hm,
        y("[{name: x, range_match: {start: 1, end: 2}}]"),
        ErrorKind::Unsupported,
        &format!("{hm}[0].range_match"),
    );
    let re = format!("{}.routes[0].match", vhost());
    expect_err(
        &re,
        y("{safe_regex: {regex: /a, google_re2: {max_program_size: 100}}}"),
        ErrorKind::Unsupported,
        &format!("{re}.safe_regex.google_re2.max_program_size"),
    );
}

#[test]
fn unsupported_filter_and_any_types() {
    let f = format!("{L}.filter_chains[0].filters[0]");
    let m = expect_err(
        &format!("{f}.typed_config"),
        y(
            r#"{"@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy}"#,
        ),
        ErrorKind::Unsupported,
        &format!("{f}.typed_config.@type"),
    );
    assert!(m.contains("redis_proxy") && m.contains("tcp_proxy"), "{m}");

    let hf = format!("{}.http_filters[0]", hcm());
    expect_err(
        &hf,
        y(
            r#"{name: envoy.filters.http.lua, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua}}"#,
        ),
        ErrorKind::Unsupported,
        &format!("{hf}.typed_config.@type"),
    );
    expect_err(
        &hf,
        y("{name: envoy.filters.http.cors}"),
        ErrorKind::Unsupported,
        &format!("{hf}.name"),
    );
    expect_err(
        &hf,
        y("{name: envoy.filters.http.wasm}"),
        ErrorKind::Missing,
        &format!("{hf}.typed_config"),
    );
    // A TypedStruct naming another filter: the error points at type_url.
    expect_err(
        &format!("{hf}.typed_config"),
        y(
            r#"{"@type": type.googleapis.com/xds.type.v3.TypedStruct, type_url: type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua, value: {}}"#,
        ),
        ErrorKind::Unsupported,
        &format!("{hf}.typed_config.type_url"),
    );
    expect_err(
        &format!("{}.configuration", plugin()),
        y(r#"{"@type": type.googleapis.com/google.protobuf.Duration, value: 1s}"#),
        ErrorKind::Unsupported,
        &format!("{}.configuration.@type", plugin()),
    );
    expect_err(
        &format!("{}.configuration", plugin()),
        y("{value: x}"),
        ErrorKind::Missing,
        &format!("{}.configuration.@type", plugin()),
    );
    // Two terminal network filters in a chain: the first is not last.
    let chain = format!("{L}.filter_chains[0].filters");
    let mut doc = base();
    let filters = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"].clone();
    let mut two = filters.as_array().expect("list").clone();
    two.push(two[0].clone());
    set(&mut doc, &chain, Value::Array(two));
    let (k, p, _) = field_err(&doc);
    assert_eq!((k, p), (ErrorKind::Invalid, format!("{chain}[0]")));
    // Two filter chains with the same (empty) match.
    let mut doc = base();
    let chains = format!("{L}.filter_chains");
    let mut two = doc["static_resources"]["listeners"][0]["filter_chains"]
        .as_array()
        .expect("list")
        .clone();
    two.push(two[0].clone());
    set(&mut doc, &chains, Value::Array(two));
    let (k, p, _) = field_err(&doc);
    assert_eq!(
        (k, p),
        (
            ErrorKind::Duplicate,
            format!("{chains}[1].filter_chain_match")
        )
    );
}

// --------------------------------------------------------- bad values

#[test]
fn bad_enum_values() {
    let codec = format!("{}.codec_type", hcm());
    expect_err(&codec, y("HTTP3"), ErrorKind::Unsupported, &codec);
    let m = expect_err(&codec, y("SPDY"), ErrorKind::Invalid, &codec);
    assert!(m.contains("AUTO, HTTP1, HTTP2"), "{m}");
    // Enums are case-insensitive, as in Envoy.
    let mut doc = base();
    set(&mut doc, &codec, y("http1"));
    assert_eq!(ok(&doc).listeners[0].hcm().codec, Codec::Http1);

    let ty = format!("{C}.type");
    expect_err(
        &ty,
        y("EDS"),
        ErrorKind::Missing,
        &format!("{C}.eds_cluster_config"),
    );
    expect_err(&ty, y("ORIGINAL_DST"), ErrorKind::Unsupported, &ty);
    expect_err(&ty, y("DYNAMIC"), ErrorKind::Invalid, &ty);
    let lb = format!("{C}.lb_policy");
    expect_err(&lb, y("RING_HASH"), ErrorKind::Unsupported, &lb);
    expect_err(&lb, y("FASTEST"), ErrorKind::Invalid, &lb);
    let fp = format!("{}.failure_policy", plugin());
    expect_err(&fp, y("FAIL_SOMETIMES"), ErrorKind::Invalid, &fp);
    let proto = format!("{L}.address.socket_address.protocol");
    expect_err(&proto, y("UDP"), ErrorKind::Unsupported, &proto);
    // An enum given as a number is not a name.
    expect_err(&codec, y("1"), ErrorKind::Invalid, &codec);
}

#[test]
fn bad_values_are_rejected_with_their_path() {
    let port = format!("{L}.address.socket_address.port_value");
    expect_err(&port, y("70000"), ErrorKind::Invalid, &port);
    expect_err(&port, y("-1"), ErrorKind::Invalid, &port);
    let addr = format!("{L}.address.socket_address.address");
    let m = expect_err(&addr, y("localhost"), ErrorKind::Invalid, &addr);
    assert!(m.contains("not an IP address"), "{m}");
    let ct = format!("{C}.connect_timeout");
    expect_err(&ct, y("100ms"), ErrorKind::Invalid, &ct);
    expect_err(&ct, y("5"), ErrorKind::Invalid, &ct);
    expect_err(&ct, y("0s"), ErrorKind::Invalid, &ct);
    expect_err(&ct, y("-1s"), ErrorKind::Invalid, &ct);
    let ep =
        format!("{C}.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address");
    let m = expect_err(
        &format!("{ep}.address"),
        y("backend.local"),
        ErrorKind::Invalid,
        &format!("{ep}.address"),
    );
    assert!(m.contains("STATIC"), "{m}");
    let status = format!("{}.routes[0]", vhost());
    expect_err(
        &status,
        y("{match: {prefix: /}, direct_response: {status: 700}}"),
        ErrorKind::Invalid,
        &format!("{status}.direct_response.status"),
    );
    expect_err(
        &status,
        y("{match: {safe_regex: {regex: '(unclosed'}}, route: {cluster: backend}}"),
        ErrorKind::Invalid,
        &format!("{status}.match.safe_regex.regex"),
    );
    expect_err(
        &status,
        y("{match: {prefix: /, path: /a}, route: {cluster: backend}}"),
        ErrorKind::Invalid,
        &format!("{status}.match"),
    );
    expect_err(
        &status,
        y("{match: {headers: []}, route: {cluster: backend}}"),
        ErrorKind::Missing,
        &format!("{status}.match"),
    );
    expect_err(
        &status,
        y("{match: {prefix: /}}"),
        ErrorKind::Missing,
        &status,
    );
    expect_err(
        &status,
        y("{match: {prefix: /}, route: {cluster: backend, timeout: 1m}}"),
        ErrorKind::Invalid,
        &format!("{status}.route.timeout"),
    );
    let domains = format!("{}.domains", vhost());
    expect_err(
        &domains,
        y("['foo.*.com']"),
        ErrorKind::Invalid,
        &format!("{domains}[0]"),
    );
    expect_err(
        &domains,
        y("['*.*']"),
        ErrorKind::Invalid,
        &format!("{domains}[0]"),
    );
    expect_err(&domains, y("[]"), ErrorKind::Invalid, &domains);

    let code = format!("{}.code.local", vm());
    expect_err(
        &code,
        y("{inline_bytes: 'not base64!'}"),
        ErrorKind::Invalid,
        &format!("{code}.inline_bytes"),
    );
    expect_err(
        &code,
        y("{filename: ''}"),
        ErrorKind::Invalid,
        &format!("{code}.filename"),
    );
    expect_err(&code, y("{}"), ErrorKind::Missing, &code);
    expect_err(
        &code,
        y("{filename: a.wasm, inline_string: x}"),
        ErrorKind::Invalid,
        &code,
    );
    let rt = format!("{}.runtime", vm());
    expect_err(
        &rt,
        y("envoy.wasm.runtime.null"),
        ErrorKind::Unsupported,
        &rt,
    );
    expect_err(&rt, y("envoy.wasm.runtime.wavm"), ErrorKind::Invalid, &rt);
    // Strings must be strings, bools must be bools.
    let name = format!("{}.root_id", plugin());
    let m = expect_err(&name, y("42"), ErrorKind::Invalid, &name);
    assert!(m.contains("quote"), "{m}");
    let fo = format!("{}.fail_open", plugin());
    expect_err(&fo, y("'yes'"), ErrorKind::Invalid, &fo);
    let kv = format!("{}.environment_variables.key_values", vm());
    expect_err(
        &kv,
        y("{LEVEL: 3}"),
        ErrorKind::Invalid,
        &format!("{kv}.LEVEL"),
    );
    // Required fields.
    let mut doc = base();
    remove(&mut doc, &format!("{}.stat_prefix", hcm()));
    let (k, p, _) = field_err(&doc);
    assert_eq!(
        (k, p),
        (ErrorKind::Missing, format!("{}.stat_prefix", hcm()))
    );
    let mut doc = base();
    remove(&mut doc, &format!("{}.vm_config", plugin()));
    let (k, p, _) = field_err(&doc);
    assert_eq!((k, p), (ErrorKind::Missing, vm()));
    let mut doc = base();
    remove(&mut doc, &format!("{C}.name"));
    let (k, p, _) = field_err(&doc);
    assert_eq!((k, p), (ErrorKind::Missing, format!("{C}.name")));
    // Backoff limits.
    let bo = format!("{}.reload_config.backoff", plugin());
    expect_err(
        &bo,
        y("{base_interval: 2s, max_interval: 1s}"),
        ErrorKind::Invalid,
        &format!("{bo}.max_interval"),
    );
    expect_err(
        &bo,
        y("{base_interval: 0.0001s}"),
        ErrorKind::Invalid,
        &format!("{bo}.base_interval"),
    );
    expect_err(
        &bo,
        y("{max_interval: 1s}"),
        ErrorKind::Missing,
        &format!("{bo}.base_interval"),
    );
}

#[test]
fn logical_dns_needs_exactly_one_endpoint() {
    let mut doc = base();
    set(&mut doc, &format!("{C}.type"), y("LOGICAL_DNS"));
    let eps = format!("{C}.load_assignment.endpoints[0].lb_endpoints");
    let one =
        doc["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
            [0]
        .clone();
    set(&mut doc, &eps, Value::Array(vec![one.clone(), one]));
    let (k, p, m) = field_err(&doc);
    assert_eq!((k, p.as_str()), (ErrorKind::Invalid, C), "{m}");
}

#[test]
fn dns_refresh_rate_defaults_to_envoys_and_is_validated() {
    let b = ok(&base());
    assert_eq!(
        b.clusters[0].dns_refresh_rate,
        config::DEFAULT_DNS_REFRESH_RATE
    );
    assert_eq!(
        config::DEFAULT_DNS_REFRESH_RATE,
        Duration::from_millis(5000)
    );

    let mut doc = base();
    set(&mut doc, &format!("{C}.type"), y("STRICT_DNS"));
    set(&mut doc, &format!("{C}.dns_refresh_rate"), y("0.25s"));
    let b = ok(&doc);
    assert_eq!(b.clusters[0].kind, ClusterKind::StrictDns);
    assert_eq!(b.clusters[0].dns_refresh_rate, Duration::from_millis(250));
    // camelCase, as protobuf JSON allows.
    let mut doc = base();
    set(&mut doc, &format!("{C}.dnsRefreshRate"), y("2s"));
    assert_eq!(
        ok(&doc).clusters[0].dns_refresh_rate,
        Duration::from_secs(2)
    );

    // Envoy: greater than 1 ms.
    let rate = format!("{C}.dns_refresh_rate");
    for bad in ["0s", "0.001s", "-1s", "5"] {
        expect_err(&rate, y(bad), ErrorKind::Invalid, &rate);
    }
}

// ---------------------------------------------- references and duplicates

#[test]
fn route_to_unknown_cluster_is_rejected() {
    let cluster = format!("{}.routes[0].route.cluster", vhost());
    let mut doc = base();
    set(&mut doc, &cluster, y("nowhere"));
    let (k, p, m) = field_err(&doc);
    assert_eq!(
        (k, p.as_str()),
        (ErrorKind::UnknownReference, cluster.as_str())
    );
    assert!(m.contains("nowhere"), "{m}");
}

#[test]
fn router_placement() {
    let filters = format!("{}.http_filters", hcm());
    let doc = base();
    let wasm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][0]
        .clone();
    let router = y("{name: envoy.filters.http.router}");

    // Wasm after the router.
    let mut d = base();
    set(
        &mut d,
        &filters,
        Value::Array(vec![router.clone(), wasm.clone()]),
    );
    let (k, p, _) = field_err(&d);
    assert_eq!((k, p), (ErrorKind::Invalid, format!("{filters}[1]")));
    // Two routers.
    let mut d = base();
    set(
        &mut d,
        &filters,
        Value::Array(vec![wasm.clone(), router.clone(), router.clone()]),
    );
    let (k, p, _) = field_err(&d);
    assert_eq!((k, p), (ErrorKind::Invalid, format!("{filters}[2]")));
    // No router.
    let mut d = base();
    set(&mut d, &filters, Value::Array(vec![wasm.clone()]));
    let (k, p, _) = field_err(&d);
    assert_eq!((k, p), (ErrorKind::Invalid, filters.clone()));
    // Only a router: zero wasm filters is fine.
    let mut d = base();
    set(&mut d, &filters, Value::Array(vec![router.clone()]));
    assert!(ok(&d).listeners[0].hcm().wasm_filters.is_empty());
    // Several wasm filters keep their order.
    let mut second = wasm.clone();
    second["typed_config"]["config"]["name"] = y("second");
    let mut d = base();
    set(&mut d, &filters, Value::Array(vec![wasm, second, router]));
    let names: Vec<String> = ok(&d).listeners[0]
        .hcm()
        .wasm_filters
        .iter()
        .map(|w| w.name.clone())
        .collect();
    assert_eq!(names, ["plugin", "second"]);
}

#[test]
fn duplicates_are_rejected() {
    // Listener names and addresses.
    let mut doc = base();
    let l0 = doc["static_resources"]["listeners"][0].clone();
    let mut l1 = l0.clone();
    l1["address"]["socket_address"]["port_value"] = y("10001");
    set(
        &mut doc,
        "static_resources.listeners",
        Value::Array(vec![l0.clone(), l1]),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(
        (k, p.as_str()),
        (ErrorKind::Duplicate, "static_resources.listeners[1].name")
    );
    let mut l2 = l0.clone();
    l2["name"] = y("other");
    set(
        &mut doc,
        "static_resources.listeners",
        Value::Array(vec![l0, l2]),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(
        (k, p.as_str()),
        (
            ErrorKind::Duplicate,
            "static_resources.listeners[1].address"
        )
    );
    // Cluster names.
    let mut doc = base();
    let c = doc["static_resources"]["clusters"][0].clone();
    set(
        &mut doc,
        "static_resources.clusters",
        Value::Array(vec![c.clone(), c]),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(
        (k, p.as_str()),
        (ErrorKind::Duplicate, "static_resources.clusters[1].name")
    );
    // Domains (case-insensitively) across virtual hosts.
    let vhs = format!("{}.route_config.virtual_hosts", hcm());
    let mut doc = base();
    set(
        &mut doc,
        &vhs,
        y(r#"
- {name: a, domains: [Example.com], routes: []}
- {name: b, domains: [example.COM], routes: []}
"#),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(
        (k, p),
        (ErrorKind::Duplicate, format!("{vhs}[1].domains[0]"))
    );
    // Virtual host names.
    set(
        &mut doc,
        &vhs,
        y("[{name: a, domains: [x]}, {name: a, domains: [y]}]"),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!((k, p), (ErrorKind::Duplicate, format!("{vhs}[1].name")));
    // Environment keys.
    let env = format!("{}.environment_variables", vm());
    expect_err(
        &env,
        y("{host_env_keys: [HOME], key_values: {HOME: /root}}"),
        ErrorKind::Duplicate,
        &format!("{env}.host_env_keys[0]"),
    );
    expect_err(
        &env,
        y("{host_env_keys: [HOME, PATH, HOME]}"),
        ErrorKind::Duplicate,
        &format!("{env}.host_env_keys[2]"),
    );
    // A field given in both spellings: the second one in the document is
    // named. (Edited as text: the JSON trees above sort their keys.)
    let text = std::fs::read_to_string(configs_dir().join("minimal.yaml")).expect("read fixture");
    let line = text
        .lines()
        .find(|l| l.trim_start() == "root_id: root")
        .expect("root_id in the fixture");
    let indent = &line[..line.len() - line.trim_start().len()];
    let text = text.replacen(line, &format!("{line}\n{indent}rootId: other"), 1);
    let e = config::parse(&text, Path::new("/cfg")).unwrap_err();
    assert_eq!(
        (e.kind(), e.path()),
        (
            Some(ErrorKind::Duplicate),
            Some(format!("{}.rootId", plugin()).as_str())
        )
    );
}

// ------------------------------------------------- plugin config details

fn plugin_with(fields: &str) -> config::WasmFilter {
    let mut doc = base();
    let mut cfg = y(fields);
    cfg["vm_config"] = y("{code: {local: {filename: p.wasm}}}");
    set(&mut doc, &plugin(), cfg);
    ok(&doc).listeners[0].hcm().wasm_filters[0].clone()
}

#[test]
fn failure_policy_combines_with_fail_open_like_envoy() {
    let cases = [
        ("{}", FailurePolicy::FailClosed),
        ("{fail_open: false}", FailurePolicy::FailClosed),
        ("{fail_open: true}", FailurePolicy::FailOpen),
        (
            "{fail_open: true, failure_policy: UNSPECIFIED}",
            FailurePolicy::FailOpen,
        ),
        ("{failure_policy: FAIL_CLOSED}", FailurePolicy::FailClosed),
        ("{failure_policy: FAIL_OPEN}", FailurePolicy::FailOpen),
        ("{failure_policy: FAIL_IGNORE}", FailurePolicy::FailOpen),
        (
            "{failure_policy: FAIL_RELOAD}",
            FailurePolicy::FailReload(ReloadBackoff::default()),
        ),
        (
            "{fail_open: false, failure_policy: FAIL_OPEN}",
            FailurePolicy::FailOpen,
        ),
    ];
    for (fields, want) in cases {
        assert_eq!(plugin_with(fields).failure_policy, want, "{fields}");
    }
    let fp = format!("{}.failure_policy", plugin());
    let mut doc = base();
    set(&mut doc, &format!("{}.fail_open", plugin()), y("true"));
    set(&mut doc, &fp, y("FAIL_CLOSED"));
    let (k, p, m) = field_err(&doc);
    assert_eq!((k, p), (ErrorKind::Invalid, fp));
    assert!(m.contains("only one of fail_open or failure_policy"), "{m}");
}

#[test]
fn reload_backoff_defaults() {
    let w =
        plugin_with("{failure_policy: FAIL_RELOAD, reload_config: {backoff: {base_interval: 2s}}}");
    assert_eq!(
        w.failure_policy,
        FailurePolicy::FailReload(ReloadBackoff::new(
            Duration::from_secs(2),
            Duration::from_secs(20)
        ))
    );
    let w = plugin_with("{failure_policy: FAIL_RELOAD, reload_config: {}}");
    assert_eq!(
        w.failure_policy,
        FailurePolicy::FailReload(ReloadBackoff::default())
    );
    // Read and checked under every policy, as Envoy does; used by FAIL_RELOAD.
    let w = plugin_with("{reload_config: {backoff: {base_interval: 2s}}}");
    assert_eq!(w.failure_policy, FailurePolicy::FailClosed);
}

#[test]
fn configuration_any_forms() {
    let cases: [(&str, &[u8]); 8] = [
        (
            r#"{"@type": type.googleapis.com/google.protobuf.StringValue, value: "hello world"}"#,
            b"hello world",
        ),
        (
            r#"{"@type": type.googleapis.com/google.protobuf.StringValue}"#,
            b"",
        ),
        (
            r#"{"@type": type.googleapis.com/google.protobuf.BytesValue, value: "aGk/Pz4+"}"#,
            b"hi??>>",
        ),
        // URL-safe alphabet, no padding.
        (
            r#"{"@type": type.googleapis.com/google.protobuf.BytesValue, value: "aGk_Pz4-"}"#,
            b"hi??>>",
        ),
        (
            r#"{"@type": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/x.Y, value: {b: [1, {c: "d"}], a: 1.5}}"#,
            br#"{"a":1.5,"b":[1,{"c":"d"}]}"#,
        ),
        (
            r#"{"@type": type.googleapis.com/xds.type.v3.TypedStruct, type_url: type.googleapis.com/x.Y}"#,
            b"{}",
        ),
        (
            r#"{"@type": type.googleapis.com/google.protobuf.Struct, value: {k: [true, null, 2.0]}}"#,
            br#"{"k":[true,null,2]}"#,
        ),
        (
            r#"{"@type": type.googleapis.com/google.protobuf.StringValue, value: "{\"a\": 1}\n"}"#,
            b"{\"a\": 1}\n",
        ),
    ];
    for (any, want) in cases {
        let w = plugin_with(&format!("{{configuration: {any}}}"));
        assert_eq!(
            String::from_utf8_lossy(&w.configuration),
            String::from_utf8_lossy(want),
            "{any}"
        );
        // The VM configuration follows the same rules.
        let mut doc = base();
        set(&mut doc, &format!("{}.configuration", vm()), y(any));
        assert_eq!(
            ok(&doc).listeners[0].hcm().wasm_filters[0].vm_configuration,
            want,
            "{any}"
        );
    }
    // A Struct must be a mapping; a StringValue's value must be a string.
    let c = format!("{}.configuration", plugin());
    expect_err(
        &c,
        y(r#"{"@type": type.googleapis.com/udpa.type.v1.TypedStruct, value: [1]}"#),
        ErrorKind::Invalid,
        &format!("{c}.value"),
    );
    expect_err(
        &c,
        y(r#"{"@type": type.googleapis.com/google.protobuf.StringValue, value: {a: 1}}"#),
        ErrorKind::Invalid,
        &format!("{c}.value"),
    );
    expect_err(
        &c,
        y(r#"{"@type": type.googleapis.com/google.protobuf.StringValue, value: x, extra: 1}"#),
        ErrorKind::Unsupported,
        &format!("{c}.extra"),
    );
}

#[test]
fn capabilities_env_and_stop_iteration() {
    let w = plugin_with(
        "{capability_restriction_config: {allowed_capabilities: {proxy_log: {}, proxy_on_request_headers: ~}}}",
    );
    assert_eq!(
        w.allowed_capabilities,
        Some(vec![
            "proxy_log".to_owned(),
            "proxy_on_request_headers".to_owned()
        ])
    );
    // An empty map allows everything, as in Envoy: reported as no restriction.
    let w = plugin_with("{capability_restriction_config: {allowed_capabilities: {}}}");
    assert_eq!(w.allowed_capabilities, None);

    assert!(plugin_with("{allow_on_headers_stop_iteration: true}").allow_on_headers_stop_iteration);
    assert!(
        plugin_with("{allow_on_headers_stop_iteration: {value: true}}")
            .allow_on_headers_stop_iteration
    );
    assert!(
        !plugin_with("{allow_on_headers_stop_iteration: false}").allow_on_headers_stop_iteration
    );
}

#[test]
fn code_sources() {
    let mut doc = base();
    let local = format!("{}.code.local", vm());
    set(&mut doc, &local, y("{inline_string: \"(module)\"}"));
    assert_eq!(
        ok(&doc).listeners[0].hcm().wasm_filters[0].code,
        WasmCode::Inline(b"(module)".to_vec())
    );
    set(&mut doc, &local, y("{filename: /abs/p.wasm}"));
    assert_eq!(
        ok(&doc).listeners[0].hcm().wasm_filters[0].code,
        WasmCode::File("/abs/p.wasm".into())
    );
    set(&mut doc, &local, y("{filename: rel/p.wasm}"));
    assert_eq!(
        ok(&doc).listeners[0].hcm().wasm_filters[0].code,
        WasmCode::File("/cfg/rel/p.wasm".into())
    );
}

// -------------------------------------------------- protobuf-JSON leniency

#[test]
fn camel_case_quoted_numbers_single_values_and_merge_keys() {
    let mut doc = base();
    let p = plugin();
    remove(&mut doc, &format!("{p}.root_id"));
    set(&mut doc, &format!("{p}.rootId"), y("camel"));
    set(
        &mut doc,
        &format!("{L}.address.socket_address.port_value"),
        y("'10005'"),
    );
    set(
        &mut doc,
        &format!("{}.domains", vhost()),
        y("'*.example.com'"),
    );
    let b = ok(&doc);
    assert_eq!(b.listeners[0].hcm().wasm_filters[0].root_id, "camel");
    assert_eq!(b.listeners[0].addr.port(), 10005);
    assert_eq!(
        b.listeners[0].hcm().routes.virtual_hosts()[0].domains,
        ["*.example.com"]
    );

    let text = r#"
x-endpoint: &ep
  address: { socket_address: { address: 10.1.1.1, port_value: 80 } }
"#;
    // Unknown top-level keys are errors even when only used as anchors.
    let e = config::parse(text, Path::new(".")).unwrap_err();
    assert_eq!(
        (e.kind(), e.path()),
        (Some(ErrorKind::Unsupported), Some("x-endpoint"))
    );

    let text = r#"
static_resources:
  clusters:
  - &c
    name: a
    connect_timeout: 1s
    load_assignment:
      cluster_name: a
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.1.1.1, port_value: 80}}}}]}]
  - <<: *c
    name: b
"#;
    let b = config::parse(text, Path::new(".")).expect("merge keys");
    assert_eq!(b.clusters[1].name, "b");
    assert_eq!(b.clusters[1].connect_timeout, Duration::from_secs(1));
    assert_eq!(b.clusters[1].endpoints[0].address, "10.1.1.1");
}

#[test]
fn http2_upstream_forms() {
    let mut doc = base();
    set(&mut doc, &format!("{C}.http2_protocol_options"), y("{}"));
    assert!(ok(&doc).clusters[0].http2);
    // null means unset, as in protobuf JSON.
    set(
        &mut doc,
        &format!("{C}.http2_protocol_options"),
        Value::Null,
    );
    assert!(!ok(&doc).clusters[0].http2);

    let opts = y(r#"
envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
  "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
  explicit_http_config: { http2_protocol_options: {} }
"#);
    let mut doc = base();
    set(
        &mut doc,
        &format!("{C}.typed_extension_protocol_options"),
        opts.clone(),
    );
    assert!(ok(&doc).clusters[0].http2);
    // Both the deprecated field and the typed options: rejected.
    set(&mut doc, &format!("{C}.http2_protocol_options"), y("{}"));
    let (k, p, _) = field_err(&doc);
    assert_eq!(k, ErrorKind::Invalid);
    assert_eq!(
        p,
        format!(
            "{C}.typed_extension_protocol_options.envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        )
    );
    // Another extension name.
    let mut doc = base();
    set(
        &mut doc,
        &format!("{C}.typed_extension_protocol_options"),
        y("{envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions: {}}"),
    );
    let (k, _, m) = field_err(&doc);
    assert_eq!(k, ErrorKind::Unsupported, "{m}");
}

#[test]
fn ignored_admin_fields_and_node() {
    let mut doc = base();
    set(&mut doc, "admin.access_log_path", y("/dev/null"));
    set(&mut doc, "admin.profile_path", y("/tmp/prof"));
    set(&mut doc, "node", y("{id: n1, metadata: {a: {b: 1}}}"));
    let b = ok(&doc);
    assert_eq!(b.admin, Some("127.0.0.1:9901".parse().unwrap()));
    let n = b.node.expect("node");
    assert_eq!(n.id, "n1");
    assert_eq!(n.cluster, "");
    assert_eq!(n.metadata["a"]["b"], serde_json::json!(1));
    expect_err(
        "admin.access_log_path",
        y("1"),
        ErrorKind::Invalid,
        "admin.access_log_path",
    );
    expect_err(
        "node.metadata",
        y("[1]"),
        ErrorKind::Invalid,
        "node.metadata",
    );
}

// ------------------------------------------------------------ routing

fn routes(vhosts: &str) -> config::RouteConfig {
    let mut doc = base();
    set(&mut doc, &format!("{}.route_config", hcm()), y(vhosts));
    ok(&doc).listeners[0].hcm().routes.clone()
}

fn direct(status: u16) -> RouteAction {
    RouteAction::Direct { status, body: None }
}

fn answer(status: u16) -> String {
    format!("{{match: {{prefix: /}}, direct_response: {{status: {status}}}}}")
}

#[test]
fn virtual_host_domain_precedence() {
    let rc = routes(&format!(
        r#"
virtual_hosts:
- {{name: default, domains: ["*"], routes: [{d}]}}
- {{name: exact, domains: [api.example.com, "api.example.com:8080"], routes: [{e}]}}
- {{name: suffix, domains: ["*.example.com"], routes: [{s}]}}
- {{name: long-suffix, domains: ["*.eu.example.com"], routes: [{ls}]}}
- {{name: dash-suffix, domains: ["*-api.example.com"], routes: [{ds}]}}
- {{name: prefix, domains: ["api.*"], routes: [{p}]}}
- {{name: long-prefix, domains: ["api.example.*"], routes: [{lp}]}}
"#,
        d = answer(200),
        e = answer(201),
        s = answer(202),
        ls = answer(203),
        ds = answer(204),
        p = answer(205),
        lp = answer(206),
    ));
    let vh = |host: &str| rc.find_virtual_host(host).map(|v| v.name.as_str());
    assert_eq!(vh("api.example.com"), Some("exact"));
    assert_eq!(vh("API.Example.COM"), Some("exact"));
    assert_eq!(vh("api.example.com:8080"), Some("exact"));
    // The port is part of the host: no exact match, the suffix wildcard
    // does not match either (it ends with :9090), but the prefix one does.
    assert_eq!(vh("api.example.com:9090"), Some("long-prefix"));
    assert_eq!(vh("www.example.com"), Some("suffix"));
    assert_eq!(vh("www.eu.example.com"), Some("long-suffix"));
    assert_eq!(vh("x-api.example.com"), Some("dash-suffix"));
    // A wildcard never matches the empty string.
    assert_eq!(vh("-api.example.com"), Some("suffix"));
    assert_eq!(vh(".example.com"), Some("default"));
    // Suffix beats prefix.
    assert_eq!(vh("api.foo.example.com"), Some("suffix"));
    assert_eq!(vh("api.example.org"), Some("long-prefix"));
    assert_eq!(vh("api.test"), Some("prefix"));
    assert_eq!(vh("other.org"), Some("default"));
    assert_eq!(rc.route("other.org", "/", no_headers), Some(&direct(200)));
    assert_eq!(
        rc.route("www.eu.example.com", "/", no_headers),
        Some(&direct(203))
    );

    // Without `*`, an unmatched host has no route.
    let rc = routes(&format!(
        "virtual_hosts: [{{name: only, domains: [a.com], routes: [{}]}}]",
        answer(200)
    ));
    assert_eq!(rc.route("b.com", "/", no_headers), None);
    assert_eq!(rc.route("a.com", "/", no_headers), Some(&direct(200)));
}

#[test]
fn path_matchers_and_first_match_order() {
    let rc = routes(
        r#"
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: { path: /exact }
    direct_response: { status: 201 }
  - match: { safe_regex: { regex: "/items/[0-9]+" } }
    direct_response: { status: 202 }
  - match: { prefix: /api/ }
    direct_response: { status: 203 }
  - match: { prefix: /api/never }
    direct_response: { status: 204 }
  - match: { prefix: /Case }
    direct_response: { status: 205 }
"#,
    );
    let r = |path: &str| match rc.route("h", path, no_headers) {
        Some(RouteAction::Direct { status, .. }) => Some(*status),
        _ => None,
    };
    assert_eq!(r("/exact"), Some(201));
    assert_eq!(r("/exact?q=1"), Some(201));
    assert_eq!(r("/exact#frag"), Some(201));
    assert_eq!(r("/exact/"), None);
    assert_eq!(r("/items/42"), Some(202));
    assert_eq!(r("/items/42?x=y"), Some(202));
    // The regex must match the whole path.
    assert_eq!(r("/items/42/more"), None);
    assert_eq!(r("/x/items/42"), None);
    assert_eq!(r("/api/never"), Some(203));
    assert_eq!(r("/api"), None);
    // Matching is case-sensitive.
    assert_eq!(r("/case"), None);
    assert_eq!(r("/Case/x"), Some(205));
}

#[test]
fn header_matchers_including_invert() {
    let rc = routes(
        r#"
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match:
      prefix: /
      headers:
      - { name: x-env, exact_match: prod }
      - { name: x-canary, present_match: true, invert_match: true }
    direct_response: { status: 201 }
  - match:
      prefix: /
      headers:
      - { name: x-env, string_match: { prefix: stag }, invert_match: true }
      - { name: x-user, string_match: { suffix: "@corp", ignore_case: true } }
    direct_response: { status: 202 }
  - match:
      prefix: /
      headers:
      - { name: x-flags, string_match: { contains: beta } }
      - { name: x-absent, present_match: false }
    direct_response: { status: 203 }
  - match:
      prefix: /
      headers:
      - { name: X-Only-Name }
      - { name: ":method", exact_match: POST }
    direct_response: { status: 204 }
"#,
    );
    let status = |hs: &[(&str, &str)]| {
        let lookup = |name: &str| {
            hs.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        match rc.route("h", "/", lookup) {
            Some(RouteAction::Direct { status, .. }) => Some(*status),
            _ => None,
        }
    };
    assert_eq!(status(&[("x-env", "prod")]), Some(201));
    assert_eq!(status(&[("x-env", "prod"), ("x-canary", "1")]), None);
    // Inverted string matchers need the header present: absent never matches.
    assert_eq!(status(&[("x-user", "ann@CORP")]), None);
    assert_eq!(
        status(&[("x-env", "dev"), ("x-user", "ann@CORP")]),
        Some(202)
    );
    assert_eq!(
        status(&[("x-env", "staging"), ("x-user", "ann@corp")]),
        None
    );
    assert_eq!(status(&[("x-env", "dev"), ("x-user", "ann@home")]), None);
    assert_eq!(status(&[("x-flags", "alpha,beta")]), Some(203));
    assert_eq!(status(&[("x-flags", "alpha,beta"), ("x-absent", "")]), None);
    // No specifier = present; pseudo-headers are looked up like others.
    assert_eq!(
        status(&[("x-only-name", ""), (":method", "POST")]),
        Some(204)
    );
    assert_eq!(status(&[("x-only-name", ""), (":method", "GET")]), None);
    assert_eq!(status(&[(":method", "POST")]), None);
}

#[test]
fn header_matcher_semantics_for_absent_headers() {
    use config::HeaderMatcher;
    let m = |kind: HeaderMatch, invert: bool| HeaderMatcher {
        name: "x".into(),
        kind,
        invert,
    };
    // Envoy: an absent header matches only present_match false (or
    // present_match true inverted).
    assert!(m(HeaderMatch::Present(false), false).matches(None));
    assert!(m(HeaderMatch::Present(true), true).matches(None));
    assert!(!m(HeaderMatch::Present(true), false).matches(None));
    assert!(!m(HeaderMatch::Present(false), true).matches(None));
    assert!(!m(HeaderMatch::Exact("a".into()), true).matches(None));
    assert!(!m(HeaderMatch::Exact("a".into()), false).matches(None));
    assert!(m(HeaderMatch::Exact("a".into()), true).matches(Some("b")));
    assert!(!m(HeaderMatch::Present(false), false).matches(Some("")));
}

#[test]
fn prefix_rewrite_and_timeouts() {
    let rc = routes(
        r#"
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: { prefix: /old/ }
    route: { cluster: backend, prefix_rewrite: /new/ }
  - match: { path: /exact }
    route: { cluster: backend, prefix_rewrite: /replaced, timeout: 3s }
  - match: { safe_regex: { regex: "/re/.*" } }
    route: { cluster: backend, prefix_rewrite: /, timeout: 0s }
  - match: { prefix: / }
    route: { cluster: backend }
"#,
    );
    let rewrite = |path: &str| {
        rc.find_route("h", path, no_headers)
            .and_then(|r| r.rewritten_path(path))
    };
    assert_eq!(rewrite("/old/a/b?x=1").as_deref(), Some("/new/a/b?x=1"));
    assert_eq!(rewrite("/exact?q").as_deref(), Some("/replaced?q"));
    assert_eq!(rewrite("/re/x/y?z").as_deref(), Some("/?z"));
    assert_eq!(rewrite("/other"), None);
    let timeout = |path: &str| match rc.route("h", path, no_headers) {
        Some(RouteAction::Cluster { timeout, .. }) => *timeout,
        other => panic!("{other:?}"),
    };
    assert_eq!(timeout("/old/"), Some(config::DEFAULT_ROUTE_TIMEOUT));
    assert_eq!(timeout("/exact"), Some(Duration::from_secs(3)));
    assert_eq!(timeout("/re/1"), None);
}

/// `plugin_with` plus `vm_config.vessel_limits: limits`.
fn limits_with(limits: &str) -> vessel_host::Limits {
    let mut doc = base();
    set(&mut doc, &format!("{}.vessel_limits", vm()), y(limits));
    ok(&doc).listeners[0].hcm().wasm_filters[0].limits.clone()
}

#[test]
fn vessel_limits_every_field_and_defaults() {
    use vessel_host::Limits;
    // Absent: every default.
    assert_eq!(
        ok(&base()).listeners[0].hcm().wasm_filters[0].limits,
        Limits::default()
    );
    assert_eq!(limits_with("{}"), Limits::default());
    let l = limits_with(
        "{memory_bytes: 67108864, callback_timeout: 0.05s, startup_timeout: 2s, \
         fuel_per_callback: 1000000, max_contexts: 16, max_log_bytes_per_callback: 4096, \
         max_callouts_in_flight: 3, max_header_map_bytes: 65536, max_header_map_entries: 200, \
         max_body_bytes: 1048576, max_property_bytes: 4096, max_effect_bytes: 2097152, \
         max_metrics: 50, max_metric_name_bytes: 256}",
    );
    assert_eq!(
        l,
        Limits {
            memory_bytes: 64 << 20,
            callback_timeout: Some(Duration::from_millis(50)),
            startup_timeout: Some(Duration::from_secs(2)),
            fuel_per_callback: Some(1_000_000),
            max_contexts: 16,
            max_log_bytes_per_callback: 4096,
            max_callouts_in_flight: 3,
            max_header_map_bytes: 64 << 10,
            max_header_map_entries: 200,
            max_body_bytes: 1 << 20,
            max_property_bytes: 4096,
            max_effect_bytes: 2 << 20,
            max_metrics: 50,
            max_metric_name_bytes: 256,
        }
    );
    // One field leaves the others at their defaults; quoted (protobuf JSON
    // uint64) numbers and camelCase keys are accepted as elsewhere.
    assert_eq!(
        limits_with("{memoryBytes: \"65536\"}"),
        Limits {
            memory_bytes: 65536,
            ..Limits::default()
        }
    );
    assert_eq!(
        limits_with("{max_contexts: 2}").max_contexts,
        2,
        "the smallest allowed"
    );
    assert_eq!(
        limits_with("{memory_bytes: 1073741824}").memory_bytes,
        1 << 30
    );
}

#[test]
fn vessel_limits_bad_values_are_rejected_with_their_path() {
    let at = |field: &str| format!("{}.vessel_limits.{field}", vm());
    let cases: &[(&str, &str, ErrorKind, &str)] = &[
        (
            "memory_bytes",
            "65535",
            ErrorKind::Invalid,
            "at least one wasm page",
        ),
        (
            "memory_bytes",
            "1073741825",
            ErrorKind::Invalid,
            "engine's ceiling",
        ),
        (
            "memory_bytes",
            "-1",
            ErrorKind::Invalid,
            "non-negative integer",
        ),
        ("memory_bytes", "64MiB", ErrorKind::Invalid, "integer"),
        (
            "callback_timeout",
            "0s",
            ErrorKind::Invalid,
            "greater than 0s",
        ),
        ("callback_timeout", "50", ErrorKind::Invalid, "duration"),
        ("callback_timeout", "-1s", ErrorKind::Invalid, "negative"),
        (
            "startup_timeout",
            "0s",
            ErrorKind::Invalid,
            "greater than 0s",
        ),
        (
            "fuel_per_callback",
            "0",
            ErrorKind::Invalid,
            "greater than 0",
        ),
        ("fuel_per_callback", "lots", ErrorKind::Invalid, "integer"),
        ("max_contexts", "1", ErrorKind::Invalid, "at least 2"),
        ("max_contexts", "[]", ErrorKind::Invalid, "integer"),
        (
            "max_log_bytes_per_callback",
            "x",
            ErrorKind::Invalid,
            "integer",
        ),
        (
            "max_callouts_in_flight",
            "1.5",
            ErrorKind::Invalid,
            "integer",
        ),
        (
            "max_header_map_bytes",
            "0",
            ErrorKind::Invalid,
            "at least 1",
        ),
        (
            "max_header_map_entries",
            "0",
            ErrorKind::Invalid,
            "at least 1",
        ),
        ("max_body_bytes", "big", ErrorKind::Invalid, "integer"),
        ("max_property_bytes", "0", ErrorKind::Invalid, "at least 1"),
        (
            "max_effect_bytes",
            "-5",
            ErrorKind::Invalid,
            "non-negative integer",
        ),
        ("max_metrics", "0", ErrorKind::Invalid, "at least 1"),
        (
            "max_metric_name_bytes",
            "0",
            ErrorKind::Invalid,
            "at least 1",
        ),
    ];
    for (field, value, kind, needle) in cases {
        let m = expect_err(
            &format!("{}.vessel_limits.{field}", vm()),
            y(value),
            *kind,
            &at(field),
        );
        assert!(m.contains(needle), "{field}: {value}: {m}");
    }
    // An unknown key inside vessel_limits is named by its path.
    let mut doc = base();
    set(
        &mut doc,
        &format!("{}.vessel_limits", vm()),
        y("{memory_bytes: 65536, stack_bytes: 1}"),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(k, ErrorKind::Unsupported);
    assert_eq!(p, at("stack_bytes"));
    // vessel_limits must be a mapping.
    expect_err(
        &format!("{}.vessel_limits", vm()),
        y("64"),
        ErrorKind::Invalid,
        &format!("{}.vessel_limits", vm()),
    );
}

#[test]
fn allowed_capabilities_bad_values_are_rejected_with_their_path() {
    let restriction = format!("{}.capability_restriction_config", plugin());
    // A list, not a map of name -> {}.
    expect_err(
        &format!("{restriction}.allowed_capabilities"),
        y("[proxy_log]"),
        ErrorKind::Invalid,
        &format!("{restriction}.allowed_capabilities"),
    );
    // An empty name.
    let m = expect_err(
        &format!("{restriction}.allowed_capabilities"),
        y("{'': {}}"),
        ErrorKind::Invalid,
        &format!("{restriction}.allowed_capabilities."),
    );
    assert!(m.contains("must not be empty"), "{m}");
    // A SanitizationConfig has no fields.
    let (k, p, _) = {
        let mut doc = base();
        set(
            &mut doc,
            &format!("{restriction}.allowed_capabilities"),
            y("{proxy_log: {sanitize: true}}"),
        );
        field_err(&doc)
    };
    assert_eq!(k, ErrorKind::Unsupported);
    assert_eq!(
        p,
        format!("{restriction}.allowed_capabilities.proxy_log.sanitize")
    );
}

// ------------------------------------------------------- load balancing

#[test]
fn load_balancing_fields_parse_with_envoys_defaults() {
    use vessel_proxy::config::{LbPolicy, RetryPolicy};
    let mut doc = base();
    set(&mut doc, &format!("{C}.lb_policy"), y("LEAST_REQUEST"));
    set(
        &mut doc,
        &format!("{C}.least_request_lb_config.choice_count"),
        y("3"),
    );
    set(
        &mut doc,
        &format!("{C}.common_lb_config.healthy_panic_threshold.value"),
        y("25.5"),
    );
    set(
        &mut doc,
        &format!("{C}.health_checks"),
        y(
            "[{timeout: 1s, interval: 2s, unhealthy_threshold: 3, healthy_threshold: {value: 2}, http_health_check: {path: /healthz, expected_statuses: [{start: 200, end: 300}]}}]",
        ),
    );
    set(
        &mut doc,
        &format!("{C}.outlier_detection"),
        y("{consecutive_5xx: 2}"),
    );
    set(
        &mut doc,
        &format!("{}.routes[0].route.retry_policy", vhost()),
        y("{retry_on: '5xx,connect-failure', per_try_timeout: 0.5s}"),
    );
    let b = ok(&doc);
    let c = &b.clusters[0];
    assert_eq!(
        c.load_balancing.policy,
        LbPolicy::LeastRequest { choice_count: 3 }
    );
    assert_eq!(c.load_balancing.panic_threshold_bp, 2550);
    let hc = c.health_check.as_ref().expect("health check");
    assert_eq!(
        (
            hc.timeout,
            hc.interval,
            hc.unhealthy_threshold,
            hc.healthy_threshold
        ),
        (Duration::from_secs(1), Duration::from_secs(2), 3, 2)
    );
    assert_eq!((hc.path.as_str(), hc.host.as_deref()), ("/healthz", None));
    assert_eq!(hc.expected_statuses, [(200, 300)]);
    let od = c.outlier_detection.as_ref().expect("outlier detection");
    assert_eq!(od.consecutive_5xx, 2);
    assert_eq!(od.base_ejection_time, Duration::from_secs(30));
    assert_eq!(od.max_ejection_percent, 10);
    let route = b.listeners[0].hcm().routes.route("x", "/", no_headers);
    let Some(RouteAction::Cluster { retry: Some(r), .. }) = route else {
        panic!("{route:?}")
    };
    let RetryPolicy {
        retry_on,
        num_retries,
        per_try_timeout,
        backoff_base,
        backoff_max,
        previous_hosts,
        ..
    } = r;
    assert!(retry_on.any_5xx && retry_on.connect_failure && !retry_on.reset);
    assert_eq!(*num_retries, 1, "Envoy's default");
    assert_eq!(*per_try_timeout, Some(Duration::from_millis(500)));
    assert_eq!(
        (*backoff_base, *backoff_max),
        (Duration::from_millis(25), Duration::from_millis(250))
    );
    assert!(!previous_hosts);
}

#[test]
fn load_balancing_errors_name_their_field() {
    let retry = format!("{}.routes[0].route.retry_policy", vhost());
    let m = expect_err(
        &format!("{retry}.retry_on"),
        y("retriable-4xx"),
        ErrorKind::Unsupported,
        &format!("{retry}.retry_on"),
    );
    assert!(m.contains("retriable-4xx"), "{m}");
    expect_err(
        &format!("{retry}.retry_on"),
        y("sometimes"),
        ErrorKind::Invalid,
        &format!("{retry}.retry_on"),
    );
    let route = format!("{}.routes[0].route", vhost());
    let mut doc = base();
    remove(&mut doc, &format!("{route}.cluster"));
    set(
        &mut doc,
        &format!("{route}.weighted_clusters.clusters"),
        y("[{name: backend, weight: 0}]"),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(
        (k, p),
        (ErrorKind::Invalid, format!("{route}.weighted_clusters"))
    );
    let mut doc = base();
    set(
        &mut doc,
        &format!("{route}.weighted_clusters.clusters"),
        y("[{name: backend, weight: 1}]"),
    );
    let (k, _, m) = field_err(&doc);
    assert_eq!(k, ErrorKind::Invalid, "cluster and weighted_clusters: {m}");
    let mut doc = base();
    remove(&mut doc, &format!("{route}.cluster"));
    set(
        &mut doc,
        &format!("{route}.weighted_clusters.clusters"),
        y("[{name: nowhere, weight: 1}]"),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(
        (k, p),
        (
            ErrorKind::UnknownReference,
            format!("{route}.weighted_clusters.clusters[0].name")
        )
    );
    expect_err(
        &format!("{C}.health_checks"),
        y("[{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1}]"),
        ErrorKind::Missing,
        &format!("{C}.health_checks[0].http_health_check"),
    );
    expect_err(
        &format!("{C}.health_checks"),
        y(
            "[{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {}}]",
        ),
        ErrorKind::Unsupported,
        &format!("{C}.health_checks[0].tcp_health_check"),
    );
    expect_err(
        &format!("{C}.outlier_detection.max_ejection_percent"),
        y("101"),
        ErrorKind::Invalid,
        &format!("{C}.outlier_detection.max_ejection_percent"),
    );
    let maglev = "{policies: [{typed_extension_config: {name: x, typed_config: {'@type': \
                  type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev}}}]}";
    let m = expect_err(
        &format!("{C}.load_balancing_policy"),
        y(maglev),
        ErrorKind::Unsupported,
        &format!("{C}.load_balancing_policy.policies[0].typed_extension_config.typed_config.@type"),
    );
    assert!(m.contains("RoundRobin"), "{m}");
    let mut doc = base();
    set(&mut doc, &format!("{C}.lb_policy"), y("RANDOM"));
    set(
        &mut doc,
        &format!("{C}.load_balancing_policy"),
        y(&maglev.replace("maglev.v3.Maglev", "random.v3.Random")),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!((k, p), (ErrorKind::Invalid, format!("{C}.lb_policy")));
    expect_err(
        &format!("{}.route_config.internal_only_headers", hcm()),
        y("[':path']"),
        ErrorKind::Invalid,
        &format!("{}.route_config.internal_only_headers[0]", hcm()),
    );
}

/// `examples/llm-gateway.yaml` loads: the middleware chain, the policy with
/// its fallback, and the workers' cluster with every load-balancing field.
#[test]
fn the_llm_gateway_example_loads() {
    use vessel_proxy::config::{LbPolicy, PolicyFallback};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/llm-gateway.yaml");
    let b = config::load(&path).expect("examples/llm-gateway.yaml loads");
    let l = &b.listeners[0];
    let names: Vec<&str> = l
        .hcm()
        .wasm_filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "llm-auth",
            "llm-token-limit",
            "llm-pii",
            "llm-moderation",
            "llm-billing",
            "llm-policy"
        ]
    );
    assert_eq!(
        l.hcm().routes.internal_only_headers(),
        ["x-gateway-destination-endpoint", "x-llm-tenant"]
    );
    let Some(RouteAction::Cluster {
        policy_fallback: Some(PolicyFallback { plugin, .. }),
        retry: Some(_),
        ..
    }) = l
        .hcm()
        .routes
        .route("gw", "/v1/chat/completions", no_headers)
    else {
        panic!("the /v1/ route")
    };
    assert_eq!(plugin, "llm-policy");
    let c = &b.clusters[0];
    assert_eq!(
        c.load_balancing.policy,
        LbPolicy::LeastRequest { choice_count: 2 }
    );
    assert_eq!(
        c.load_balancing.override_host_headers,
        ["x-gateway-destination-endpoint"]
    );
    assert!(
        c.health_check.is_some() && c.outlier_detection.is_some() && c.metrics_scrape.is_some()
    );
}

/// `plugin_with` plus `vm_config.vessel_hidden: hidden`.
fn hidden_with(hidden: &str) -> vessel_host::Hidden {
    let mut doc = base();
    set(&mut doc, &format!("{}.vessel_hidden", vm()), y(hidden));
    ok(&doc).listeners[0].hcm().wasm_filters[0].hidden.clone()
}

#[test]
fn vessel_hidden_lists_headers_and_properties() {
    use vessel_host::{Hidden, MapType};
    assert_eq!(
        ok(&base()).listeners[0].hcm().wasm_filters[0].hidden,
        Hidden::new()
    );
    assert_eq!(hidden_with("{}"), Hidden::new());
    let h = hidden_with(
        "{request_headers: [Authorization, cookie], response_headers: [set-cookie], \
         properties: [source.address, connection.*]}",
    );
    assert_eq!(
        h.request_headers().collect::<Vec<_>>(),
        ["authorization", "cookie"]
    );
    assert_eq!(h.response_headers().collect::<Vec<_>>(), ["set-cookie"]);
    assert_eq!(
        h.properties().collect::<Vec<_>>(),
        ["source.address", "connection.*"]
    );
    assert!(h.hides_header(MapType::HttpRequestTrailers, b"AUTHORIZATION"));
    assert!(h.hides_property(b"connection\0id"));
    // A single value is a one-element list, as elsewhere.
    let one = hidden_with("{properties: source.address}");
    assert_eq!(one.properties().collect::<Vec<_>>(), ["source.address"]);
}

#[test]
fn vessel_hidden_bad_values_are_rejected_with_their_path() {
    let at = |field: &str| format!("{}.vessel_hidden.{field}", vm());
    for (value, field, needle) in [
        (
            "{request_headers: [cookie, \"bad name\"]}",
            "request_headers[1]",
            "not a header name",
        ),
        (
            "{response_headers: [\"\"]}",
            "response_headers[0]",
            "not a header name",
        ),
        (
            "{properties: [source.address, \"a.*.b\"]}",
            "properties[1]",
            "not a property pattern",
        ),
        (
            "{properties: [\"*\"]}",
            "properties[0]",
            "not a property pattern",
        ),
        ("{properties: [5]}", "properties[0]", "string"),
    ] {
        let mut doc = base();
        set(&mut doc, &format!("{}.vessel_hidden", vm()), y(value));
        let (k, p, m) = field_err(&doc);
        assert_eq!(
            (k, p.as_str()),
            (ErrorKind::Invalid, at(field).as_str()),
            "{value}: {m}"
        );
        assert!(m.contains(needle), "{value}: {m}");
    }
    // An unknown key is named by its path.
    let mut doc = base();
    set(
        &mut doc,
        &format!("{}.vessel_hidden", vm()),
        y("{request_headers: [a], trailers: [b]}"),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(k, ErrorKind::Unsupported);
    assert_eq!(p, at("trailers"));
}

// ------------------------------------------------- filter chains, tcp_proxy

/// A tcp_proxy network filter to `cluster`, with extra typed_config keys.
fn tcp_filter(cluster: &str, extra: &str) -> Value {
    y(&format!(
        r#"{{name: envoy.filters.network.tcp_proxy, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: tcp, cluster: {cluster} {extra}}}}}"#
    ))
}

/// A network wasm filter named `name`.
fn network_wasm(name: &str) -> Value {
    y(&format!(
        r#"{{name: envoy.filters.network.wasm, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm, config: {{name: {name}, vm_config: {{code: {{local: {{filename: {name}.wasm}}}}}}}}}}}}"#
    ))
}

/// `base()` with the HTTP chain on port 10000 only, plus: a tcp_proxy
/// chain for `a.example.com` and `*.example.com`; a chain of a network wasm
/// filter then tcp_proxy for everything else.
fn chains_doc() -> Value {
    let mut doc = base();
    set(
        &mut doc,
        &format!("{L}.filter_chains[0].filter_chain_match"),
        y("{destination_port: 10000}"),
    );
    let chains = doc["static_resources"]["listeners"][0]["filter_chains"]
        .as_array_mut()
        .expect("filter_chains");
    let mut sni = serde_json::Map::new();
    sni.insert(
        "filter_chain_match".into(),
        y(r#"{server_names: [a.example.com, "*.Example.com"]}"#),
    );
    sni.insert(
        "filters".into(),
        Value::Array(vec![tcp_filter("backend", "")]),
    );
    chains.push(Value::Object(sni));
    let mut rest = serde_json::Map::new();
    rest.insert("name".into(), y("rest"));
    rest.insert(
        "filters".into(),
        Value::Array(vec![
            network_wasm("counter"),
            tcp_filter("backend", ", idle_timeout: 5s"),
        ]),
    );
    chains.push(Value::Object(rest));
    doc
}

#[test]
fn filter_chains_match_by_port_then_server_name() {
    let b = ok(&chains_doc());
    let l = &b.listeners[0];
    assert_eq!(l.filter_chains.len(), 3);
    assert_eq!(l.filter_chains[0].matcher.destination_port, Some(10000));
    assert_eq!(
        l.filter_chains[1].matcher.server_names,
        ["a.example.com", "*.example.com"],
        "names are lower-cased"
    );
    let Terminal::TcpProxy(t) = &l.filter_chains[1].terminal else {
        panic!("chain 1 is a tcp_proxy");
    };
    assert_eq!(t.cluster, "backend");
    assert_eq!(t.stat_prefix, "tcp");
    assert_eq!(
        t.idle_timeout,
        Some(DEFAULT_TCP_IDLE_TIMEOUT),
        "Envoy's default"
    );
    let rest = &l.filter_chains[2];
    assert_eq!(rest.name, "rest");
    assert_eq!(rest.network_filters.len(), 1);
    assert_eq!(rest.network_filters[0].name, "counter");
    let Terminal::TcpProxy(t) = &rest.terminal else {
        panic!("chain 2 is a tcp_proxy");
    };
    assert_eq!(t.idle_timeout, Some(Duration::from_secs(5)));
    assert!(l.needs_server_name());
    assert_eq!(l.http_managers().map(|(i, _)| i).collect::<Vec<_>>(), [0]);

    // The port is matched first: the HTTP chain names it.
    assert_eq!(l.select(10000, Some("a.example.com")), Some(0));
    assert_eq!(l.select(10000, None), Some(0));
    // Another port: an exact name, then a wildcard, then the chain
    // without names.
    assert_eq!(l.select(9000, Some("a.example.com")), Some(1));
    assert_eq!(l.select(9000, Some("B.EXAMPLE.COM")), Some(1));
    assert_eq!(
        l.select(9000, Some("example.com")),
        Some(2),
        "*. needs a label"
    );
    assert_eq!(l.select(9000, Some("other.org")), Some(2));
    assert_eq!(l.select(9000, None), Some(2));
}

#[test]
fn a_connection_no_chain_takes_goes_to_the_default_chain_or_is_closed() {
    let mut doc = chains_doc();
    // Without the catch-all chain, a name nobody serves matches nothing.
    doc["static_resources"]["listeners"][0]["filter_chains"]
        .as_array_mut()
        .expect("filter_chains")
        .pop();
    let b = ok(&doc);
    assert_eq!(b.listeners[0].select(9000, Some("other.org")), None);
    assert_eq!(b.listeners[0].select(9000, Some("x.example.com")), Some(1));

    let mut d = serde_json::Map::new();
    d.insert(
        "filters".into(),
        Value::Array(vec![tcp_filter("backend", ", idle_timeout: 0s")]),
    );
    set(
        &mut doc,
        &format!("{L}.default_filter_chain"),
        Value::Object(d),
    );
    let b = ok(&doc);
    let l = &b.listeners[0];
    assert_eq!(
        l.select(9000, Some("other.org")),
        Some(2),
        "the default chain"
    );
    let Some(Terminal::TcpProxy(t)) = l.chains().nth(2).map(|c| &c.terminal) else {
        panic!("the default chain is a tcp_proxy");
    };
    assert_eq!(t.idle_timeout, None, "0s disables the idle timeout");
}

#[test]
fn filter_chain_errors_name_their_field() {
    // Two chains with the same match.
    let mut doc = chains_doc();
    set(
        &mut doc,
        &format!("{L}.filter_chains[2].filter_chain_match"),
        y("{server_names: [a.example.com]}"),
    );
    let (kind, path, msg) = field_err(&doc);
    assert_eq!(kind, ErrorKind::Duplicate);
    assert_eq!(path, format!("{L}.filter_chains[2].filter_chain_match"));
    assert!(msg.contains("filter_chains[1]"), "{msg}");

    // A wildcard that is not a leading `*.`.
    let mut doc = chains_doc();
    set(
        &mut doc,
        &format!("{L}.filter_chains[1].filter_chain_match.server_names[1]"),
        y("a.*.com"),
    );
    let (kind, path, _) = field_err(&doc);
    assert_eq!(
        (kind, path.as_str()),
        (
            ErrorKind::Invalid,
            format!("{L}.filter_chains[1].filter_chain_match.server_names[1]").as_str()
        )
    );

    // A tcp_proxy to a cluster that does not exist.
    let mut doc = chains_doc();
    set(
        &mut doc,
        &format!("{L}.filter_chains[1].filters[0]"),
        tcp_filter("nowhere", ""),
    );
    let (kind, path, msg) = field_err(&doc);
    assert_eq!(kind, ErrorKind::UnknownReference);
    assert_eq!(
        path,
        format!("{L}.filter_chains[1].filters[0].typed_config.cluster")
    );
    assert!(msg.contains("nowhere"), "{msg}");

    // A terminal filter before another filter.
    let mut doc = chains_doc();
    doc["static_resources"]["listeners"][0]["filter_chains"][2]["filters"]
        .as_array_mut()
        .expect("filters")
        .reverse();
    let (kind, path, _) = field_err(&doc);
    assert_eq!(
        (kind, path.as_str()),
        (
            ErrorKind::Invalid,
            format!("{L}.filter_chains[2].filters[0]").as_str()
        )
    );

    // A network wasm filter alone: no terminal filter.
    let mut doc = chains_doc();
    set(
        &mut doc,
        &format!("{L}.filter_chains[2].filters"),
        Value::Array(vec![network_wasm("alone")]),
    );
    let (kind, path, _) = field_err(&doc);
    assert_eq!(
        (kind, path.as_str()),
        (
            ErrorKind::Invalid,
            format!("{L}.filter_chains[2].filters[0]").as_str()
        )
    );

    // tcp_proxy fields vessel does not implement.
    let mut doc = chains_doc();
    set(
        &mut doc,
        &format!("{L}.filter_chains[1].filters[0].typed_config.weighted_clusters"),
        y("{}"),
    );
    let (kind, path, _) = field_err(&doc);
    assert_eq!(
        (kind, path.as_str()),
        (
            ErrorKind::Unsupported,
            format!("{L}.filter_chains[1].filters[0].typed_config.weighted_clusters").as_str()
        )
    );
}

#[test]
fn listener_filters_take_only_the_tls_inspector() {
    let mut doc = base();
    set(
        &mut doc,
        &format!("{L}.listener_filters"),
        y(
            r#"[{name: envoy.filters.listener.tls_inspector}, {name: tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}]"#,
        ),
    );
    ok(&doc);
    set(
        &mut doc,
        &format!("{L}.listener_filters"),
        y("[{name: envoy.filters.listener.http_inspector}]"),
    );
    let (kind, path, _) = field_err(&doc);
    assert_eq!(
        (kind, path.as_str()),
        (
            ErrorKind::Unsupported,
            format!("{L}.listener_filters[0].name").as_str()
        )
    );
}

/// `vm_config.code.remote` (a `RemoteDataSource`): read with Envoy's
/// defaults (1 retry, 1 s base backoff, 10 × base), every field checked,
/// unknown keys errors, the cluster a known one.
#[test]
fn remote_code_is_read_with_envoys_defaults_and_checked() {
    use vessel_proxy::config::{RemoteCode, RemoteRetry, WasmCode};
    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let code = format!("{}.code", vm());
    let remote = |extra: &str| {
        y(&format!(
            "{{remote: {{http_uri: {{uri: 'http://modules.example/f.wasm', cluster: backend, \
             timeout: 5s}}, sha256: {SHA}{extra}}}}}"
        ))
    };
    let read = |v: Value| {
        let mut doc = base();
        set(&mut doc, &code, v);
        ok(&doc).listeners[0].hcm().wasm_filters[0].code.clone()
    };
    let expected = RemoteCode {
        uri: "http://modules.example/f.wasm".into(),
        cluster: "backend".into(),
        timeout: Duration::from_secs(5),
        sha256: SHA.into(),
        retry: RemoteRetry {
            num_retries: 1,
            base_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(10),
        },
    };
    assert_eq!(read(remote("")), WasmCode::Remote(expected.clone()));
    assert_eq!(
        read(remote(
            ", retry_policy: {num_retries: 3, retry_back_off: {base_interval: 0.2s}}"
        )),
        WasmCode::Remote(RemoteCode {
            retry: RemoteRetry {
                num_retries: 3,
                base_interval: Duration::from_millis(200),
                max_interval: Duration::from_secs(2),
            },
            ..expected.clone()
        })
    );
    assert_eq!(
        read(remote(
            ", retry_policy: {num_retries: {value: 0}, retry_back_off: {base_interval: 1s, max_interval: 3s}}"
        )),
        WasmCode::Remote(RemoteCode {
            retry: RemoteRetry {
                num_retries: 0,
                base_interval: Duration::from_secs(1),
                max_interval: Duration::from_secs(3),
            },
            ..expected.clone()
        })
    );

    let r = format!("{code}.remote");
    let hu = format!("{r}.http_uri");
    let bad: Vec<(String, &str, ErrorKind, String)> = vec![
        (
            format!("{r}.sha256"),
            "abc",
            ErrorKind::Invalid,
            format!("{r}.sha256"),
        ),
        (
            format!("{r}.sha256"),
            "''",
            ErrorKind::Invalid,
            format!("{r}.sha256"),
        ),
        (
            format!("{r}.sha256"),
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            ErrorKind::Invalid,
            format!("{r}.sha256"),
        ),
        (
            format!("{r}.sha256"),
            "z3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ErrorKind::Invalid,
            format!("{r}.sha256"),
        ),
        (
            format!("{hu}.uri"),
            "''",
            ErrorKind::Invalid,
            format!("{hu}.uri"),
        ),
        (
            format!("{hu}.uri"),
            "f.wasm",
            ErrorKind::Invalid,
            format!("{hu}.uri"),
        ),
        (
            format!("{hu}.timeout"),
            "5",
            ErrorKind::Invalid,
            format!("{hu}.timeout"),
        ),
        (
            format!("{hu}.cluster"),
            "''",
            ErrorKind::Invalid,
            format!("{hu}.cluster"),
        ),
        (
            format!("{hu}.extra"),
            "1",
            ErrorKind::Unsupported,
            format!("{hu}.extra"),
        ),
        (
            format!("{r}.extra"),
            "1",
            ErrorKind::Unsupported,
            format!("{r}.extra"),
        ),
        (
            format!("{r}.retry_policy.retry_priority"),
            "{}",
            ErrorKind::Unsupported,
            format!("{r}.retry_policy.retry_priority"),
        ),
        (
            format!("{r}.retry_policy.retry_back_off"),
            "{base_interval: 2s, max_interval: 1s}",
            ErrorKind::Invalid,
            format!("{r}.retry_policy.retry_back_off.max_interval"),
        ),
        (
            format!("{r}.retry_policy.retry_back_off"),
            "{max_interval: 1s}",
            ErrorKind::Missing,
            format!("{r}.retry_policy.retry_back_off.base_interval"),
        ),
        (
            format!("{r}.retry_policy.num_retries"),
            "-1",
            ErrorKind::Invalid,
            format!("{r}.retry_policy.num_retries"),
        ),
    ];
    for (path, value, kind, at) in bad {
        let mut doc = base();
        set(&mut doc, &code, remote(""));
        set(&mut doc, &path, y(value));
        let (k, p, m) = field_err(&doc);
        assert_eq!((k, p.as_str()), (kind, at.as_str()), "setting {path}: {m}");
    }
    // Required fields.
    for (missing, at) in [
        ("sha256", format!("{r}.sha256")),
        ("http_uri", format!("{r}.http_uri")),
    ] {
        let mut doc = base();
        set(&mut doc, &code, remote(""));
        doc_remove(&mut doc, &format!("{r}.{missing}"));
        let (k, p, m) = field_err(&doc);
        assert_eq!((k, p.as_str()), (ErrorKind::Missing, at.as_str()), "{m}");
    }
    for missing in ["uri", "cluster", "timeout"] {
        let mut doc = base();
        set(&mut doc, &code, remote(""));
        doc_remove(&mut doc, &format!("{hu}.{missing}"));
        let (k, p, m) = field_err(&doc);
        assert_eq!(
            (k, p.as_str()),
            (ErrorKind::Missing, format!("{hu}.{missing}").as_str()),
            "{m}"
        );
    }
    // local and remote together; neither.
    let mut doc = base();
    set(
        &mut doc,
        &format!("{code}.remote"),
        remote("")["remote"].clone(),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!((k, p), (ErrorKind::Invalid, format!("{code}.remote")));
    expect_err(&code, y("{}"), ErrorKind::Missing, &code);
    // The cluster must exist.
    let mut doc = base();
    set(&mut doc, &code, remote(""));
    set(&mut doc, &format!("{hu}.cluster"), y("nowhere"));
    let (k, p, m) = field_err(&doc);
    assert_eq!(
        (k, p.as_str()),
        (
            ErrorKind::UnknownReference,
            format!("{}.http_filters[0].typed_config", hcm()).as_str()
        ),
        "{m}"
    );
    assert!(
        m.contains("code.remote.http_uri.cluster") && m.contains("nowhere"),
        "{m}"
    );
}

/// Removes the key at `path` (its last segment) from `doc`.
fn doc_remove(doc: &mut Value, path: &str) {
    let (parent, key) = path.rsplit_once('.').expect("a dotted path");
    let pointer: String = segments(parent)
        .iter()
        .map(|s| match s {
            Seg::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
            Seg::Index(i) => format!("/{i}"),
        })
        .collect();
    doc.pointer_mut(&pointer)
        .and_then(Value::as_object_mut)
        .expect("the parent is a mapping")
        .remove(key);
}

// ------------------------------------------------------- dynamic forms (xDS)

#[test]
fn dynamic_resources_name_an_http2_static_cluster() {
    let ads = y("{ads_config: {api_type: GRPC, transport_api_version: V3, \
                 grpc_services: [{envoy_grpc: {cluster_name: backend}}]}, \
                 lds_config: {ads: {}, resource_api_version: V3}, cds_config: {ads: {}}}");
    let mut doc = base();
    set(&mut doc, "dynamic_resources", ads.clone());
    let (k, p, m) = field_err(&doc);
    assert_eq!(
        (k, p.as_str()),
        (
            ErrorKind::Invalid,
            "dynamic_resources.ads_config.grpc_services"
        ),
        "{m}"
    );
    assert!(m.contains("HTTP/2"), "{m}");
    set(&mut doc, &format!("{C}.http2_protocol_options"), y("{}"));
    let boot = ok(&doc);
    let d = boot.dynamic.expect("dynamic_resources");
    assert_eq!(
        (
            d.ads_cluster.as_str(),
            d.lds,
            d.cds,
            d.node_on_first_message_only
        ),
        ("backend", true, true, false)
    );

    let dr = "dynamic_resources";
    set(
        &mut doc,
        &format!("{dr}.ads_config.grpc_services[0].envoy_grpc.cluster_name"),
        y("nowhere"),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(
        (k, p),
        (
            ErrorKind::UnknownReference,
            format!("{dr}.ads_config.grpc_services")
        )
    );
    let mut doc = base();
    set(&mut doc, dr, ads);
    set(&mut doc, &format!("{C}.http2_protocol_options"), y("{}"));
    set(
        &mut doc,
        &format!("{dr}.ads_config.api_type"),
        y("DELTA_GRPC"),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(
        (k, p.as_str()),
        (
            ErrorKind::Unsupported,
            "dynamic_resources.ads_config.api_type"
        )
    );
    set(&mut doc, &format!("{dr}.ads_config.api_type"), y("GRPC"));
    set(
        &mut doc,
        &format!("{dr}.lds_config"),
        y("{path: /etc/lds.yaml}"),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(
        (k, p.as_str()),
        (ErrorKind::Unsupported, "dynamic_resources.lds_config.path")
    );
}

#[test]
fn rds_config_discovery_and_eds_need_a_control_plane() {
    let rds = y("{config_source: {ads: {}, resource_api_version: V3}, route_config_name: r}");
    // Both route_config and rds.
    expect_err(
        &format!("{}.rds", hcm()),
        rds.clone(),
        ErrorKind::Invalid,
        &format!("{}.rds", hcm()),
    );
    // rds alone: nothing delivered it.
    let mut doc = base();
    remove(&mut doc, &format!("{}.route_config", hcm()));
    set(&mut doc, &format!("{}.rds", hcm()), rds);
    let (k, p, m) = field_err(&doc);
    assert_eq!(
        (k, p),
        (
            ErrorKind::UnknownReference,
            format!("{}.rds.route_config_name", hcm())
        ),
        "{m}"
    );
    // Only ADS config sources.
    set(
        &mut doc,
        &format!("{}.rds.config_source", hcm()),
        y("{path_config_source: {path: /x}}"),
    );
    let (k, _, _) = field_err(&doc);
    assert_eq!(k, ErrorKind::Unsupported);

    // config_discovery: type_urls are required; a default of another type
    // is an error; a default applied without warming serves.
    let f0 = format!("{}.http_filters[0]", hcm());
    let wasm_default = y(
        "{\"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm, \
         config: {root_id: d, vm_config: {code: {local: {filename: d.wasm}}}}}",
    );
    let mut doc = base();
    remove(&mut doc, &format!("{f0}.typed_config"));
    set(
        &mut doc,
        &format!("{f0}.config_discovery"),
        y("{config_source: {ads: {}}}"),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(
        (k, p),
        (
            ErrorKind::Missing,
            format!("{f0}.config_discovery.type_urls")
        )
    );
    set(
        &mut doc,
        &format!("{f0}.config_discovery.type_urls"),
        y("[type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm]"),
    );
    let (k, p, _) = field_err(&doc);
    assert_eq!(
        (k, p),
        (
            ErrorKind::UnknownReference,
            format!("{f0}.config_discovery")
        )
    );
    set(
        &mut doc,
        &format!("{f0}.config_discovery.default_config"),
        wasm_default,
    );
    // A default without apply_default_config_without_warming waits.
    assert_eq!(field_err(&doc).0, ErrorKind::UnknownReference);
    set(
        &mut doc,
        &format!("{f0}.config_discovery.apply_default_config_without_warming"),
        y("true"),
    );
    let boot = ok(&doc);
    assert_eq!(boot.listeners[0].hcm().wasm_filters[0].root_id, "d");
    set(
        &mut doc,
        &format!("{f0}.config_discovery.default_config"),
        y("{\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}"),
    );
    let (k, p, m) = field_err(&doc);
    assert_eq!(
        (k, p),
        (
            ErrorKind::Invalid,
            format!("{f0}.config_discovery.default_config.@type")
        ),
        "{m}"
    );
    // typed_config and config_discovery together.
    let mut doc = base();
    set(
        &mut doc,
        &format!("{f0}.config_discovery"),
        y("{config_source: {ads: {}}}"),
    );
    assert_eq!(field_err(&doc).0, ErrorKind::Invalid);

    // EDS: eds_cluster_config only on an EDS cluster, and nothing delivered.
    let eds = y("{eds_config: {ads: {}}}");
    expect_err(
        &format!("{C}.eds_cluster_config"),
        eds.clone(),
        ErrorKind::Invalid,
        &format!("{C}.eds_cluster_config"),
    );
    let mut doc = base();
    set(&mut doc, &format!("{C}.type"), y("EDS"));
    remove(&mut doc, &format!("{C}.load_assignment"));
    set(&mut doc, &format!("{C}.eds_cluster_config"), eds);
    let (k, p, m) = field_err(&doc);
    assert_eq!(
        (k, p),
        (
            ErrorKind::UnknownReference,
            format!("{C}.eds_cluster_config")
        ),
        "{m}"
    );
}
