//! Foreign functions (ABI reference §3, §4.1, §9):
//! `proxy_call_foreign_function` reaches the functions the embedder
//! registered; an unknown name is NOT_FOUND; `Vm::on_foreign_function`
//! runs `proxy_on_foreign_function` with the arguments in buffer 8.

use vessel_host::{HostEnv, HostEnvBuilder, MapType, Status, Vm};
use vessel_spec_tests::probe::{Callback, Probe, ProbeResults, RET_PTR, RET_SIZE, c};
use vessel_spec_tests::{Harness, Source, config, headers, request, value};

fn builder() -> HostEnvBuilder {
    HostEnv::builder()
        .foreign_function("reverse", |args: &[u8]| {
            Ok(args.iter().rev().copied().collect::<Vec<u8>>())
        })
        .foreign_function("nothing", |_: &[u8]| Ok(Vec::new()))
        .foreign_function("refuse", |_: &[u8]| Err(Status::SerializationFailure))
}

fn call(vm: &mut Vm, name: &str, arg: &str) -> Option<String> {
    let ctx = vm.create_http_context().expect("context");
    vm.on_request_headers(
        ctx,
        request("/", &[("x-foreign-fn", name), ("x-foreign-arg", arg)]),
        true,
    )
    .expect("request");
    vm.on_response_headers(ctx, headers(&[(":status", "200")]), true)
        .expect("response");
    vm.headers(ctx, MapType::HttpResponseHeaders)
        .and_then(|m| value(m, "x-foreign-result"))
}

#[test]
fn registered_functions_are_called() {
    let mut h =
        Harness::load_with(Source::Guest("foreign"), config("foreign"), builder()).expect("starts");
    assert_eq!(call(&mut h.vm, "reverse", "abc").as_deref(), Some("cba"));
    assert!(h.logs.contains("foreign reverse(abc) returned cba"));
    assert_eq!(call(&mut h.vm, "nothing", "x").as_deref(), Some("<empty>"));
    // The function's own status reaches the guest.
    assert_eq!(
        call(&mut h.vm, "refuse", "x").as_deref(),
        Some("error:SerializationFailure")
    );
}

#[test]
fn unknown_name_is_not_found() {
    let mut h =
        Harness::load_with(Source::Guest("foreign"), config("foreign"), builder()).expect("starts");
    assert_eq!(
        call(&mut h.vm, "echo", "ping").as_deref(),
        Some("error:NotFound")
    );
    assert!(!h.vm.is_failed());
}

#[test]
fn on_foreign_function_gets_its_arguments() {
    let mut h = Harness::load(Source::Guest("foreign"), config("foreign")).expect("starts");
    h.vm.on_foreign_function(7, b"some args")
        .expect("delivered");
    assert!(
        h.logs
            .contains("on_foreign_function function_id=7 args_size=9 args=some args")
    );
}

#[test]
fn null_return_pointer_drops_the_result() {
    let mut p = Probe::new();
    let name = p.bytes(b"reverse");
    let arg = p.bytes(b"xyz");
    let bad = p.bytes(b"no-such-function");
    let (rp, rs) = (c(RET_PTR), c(RET_SIZE));
    p.on(Callback::RequestHeaders)
        .value("allocs.before", "(global.get $allocs)")
        .status(
            "dropped",
            format!("(call $proxy_call_foreign_function {name} {arg} (i32.const 0) (i32.const 0))"),
        )
        .value("allocs.after", "(global.get $allocs)")
        .status(
            "kept",
            format!("(call $proxy_call_foreign_function {name} {arg} {rp} {rs})"),
        )
        .returned("kept.value")
        .value("kept.alloc", "(global.get $last_size)")
        .status(
            "unknown",
            format!("(call $proxy_call_foreign_function {bad} {arg} {rp} {rs})"),
        );
    p.on(Callback::ForeignFunction)
        .value("ff.id", "(local.get $b)")
        .status(
            "ff.args",
            format!("(call $proxy_get_buffer_bytes (i32.const 8) (i32.const 0) (local.get $c) {rp} {rs})"),
        )
        .returned("ff.args.value");
    let plugin = p.load(config("foreign-probe")).expect("loads");
    let mut h = Harness::new(&plugin, builder()).expect("starts");
    h.request_headers(request("/", &[]), true).expect("request");
    h.vm.on_foreign_function(3, b"payload").expect("delivered");
    let r = ProbeResults::from_logs(&h.logs);
    let ok = Some(Status::Ok.as_u32());
    assert_eq!(r.value("dropped"), ok);
    assert_eq!(
        r.value("allocs.before"),
        r.value("allocs.after"),
        "nothing allocated"
    );
    assert_eq!(r.value("kept"), ok);
    assert_eq!(r.bytes("kept.value"), Some(&b"zyx"[..]));
    assert_eq!(r.value("kept.alloc"), Some(3));
    assert_eq!(r.value("unknown"), Some(Status::NotFound.as_u32()));
    assert_eq!(r.value("ff.id"), Some(3));
    assert_eq!(r.value("ff.args"), ok);
    assert_eq!(r.bytes("ff.args.value"), Some(&b"payload"[..]));
}
