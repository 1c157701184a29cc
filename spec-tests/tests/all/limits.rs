//! Resource limits (ABI reference §6.6; `docs/operations.md`, "Limits"):
//! the memory cap and the CPU deadline per callback fail only the VM that
//! hit them, with a typed error naming the limit and the callback; fuel,
//! the wasm stack, contexts, log volume, shared data, queues and callouts
//! each have a cap with a clear status or error. What a guest makes the
//! host hold (header maps, bodies, properties, effects and callouts,
//! metrics, queues) is bounded too: past a limit the call gets an error
//! status its SDKs accept, or the VM fails with a `LimitExceeded` naming
//! the knob; never a panic, never unbounded host memory.

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
    // `on_vm_start` and `on_configure` run under the start-up budget.
    for (at, callback) in [
        ("vm_start", "proxy_on_vm_start"),
        ("configure", "proxy_on_configure"),
    ] {
        let limits = Limits {
            startup_timeout: Some(TIMEOUT),
            ..short_timeout()
        };
        let p = limits_plugin(&format!("loop@{at}"), limits);
        let err = Vm::new(&p, &env).expect_err("start-up is stopped");
        assert_limit(
            &err,
            callback,
            &LimitExceeded::StartupTimeout { timeout: TIMEOUT },
        );
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
fn on_vm_start_and_on_configure_run_under_the_startup_timeout() {
    // An endless `proxy_on_vm_start` or `proxy_on_configure` is stopped by
    // the start-up budget (not left without a deadline when only the
    // per-callback one is off), and is reported as a start-up timeout.
    for callback in [Callback::VmStart, Callback::Configure] {
        let mut p = Probe::new();
        p.on(callback).raw("(loop $forever (br $forever))");
        let cfg = PluginConfig {
            limits: Limits {
                callback_timeout: None,
                startup_timeout: Some(TIMEOUT),
                ..Limits::default()
            },
            ..config("configure")
        };
        let plugin = p.load(cfg).expect("loads");
        let err = Vm::new(&plugin, &HostEnv::default()).expect_err("stopped");
        assert_limit(
            &err,
            callback.export(),
            &LimitExceeded::StartupTimeout { timeout: TIMEOUT },
        );
    }
}

#[test]
fn on_configure_may_run_past_the_callback_timeout() {
    // A long but finite `proxy_on_configure` (a stock plugin loading a
    // dictionary) is not held to the per-request budget: with no start-up
    // limit it finishes however long the callback timeout is exceeded.
    let mut p = Probe::new();
    p.on(Callback::Configure).raw(
        "(local.set 0 (i32.const 0))
         (loop $spin
           (local.set 0 (i32.add (local.get 0) (i32.const 1)))
           (br_if $spin (i32.lt_u (local.get 0) (i32.const 400000000))))",
    );
    let cfg = PluginConfig {
        limits: Limits {
            callback_timeout: Some(Duration::from_millis(1)),
            startup_timeout: None,
            ..Limits::default()
        },
        ..config("configure")
    };
    let plugin = p.load(cfg).expect("loads");
    Vm::new(&plugin, &HostEnv::default()).expect("on_configure runs to its end");
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
    assert_eq!(l.startup_timeout, Some(Duration::from_secs(10)));
    assert_eq!(l.fuel_per_callback, None);
    assert_eq!(l.max_contexts, Limits::DEFAULT_MAX_CONTEXTS);
    assert_eq!(l.max_log_bytes_per_callback, 1 << 20);
    assert_eq!(l.max_callouts_in_flight, 10_000);
    assert_eq!(l.max_header_map_bytes, 8 << 20);
    assert_eq!(l.max_header_map_entries, 10_000);
    assert_eq!(l.max_body_bytes, 64 << 20);
    assert_eq!(l.max_property_bytes, 8 << 20);
    assert_eq!(l.max_effect_bytes, 256 << 20);
    assert_eq!(l.max_metrics, 10_000);
    assert_eq!(l.max_metric_name_bytes, 16 << 10);
    assert_eq!(PluginConfig::default().limits, l);
    let q = vessel_host::shared::queues::SharedQueueLimits::default();
    assert_eq!(q.max_len, 10_000);
    assert_eq!(q.max_bytes, 64 << 20);
    assert_eq!(q.max_queues_per_vm_id, 10_000);
    assert_eq!(q.max_name_bytes, 64 << 10);
    let e = EngineConfig::default();
    assert!(e.epoch_interruption);
    assert!(!e.consume_fuel);
    assert_eq!(e.epoch_period, Duration::from_millis(10));
    assert_eq!(e.max_wasm_stack, 1 << 20);
}

// ---- host memory held for a guest ---------------------------------------

fn misbehave(limits: Limits) -> Plugin {
    plugin(
        Source::Guest("misbehave"),
        PluginConfig {
            limits,
            ..config("misbehave")
        },
    )
    .expect("guest_misbehave loads")
}

fn bomb(kind: &str) -> vessel_host::HeaderMap {
    request("/", &[("x-misbehave", kind)])
}

/// Asserts `err` failed the VM in `callback` with a limit of `knob`, and
/// returns the limit.
fn assert_knob<'e>(err: &'e VmError, callback: &str, knob: &str) -> &'e LimitExceeded {
    let trap = err.trap().unwrap_or_else(|| panic!("a trap, got {err}"));
    assert_eq!(trap.callback, callback, "{err}");
    let limit = err.limit().unwrap_or_else(|| panic!("a limit, got {err}"));
    assert_eq!(limit.knob(), knob, "{err}");
    assert!(err.to_string().contains(knob), "{err}");
    limit
}

