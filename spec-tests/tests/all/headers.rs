//! Header, trailer and metadata maps (ABI reference §4.3, §5.1, §11.4,
//! §11.5, §11.18): every map hostcall through the Rust SDK guest
//! `guest_headers`, and raw statuses through probe modules.

use vessel_host::{
    FilterHeadersStatus, HeaderMap, HostEnv, HttpCallOutcome, HttpCallResponse, MapType, Status,
    Token, TrapKind,
};
use vessel_spec_tests::probe::{
    BAD_PTR, Callback, OUT, Probe, ProbeResults, RET_PTR, RET_SIZE, c, load,
};
use vessel_spec_tests::{Harness, Source, config, headers, request, value, values};

const OK: u32 = Status::Ok.as_u32();
const NOT_FOUND: u32 = Status::NotFound.as_u32();
const BAD_ARGUMENT: u32 = Status::BadArgument.as_u32();

fn headers_guest() -> Harness {
    Harness::load(Source::Guest("headers"), config("headers")).expect("guest_headers starts")
}

#[test]
fn guest_reads_values_pairs_and_size() {
    let mut h = headers_guest();
    let req = request("/p?q=1", &[("cookie", "c1"), ("cookie", "c2")]);
    let expected_size = req.byte_size();
    let (_, status) = h.request_headers(req, true).expect("request headers");
    assert_eq!(status, FilterHeadersStatus::Continue);
    let logs = h.logs.lines();
    for line in [
        "request-headers num_headers=6 end_of_stream=true",
        "path=/p?q=1",
        "method=GET",
        // 0.2.x: a missing key is NOT_FOUND, which the SDK maps to None.
        "x-missing=None",
        // get_header_map_value returns the first of several values.
        "request cookie first=Some(\"c1\")",
        "request-header :authority=example.com",
        "request-header cookie=c2",
        "request-header count=6",
    ] {
        assert!(
            logs.iter().any(|l| l == line),
            "missing `{line}` in {logs:#?}"
        );
    }
    // Envoy's byteSize(): key + value bytes, not the serialized size.
    assert!(h.logs.contains(&format!(
        "request-header-map-size status=0 size={expected_size}"
    )));
}

#[test]
fn guest_edits_request_headers_with_every_op() {
    let mut h = headers_guest();
    let req = request(
        "/",
        &[
            (
                "x-op",
                "add,add-existing,replace,replace-new,remove,set-pairs",
            ),
            ("x-existing", "first"),
            ("x-replace", "old"),
            ("x-replace", "older"),
            ("x-remove", "gone"),
            ("x-drop", "dropped by set-pairs"),
        ],
    );
    let (ctx, status) = h.request_headers(req, false).expect("request headers");
    assert_eq!(status, FilterHeadersStatus::Continue);
    let map =
        h.vm.headers(ctx, MapType::HttpRequestHeaders)
            .expect("request headers kept");
    assert_eq!(values(map, "x-added"), ["added"]);
    assert_eq!(values(map, "x-existing"), ["first", "second"]);
    // replace = Envoy setCopy: every earlier value goes.
    assert_eq!(values(map, "x-replace"), ["replaced"]);
    assert_eq!(values(map, "x-replace-new"), ["created"]);
    assert!(values(map, "x-remove").is_empty());
    assert!(values(map, "x-drop").is_empty());
    assert_eq!(values(map, "x-set-pairs"), ["yes"]);
    assert_eq!(value(map, ":path").as_deref(), Some("/"));
    for line in [
        "request after add x-added=Some(\"added\")",
        "request after add-existing x-existing values=first|second",
        "request after replace x-replace=Some(\"replaced\")",
        "request after replace-new x-replace-new=Some(\"created\")",
        "request after remove x-remove=None",
        "request after set-pairs x-set-pairs=Some(\"yes\")",
        "request after set-pairs x-drop=None",
    ] {
        assert!(
            h.logs.contains(line),
            "missing `{line}` in {:#?}",
            h.logs.lines()
        );
    }
    let size_after = map.byte_size();
    assert!(h.logs.contains(&format!(
        "request-header-map-size-after status=0 size={size_after}"
    )));
}

