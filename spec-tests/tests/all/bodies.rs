//! Bodies (ABI reference §4.2, §11.2, §11.16, §11.17): buffering with a
//! cumulative size, rewrites through `proxy_set_buffer_bytes` with Envoy's
//! prepend/append rules, and the raw statuses of the buffer hostcalls.

use vessel_host::{BufferType, FilterDataStatus, HostEnv, Status};
use vessel_spec_tests::probe::{
    Callback, OUT, OUT2, Probe, ProbeResults, RET_PTR, RET_SIZE, c, load,
};
use vessel_spec_tests::{Harness, Source, config, headers, request};

const OK: u32 = Status::Ok.as_u32();
const NOT_FOUND: u32 = Status::NotFound.as_u32();
const BAD_ARGUMENT: u32 = Status::BadArgument.as_u32();

fn bodies(mode: &str) -> (Harness, vessel_host::ContextId) {
    let mut h = Harness::load(Source::Guest("bodies"), config("bodies")).expect("starts");
    let (ctx, _) = h
        .request_headers(
            request(
                "/upload",
                &[
                    ("x-body-mode", mode),
                    ("x-resp-body-mode", mode),
                    ("content-length", "6"),
                ],
            ),
            false,
        )
        .expect("request headers");
    (h, ctx)
}

#[test]
fn buffering_returns_the_cumulative_size() {
    let (mut h, ctx) = bodies("buffer");
    let mut statuses = Vec::new();
    for (chunk, eos) in [(&b"ab"[..], false), (b"cd", false), (b"ef", true)] {
        statuses.push(h.vm.on_request_body(ctx, chunk, eos).expect("body"));
    }
    assert_eq!(
        statuses,
        [
            FilterDataStatus::StopIterationAndBuffer,
            FilterDataStatus::StopIterationAndBuffer,
            FilterDataStatus::Continue
        ]
    );
    for line in [
        "request-body chunk size=2 eos=false",
        "request-body chunk size=4 eos=false",
        "request-body chunk size=6 eos=true",
        "request-body buffered size=6 body=abcdef",
    ] {
        assert!(
            h.logs.contains(line),
            "missing `{line}` in {:#?}",
            h.logs.lines()
        );
    }
    assert_eq!(
        h.vm.body(ctx, BufferType::HttpRequestBody),
        Some(&b"abcdef"[..])
    );
}

#[test]
fn rewrites_through_set_buffer_bytes() {
    for (mode, expected) in [
        ("replace", &b"replaced"[..]),
        ("grow", b"abcdefabcdef"),
        ("shrink", b"abc"),
        ("prepend", b"prepended:abcdef"),
        ("append", b"abcdef:appended"),
        ("append-max", b"abcdef:appended"),
        ("clear", b""),
    ] {
        let (mut h, ctx) = bodies(mode);
        assert!(h.logs.contains("request content-length removed"), "{mode}");
        let first = h.vm.on_request_body(ctx, b"abc", false).expect("body 1");
        assert_eq!(first, FilterDataStatus::StopIterationAndBuffer, "{mode}");
        let last = h.vm.on_request_body(ctx, b"def", true).expect("body 2");
        assert_eq!(last, FilterDataStatus::Continue, "{mode}");
        assert!(!h.vm.is_failed(), "{mode}: the SDK accepted every status");
        assert_eq!(
            h.vm.body(ctx, BufferType::HttpRequestBody),
            Some(expected),
            "{mode}"
        );
        let after = format!("request-body after={}", String::from_utf8_lossy(expected));
        assert!(h.logs.contains(&after), "{mode}: {:#?}", h.logs.lines());
        assert_eq!(
            h.vm.take_body(ctx, BufferType::HttpRequestBody).as_deref(),
            Some(expected)
        );
    }
}

#[test]
fn writing_into_the_middle_is_bad_argument_as_in_envoy() {
    let (mut h, ctx) = bodies("middle");
    h.vm.on_request_body(ctx, b"abcdef", true).expect("body");
    assert!(h.logs.contains("request-body middle status=2"));
    assert_eq!(
        h.vm.body(ctx, BufferType::HttpRequestBody),
        Some(&b"abcdef"[..])
    );
}

#[test]
fn response_body_is_rewritten_too() {
    let (mut h, ctx) = bodies("replace");
    h.vm.on_request_body(ctx, b"x", true).expect("request body");
    h.vm.take_body(ctx, BufferType::HttpRequestBody);
    h.vm.on_response_headers(
        ctx,
        headers(&[(":status", "200"), ("content-length", "4")]),
        false,
    )
    .expect("response headers");
    assert!(h.logs.contains("response content-length removed"));
    let s1 = h.vm.on_response_body(ctx, b"up", false).expect("body 1");
    let s2 = h.vm.on_response_body(ctx, b"st", true).expect("body 2");
    assert_eq!(s1, FilterDataStatus::StopIterationAndBuffer);
    assert_eq!(s2, FilterDataStatus::Continue);
    assert!(h.logs.contains("response-body buffered size=4 body=upst"));
    assert_eq!(
        h.vm.body(ctx, BufferType::HttpResponseBody),
        Some(&b"replaced"[..])
    );
}

