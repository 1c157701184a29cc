//! Local replies (`proxy_send_local_response`, ABI reference §4.4, §11.3):
//! from request headers, the request body and response headers. Each
//! becomes an `Effect::LocalResponse`, and the callback's result becomes a
//! stop whatever the guest returned.

use vessel_host::{
    ContextId, Effect, FilterDataStatus, FilterHeadersStatus, HeaderMap, HostEnv, LocalResponse,
    Status,
};
use vessel_spec_tests::probe::{Callback, Probe, ProbeResults, c};
use vessel_spec_tests::{Harness, Source, config, headers, request};

fn guest() -> Harness {
    Harness::load(Source::Guest("local_response"), config("local")).expect("starts")
}

/// The single local reply in `effects`, for `ctx`.
fn only_reply(effects: Vec<Effect>, ctx: ContextId) -> LocalResponse {
    let replies: Vec<LocalResponse> = effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::LocalResponse { context, response } => {
                assert_eq!(context, ctx);
                Some(response)
            }
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1, "{replies:?}");
    replies.into_iter().next().expect("one reply")
}

#[test]
fn from_request_headers() {
    let mut h = guest();
    let (ctx, status) = h
        .request_headers(request("/local/headers", &[]), true)
        .expect("request");
    // The guest returned Pause; after a local reply it is a full stop anyway.
    assert_eq!(status, FilterHeadersStatus::StopAllIterationAndWatermark);
    assert!(h.vm.local_response_sent(ctx));
    let reply = only_reply(h.effects(), ctx);
    assert_eq!(
        reply,
        LocalResponse {
            status: 403,
            details: String::new(),
            body: b"denied by headers\n".to_vec(),
            headers: headers(&[("x-local", "headers")]),
            grpc_status: None,
        }
    );
    assert!(
        h.logs
            .contains("local_response: sending 403 from request_headers")
    );
}

#[test]
fn from_the_request_body() {
    let mut h = guest();
    let (ctx, status) = h
        .request_headers(request("/local/body", &[]), false)
        .expect("request");
    assert_eq!(status, FilterHeadersStatus::Continue);
    assert!(h.effects().is_empty());
    let first = h.vm.on_request_body(ctx, b"hello ", false).expect("body 1");
    assert_eq!(first, FilterDataStatus::StopIterationAndBuffer);
    assert!(h.effects().is_empty());
    let last = h.vm.on_request_body(ctx, b"world", true).expect("body 2");
    assert_eq!(last, FilterDataStatus::StopIterationNoBuffer);
    let reply = only_reply(h.effects(), ctx);
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body, b"request body was: hello world\n");
    assert_eq!(reply.headers, headers(&[("x-local", "body")]));
    assert!(h.vm.local_response_sent(ctx));
}

#[test]
fn from_response_headers() {
    let mut h = guest();
    let (ctx, status) = h
        .request_headers(request("/local/response", &[]), true)
        .expect("request");
    assert_eq!(status, FilterHeadersStatus::Continue);
    let status =
        h.vm.on_response_headers(ctx, headers(&[(":status", "502")]), false)
            .expect("response headers");
    assert_eq!(status, FilterHeadersStatus::StopAllIterationAndWatermark);
    let reply = only_reply(h.effects(), ctx);
    assert_eq!(reply.status, 500);
    assert_eq!(reply.body, b"replaced upstream 502\n");
    assert_eq!(reply.headers, headers(&[("x-local", "response")]));
}

#[test]
fn the_reply_may_travel_back_through_the_response_path() {
    // Envoy runs its own local reply through the encoder filters (§11.3).
    let mut h = guest();
    let (ctx, _) = h
        .request_headers(request("/local/headers", &[]), true)
        .expect("request");
    let reply = only_reply(h.effects(), ctx);
    let mut resp = HeaderMap::from_pairs([(":status", reply.status.to_string())]);
    for (k, v) in reply.headers.iter() {
        resp.append(k, v);
    }
    let status =
        h.vm.on_response_headers(ctx, resp, false)
            .expect("response");
    assert_eq!(status, FilterHeadersStatus::Continue);
    assert!(h.effects().is_empty());
    assert!(
        h.logs
            .contains("local_response: response headers of local reply status=403")
    );
}

#[test]
fn empty_multi_value_and_grpc_replies() {
    let mut h = guest();
    let (ctx, _) = h
        .request_headers(request("/local/empty", &[]), true)
        .expect("empty");
    let reply = only_reply(h.effects(), ctx);
    assert_eq!(
        (reply.status, reply.body.len(), reply.headers.len()),
        (204, 0, 0)
    );
    assert_eq!(reply.grpc_status, None, "the SDK passes -1");

    let (ctx, _) = h
        .request_headers(request("/local/multi", &[]), true)
        .expect("multi");
    let reply = only_reply(h.effects(), ctx);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.headers,
        headers(&[
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("x-local", "multi")
        ])
    );

    let (ctx, status) = h
        .request_headers(request("/local/grpc", &[]), true)
        .expect("grpc");
    assert_eq!(status, FilterHeadersStatus::StopAllIterationAndWatermark);
    let reply = only_reply(h.effects(), ctx);
    assert_eq!(reply.grpc_status, Some(7));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"denied");
}

#[test]
fn details_grpc_range_and_root_context_rules() {
    let mut p = Probe::new();
    let details = p.bytes(b"not allowed\there");
    let body = p.bytes(b"nope");
    let hdrs = p.bytes(&vessel_abi::pairs::encode([(
        &b"X-Reason"[..],
        &b"Policy"[..],
    )]));
    p.on(Callback::RequestHeaders)
        .status(
            "stream",
            format!("(call $proxy_send_local_response (i32.const 429) {details} {body} {hdrs} (i32.const 17))"),
        )
        // Returns Continue, but the reply makes it a stop.
        .returns(c(0));
    p.on(Callback::Tick).status(
        "root",
        format!(
            "(call $proxy_send_local_response (i32.const 500) {details} {body} {hdrs} (i32.const 2))"
        ),
    );
    let plugin = p.load(config("local_probe")).expect("probe loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let (ctx, status) = h.request_headers(request("/", &[]), true).expect("request");
    assert_eq!(status, FilterHeadersStatus::StopAllIterationAndWatermark);
    let reply = only_reply(h.effects(), ctx);
    assert_eq!(
        reply,
        LocalResponse {
            status: 429,
            // Envoy replaces whitespace in details with `_`.
            details: "not_allowed_here".to_owned(),
            body: b"nope".to_vec(),
            headers: headers(&[("x-reason", "Policy")]),
            // Outside 0..=16: no grpc-status.
            grpc_status: None,
        }
    );
    // From a root context there is no stream to answer: OK, nothing happens.
    h.vm.on_tick().expect("tick");
    assert!(h.effects().is_empty());
    let r = ProbeResults::from_logs(&h.logs);
    assert_eq!(r.value("stream"), Some(Status::Ok.as_u32()));
    assert_eq!(r.value("root"), Some(Status::Ok.as_u32()));
}
