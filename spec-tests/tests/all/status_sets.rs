//! Status sets (ABI reference §2.1, §4, §11.20): for each hostcall module,
//! every status a hostcall returns is one its module doc lists (plus
//! INVALID_MEMORY_ACCESS for bad guest memory, which `memory.rs` documents
//! for every hostcall), and in the situations an SDK program meets (the
//! `sdk` cases) it is one the Rust SDK accepts; anything else would make
//! the SDK panic, i.e. trap (§11.20).
//!
//! Checks are labelled `<import>|<kind>.<case>`: kind `sdk` is checked
//! against both sets, kind `envoy` (a misuse Envoy answers with a status
//! the SDK does not expect) only against the documented set.

use std::collections::{BTreeMap, BTreeSet};

use vessel_host::shared::data::SharedDataLimits;
use vessel_host::{FixedClock, HostEnv, HostEnvBuilder, PluginConfig, QueueToken, Status};
use vessel_spec_tests::probe::{
    Blob, Body, Callback, OUT, OUT2, Probe, ProbeResults, RET_PTR, RET_SIZE, c, load,
};
use vessel_spec_tests::{Harness, config, headers, request};

use Status::{
    BadArgument, CasMismatch, Empty, InternalFailure, InvalidMemoryAccess, NotFound, Ok as OK,
    ParseFailure, SerializationFailure, Unimplemented,
};

/// What the docs and the Rust SDK allow for one hostcall.
struct Spec {
    import: &'static str,
    /// The module doc's list (INVALID_MEMORY_ACCESS is added for all).
    documented: &'static [Status],
    /// What the Rust SDK accepts (`None`: the SDK does not wrap it).
    sdk: Option<&'static [Status]>,
}

const fn spec(
    import: &'static str,
    documented: &'static [Status],
    sdk: Option<&'static [Status]>,
) -> Spec {
    Spec {
        import,
        documented,
        sdk,
    }
}

/// Adds a check labelled `<import>|<kind>.<case>`.
fn check(body: &mut Body, import: &str, kind: &str, case: &str, call: impl Into<String>) {
    body.status(&format!("{import}|{kind}.{case}"), call);
}

/// Starts `probe`, drives every callback once, and checks the results
/// against `specs`.
fn run(probe: &Probe, specs: &[Spec], builder: HostEnvBuilder, cfg: PluginConfig) -> ProbeResults {
    let plugin = probe.load(cfg).expect("probe loads");
    let mut h = Harness::new(&plugin, builder).expect("starts");
    let (ctx, _) = h
        .request_headers(request("/status", &[("x-a", "1")]), false)
        .expect("headers");
    h.vm.on_request_body(ctx, b"request body", true)
        .expect("body");
    h.vm.on_request_trailers(ctx, headers(&[("rt", "1")]))
        .expect("trailers");
    h.vm.on_response_headers(ctx, headers(&[(":status", "200")]), false)
        .expect("response headers");
    h.vm.on_response_body(ctx, b"response body", true)
        .expect("response body");
    h.vm.on_response_trailers(ctx, headers(&[("st", "1")]))
        .expect("trailers");
    h.vm.on_tick().expect("tick");
    h.vm.on_foreign_function(1, b"args").expect("foreign");
    h.vm.on_queue_ready(h.vm.root_context(), QueueToken::new(1))
        .expect("queue");
    h.vm.finish_http_stream(ctx).expect("finish");
    let results = ProbeResults::from_logs(&h.logs);
    let mut seen: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (label, value) in results.entries() {
        let Some((import, case)) = label.split_once('|') else {
            continue;
        };
        let status: u32 = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{label}: not a number"));
        let spec = specs
            .iter()
            .find(|s| s.import == import)
            .unwrap_or_else(|| panic!("{label}: no spec for {import}"));
        let status =
            Status::try_from(status).unwrap_or_else(|_| panic!("{label}: status {status}"));
        assert!(
            status == InvalidMemoryAccess || spec.documented.contains(&status),
            "{label}: {status:?} is not in the module doc's list {:?}",
            spec.documented
        );
        let kind = case.split('.').next().unwrap_or_default();
        if kind == "sdk"
            && let Some(sdk) = spec.sdk
        {
            assert!(
                sdk.contains(&status),
                "{label}: {status:?} would make the Rust SDK panic (it accepts {sdk:?})"
            );
        }
        seen.entry(spec.import).or_default().insert(kind);
    }
    for spec in specs {
        assert!(
            seen.contains_key(spec.import),
            "{} was not exercised",
            spec.import
        );
    }
    results
}

fn st(s: Status) -> Option<u32> {
    Some(s.as_u32())
}