#[test]
fn a_guest_adding_1_mib_headers_in_a_loop_fails_its_vm_at_the_map_limit() {
    // No CPU limit: only the map limit can stop the loop.
    let p = misbehave(Limits {
        callback_timeout: None,
        ..Limits::default()
    });
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    let mut healthy = h.sibling(&p).expect("a second VM");
    let ctx = h.vm.create_http_context().expect("stream");
    let err =
        h.vm.on_request_headers(ctx, bomb("header-bomb"), true)
            .expect_err("stopped");
    let limit = assert_knob(
        &err,
        "proxy_on_request_headers",
        "Limits::max_header_map_bytes",
    );
    let LimitExceeded::HeaderMapBytes {
        map,
        limit_bytes,
        requested_bytes,
    } = limit
    else {
        panic!("{limit:?}")
    };
    assert_eq!(*map, "request headers");
    assert_eq!(*limit_bytes, Limits::DEFAULT_MAX_HEADER_MAP_BYTES);
    assert!(*requested_bytes > *limit_bytes);
    // The refused value was not added: the map stays within the limit.
    let held =
        h.vm.headers(ctx, vessel_host::MapType::HttpRequestHeaders)
            .expect("the map")
            .byte_size();
    assert!(held <= Limits::DEFAULT_MAX_HEADER_MAP_BYTES, "{held}");
    assert!(held > Limits::DEFAULT_MAX_HEADER_MAP_BYTES - (1 << 20) - 64);
    assert!(h.vm.is_failed());
    // The other VM serves.
    let s = healthy.create_http_context().expect("healthy");
    assert_eq!(
        healthy
            .on_request_headers(s, request("/", &[]), true)
            .expect("runs"),
        FilterHeadersStatus::Continue
    );
}

#[test]
fn header_entries_are_capped_too() {
    let p = misbehave(Limits {
        max_header_map_entries: 5,
        ..Limits::default()
    });
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    // `request()` gives 4 entries and `x-misbehave` one more: the first add
    // is the 6th entry.
    let err = h
        .request_headers(bomb("header-bomb"), true)
        .expect_err("stopped");
    let limit = assert_knob(
        &err,
        "proxy_on_request_headers",
        "Limits::max_header_map_entries",
    );
    assert_eq!(
        limit,
        &LimitExceeded::HeaderMapEntries {
            map: "request headers",
            limit: 5,
            requested: 6
        }
    );
}

