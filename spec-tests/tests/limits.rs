//! Resource limits (ABI reference §6.6; `docs/operations.md`, "Limits"):
//! the memory cap and the CPU deadline per callback fail only the VM that
//! hit them, with a typed error naming the limit and the callback; fuel,
//! the wasm stack, contexts, log volume, shared data, queues and callouts
//! each have a cap with a clear status or error.

use std::time::Duration;

use vessel_host::InstantiateError;

use vessel_host::shared::data::SharedDataLimits;
use vessel_host::{
    Effect, Engine, EngineConfig, FilterHeadersStatus, HostEnv, HttpCallOutcome, HttpCallResponse,
    LimitExceeded, Limits, LoadError, Plugin, PluginConfig, Status, TrapKind, UnenforceableLimit,
    Vm, VmError,
};
use vessel_spec_tests::probe::{Callback, OUT, Probe, ProbeResults, c};
use vessel_spec_tests::{Harness, Source, config, headers, plugin, read_guest, request};

const TIMEOUT: Duration = Duration::from_millis(30);

/// `guest_limits` with a short callback timeout and `vm_configuration`.
fn limits_config(vm_configuration: &str, limits: Limits) -> PluginConfig {
    PluginConfig {
        vm_configuration: vm_configuration.as_bytes().to_vec(),
        limits,
        ..config("limits")
    }
}

fn short_timeout() -> Limits {
    Limits {
        callback_timeout: Some(TIMEOUT),
        ..Limits::default()
    }
}

fn limits_plugin(vm_configuration: &str, limits: Limits) -> Plugin {
    plugin(
        Source::Guest("limits"),
        limits_config(vm_configuration, limits),
    )
    .expect("guest_limits loads")
}

fn op(op: &str, at: &str) -> vessel_host::HeaderMap {
    request("/", &[("x-limits-op", op), ("x-limits-in", at)])
}

/// Asserts `err` is a trap caused by `limit` in `callback`.
fn assert_limit(err: &VmError, callback: &str, limit: &LimitExceeded) {
    let trap = err.trap().unwrap_or_else(|| panic!("a trap, got {err}"));
    assert_eq!(trap.callback, callback, "{err}");
    match (&trap.kind, limit) {
        (
            TrapKind::Limit(LimitExceeded::Memory { limit_bytes, .. }),
            LimitExceeded::Memory {
                limit_bytes: want, ..
            },
        ) => {
            assert_eq!(limit_bytes, want, "{err}");
        }
        (TrapKind::Limit(got), want) => assert_eq!(got, want, "{err}"),
        (other, _) => panic!("expected {limit:?}, got {other:?}: {err}"),
    }
    assert_eq!(err.limit().map(LimitExceeded::knob), Some(limit.knob()));
    let text = err.to_string();
    assert!(text.contains(callback), "{text}");
    assert!(text.contains(limit.knob()), "{text}");
}

// ---- CPU per callback ------------------------------------------------

#[test]
fn an_infinite_loop_in_any_stream_callback_fails_only_its_vm() {
    let timeout = LimitExceeded::CallbackTimeout { timeout: TIMEOUT };
    let p = limits_plugin("", short_timeout());
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    let mut healthy = h.sibling(&p).expect("a second VM starts");

    // request headers
    let err = h
        .request_headers(op("loop", "request_headers"), true)
        .expect_err("stopped");
    assert_limit(&err, "proxy_on_request_headers", &timeout);
    // The VM stays failed; the other VM carries on.
    vessel_spec_tests::assert_failed(h.vm.create_http_context(), &err);
    let ctx = healthy.create_http_context().expect("healthy");
    assert_eq!(
        healthy
            .on_request_headers(ctx, request("/", &[]), true)
            .expect("runs"),
        FilterHeadersStatus::Continue
    );

    // response headers
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    let (ctx, _) = h
        .request_headers(op("loop", "response_headers"), true)
        .expect("request ok");
    let err =
        h.vm.on_response_headers(ctx, headers(&[(":status", "200")]), true)
            .expect_err("stopped");
    assert_limit(&err, "proxy_on_response_headers", &timeout);

    // HTTP call response (a root-context callback)
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    let (_, status) = h
        .request_headers(op("loop", "http_call_response"), true)
        .expect("ok");
    assert_ne!(
        status,
        FilterHeadersStatus::Continue,
        "paused on the callout"
    );
    let token = h
        .effects()
        .into_iter()
        .find_map(|e| match e {
            Effect::HttpCall { token, .. } => Some(token),
            _ => None,
        })
        .expect("an HTTP call");
    let answer = HttpCallOutcome::Response(HttpCallResponse {
        headers: headers(&[(":status", "200")]),
        ..HttpCallResponse::default()
    });
    let err =
        h.vm.on_http_call_response(token, answer)
            .expect_err("stopped");
    assert_limit(&err, "proxy_on_http_call_response", &timeout);
}

