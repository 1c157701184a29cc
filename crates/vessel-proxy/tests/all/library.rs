//! The `vessel test` harness as a library (`vessel_proxy::harness`): the
//! scenario suite under `cargo test`, reports, typed errors, and scenarios
//! built in code. Format: `spec-tests/SCENARIOS.md`.

use std::path::PathBuf;

use crate::common::{TempDir, guest, hello_scenario, scenarios_dir};
use vessel_host::{CacheConfig, Engine, EngineConfig};
use vessel_proxy::harness::scenario::{Expect, ExpectResponse, Message, PluginSpec, Stream};
use vessel_proxy::harness::{self, Error, Loaded, Scenario, check, run_file, run_files};

fn suite() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .expect("spec-tests/scenarios exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_scenario_suite_passes() {
    let files = suite();
    assert!(
        files.len() >= 18,
        "expected the whole suite, found {files:?}"
    );
    // Through the user's module cache, as `vessel test` runs them: the Go
    // plugins take seconds each to compile, and the later CI steps load
    // the same modules.
    let engine = Engine::new(EngineConfig {
        cache: CacheConfig::user_default(),
        ..EngineConfig::default()
    })
    .expect("engine");
    let mut report = harness::Report::default();
    for f in &files {
        let _redis = crate::common::redis_guard(f);
        report
            .results
            .extend(run_file(&engine, f).expect("every scenario file loads"));
    }
    assert!(report.passed(), "{}", report.render());
    let (passed, failed) = report.counts();
    assert_eq!(failed, 0);
    assert_eq!(passed, report.results.len());
    // Every file contributes streams, and several of them.
    for f in &files {
        let n = report.results.iter().filter(|r| &r.file == f).count();
        assert!(n >= 1, "{} ran no stream", f.display());
    }
    // Several streams on average (the Envoy-behaviour files have one or two).
    assert!(passed >= 2 * files.len(), "only {passed} streams");
}

#[test]
fn a_failing_scenario_is_reported_not_raised() {
    let dir = TempDir::new("lib-fail");
    let file = dir.write(
        "fail.yaml",
        // Only the expectation (indented deeper than the upstream's body).
        hello_scenario().replace(
            "        body: \"from upstream\"\n",
            "        body: \"other\"\n",
        ),
    );
    let report = run_files(&[&file]).expect("loads");
    assert!(!report.passed());
    assert_eq!(report.counts(), (1, 1));
    let failed = &report.results[1];
    assert_eq!(failed.index, 2);
    assert_eq!(failed.label, "GET /other");
    assert_eq!(failed.failures.len(), 1, "{:?}", failed.failures);
    assert!(failed.failures[0].starts_with("response.body:"));
    // The observation says what really happened.
    let response = failed.observation.response.as_ref().expect("a response");
    assert_eq!(response.status, Some(200));
    assert_eq!(response.body, "from upstream");
    let text = report.render();
    assert!(text.contains("FAIL"), "{text}");
    assert!(text.ends_with("1 passed, 1 failed\n"), "{text}");
}