#[test]
fn a_guest_growing_its_body_fails_its_vm_at_the_body_limit() {
    let cap = 4 << 20;
    let p = misbehave(Limits {
        max_body_bytes: cap,
        ..Limits::default()
    });
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    let (ctx, status) = h
        .request_headers(bomb("body-bomb"), false)
        .expect("headers");
    assert_eq!(status, FilterHeadersStatus::Continue);
    let err =
        h.vm.on_request_body(ctx, b"abc", true)
            .expect_err("stopped");
    let limit = assert_knob(&err, "proxy_on_request_body", "Limits::max_body_bytes");
    assert_eq!(
        limit,
        &LimitExceeded::BodyBytes {
            body: "request body",
            limit_bytes: cap,
            requested_bytes: 3 + (4 << 20)
        },
    );
    let held = h.vm.body(ctx, vessel_host::BufferType::HttpRequestBody);
    assert_eq!(held.map(<[u8]>::len), Some(3 + (3 << 20)));
}

#[test]
fn body_data_past_the_per_filter_limit_is_refused_without_failing_the_vm() {
    let cap = 1000;
    let p = misbehave(Limits {
        max_body_bytes: cap,
        ..Limits::default()
    });
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    let (ctx, _) = h.request_headers(request("/", &[]), false).expect("ok");
    // The guest continues every chunk and the embedder forwards it, so
    // nothing stays held: chunks of any size up to the cap pass.
    h.vm.on_request_body(ctx, &[1; 1000], false)
        .expect("within the cap");
    assert_eq!(
        h.vm.take_body(ctx, vessel_host::BufferType::HttpRequestBody)
            .map(|b| b.len()),
        Some(1000)
    );
    h.vm.append_body(ctx, vessel_host::BufferType::HttpRequestBody, &[2; 600])
        .expect("held: 600");
    let err =
        h.vm.on_request_body(ctx, &[3; 401], false)
            .expect_err("1001");
    assert!(
        matches!(
            &err,
            VmError::StreamLimit {
                plugin,
                context,
                limit: LimitExceeded::BodyBytes {
                    body: "request body",
                    limit_bytes,
                    requested_bytes: 1001
                }
            } if plugin == "misbehave" && *context == ctx && *limit_bytes == cap
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("Limits::max_body_bytes"), "{err}");
    assert_eq!(
        err.limit().map(LimitExceeded::knob),
        Some("Limits::max_body_bytes")
    );
    assert!(err.trap().is_none());
    assert!(!h.vm.is_failed(), "only the stream is over");
    assert_eq!(
        h.vm.body(ctx, vessel_host::BufferType::HttpRequestBody)
            .map(<[u8]>::len),
        Some(600),
        "nothing appended"
    );
    let err =
        h.vm.append_body(ctx, vessel_host::BufferType::HttpRequestBody, &[4; 401])
            .expect_err("paused appends are capped too");
    assert!(matches!(err, VmError::StreamLimit { .. }), "{err}");
    h.vm.finish_http_stream(ctx).expect("ends");
    let (ctx, _) = h.request_headers(request("/", &[]), false).expect("next");
    h.vm.on_request_body(ctx, b"ok", true).expect("served");
}

#[test]
fn a_guest_setting_properties_in_a_loop_fails_its_vm_at_the_property_limit() {
    let cap = 3 << 20;
    let p = misbehave(Limits {
        max_property_bytes: cap,
        ..Limits::default()
    });
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    let err = h
        .request_headers(bomb("property-bomb"), true)
        .expect_err("stopped");
    let limit = assert_knob(
        &err,
        "proxy_on_request_headers",
        "Limits::max_property_bytes",
    );
    let LimitExceeded::PropertyBytes {
        limit_bytes,
        requested_bytes,
    } = limit
    else {
        panic!("{limit:?}")
    };
    assert_eq!(*limit_bytes, cap);
    // Two 1 MiB values fit with their paths (`misbehave\0<n>`, 11 bytes)
    // and their bookkeeping; the third does not.
    let each = (1 << 20) + 11 + vessel_host::properties::PROPERTY_ENTRY_OVERHEAD;
    assert_eq!(*requested_bytes, 3 * each);
}

#[test]
fn a_guest_queueing_effects_in_a_loop_fails_its_vm_at_the_effect_limit() {
    let cap = 1 << 20;
    let p = misbehave(Limits {
        max_effect_bytes: cap,
        ..Limits::default()
    });
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    let err = h
        .request_headers(bomb("effect-bomb"), true)
        .expect_err("stopped");
    assert_knob(&err, "proxy_on_request_headers", "Limits::max_effect_bytes");
    assert!(h.vm.held_effect_bytes() <= cap);
    assert!(h.vm.held_effect_bytes() > cap - 1024);
    // The embedder takes them: the VM holds nothing any more.
    let n = h.effects().len();
    assert!(n > 1000, "{n} continue effects");
    assert_eq!(h.vm.held_effect_bytes(), 0);
}

/// Small limits for the probe tests below.
fn small() -> Limits {
    Limits {
        max_header_map_bytes: 1000,
        max_header_map_entries: 10,
        max_body_bytes: 2000,
        max_property_bytes: 500,
        max_effect_bytes: 20_000,
        max_metrics: 2,
        max_metric_name_bytes: 64,
        ..Limits::default()
    }
}

/// Runs a probe whose request-headers callback is `build`'s, with
/// `limits`; returns the harness, the callback's outcome and the results.
fn probe_run(
    limits: Limits,
    body: bool,
    build: impl FnOnce(&mut Probe),
) -> (Harness, Result<(), VmError>, ProbeResults) {
    let mut p = Probe::new();
    build(&mut p);
    let plugin = p
        .load(PluginConfig {
            limits,
            ..config("bounds")
        })
        .expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let result = h
        .request_headers(request("/", &[]), !body)
        .and_then(|(ctx, _)| {
            if body {
                h.vm.on_request_body(ctx, b"body", true).map(|_| ())
            } else {
                Ok(())
            }
        });
    let r = ProbeResults::from_logs(&h.logs);
    (h, result, r)
}

fn pairs_of(n: usize, value_len: usize) -> Vec<u8> {
    let value = vec![b'v'; value_len];
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    vessel_abi::pairs::encode(keys.iter().map(|k| (k.as_bytes(), value.as_slice())))
}

#[test]
fn map_edits_past_the_limit_fail_the_vm_and_change_nothing() {
    // add: 3 entries of the request + 1 of 990 bytes is over 1000 bytes.
    let (h, result, r) = probe_run(small(), false, |p| {
        let k = p.bytes(b"x-big");
        let v = p.bytes(&[b'v'; 990]);
        let small_v = p.bytes(b"1");
        p.on(Callback::RequestHeaders)
            .status(
                "add.small",
                format!("(call $proxy_add_header_map_value (i32.const 0) {k} {small_v})"),
            )
            .status(
                "add.big",
                format!("(call $proxy_add_header_map_value (i32.const 0) {k} {v})"),
            );
    });
    let err = result.expect_err("trap");
    assert_knob(
        &err,
        "proxy_on_request_headers",
        "Limits::max_header_map_bytes",
    );
    assert_eq!(r.value("add.small"), Some(0));
    assert_eq!(r.value("add.big"), None, "the call never returned");
    assert!(h.vm.is_failed());

    // replace with a longer value, and set pairs with too many entries.
    for (label, knob) in [
        ("replace", "Limits::max_header_map_bytes"),
        ("set_pairs", "Limits::max_header_map_entries"),
    ] {
        let (_, result, _) = probe_run(small(), false, |p| {
            let k = p.bytes(b":path");
            let v = p.bytes(&[b'/'; 995]);
            let many = p.bytes(&pairs_of(11, 1));
            let call = if label == "replace" {
                format!("(call $proxy_replace_header_map_value (i32.const 0) {k} {v})")
            } else {
                format!("(call $proxy_set_header_map_pairs (i32.const 0) {many})")
            };
            p.on(Callback::RequestHeaders).status(label, call);
        });
        let err = result.expect_err(label);
        assert_knob(&err, "proxy_on_request_headers", knob);
    }

    // Edits that do not grow the map pass, whatever its size.
    let (h, result, r) = probe_run(small(), false, |p| {
        let k = p.bytes(b":path");
        let ten = p.bytes(&pairs_of(10, 90));
        p.on(Callback::RequestHeaders)
            .status(
                "set_pairs.at_limit",
                format!("(call $proxy_set_header_map_pairs (i32.const 0) {ten})"),
            )
            .status(
                "remove",
                format!("(call $proxy_remove_header_map_value (i32.const 0) {k})"),
            );
    });
    result.expect("no limit hit");
    assert_eq!(r.value("set_pairs.at_limit"), Some(0));
    assert_eq!(r.value("remove"), Some(0));
    assert!(!h.vm.is_failed());
}

#[test]
fn set_buffer_bytes_past_the_body_limit_fails_the_vm() {
    let (h, result, r) = probe_run(small(), true, |p| {
        let chunk = p.bytes(&[b'b'; 1000]);
        let append = format!(
            "(call $proxy_set_buffer_bytes (i32.const 0) (i32.const -1) (i32.const 0) {chunk})"
        );
        let replace = format!(
            "(call $proxy_set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const -1) {chunk})"
        );
        p.on(Callback::RequestBody)
            .status("append.1", append.clone())
            .status("replace", replace)
            .status("append.2", append.clone())
            .status("append.3", append);
    });
    let err = result.expect_err("trap");
    let limit = assert_knob(&err, "proxy_on_request_body", "Limits::max_body_bytes");
    assert_eq!(
        limit,
        &LimitExceeded::BodyBytes {
            body: "request body",
            limit_bytes: 2000,
            requested_bytes: 3000
        }
    );
    // 4 + 1000, replaced by 1000, then 2000: all within 2000 bytes.
    assert_eq!(r.value("append.1"), Some(0));
    assert_eq!(r.value("replace"), Some(0));
    assert_eq!(r.value("append.2"), Some(0));
    assert_eq!(r.value("append.3"), None);
    let _ = h;
}

#[test]
fn callouts_past_the_limits_get_internal_failure_and_the_vm_carries_on() {
    let (mut h, result, r) = probe_run(small(), false, |p| {
        let up = p.bytes(b"upstream");
        let mut good = vec![
            (&b":method"[..], &b"GET"[..]),
            (&b":path"[..], &b"/"[..]),
            (&b":authority"[..], &b"upstream"[..]),
        ];
        let hdrs = p.bytes(&vessel_abi::pairs::encode(good.iter().copied()));
        let big = vec![b'h'; 990];
        good.push((b"x-big", &big));
        let big_hdrs = p.bytes(&vessel_abi::pairs::encode(good.iter().copied()));
        let body = p.bytes(&[b'B'; 8000]);
        let call = |h: vessel_spec_tests::probe::Blob| {
            format!(
                "(call $proxy_http_call {up} {h} {body} (i32.const 0) (i32.const 0) (i32.const 1000) {})",
                c(OUT)
            )
        };
        let grpc = format!(
            "(call $proxy_grpc_call {up} {up} {up} (i32.const 0) (i32.const 0) {body} (i32.const 1000) {})",
            c(OUT)
        );
        let redis = format!("(call $proxy_redis_call {up} {body} {})", c(OUT));
        p.on(Callback::RequestHeaders)
            .status("http.big_headers", call(big_hdrs))
            .status("http.1", call(hdrs))
            .status("http.2", call(hdrs))
            .status("http.3_no_room", call(hdrs))
            .status("grpc.no_room", grpc)
            .status("redis.no_room", redis);
    });
    result.expect("no trap");
    let refused = Some(Status::InternalFailure.as_u32());
    assert_eq!(r.value("http.big_headers"), refused);
    assert_eq!(r.value("http.1"), Some(0));
    assert_eq!(r.value("http.2"), Some(0));
    assert_eq!(r.value("http.3_no_room"), refused);
    assert_eq!(r.value("grpc.no_room"), refused);
    assert_eq!(r.value("redis.no_room"), refused);
    assert_eq!(h.vm.limit_refusals(), 4);
    assert_eq!(h.vm.callouts_in_flight(), 2);
    assert!(!h.vm.is_failed());
    // The two requests stay held after the embedder takes the effects,
    // until their answers come.
    let held = h.vm.held_effect_bytes();
    assert!(held > 16_000, "{held}");
    let tokens: Vec<_> = h
        .effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::HttpCall { token, .. } => Some(token),
            _ => None,
        })
        .collect();
    assert_eq!(h.vm.held_effect_bytes(), held);
    for token in tokens {
        h.vm.on_http_call_response(
            token,
            HttpCallOutcome::Failed {
                reason: "reset".into(),
            },
        )
        .expect("delivered");
    }
    assert_eq!(h.vm.held_effect_bytes(), 0);
}