#[test]
fn log() {
    let specs = [
        spec("proxy_log", &[OK, BadArgument], Some(&[OK])),
        spec("proxy_get_log_level", &[OK], Some(&[OK])),
    ];
    let mut p = Probe::new();
    let msg = p.bytes(b"message");
    let b = p.on(Callback::RequestHeaders);
    for level in 0..=5 {
        check(
            b,
            "proxy_log",
            "sdk",
            &format!("level{level}"),
            format!("(call $proxy_log (i32.const {level}) {msg})"),
        );
    }
    check(
        b,
        "proxy_log",
        "envoy",
        "level6",
        format!("(call $proxy_log (i32.const 6) {msg})"),
    );
    check(
        b,
        "proxy_log",
        "envoy",
        "oob",
        "(call $proxy_log (i32.const 2) (i32.const -256) (i32.const 1))",
    );
    check(
        b,
        "proxy_get_log_level",
        "sdk",
        "ok",
        format!("(call $proxy_get_log_level {})", c(OUT)),
    );
    check(
        b,
        "proxy_get_log_level",
        "envoy",
        "oob",
        "(call $proxy_get_log_level (i32.const -4))",
    );
    let r = run(&p, &specs, HostEnv::builder(), config("log"));
    assert_eq!(r.value("proxy_log|envoy.level6"), st(BadArgument));
    assert_eq!(r.value("proxy_log|envoy.oob"), st(InvalidMemoryAccess));
}

#[test]
fn time() {
    let specs = [
        spec("proxy_get_current_time_nanoseconds", &[OK], Some(&[OK])),
        spec("proxy_set_tick_period_milliseconds", &[OK], Some(&[OK])),
    ];
    let mut p = Probe::new();
    p.on(Callback::Configure)
        .status(
            "proxy_get_current_time_nanoseconds|sdk.root",
            format!("(call $proxy_get_current_time_nanoseconds {})", c(OUT)),
        )
        .value("time.low", load(OUT))
        .value("time.high", load(OUT + 4))
        .status(
            "proxy_set_tick_period_milliseconds|sdk.root",
            "(call $proxy_set_tick_period_milliseconds (i32.const 5))",
        );
    let b = p.on(Callback::RequestHeaders);
    check(
        b,
        "proxy_set_tick_period_milliseconds",
        "sdk",
        "stream",
        "(call $proxy_set_tick_period_milliseconds (i32.const 7))",
    );
    check(
        b,
        "proxy_set_tick_period_milliseconds",
        "sdk",
        "zero",
        "(call $proxy_set_tick_period_milliseconds (i32.const 0))",
    );
    check(
        b,
        "proxy_get_current_time_nanoseconds",
        "envoy",
        "oob",
        "(call $proxy_get_current_time_nanoseconds (i32.const -4))",
    );
    let clock = FixedClock {
        wall_nanos: 0x0123_4567_89AB_CDEF,
        monotonic_nanos: 1,
    };
    let r = run(&p, &specs, HostEnv::builder().clock(clock), config("time"));
    assert_eq!(
        r.value("time.low"),
        Some(0x89AB_CDEF),
        "the injected clock, u64 LE"
    );
    assert_eq!(r.value("time.high"), Some(0x0123_4567));
}

#[test]
fn buffers() {
    let specs = [
        spec(
            "proxy_get_buffer_bytes",
            &[OK, BadArgument, NotFound],
            Some(&[OK, NotFound]),
        ),
        spec(
            "proxy_set_buffer_bytes",
            &[OK, BadArgument, NotFound],
            Some(&[OK]),
        ),
        spec(
            "proxy_get_buffer_status",
            &[OK, BadArgument, NotFound],
            None,
        ),
        spec("proxy_get_configuration", &[OK], None),
    ];
    let mut p = Probe::new();
    let x = p.bytes(b"X");
    let (rp, rs) = (c(RET_PTR), c(RET_SIZE));
    let get = |ty: u32| {
        format!(
            "(call $proxy_get_buffer_bytes (i32.const {ty}) (i32.const 0) (i32.const -1) {rp} {rs})"
        )
    };
    let set = |ty: u32, start: i32, size: i32| {
        format!(
            "(call $proxy_set_buffer_bytes (i32.const {ty}) (i32.const {start}) (i32.const {size}) {x})"
        )
    };
    let status = |ty: u32| {
        format!(
            "(call $proxy_get_buffer_status (i32.const {ty}) {} {})",
            c(OUT),
            c(OUT2)
        )
    };
    let b = p.on(Callback::Configure);
    check(b, "proxy_get_buffer_bytes", "sdk", "plugin_config", get(7));
    check(
        b,
        "proxy_get_configuration",
        "doc",
        "configure",
        format!("(call $proxy_get_configuration {rp} {rs})"),
    );
    let b = p.on(Callback::RequestHeaders);
    check(b, "proxy_get_buffer_bytes", "sdk", "no_body_yet", get(0));
    check(b, "proxy_get_buffer_bytes", "sdk", "vm_config", get(6));
    check(
        b,
        "proxy_get_buffer_bytes",
        "sdk",
        "plugin_config_later",
        get(7),
    );
    check(
        b,
        "proxy_get_buffer_bytes",
        "sdk",
        "call_body_outside",
        get(4),
    );
    check(
        b,
        "proxy_get_buffer_bytes",
        "sdk",
        "downstream_data",
        get(2),
    );
    check(b, "proxy_get_buffer_bytes", "envoy", "type9", get(9));
    check(
        b,
        "proxy_set_buffer_bytes",
        "envoy",
        "no_body_yet",
        set(0, 0, 0),
    );
    check(
        b,
        "proxy_set_buffer_bytes",
        "envoy",
        "vm_config",
        set(6, 0, 0),
    );
    check(b, "proxy_get_buffer_status", "doc", "no_body", status(0));
    check(b, "proxy_get_buffer_status", "doc", "type9", status(9));
    check(
        b,
        "proxy_get_configuration",
        "doc",
        "stream",
        format!("(call $proxy_get_configuration {rp} {rs})"),
    );
    let b = p.on(Callback::RequestBody);
    check(b, "proxy_get_buffer_bytes", "sdk", "body", get(0));
    check(b, "proxy_get_buffer_status", "doc", "body", status(0));
    check(
        b,
        "proxy_set_buffer_bytes",
        "sdk",
        "replace",
        set(0, 0, 100),
    );
    check(b, "proxy_set_buffer_bytes", "sdk", "prepend", set(0, 0, 0));
    check(b, "proxy_set_buffer_bytes", "sdk", "append", set(0, -1, 0));
    check(b, "proxy_set_buffer_bytes", "envoy", "middle", set(0, 1, 0));
    let b = p.on(Callback::ForeignFunction);
    check(b, "proxy_get_buffer_bytes", "sdk", "call_data", get(8));
    check(
        b,
        "proxy_set_buffer_bytes",
        "envoy",
        "call_data",
        set(8, 0, 0),
    );
    let mut cfg = config("buffers");
    cfg.configuration = b"cfg".to_vec();
    let r = run(&p, &specs, HostEnv::builder(), cfg);
    assert_eq!(r.value("proxy_get_buffer_bytes|sdk.plugin_config"), st(OK));
    assert_eq!(
        r.value("proxy_get_buffer_bytes|sdk.plugin_config_later"),
        st(NotFound)
    );
    assert_eq!(
        r.value("proxy_set_buffer_bytes|envoy.middle"),
        st(BadArgument)
    );
    assert_eq!(
        r.value("proxy_set_buffer_bytes|envoy.vm_config"),
        st(BadArgument)
    );
}

