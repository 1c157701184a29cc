//! Go-built Higress plugins (ABI marker 0_2_100, Go wasip1 with the wide
//! WASI surface) run unmodified, Higress's Redis calls included. `cargo
//! xtask test` downloads them from PyPI (`gpustack-higress-plugins`) into
//! `target/higress/`; the Redis test starts its own `redis-server` (skipped
//! without one). The scenario files `spec-tests/scenarios/higress_*.yaml`
//! cover the plugins' documented configurations on both backends.

#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};

use vessel_host::{
    AbiVersion, Effect, FilterHeadersStatus, HostEnv, MapType, Plugin, PluginConfig, PropertyMap,
    RedisCallOutcome, RedisCallRequest, Token, Vm,
};
use vessel_spec_tests::{engine, request, value};

fn plugin_path(name: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/higress/gpustack_higress_plugins/plugins")
        .join(name);
    let version = std::fs::read_dir(&dir).ok()?.flatten().next()?.path();
    let wasm = version.join("plugin.wasm");
    wasm.exists().then_some(wasm)
}

#[test]
fn higress_transformer_adds_a_request_header() {
    let Some(path) = plugin_path("transformer") else {
        eprintln!("skipped: run `cargo xtask test` to download the Higress plugins");
        return;
    };
    let wasm = std::fs::read(&path).expect("readable");
    let config = PluginConfig {
        configuration:
            br#"{"reqRules":[{"operate":"add","headers":[{"key":"x-add","value":"foo"}]}]}"#
                .to_vec(),
        ..PluginConfig::named("transformer")
    };
    let plugin = Plugin::load(&engine().expect("engine"), &wasm, config).expect("loads");
    assert_eq!(plugin.abi_version(), AbiVersion::V0_2_100);
    let mut vm = Vm::new(&plugin, &HostEnv::default()).expect("starts");
    let ctx = vm.create_http_context().expect("context");
    let status = vm
        .on_request_headers(ctx, request("/", &[]), true)
        .expect("request headers");
    assert_eq!(status, FilterHeadersStatus::Continue);
    let headers = vm.headers(ctx, MapType::HttpRequestHeaders).expect("held");
    assert_eq!(value(headers, "x-add").as_deref(), Some("foo"));
    vm.finish_http_stream(ctx).expect("ends");
    assert_eq!(vm.context_count(), 1);
}

#[test]
fn higress_transformer_without_rules_is_refused_with_a_clear_error() {
    let Some(path) = plugin_path("transformer") else {
        eprintln!("skipped: run `cargo xtask test` to download the Higress plugins");
        return;
    };
    let wasm = std::fs::read(&path).expect("readable");
    let plugin = Plugin::load(
        &engine().expect("engine"),
        &wasm,
        PluginConfig::named("transformer"),
    )
    .expect("loads");
    let err = Vm::new(&plugin, &HostEnv::default()).expect_err("an empty config is refused");
    assert!(
        err.to_string()
            .contains("proxy_on_configure returned false"),
        "{err}"
    );
}

fn load(name: &str, config: &str, env: &HostEnv) -> Option<Vm> {
    let Some(path) = plugin_path(name) else {
        eprintln!("skipped: run `cargo xtask test` to download the Higress plugins");
        return None;
    };
    let wasm = std::fs::read(&path).expect("readable");
    let config = PluginConfig {
        configuration: config.as_bytes().to_vec(),
        ..PluginConfig::named(name)
    };
    let plugin = Plugin::load(&engine().expect("engine"), &wasm, config).expect("loads");
    assert_eq!(plugin.abi_version(), AbiVersion::V0_2_100);
    Some(Vm::new(&plugin, env).expect("starts"))
}

#[test]
fn higress_set_header_pre_route_copies_the_route_and_cluster_properties() {
    let Some(mut vm) = load(
        "gpustack-set-header-pre-route",
        r#"{"routeNameHeader":"x-route","clusterNameHeader":"x-model"}"#,
        &HostEnv::default(),
    ) else {
        return;
    };
    let mut props = PropertyMap::new();
    props.insert_dotted("route_name", "ai-route-route-1.internal");
    // Higress's cluster naming: the plugin keeps the part after the third `|`.
    props.insert_dotted("cluster_name", "outbound|80||qwen3.static");
    let ctx = vm.create_http_context_with(props).expect("context");
    let status = vm
        .on_request_headers(ctx, request("/v1/chat/completions", &[]), true)
        .expect("request headers");
    assert_eq!(status, FilterHeadersStatus::Continue);
    let headers = vm.headers(ctx, MapType::HttpRequestHeaders).expect("held");
    assert_eq!(
        value(headers, "x-route").as_deref(),
        Some("ai-route-route-1.internal")
    );
    assert_eq!(value(headers, "x-model").as_deref(), Some("qwen3.static"));
    vm.finish_http_stream(ctx).expect("ends");
}