#[test]
fn errors_are_typed_and_name_the_file() {
    let dir = TempDir::new("lib-errors");
    let unknown = dir.write(
        "unknown.yaml",
        format!("plugin:\n  wasm: \"{}\"\nstreamz: []\n", guest("noop")),
    );
    match run_files(&[&unknown]) {
        Err(Error::Yaml { path, error }) => {
            assert_eq!(path, unknown);
            assert!(
                error.message().contains("unknown field `streamz`"),
                "{error}"
            );
            // `streamz` is the third line.
            assert_eq!((error.line(), error.column()), (Some(3), Some(1)));
        }
        other => panic!("expected a YAML error, got {other:?}"),
    }

    let level = dir.write(
        "level.yaml",
        format!(
            "plugin:\n  wasm: \"{}\"\n  log_level: chatty\nstreams: []\n",
            guest("noop")
        ),
    );
    match run_files(&[&level]) {
        Err(Error::Invalid { path, key, .. }) => {
            assert_eq!(path, level);
            assert_eq!(key, "plugin.log_level");
        }
        other => panic!("expected an invalid-value error, got {other:?}"),
    }

    let nowasm = dir.write("nowasm.yaml", "plugin:\n  wasm: gone.wasm\nstreams: []\n");
    match run_files(&[&nowasm]) {
        Err(e @ Error::Plugin { .. }) => {
            let Error::Plugin { path, wasm, .. } = &e else {
                unreachable!()
            };
            assert_eq!(path, &nowasm);
            assert!(wasm.ends_with("gone.wasm"), "{}", wasm.display());
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("{}: plugin.wasm", nowasm.display())),
                "{text}"
            );
        }
        other => panic!("expected a plugin error, got {other:?}"),
    }

    let missing = dir.path().join("absent.yaml");
    match run_files(&[&missing]) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn plugin_policy_limit_capability_and_environment_keys_name_their_path() {
    let dir = TempDir::new("lib-keys");
    let file = |name: &str, plugin_extra: &str| {
        dir.write(
            name,
            format!(
                "plugin:\n  wasm: \"{}\"\n{plugin_extra}streams: []\n",
                guest("noop")
            ),
        )
    };
    let yaml_error = |path: &PathBuf| match run_files(&[path]) {
        Err(Error::Yaml { error, .. }) => error.message().to_owned(),
        other => panic!("expected a YAML error, got {other:?}"),
    };
    let invalid_key = |path: &PathBuf| match run_files(&[path]) {
        Err(Error::Invalid { key, .. }) => key,
        other => panic!("expected an invalid-value error, got {other:?}"),
    };

    let policy = file("policy.yaml", "  failure_policy: FAIL_SOMETIMES\n");
    let message = yaml_error(&policy);
    assert!(message.contains("plugin.failure_policy"), "{message}");
    assert!(message.contains("FAIL_RELOAD"), "{message}");

    let limit = file("limit.yaml", "  limits:\n    memory_megabytes: 1\n");
    let message = yaml_error(&limit);
    assert!(message.contains("plugin.limits"), "{message}");
    assert!(
        message.contains("unknown field `memory_megabytes`"),
        "{message}"
    );

    let env = file("env.yaml", "  environment:\n    host_env: [PATH]\n");
    let message = yaml_error(&env);
    assert!(message.contains("plugin.environment"), "{message}");

    let zero = file("zero.yaml", "  limits:\n    callback_timeout_ms: 0\n");
    assert_eq!(invalid_key(&zero), "plugin.limits.callback_timeout_ms");
    let huge = file("huge.yaml", "  limits:\n    memory_bytes: 1099511627776\n");
    assert_eq!(invalid_key(&huge), "plugin.limits.memory_bytes");
    let fuel = file("fuel.yaml", "  limits:\n    fuel_per_callback: 0\n");
    assert_eq!(invalid_key(&fuel), "plugin.limits.fuel_per_callback");
    let twice = file(
        "twice.yaml",
        "  environment:\n    host_env_keys: [A]\n    key_values: { A: x }\n",
    );
    assert_eq!(invalid_key(&twice), "plugin.environment.host_env_keys[0]");
    let empty = file("empty.yaml", "  allowed_capabilities: [proxy_log, \"\"]\n");
    assert_eq!(invalid_key(&empty), "plugin.allowed_capabilities[1]");

    let backoff = file(
        "backoff.yaml",
        "  failure_policy: FAIL_OPEN\n  reload_backoff: { base_ms: 100 }\n",
    );
    assert_eq!(invalid_key(&backoff), "plugin.reload_backoff");
    let base = file(
        "base.yaml",
        "  failure_policy: FAIL_RELOAD\n  reload_backoff: { base_ms: 0 }\n",
    );
    assert_eq!(invalid_key(&base), "plugin.reload_backoff.base_ms");
    let max = file(
        "max.yaml",
        "  failure_policy: FAIL_RELOAD\n  reload_backoff: { base_ms: 100, max_ms: 50 }\n",
    );
    assert_eq!(invalid_key(&max), "plugin.reload_backoff.max_ms");
    let unknown = file(
        "unknown-backoff.yaml",
        "  failure_policy: FAIL_RELOAD\n  reload_backoff: { base: 100 }\n",
    );
    let message = yaml_error(&unknown);
    assert!(message.contains("plugin.reload_backoff"), "{message}");

    // Valid values load, fuel included (it needs an engine of its own).
    let good = file(
        "good.yaml",
        "  failure_policy: FAIL_RELOAD\n  reload_backoff: { base_ms: 10, max_ms: 20 }\n  limits: { memory_bytes: 16777216, callback_timeout_ms: 20, fuel_per_callback: 1000000 }\n  allowed_capabilities: []\n  environment: { key_values: { A: x } }\n",
    );
    assert!(run_files(&[&good]).is_ok());
}

