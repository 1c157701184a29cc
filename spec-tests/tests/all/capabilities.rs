//! Capability restriction (ABI reference §6.5): Envoy's
//! `capability_restriction_config.allowed_capabilities` as
//! `PluginConfig::allowed_capabilities`. A hostcall that is not allowed is
//! a stub (INTERNAL_FAILURE for `proxy_*`, `ENOTCAPABLE` for WASI, a trap
//! for `proc_exit`), a callback that is not allowed is never called, and
//! the default allows everything.

use vessel_host::hostcalls::capabilities::WASI_ENOTCAPABLE;
use vessel_host::hostcalls::import_table;
use vessel_host::{Effect, FilterHeadersStatus, HostEnv, Plugin, PluginConfig, Status, TrapKind};
use vessel_spec_tests::probe::{Callback, OUT, OUT2, Probe, ProbeResults, c};
use vessel_spec_tests::{Harness, Source, config, plugin, request};

/// Every import name vessel provides, every callback, minus `denied`.
fn all_but(denied: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = import_table().iter().map(|s| s.name.to_owned()).collect();
    names.extend(Callback::ALL.iter().map(|cb| cb.export().to_owned()));
    names.retain(|n| !denied.contains(&n.as_str()));
    names.sort();
    names.dedup();
    names
}

/// A probe that calls a few hostcalls and WASI functions in request headers
/// and reports their statuses, and marks response headers.
fn probe() -> Probe {
    let mut p = Probe::new();
    let key = p.bytes(b"k");
    let val = p.bytes(b"v");
    p.on(Callback::RequestHeaders)
        .status(
            "proxy_get_current_time_nanoseconds",
            format!("(call $proxy_get_current_time_nanoseconds {})", c(OUT)),
        )
        .status(
            "proxy_set_shared_data",
            format!("(call $proxy_set_shared_data {key} {val} (i32.const 0))"),
        )
        .status(
            "environ_sizes_get",
            format!("(call $environ_sizes_get {} {})", c(OUT), c(OUT2)),
        )
        .status(
            "clock_time_get",
            format!(
                "(call $clock_time_get (i32.const 0) (i64.const 0) {})",
                c(OUT)
            ),
        )
        .status(
            "wasi_unstable.environ_sizes_get",
            format!(
                "(call $wasi_unstable.environ_sizes_get {} {})",
                c(OUT),
                c(OUT2)
            ),
        );
    p.on(Callback::ResponseHeaders)
        .value("response_headers_ran", "(i32.const 1)");
    p.import_wasi_unstable();
    p
}

fn run(allowed: Option<Vec<String>>) -> (Harness, ProbeResults) {
    let plugin = probe()
        .load(PluginConfig {
            allowed_capabilities: allowed,
            ..config("caps")
        })
        .expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let (ctx, _) = h.request_headers(request("/", &[]), true).expect("runs");
    h.vm.on_response_headers(ctx, vessel_spec_tests::headers(&[(":status", "200")]), true)
        .expect("runs");
    let r = ProbeResults::from_logs(&h.logs);
    (h, r)
}

#[test]
fn by_default_everything_is_allowed() {
    for allowed in [None, Some(Vec::new())] {
        let empty = allowed.is_some();
        let (h, r) = run(allowed);
        assert_eq!(
            r.value("proxy_get_current_time_nanoseconds"),
            Some(0),
            "{empty}"
        );
        assert_eq!(r.value("proxy_set_shared_data"), Some(0));
        assert_eq!(r.value("environ_sizes_get"), Some(0));
        assert_eq!(r.value("clock_time_get"), Some(0));
        assert_eq!(r.value("wasi_unstable.environ_sizes_get"), Some(0));
        assert_eq!(r.value("response_headers_ran"), Some(1));
        assert_eq!(h.vm.denied_capability_calls(), 0);
        assert_eq!(
            h.env.shared_data().get("", b"k").map(|v| v.0),
            Ok(b"v".to_vec())
        );
    }
}

#[test]
fn denied_hostcalls_get_envoys_stub_answers_and_change_nothing() {
    let allowed = all_but(&[
        "proxy_get_current_time_nanoseconds",
        "proxy_set_shared_data",
        "environ_sizes_get",
        "proxy_on_response_headers",
    ]);
    let (h, r) = run(Some(allowed));
    let internal = Status::InternalFailure.as_u32();
    assert_eq!(
        r.value("proxy_get_current_time_nanoseconds"),
        Some(internal)
    );
    assert_eq!(r.value("proxy_set_shared_data"), Some(internal));
    assert_eq!(r.value("environ_sizes_get"), Some(WASI_ENOTCAPABLE as u32));
    // The name covers both WASI modules.
    assert_eq!(
        r.value("wasi_unstable.environ_sizes_get"),
        Some(WASI_ENOTCAPABLE as u32)
    );
    // Allowed ones still work.
    assert_eq!(r.value("clock_time_get"), Some(0));
    // A callback that is not allowed is never called.
    assert_eq!(r.value("response_headers_ran"), None);
    assert_eq!(h.vm.denied_capability_calls(), 4);
    assert!(
        h.env.shared_data().keys("").is_empty(),
        "the stub stored nothing"
    );
    assert!(!h.vm.is_failed());
}

