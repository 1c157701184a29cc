//! Flow control of the filter manager (`vessel_host::HttpStream`) when the
//! filter that asked for it goes away: a stream whose body a paused filter
//! buffered past the limit with `...Watermark` tells its embedder to stop
//! reading (`read_paused`); whatever ends that hold must tell it to read
//! again, or the rest of the body is never read (ABI reference §11.2,
//! §6.6). Real SDK guest (`guest_trap`), real VM.

use vessel_host::{
    Action, Direction, Effect, FailurePolicy, FilterVms, HttpCallOutcome, HttpCallResponse,
    HttpStream, Plugin, StreamConfig, StreamSignal, Vm,
};
use vessel_spec_tests::{Source, config, headers, plugin, request};

/// One VM, owned; its effects are kept for the test.
struct One {
    vm: Vm,
    policy: FailurePolicy,
    effects: Vec<Effect>,
}

impl FilterVms for One {
    fn with_vm<R>(&mut self, _i: usize, f: impl FnOnce(&mut Vm) -> R) -> R {
        let r = f(&mut self.vm);
        self.effects.extend(self.vm.drain_effects());
        r
    }

    fn policy(&self, _i: usize) -> FailurePolicy {
        self.policy
    }
}

fn trap_guest(policy: FailurePolicy) -> One {
    let p: Plugin = match plugin(Source::Guest("trap"), config("trap")) {
        Ok(p) => p,
        Err(e) => panic!("guest_trap: {e} (build the guests with `cargo xtask guests`)"),
    };
    let vm = match Vm::new(&p, &vessel_host::HostEnv::default()) {
        Ok(vm) => vm,
        Err(e) => panic!("VM of guest_trap: {e}"),
    };
    One {
        vm,
        policy,
        effects: Vec::new(),
    }
}

fn actions(s: &mut HttpStream) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

/// A request paused on a callout (`StopAllIterationAndWatermark`) whose
/// body went past the buffer limit; then the callout's answer traps the VM
/// (a root callback), and the embedder tells the stream, as vessel-hyper's
/// pool does.
fn paused_then_failed(policy: FailurePolicy) -> (HttpStream, One) {
    let mut vms = trap_guest(policy);
    let mut config = StreamConfig::new(1);
    config.buffer_limit = 16;
    let mut s = HttpStream::new(config);
    let req = request("/", &[("x-trap-in", "http_call_response")]);
    s.request_headers(&mut vms, req, false);
    assert!(actions(&mut s).is_empty(), "held by the callout");
    s.request_data(&mut vms, vec![b'a'; 32], false);
    assert!(actions(&mut s).is_empty());
    assert!(
        s.read_paused(Direction::Request),
        "32 bytes held past a 16-byte limit with a watermark: stop reading"
    );
    let token = match vms.effects.as_slice() {
        [Effect::HttpCall { token, .. }] => *token,
        other => panic!("{other:?}"),
    };
    vms.effects.clear();
    let answer = HttpCallResponse {
        headers: headers(&[(":status", "200")]),
        ..HttpCallResponse::default()
    };
    let trapped = vms
        .vm
        .on_http_call_response(token, HttpCallOutcome::Response(answer));
    assert!(
        trapped.is_err(),
        "guest_trap traps in on_http_call_response"
    );
    assert!(vms.vm.is_failed());
    s.signal(&mut vms, 0, StreamSignal::VmFailed);
    (s, vms)
}

#[test]
fn fail_open_lets_a_watermark_paused_body_be_read_again() {
    let (mut s, mut vms) = paused_then_failed(FailurePolicy::FailOpen);
    // What the filter held goes on as if it were absent...
    match actions(&mut s).as_slice() {
        [
            Action::UpstreamHeaders {
                end_stream: false, ..
            },
            Action::UpstreamData {
                data,
                end_stream: false,
            },
        ] => assert_eq!(data.len(), 32),
        other => panic!("{other:?}"),
    }
    // ...and the embedder reads the rest of the body: nothing holds it now.
    assert!(!s.is_held(Direction::Request));
    assert!(
        !s.read_paused(Direction::Request),
        "no filter holds the body any more: read it"
    );
    s.request_data(&mut vms, b"rest".to_vec(), true);
    match actions(&mut s).as_slice() {
        [
            Action::UpstreamData {
                data,
                end_stream: true,
            },
        ] => assert_eq!(data, b"rest"),
        other => panic!("{other:?}"),
    }
    s.finish(&mut vms);
}

#[test]
fn fail_closed_answers_a_watermark_paused_stream_503() {
    let (mut s, mut vms) = paused_then_failed(FailurePolicy::FailClosed);
    match actions(&mut s).as_slice() {
        [Action::DownstreamHeaders { headers, .. }, ..] => {
            assert_eq!(headers.get_str(":status"), Some("503"));
        }
        other => panic!("{other:?}"),
    }
    assert!(s.is_done());
    s.finish(&mut vms);
}