#[test]
fn maps() {
    let specs = [
        spec(
            "proxy_get_header_map_pairs",
            &[OK, BadArgument],
            Some(&[OK]),
        ),
        spec(
            "proxy_set_header_map_pairs",
            &[OK, BadArgument],
            Some(&[OK]),
        ),
        spec("proxy_get_header_map_size", &[OK, BadArgument], None),
        spec(
            "proxy_get_header_map_value",
            &[OK, NotFound, BadArgument],
            Some(&[OK, NotFound]),
        ),
        spec(
            "proxy_add_header_map_value",
            &[OK, BadArgument],
            Some(&[OK]),
        ),
        spec(
            "proxy_replace_header_map_value",
            &[OK, BadArgument],
            Some(&[OK]),
        ),
        spec(
            "proxy_remove_header_map_value",
            &[OK, BadArgument],
            Some(&[OK]),
        ),
    ];
    let mut p = Probe::new();
    let key = p.bytes(b"x-a");
    let missing = p.bytes(b"x-missing");
    let pairs: Blob = p.bytes(&vessel_abi::pairs::encode([(&b"k"[..], &b"v"[..])]));
    let (rp, rs) = (c(RET_PTR), c(RET_SIZE));
    let ops = |b: &mut Body, map: u32, kind: &str, case: &str| {
        let m = c(map);
        check(
            b,
            "proxy_get_header_map_pairs",
            kind,
            case,
            format!("(call $proxy_get_header_map_pairs {m} {rp} {rs})"),
        );
        check(
            b,
            "proxy_get_header_map_size",
            kind,
            case,
            format!("(call $proxy_get_header_map_size {m} {})", c(OUT)),
        );
        check(
            b,
            "proxy_get_header_map_value",
            kind,
            case,
            format!("(call $proxy_get_header_map_value {m} {key} {rp} {rs})"),
        );
        check(
            b,
            "proxy_get_header_map_value",
            kind,
            &format!("{case}_missing"),
            format!("(call $proxy_get_header_map_value {m} {missing} {rp} {rs})"),
        );
        check(
            b,
            "proxy_add_header_map_value",
            kind,
            case,
            format!("(call $proxy_add_header_map_value {m} {key} {key})"),
        );
        check(
            b,
            "proxy_replace_header_map_value",
            kind,
            case,
            format!("(call $proxy_replace_header_map_value {m} {key} {key})"),
        );
        check(
            b,
            "proxy_remove_header_map_value",
            kind,
            case,
            format!("(call $proxy_remove_header_map_value {m} {missing})"),
        );
        check(
            b,
            "proxy_set_header_map_pairs",
            kind,
            case,
            format!("(call $proxy_set_header_map_pairs {m} {pairs})"),
        );
    };
    ops(p.on(Callback::RequestHeaders), 0, "sdk", "request_headers");
    ops(
        p.on(Callback::RequestTrailers),
        1,
        "sdk",
        "request_trailers",
    );
    ops(
        p.on(Callback::ResponseHeaders),
        2,
        "sdk",
        "response_headers",
    );
    ops(
        p.on(Callback::ResponseTrailers),
        3,
        "sdk",
        "response_trailers",
    );
    // After Continue (Envoy: BAD_ARGUMENT; the SDK panics, §11.4).
    ops(
        p.on(Callback::ResponseBody),
        0,
        "envoy",
        "sealed_request_headers",
    );
    // Outside any call response; bad map types.
    ops(p.on(Callback::Tick), 6, "envoy", "call_headers_outside");
    ops(p.on(Callback::Tick), 8, "envoy", "map8");
    // From a root context there is no stream map: get_pairs stays OK.
    let b = p.on(Callback::Tick);
    check(
        b,
        "proxy_get_header_map_pairs",
        "sdk",
        "root",
        format!("(call $proxy_get_header_map_pairs (i32.const 0) {rp} {rs})"),
    );
    let r = run(&p, &specs, HostEnv::builder(), config("maps"));
    assert_eq!(
        r.value("proxy_get_header_map_value|sdk.request_headers_missing"),
        st(NotFound)
    );
    assert_eq!(
        r.value("proxy_get_header_map_pairs|envoy.sealed_request_headers"),
        st(OK)
    );
    assert_eq!(
        r.value("proxy_add_header_map_value|envoy.sealed_request_headers"),
        st(BadArgument)
    );
    assert_eq!(
        r.value("proxy_get_header_map_pairs|envoy.map8"),
        st(BadArgument)
    );
}