#[test]
fn a_chain_is_plugin_or_plugins_not_both() {
    let dir = TempDir::new("lib-chain");
    let wasm = guest("noop");
    let invalid_key = |name: &str, text: String| match run_files(&[dir.write(name, text)]) {
        Err(Error::Invalid { key, message, .. }) => (key, message),
        other => panic!("expected an invalid-value error, got {other:?}"),
    };
    let (key, message) = invalid_key(
        "both.yaml",
        format!("plugin:\n  wasm: \"{wasm}\"\nplugins:\n  - wasm: \"{wasm}\"\nstreams: []\n"),
    );
    assert_eq!(key, "plugin, plugins");
    assert!(message.contains("not both"), "{message}");
    let (key, _) = invalid_key("neither.yaml", "streams: []\n".into());
    assert_eq!(key, "plugin");
    let (key, _) = invalid_key("empty.yaml", "plugins: []\nstreams: []\n".into());
    assert_eq!(key, "plugins");
    // A key of a chain entry is named by its index.
    let (key, _) = invalid_key(
        "level.yaml",
        format!(
            "plugins:\n  - wasm: \"{wasm}\"\n  - wasm: \"{wasm}\"\n    log_level: loud\nstreams: []\n"
        ),
    );
    assert_eq!(key, "plugins[1].log_level");
}

#[test]
fn run_files_stops_at_the_first_broken_file() {
    let dir = TempDir::new("lib-stop");
    let good = dir.write("good.yaml", hello_scenario());
    let bad = dir.write("bad.yaml", "streams: [\n");
    assert!(run_files(&[&good]).is_ok());
    assert!(matches!(run_files(&[&good, &bad]), Err(Error::Yaml { .. })));
}

#[test]
fn scenarios_can_be_built_in_code() {
    let dir = TempDir::new("lib-code");
    // The wasm path is relative to the scenario's path; an absolute one works too.
    let anchor = dir.path().join("in-code.yaml");
    let request = |path: &str| Message {
        headers: vec![
            (":method".into(), "GET".into()),
            (":path".into(), path.into()),
        ],
        ..Message::default()
    };
    let scenario = Scenario {
        plugin: Some(PluginSpec {
            wasm: guest("hello"),
            ..PluginSpec::default()
        }),
        streams: vec![
            Stream {
                request: request("/hello"),
                expect: Expect {
                    upstream_reached: Some(false),
                    response: Some(ExpectResponse {
                        status: Some(200),
                        body: Some("Hello, World!\n".into()),
                        ..ExpectResponse::default()
                    }),
                    ..Expect::default()
                },
                ..Stream::default()
            },
            Stream {
                request: request("/elsewhere"),
                expect: Expect {
                    // Wrong on purpose: the request does reach the upstream.
                    upstream_reached: Some(false),
                    ..Expect::default()
                },
                ..Stream::default()
            },
        ],
        ..Scenario::default()
    };
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let mut loaded = Loaded::new(&engine, &anchor, scenario.clone()).expect("loads");
    let observations = loaded.run();
    assert_eq!(observations.len(), 2);
    assert!(check(&scenario.streams[0].expect, &observations[0]).is_empty());
    let failures = check(&scenario.streams[1].expect, &observations[1]);
    assert_eq!(
        failures,
        vec!["upstream_reached: expected false, got true".to_owned()]
    );
    let upstream = observations[1].upstream_request.as_ref().expect("reached");
    assert!(
        upstream
            .headers
            .contains(&("x-hello".to_owned(), "seen".to_owned()))
    );
}

#[test]
fn one_engine_serves_several_files() {
    let dir = TempDir::new("lib-engine");
    let a = dir.write("a.yaml", hello_scenario());
    let b = dir.write("b.yaml", hello_scenario());
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    for f in [&a, &b] {
        let results = run_file(&engine, f).expect("runs");
        assert_eq!(results.len(), 2);
        assert!(
            results
                .iter()
                .all(|r| r.failures.is_empty() && &r.file == f)
        );
    }
    let yaml = harness::record_file(&engine, &a).expect("records");
    let recorded = Scenario::from_yaml(&yaml).expect("parses");
    assert_eq!(recorded.streams.len(), 2);
}

