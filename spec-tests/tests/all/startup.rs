//! Start-up (ABI reference §3, §6.3, §7, §11.21–§11.24): the order of the
//! start-up calls, refusal by `on_vm_start`/`on_configure`, WASI reactors
//! (a Go-like module), `wasm32-unknown-unknown` modules, the allocator
//! choice, and the stream shutdown order.

use vessel_host::{
    AbiVersion, Effect, FilterHeadersStatus, HostEnv, LocalResponse, PluginConfig, TrapKind, Vm,
    VmError,
};
use vessel_spec_tests::{Harness, Source, UNKNOWN_UNKNOWN, config, env_with_logs, plugin, request};

fn cfg(vm_configuration: &str, configuration: &str) -> PluginConfig {
    PluginConfig {
        vm_configuration: vm_configuration.as_bytes().to_vec(),
        configuration: configuration.as_bytes().to_vec(),
        ..config("startup")
    }
}

#[test]
fn start_up_order_follows_envoy() {
    let mut h =
        Harness::load(Source::Wat("startup_order"), cfg("vm", "plugin-config")).expect("starts");
    let root = h.vm.root_context().get();
    assert_eq!(
        h.logs.with_prefix("startup_order: "),
        [
            "_initialize".to_owned(),
            "main argc=0 argv=0 initialized=1".to_owned(),
            format!("context_create ctx={root} parent=0"),
            format!("vm_start root={root} size=2"),
            format!("configure root={root} size=13"),
        ]
    );
    h.logs.clear();
    let (ctx, _) = h.request_headers(request("/", &[]), true).expect("request");
    h.vm.finish_http_stream(ctx).expect("finish");
    let c = ctx.get();
    assert_eq!(
        h.logs.with_prefix("startup_order: "),
        [
            format!("context_create ctx={c} parent={root}"),
            format!("request_headers ctx={c}"),
            // Envoy HTTP: on_log before on_done, then on_delete (§11.11).
            format!("log ctx={c}"),
            format!("done ctx={c}"),
            format!("delete ctx={c}"),
        ]
    );
    assert_eq!(h.vm.context_count(), 1, "only the root is left");
    h.logs.clear();
    assert!(matches!(h.vm.shutdown(), Ok(true)));
    assert_eq!(
        h.logs.with_prefix("startup_order: "),
        [format!("done ctx={root}"), format!("delete ctx={root}")]
    );
}

#[test]
fn refusals_fail_start_up() {
    let (env, logs) = env_with_logs(HostEnv::builder());
    let p = plugin(Source::Wat("startup_order"), cfg("", "refuse_configure")).expect("loads");
    assert!(matches!(
        Vm::new(&p, &env).map(|_| ()),
        Err(VmError::ConfigureRefused { plugin }) if plugin == "startup"
    ));
    assert_eq!(
        logs.with_prefix("startup_order: ").last().map(|l| &l[..9]),
        Some("configure")
    );

    logs.clear();
    let p = plugin(Source::Wat("startup_order"), cfg("refuse_vm_start", "")).expect("loads");
    let err = Vm::new(&p, &env).map(|_| ()).expect_err("refused");
    assert!(
        matches!(&err, VmError::VmStartRefused { plugin } if plugin == "startup"),
        "{err:?}"
    );
    assert!(err.to_string().contains("startup"), "{err}");
    let lines = logs.with_prefix("startup_order: ");
    assert!(
        lines.last().is_some_and(|l| l.starts_with("vm_start ")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("configure")),
        "configure never runs"
    );
}

#[test]
fn go_like_wasi_reactor_loads_and_initializes() {
    let mut c = config("go_like");
    c.environment = vec![("GOGC".into(), "off".into())];
    let p = plugin(Source::Wat("go_like_wasi"), c).expect("loads");
    assert_eq!(p.abi_version(), AbiVersion::V0_2_0);
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    assert_eq!(
        h.logs.level_of("hello from wasi"),
        Some(vessel_host::LogLevel::Info)
    );
    let errnos = "go_like_wasi: errno poll_oneoff=0 fd_write=0 clock_time_get=0 random_get=0 \
                  environ_sizes_get=0 environ_get=0 args_sizes_get=0 args_get=0 \
                  fd_fdstat_get=0 fd_prestat_get=8 sched_yield=0 fd_read=52 fd_seek=0 \
                  fd_close=0 path_open=44";
    assert!(h.logs.contains(errnos), "{:#?}", h.logs.lines());
    h.request_headers(request("/", &[]), true).expect("request");
    assert!(h.logs.contains("go_like_wasi: request via wasi_unstable"));
}