struct Provider;

impl vessel_host::PropertyProvider for Provider {
    fn get_property(
        &self,
        path: &[&[u8]],
        _: vessel_host::PropertyScope<'_>,
    ) -> Result<Option<Vec<u8>>, Status> {
        match path {
            [b"unserializable"] => Err(SerializationFailure),
            [b"broken"] => Err(InternalFailure),
            _ => Ok(None),
        }
    }
}

#[test]
fn properties() {
    let specs = [
        spec(
            "proxy_get_property",
            &[OK, NotFound, SerializationFailure, InternalFailure],
            Some(&[OK, NotFound, SerializationFailure, InternalFailure]),
        ),
        spec("proxy_set_property", &[OK, NotFound], Some(&[OK])),
    ];
    let mut p = Probe::new();
    let (rp, rs) = (c(RET_PTR), c(RET_SIZE));
    let name = p.bytes(b"plugin_name");
    let absent = p.bytes(b"no\0such");
    let unser = p.bytes(b"unserializable");
    let broken = p.bytes(b"broken");
    let path = p.bytes(b"mine");
    let val = p.bytes(b"v");
    let get = |b: Blob| format!("(call $proxy_get_property {b} {rp} {rs})");
    let b = p.on(Callback::RequestHeaders);
    check(b, "proxy_get_property", "sdk", "builtin", get(name));
    check(b, "proxy_get_property", "sdk", "absent", get(absent));
    check(
        b,
        "proxy_get_property",
        "sdk",
        "provider_serialization",
        get(unser),
    );
    check(
        b,
        "proxy_get_property",
        "sdk",
        "provider_internal",
        get(broken),
    );
    check(
        b,
        "proxy_set_property",
        "sdk",
        "stream",
        format!("(call $proxy_set_property {path} {val})"),
    );
    check(
        b,
        "proxy_set_property",
        "sdk",
        "empty_value",
        format!("(call $proxy_set_property {path} (i32.const 0) (i32.const 0))"),
    );
    let b = p.on(Callback::Tick);
    check(b, "proxy_get_property", "sdk", "root", get(name));
    check(
        b,
        "proxy_set_property",
        "envoy",
        "root",
        format!("(call $proxy_set_property {path} {val})"),
    );
    let r = run(
        &p,
        &specs,
        HostEnv::builder().property_provider(Provider),
        config("props"),
    );
    assert_eq!(
        r.value("proxy_get_property|sdk.provider_serialization"),
        st(SerializationFailure)
    );
    assert_eq!(
        r.value("proxy_set_property|envoy.root"),
        st(NotFound),
        "Envoy: no stream info"
    );
}

#[test]
fn shared_data() {
    let specs = [
        spec(
            "proxy_get_shared_data",
            &[OK, NotFound],
            Some(&[OK, NotFound]),
        ),
        spec(
            "proxy_set_shared_data",
            &[OK, CasMismatch, BadArgument],
            Some(&[OK, CasMismatch]),
        ),
    ];
    let mut p = Probe::new();
    let (rp, rs, out) = (c(RET_PTR), c(RET_SIZE), c(OUT));
    let key = p.bytes(b"k");
    let other = p.bytes(b"other");
    let val = p.bytes(b"value");
    let big = p.bytes(&[b'x'; 64]);
    let b = p.on(Callback::RequestHeaders);
    check(
        b,
        "proxy_get_shared_data",
        "sdk",
        "missing",
        format!("(call $proxy_get_shared_data {key} {rp} {rs} {out})"),
    );
    check(
        b,
        "proxy_set_shared_data",
        "sdk",
        "cas0",
        format!("(call $proxy_set_shared_data {key} {val} (i32.const 0))"),
    );
    check(
        b,
        "proxy_get_shared_data",
        "sdk",
        "present",
        format!("(call $proxy_get_shared_data {key} {rp} {rs} {out})"),
    );
    check(
        b,
        "proxy_set_shared_data",
        "sdk",
        "cas_ok",
        format!("(call $proxy_set_shared_data {key} {val} {})", load(OUT)),
    );
    check(
        b,
        "proxy_set_shared_data",
        "sdk",
        "cas_stale",
        format!("(call $proxy_set_shared_data {key} {val} (i32.const -7))"),
    );
    check(
        b,
        "proxy_set_shared_data",
        "sdk",
        "absent_with_cas",
        format!("(call $proxy_set_shared_data {other} {val} (i32.const 3))"),
    );
    check(
        b,
        "proxy_set_shared_data",
        "envoy",
        "over_limit",
        format!("(call $proxy_set_shared_data {key} {big} (i32.const 0))"),
    );
    let limits = SharedDataLimits {
        max_value_bytes: 32,
        ..SharedDataLimits::default()
    };
    let r = run(
        &p,
        &specs,
        HostEnv::builder().shared_data_limits(limits),
        config("sd"),
    );
    assert_eq!(
        r.value("proxy_set_shared_data|sdk.cas_stale"),
        st(CasMismatch)
    );
    assert_eq!(
        r.value("proxy_set_shared_data|envoy.over_limit"),
        st(BadArgument)
    );
}