/// Observations the format cannot express (a reset, a stall), for the
/// driver's Envoy rules (`spec-tests/SCENARIOS.md`, "The stream driver").
#[test]
fn resets_and_stalls_follow_envoy() {
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let result = |file: &str, index: usize| {
        let results = run_file(&engine, &scenarios_dir().join(file)).expect("runs");
        results
            .into_iter()
            .find(|r| r.index == index)
            .expect("stream exists")
    };

    // Over the buffer limit after the filter continued the response headers:
    // they are downstream, so Envoy resets instead of answering 500.
    let r = result("bodies_trailers.yaml", 1);
    assert!(r.observation.reset, "{:?}", r.observation);
    assert!(r.observation.response.is_none(), "{:?}", r.observation);

    // A trap in on_http_call_response (a root callback) leaves the paused
    // stream paused: no response, a stall, and the VM failure recorded.
    let r = result("trap_callout.yaml", 1);
    assert!(r.observation.response.is_none(), "{:?}", r.observation);
    assert!(r.observation.stalled.is_some(), "{:?}", r.observation);
    assert!(!r.observation.reset);
    let failure = r.observation.vm_failure.as_deref().unwrap_or_default();
    assert!(failure.contains("proxy_on_http_call_response"), "{failure}");

    // A VM that failed to start fails every stream closed, and the first
    // stream carries the start-up logs.
    let r = result("trap_configure.yaml", 1);
    let response = r.observation.response.as_ref().expect("a 503");
    assert_eq!(response.status, Some(503));
    assert!(
        r.observation
            .logs
            .iter()
            .any(|l| l.contains("trap: panicking in configure")),
        "{:?}",
        r.observation.logs
    );
    assert!(r.observation.upstream_request.is_none());
}

#[test]
fn trap_after_response_headers_went_downstream_resets() {
    let dir = TempDir::new("lib-trap-body");
    let file = dir.write(
        "trap.yaml",
        format!(
            r#"plugin:
  wasm: "{}"
streams:
  - request:
      headers: [[":method", "GET"], [":path", "/"], ["x-trap-in", "response_body"]]
    upstream:
      headers: [[":status", "200"]]
      body: "body"
  - request:
      headers: [[":method", "GET"], [":path", "/"]]
"#,
            guest("trap")
        ),
    );
    let results = run_file(
        &Engine::new(EngineConfig::default()).expect("the default engine builds"),
        &file,
    )
    .expect("runs");
    let first = &results[0].observation;
    assert!(first.upstream_request.is_some());
    assert!(first.reset, "{first:?}");
    assert!(first.response.is_none(), "{first:?}");
    let failure = first.vm_failure.as_deref().unwrap_or_default();
    assert!(failure.contains("proxy_on_response_body"), "{failure}");
    // The next stream fails closed before reaching the upstream.
    let second = &results[1].observation;
    assert!(second.upstream_request.is_none());
    assert_eq!(second.response.as_ref().and_then(|r| r.status), Some(503));
}

/// A filter that returns StopIterationAndWatermark (2) from
/// `proxy_on_request_body` until end of stream, then Continue.
const WATERMARK_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 0x8000))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (select (i32.const 0) (i32.const 2) (local.get 2)))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))
"#;

#[test]
fn buffer_limit_applies_to_stop_and_buffer_only() {
    let dir = TempDir::new("lib-watermark");
    dir.write("watermark.wat", WATERMARK_WAT);
    let scenario = |limit: usize| {
        format!(
            r#"plugin:
  wasm: watermark.wat
buffer_limit: {limit}
streams:
  - request:
      headers: [[":method", "POST"], [":path", "/"]]
      chunks: ["0123456789", "0123456789", "0123456789"]
"#
        )
    };
    // Over the limit with StopIterationAndWatermark: flow control, no 413.
    let file = dir.write("small.yaml", scenario(16));
    let results = run_file(
        &Engine::new(EngineConfig::default()).expect("the default engine builds"),
        &file,
    )
    .expect("runs");
    let obs = &results[0].observation;
    let upstream = obs.upstream_request.as_ref().expect("reached the upstream");
    assert_eq!(upstream.body, "0123456789".repeat(3));
    assert_eq!(obs.response.as_ref().and_then(|r| r.status), Some(200));
}