#[test]
fn guest_edits_response_headers_and_adds_a_trailer() {
    let mut h = headers_guest();
    let (ctx, _) = h
        .request_headers(
            request("/", &[("x-resp-op", "add,remove,add-trailer")]),
            true,
        )
        .expect("request headers");
    let resp = headers(&[(":status", "200"), ("x-resp-remove", "bye")]);
    let status =
        h.vm.on_response_headers(ctx, resp, false)
            .expect("response headers");
    assert_eq!(status, FilterHeadersStatus::Continue);
    let map =
        h.vm.headers(ctx, MapType::HttpResponseHeaders)
            .expect("kept");
    assert_eq!(values(map, "x-resp-added"), ["added"]);
    assert!(values(map, "x-resp-remove").is_empty());
    assert!(h.logs.contains("status=200"));

    let trailers = headers(&[("grpc-status", "0")]);
    h.vm.on_response_trailers(ctx, trailers)
        .expect("response trailers");
    let trailers =
        h.vm.headers(ctx, MapType::HttpResponseTrailers)
            .expect("kept");
    assert_eq!(values(trailers, "x-trailer-added"), ["yes"]);
    assert_eq!(values(trailers, "grpc-status"), ["0"]);
    assert!(h.logs.contains("response-trailer grpc-status=0"));
    assert!(
        h.logs
            .contains("response after add-trailer x-trailer-added=Some(\"yes\")")
    );
}

#[test]
fn multi_value_set_cookie_is_seen_in_pairs_first_value_by_get() {
    let mut h = headers_guest();
    let (ctx, _) = h.request_headers(request("/", &[]), true).expect("request");
    let resp = headers(&[
        (":status", "200"),
        ("set-cookie", "a=1; Path=/"),
        ("Set-Cookie", "b=2"),
    ]);
    h.vm.on_response_headers(ctx, resp, true)
        .expect("response headers");
    for line in [
        "set-cookie=a=1; Path=/",
        "set-cookie=b=2",
        "set-cookie count=2",
        "set-cookie first=Some(\"a=1; Path=/\")",
    ] {
        assert!(
            h.logs.contains(line),
            "missing `{line}` in {:#?}",
            h.logs.lines()
        );
    }
}

#[test]
fn non_utf8_values_survive_a_guest_round_trip() {
    let mut h = headers_guest();
    let binary: &[u8] = &[0xff, 0xfe, b'a', 0x80, 0x00, b'z'];
    let mut req = request("/", &[("x-op", "set-pairs")]);
    req.append(b"x-bin", binary);
    let (ctx, _) = h.request_headers(req, true).expect("request");
    // set-pairs read every pair as bytes and wrote them all back.
    let map =
        h.vm.headers(ctx, MapType::HttpRequestHeaders)
            .expect("kept");
    assert_eq!(map.get(b"x-bin"), Some(binary));
    assert_eq!(values(map, "x-set-pairs"), ["yes"]);
}

#[test]
fn missing_key_is_not_found_in_0_2_and_ok_empty_in_0_1() {
    for (abi, expected) in [
        (vessel_host::AbiVersion::V0_2_1, NOT_FOUND),
        (vessel_host::AbiVersion::V0_2_0, NOT_FOUND),
        (vessel_host::AbiVersion::V0_1_0, OK),
    ] {
        let mut p = Probe::new();
        p.abi(abi);
        let key = p.bytes(b"x-missing");
        p.on(Callback::RequestHeaders)
            .raw(format!("(i32.store {} (i32.const 77))", c(RET_SIZE)))
            .status(
                "missing",
                format!(
                    "(call $proxy_get_header_map_value (i32.const 0) {key} {} {})",
                    c(RET_PTR),
                    c(RET_SIZE)
                ),
            )
            .value("missing.size", load(RET_SIZE));
        let plugin = p.load(config("missing")).expect("probe loads");
        let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
        h.request_headers(request("/", &[]), true).expect("request");
        let r = ProbeResults::from_logs(&h.logs);
        assert_eq!(r.value("missing"), Some(expected), "{abi:?}");
        if expected == OK {
            assert_eq!(r.value("missing.size"), Some(0), "{abi:?}: empty value");
        }
    }
}

