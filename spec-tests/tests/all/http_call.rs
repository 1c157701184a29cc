//! HTTP callouts (ABI reference §4.5, §11.6, §11.7): `Effect::HttpCall`
//! with Envoy's token numbering, the answer delivered to the root context,
//! resuming the paused stream, the failure path and unknown clusters.

use std::time::Duration;

use vessel_host::{
    Effect, FilterHeadersStatus, HeaderMap, HostEnv, HttpCallOutcome, HttpCallRequest,
    HttpCallResponse, MapType, Status, StreamType, Token, VmError,
};
use vessel_spec_tests::probe::{Callback, OUT, Probe, ProbeResults, RET_PTR, RET_SIZE, c, load};
use vessel_spec_tests::{Harness, Source, config, headers, request, value, values};

fn guest() -> Harness {
    Harness::load(Source::Guest("http_call"), config("auth_filter")).expect("starts")
}

fn response(status: &str, extra: &[(&str, &str)], body: &[u8]) -> HttpCallOutcome {
    let mut h = headers(&[(":status", status)]);
    for (k, v) in extra {
        h.append(k.as_bytes(), v.as_bytes());
    }
    HttpCallOutcome::Response(HttpCallResponse {
        headers: h,
        body: body.to_vec(),
        trailers: HeaderMap::new(),
    })
}

#[test]
fn dispatch_uses_envoy_tokens_and_resume_continues_the_stream() {
    let mut h = guest();
    let root = h.vm.root_context();
    let (ctx1, s1) = h
        .request_headers(request("/one", &[("x-token", "abc")]), true)
        .expect("request 1");
    let (ctx2, s2) = h
        .request_headers(request("/two", &[]), true)
        .expect("request 2");
    assert_eq!(s1, FilterHeadersStatus::StopAllIterationAndWatermark);
    assert_eq!(s2, FilterHeadersStatus::StopAllIterationAndWatermark);
    let effects = h.effects();
    assert_eq!(
        effects,
        [
            Effect::HttpCall {
                root,
                token: Token::new(4),
                request: HttpCallRequest {
                    upstream: "auth".into(),
                    headers: headers(&[
                        (":method", "GET"),
                        (":path", "/auth"),
                        (":authority", "auth"),
                        ("x-token", "abc")
                    ]),
                    body: Vec::new(),
                    trailers: HeaderMap::new(),
                    timeout: Some(Duration::from_secs(5)),
                },
            },
            Effect::HttpCall {
                root,
                token: Token::new(8),
                request: HttpCallRequest {
                    upstream: "auth".into(),
                    headers: headers(&[
                        (":method", "GET"),
                        (":path", "/auth"),
                        (":authority", "auth")
                    ]),
                    body: Vec::new(),
                    trailers: HeaderMap::new(),
                    timeout: Some(Duration::from_secs(5)),
                },
            },
        ]
    );
    assert_eq!(h.vm.callouts_in_flight(), 2);
    assert!(
        h.logs
            .contains("http_call dispatched cluster=auth token_id=4 auth_token=abc")
    );

    // Answer the second call first: callouts are independent.
    h.vm.on_http_call_response(Token::new(8), response("401", &[], b""))
        .expect("response 8");
    let effects = h.effects();
    assert_eq!(effects.len(), 1, "{effects:?}");
    match &effects[0] {
        Effect::LocalResponse { context, response } => {
            assert_eq!(*context, ctx2);
            assert_eq!(response.status, 403);
            assert_eq!(response.body, b"forbidden\n");
            assert_eq!(response.headers, headers(&[("x-auth-status", "401")]));
        }
        other => panic!("expected a local response, got {other:?}"),
    }

    h.vm.on_http_call_response(
        Token::new(4),
        response("200", &[("x-auth-user", "alice")], b"ignored body"),
    )
    .expect("response 4");
    assert_eq!(
        h.effects(),
        [Effect::ContinueStream {
            context: ctx1,
            stream: StreamType::HttpRequest
        }]
    );
    let req =
        h.vm.headers(ctx1, MapType::HttpRequestHeaders)
            .expect("kept");
    assert_eq!(values(req, "x-auth-user"), ["alice"]);
    for line in [
        format!(
            "http_call response context_id={} token_id=4 headers=2 body_size=12 trailers=0",
            ctx1.get()
        ),
        "http_call response header x-auth-user=alice".to_owned(),
        "http_call body=ignored body".to_owned(),
        "http_call allowed user=alice".to_owned(),
    ] {
        assert!(
            h.logs.contains(&line),
            "missing `{line}` in {:#?}",
            h.logs.lines()
        );
    }
    assert_eq!(h.vm.callouts_in_flight(), 0);
    // A token is delivered once.
    assert!(matches!(
        h.vm.on_http_call_response(Token::new(4), response("200", &[], b"")),
        Err(VmError::UnknownToken(t)) if t == Token::new(4)
    ));
    assert!(!h.vm.is_failed());
}

