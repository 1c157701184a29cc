//! `proxy_set_effective_context` (ABI reference §4.1, §11.7, §11.8): an
//! unknown id is BAD_ARGUMENT; a known one makes later hostcalls act on
//! that context until the callback returns.

use vessel_host::{
    Effect, FilterHeadersStatus, HostEnv, HttpCallOutcome, HttpCallResponse, MapType, PluginConfig,
    Status, StreamType, Token,
};
use vessel_spec_tests::probe::{Callback, Probe, ProbeResults, RET_PTR, RET_SIZE, c};
use vessel_spec_tests::{Harness, Source, config, headers, request, values};

fn guest() -> Harness {
    let cfg = PluginConfig {
        configuration: b"1000".to_vec(),
        ..config("effective")
    };
    Harness::load(Source::Guest("effective_context"), cfg).expect("starts")
}

#[test]
fn unknown_id_is_bad_argument() {
    let mut h = guest();
    let (ctx, status) = h.request_headers(request("/", &[]), true).expect("request");
    assert_eq!(status, FilterHeadersStatus::Continue);
    assert!(
        h.logs
            .contains("effective_context: set_effective_context(999999)=Err(BadArgument)")
    );
    assert!(h.logs.contains(&format!(
        "effective_context: restore set_effective_context({})=Ok(())",
        ctx.get()
    )));
    // Any live context of the VM is accepted, the root included.
    let root = h.vm.root_context().get();
    h.request_headers(request("/", &[("x-effective-id", &root.to_string())]), true)
        .expect("request");
    assert!(h.logs.contains(&format!(
        "effective_context: set_effective_context({root})=Ok(())"
    )));
    assert!(!h.vm.is_failed(), "the SDK accepts BAD_ARGUMENT here");
}

#[test]
fn tick_resumes_a_paused_stream_through_the_effective_context() {
    let mut h = guest();
    h.effects();
    let (ctx, status) = h
        .request_headers(request("/", &[("x-effective-mode", "tick")]), true)
        .expect("request");
    assert_eq!(status, FilterHeadersStatus::StopAllIterationAndWatermark);
    assert!(h.effects().is_empty());
    h.vm.on_tick().expect("tick");
    assert_eq!(
        h.effects(),
        [Effect::ContinueStream {
            context: ctx,
            stream: StreamType::HttpRequest
        }]
    );
    let req =
        h.vm.headers(ctx, MapType::HttpRequestHeaders)
            .expect("kept");
    assert_eq!(values(req, "x-resumed-by"), ["tick"]);
    assert!(h.logs.contains(&format!(
        "effective_context: tick resumed context_id={}",
        ctx.get()
    )));
}

#[test]
fn the_sdk_switches_to_the_caller_for_a_call_response() {
    let mut h = guest();
    h.effects();
    let (ctx, _) = h
        .request_headers(request("/", &[("x-effective-mode", "callout")]), true)
        .expect("request");
    assert!(matches!(
        &h.effects()[..],
        [Effect::HttpCall { token, .. }] if *token == Token::new(4)
    ));
    let ok = HttpCallResponse {
        headers: headers(&[(":status", "200")]),
        ..HttpCallResponse::default()
    };
    h.vm.on_http_call_response(Token::new(4), HttpCallOutcome::Response(ok))
        .expect("delivered");
    assert_eq!(
        h.effects(),
        [Effect::ContinueStream {
            context: ctx,
            stream: StreamType::HttpRequest
        }]
    );
    let req =
        h.vm.headers(ctx, MapType::HttpRequestHeaders)
            .expect("kept");
    assert_eq!(values(req, "x-effective-context"), [ctx.get().to_string()]);
}

#[test]
fn raw_rules() {
    let mut p = Probe::new();
    let path = p.bytes(b":path");
    let (rp, rs) = (c(RET_PTR), c(RET_SIZE));
    // The stream id is stored at 0x40 by on_request_headers.
    p.on(Callback::RequestHeaders)
        .raw("(i32.store (i32.const 0x40) (local.get $a))")
        .status(
            "req.zero",
            "(call $proxy_set_effective_context (i32.const 0))",
        )
        .status(
            "req.unknown",
            "(call $proxy_set_effective_context (i32.const 12345))",
        )
        .status(
            "req.self",
            "(call $proxy_set_effective_context (local.get $a))",
        )
        .returns(c(1));
    p.on(Callback::Tick)
        // Without an effective context the root has no request headers...
        .status(
            "tick.before",
            format!("(call $proxy_get_header_map_value (i32.const 0) {path} {rp} {rs})"),
        )
        .status(
            "tick.set",
            "(call $proxy_set_effective_context (i32.load (i32.const 0x40)))",
        )
        // ...with it, hostcalls act on the stream.
        .status(
            "tick.after",
            format!("(call $proxy_get_header_map_value (i32.const 0) {path} {rp} {rs})"),
        )
        .returned("tick.after.value")
        .status(
            "tick.continue",
            "(call $proxy_continue_stream (i32.const 0))",
        );
    p.on(Callback::QueueReady)
        // A new callback starts without an effective context.
        .status(
            "next.value",
            format!("(call $proxy_get_header_map_value (i32.const 0) {path} {rp} {rs})"),
        )
        .status(
            "next.deleted",
            "(call $proxy_set_effective_context (i32.load (i32.const 0x40)))",
        );
    let plugin = p.load(config("effective-probe")).expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let (ctx, status) = h
        .request_headers(request("/eff", &[]), false)
        .expect("request");
    assert_eq!(status, FilterHeadersStatus::StopAllIterationAndWatermark);
    h.vm.on_tick().expect("tick");
    assert_eq!(
        h.effects(),
        [Effect::ContinueStream {
            context: ctx,
            stream: StreamType::HttpRequest
        }]
    );
    h.vm.finish_http_stream(ctx).expect("finish");
    h.vm.on_queue_ready(h.vm.root_context(), vessel_host::QueueToken::new(1))
        .expect("queue ready");
    let r = ProbeResults::from_logs(&h.logs);
    let st = |s: Status| Some(s.as_u32());
    assert_eq!(
        r.value("req.zero"),
        st(Status::BadArgument),
        "0 is the VM context"
    );
    assert_eq!(r.value("req.unknown"), st(Status::BadArgument));
    assert_eq!(r.value("req.self"), st(Status::Ok));
    assert_eq!(r.value("tick.before"), st(Status::BadArgument));
    assert_eq!(r.value("tick.set"), st(Status::Ok));
    assert_eq!(r.value("tick.after"), st(Status::Ok));
    assert_eq!(r.bytes("tick.after.value"), Some(&b"/eff"[..]));
    assert_eq!(r.value("tick.continue"), st(Status::Ok));
    assert_eq!(r.value("next.value"), st(Status::BadArgument));
    assert_eq!(
        r.value("next.deleted"),
        st(Status::BadArgument),
        "the stream is gone"
    );
}