/// A chain of three filters, each with its own VM and policy: a trap in the
/// middle one under FAIL_OPEN answers its own stream 503 through the first
/// filter's response callbacks, and later streams skip it.
#[test]
fn a_chain_runs_in_order_and_each_filter_follows_its_own_policy() {
    let dir = TempDir::new("lib-chain-run");
    let file = dir.write(
        "chain.yaml",
        format!(
            r#"plugins:
  - wasm: "{headers}"
  - wasm: "{trap}"
    failure_policy: FAIL_OPEN
  - wasm: "{hello}"
streams:
  - request:
      headers: [[":method", "GET"], [":path", "/a"], ["x-trap-in", "request_headers"]]
  - request:
      headers: [[":method", "GET"], [":path", "/b"]]
  - request:
      headers: [[":method", "GET"], [":path", "/hello"]]
"#,
            headers = guest("headers"),
            trap = guest("trap"),
            hello = guest("hello"),
        ),
    );
    let results = run_file(
        &Engine::new(EngineConfig::default()).expect("the default engine builds"),
        &file,
    )
    .expect("runs");
    let [trapped, skipped, local] = [0, 1, 2].map(|i| &results[i].observation);

    assert_eq!(trapped.response.as_ref().and_then(|r| r.status), Some(503));
    assert!(trapped.upstream_request.is_none(), "{trapped:?}");
    let failure = trapped.vm_failure.as_deref().unwrap_or_default();
    assert!(failure.contains("proxy_on_request_headers"), "{failure}");
    // The 503 passed the first filter's response callback; the third
    // filter never saw the request.
    let logs = &trapped.logs;
    assert!(logs.iter().any(|l| l.starts_with("status=503")), "{logs:?}");
    assert!(!logs.iter().any(|l| l.contains("hello:")), "{logs:?}");

    // FAIL_OPEN: the failed filter is skipped; the others still run.
    let up = skipped
        .upstream_request
        .as_ref()
        .expect("reached the upstream");
    assert!(
        up.headers.contains(&("x-hello".into(), "seen".into())),
        "{up:?}"
    );
    assert!(
        !skipped.logs.iter().any(|l| l.starts_with("trap:")),
        "{:?}",
        skipped.logs
    );
    assert!(
        skipped.logs.iter().any(|l| l == "path=/b"),
        "{:?}",
        skipped.logs
    );
    assert!(skipped.vm_failure.is_some());

    // The last filter's local reply runs through the first filter's
    // response callback.
    let response = local.response.as_ref().expect("a response");
    assert_eq!(response.body, "Hello, World!\n");
    assert!(local.upstream_request.is_none());
    assert!(
        local.logs.iter().any(|l| l.starts_with("status=200")),
        "{:?}",
        local.logs
    );
    assert!(local.errors.is_empty(), "{:?}", local.errors);
}

/// Calls `proxy_continue_stream(2)` (downstream) from an HTTP context, a
/// no-op in Envoy (the context has no network callbacks).
const CONTINUE_DOWNSTREAM_WAT: &str = r#"(module
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 0x8000))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $continue (i32.const 2)))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))
"#;

#[test]
fn continue_downstream_from_an_http_stream_is_a_no_op_as_in_envoy() {
    let dir = TempDir::new("lib-unsupported");
    dir.write("downstream.wat", CONTINUE_DOWNSTREAM_WAT);
    let file = dir.write(
        "downstream.yaml",
        "plugin:\n  wasm: downstream.wat\nstreams:\n  - request:\n      headers: [[\":method\", \"GET\"], [\":path\", \"/\"]]\n",
    );
    let results = run_file(
        &Engine::new(EngineConfig::default()).expect("the default engine builds"),
        &file,
    )
    .expect("runs");
    let r = &results[0];
    // Envoy continues only the stream kinds a context has callbacks for:
    // DOWNSTREAM on an HTTP filter does nothing, and the stream goes on.
    assert_eq!(
        r.observation.response.as_ref().and_then(|r| r.status),
        Some(200)
    );
    assert!(r.observation.errors.is_empty(), "{:?}", r.observation);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
}
