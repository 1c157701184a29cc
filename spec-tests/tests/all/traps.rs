//! Traps (ABI reference §6.6): a trap in any callback fails the VM with
//! `VmError::Trap` naming the plugin and the callback, and every later
//! call returns the same error without running the guest.

use std::sync::Arc;

use wasmtime::Trap;

use vessel_host::{
    Effect, HostEnv, HttpCallOutcome, HttpCallResponse, PluginConfig, QueueToken, Token, TrapKind,
    Vm, VmError,
};
use vessel_spec_tests::{
    Harness, LogCapture, Source, assert_failed, config, engine, env_with_logs, headers, plugin,
    request, same_failure,
};

fn cfg(selector: &str) -> PluginConfig {
    PluginConfig {
        vm_configuration: selector.as_bytes().to_vec(),
        ..config("trapper")
    }
}

/// Checks `err` is a wasm trap in `callback` of plugin `trapper`.
fn assert_trap(err: &VmError, callback: &str) {
    let trap = err.trap().unwrap_or_else(|| panic!("not a trap: {err:?}"));
    assert_eq!(trap.plugin, "trapper");
    assert_eq!(trap.callback, callback);
    assert!(
        matches!(trap.kind, TrapKind::Wasm(Trap::UnreachableCodeReached)),
        "{trap:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains("trapper") && shown.contains(callback),
        "{shown}"
    );
}

/// Every later entry point returns exactly `err`, and the guest does not run.
fn assert_stays_failed(vm: &mut Vm, err: &VmError, logs: &LogCapture) {
    assert!(vm.is_failed());
    assert!(vm.failure().is_some_and(|f| same_failure(f, err)));
    let before = logs.lines().len();
    let again = vm.create_http_context().expect_err("failed VM");
    if let (VmError::Trap(a), VmError::Trap(b)) = (&again, err) {
        assert!(Arc::ptr_eq(a, b), "the same error, not a new one");
    }
    assert!(same_failure(&again, err), "{again:?}");
    assert_failed(vm.on_tick(), err);
    assert_failed(vm.on_foreign_function(1, b"x"), err);
    let root = vm.root_context();
    assert_failed(vm.on_queue_ready(root, QueueToken::new(1)), err);
    assert_failed(vm.shutdown(), err);
    assert_eq!(logs.lines().len(), before, "the guest did not run");
}

const STREAM_SELECTORS: [(&str, &str); 11] = [
    ("on_context_create", "proxy_on_context_create"),
    ("on_request_headers", "proxy_on_request_headers"),
    ("on_request_body", "proxy_on_request_body"),
    ("on_request_trailers", "proxy_on_request_trailers"),
    ("on_response_headers", "proxy_on_response_headers"),
    ("on_response_body", "proxy_on_response_body"),
    ("on_response_trailers", "proxy_on_response_trailers"),
    ("on_log", "proxy_on_log"),
    ("on_done", "proxy_on_done"),
    ("on_delete", "proxy_on_delete"),
    ("on_http_call_response", "proxy_on_http_call_response"),
];

/// Runs one full stream; returns the first error.
fn run_stream(vm: &mut Vm) -> Result<(), VmError> {
    let ctx = vm.create_http_context()?;
    vm.on_request_headers(ctx, request("/", &[]), false)?;
    let calls: Vec<Token> = vm
        .drain_effects()
        .filter_map(|e| match e {
            Effect::HttpCall { token, .. } => Some(token),
            _ => None,
        })
        .collect();
    for token in calls {
        let ok = HttpCallResponse {
            headers: headers(&[(":status", "200")]),
            ..HttpCallResponse::default()
        };
        vm.on_http_call_response(token, HttpCallOutcome::Response(ok))?;
    }
    vm.on_request_body(ctx, b"req", false)?;
    vm.on_request_trailers(ctx, headers(&[("t", "1")]))?;
    vm.on_response_headers(ctx, headers(&[(":status", "200")]), false)?;
    vm.on_response_body(ctx, b"resp", false)?;
    vm.on_response_trailers(ctx, headers(&[("t", "2")]))?;
    vm.finish_http_stream(ctx)
}

#[test]
fn trap_in_each_stream_callback() {
    for (selector, callback) in STREAM_SELECTORS {
        let mut h = Harness::load(Source::Wat("trap_in_callback"), cfg(selector))
            .unwrap_or_else(|e| panic!("{selector}: {e}"));
        let code = STREAM_SELECTORS
            .iter()
            .position(|(s, _)| *s == selector)
            .expect("listed");
        assert!(
            !h.logs.contains("trap_in_callback: selector=0"),
            "{selector} was recognised"
        );
        let _ = code;
        let err = run_stream(&mut h.vm).expect_err(selector);
        assert_trap(&err, callback);
        assert!(
            h.logs
                .contains(&format!("trap_in_callback: trapping in {selector}")),
            "{selector}: {:#?}",
            h.logs.lines()
        );
        assert_stays_failed(&mut h.vm, &err, &h.logs);
    }
}

