//! What a routing policy costs per request, in-process.
//!
//! `policy`: `guest_llm_policy` (Rust SDK: least queue, then prompt-prefix
//! affinity) over a cluster of 2, 16 and 128 endpoints served through a
//! [`PropertyProvider`] in the text form of
//! `vessel.cluster.<name>.endpoints` (docs/envoy-config.md). One iteration
//! is one request: context create, request headers (held), the JSON body
//! (the decision: property read, parse, choose, header set), then
//! `on_log`/`on_done`/`on_delete`. `policy/noop` runs the same calls
//! through `guest_noop`: the decision's cost is the difference.
//!
//! `band`: GPUStack's load-balancing band, the unmodified Go plugins of the
//! `gpustack-higress-plugins` wheel (target/higress), chained on one
//! [`HttpStream`] in the order and with the configurations of
//! spec-tests/scenarios/higress_gpustack_lb_band.yaml: `gpustack-lb` 0.1.2
//! in `mode: context`, `gpustack-lb-session-affinity` 0.1.0,
//! `gpustack-lb-least-load` 0.1.0, `gpustack-lb` in `mode: finisher`,
//! sharing filter state, with the shared-data backend (no Redis), over 2,
//! 16 and 128 candidates. One iteration is one request through the chain of
//! 4, as vessel run pumps it: the 4 contexts, request headers, the JSON
//! body (the finisher picks, writes `x-higress-target-cluster` and rewrites
//! the model), the upstream's 200 (headers and body), then `on_log`,
//! `on_done` (the in-flight book-keeping) and `on_delete` of each filter.
//! `band/noop4` runs the same through 4 `guest_noop`s: the band's decision
//! cost is the difference. Once per size, untimed, the setup checks that
//! the band chose (the finisher's header and the rewritten body, every
//! filter's debug line, and that 20 requests of one session stay on one
//! worker, so `on_done` frees the in-flight slot); it panics otherwise.
//! Without the wheel the band group prints that it was skipped (it fails
//! under `CI=true`). `gpustack-lb-decision-service` is left out: it asks an
//! external decision service over an HTTP callout for every request, whose
//! answer time would be the number.
//!
//! Run with `cargo bench -p vessel-host --bench policy` (or
//! `cargo xtask bench`, which downloads the wheel first).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use criterion::{Criterion, criterion_group, criterion_main};
use vessel_host::{
    Action, Direction, Effect, Engine, EngineConfig, FailurePolicy, FilterVms, HeaderMap, HostEnv,
    HttpStream, LogLevel, LogRecord, LogSink, MapType, Plugin, PluginConfig, PropertyProvider,
    PropertyScope, PropertyValue, Status, StreamConfig, Vm,
};

fn guest(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec-tests/guests/target/wasm32-wasip1/release")
        .join(format!("guest_{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests with `cargo xtask guests`",
            path.display()
        )
    })
}

/// `n` healthy endpoints with varied queues, as vessel run serves them.
struct Endpoints(Vec<u8>);

impl Endpoints {
    fn new(n: u16) -> Self {
        let mut text = String::new();
        for i in 0..n {
            let waiting = (u32::from(i) * 7919) % 5;
            text.push_str(&format!(
                "10.0.{}.{}:8000 1 {} 2 {waiting} 0.{:04} 120\n",
                i / 250,
                i % 250,
                i % 3,
                (u32::from(i) * 37) % 10_000
            ));
        }
        Self(text.into_bytes())
    }
}

impl PropertyProvider for Endpoints {
    fn get_property(
        &self,
        path: &[&[u8]],
        _scope: PropertyScope<'_>,
    ) -> Result<Option<Vec<u8>>, Status> {
        Ok(match path {
            [b"vessel", b"cluster", b"workers", b"endpoints"] => Some(self.0.clone()),
            _ => None,
        })
    }
}

fn request() -> HeaderMap {
    HeaderMap::from_pairs([
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "gateway"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("content-length", "120"),
    ])
}

const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello"}]}"#;