#[test]
fn user_from_the_body_when_no_header() {
    let mut h = guest();
    let (ctx, _) = h.request_headers(request("/", &[]), true).expect("request");
    h.vm.on_http_call_response(Token::new(4), response("200", &[], b" bob \n"))
        .expect("response");
    let req =
        h.vm.headers(ctx, MapType::HttpRequestHeaders)
            .expect("kept");
    assert_eq!(value(req, "x-auth-user").as_deref(), Some("bob"));
}

#[test]
fn unknown_cluster_is_bad_argument() {
    let builder = HostEnv::builder().known_clusters(|c| c == "auth");
    let mut h = Harness::load_with(Source::Guest("http_call"), config("auth_filter"), builder)
        .expect("starts");
    let (ctx, status) = h
        .request_headers(request("/", &[("x-auth-cluster", "nope")]), true)
        .expect("request");
    assert_eq!(status, FilterHeadersStatus::StopAllIterationAndWatermark);
    assert!(
        h.logs
            .contains("http_call dispatch failed cluster=nope status=BadArgument")
    );
    let effects = h.effects();
    assert!(
        matches!(&effects[..], [Effect::LocalResponse { context, response }] if *context == ctx && response.status == 503),
        "{effects:?}"
    );
    assert_eq!(h.vm.callouts_in_flight(), 0);
    // The known cluster still works.
    h.request_headers(request("/", &[]), true).expect("request");
    assert!(matches!(
        &h.effects()[..],
        [Effect::HttpCall { token, .. }] if *token == Token::new(4)
    ));
}

/// A probe that calls `auth` from request headers and inspects everything
/// in `proxy_on_http_call_response`.
fn callout_probe() -> Probe {
    let mut p = Probe::new();
    let cluster = p.bytes(b"auth");
    let hdrs = p.bytes(&vessel_abi::pairs::encode([
        (&b":method"[..], &b"POST"[..]),
        (b":path", b"/check"),
        (b":authority", b"auth.local"),
    ]));
    let no_path = p.bytes(&vessel_abi::pairs::encode([
        (&b":method"[..], &b"GET"[..]),
        (b":authority", b"auth.local"),
    ]));
    let body = p.bytes(b"payload");
    let trl = p.bytes(&vessel_abi::pairs::encode([(&b"x-trailer"[..], &b"t"[..])]));
    let status_key = p.bytes(b":status");
    let (rp, rs, out) = (c(RET_PTR), c(RET_SIZE), c(OUT));
    p.on(Callback::RequestHeaders)
        .status(
            "call",
            format!("(call $proxy_http_call {cluster} {hdrs} {body} {trl} (i32.const 0) {out})"),
        )
        .value("call.token", load(OUT))
        .status(
            "call.no_path",
            format!("(call $proxy_http_call {cluster} {no_path} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 100) {out})"),
        )
        .status(
            "call.negative_timeout",
            format!("(call $proxy_http_call {cluster} {hdrs} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1) {out})"),
        )
        .returns(c(1));
    p.on(Callback::HttpCallResponse)
        .value("resp.root", "(local.get $a)")
        .value("resp.token", "(local.get $b)")
        .value("resp.headers", "(local.get $c)")
        .value("resp.body_size", "(local.get $d)")
        .value("resp.trailers", "(local.get $e)")
        .raw(format!("(i32.store {rs} (i32.const 0))"))
        .status("resp.get_status", format!("(call $proxy_get_status {out} {rp} {rs})"))
        .value("resp.get_status.code", load(OUT))
        .returned("resp.get_status.message")
        .raw(format!("(i32.store {rs} (i32.const 0))"))
        .status(
            "resp.status_header",
            format!("(call $proxy_get_header_map_value (i32.const 6) {status_key} {rp} {rs})"),
        )
        .returned("resp.status_header.value")
        .raw(format!("(i32.store {rs} (i32.const 0))"))
        .status("resp.pairs", format!("(call $proxy_get_header_map_pairs (i32.const 6) {rp} {rs})"))
        .value("resp.pairs.size", load(RET_SIZE))
        .raw(format!("(i32.store {rs} (i32.const 0))"))
        .status(
            "resp.body",
            format!("(call $proxy_get_buffer_bytes (i32.const 4) (i32.const 0) (i32.const -1) {rp} {rs})"),
        )
        .returned("resp.body.value")
        .raw(format!("(i32.store {rs} (i32.const 0))"))
        .status("resp.trailer_pairs", format!("(call $proxy_get_header_map_pairs (i32.const 7) {rp} {rs})"))
        .returned("resp.trailer_pairs.value")
        .status("resp.continue", "(call $proxy_continue_stream (i32.const 0))");
    p
}