#[test]
fn grpc_messages_past_the_effect_limit_get_bad_argument() {
    let (h, result, r) = probe_run(small(), false, |p| {
        let up = p.bytes(b"upstream");
        let msg = p.bytes(&[b'm'; 8000]);
        let stream = format!(
            "(call $proxy_grpc_stream {up} {up} {up} (i32.const 0) (i32.const 0) {})",
            c(OUT)
        );
        let send = format!(
            "(call $proxy_grpc_send (i32.load {}) {msg} (i32.const 0))",
            c(OUT)
        );
        p.on(Callback::RequestHeaders)
            .status("stream", stream)
            .status("send.1", send.clone())
            .status("send.2", send.clone())
            .status("send.3", send);
    });
    result.expect("no trap");
    assert_eq!(r.value("stream"), Some(0));
    assert_eq!(r.value("send.1"), Some(0));
    assert_eq!(r.value("send.2"), Some(0));
    assert_eq!(r.value("send.3"), Some(Status::BadArgument.as_u32()));
    assert_eq!(h.vm.limit_refusals(), 1);
}

#[test]
fn stream_controls_in_a_loop_fail_the_vm_at_the_effect_limit() {
    for (label, call) in [
        ("continue", "(call $proxy_continue_stream (i32.const 0))"),
        ("close", "(call $proxy_close_stream (i32.const 0))"),
        (
            "tick",
            "(call $proxy_set_tick_period_milliseconds (i32.const 5))",
        ),
    ] {
        let (h, result, _) = probe_run(small(), false, |p| {
            p.on(Callback::RequestHeaders)
                .raw(format!("(loop $again (drop {call}) (br $again))"));
        });
        let err = result.expect_err(label);
        assert_knob(&err, "proxy_on_request_headers", "Limits::max_effect_bytes");
        assert!(h.vm.held_effect_bytes() <= 20_000, "{label}");
    }
}

