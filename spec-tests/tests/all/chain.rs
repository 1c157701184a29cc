//! The filter manager (`vessel_host::HttpStream`) over chains of real Rust
//! SDK guests, each in its own VM: iteration order, a paused filter holding
//! back the next one, local replies through the earlier filters' response
//! callbacks, failures in the middle of a chain under each policy, and the
//! end-of-stream callbacks (ABI reference §11.1–§11.4, §11.11, §6.6).

use vessel_host::{
    Action, ContextId, Effect, FailurePolicy, FilterVms, HeaderMap, HostEnv, HttpCallOutcome,
    HttpCallResponse, HttpStream, Plugin, StreamConfig, StreamSignal, Vm, VmError,
};
use vessel_spec_tests::{LogCapture, Source, config, env_with_logs, headers, plugin, request};

/// The VMs of a test chain, owned; VM-level effects are queued for the test.
struct Chain {
    vms: Vec<Vm>,
    policies: Vec<FailurePolicy>,
    /// Effects left after callbacks: (filter, effect).
    effects: Vec<(usize, Effect)>,
    finished: Vec<(usize, ContextId, bool)>,
}

impl FilterVms for Chain {
    fn with_vm<R>(&mut self, i: usize, f: impl FnOnce(&mut Vm) -> R) -> R {
        let r = f(&mut self.vms[i]);
        let left: Vec<Effect> = self.vms[i].drain_effects().collect();
        self.effects.extend(left.into_iter().map(|e| (i, e)));
        r
    }

    fn policy(&self, i: usize) -> FailurePolicy {
        self.policies[i]
    }

    fn context_finished(&mut self, i: usize, context: ContextId, vm_ok: bool) {
        self.finished.push((i, context, vm_ok));
    }
}

fn start(guests: &[(&str, &str)], policy: FailurePolicy) -> (Chain, LogCapture, HostEnv) {
    let (env, logs) = env_with_logs(HostEnv::builder());
    let mut vms = Vec::new();
    for (i, (guest, configuration)) in guests.iter().enumerate() {
        let mut cfg = config(&format!("f{i}_{guest}"));
        cfg.configuration = configuration.as_bytes().to_vec();
        let p: Plugin = match plugin(Source::Guest(guest), cfg) {
            Ok(p) => p,
            Err(e) => panic!("guest {guest}: {e} (build the guests with `cargo xtask guests`)"),
        };
        match Vm::new(&p, &env) {
            Ok(vm) => vms.push(vm),
            Err(e) => panic!("VM of {guest}: {e}"),
        }
    }
    let n = vms.len();
    let chain = Chain {
        vms,
        policies: vec![policy; n],
        effects: Vec::new(),
        finished: Vec::new(),
    };
    (chain, logs, env)
}

fn actions(stream: &mut HttpStream) -> Vec<Action> {
    std::iter::from_fn(|| stream.poll_action()).collect()
}

/// The plugin names that logged `prefix...`, in order.
fn who_logged(logs: &LogCapture, prefix: &str) -> Vec<String> {
    logs.records()
        .into_iter()
        .filter(|c| c.text().starts_with(prefix))
        .map(|c| c.plugin)
        .collect()
}

fn upstream_ok() -> HeaderMap {
    headers(&[(":status", "200"), ("content-length", "0")])
}

