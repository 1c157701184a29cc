//! The WASI subset (ABI reference §7, §11.23, §11.24): cpp-host's errnos,
//! the injected clock and randomness, configured environment variables,
//! a `poll_oneoff` that never blocks, and `proc_exit` failing the VM.

use vessel_host::{FixedClock, HostEnv, PluginConfig, Random, Status, TrapKind};
use vessel_spec_tests::probe::{Callback, OUT, OUT2, Probe, ProbeResults, c, load};
use vessel_spec_tests::{Harness, config, request};

struct Fixed;

impl Random for Fixed {
    fn fill(&self, buf: &mut [u8]) -> Result<(), Status> {
        buf.fill(0xAB);
        Ok(())
    }
}

#[test]
fn errnos_clock_random_environment() {
    let mut p = Probe::new();
    let out = c(OUT);
    let buf = p.bytes(&[0u8; 64]);
    let b = p.on(Callback::RequestHeaders);
    b.status("clock_time_get.realtime", format!("(call $clock_time_get (i32.const 0) (i64.const 0) {out})"))
        .value("realtime.low", load(OUT))
        .value("realtime.high", load(OUT + 4))
        .status("clock_time_get.monotonic", format!("(call $clock_time_get (i32.const 1) (i64.const 0) {out})"))
        .value("monotonic.low", load(OUT))
        .status("clock_time_get.cputime", format!("(call $clock_time_get (i32.const 2) (i64.const 0) {out})"))
        .status("clock_res_get", format!("(call $clock_res_get (i32.const 1) {out})"))
        .value("clock_res.value", load(OUT))
        .status("random_get", format!("(call $random_get (i32.const {}) (i32.const 4))", buf.ptr))
        .value("random.word", load(buf.ptr))
        .status("random_get.zero", "(call $random_get (i32.const 0) (i32.const 0))")
        .status("random_get.too_big", format!("(call $random_get (i32.const {}) (i32.const 65537))", buf.ptr))
        .status("environ_sizes_get", format!("(call $environ_sizes_get {out} {})", c(OUT2)))
        .value("environ.count", load(OUT))
        .value("environ.size", load(OUT2))
        .status(
            "environ_get",
            format!("(call $environ_get (i32.const {}) (i32.const {}))", buf.ptr, buf.ptr + 16),
        )
        .bytes("environ.first", load(buf.ptr), c(12))
        .status("args_sizes_get", format!("(call $args_sizes_get {out} {})", c(OUT2)))
        .value("args.count", load(OUT))
        .status("fd_fdstat_get.stdout", format!("(call $fd_fdstat_get (i32.const 1) (i32.const {}))", buf.ptr))
        .value("fdstat.rights", load(buf.ptr + 8))
        .status("fd_fdstat_get.fd5", format!("(call $fd_fdstat_get (i32.const 5) {out})"))
        .status("fd_prestat_get", format!("(call $fd_prestat_get (i32.const 3) {out})"))
        .status("fd_read", format!("(call $fd_read (i32.const 0) {out} (i32.const 1) {})", c(OUT2)))
        .status(
            "path_open",
            format!("(call $path_open (i32.const 3) (i32.const 0) {buf} (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) {out})"),
        )
        .status("poll_oneoff", format!("(call $poll_oneoff (i32.const {}) (i32.const {}) (i32.const 1) {out})", buf.ptr, buf.ptr + 32))
        .value("poll_oneoff.nevents", load(OUT))
        .status("sched_yield", "(call $sched_yield)")
        .status("sock_shutdown", "(call $sock_shutdown (i32.const 3) (i32.const 0))");
    let cfg = PluginConfig {
        environment: vec![("GOGC".into(), "off".into()), ("A".into(), "b".into())],
        ..config("wasi")
    };
    let plugin = p.load(cfg).expect("loads");
    let clock = FixedClock {
        wall_nanos: 0x0000_0005_0000_0007,
        monotonic_nanos: 99,
    };
    let mut h =
        Harness::new(&plugin, HostEnv::builder().clock(clock).random(Fixed)).expect("starts");
    h.request_headers(request("/", &[]), true).expect("request");
    let r = ProbeResults::from_logs(&h.logs);
    let expect = [
        ("clock_time_get.realtime", 0),
        ("realtime.low", 7),
        ("realtime.high", 5),
        ("clock_time_get.monotonic", 0),
        ("monotonic.low", 99),
        ("clock_time_get.cputime", 58),
        ("clock_res_get", 0),
        ("clock_res.value", 1),
        ("random_get", 0),
        ("random.word", 0xABAB_ABAB),
        ("random_get.zero", 0),
        ("random_get.too_big", 28),
        ("environ_sizes_get", 0),
        ("environ.count", 2),
        // "GOGC=off\0" + "A=b\0"
        ("environ.size", 13),
        ("environ_get", 0),
        ("args_sizes_get", 0),
        ("args.count", 0),
        ("fd_fdstat_get.stdout", 0),
        ("fdstat.rights", 64),
        ("fd_fdstat_get.fd5", 8),
        ("fd_prestat_get", 8),
        ("fd_read", 52),
        ("path_open", 44),
        ("poll_oneoff", 0),
        ("poll_oneoff.nevents", 0),
        ("sched_yield", 0),
        ("sock_shutdown", 58),
    ];
    for (label, value) in expect {
        assert_eq!(r.value(label), Some(value), "{label}");
    }
    assert_eq!(r.bytes("environ.first"), Some(&b"GOGC=off\0A=b"[..]));
}

#[test]
fn proc_exit_in_a_callback_fails_the_vm() {
    let mut p = Probe::new();
    p.on(Callback::RequestHeaders)
        .raw("(call $proc_exit (i32.const 0))");
    let plugin = p.load(config("exit")).expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let err = h
        .request_headers(request("/", &[]), true)
        .map(|_| ())
        .expect_err("proc_exit fails the VM");
    let trap = err.trap().expect("a trap");
    assert!(
        matches!(trap.kind, TrapKind::ProcExit(0)),
        "even exit code 0 outside start-up: {trap:?}"
    );
    assert_eq!(trap.callback, "proxy_on_request_headers");
    assert!(h.vm.is_failed());
}