#[test]
fn abi_0_2_0_wat_sees_not_found() {
    let mut h = Harness::load(Source::Wat("abi_v0_2_0"), config("abi_v0_2_0")).expect("starts");
    h.request_headers(request("/", &[]), false)
        .expect("request");
    assert!(
        h.logs
            .contains("abi_v0_2_0: get_header_map_value.missing=1")
    );
    assert!(
        h.logs
            .contains("abi_v0_2_0: on_request_headers num_headers=4 end_of_stream=0")
    );
}

/// Every map hostcall on `map`, reported under `<tag>.<op>`.
fn all_map_ops(p: &mut Probe, cb: Callback, map: u32, tag: &str) {
    let key = p.bytes(b":path");
    let val = p.bytes(b"v");
    let pairs = p.bytes(&vessel_abi::pairs::encode([(&b"k"[..], &b"v"[..])]));
    let m = c(map);
    let (rp, rs) = (c(RET_PTR), c(RET_SIZE));
    p.on(cb)
        .raw(format!("(i32.store {rp} (i32.const 99))"))
        .raw(format!("(i32.store {rs} (i32.const 99))"))
        .status(
            &format!("{tag}.get_value"),
            format!("(call $proxy_get_header_map_value {m} {key} {rp} {rs})"),
        )
        .status(
            &format!("{tag}.get_pairs"),
            format!("(call $proxy_get_header_map_pairs {m} {rp} {rs})"),
        )
        .value(&format!("{tag}.get_pairs.ptr"), load(RET_PTR))
        .value(&format!("{tag}.get_pairs.size"), load(RET_SIZE))
        .status(
            &format!("{tag}.get_size"),
            format!("(call $proxy_get_header_map_size {m} {})", c(OUT)),
        )
        .status(
            &format!("{tag}.add"),
            format!("(call $proxy_add_header_map_value {m} {key} {val})"),
        )
        .status(
            &format!("{tag}.replace"),
            format!("(call $proxy_replace_header_map_value {m} {key} {val})"),
        )
        .status(
            &format!("{tag}.remove"),
            format!("(call $proxy_remove_header_map_value {m} {key})"),
        )
        .status(
            &format!("{tag}.set_pairs"),
            format!("(call $proxy_set_header_map_pairs {m} {pairs})"),
        );
}

