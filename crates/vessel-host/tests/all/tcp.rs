//! `TcpStream`, the network filter manager, over real Rust-SDK network
//! filters (`spec-tests/guests/tcp_*`, built by `cargo xtask guests`),
//! driven the way a pump drives it: events in, `TcpAction`s out, the VM's
//! other effects carried out by the embedder and their signals routed back
//! with `StreamSignal::from_effect`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::guest;
use vessel_host::{
    BufferType, CloseReason, ContextId, Effect, FailurePolicy, FilterVms, HeaderMap, HostEnv,
    HttpCallOutcome, HttpCallResponse, PeerType, Plugin, PluginConfig, PropertyMap, StreamSignal,
    TcpAction, TcpStream, Vm,
};

/// One owned VM per filter; the effects the stream leaves are kept for the
/// test to carry out.
struct Chain {
    vms: Vec<Vm>,
    effects: Vec<(usize, Effect)>,
}

impl FilterVms for Chain {
    fn with_vm<R>(&mut self, i: usize, f: impl FnOnce(&mut Vm) -> R) -> R {
        let r = f(&mut self.vms[i]);
        let left: Vec<Effect> = self.vms[i].drain_effects().collect();
        self.effects.extend(left.into_iter().map(|e| (i, e)));
        r
    }

    fn policy(&self, _: usize) -> FailurePolicy {
        FailurePolicy::FailClosed
    }
}

fn chain(plugins: &[(&str, &str)]) -> Chain {
    let env = HostEnv::default();
    let engine = vessel_host::Engine::new(vessel_host::EngineConfig::default()).expect("engine");
    let vms = plugins
        .iter()
        .map(|(g, configuration)| {
            let cfg = PluginConfig {
                configuration: configuration.as_bytes().to_vec(),
                ..PluginConfig::named(*g)
            };
            let plugin = Plugin::load(&engine, &guest(g), cfg).expect("loads");
            Vm::new(&plugin, &env).expect("starts")
        })
        .collect();
    Chain {
        vms,
        effects: Vec::new(),
    }
}

fn actions(tcp: &mut TcpStream) -> Vec<TcpAction> {
    std::iter::from_fn(|| tcp.poll_action()).collect()
}

fn up(data: &str, end_stream: bool) -> TcpAction {
    TcpAction::UpstreamData {
        data: data.as_bytes().to_vec(),
        end_stream,
    }
}

fn down(data: &str, end_stream: bool) -> TcpAction {
    TcpAction::DownstreamData {
        data: data.as_bytes().to_vec(),
        end_stream,
    }
}

#[test]
fn paused_bytes_stay_in_the_filters_buffer_and_go_on_together() {
    let mut c = chain(&[("tcp_pause", "")]);
    let mut tcp = TcpStream::new(1, 4);
    tcp.new_connection(&mut c, PropertyMap::new());
    let ctx = tcp.context(0).expect("a context on the new connection");
    assert!(c.vms[0].is_tcp_context(ctx));
    tcp.downstream_data(&mut c, b"hel", false);
    assert_eq!(actions(&mut tcp), vec![]);
    assert!(tcp.is_read_held());
    assert!(!tcp.read_paused(), "3 bytes are under the limit of 4");
    // Readable while paused, and only as this kind of stream's buffer.
    assert_eq!(
        c.vms[0].body(ctx, BufferType::DownstreamData),
        Some(&b"hel"[..])
    );
    assert_eq!(c.vms[0].body(ctx, BufferType::HttpRequestBody), None);
    tcp.downstream_data(&mut c, b"lo", false);
    assert!(tcp.read_paused(), "5 held bytes are over the limit of 4");
    tcp.downstream_data(&mut c, b"\nx", false);
    assert_eq!(actions(&mut tcp), vec![up("hello\nx", false)]);
    assert!(!tcp.read_paused() && !tcp.is_read_held());
    assert_eq!(c.vms[0].body(ctx, BufferType::DownstreamData), None);
    // Upstream bytes pass; both ends close the connection.
    tcp.upstream_data(&mut c, b"ok", true);
    tcp.downstream_data(&mut c, b"", true);
    assert_eq!(
        actions(&mut tcp),
        vec![
            down("ok", true),
            up("", true),
            TcpAction::CloseDownstream,
            TcpAction::CloseUpstream
        ]
    );
    assert_eq!(tcp.close_reason(), Some(CloseReason::Ended));
    assert_eq!(tcp.context(0), None);
    assert_eq!(c.vms[0].context_count(), 1, "only the root context is left");
}