#[test]
fn passthrough_sees_each_chunk_once_taken() {
    let (mut h, ctx) = bodies("passthrough");
    let s = h.vm.on_request_body(ctx, b"ab", false).expect("body 1");
    assert_eq!(s, FilterDataStatus::Continue);
    // The embedder forwards what was continued...
    assert_eq!(
        h.vm.take_body(ctx, BufferType::HttpRequestBody).as_deref(),
        Some(&b"ab"[..])
    );
    // ...so the next callback sees only the new chunk.
    h.vm.on_request_body(ctx, b"cd", true).expect("body 2");
    assert!(h.logs.contains("request-body chunk size=2 eos=false"));
    assert!(h.logs.contains("request-body chunk data=ab"));
    assert!(h.logs.contains("request-body chunk data=cd"));
}

#[test]
fn buffer_hostcalls_follow_envoy() {
    let mut p = Probe::new();
    let (rp, rs) = (c(RET_PTR), c(RET_SIZE));
    let x = p.bytes(b"X");
    let pre = p.bytes(b"<<");
    let app = p.bytes(b">>");
    p.on(Callback::RequestHeaders)
        .status(
            "headers.get_body",
            format!("(call $proxy_get_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 10) {rp} {rs})"),
        )
        .status(
            "headers.set_body",
            format!("(call $proxy_set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 0) {x})"),
        )
        .status(
            "headers.plugin_config",
            format!("(call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (i32.const -1) {rp} {rs})"),
        )
        .status(
            "headers.vm_config",
            format!("(call $proxy_get_buffer_bytes (i32.const 6) (i32.const 0) (i32.const -1) {rp} {rs})"),
        )
        .returned("headers.vm_config.bytes")
        .status(
            "headers.set_vm_config",
            format!("(call $proxy_set_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 0) {x})"),
        )
        .status(
            "headers.type9",
            format!("(call $proxy_get_buffer_bytes (i32.const 9) (i32.const 0) (i32.const 1) {rp} {rs})"),
        )
        .status(
            "headers.set_type9",
            format!("(call $proxy_set_buffer_bytes (i32.const 9) (i32.const 0) (i32.const 0) {x})"),
        );
    p.on(Callback::RequestBody)
        // Read a slice, read past the end, read from past the end.
        .status(
            "slice",
            format!("(call $proxy_get_buffer_bytes (i32.const 0) (i32.const 1) (i32.const 2) {rp} {rs})"),
        )
        .returned("slice.bytes")
        .status(
            "clamped",
            format!("(call $proxy_get_buffer_bytes (i32.const 0) (i32.const 4) (i32.const 100) {rp} {rs})"),
        )
        .returned("clamped.bytes")
        .raw(format!("(i32.store {rp} (i32.const 99))"))
        .status(
            "past_end",
            format!("(call $proxy_get_buffer_bytes (i32.const 0) (i32.const 50) (i32.const 5) {rp} {rs})"),
        )
        .value("past_end.ptr", load(RET_PTR))
        .value("past_end.size", load(RET_SIZE))
        .status(
            "status",
            format!("(call $proxy_get_buffer_status (i32.const 0) {} {})", c(OUT), c(OUT2)),
        )
        .value("status.len", load(OUT))
        .value("status.flags", load(OUT2))
        // Envoy: prepend at 0, append at >= len, nothing in between.
        .status(
            "prepend",
            format!("(call $proxy_set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 0) {pre})"),
        )
        .status(
            "append",
            format!("(call $proxy_set_buffer_bytes (i32.const 0) (i32.const 8) (i32.const 0) {app})"),
        )
        .status(
            "middle",
            format!("(call $proxy_set_buffer_bytes (i32.const 0) (i32.const 3) (i32.const 1) {x})"),
        )
        .status(
            "drain_and_prepend",
            format!("(call $proxy_set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 3) {x})"),
        )
        .status(
            "response_body",
            format!("(call $proxy_get_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 1) {rp} {rs})"),
        )
        .status(
            "call_body",
            format!("(call $proxy_get_buffer_bytes (i32.const 4) (i32.const 0) (i32.const 1) {rp} {rs})"),
        );
    let mut cfg = config("buffers");
    cfg.vm_configuration = b"vm-config".to_vec();
    cfg.configuration = b"plugin-config".to_vec();
    let plugin = p.load(cfg).expect("probe loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let (ctx, _) = h
        .request_headers(request("/", &[]), false)
        .expect("headers");
    h.vm.on_request_body(ctx, b"abcdef", true).expect("body");
    let r = ProbeResults::from_logs(&h.logs);
    assert_eq!(r.value("headers.get_body"), Some(NOT_FOUND), "no body yet");
    assert_eq!(r.value("headers.set_body"), Some(NOT_FOUND), "no body yet");
    assert_eq!(
        r.value("headers.plugin_config"),
        Some(NOT_FOUND),
        "outside on_configure"
    );
    assert_eq!(r.value("headers.vm_config"), Some(OK));
    assert_eq!(r.bytes("headers.vm_config.bytes"), Some(&b"vm-config"[..]));
    assert_eq!(
        r.value("headers.set_vm_config"),
        Some(BAD_ARGUMENT),
        "immutable"
    );
    assert_eq!(r.value("headers.type9"), Some(BAD_ARGUMENT));
    assert_eq!(r.value("headers.set_type9"), Some(BAD_ARGUMENT));

    assert_eq!(r.value("slice"), Some(OK));
    assert_eq!(r.bytes("slice.bytes"), Some(&b"bc"[..]));
    assert_eq!(r.value("clamped"), Some(OK));
    assert_eq!(r.bytes("clamped.bytes"), Some(&b"ef"[..]));
    assert_eq!(r.value("past_end"), Some(OK));
    assert_eq!(r.value("past_end.ptr"), Some(0));
    assert_eq!(r.value("past_end.size"), Some(0));
    assert_eq!(r.value("status"), Some(OK));
    assert_eq!(r.value("status.len"), Some(6));
    assert_eq!(r.value("status.flags"), Some(0));
    assert_eq!(r.value("prepend"), Some(OK));
    assert_eq!(r.value("append"), Some(OK));
    assert_eq!(r.value("middle"), Some(BAD_ARGUMENT));
    assert_eq!(r.value("drain_and_prepend"), Some(OK));
    assert_eq!(r.value("response_body"), Some(NOT_FOUND));
    assert_eq!(r.value("call_body"), Some(NOT_FOUND));
    // "abcdef" -> "<<abcdef" -> "<<abcdef>>" -> drain 3 ("<<a"), prepend "X".
    assert_eq!(
        h.vm.body(ctx, BufferType::HttpRequestBody),
        Some(&b"Xbcdef>>"[..])
    );
}

#[test]
fn plugin_configuration_is_readable_in_on_configure_only() {
    let mut p = Probe::new();
    let (rp, rs) = (c(RET_PTR), c(RET_SIZE));
    for cb in [Callback::VmStart, Callback::Configure] {
        let tag = format!("{cb:?}");
        p.on(cb)
            .status(
                &format!("{tag}.plugin_config"),
                format!("(call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (i32.const -1) {rp} {rs})"),
            )
            .returned(&format!("{tag}.plugin_config.bytes"))
            .status(
                &format!("{tag}.vm_config"),
                format!("(call $proxy_get_buffer_bytes (i32.const 6) (i32.const 0) (i32.const -1) {rp} {rs})"),
            )
            .returned(&format!("{tag}.vm_config.bytes"))
            .value(&format!("{tag}.size_arg"), "(local.get $b)");
    }
    let mut cfg = config("config_buffers");
    cfg.vm_configuration = b"{\"vm\":1}".to_vec();
    cfg.configuration = b"plugin=yes".to_vec();
    let plugin = p.load(cfg).expect("probe loads");
    let h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let r = ProbeResults::from_logs(&h.logs);
    assert_eq!(r.value("VmStart.plugin_config"), Some(NOT_FOUND));
    assert_eq!(r.value("VmStart.vm_config"), Some(OK));
    assert_eq!(r.bytes("VmStart.vm_config.bytes"), Some(&b"{\"vm\":1}"[..]));
    assert_eq!(
        r.value("VmStart.size_arg"),
        Some(8),
        "vm_configuration_size"
    );
    assert_eq!(r.value("Configure.plugin_config"), Some(OK));
    assert_eq!(
        r.bytes("Configure.plugin_config.bytes"),
        Some(&b"plugin=yes"[..])
    );
    assert_eq!(r.value("Configure.vm_config"), Some(OK));
    assert_eq!(
        r.value("Configure.size_arg"),
        Some(10),
        "plugin_configuration_size"
    );
}

#[test]
fn stop_iteration_no_buffer_drops_the_chunk() {
    let mut p = Probe::new();
    p.on(Callback::RequestBody).returns(c(3));
    let plugin = p.load(config("nobuffer")).expect("probe loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let (ctx, _) = h
        .request_headers(request("/", &[]), false)
        .expect("headers");
    let s = h.vm.on_request_body(ctx, b"dropped", false).expect("body");
    assert_eq!(s, FilterDataStatus::StopIterationNoBuffer);
    assert_eq!(h.vm.body(ctx, BufferType::HttpRequestBody), Some(&b""[..]));
}