#[test]
fn request_headers_are_unavailable_after_continue() {
    let mut p = Probe::new();
    all_map_ops(&mut p, Callback::RequestBody, 0, "body");
    all_map_ops(&mut p, Callback::ResponseHeaders, 0, "resp");
    let plugin = p.load(config("sealed")).expect("probe loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let req = request("/sealed", &[]);
    let (ctx, status) = h.request_headers(req.clone(), false).expect("request");
    assert_eq!(status, FilterHeadersStatus::Continue);
    h.vm.on_request_body(ctx, b"data", true).expect("body");
    h.vm.on_response_headers(ctx, headers(&[(":status", "200")]), true)
        .expect("response headers");
    let r = ProbeResults::from_logs(&h.logs);
    for tag in ["body", "resp"] {
        for op in [
            "get_value",
            "get_size",
            "add",
            "replace",
            "remove",
            "set_pairs",
        ] {
            assert_eq!(
                r.value(&format!("{tag}.{op}")),
                Some(BAD_ARGUMENT),
                "{tag}.{op} after Continue (Envoy: BAD_ARGUMENT)"
            );
        }
        // get_pairs on an unavailable map: OK with (0, 0), as Envoy.
        assert_eq!(r.value(&format!("{tag}.get_pairs")), Some(OK));
        assert_eq!(r.value(&format!("{tag}.get_pairs.ptr")), Some(0));
        assert_eq!(r.value(&format!("{tag}.get_pairs.size")), Some(0));
    }
    // The guest could not change them; the embedder still has them.
    assert_eq!(h.vm.headers(ctx, MapType::HttpRequestHeaders), Some(&req));
}

#[test]
fn rust_sdk_traps_on_bad_argument_from_a_sealed_map() {
    // guest_http_call adds a request header when its call succeeds. If the
    // request already continued past its headers, Envoy answers that with
    // BAD_ARGUMENT and the Rust SDK panics ("unexpected status: 2").
    let mut h = Harness::load(Source::Guest("http_call"), config("http_call")).expect("starts");
    let (ctx, status) = h.request_headers(request("/", &[]), true).expect("request");
    assert_eq!(status, FilterHeadersStatus::StopAllIterationAndWatermark);
    h.vm.seal(ctx, MapType::HttpRequestHeaders).expect("seal");
    let ok = HttpCallResponse {
        headers: headers(&[(":status", "200"), ("x-auth-user", "alice")]),
        ..HttpCallResponse::default()
    };
    let err =
        h.vm.on_http_call_response(Token::new(4), HttpCallOutcome::Response(ok))
            .expect_err("the SDK panics");
    let trap = err.trap().expect("a trap");
    assert_eq!(trap.callback, "proxy_on_http_call_response");
    assert_eq!(trap.plugin, "http_call");
    assert!(matches!(trap.kind, TrapKind::Wasm(_)), "{trap:?}");
    assert!(
        h.logs
            .lines()
            .iter()
            .any(|l| l.contains("unexpected status: 2")),
        "{:#?}",
        h.logs.lines()
    );
    assert!(h.vm.is_failed());
}

#[test]
fn empty_map_is_ok_with_null_pointer_and_no_allocation() {
    let mut p = Probe::new();
    p.on(Callback::RequestTrailers)
        .raw(format!("(i32.store {} (i32.const 99))", c(RET_PTR)))
        .raw(format!("(i32.store {} (i32.const 99))", c(RET_SIZE)))
        .value("allocs.before", "(global.get $allocs)")
        .status(
            "pairs",
            format!(
                "(call $proxy_get_header_map_pairs (i32.const 1) {} {})",
                c(RET_PTR),
                c(RET_SIZE)
            ),
        )
        .value("pairs.ptr", load(RET_PTR))
        .value("pairs.size", load(RET_SIZE))
        .value("allocs.after", "(global.get $allocs)")
        .status(
            "size",
            format!("(call $proxy_get_header_map_size (i32.const 1) {})", c(OUT)),
        )
        .value("size.value", load(OUT));
    let plugin = p.load(config("empty")).expect("probe loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let (ctx, _) = h
        .request_headers(request("/", &[]), false)
        .expect("request");
    h.vm.on_request_trailers(ctx, HeaderMap::new())
        .expect("trailers");
    let r = ProbeResults::from_logs(&h.logs);
    assert_eq!(r.value("pairs"), Some(OK));
    assert_eq!(r.value("pairs.ptr"), Some(0));
    assert_eq!(r.value("pairs.size"), Some(0));
    assert_eq!(r.value("allocs.before"), r.value("allocs.after"));
    assert_eq!(r.value("size"), Some(OK));
    assert_eq!(r.value("size.value"), Some(0));
}

#[test]
fn pairs_are_serialized_exactly_and_allocated_at_their_size() {
    let mut p = Probe::new();
    p.on(Callback::RequestHeaders)
        .status(
            "pairs",
            format!(
                "(call $proxy_get_header_map_pairs (i32.const 0) {} {})",
                c(RET_PTR),
                c(RET_SIZE)
            ),
        )
        .value("pairs.size", load(RET_SIZE))
        .value("pairs.alloc", "(global.get $last_size)")
        .returned("pairs.bytes");
    let plugin = p.load(config("pairs")).expect("probe loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let req = headers(&[(":path", "/x"), ("A", "1"), ("b", "22")]);
    h.request_headers(req.clone(), true).expect("request");
    let r = ProbeResults::from_logs(&h.logs);
    let expected =
        vessel_abi::pairs::encode([(&b":path"[..], &b"/x"[..]), (b"a", b"1"), (b"b", b"22")]);
    assert_eq!(r.value("pairs"), Some(OK));
    assert_eq!(r.bytes("pairs.bytes"), Some(expected.as_slice()));
    let len = u32::try_from(expected.len()).expect("small");
    assert_eq!(r.value("pairs.size"), Some(len));
    // §5.3: the guest allocator is asked for exactly the blob size.
    assert_eq!(r.value("pairs.alloc"), Some(len));
}

#[test]
fn keys_are_lower_cased_and_values_kept_verbatim() {
    let mut p = Probe::new();
    let key = p.bytes(b"X-Mixed-Case");
    let val = p.bytes(b"Value With Spaces");
    let lookup = p.bytes(b"x-mixed-case");
    p.on(Callback::RequestHeaders)
        .status(
            "add",
            format!("(call $proxy_add_header_map_value (i32.const 0) {key} {val})"),
        )
        .status(
            "get",
            format!(
                "(call $proxy_get_header_map_value (i32.const 0) {lookup} {} {})",
                c(RET_PTR),
                c(RET_SIZE)
            ),
        )
        .returned("get.value");
    let plugin = p.load(config("case")).expect("probe loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let (ctx, _) = h.request_headers(request("/", &[]), true).expect("request");
    let r = ProbeResults::from_logs(&h.logs);
    assert_eq!(r.value("add"), Some(OK));
    assert_eq!(r.value("get"), Some(OK));
    assert_eq!(r.bytes("get.value"), Some(&b"Value With Spaces"[..]));
    let map =
        h.vm.headers(ctx, MapType::HttpRequestHeaders)
            .expect("kept");
    let keys: Vec<&[u8]> = map.iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&&b"x-mixed-case"[..]), "{map:?}");
}

#[test]
fn trailers_can_be_created_only_at_end_of_stream() {
    let mut p = Probe::new();
    let key = p.bytes(b"x-new-trailer");
    let val = p.bytes(b"t");
    p.on(Callback::ResponseBody).status(
        "add_trailer",
        format!("(call $proxy_add_header_map_value (i32.const 3) {key} {val})"),
    );
    let plugin = p.load(config("trailers")).expect("probe loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let (ctx, _) = h.request_headers(request("/", &[]), true).expect("request");
    h.vm.on_response_headers(ctx, headers(&[(":status", "200")]), false)
        .expect("response headers");
    h.vm.on_response_body(ctx, b"part", false).expect("body 1");
    h.vm.on_response_body(ctx, b"end", true).expect("body 2");
    let r = ProbeResults::from_logs(&h.logs);
    assert_eq!(r.values("add_trailer"), [BAD_ARGUMENT, OK]);
    let trailers =
        h.vm.headers(ctx, MapType::HttpResponseTrailers)
            .expect("created");
    assert_eq!(values(trailers, "x-new-trailer"), ["t"]);
}

#[test]
fn callout_maps_outside_their_callback_and_bad_map_types() {
    let mut p = Probe::new();
    let key = p.bytes(b":status");
    let path = p.bytes(b":path");
    let (rp, rs) = (c(RET_PTR), c(RET_SIZE));
    p.on(Callback::RequestHeaders)
        .status(
            "call_headers.get_value",
            format!("(call $proxy_get_header_map_value (i32.const 6) {key} {rp} {rs})"),
        )
        .status(
            "call_headers.get_pairs",
            format!("(call $proxy_get_header_map_pairs (i32.const 6) {rp} {rs})"),
        )
        .value("call_headers.get_pairs.size", load(RET_SIZE))
        .status(
            "call_headers.add",
            format!("(call $proxy_add_header_map_value (i32.const 6) {key} {key})"),
        )
        .status(
            "map8.get_pairs",
            format!("(call $proxy_get_header_map_pairs (i32.const 8) {rp} {rs})"),
        )
        .status(
            "map8.get_value",
            format!("(call $proxy_get_header_map_value (i32.const 8) {key} {rp} {rs})"),
        )
        .status(
            "bad_ptr.get_value",
            format!(
                "(call $proxy_get_header_map_value (i32.const 0) {path} {} {rs})",
                c(BAD_PTR)
            ),
        );
    let plugin = p.load(config("callout_maps")).expect("probe loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    h.request_headers(request("/", &[]), true).expect("request");
    let r = ProbeResults::from_logs(&h.logs);
    assert_eq!(r.value("call_headers.get_value"), Some(BAD_ARGUMENT));
    assert_eq!(r.value("call_headers.get_pairs"), Some(OK));
    assert_eq!(r.value("call_headers.get_pairs.size"), Some(0));
    assert_eq!(r.value("call_headers.add"), Some(BAD_ARGUMENT));
    assert_eq!(r.value("map8.get_pairs"), Some(BAD_ARGUMENT));
    assert_eq!(r.value("map8.get_value"), Some(BAD_ARGUMENT));
    assert_eq!(
        r.value("bad_ptr.get_value"),
        Some(Status::InvalidMemoryAccess.as_u32())
    );
}

/// `Vm::on_request_headers_from` / `on_response_headers_from`: the VM
/// copies the embedder's map into the stream's own, so the embedder's map
/// is untouched, the guest's edits are in `Vm::headers`, and the stream
/// maps a VM keeps for its next stream never show an earlier stream's
/// headers, whether the earlier map was small (kept and reused) or large
/// (freed: past the 16 KiB a VM keeps).
#[test]
fn lent_headers_are_copied_and_never_leak_into_the_next_stream() {
    let mut h = Harness::load(Source::Guest("bench_headers"), config("bench_headers"))
        .expect("guest_bench_headers starts");
    let big_value = "v".repeat(64 * 1024);
    for (i, extra) in [("x-a", "1"), ("x-big", big_value.as_str()), ("x-c", "3")]
        .into_iter()
        .enumerate()
    {
        let req = request("/", &[("x-bench", "1"), extra]);
        let before = req.clone();
        let resp = headers(&[(":status", "200")]);
        let ctx = h.vm.create_http_context().expect("context");
        let status =
            h.vm.on_request_headers_from(ctx, &req, true)
                .expect("request headers");
        assert_eq!(status, FilterHeadersStatus::Continue);
        assert_eq!(req, before, "stream {i}: the lent map is not changed");
        let seen =
            h.vm.headers(ctx, MapType::HttpRequestHeaders)
                .expect("the VM holds the request headers");
        assert_eq!(seen.get(b"x-bench-seen"), Some(&b"1"[..]), "stream {i}");
        assert_eq!(seen.get(extra.0.as_bytes()), Some(extra.1.as_bytes()));
        assert_eq!(seen.len(), req.len() + 1, "stream {i}: {seen:?}");
        for (other, _) in [("x-a", ()), ("x-big", ()), ("x-c", ())] {
            if other != extra.0 {
                assert_eq!(seen.get(other.as_bytes()), None, "stream {i}: {other}");
            }
        }
        h.vm.on_response_headers_from(ctx, &resp, true)
            .expect("response headers");
        let seen =
            h.vm.headers(ctx, MapType::HttpResponseHeaders)
                .expect("the VM holds the response headers");
        assert_eq!(seen.len(), 2, "stream {i}: {seen:?}");
        assert_eq!(seen.get(b"x-bench-response"), Some(&b"1"[..]));
        h.vm.finish_http_stream(ctx).expect("finish");
    }
    assert_eq!(h.vm.context_count(), 1, "only the root context is left");
}