#[test]
fn request_in_chain_order_response_in_reverse_and_log_for_all_then_done() {
    let (mut chain, logs, _env) = start(
        &[("headers", ""), ("headers", "")],
        FailurePolicy::FailClosed,
    );
    let mut s = HttpStream::new(StreamConfig::new(2));
    s.request_headers(&mut chain, request("/a", &[("x-op", "add")]), true);
    let a = actions(&mut s);
    // Both filters added x-added: the second saw the first's.
    match a.as_slice() {
        [
            Action::UpstreamHeaders {
                headers,
                end_stream: true,
            },
        ] => {
            assert_eq!(headers.get_all(b"x-added").count(), 2, "{headers:?}");
        }
        other => panic!("{other:?}"),
    }
    s.response_headers(&mut chain, upstream_ok(), true);
    match actions(&mut s).as_slice() {
        [
            Action::DownstreamHeaders {
                end_stream: true, ..
            },
        ] => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        who_logged(&logs, "request-headers"),
        ["f0_headers", "f1_headers"]
    );
    assert_eq!(
        who_logged(&logs, "response-headers"),
        ["f1_headers", "f0_headers"]
    );
    s.finish(&mut chain);
    assert_eq!(chain.finished.len(), 2);
    assert!(chain.finished.iter().all(|(_, _, ok)| *ok));
    // Every context is gone (only the roots are left).
    assert!(chain.vms.iter().all(|vm| vm.context_count() == 1));
}

#[test]
fn a_paused_first_filter_holds_back_the_second_until_its_callout_answers() {
    let (mut chain, logs, _env) = start(
        &[("http_call", ""), ("headers", "")],
        FailurePolicy::FailClosed,
    );
    let mut s = HttpStream::new(StreamConfig::new(2));
    s.request_headers(&mut chain, request("/a", &[("x-token", "t")]), true);
    assert!(
        actions(&mut s).is_empty(),
        "nothing goes upstream while paused"
    );
    assert!(who_logged(&logs, "request-headers").is_empty());
    assert!(s.is_held(vessel_host::Direction::Request));
    // The filter's callout: answer it, as an embedder would.
    let (i, token) = match chain.effects.as_slice() {
        [(i, Effect::HttpCall { token, .. })] => (*i, *token),
        other => panic!("{other:?}"),
    };
    chain.effects.clear();
    let response = HttpCallResponse {
        headers: headers(&[(":status", "200"), ("x-auth-user", "ann")]),
        ..HttpCallResponse::default()
    };
    let r: Result<(), VmError> =
        chain.vms[i].on_http_call_response(token, HttpCallOutcome::Response(response));
    r.expect("callout response");
    let mut signals = Vec::new();
    for e in chain.vms[i].drain_effects() {
        match StreamSignal::from_effect(e) {
            Ok((ctx, sig)) => {
                assert_eq!(Some(ctx), s.context(i));
                signals.push(sig);
            }
            Err(other) => panic!("unexpected effect {other:?}"),
        }
    }
    for sig in signals {
        s.signal(&mut chain, i, sig);
    }
    assert_eq!(who_logged(&logs, "request-headers"), ["f1_headers"]);
    match actions(&mut s).as_slice() {
        [Action::UpstreamHeaders { headers, .. }] => {
            assert_eq!(headers.get(b"x-auth-user"), Some(&b"ann"[..]));
        }
        other => panic!("{other:?}"),
    }
    s.finish(&mut chain);
}

#[test]
fn a_local_reply_from_the_second_filter_runs_through_the_first_filters_response_callbacks() {
    let (mut chain, logs, _env) = start(
        &[("headers", ""), ("local_response", "")],
        FailurePolicy::FailClosed,
    );
    let mut s = HttpStream::new(StreamConfig::new(2));
    s.request_headers(
        &mut chain,
        request("/local/headers", &[("x-resp-op", "add")]),
        true,
    );
    let a = actions(&mut s);
    match a.as_slice() {
        [
            Action::DownstreamHeaders {
                headers,
                end_stream: false,
            },
            Action::DownstreamData {
                data,
                end_stream: true,
            },
        ] => {
            assert_eq!(headers.get(b":status"), Some(&b"403"[..]));
            // Added by the first filter's on_response_headers.
            assert_eq!(
                headers.get(b"x-resp-added"),
                Some(&b"added"[..]),
                "{headers:?}"
            );
            assert_eq!(data, b"denied by headers\n");
        }
        other => panic!("{other:?}"),
    }
    assert!(s.is_done());
    assert_eq!(who_logged(&logs, "response-headers"), ["f0_headers"]);
    s.finish(&mut chain);
}