#[test]
fn a_denied_proc_exit_traps() {
    let mut p = Probe::new();
    p.on(Callback::RequestHeaders)
        .raw("(call $proc_exit (i32.const 0))");
    let plugin = p
        .load(PluginConfig {
            allowed_capabilities: Some(all_but(&["proc_exit"])),
            ..config("exit")
        })
        .expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let err = h
        .request_headers(request("/", &[]), true)
        .expect_err("traps");
    let trap = err.trap().expect("a trap");
    assert!(
        matches!(&trap.kind, TrapKind::Host(e) if {
            let cause = e.get().root_cause().to_string();
            cause.contains("restricted WASI capability") && cause.contains("proc_exit")
        }),
        "{err}"
    );
}

#[test]
fn with_config_relinks_for_other_capabilities() {
    let base = probe().load(config("caps")).expect("loads");
    let restricted = base.with_config(PluginConfig {
        allowed_capabilities: Some(all_but(&["proxy_get_current_time_nanoseconds"])),
        ..config("caps")
    });
    let open_again = restricted.with_config(config("caps"));
    let status = |p: &Plugin| {
        let mut h = Harness::new(p, HostEnv::builder()).expect("starts");
        h.request_headers(request("/", &[]), true).expect("runs");
        ProbeResults::from_logs(&h.logs).value("proxy_get_current_time_nanoseconds")
    };
    assert_eq!(status(&base), Some(0));
    assert_eq!(status(&restricted), Some(Status::InternalFailure.as_u32()));
    assert_eq!(status(&open_again), Some(0));
}

/// A real Rust SDK filter: `dispatch_http_call` accepts INTERNAL_FAILURE
/// (an `Err`), so a filter denied `proxy_http_call` carries on without the
/// callout.
#[test]
fn a_rust_filter_denied_http_call_carries_on() {
    let run = |allowed: Option<Vec<String>>| {
        let p = plugin(
            Source::Guest("limits"),
            PluginConfig {
                allowed_capabilities: allowed,
                ..config("limits")
            },
        )
        .expect("loads");
        let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
        let headers = request(
            "/",
            &[
                ("x-limits-op", "env:X"),
                ("x-limits-in", "http_call_response"),
            ],
        );
        let (_, status) = h.request_headers(headers, true).expect("no trap");
        let calls = h
            .effects()
            .iter()
            .filter(|e| matches!(e, Effect::HttpCall { .. }))
            .count();
        (status, calls, h.vm.denied_capability_calls())
    };
    assert_eq!(
        run(None),
        (FilterHeadersStatus::StopAllIterationAndWatermark, 1, 0)
    );
    assert_eq!(
        run(Some(all_but(&["proxy_http_call"]))),
        (FilterHeadersStatus::Continue, 0, 1)
    );
}

/// The Rust SDK panics on INTERNAL_FAILURE from `proxy_log`: a Rust filter
/// denied logging traps on its first log line, as it does in Envoy.
#[test]
fn a_rust_filter_denied_proxy_log_traps_on_its_first_line() {
    let p = plugin(
        Source::Guest("limits"),
        PluginConfig {
            allowed_capabilities: Some(all_but(&["proxy_log"])),
            ..config("limits")
        },
    )
    .expect("loads");
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    let err = h
        .request_headers(request("/", &[("x-limits-op", "env:X")]), true)
        .expect_err("the SDK panics on the status");
    assert_eq!(
        err.trap().map(|t| t.callback),
        Some("proxy_on_request_headers")
    );
    assert!(h.vm.denied_capability_calls() >= 1);
    let lines = h.logs.lines();
    assert!(
        !lines.iter().any(|l| l.starts_with("limits:")),
        "proxy_log passed nothing: {lines:?}"
    );
    // The SDK's panic hook could not log either; Rust's runtime then wrote
    // the double panic to stderr (WASI `fd_write`, still allowed).
    assert!(
        lines
            .iter()
            .any(|l| l.contains("proxy-wasm") && l.ends_with("hostcalls.rs")),
        "{lines:?}"
    );
}