#[test]
fn queues() {
    let specs = [
        spec("proxy_register_shared_queue", &[OK], Some(&[OK])),
        spec(
            "proxy_resolve_shared_queue",
            &[OK, NotFound],
            Some(&[OK, NotFound]),
        ),
        spec(
            "proxy_enqueue_shared_queue",
            &[OK, NotFound, InternalFailure],
            Some(&[OK, NotFound]),
        ),
        spec(
            "proxy_dequeue_shared_queue",
            &[OK, NotFound, Empty],
            Some(&[OK, NotFound, Empty]),
        ),
    ];
    let mut p = Probe::new();
    let (rp, rs, out) = (c(RET_PTR), c(RET_SIZE), c(OUT));
    let name = p.bytes(b"q");
    let unknown = p.bytes(b"unknown-q");
    let item = p.bytes(b"i");
    let token = load(OUT);
    let b = p.on(Callback::RequestHeaders);
    check(
        b,
        "proxy_register_shared_queue",
        "sdk",
        "new",
        format!("(call $proxy_register_shared_queue {name} {out})"),
    );
    check(
        b,
        "proxy_register_shared_queue",
        "sdk",
        "again",
        format!("(call $proxy_register_shared_queue {name} {out})"),
    );
    check(
        b,
        "proxy_resolve_shared_queue",
        "sdk",
        "own",
        format!(
            "(call $proxy_resolve_shared_queue (i32.const 0) (i32.const 0) {name} {})",
            c(OUT2)
        ),
    );
    check(
        b,
        "proxy_resolve_shared_queue",
        "sdk",
        "unknown",
        format!(
            "(call $proxy_resolve_shared_queue (i32.const 0) (i32.const 0) {unknown} {})",
            c(OUT2)
        ),
    );
    check(
        b,
        "proxy_dequeue_shared_queue",
        "sdk",
        "empty",
        format!("(call $proxy_dequeue_shared_queue {token} {rp} {rs})"),
    );
    check(
        b,
        "proxy_enqueue_shared_queue",
        "sdk",
        "ok",
        format!("(call $proxy_enqueue_shared_queue {token} {item})"),
    );
    check(
        b,
        "proxy_enqueue_shared_queue",
        "envoy",
        "full",
        format!("(call $proxy_enqueue_shared_queue {token} {item})"),
    );
    check(
        b,
        "proxy_enqueue_shared_queue",
        "sdk",
        "unknown",
        format!("(call $proxy_enqueue_shared_queue (i32.const -1) {item})"),
    );
    check(
        b,
        "proxy_dequeue_shared_queue",
        "sdk",
        "ok",
        format!("(call $proxy_dequeue_shared_queue {token} {rp} {rs})"),
    );
    check(
        b,
        "proxy_dequeue_shared_queue",
        "sdk",
        "unknown",
        format!("(call $proxy_dequeue_shared_queue (i32.const -1) {rp} {rs})"),
    );
    let r = run(
        &p,
        &specs,
        HostEnv::builder().queue_max_len(1),
        config("queues"),
    );
    assert_eq!(
        r.value("proxy_enqueue_shared_queue|envoy.full"),
        st(InternalFailure)
    );
    assert_eq!(r.value("proxy_dequeue_shared_queue|sdk.empty"), st(Empty));
}