fn trap_in_the_middle(policy: FailurePolicy) -> (Vec<Action>, Vec<Action>, LogCapture) {
    let (mut chain, logs, _env) = start(
        &[("headers", ""), ("misbehave", ""), ("headers", "")],
        policy,
    );
    let mut s = HttpStream::new(StreamConfig::new(3));
    s.request_headers(&mut chain, request("/t", &[("x-misbehave", "trap")]), true);
    let first = actions(&mut s);
    s.finish(&mut chain);
    // The next stream, on the same (failed) VMs.
    let mut s = HttpStream::new(StreamConfig::new(3));
    s.request_headers(&mut chain, request("/n", &[]), true);
    let mut second = actions(&mut s);
    if matches!(second.as_slice(), [Action::UpstreamHeaders { .. }]) {
        s.response_headers(&mut chain, upstream_ok(), true);
        second.extend(actions(&mut s));
    }
    s.finish(&mut chain);
    (first, second, logs)
}

fn status_of(a: &[Action]) -> Option<String> {
    a.iter().find_map(|x| match x {
        Action::DownstreamHeaders { headers, .. } => headers.get_str(":status").map(str::to_owned),
        _ => None,
    })
}

#[test]
fn a_trap_in_the_middle_fails_its_stream_under_every_policy() {
    for policy in [
        FailurePolicy::FailClosed,
        FailurePolicy::FailOpen,
        FailurePolicy::fail_reload(),
    ] {
        let (first, second, logs) = trap_in_the_middle(policy);
        assert_eq!(
            status_of(&first).as_deref(),
            Some("503"),
            "{policy:?}: {first:?}"
        );
        // The first filter saw the 503 in its response callback.
        assert!(logs.contains("status=503"), "{policy:?}");
        let expected = if policy.passes_through() {
            "200"
        } else {
            "503"
        };
        assert_eq!(
            status_of(&second).as_deref(),
            Some(expected),
            "{policy:?}: {second:?}"
        );
    }
}

/// A body past what one filter may hold (`Limits::max_body_bytes`, far
/// below the stream's buffer limit): the filter manager answers 413 as for
/// its own buffer limit, and the filter's VM is not failed (issue 9).
#[test]
fn body_data_past_the_filters_own_limit_is_a_413_and_the_vm_carries_on() {
    let (env, _logs) = env_with_logs(HostEnv::builder());
    let cfg = vessel_host::PluginConfig {
        configuration: br#"{"request": [{"from": "a", "to": "b"}]}"#.to_vec(),
        limits: vessel_host::Limits {
            max_body_bytes: 16,
            ..vessel_host::Limits::default()
        },
        ..config("rewrite")
    };
    let p = plugin(Source::Guest("sdk_body_rewrite"), cfg).expect("guest_sdk_body_rewrite");
    let mut chain = Chain {
        vms: vec![Vm::new(&p, &env).expect("starts")],
        policies: vec![FailurePolicy::FailClosed],
        effects: Vec::new(),
        finished: Vec::new(),
    };
    let mut config = StreamConfig::new(1);
    config.buffer_limit = 1 << 20;
    let mut s = HttpStream::new(config);
    let text = headers(&[
        (":method", "POST"),
        (":path", "/big"),
        (":authority", "example.com"),
        ("content-type", "text/plain"),
    ]);
    s.request_headers(&mut chain, text, false);
    s.request_data(&mut chain, b"0123456789".to_vec(), false);
    s.request_data(&mut chain, b"0123456789".to_vec(), false);
    assert_eq!(status_of(&actions(&mut s)).as_deref(), Some("413"));
    assert!(s.is_done());
    assert!(!chain.vms[0].is_failed(), "only the stream is over");
    s.finish(&mut chain);
    assert!(!chain.vms[0].is_failed());
}