#[test]
fn probe_sees_the_call_and_its_answer() {
    let plugin = callout_probe()
        .load(config("callout-probe"))
        .expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let root = h.vm.root_context();
    let (ctx, status) = h.request_headers(request("/", &[]), true).expect("request");
    assert_eq!(status, FilterHeadersStatus::StopAllIterationAndWatermark);
    let effects = h.effects();
    let [
        Effect::HttpCall {
            root: r,
            token,
            request,
        },
    ] = &effects[..]
    else {
        panic!("one call expected: {effects:?}");
    };
    assert_eq!((*r, *token), (root, Token::new(4)));
    assert_eq!(request.upstream, "auth");
    assert_eq!(request.body, b"payload");
    // A non-empty body gets a content-length.
    assert_eq!(
        value(&request.headers, "content-length").as_deref(),
        Some("7")
    );
    assert_eq!(request.trailers, headers(&[("x-trailer", "t")]));
    assert_eq!(request.timeout, None, "timeout 0 = none");

    let trailers = headers(&[("grpc-status", "0")]);
    h.vm.on_http_call_response(
        Token::new(4),
        HttpCallOutcome::Response(HttpCallResponse {
            headers: headers(&[(":status", "201"), ("a", "b")]),
            body: b"answer".to_vec(),
            trailers: trailers.clone(),
        }),
    )
    .expect("delivered");
    // The root context resumed the stream through... nothing: continue
    // from a root context without an effective context is a no-op.
    assert!(h.effects().is_empty());
    let r = ProbeResults::from_logs(&h.logs);
    let ok = Some(Status::Ok.as_u32());
    assert_eq!(r.value("call"), ok);
    assert_eq!(r.value("call.token"), Some(4));
    assert_eq!(r.value("call.no_path"), Some(Status::BadArgument.as_u32()));
    assert_eq!(
        r.value("call.negative_timeout"),
        Some(Status::BadArgument.as_u32())
    );
    assert_eq!(
        r.value("resp.root"),
        Some(root.get()),
        "delivered to the root context"
    );
    assert_ne!(r.value("resp.root"), Some(ctx.get()));
    assert_eq!(r.value("resp.token"), Some(4));
    assert_eq!(r.value("resp.headers"), Some(2));
    assert_eq!(r.value("resp.body_size"), Some(6));
    assert_eq!(r.value("resp.trailers"), Some(1));
    assert_eq!(r.value("resp.get_status"), ok);
    assert_eq!(r.value("resp.get_status.code"), Some(0));
    assert_eq!(r.bytes("resp.get_status.message"), Some(&b""[..]));
    assert_eq!(r.value("resp.status_header"), ok);
    assert_eq!(r.bytes("resp.status_header.value"), Some(&b"201"[..]));
    assert_eq!(r.value("resp.pairs"), ok);
    assert_ne!(r.value("resp.pairs.size"), Some(0));
    assert_eq!(r.value("resp.body"), ok);
    assert_eq!(r.bytes("resp.body.value"), Some(&b"answer"[..]));
    assert_eq!(
        r.bytes("resp.trailer_pairs.value"),
        Some(trailers.encode().as_slice())
    );
    assert_eq!(r.value("resp.continue"), ok);
}