#[test]
fn proc_exit_fails_the_vm_not_the_process() {
    let (env, logs) = env_with_logs(HostEnv::builder());
    let p = plugin(
        Source::Wat("go_like_wasi"),
        PluginConfig {
            configuration: b"proc_exit".to_vec(),
            ..config("go_like")
        },
    )
    .expect("loads");
    let err = Vm::new(&p, &env)
        .map(|_| ())
        .expect_err("proc_exit(3) fails the VM");
    let trap = err.trap().expect("a trap");
    assert!(matches!(trap.kind, TrapKind::ProcExit(3)), "{trap:?}");
    assert_eq!(trap.callback, "proxy_on_configure");
    assert!(logs.contains("go_like_wasi: calling proc_exit(3)"));
    assert!(!logs.contains("go_like_wasi: proc_exit returned"));
}

#[test]
fn wasm32_unknown_unknown_module_loads_and_runs() {
    let p = plugin(Source::GuestFor(UNKNOWN_UNKNOWN, "hello"), config("hello")).expect("loads");
    // No WASI at all: the SDK exports its allocator as `malloc`.
    assert!(
        p.module().imports().all(|i| i.module() == "env"),
        "only env imports"
    );
    assert!(p.module().get_export("malloc").is_some());
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    let (ctx, status) = h
        .request_headers(request("/hello", &[]), true)
        .expect("request");
    assert_eq!(status, FilterHeadersStatus::StopAllIterationAndWatermark);
    assert_eq!(
        h.effects(),
        [Effect::LocalResponse {
            context: ctx,
            response: LocalResponse {
                status: 200,
                details: String::new(),
                body: b"Hello, World!\n".to_vec(),
                headers: vessel_spec_tests::headers(&[("hello", "World")]),
                grpc_status: None,
            }
        }]
    );
}

#[test]
fn malloc_is_preferred_over_proxy_on_memory_allocate() {
    let mut h = Harness::load(Source::Wat("allocator_choice"), config("alloc")).expect("starts");
    h.request_headers(request("/", &[]), true).expect("request");
    for line in [
        "allocator_choice: get_header_map_value=0",
        "allocator_choice: malloc_calls=1",
        "allocator_choice: proxy_on_memory_allocate_calls=0",
    ] {
        assert!(
            h.logs.contains(line),
            "missing `{line}` in {:#?}",
            h.logs.lines()
        );
    }
}

#[test]
fn infinite_loop_module_loads() {
    // Not run: vessel has no CPU limit per callback yet.
    let p = plugin(Source::Wat("infinite_loop"), config("loop")).expect("loads");
    assert_eq!(p.abi_version(), AbiVersion::V0_2_1);
    assert!(p.module().get_export("proxy_on_request_headers").is_some());
}

#[test]
fn sdk_default_root_context_and_noop_filter() {
    // guest_noop has no root context of its own: the SDK's default one.
    let mut h = Harness::load(Source::Guest("noop"), config("noop")).expect("starts");
    let (ctx, status) = h
        .request_headers(request("/", &[]), false)
        .expect("request");
    assert_eq!(status, FilterHeadersStatus::Continue);
    let body = h.vm.on_request_body(ctx, b"data", true).expect("body");
    assert_eq!(body, vessel_host::FilterDataStatus::Continue);
    h.vm.finish_http_stream(ctx).expect("finish");
    assert!(h.logs.lines().is_empty(), "{:#?}", h.logs.lines());
    assert!(h.effects().is_empty());
    assert_eq!(h.vm.context_count(), 1);
    assert!(matches!(h.vm.shutdown(), Ok(true)));
}