#[test]
fn an_infinite_loop_in_root_callbacks_is_stopped() {
    let timeout = LimitExceeded::CallbackTimeout { timeout: TIMEOUT };
    let env = HostEnv::default();
    for (at, callback) in [
        ("vm_start", "proxy_on_vm_start"),
        ("configure", "proxy_on_configure"),
    ] {
        let p = limits_plugin(&format!("loop@{at}"), short_timeout());
        let err = Vm::new(&p, &env).expect_err("start-up is stopped");
        assert_limit(&err, callback, &timeout);
    }
    let p = limits_plugin("loop@tick", short_timeout());
    let mut vm = Vm::new(&p, &env).expect("starts");
    assert_eq!(vm.tick_period_ms(), 1);
    let err = vm.on_tick().expect_err("the tick is stopped");
    assert_limit(&err, "proxy_on_tick", &timeout);
}

#[test]
fn an_infinite_loop_in_start_up_is_stopped_by_the_startup_timeout() {
    let mut p = Probe::new();
    p.field(r#"(func (export "_initialize") (loop $forever (br $forever)))"#);
    let cfg = PluginConfig {
        limits: Limits {
            startup_timeout: Some(TIMEOUT),
            ..Limits::default()
        },
        ..config("init")
    };
    let plugin = p.load(cfg).expect("loads");
    let err = Vm::new(&plugin, &HostEnv::default()).expect_err("stopped");
    assert_limit(
        &err,
        "_initialize",
        &LimitExceeded::StartupTimeout { timeout: TIMEOUT },
    );
}

#[test]
fn the_wat_infinite_loop_is_stopped_by_the_default_timeout() {
    let p = plugin(Source::Wat("infinite_loop"), config("loop")).expect("loads");
    assert_eq!(
        p.config().limits.callback_timeout,
        Some(Limits::DEFAULT_CALLBACK_TIMEOUT)
    );
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    let err = h
        .request_headers(request("/", &[]), true)
        .expect_err("stopped");
    assert_limit(
        &err,
        "proxy_on_request_headers",
        &LimitExceeded::CallbackTimeout {
            timeout: Limits::DEFAULT_CALLBACK_TIMEOUT,
        },
    );
    assert!(
        h.logs
            .contains("infinite_loop: entering loop in on_request_headers")
    );
}

#[test]
fn a_slow_but_finite_callback_within_the_timeout_passes() {
    // guest_cpu_burn with a small round count finishes well inside 100 ms;
    // the deadline is per callback, so many such callbacks in a row pass.
    let p = plugin(Source::Guest("cpu_burn"), config("burn")).expect("loads");
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    for _ in 0..20 {
        let (ctx, status) = h
            .request_headers(request("/", &[("x-rounds", "1000")]), true)
            .expect("runs");
        assert_eq!(status, FilterHeadersStatus::Continue);
        h.vm.finish_http_stream(ctx).expect("ends");
    }
}

#[test]
fn a_callback_timeout_needs_an_engine_with_epochs() {
    let engine = Engine::new(EngineConfig {
        epoch_interruption: false,
        ..EngineConfig::default()
    })
    .expect("engine");
    assert!(!engine.has_epoch_ticker());
    let wasm = read_guest("noop").expect("guest_noop");
    let err = Plugin::load(&engine, &wasm, PluginConfig::named("noop")).expect_err("refused");
    assert!(
        matches!(
            &err,
            LoadError::UnsupportedLimit {
                limit: UnenforceableLimit::TimeoutWithoutEpochs,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("EngineConfig::epoch_interruption"),
        "{err}"
    );
    let unlimited = PluginConfig {
        limits: Limits {
            callback_timeout: None,
            startup_timeout: None,
            ..Limits::default()
        },
        ..PluginConfig::named("noop")
    };
    let p = Plugin::load(&engine, &wasm, unlimited).expect("loads without a timeout");
    let mut vm = Vm::new(&p, &HostEnv::default()).expect("starts");
    let ctx = vm.create_http_context().expect("stream");
    vm.on_request_headers(ctx, request("/", &[]), true)
        .expect("runs");
}

// ---- fuel ----------------------------------------------------------------

fn fuel_engine() -> Engine {
    Engine::new(EngineConfig {
        consume_fuel: true,
        ..EngineConfig::default()
    })
    .expect("engine")
}

#[test]
fn fuel_stops_a_callback_at_the_same_place_every_time() {
    let engine = fuel_engine();
    let wasm = read_guest("cpu_burn").expect("guest_cpu_burn");
    let fuel = 2_000_000;
    let cfg = PluginConfig {
        limits: Limits {
            fuel_per_callback: Some(fuel),
            ..Limits::default()
        },
        ..PluginConfig::named("burn")
    };
    let p = Plugin::load(&engine, &wasm, cfg).expect("loads");
    let env = HostEnv::default();
    // The largest round count that fits, found twice on fresh VMs.
    let fits = |rounds: u32| -> Result<bool, VmError> {
        let mut vm = Vm::new(&p, &env)?;
        let ctx = vm.create_http_context()?;
        let r = rounds.to_string();
        match vm.on_request_headers(ctx, request("/", &[("x-rounds", r.as_str())]), true) {
            Ok(_) => Ok(true),
            Err(e) => {
                assert_limit(
                    &e,
                    "proxy_on_request_headers",
                    &LimitExceeded::Fuel { fuel },
                );
                Ok(false)
            }
        }
    };
    let threshold = || -> u32 {
        let (mut lo, mut hi) = (0u32, 1_000_000u32);
        assert!(fits(lo).expect("runs"), "no rounds fit in the fuel");
        assert!(!fits(hi).expect("runs"), "a million rounds exceed the fuel");
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid).expect("runs") {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let first = threshold();
    assert!(first > 0);
    assert_eq!(threshold(), first, "fuel is deterministic");
}

#[test]
fn fuel_needs_an_engine_that_meters_it() {
    let wasm = read_guest("noop").expect("guest_noop");
    let cfg = PluginConfig {
        limits: Limits {
            fuel_per_callback: Some(1000),
            ..Limits::default()
        },
        ..PluginConfig::named("noop")
    };
    let engine = vessel_spec_tests::engine().expect("engine");
    let err = Plugin::load(&engine, &wasm, cfg.clone()).expect_err("refused");
    assert!(
        matches!(
            err,
            LoadError::UnsupportedLimit {
                limit: UnenforceableLimit::FuelWithoutMetering,
                ..
            }
        ),
        "{err}"
    );
    // A plugin re-configured with fuel on that engine fails at Vm::new.
    let p = Plugin::load(&engine, &wasm, PluginConfig::named("noop")).expect("loads");
    let err = Vm::new(&p.with_config(cfg), &HostEnv::default()).expect_err("refused");
    assert!(
        err.to_string().contains("EngineConfig::consume_fuel"),
        "{err}"
    );
}

// ---- memory --------------------------------------------------------------

#[test]
fn a_memory_bomb_fails_only_its_vm() {
    let cap = 16 << 20;
    // No CPU limit: the bomb ends when the allocator fails, however slow
    // the machine is.
    let limits = Limits {
        memory_bytes: cap,
        callback_timeout: None,
        ..Limits::default()
    };
    let p = limits_plugin("", limits);
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    let mut healthy = h.sibling(&p).expect("a second VM starts");
    let err = h
        .request_headers(op("memory", "request_headers"), true)
        .expect_err("bomb");
    assert_limit(
        &err,
        "proxy_on_request_headers",
        &LimitExceeded::Memory {
            limit_bytes: cap,
            requested_bytes: 0,
        },
    );
    assert!(h.vm.memory_size() <= cap);
    assert!(h.vm.is_failed());
    // The other VM of the same plugin keeps serving.
    let ctx = healthy.create_http_context().expect("healthy");
    assert_eq!(
        healthy
            .on_request_headers(ctx, request("/", &[]), true)
            .expect("runs"),
        FilterHeadersStatus::Continue
    );
    healthy.finish_http_stream(ctx).expect("ends");
}

#[test]
fn a_refused_grow_returns_minus_one_and_the_vm_carries_on() {
    let mut p = Probe::new();
    p.on(Callback::RequestHeaders)
        .value("grow.past_cap", "(memory.grow (i32.const 100))")
        .value("grow.within_cap", "(memory.grow (i32.const 1))");
    let cfg = PluginConfig {
        limits: Limits {
            memory_bytes: 5 << 16,
            ..Limits::default()
        },
        ..config("grow")
    };
    let plugin = p.load(cfg).expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    h.request_headers(request("/", &[]), true).expect("no trap");
    let r = ProbeResults::from_logs(&h.logs);
    assert_eq!(
        r.value("grow.past_cap"),
        Some(u32::MAX),
        "memory.grow gives -1"
    );
    assert_eq!(r.value("grow.within_cap"), Some(3), "the old size in pages");
    assert!(!h.vm.is_failed());
    // Then an `unreachable` after a refused grow is reported as the memory limit.
    let mut p = Probe::new();
    p.on(Callback::RequestHeaders)
        .raw("(if (i32.eq (memory.grow (i32.const 100)) (i32.const -1)) (then unreachable))");
    let plugin = p
        .load(PluginConfig {
            limits: Limits {
                memory_bytes: 5 << 16,
                ..Limits::default()
            },
            ..config("oom")
        })
        .expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let err = h
        .request_headers(request("/", &[]), true)
        .expect_err("trap");
    assert_eq!(
        err.limit(),
        Some(&LimitExceeded::Memory {
            limit_bytes: 5 << 16,
            requested_bytes: 103 << 16
        })
    );
}

#[test]
fn a_module_whose_initial_memory_exceeds_the_cap_does_not_instantiate() {
    // The probe's memory starts at 3 pages.
    let p = Probe::new();
    let plugin = p
        .load(PluginConfig {
            limits: Limits {
                memory_bytes: 2 << 16,
                ..Limits::default()
            },
            ..config("small")
        })
        .expect("loads");
    let err = Vm::new(&plugin, &HostEnv::default()).expect_err("too big");
    assert!(
        matches!(
            &err,
            VmError::Instantiate {
                source: InstantiateError::Memory { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        matches!(err.limit(), Some(LimitExceeded::Memory { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("Limits::memory_bytes"), "{err}");
}

// ---- wasm stack ----------------------------------------------------------

#[test]
fn unbounded_recursion_hits_the_wasm_stack_limit() {
    // Rust guests overflow their shadow stack in linear memory first (an
    // out-of-bounds trap); a wasm-level recursion hits the engine's stack.
    let mut p = Probe::new();
    p.field(
        "(func $deep (param $n i32) (result i32) \
           (i32.add (call $deep (i32.add (local.get $n) (i32.const 1))) (i32.const 1)))",
    );
    p.on(Callback::RequestHeaders)
        .raw("(drop (call $deep (i32.const 0)))");
    let plugin = p.load(config("deep")).expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let err = h
        .request_headers(request("/", &[]), true)
        .expect_err("overflow");
    assert_limit(
        &err,
        "proxy_on_request_headers",
        &LimitExceeded::WasmStack {
            max_bytes: EngineConfig::DEFAULT_MAX_WASM_STACK,
        },
    );
}

// ---- contexts ------------------------------------------------------------

#[test]
fn contexts_per_vm_are_capped_without_failing_the_vm() {
    let cfg = PluginConfig {
        limits: Limits {
            max_contexts: 3,
            ..Limits::default()
        },
        ..config("ctx")
    };
    let p = plugin(Source::Guest("noop"), cfg).expect("loads");
    let mut vm = Vm::new(&p, &HostEnv::default()).expect("starts");
    let a = vm.create_http_context().expect("root + 1");
    let _b = vm.create_http_context().expect("root + 2");
    let err = vm.create_http_context().expect_err("over the cap");
    assert!(
        matches!(&err, VmError::TooManyContexts { plugin, max: 3 } if plugin == "ctx"),
        "{err:?}"
    );
    assert!(err.to_string().contains("Limits::max_contexts"));
    assert!(!vm.is_failed());
    vm.finish_http_stream(a).expect("ends");
    vm.create_http_context().expect("room again");
}

// ---- log volume ----------------------------------------------------------

#[test]
fn log_lines_past_the_budget_are_dropped_whole_and_counted() {
    let budget = 10_000;
    let limits = Limits {
        max_log_bytes_per_callback: budget,
        ..Limits::default()
    };
    let p = limits_plugin("", limits);
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    h.request_headers(op("log:50", "request_headers"), true)
        .expect("runs");
    let running = "limits: running log:50 in request_headers";
    let line = "x".repeat(1000);
    let passed = h.logs.lines().iter().filter(|l| **l == line).count();
    let fit = (budget - running.len()) / line.len();
    assert_eq!(passed, fit);
    assert_eq!(h.vm.dropped_log_lines(), (50 - fit) as u64);
    assert_eq!(h.vm.dropped_log_bytes(), ((50 - fit) * 1000) as u64);
    // A short line still fits in what is left: lines are dropped, not cut.
    assert!(h.logs.contains("limits: logged 50 lines"));
    assert!(
        !h.logs
            .lines()
            .iter()
            .any(|l| l.starts_with('x') && l.len() != 1000)
    );
    // The budget is per callback.
    h.logs.clear();
    h.request_headers(op("log:5", "request_headers"), true)
        .expect("runs");
    assert_eq!(h.logs.lines().iter().filter(|l| **l == line).count(), 5);
}

// ---- shared data, queues, callouts ---------------------------------------

#[test]
fn shared_data_key_value_and_per_vm_id_caps() {
    let mut p = Probe::new();
    let long_key = p.bytes(&[b'k'; 9]);
    let key = |p: &mut Probe, k: &[u8]| p.bytes(k);
    let (k1, k2, k3) = (key(&mut p, b"k1"), key(&mut p, b"k2"), key(&mut p, b"k3"));
    let val = p.bytes(&[b'v'; 16]);
    let long_val = p.bytes(&[b'v'; 17]);
    let set = |k, v| format!("(call $proxy_set_shared_data {k} {v} (i32.const 0))");
    p.on(Callback::RequestHeaders)
        .status("key_too_long", set(long_key, val))
        .status("value_too_long", set(k1, long_val))
        .status("k1", set(k1, val))
        .status("k2", set(k2, val))
        .status("k3_over_total", set(k3, val))
        .status("k1_rewrite", set(k1, val));
    let limits = SharedDataLimits {
        max_key_bytes: 8,
        max_value_bytes: 16,
        max_bytes_per_vm_id: 40,
    };
    let run = |vm_id: &str, env: &HostEnv| -> ProbeResults {
        let plugin = p
            .load(PluginConfig {
                vm_id: vm_id.into(),
                ..config("sd")
            })
            .expect("loads");
        let logs = vessel_spec_tests::LogCapture::new();
        let env = HostEnv::builder()
            .shared_data(env.shared_data().clone())
            .log_sink(logs.clone())
            .build();
        let mut vm = Vm::new(&plugin, &env).expect("starts");
        let ctx = vm.create_http_context().expect("stream");
        vm.on_request_headers(ctx, request("/", &[]), true)
            .expect("runs");
        ProbeResults::from_logs(&logs)
    };
    let env = HostEnv::builder().shared_data_limits(limits).build();
    let bad = Status::BadArgument.as_u32();
    for vm_id in ["a", "b"] {
        let r = run(vm_id, &env);
        assert_eq!(r.value("key_too_long"), Some(bad), "{vm_id}");
        assert_eq!(r.value("value_too_long"), Some(bad), "{vm_id}");
        assert_eq!(r.value("k1"), Some(0), "{vm_id}");
        assert_eq!(r.value("k2"), Some(0), "{vm_id}");
        assert_eq!(r.value("k3_over_total"), Some(bad), "{vm_id}");
        assert_eq!(r.value("k1_rewrite"), Some(0), "a same-size rewrite fits");
        assert_eq!(env.shared_data().bytes(vm_id), 36);
    }
    assert_eq!(
        env.shared_data().keys("a").len(),
        2,
        "nothing stored over the cap"
    );
}

#[test]
fn a_full_queue_refuses_with_internal_failure() {
    let mut p = Probe::new();
    let name = p.bytes(b"q");
    let item = p.bytes(b"item");
    let enqueue = format!(
        "(call $proxy_enqueue_shared_queue (i32.load {}) {item})",
        c(OUT)
    );
    let b = p.on(Callback::RequestHeaders);
    b.status(
        "register",
        format!("(call $proxy_register_shared_queue {name} {})", c(OUT)),
    )
    .status("enqueue.1", enqueue.clone())
    .status("enqueue.2", enqueue.clone())
    .status("enqueue.3", enqueue.clone())
    .status(
        "dequeue",
        format!(
            "(call $proxy_dequeue_shared_queue (i32.load {}) {} {})",
            c(OUT),
            c(vessel_spec_tests::probe::RET_PTR),
            c(vessel_spec_tests::probe::RET_SIZE)
        ),
    )
    .status("enqueue.4", enqueue);
    let plugin = p.load(config("q")).expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder().queue_max_len(2)).expect("starts");
    h.request_headers(request("/", &[]), true).expect("runs");
    let r = ProbeResults::from_logs(&h.logs);
    let full = Status::InternalFailure.as_u32();
    let got: Vec<_> = [
        "register",
        "enqueue.1",
        "enqueue.2",
        "enqueue.3",
        "dequeue",
        "enqueue.4",
    ]
    .iter()
    .map(|l| r.value(l))
    .collect();
    assert_eq!(
        got,
        [Some(0), Some(0), Some(0), Some(full), Some(0), Some(0)]
    );
}

#[test]
fn callouts_in_flight_per_vm_are_capped() {
    let mut p = Probe::new();
    let up = p.bytes(b"upstream");
    let hdrs = p.bytes(&vessel_abi::pairs::encode([
        (&b":method"[..], &b"GET"[..]),
        (&b":path"[..], &b"/"[..]),
        (&b":authority"[..], &b"upstream"[..]),
    ]));
    let call = format!(
        "(call $proxy_http_call {up} {hdrs} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) {})",
        c(OUT)
    );
    p.on(Callback::RequestHeaders)
        .status("call.1", call.clone())
        .status("call.2", call.clone())
        .status("call.3", call.clone());
    let cfg = PluginConfig {
        limits: Limits {
            max_callouts_in_flight: 2,
            ..Limits::default()
        },
        ..config("callouts")
    };
    let plugin = p.load(cfg).expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    h.request_headers(request("/", &[]), true).expect("runs");
    let r = ProbeResults::from_logs(&h.logs);
    let refused = Status::InternalFailure.as_u32();
    assert_eq!(
        ["call.1", "call.2", "call.3"].map(|l| r.value(l)),
        [Some(0), Some(0), Some(refused)]
    );
    assert_eq!(h.vm.callouts_in_flight(), 2);
    // Answering one frees a slot.
    let token = h
        .effects()
        .into_iter()
        .find_map(|e| match e {
            Effect::HttpCall { token, .. } => Some(token),
            _ => None,
        })
        .expect("a call");
    h.vm.on_http_call_response(
        token,
        HttpCallOutcome::Failed {
            reason: "reset".into(),
        },
    )
    .expect("delivered");
    h.logs.clear();
    h.request_headers(request("/", &[]), true).expect("runs");
    let r = ProbeResults::from_logs(&h.logs);
    assert_eq!(
        ["call.1", "call.2"].map(|l| r.value(l)),
        [Some(0), Some(refused)]
    );
}

#[test]
fn every_limit_has_its_documented_default() {
    let l = Limits::default();
    assert_eq!(l.memory_bytes, 1 << 30);
    assert_eq!(l.callback_timeout, Some(Duration::from_millis(100)));
    assert_eq!(l.startup_timeout, Some(Duration::from_secs(1)));
    assert_eq!(l.fuel_per_callback, None);
    assert_eq!(l.max_contexts, Limits::DEFAULT_MAX_CONTEXTS);
    assert_eq!(l.max_log_bytes_per_callback, 1 << 20);
    assert_eq!(l.max_callouts_in_flight, 10_000);
    assert_eq!(PluginConfig::default().limits, l);
    let e = EngineConfig::default();
    assert!(e.epoch_interruption);
    assert!(!e.consume_fuel);
    assert_eq!(e.epoch_period, Duration::from_millis(10));
    assert_eq!(e.max_wasm_stack, 1 << 20);
}