fn policy(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let mut group = c.benchmark_group("policy");
    let req = request();
    for (name, n) in [
        ("noop", 16),
        ("rust/2", 2),
        ("rust/16", 16),
        ("rust/128", 128),
    ] {
        let env = HostEnv::builder()
            .property_provider(Endpoints::new(n))
            .build();
        let module = if name == "noop" { "noop" } else { "llm_policy" };
        let mut config = PluginConfig::named(module);
        config.configuration = br#"{"cluster":"workers"}"#.to_vec();
        config.allow_on_headers_stop_iteration = true;
        let plugin = Plugin::load(&engine, &guest(module), config).expect("loads");
        let mut vm = Vm::new(&plugin, &env).expect("starts");
        if module == "llm_policy" {
            // The policy decides: the header names one of the endpoints.
            let ctx = vm.create_http_context().unwrap();
            vm.on_request_headers_from(ctx, &req, false).unwrap();
            vm.on_request_body(ctx, BODY, true).unwrap();
            let picked = vm
                .headers(ctx, MapType::HttpRequestHeaders)
                .and_then(|h| h.get(b"x-gateway-destination-endpoint").map(<[u8]>::to_vec))
                .expect("the policy picked an endpoint");
            assert!(picked.starts_with(b"10.0."), "{picked:?}");
            vm.finish_http_stream(ctx).unwrap();
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                let ctx = vm.create_http_context().unwrap();
                vm.on_request_headers_from(ctx, &req, false).unwrap();
                vm.on_request_body(ctx, BODY, true).unwrap();
                vm.finish_http_stream(ctx).unwrap();
            });
        });
    }
    group.finish();
}

// ---- GPUStack's load-balancing band --------------------------------------

/// The wheel's plugin directory (`cargo xtask test` or `cargo xtask bench`
/// downloads it into target/higress).
fn wheel() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/higress/gpustack_higress_plugins/plugins");
    if dir.join("gpustack-lb/0.1.2/plugin.wasm").exists() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true needs the gpustack-higress-plugins wheel in target/higress: \
         run cargo xtask test (or cargo xtask bench) to download it"
    );
    eprintln!(
        "band: skipped: the gpustack-higress-plugins wheel is not in target/higress; \
         run cargo xtask test (or cargo xtask bench) to download the wheel"
    );
    None
}

/// The filters of one chain, each in its own VM, as an embedder holds
/// them. What the VMs leave besides the stream's own signals (callouts,
/// tick periods, from start-up on) is kept for the setup's check.
struct Chain {
    vms: Vec<Vm>,
    left: Vec<(usize, Effect)>,
}

impl Chain {
    fn new(plugins: &[Plugin], env: &HostEnv) -> Self {
        let mut chain = Self {
            vms: plugins
                .iter()
                .map(|p| Vm::new(p, env).expect("starts"))
                .collect(),
            left: Vec::new(),
        };
        for i in 0..chain.vms.len() {
            chain.with_vm(i, |_| ());
        }
        chain
    }
}

impl FilterVms for Chain {
    fn with_vm<R>(&mut self, i: usize, f: impl FnOnce(&mut Vm) -> R) -> R {
        let vm = &mut self.vms[i];
        let r = f(vm);
        self.left.extend(vm.drain_effects().map(|e| (i, e)));
        r
    }

    fn policy(&self, _: usize) -> FailurePolicy {
        FailurePolicy::FailClosed
    }
}