#[test]
fn metrics() {
    let specs = [
        spec("proxy_define_metric", &[OK, BadArgument], Some(&[OK])),
        spec(
            "proxy_increment_metric",
            &[OK, BadArgument, NotFound],
            Some(&[OK, BadArgument, NotFound]),
        ),
        spec(
            "proxy_record_metric",
            &[OK, NotFound],
            Some(&[OK, NotFound]),
        ),
        spec(
            "proxy_get_metric",
            &[OK, BadArgument, NotFound],
            Some(&[OK, BadArgument, NotFound]),
        ),
    ];
    let mut p = Probe::new();
    let name = p.bytes(b"m");
    let out = c(OUT);
    let b = p.on(Callback::Configure);
    for ty in 0..3 {
        check(
            b,
            "proxy_define_metric",
            "sdk",
            &format!("type{ty}"),
            format!("(call $proxy_define_metric (i32.const {ty}) {name} {out})"),
        );
    }
    check(
        b,
        "proxy_define_metric",
        "envoy",
        "type3",
        format!("(call $proxy_define_metric (i32.const 3) {name} {out})"),
    );
    let b = p.on(Callback::RequestHeaders);
    // Ids: counter 4, gauge 5, histogram 6; 7 is unknown.
    for (id, what) in [
        (4, "counter"),
        (5, "gauge"),
        (6, "histogram"),
        (7, "unknown"),
    ] {
        check(
            b,
            "proxy_increment_metric",
            "sdk",
            what,
            format!("(call $proxy_increment_metric (i32.const {id}) (i64.const 1))"),
        );
        check(
            b,
            "proxy_increment_metric",
            "sdk",
            &format!("{what}_zero"),
            format!("(call $proxy_increment_metric (i32.const {id}) (i64.const 0))"),
        );
        check(
            b,
            "proxy_record_metric",
            "sdk",
            what,
            format!("(call $proxy_record_metric (i32.const {id}) (i64.const 3))"),
        );
        check(
            b,
            "proxy_get_metric",
            "sdk",
            what,
            format!("(call $proxy_get_metric (i32.const {id}) {out})"),
        );
    }
    let r = run(&p, &specs, HostEnv::builder(), config("metrics"));
    assert_eq!(r.value("proxy_define_metric|envoy.type3"), st(BadArgument));
    assert_eq!(
        r.value("proxy_increment_metric|sdk.counter_zero"),
        st(BadArgument)
    );
    assert_eq!(r.value("proxy_record_metric|sdk.unknown"), st(NotFound));
}

#[test]
fn callouts() {
    let specs = [
        spec(
            "proxy_http_call",
            &[OK, BadArgument, InternalFailure],
            Some(&[OK, BadArgument, InternalFailure]),
        ),
        spec(
            "proxy_grpc_call",
            &[OK, ParseFailure, InternalFailure],
            Some(&[OK, ParseFailure, InternalFailure]),
        ),
        spec(
            "proxy_grpc_stream",
            &[OK, ParseFailure, InternalFailure],
            Some(&[OK, ParseFailure, InternalFailure]),
        ),
        spec(
            "proxy_grpc_send",
            &[OK, BadArgument, NotFound],
            Some(&[OK, BadArgument, NotFound]),
        ),
        spec("proxy_grpc_cancel", &[OK, NotFound], Some(&[OK, NotFound])),
        spec("proxy_grpc_close", &[OK, NotFound], Some(&[OK, NotFound])),
    ];
    let mut p = Probe::new();
    let out = c(OUT);
    let known = p.bytes(b"cluster");
    let unknown = p.bytes(b"nowhere");
    let hdrs = p.bytes(&vessel_abi::pairs::encode([
        (&b":method"[..], &b"GET"[..]),
        (b":path", b"/"),
        (b":authority", b"a"),
    ]));
    let no_path = p.bytes(&vessel_abi::pairs::encode([(&b":method"[..], &b"GET"[..])]));
    let svc = p.bytes(b"svc");
    let method = p.bytes(b"M");
    let msg = p.bytes(b"msg");
    let http = |up: Blob, h: Blob, timeout: i32| {
        format!(
            "(call $proxy_http_call {up} {h} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const {timeout}) {out})"
        )
    };
    let grpc = |up: Blob, timeout: i32| {
        format!(
            "(call $proxy_grpc_call {up} {svc} {method} (i32.const 0) (i32.const 0) {msg} (i32.const {timeout}) {out})"
        )
    };
    let stream = |up: Blob| {
        format!("(call $proxy_grpc_stream {up} {svc} {method} (i32.const 0) (i32.const 0) {out})")
    };
    // Tokens (per VM): gRPC calls 5, 9, ...; gRPC streams 6, 10, ...
    let send =
        |token: u32| format!("(call $proxy_grpc_send (i32.const {token}) {msg} (i32.const 0))");
    let b = p.on(Callback::RequestHeaders);
    check(b, "proxy_http_call", "sdk", "ok", http(known, hdrs, 1000));
    check(
        b,
        "proxy_http_call",
        "sdk",
        "no_timeout",
        http(known, hdrs, 0),
    );
    check(
        b,
        "proxy_http_call",
        "sdk",
        "unknown_cluster",
        http(unknown, hdrs, 1000),
    );
    check(
        b,
        "proxy_http_call",
        "sdk",
        "missing_path",
        http(known, no_path, 1000),
    );
    check(
        b,
        "proxy_http_call",
        "sdk",
        "negative_timeout",
        http(known, hdrs, -1),
    );
    check(b, "proxy_grpc_call", "sdk", "ok", grpc(known, 1000));
    // cpp-host reads the gRPC timeout as unsigned: 0x80000000 ms is valid.
    check(
        b,
        "proxy_grpc_call",
        "sdk",
        "huge_timeout",
        grpc(known, i32::MIN),
    );
    check(
        b,
        "proxy_grpc_call",
        "sdk",
        "unknown_cluster",
        grpc(unknown, 1000),
    );
    check(b, "proxy_grpc_stream", "sdk", "ok", stream(known));
    check(
        b,
        "proxy_grpc_stream",
        "sdk",
        "unknown_cluster",
        stream(unknown),
    );
    check(b, "proxy_grpc_send", "sdk", "stream", send(6));
    check(b, "proxy_grpc_send", "sdk", "unary_token", send(5));
    check(b, "proxy_grpc_send", "sdk", "unknown", send(1001));
    check(
        b,
        "proxy_grpc_close",
        "sdk",
        "stream",
        "(call $proxy_grpc_close (i32.const 6))",
    );
    check(
        b,
        "proxy_grpc_close",
        "sdk",
        "unknown",
        "(call $proxy_grpc_close (i32.const 1001))",
    );
    check(
        b,
        "proxy_grpc_cancel",
        "sdk",
        "unary",
        "(call $proxy_grpc_cancel (i32.const 5))",
    );
    check(
        b,
        "proxy_grpc_cancel",
        "sdk",
        "again",
        "(call $proxy_grpc_cancel (i32.const 5))",
    );
    let builder = HostEnv::builder().known_clusters(|c| c == "cluster");
    let r = run(&p, &specs, builder, config("callouts"));
    assert_eq!(
        r.value("proxy_http_call|sdk.unknown_cluster"),
        st(BadArgument)
    );
    assert_eq!(
        r.value("proxy_grpc_call|sdk.unknown_cluster"),
        st(ParseFailure)
    );
    assert_eq!(r.value("proxy_grpc_call|sdk.huge_timeout"), st(OK));
    assert_eq!(r.value("proxy_grpc_send|sdk.stream"), st(OK));
    assert_eq!(r.value("proxy_grpc_send|sdk.unary_token"), st(BadArgument));
    assert_eq!(r.value("proxy_grpc_cancel|sdk.again"), st(NotFound));
}