#[test]
fn a_callout_answer_resumes_the_connection_through_signal() {
    let mut c = chain(&[("tcp_pause", "check")]);
    let mut tcp = TcpStream::new(1, 1 << 20);
    tcp.new_connection(&mut c, PropertyMap::new());
    tcp.downstream_data(&mut c, b"let me in\n", false);
    assert_eq!(actions(&mut tcp), vec![], "paused on the check");
    let token = match c.effects.drain(..).collect::<Vec<_>>().as_slice() {
        [(0, Effect::HttpCall { token, .. })] => *token,
        other => panic!("expected one HTTP call, got {other:?}"),
    };
    let answer = HttpCallOutcome::Response(HttpCallResponse {
        headers: HeaderMap::from_pairs([(":status", "200")]),
        body: Vec::new(),
        trailers: HeaderMap::new(),
    });
    c.vms[0]
        .on_http_call_response(token, answer)
        .expect("answered");
    let signals: Vec<(ContextId, StreamSignal)> = c.vms[0]
        .drain_effects()
        .filter_map(|e| StreamSignal::from_effect(e).ok())
        .collect();
    assert_eq!(signals.len(), 1, "{signals:?}");
    let (ctx, signal) = signals.into_iter().next().unwrap();
    assert_eq!(Some(ctx), tcp.context(0));
    tcp.signal(&mut c, 0, signal);
    assert_eq!(actions(&mut tcp), vec![up("let me in\n", false)]);
    tcp.downstream_closed(&mut c, PeerType::Remote);
    assert_eq!(actions(&mut tcp), vec![TcpAction::CloseUpstream]);
    assert_eq!(tcp.close_reason(), Some(CloseReason::DownstreamClosed));
}

#[test]
fn close_stream_closes_both_sides_and_drops_the_bytes() {
    let mut c = chain(&[("tcp_count", ""), ("tcp_close", "QUIT")]);
    let mut tcp = TcpStream::new(2, 1 << 20);
    tcp.new_connection(&mut c, PropertyMap::new());
    tcp.downstream_data(&mut c, b"a", false);
    // Write filters run in reverse: tcp_close (filter 1) first.
    tcp.upstream_data(&mut c, b"QUIT", false);
    assert_eq!(
        actions(&mut tcp),
        vec![
            up("a", false),
            TcpAction::CloseDownstream,
            TcpAction::CloseUpstream
        ]
    );
    assert!(tcp.is_closed());
    assert_eq!(tcp.close_reason(), Some(CloseReason::FilterClosed));
    // Nothing more happens, and the contexts are gone.
    tcp.downstream_data(&mut c, b"more", false);
    tcp.finish(&mut c);
    assert_eq!(actions(&mut tcp), vec![]);
    assert!(c.vms.iter().all(|vm| vm.context_count() == 1));
}

#[test]
fn a_trap_under_fail_closed_closes_the_connection_and_the_next_at_once() {
    let mut c = chain(&[("tcp_count", "")]);
    let mut tcp = TcpStream::new(1, 1 << 20);
    tcp.new_connection(&mut c, PropertyMap::new());
    tcp.downstream_data(&mut c, b"TRAP", false);
    assert_eq!(
        actions(&mut tcp),
        vec![TcpAction::CloseDownstream, TcpAction::CloseUpstream]
    );
    assert_eq!(tcp.close_reason(), Some(CloseReason::FilterFailed));
    assert!(c.vms[0].is_failed());
    let mut next = TcpStream::new(1, 1 << 20);
    next.new_connection(&mut c, PropertyMap::new());
    assert_eq!(
        actions(&mut next),
        vec![TcpAction::CloseDownstream, TcpAction::CloseUpstream]
    );
    assert_eq!(
        c.vms[0].context_count(),
        1,
        "no context leaks on the failed VM"
    );
}