/// A `redis-server` of this test's own on a free loopback port, killed on drop.
struct Redis {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_server() -> Option<Redis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    let child = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let redis = Redis {
        child,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(redis.addr).is_err() {
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Some(redis)
}

const RATE_LIMIT: &str = r#"{
  "rule_name": "go-plugins-test",
  "redis": {"service_name": "redis.static", "service_port": 6379, "database": 3, "timeout": 2000},
  "limit_combinations": [{"name": "c", "match": [{"source": "consumer", "value": "*"}],
                          "query_limits": {"per_minute": 1}}]
}"#;
const REDIS_CLUSTER: &str = "outbound|6379||redis.static";

/// Sends one rate-limited request; returns the Redis call it started.
fn limited_request(vm: &mut Vm) -> (vessel_host::ContextId, Token, RedisCallRequest) {
    let ctx = vm.create_http_context().expect("context");
    let status = vm
        .on_request_headers(
            ctx,
            request("/v1/chat/completions", &[("x-mse-consumer", "alice")]),
            true,
        )
        .expect("request headers");
    assert_ne!(status, FilterHeadersStatus::Continue, "waits for Redis");
    let mut calls: Vec<(Token, RedisCallRequest)> = vm
        .drain_effects()
        .filter_map(|e| match e {
            Effect::RedisCall { token, call, .. } => Some((token, call)),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "one Redis call per request");
    let (token, call) = calls.remove(0);
    (ctx, token, call)
}

#[test]
fn higress_rate_limit_counts_in_a_real_redis_and_answers_429_over_quota() {
    let env = HostEnv::builder()
        .known_clusters(|c| c == REDIS_CLUSTER)
        .build();
    let Some(mut vm) = load("gpustack-rate-limit", RATE_LIMIT, &env) else {
        return;
    };
    let Some(redis) = redis_server() else {
        eprintln!("skipped: no redis-server (Debian: apt-get install redis-server)");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let idle = vessel_hyper::redis::IdleConnections::default();

    let (ctx, token, call) = limited_request(&mut vm);
    // Envoy-Higress numbering: Redis tokens are 3 mod 4.
    assert_eq!(token.get() % 4, 3);
    assert_eq!(call.cluster, REDIS_CLUSTER, "the `?db=...` suffix is cut");
    // The options of the plugin's proxy_redis_init: `database` and `timeout`.
    assert_eq!(call.options.database, 3);
    assert_eq!(call.options.timeout, std::time::Duration::from_millis(2000));
    // The guest encoded the command itself: a RESP array starting with EVAL.
    assert!(call.query.starts_with(b"*"), "RESP array");
    assert!(
        call.query
            .windows(6)
            .any(|w| w.eq_ignore_ascii_case(b"\r\neval")),
        "an EVAL"
    );
    let outcome = rt.block_on(vessel_hyper::redis::call(redis.addr, &call, &idle));
    assert!(
        matches!(&outcome, RedisCallOutcome::Reply(r) if r.starts_with(b"*2\r\n$7\r\nSUCCESS"))
    );
    vm.on_redis_call_response(token, outcome)
        .expect("delivered");
    let effects: Vec<Effect> = vm.drain_effects().collect();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::ContinueStream { context, .. } if *context == ctx)),
        "{effects:?}"
    );
    vm.finish_http_stream(ctx).expect("ends");

    // The second request of the minute is over the quota of 1.
    let (ctx, token, call) = limited_request(&mut vm);
    let outcome = rt.block_on(vessel_hyper::redis::call(redis.addr, &call, &idle));
    vm.on_redis_call_response(token, outcome)
        .expect("delivered");
    let reply = vm
        .drain_effects()
        .find_map(|e| match e {
            Effect::LocalResponse { context, response } if context == ctx => Some(response),
            _ => None,
        })
        .expect("a local reply");
    assert_eq!(reply.status, 429);
    assert!(String::from_utf8_lossy(&reply.body).contains("rate_limit_exceeded"));
    vm.finish_http_stream(ctx).expect("ends");
    assert_eq!(vm.callouts_in_flight(), 0);
}

#[test]
fn higress_rate_limit_fails_open_when_redis_is_unreachable() {
    let env = HostEnv::builder()
        .known_clusters(|c| c == REDIS_CLUSTER)
        .build();
    let Some(mut vm) = load("gpustack-rate-limit", RATE_LIMIT, &env) else {
        return;
    };
    let (ctx, token, _) = limited_request(&mut vm);
    // What the embedder reports when the server is down or times out.
    vm.on_redis_call_response(token, RedisCallOutcome::Failed)
        .expect("delivered");
    let effects: Vec<Effect> = vm.drain_effects().collect();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::ContinueStream { context, .. } if *context == ctx)),
        "fail-open resumes the request: {effects:?}"
    );
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::LocalResponse { .. })),
        "{effects:?}"
    );
    // A token is answered once.
    assert!(
        vm.on_redis_call_response(token, RedisCallOutcome::Failed)
            .is_err()
    );
    vm.finish_http_stream(ctx).expect("ends");
}