/// The configurations of higress_gpustack_lb_band.yaml (shared-data
/// backend), with `n` candidates `outbound|80||worker-<i>.static`.
fn band_configs(n: usize) -> [String; 4] {
    let candidates: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"cluster":"outbound|80||worker-{i}.static","targetId":"w{i}","kind":"instance","maxRunningRequests":8}}"#
            )
        })
        .collect();
    let mappers: Vec<String> = (0..n)
        .map(|i| format!(r#""w{i}":{{"gpt-4o":"qwen3-32b","gpt-*":"qwen3-8b"}}"#))
        .collect();
    [
        format!(
            r#"{{"mode":"context","health":{{"failOpen":true}},"candidates":[{}],"modelMappers":{{{}}}}}"#,
            candidates.join(","),
            mappers.join(",")
        ),
        r#"{"sessionKeys":[{"header":"session_id"},{"header":"x-client-request-id"}],"weight":1}"#
            .into(),
        r#"{"enabled":true,"weight":1}"#.into(),
        r#"{"mode":"finisher","health":{"unhealthyThreshold":3,"cooldownMs":10000},"maxInflightAgeMs":600000,"reject":{"status":503,"message":"no healthy model instance available"}}"#
            .into(),
    ]
}

/// The band's plugins in the scenario's order (context, session affinity,
/// least load, finisher) for `n` candidates at `level`.
fn band_plugins(modules: &[Plugin; 3], n: usize, level: LogLevel) -> Vec<Plugin> {
    let [lb, affinity, least] = modules;
    let names = [
        "gpustack-lb-context",
        "gpustack-lb-session-affinity",
        "gpustack-lb-least-load",
        "gpustack-lb-finisher",
    ];
    let compiled = [lb, affinity, least, lb];
    band_configs(n)
        .into_iter()
        .zip(names.iter().zip(compiled))
        .map(|(configuration, (name, module))| {
            let mut config = PluginConfig::named(*name);
            config.configuration = configuration.into_bytes();
            config.log_level = level;
            module.with_config(config)
        })
        .collect()
}

const LLM_BODY: &[u8] = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const LLM_ANSWER: &[u8] = br#"{"id":"c-1","object":"chat.completion","model":"qwen3-32b","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;

fn llm_request() -> HeaderMap {
    HeaderMap::from_pairs([
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "gw"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("content-length", "62"),
        ("x-higress-llm-model", "gpt-4o"),
        ("session_id", "s-1"),
    ])
}

fn llm_response() -> HeaderMap {
    HeaderMap::from_pairs([
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-length", "223"),
    ])
}

/// One request through the chain, as vessel run pumps it: request headers
/// and body, the upstream's answer (its stream info, headers and body),
/// then `on_log`/`on_done`/`on_delete` for every filter. The stream's
/// actions go to `actions`.
fn one_request(
    chain: &mut Chain,
    req: &HeaderMap,
    resp: &HeaderMap,
    actions: &mut Vec<Action>,
) -> HttpStream {
    let mut http = HttpStream::new(StreamConfig::new(chain.vms.len()));
    http.request_headers(chain, req.clone(), false);
    http.request_data(chain, LLM_BODY.to_vec(), true);
    actions.extend(std::iter::from_fn(|| http.poll_action()));
    http.set_property(chain, "response.code_details", "via_upstream");
    http.set_property(chain, "response.flags", PropertyValue::Uint(0));
    http.response_headers(chain, resp.clone(), false);
    http.response_data(chain, LLM_ANSWER.to_vec(), true);
    http.finish(chain);
    actions.extend(std::iter::from_fn(|| http.poll_action()));
    http
}

/// The guest log lines, for the setup's check.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl LogSink for Lines {
    fn log(&self, record: &LogRecord<'_>) {
        let line = String::from_utf8_lossy(record.message).into_owned();
        self.0.lock().unwrap().push(line);
    }
}

/// Where the band sent `requests` requests (one after another, one
/// session), and the model and body it sent upstream. Panics unless each
/// request went upstream whole and came back as the upstream's 200.
fn band_picks(chain: &mut Chain, requests: usize) -> Vec<(String, String, Vec<u8>)> {
    let (req, resp) = (llm_request(), llm_response());
    (0..requests)
        .map(|k| {
            let mut actions = Vec::new();
            let http = one_request(chain, &req, &resp, &mut actions);
            assert!(
                !http.is_local_reply() && http.is_complete(Direction::Response),
                "band: request {k} was answered by the band, not the upstream: {actions:?}"
            );
            let mut picked = None;
            let mut body = Vec::new();
            for action in actions {
                match action {
                    Action::UpstreamHeaders { headers, .. } => {
                        let get = |h: &str| headers.get_str(h).map(str::to_owned);
                        picked = Some((
                            get("x-higress-target-cluster").unwrap_or_else(|| {
                                panic!(
                                    "band: request {k}: the finisher wrote no \
                                     x-higress-target-cluster, the band did not choose: {headers:?}"
                                )
                            }),
                            get("x-higress-llm-model-final").unwrap_or_default(),
                        ));
                    }
                    Action::UpstreamData { data, .. } => body.extend(data),
                    _ => {}
                }
            }
            let (cluster, model) =
                picked.unwrap_or_else(|| panic!("band: request {k} never went upstream"));
            (cluster, model, body)
        })
        .collect()
}