#[test]
fn stream_control() {
    let specs = [
        spec(
            "proxy_continue_stream",
            &[OK, BadArgument, Unimplemented],
            Some(&[OK]),
        ),
        spec("proxy_close_stream", &[OK, BadArgument], Some(&[OK])),
        spec("proxy_continue_request", &[OK], None),
        spec("proxy_continue_response", &[OK], None),
        spec("proxy_clear_route_cache", &[OK], None),
        spec("proxy_send_local_response", &[OK], Some(&[OK])),
        spec(
            "proxy_set_effective_context",
            &[OK, BadArgument],
            Some(&[OK, BadArgument]),
        ),
        spec("proxy_done", &[OK, NotFound], Some(&[OK])),
        spec("proxy_get_status", &[OK], Some(&[OK])),
    ];
    let mut p = Probe::new();
    let body = p.bytes(b"b");
    let (rp, rs) = (c(RET_PTR), c(RET_SIZE));
    let reply = format!(
        "(call $proxy_send_local_response (i32.const 403) (i32.const 0) (i32.const 0) {body} (i32.const 0) (i32.const 0) (i32.const -1))"
    );
    let b = p.on(Callback::RequestHeaders);
    check(
        b,
        "proxy_set_effective_context",
        "sdk",
        "self",
        "(call $proxy_set_effective_context (local.get $a))",
    );
    check(
        b,
        "proxy_set_effective_context",
        "sdk",
        "unknown",
        "(call $proxy_set_effective_context (i32.const 4242))",
    );
    check(
        b,
        "proxy_continue_stream",
        "sdk",
        "request",
        "(call $proxy_continue_stream (i32.const 0))",
    );
    check(
        b,
        "proxy_continue_stream",
        "envoy",
        "upstream",
        "(call $proxy_continue_stream (i32.const 3))",
    );
    check(
        b,
        "proxy_continue_stream",
        "envoy",
        "type4",
        "(call $proxy_continue_stream (i32.const 4))",
    );
    check(
        b,
        "proxy_close_stream",
        "envoy",
        "type4",
        "(call $proxy_close_stream (i32.const 4))",
    );
    check(
        b,
        "proxy_continue_request",
        "doc",
        "stream",
        "(call $proxy_continue_request)",
    );
    check(
        b,
        "proxy_clear_route_cache",
        "doc",
        "stream",
        "(call $proxy_clear_route_cache)",
    );
    check(
        b,
        "proxy_get_status",
        "sdk",
        "stream",
        format!("(call $proxy_get_status {} {rp} {rs})", c(OUT)),
    );
    check(b, "proxy_done", "envoy", "stream", "(call $proxy_done)");
    let b = p.on(Callback::ResponseHeaders);
    check(
        b,
        "proxy_continue_stream",
        "sdk",
        "response",
        "(call $proxy_continue_stream (i32.const 1))",
    );
    check(
        b,
        "proxy_continue_response",
        "doc",
        "stream",
        "(call $proxy_continue_response)",
    );
    check(
        b,
        "proxy_close_stream",
        "sdk",
        "response",
        "(call $proxy_close_stream (i32.const 1))",
    );
    check(
        b,
        "proxy_send_local_response",
        "sdk",
        "stream",
        reply.clone(),
    );
    let b = p.on(Callback::Tick);
    check(
        b,
        "proxy_continue_stream",
        "sdk",
        "root",
        "(call $proxy_continue_stream (i32.const 0))",
    );
    check(
        b,
        "proxy_close_stream",
        "sdk",
        "root",
        "(call $proxy_close_stream (i32.const 0))",
    );
    check(b, "proxy_send_local_response", "sdk", "root", reply);
    check(
        b,
        "proxy_get_status",
        "sdk",
        "root",
        format!("(call $proxy_get_status {} {rp} {rs})", c(OUT)),
    );
    check(
        b,
        "proxy_done",
        "envoy",
        "not_pending",
        "(call $proxy_done)",
    );
    let r = run(&p, &specs, HostEnv::builder(), config("control"));
    assert_eq!(
        r.value("proxy_continue_stream|envoy.upstream"),
        st(Unimplemented)
    );
    assert_eq!(
        r.value("proxy_set_effective_context|sdk.unknown"),
        st(BadArgument)
    );
    assert_eq!(r.value("proxy_done|envoy.not_pending"), st(NotFound));
}