#[test]
fn local_replies_past_the_limits_fail_the_vm() {
    for (label, headers_over) in [("headers", true), ("body", false)] {
        let (_, result, _) = probe_run(small(), false, |p| {
            let hdrs = p.bytes(&pairs_of(11, 1));
            let body = p.bytes(&[b'r'; 30_000]);
            let call = if headers_over {
                format!(
                    "(call $proxy_send_local_response (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) {hdrs} (i32.const -1))"
                )
            } else {
                format!(
                    "(call $proxy_send_local_response (i32.const 403) (i32.const 0) (i32.const 0) {body} (i32.const 0) (i32.const 0) (i32.const -1))"
                )
            };
            p.on(Callback::RequestHeaders).status(label, call);
        });
        let err = result.expect_err(label);
        let knob = if headers_over {
            "Limits::max_header_map_entries"
        } else {
            "Limits::max_effect_bytes"
        };
        assert_knob(&err, "proxy_on_request_headers", knob);
    }
}

#[test]
fn properties_metrics_and_queue_names_past_their_limits_fail_the_vm() {
    // (label, knob, the call within the limit, the call past it)
    type Setup = fn(&mut Probe) -> (String, String);
    let cases: [(&str, &str, Setup); 3] = [
        ("property", "Limits::max_property_bytes", |p| {
            // 3 + 240 bytes (+ 64 of bookkeeping), then 3 + 260 (+ 64) more: past 500.
            let (a, b) = (p.bytes(b"a\0b"), p.bytes(b"a\0c"));
            let (v, w) = (p.bytes(&[b'p'; 240]), p.bytes(&[b'p'; 260]));
            (
                format!("(call $proxy_set_property {a} {v})"),
                format!("(call $proxy_set_property {b} {w})"),
            )
        }),
        ("metric_name", "Limits::max_metric_name_bytes", |p| {
            let ok = p.bytes(&[b'm'; 64]);
            let long = p.bytes(&[b'm'; 65]);
            (
                format!("(call $proxy_define_metric (i32.const 0) {ok} {})", c(OUT)),
                format!(
                    "(call $proxy_define_metric (i32.const 0) {long} {})",
                    c(OUT)
                ),
            )
        }),
        ("metrics", "Limits::max_metrics", |p| {
            let (a, b) = (p.bytes(b"a"), p.bytes(b"b"));
            let o = c(OUT);
            (
                format!(
                    "(drop (call $proxy_define_metric (i32.const 0) {a} {o})) (call $proxy_define_metric (i32.const 1) {a} {o})"
                ),
                format!("(call $proxy_define_metric (i32.const 0) {b} {o})"),
            )
        }),
    ];
    for (label, knob, setup) in cases {
        let (_, result, r) = probe_run(small(), false, |p| {
            let (first, over) = setup(p);
            p.on(Callback::RequestHeaders)
                .status("first", first)
                .status("over", over);
        });
        let err = result.expect_err(label);
        assert_knob(&err, "proxy_on_request_headers", knob);
        assert_eq!(r.value("first"), Some(0), "{label}");
        assert_eq!(r.value("over"), None, "{label}");
    }
    // Queue names, with a small registry limit (a process-wide one).
    let mut p = Probe::new();
    let short = p.bytes(b"q");
    let long = p.bytes(b"qqqq");
    p.on(Callback::RequestHeaders)
        .status(
            "first",
            format!("(call $proxy_register_shared_queue {short} {})", c(OUT)),
        )
        .status(
            "over",
            format!("(call $proxy_register_shared_queue {long} {})", c(OUT)),
        );
    let plugin = p.load(config("queues")).expect("loads");
    let limits = vessel_host::shared::queues::SharedQueueLimits {
        max_name_bytes: 3,
        ..Default::default()
    };
    let mut h = Harness::new(&plugin, HostEnv::builder().queue_limits(limits)).expect("starts");
    let err = h
        .request_headers(request("/", &[]), true)
        .expect_err("trap");
    assert_knob(
        &err,
        "proxy_on_request_headers",
        "SharedQueueLimits::max_name_bytes",
    );
    assert_eq!(ProbeResults::from_logs(&h.logs).value("first"), Some(0));
}
