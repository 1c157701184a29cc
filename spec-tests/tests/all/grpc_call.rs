//! gRPC callouts end to end through the host API with a Rust-SDK guest
//! (ABI reference §4.5, §11.27): the call leaves as an effect with Envoy's
//! token numbering, a unary success comes back through
//! `proxy_on_grpc_receive` (which ends the call) and a failure through
//! `proxy_on_grpc_close`.

use vessel_host::{Effect, MapType, Token, VmError};
use vessel_spec_tests::{Harness, Source, config, request, value};

fn guest() -> Harness {
    Harness::load(Source::Guest("grpc_call"), config("grpc_auth")).expect("starts")
}

#[test]
fn unary_success_resumes_the_stream_with_the_message() {
    let mut h = guest();
    let (ctx, _) = h
        .request_headers(request("/", &[("x-token", "t1")]), true)
        .expect("request");
    let calls: Vec<_> = h
        .effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::GrpcCall { token, call, .. } => Some((token, call)),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1);
    let (token, call) = &calls[0];
    assert_eq!(*token, Token::new(5));
    assert_eq!(call.upstream, b"grpc");
    assert_eq!(
        (call.service.as_str(), call.method.as_str()),
        ("auth.Auth", "Check")
    );
    assert_eq!(call.message, b"t1");
    assert_eq!(call.initial_metadata.get(b"x-trace"), Some(&b"t1"[..]));

    h.vm.on_grpc_receive(*token, b"bob".to_vec())
        .expect("delivered");
    assert!(
        h.logs
            .contains("grpc_call response token_id=5 status=0 size=3")
    );
    assert!(h.effects().iter().any(|e| matches!(
        e,
        Effect::ContinueStream { context, .. } if *context == ctx
    )));
    let headers =
        h.vm.headers(ctx, MapType::HttpRequestHeaders)
            .expect("held");
    assert_eq!(value(headers, "x-grpc-user").as_deref(), Some("bob"));
    // A unary call ends with its message: a later event for it is unknown.
    assert!(matches!(
        h.vm.on_grpc_close(*token, 0, ""),
        Err(VmError::UnknownToken(t)) if t == *token
    ));
}

#[test]
fn failure_closes_with_the_status_and_the_filter_answers_403() {
    let mut h = guest();
    h.request_headers(request("/", &[]), true).expect("request");
    let _ = h.effects();
    h.vm.on_grpc_close(Token::new(5), 7, "denied")
        .expect("delivered");
    assert!(
        h.logs
            .contains("grpc_call response token_id=5 status=7 size=0")
    );
    let replies: Vec<_> = h
        .effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::LocalResponse { response, .. } => Some(response),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status, 403);
    assert_eq!(replies[0].headers.get(b"x-grpc-status"), Some(&b"7"[..]));
    assert_eq!(h.vm.callouts_in_flight(), 0);
}