#[test]
fn done_after_a_deferred_root_shutdown() {
    let mut p = Probe::new();
    // The root (id 1) defers its deletion; streams do not.
    p.on(Callback::Done)
        .returns("(i32.ne (local.get $a) (i32.const 1))");
    p.on(Callback::Tick).status("done", "(call $proxy_done)");
    p.on(Callback::Delete).value("deleted", "(local.get $a)");
    let plugin = p.load(config("done")).expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let root = h.vm.root_context();
    assert_eq!(root.get(), 1);
    assert!(
        matches!(h.vm.shutdown(), Ok(false)),
        "on_done returned false"
    );
    assert_eq!(h.vm.context_count(), 1, "the root waits for proxy_done");
    h.vm.on_tick().expect("tick");
    let r = ProbeResults::from_logs(&h.logs);
    assert_eq!(r.value("done"), st(OK), "the Rust SDK accepts only OK here");
    assert_eq!(
        r.value("deleted"),
        Some(root.get()),
        "on_delete ran after the call"
    );
    assert_eq!(h.vm.context_count(), 0);
}

#[test]
fn foreign() {
    let specs = [spec(
        "proxy_call_foreign_function",
        &[
            OK,
            NotFound,
            BadArgument,
            SerializationFailure,
            InternalFailure,
        ],
        Some(&[
            OK,
            NotFound,
            BadArgument,
            SerializationFailure,
            InternalFailure,
        ]),
    )];
    let mut p = Probe::new();
    let (rp, rs) = (c(RET_PTR), c(RET_SIZE));
    let echo = p.bytes(b"echo");
    let fails = p.bytes(b"fails");
    let unknown = p.bytes(b"unknown");
    let arg = p.bytes(b"a");
    let b = p.on(Callback::RequestHeaders);
    check(
        b,
        "proxy_call_foreign_function",
        "sdk",
        "ok",
        format!("(call $proxy_call_foreign_function {echo} {arg} {rp} {rs})"),
    );
    check(
        b,
        "proxy_call_foreign_function",
        "sdk",
        "no_result_wanted",
        format!("(call $proxy_call_foreign_function {echo} {arg} (i32.const 0) (i32.const 0))"),
    );
    check(
        b,
        "proxy_call_foreign_function",
        "sdk",
        "unknown",
        format!("(call $proxy_call_foreign_function {unknown} {arg} {rp} {rs})"),
    );
    check(
        b,
        "proxy_call_foreign_function",
        "sdk",
        "fails",
        format!("(call $proxy_call_foreign_function {fails} {arg} {rp} {rs})"),
    );
    let builder = HostEnv::builder()
        .foreign_function("echo", |a: &[u8]| Ok(a.to_vec()))
        .foreign_function("fails", |_: &[u8]| Err(BadArgument));
    let r = run(&p, &specs, builder, config("foreign"));
    assert_eq!(
        r.value("proxy_call_foreign_function|sdk.unknown"),
        st(NotFound)
    );
    assert_eq!(
        r.value("proxy_call_foreign_function|sdk.fails"),
        st(BadArgument)
    );
}

#[test]
fn misc() {
    let specs = [
        spec("envoy_resolve_dns", &[Unimplemented], None),
        spec("proxy_redis_init", &[OK, BadArgument], None),
        spec(
            "proxy_redis_call",
            &[OK, BadArgument, InternalFailure],
            None,
        ),
    ];
    let mut p = Probe::new();
    let b = p.on(Callback::RequestHeaders);
    check(
        b,
        "envoy_resolve_dns",
        "doc",
        "any",
        format!(
            "(call $envoy_resolve_dns (i32.const 0) (i32.const 0) {})",
            c(OUT)
        ),
    );
    check(
        b,
        "proxy_redis_init",
        "doc",
        "any",
        "(call $proxy_redis_init (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))",
    );
    check(
        b,
        "proxy_redis_call",
        "doc",
        "empty_query",
        "(call $proxy_redis_call (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))",
    );
    b.value(
        "pthread_equal.same",
        "(call $pthread_equal (i32.const 3) (i32.const 3))",
    )
    .value(
        "pthread_equal.different",
        "(call $pthread_equal (i32.const 3) (i32.const 4))",
    );
    let r = run(&p, &specs, HostEnv::builder(), config("misc"));
    assert_eq!(r.value("proxy_redis_init|doc.any"), st(OK));
    assert_eq!(r.value("proxy_redis_call|doc.empty_query"), st(BadArgument));
    assert_eq!(r.value("pthread_equal.same"), Some(1));
    assert_eq!(r.value("pthread_equal.different"), Some(0));
}