/// Panics unless every pick of `picks` is the same worker, with the model
/// rewritten in the header and the body, and the VMs asked for nothing
/// beyond the stream (no callout, tick or queue: this bench carries out
/// none).
fn check_picks(what: &str, picks: &[(String, String, Vec<u8>)], chain: &Chain) -> String {
    let (cluster, _, _) = &picks[0];
    for (k, (c, model, body)) in picks.iter().enumerate() {
        assert!(
            c == cluster && c.starts_with("outbound|80||worker-"),
            "{what}: request {k} went to {c}, request 0 to {cluster}: one idle session \
             must stay on its owner (is on_done giving the in-flight slot back?)"
        );
        assert_eq!(model, "qwen3-32b", "{what}: request {k}: the model mapping");
        let body = String::from_utf8_lossy(body);
        assert!(
            body.contains(r#""model":"qwen3-32b""#),
            "{what}: request {k}: the body went upstream without the rewritten model: {body}"
        );
    }
    assert!(
        chain.left.is_empty(),
        "{what}: the band asked for what this bench does not carry out: {:?}",
        chain.left
    );
    cluster.clone()
}

/// Checks, once and untimed, that the band chooses with `n` candidates:
/// every filter took part (its debug lines), the finisher wrote the target
/// cluster and rewrote the model, and `on_done` gave the in-flight slot
/// back (20 requests of one session, over `maxRunningRequests` 8, all stay
/// on its owner). Then the same on the timed chain (at info level), whose
/// shared data must not grow from request to request.
fn check_band(modules: &[Plugin; 3], n: usize, timed: &mut Chain, timed_env: &HostEnv) {
    let lines = Arc::new(Lines::default());
    let env = HostEnv::builder().log_sink_arc(lines.clone()).build();
    let mut chain = Chain::new(&band_plugins(modules, n, LogLevel::Debug), &env);
    let picks = band_picks(&mut chain, 20);
    let logs = lines.0.lock().unwrap().join("\n");
    for expected in [
        format!("gpustack-lb: published {n}/{n} candidates"),
        format!(r#"gpustack-lb-session-affinity: ranked {n} candidates from header "session_id""#),
        format!("gpustack-lb-least-load: ranked {n} candidates"),
        "by weighted sum over 2 ranks".into(),
        "gpustack-lb: model rewritten, before: gpt-4o, after: qwen3-32b".into(),
    ] {
        assert!(
            logs.contains(&expected),
            "band/{n}: the band did not log `{expected}`; it logged:\n{logs}"
        );
    }
    let debug_pick = check_picks(&format!("band/{n} (debug)"), &picks, &chain);
    let picks = band_picks(timed, 20);
    let timed_pick = check_picks(&format!("band/{n}"), &picks, timed);
    // What the band keeps in shared data stays the same from request to
    // request: the bench measures a steady state, not a growing store.
    let keys = timed_env.shared_data().keys("");
    assert!(
        keys.iter().any(|k| k.starts_with(b"gpustack_lb_inflight_")),
        "band/{n}: no in-flight counter in shared data: is the band on its shared-data backend?"
    );
    let keys = keys.len();
    band_picks(timed, 20);
    assert_eq!(
        timed_env.shared_data().keys("").len(),
        keys,
        "band/{n}: the band's shared data grows with every request"
    );
    assert_eq!(
        debug_pick, timed_pick,
        "band/{n}: the same idle session went elsewhere at another log level"
    );
}

fn band(c: &mut Criterion) {
    let Some(dir) = wheel() else {
        return;
    };
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let compile = |path: &str| {
        let wasm = std::fs::read(dir.join(path)).expect("the wheel's plugin reads");
        Plugin::load(&engine, &wasm, PluginConfig::named(path)).expect("loads")
    };
    let modules = [
        compile("gpustack-lb/0.1.2/plugin.wasm"),
        compile("gpustack-lb-session-affinity/0.1.0/plugin.wasm"),
        compile("gpustack-lb-least-load/0.1.0/plugin.wasm"),
    ];
    let noop = Plugin::load(&engine, &guest("noop"), PluginConfig::named("noop")).expect("loads");
    let (req, resp) = (llm_request(), llm_response());
    let mut group = c.benchmark_group("band");
    for (name, n) in [
        ("noop4", 0),
        ("gpustack/2", 2),
        ("gpustack/16", 16),
        ("gpustack/128", 128),
    ] {
        let env = HostEnv::default();
        let mut chain = if n == 0 {
            Chain::new(
                &[noop.clone(), noop.clone(), noop.clone(), noop.clone()],
                &env,
            )
        } else {
            let mut chain = Chain::new(&band_plugins(&modules, n, LogLevel::Info), &env);
            check_band(&modules, n, &mut chain, &env);
            chain
        };
        let mut actions = Vec::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                actions.clear();
                chain.left.clear();
                one_request(&mut chain, &req, &resp, &mut actions)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, policy, band);
criterion_main!(benches);
