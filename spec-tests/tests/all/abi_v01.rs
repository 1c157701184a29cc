//! ABI 0.1.0 (ABI reference §1.2): two-argument header callbacks,
//! `proxy_get_configuration`, OK + empty value for a missing header, and
//! the 0.1.0-only `proxy_continue_request`/`_response` and
//! `proxy_clear_route_cache`.

use vessel_host::{AbiVersion, Effect, HostEnv, MapType, PluginConfig, Status, StreamType};
use vessel_spec_tests::probe::{Callback, Probe, ProbeResults};
use vessel_spec_tests::{Harness, Source, config, headers, plugin, request, value, values};

fn cfg() -> PluginConfig {
    PluginConfig {
        vm_configuration: b"vmcfg".to_vec(),
        configuration: b"plugcfg".to_vec(),
        ..config("v01")
    }
}

#[test]
fn rust_sdk_0_1_guest_runs() {
    let p = plugin(Source::Guest("v01_headers"), cfg()).expect("loads");
    assert_eq!(p.abi_version(), AbiVersion::V0_1_0);
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts (via _start)");
    // Outside on_configure: the VM configuration; inside: the plugin's.
    assert!(h.logs.contains("v01: vm_start size=5 configuration=vmcfg"));
    assert!(
        h.logs
            .contains("v01: configure size=7 configuration=plugcfg")
    );

    let (ctx, _) = h
        .request_headers(request("/v01", &[]), true)
        .expect("request");
    assert!(h.logs.contains("v01: request num_headers=4 path=/v01"));
    // 0.1.0: a missing header is OK with an empty value (ptr 0, size 0),
    // which the 0.1 SDK reads as None; it would panic on NOT_FOUND.
    assert!(
        h.logs.contains("v01: x-missing=None"),
        "{:#?}",
        h.logs.lines()
    );
    assert!(!h.vm.is_failed());
    let req =
        h.vm.headers(ctx, MapType::HttpRequestHeaders)
            .expect("kept");
    assert_eq!(values(req, "x-v01"), ["seen"]);

    h.vm.on_response_headers(ctx, headers(&[(":status", "200")]), true)
        .expect("response");
    assert!(h.logs.contains("v01: response num_headers=1"));
    let resp =
        h.vm.headers(ctx, MapType::HttpResponseHeaders)
            .expect("kept");
    assert_eq!(value(resp, "x-v01-config").as_deref(), Some("plugcfg"));
}

#[test]
fn wat_0_1_0_module() {
    let p = plugin(Source::Wat("abi_v0_1_0"), cfg()).expect("loads");
    assert_eq!(p.abi_version(), AbiVersion::V0_1_0);
    let mut h = Harness::new(&p, HostEnv::builder()).expect("starts");
    assert!(h.logs.contains("abi_v0_1_0: get_configuration=0"));
    assert!(h.logs.contains("abi_v0_1_0: configuration=plugcfg"));
    let (ctx, _) = h.request_headers(request("/", &[]), true).expect("request");
    assert!(
        h.logs
            .contains("abi_v0_1_0: on_request_headers num_headers=4")
    );
    assert!(
        h.logs
            .contains("abi_v0_1_0: get_header_map_value.missing=0")
    );
    assert!(
        h.logs
            .contains("abi_v0_1_0: get_header_map_value.missing_size=0")
    );
    h.vm.on_response_headers(ctx, headers(&[(":status", "200"), ("a", "b")]), false)
        .expect("response");
    assert!(
        h.logs
            .contains("abi_v0_1_0: on_response_headers num_headers=2")
    );
}

#[test]
fn continue_request_response_and_clear_route_cache() {
    let mut p = Probe::new();
    p.abi(AbiVersion::V0_1_0);
    p.on(Callback::RequestHeaders)
        .value("headers.argc_ctx", "(local.get $a)")
        .value("headers.num", "(local.get $b)")
        .status("clear_route_cache", "(call $proxy_clear_route_cache)");
    p.on(Callback::RequestBody)
        .status("continue_request", "(call $proxy_continue_request)")
        .returns("(i32.const 1)");
    p.on(Callback::ResponseBody)
        .status("continue_response", "(call $proxy_continue_response)")
        .returns("(i32.const 1)");
    p.on(Callback::Configure)
        .status(
            "get_configuration",
            "(call $proxy_get_configuration (i32.const 0x10) (i32.const 0x14))",
        )
        .returned("configuration");
    let plugin = p.load(cfg()).expect("loads");
    assert_eq!(plugin.abi_version(), AbiVersion::V0_1_0);
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let (ctx, _) = h
        .request_headers(request("/", &[]), false)
        .expect("request");
    assert_eq!(h.effects(), [Effect::ClearRouteCache { context: ctx }]);
    h.vm.on_request_body(ctx, b"b", true).expect("body");
    assert_eq!(
        h.effects(),
        [Effect::ContinueStream {
            context: ctx,
            stream: StreamType::HttpRequest
        }]
    );
    h.vm.on_response_headers(ctx, headers(&[(":status", "200")]), false)
        .expect("response headers");
    h.vm.on_response_body(ctx, b"r", true)
        .expect("response body");
    assert_eq!(
        h.effects(),
        [Effect::ContinueStream {
            context: ctx,
            stream: StreamType::HttpResponse
        }]
    );
    let r = ProbeResults::from_logs(&h.logs);
    let ok = Some(Status::Ok.as_u32());
    assert_eq!(r.value("headers.argc_ctx"), Some(ctx.get()));
    assert_eq!(r.value("headers.num"), Some(4));
    assert_eq!(r.value("clear_route_cache"), ok);
    assert_eq!(r.value("continue_request"), ok);
    assert_eq!(r.value("continue_response"), ok);
    assert_eq!(r.value("get_configuration"), ok);
    assert_eq!(r.bytes("configuration"), Some(&b"plugcfg"[..]));
}