#[test]
fn failed_call_gives_broken_connection() {
    let plugin = callout_probe().load(config("callout-fail")).expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    h.request_headers(request("/", &[]), true).expect("request");
    h.effects();
    h.vm.on_http_call_response(
        Token::new(4),
        HttpCallOutcome::Failed {
            reason: "reset".into(),
        },
    )
    .expect("delivered");
    let r = ProbeResults::from_logs(&h.logs);
    let ok = Some(Status::Ok.as_u32());
    // Envoy: 0 headers, 0 body bytes, 0 trailers; get_status = (11, "reset").
    assert_eq!(r.value("resp.headers"), Some(0));
    assert_eq!(r.value("resp.body_size"), Some(0));
    assert_eq!(r.value("resp.trailers"), Some(0));
    assert_eq!(r.value("resp.get_status"), ok);
    assert_eq!(
        r.value("resp.get_status.code"),
        Some(Status::BrokenConnection.as_u32())
    );
    assert_eq!(r.bytes("resp.get_status.message"), Some(&b"reset"[..]));
    // No response: its maps are unavailable (Envoy: BAD_ARGUMENT for a
    // value, OK and empty for the pairs) and its body is NOT_FOUND.
    assert_eq!(
        r.value("resp.status_header"),
        Some(Status::BadArgument.as_u32())
    );
    assert_eq!(r.value("resp.pairs"), ok);
    assert_eq!(r.value("resp.pairs.size"), Some(0));
    assert_eq!(r.value("resp.body"), Some(Status::NotFound.as_u32()));
    assert!(!h.vm.is_failed());
}

#[test]
fn calls_from_the_root_context_step_by_four() {
    let mut p = Probe::new();
    let cluster = p.bytes(b"auth");
    let hdrs = p.bytes(&vessel_abi::pairs::encode([
        (&b":method"[..], &b"GET"[..]),
        (b":path", b"/"),
        (b":authority", b"a"),
    ]));
    p.on(Callback::Tick).status(
        "tick.call",
        format!(
            "(call $proxy_http_call {cluster} {hdrs} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) {})",
            c(OUT)
        ),
    );
    let plugin = p.load(config("root-calls")).expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let root = h.vm.root_context();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        h.vm.on_tick().expect("tick");
        for e in h.effects() {
            if let Effect::HttpCall {
                root: r,
                token,
                request,
            } = e
            {
                assert_eq!(r, root);
                assert_eq!(request.timeout, Some(Duration::from_millis(1000)));
                tokens.push(token);
            }
        }
    }
    assert_eq!(tokens, [Token::new(4), Token::new(8), Token::new(12)]);
    assert_eq!(h.vm.callouts_in_flight(), 3);
    h.vm.on_http_call_response(
        Token::new(8),
        HttpCallOutcome::Failed {
            reason: "reset".into(),
        },
    )
    .expect("delivered");
    assert_eq!(h.vm.callouts_in_flight(), 2);
    assert!(matches!(
        h.vm.on_http_call_response(Token::new(16), HttpCallOutcome::Failed { reason: "x".into() }),
        Err(VmError::UnknownToken(t)) if t == Token::new(16)
    ));
}

#[test]
fn failed_call_reaches_the_guest_with_no_response_and_it_answers_403() {
    // After a failed call Envoy has no response: 0 headers, 0 body bytes, 0
    // trailers (reading a value from map 6 would be BAD_ARGUMENT, on which
    // the Rust SDK panics), so guest_http_call checks the count first.
    let mut h = guest();
    let (ctx, _) = h.request_headers(request("/", &[]), true).expect("request");
    let _ = h.vm.drain_effects().count();
    h.vm.on_http_call_response(
        Token::new(4),
        HttpCallOutcome::Failed {
            reason: "reset".into(),
        },
    )
    .expect("the guest handles the failure");
    assert!(
        h.logs.contains(
            "http_call response context_id=2 token_id=4 headers=0 body_size=0 trailers=0"
        )
    );
    assert!(h.logs.contains("http_call denied status=none"));
    let replies: Vec<_> =
        h.vm.drain_effects()
            .filter_map(|e| match e {
                Effect::LocalResponse { response, .. } => Some(response),
                _ => None,
            })
            .collect();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status, 403);
    assert_eq!(replies[0].headers.get(b"x-auth-status"), Some(&b"none"[..]));
    assert!(!h.vm.is_failed());
    // Regression: the reply was sent from a root callback; it must not turn
    // the stream's next callback into a stop (Envoy clears the flag after
    // every VM call), or the reply's own response headers would hang.
    let status =
        h.vm.on_response_headers(ctx, headers(&[(":status", "403")]), false)
            .expect("response headers");
    assert_eq!(status, FilterHeadersStatus::Continue);
}
