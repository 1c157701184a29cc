//! Stream control (ABI reference §4.4, §11.1, §11.4): the translation of
//! callback return codes, `proxy_continue_stream` and `proxy_close_stream`.

use vessel_host::{
    Effect, FilterDataStatus, FilterHeadersStatus, FilterTrailersStatus, HostEnv, PluginConfig,
    Status, StreamType,
};
use vessel_spec_tests::probe::{Callback, Probe, ProbeResults, RET_PTR, RET_SIZE, c};
use vessel_spec_tests::{Harness, Source, config, headers, request};

#[test]
fn callback_results_are_translated_as_envoy_does() {
    use FilterDataStatus as D;
    use FilterHeadersStatus as H;
    use FilterTrailersStatus as T;
    let headers_cases = [
        (0, H::Continue),
        (1, H::StopAllIterationAndWatermark),
        (2, H::Continue),
        (3, H::StopAllIterationAndBuffer),
        (4, H::StopAllIterationAndWatermark),
        (5, H::StopAllIterationAndWatermark),
        (77, H::StopAllIterationAndWatermark),
    ];
    let body_cases = [
        (0, D::Continue),
        (1, D::StopIterationAndBuffer),
        (2, D::StopIterationAndWatermark),
        (3, D::StopIterationNoBuffer),
        (4, D::StopIterationNoBuffer),
    ];
    let trailer_cases = [
        (0, T::Continue),
        (1, T::StopIteration),
        (2, T::StopIteration),
    ];
    let mut h = Harness::load(Source::Wat("return_codes"), config("codes")).expect("starts");
    for (i, (code, expected)) in headers_cases.iter().enumerate() {
        let (b, t) = (
            body_cases[i % body_cases.len()],
            trailer_cases[i % trailer_cases.len()],
        );
        let (ctx, status) = h
            .request_headers(
                request(
                    "/",
                    &[
                        ("x-return-request-headers", &code.to_string()),
                        ("x-return-request-body", &b.0.to_string()),
                        ("x-return-request-trailers", &t.0.to_string()),
                        ("x-return-response-headers", &code.to_string()),
                        ("x-return-response-body", &b.0.to_string()),
                        ("x-return-response-trailers", &t.0.to_string()),
                    ],
                ),
                false,
            )
            .expect("request headers");
        assert_eq!(status, *expected, "request headers returning {code}");
        assert!(
            h.logs
                .contains(&format!("return_codes: on_request_headers={code}"))
        );
        assert_eq!(
            h.vm.on_request_body(ctx, b"x", false).expect("body"),
            b.1,
            "body {}",
            b.0
        );
        assert_eq!(
            h.vm.on_request_trailers(ctx, headers(&[("t", "1")]))
                .expect("trailers"),
            t.1,
            "trailers {}",
            t.0
        );
        let status =
            h.vm.on_response_headers(ctx, headers(&[(":status", "200")]), false)
                .expect("response headers");
        assert_eq!(status, *expected, "response headers returning {code}");
        assert_eq!(h.vm.on_response_body(ctx, b"y", false).expect("body"), b.1);
        assert_eq!(
            h.vm.on_response_trailers(ctx, headers(&[("t", "2")]))
                .expect("trailers"),
            t.1
        );
        assert!(!h.vm.is_failed());
    }
}

#[test]
fn allow_on_headers_stop_iteration_passes_1_through() {
    let cfg = PluginConfig {
        allow_on_headers_stop_iteration: true,
        ..config("codes")
    };
    let mut h = Harness::load(Source::Wat("return_codes"), cfg).expect("starts");
    let (_, status) = h
        .request_headers(request("/", &[("x-return-request-headers", "1")]), false)
        .expect("request");
    assert_eq!(status, FilterHeadersStatus::StopIteration);
}

#[test]
fn continue_and_close_stream() {
    let mut p = Probe::new();
    let path = p.bytes(b":path");
    let (rp, rs) = (c(RET_PTR), c(RET_SIZE));
    p.on(Callback::RequestHeaders)
        .status(
            "headers.before",
            format!("(call $proxy_get_header_map_value (i32.const 0) {path} {rp} {rs})"),
        )
        .status(
            "continue.request",
            "(call $proxy_continue_stream (i32.const 0))",
        )
        // Envoy drops its header pointer once the stream continues (§11.4).
        .status(
            "headers.after",
            format!("(call $proxy_get_header_map_value (i32.const 0) {path} {rp} {rs})"),
        )
        .status(
            "continue.upstream",
            "(call $proxy_continue_stream (i32.const 3))",
        )
        .status(
            "continue.bad",
            "(call $proxy_continue_stream (i32.const 4))",
        )
        .status("close.bad", "(call $proxy_close_stream (i32.const 4))")
        .returns(c(1));
    p.on(Callback::ResponseHeaders)
        .status(
            "continue.response",
            "(call $proxy_continue_stream (i32.const 1))",
        )
        .status("close.response", "(call $proxy_close_stream (i32.const 1))")
        .returns(c(1));
    p.on(Callback::Tick)
        .status(
            "root.continue",
            "(call $proxy_continue_stream (i32.const 0))",
        )
        .status("root.close", "(call $proxy_close_stream (i32.const 0))");
    let plugin = p.load(config("stream-control")).expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let (ctx, status) = h
        .request_headers(request("/", &[]), false)
        .expect("request");
    assert_eq!(status, FilterHeadersStatus::StopAllIterationAndWatermark);
    assert_eq!(
        h.effects(),
        [Effect::ContinueStream {
            context: ctx,
            stream: StreamType::HttpRequest
        }]
    );
    h.vm.on_response_headers(ctx, headers(&[(":status", "200")]), false)
        .expect("response");
    assert_eq!(
        h.effects(),
        [
            Effect::ContinueStream {
                context: ctx,
                stream: StreamType::HttpResponse
            },
            Effect::CloseStream {
                context: ctx,
                stream: StreamType::HttpResponse
            }
        ]
    );
    h.vm.on_tick().expect("tick");
    assert!(h.effects().is_empty(), "no stream to act on from the root");
    let r = ProbeResults::from_logs(&h.logs);
    let st = |s: Status| Some(s.as_u32());
    assert_eq!(r.value("headers.before"), st(Status::Ok));
    assert_eq!(r.value("continue.request"), st(Status::Ok));
    assert_eq!(r.value("headers.after"), st(Status::BadArgument));
    assert_eq!(
        r.value("continue.upstream"),
        st(Status::Unimplemented),
        "as Envoy"
    );
    assert_eq!(r.value("continue.bad"), st(Status::BadArgument));
    assert_eq!(r.value("close.bad"), st(Status::BadArgument));
    assert_eq!(r.value("continue.response"), st(Status::Ok));
    assert_eq!(r.value("close.response"), st(Status::Ok));
    assert_eq!(r.value("root.continue"), st(Status::Ok));
    assert_eq!(r.value("root.close"), st(Status::Ok));
}