#[test]
fn trap_in_root_callbacks() {
    // on_tick
    let mut h = Harness::load(Source::Wat("trap_in_callback"), cfg("on_tick")).expect("starts");
    assert!(h.vm.tick_period_ms() > 0);
    let err = h.vm.on_tick().expect_err("traps");
    assert_trap(&err, "proxy_on_tick");
    assert_stays_failed(&mut h.vm, &err, &h.logs);

    // on_queue_ready: a request enqueues, the embedder delivers.
    let mut h =
        Harness::load(Source::Wat("trap_in_callback"), cfg("on_queue_ready")).expect("starts");
    h.request_headers(request("/", &[]), true).expect("request");
    let ready: Vec<(vessel_host::ContextId, QueueToken)> = h
        .effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::QueueReady { root, token, .. } => Some((root, token)),
            _ => None,
        })
        .collect();
    let [(root, token)] = ready[..] else {
        panic!("one notification expected: {ready:?}");
    };
    let err = h.vm.on_queue_ready(root, token).expect_err("traps");
    assert_trap(&err, "proxy_on_queue_ready");
    assert_stays_failed(&mut h.vm, &err, &h.logs);

    // on_done / on_delete of the root context, at shutdown.
    for (selector, callback) in [
        ("on_done_root", "proxy_on_done"),
        ("on_delete_root", "proxy_on_delete"),
    ] {
        let mut h = Harness::load(Source::Wat("trap_in_callback"), cfg(selector)).expect("starts");
        run_stream(&mut h.vm).expect("streams are fine");
        let err = h.vm.shutdown().expect_err("traps");
        assert_trap(&err, callback);
        assert_failed(h.vm.create_http_context(), &err);
    }
}

#[test]
fn trap_during_start_up_fails_vm_new() {
    for (selector, callback) in [
        ("on_context_create_root", "proxy_on_context_create"),
        ("on_vm_start", "proxy_on_vm_start"),
        ("on_configure", "proxy_on_configure"),
    ] {
        let (env, logs) = env_with_logs(HostEnv::builder());
        let p = plugin(Source::Wat("trap_in_callback"), cfg(selector)).expect("loads");
        let err = Vm::new(&p, &env).map(|_| ()).expect_err(selector);
        assert_trap(&err, callback);
        assert!(logs.contains(&format!("trap_in_callback: trapping in {selector}")));
    }
}

#[test]
fn rust_sdk_panics_are_traps() {
    let mut h = Harness::load(Source::Guest("trap"), config("trapper")).expect("starts");
    let err = h
        .request_headers(request("/", &[("x-trap-in", "request_headers")]), true)
        .map(|_| ())
        .expect_err("panics");
    assert_trap(&err, "proxy_on_request_headers");
    // The SDK's panic hook logs the message before aborting.
    assert!(
        h.logs
            .lines()
            .iter()
            .any(|l| l.contains("trap: panicking in request_headers")),
        "{:#?}",
        h.logs.lines()
    );
    assert_stays_failed(&mut h.vm, &err, &h.logs);

    let mut h = Harness::load(Source::Guest("trap"), config("trapper")).expect("starts");
    let (ctx, _) = h
        .request_headers(request("/", &[]), false)
        .expect("request");
    h.vm.on_request_headers(
        ctx,
        request(
            "/",
            &[
                ("x-trap-in", "request_headers"),
                ("x-trap-kind", "unreachable"),
            ],
        ),
        true,
    )
    .expect_err("traps");
    assert!(!h.logs.lines().iter().any(|l| l.contains("panicked")));

    for (selector, callback, vm_config) in [
        ("configure", "proxy_on_configure", false),
        ("vm_start", "proxy_on_vm_start", true),
    ] {
        let mut c = config("trapper");
        if vm_config {
            c.vm_configuration = selector.as_bytes().to_vec();
        } else {
            c.configuration = selector.as_bytes().to_vec();
        }
        let (env, _) = env_with_logs(HostEnv::builder());
        let p = plugin(Source::Guest("trap"), c).expect("loads");
        let err = Vm::new(&p, &env).map(|_| ()).expect_err(selector);
        assert_trap(&err, callback);
    }
}

#[test]
fn a_failed_vm_refuses_callbacks_the_module_does_not_export() {
    // Only proxy_on_request_headers is exported, and it traps. The host
    // must not answer later calls as if the VM were healthy (Continue for
    // a body, Ok for a tick) just because there is no export to call.
    let text = r#"(module
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable))"#;
    let p = vessel_host::Plugin::load(
        &engine().expect("engine"),
        text.as_bytes(),
        config("trapper"),
    )
    .expect("loads");
    let (env, logs) = env_with_logs(HostEnv::builder());
    let mut vm = Vm::new(&p, &env).expect("starts");
    let ctx = vm.create_http_context().expect("context");
    let err = vm
        .on_request_headers(ctx, request("/", &[]), false)
        .expect_err("traps");
    assert_trap(&err, "proxy_on_request_headers");
    assert_failed(vm.on_request_body(ctx, b"x", true), &err);
    assert_failed(vm.on_request_trailers(ctx, headers(&[])), &err);
    assert_failed(
        vm.on_response_headers(ctx, headers(&[(":status", "200")]), true),
        &err,
    );
    assert_failed(vm.on_response_body(ctx, b"x", true), &err);
    assert_failed(vm.on_response_trailers(ctx, headers(&[])), &err);
    assert_failed(vm.on_log(ctx), &err);
    assert_failed(vm.on_done(ctx), &err);
    assert_failed(vm.finish_http_stream(ctx), &err);
    assert_eq!(vm.context_count(), 1, "the stream is forgotten anyway");
    assert_stays_failed(&mut vm, &err, &logs);
}
