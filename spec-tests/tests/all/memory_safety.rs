//! Guest memory (ABI reference §4, §5.3): out-of-bounds pointers, huge
//! lengths and broken allocators give INVALID_MEMORY_ACCESS (or WASI
//! FAULT), never a host panic, a stray effect or a huge allocation; a
//! trapping allocator fails the VM; the allocator may only log.

use std::collections::BTreeMap;

use wasmtime::Trap;

use vessel_host::{
    Effect, HostEnv, HostEnvBuilder, MapType, PluginConfig, Status, TrapKind, Vm, VmError,
};
use vessel_spec_tests::probe::{Callback, OUT, Probe, ProbeResults, RET_PTR, RET_SIZE, c};
use vessel_spec_tests::{
    Harness, LogCapture, Source, config, env_with_logs, headers, plugin, request,
};

const INVALID_MEMORY_ACCESS: u32 = Status::InvalidMemoryAccess.as_u32();
const WASI_FAULT: u32 = 21;

/// `<prefix><check>=<n>` lines as a map.
fn checks(logs: &LogCapture, prefix: &str) -> BTreeMap<String, u32> {
    logs.with_prefix(prefix)
        .into_iter()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn no_side_effects(effects: &[Effect]) {
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::LocalResponse { .. } | Effect::HttpCall { .. })),
        "{effects:?}"
    );
}

fn echo() -> HostEnvBuilder {
    HostEnv::builder().foreign_function("echo", |a: &[u8]| Ok(a.to_vec()))
}

#[test]
fn out_of_bounds_pointers() {
    let mut h = Harness::load_with(Source::Wat("bad_pointers"), config("bad_pointers"), echo())
        .expect("starts");
    let (ctx, _) = h
        .request_headers(request("/", &[]), false)
        .expect("request");
    h.vm.on_request_body(ctx, b"body", true).expect("body");
    assert!(h.logs.contains("bad_pointers: proxy checks done"));
    assert!(h.logs.contains("bad_pointers: done"));
    let results = checks(&h.logs, "bad_pointers: ");
    assert!(results.len() >= 30, "{results:#?}");
    for (check, status) in &results {
        let expected = if check.starts_with("fd_write.") {
            WASI_FAULT
        } else {
            INVALID_MEMORY_ACCESS
        };
        assert_eq!(*status, expected, "{check}");
    }
    no_side_effects(&h.effects());
    assert_eq!(
        h.vm.callouts_in_flight(),
        0,
        "no call the guest cannot know about"
    );
    assert!(!h.vm.local_response_sent(ctx));
}

#[test]
fn huge_lengths() {
    let mut h = Harness::load_with(Source::Wat("huge_lengths"), config("huge_lengths"), echo())
        .expect("starts");
    let (ctx, _) = h
        .request_headers(request("/", &[]), false)
        .expect("request");
    h.vm.on_request_body(ctx, b"body", true).expect("body");
    h.vm.on_response_headers(ctx, headers(&[(":status", "200"), ("x-up", "1")]), true)
        .expect("response");
    assert!(h.logs.contains("huge_lengths: done"));
    let results = checks(&h.logs, "huge_lengths: ");
    assert!(results.len() >= 27, "{results:#?}");
    for (check, status) in &results {
        let expected = match check.as_str() {
            // u32::MAX is the usual "read everything"; start past the end
            // clamps to an empty result (cpp-host adds in 64 bits).
            "get_buffer_bytes.max_size_max" | "get_buffer_bytes.start_max" => 0,
            // A malformed pair payload becomes an empty map (cpp-host).
            "set_header_map_pairs.count_huge" | "set_header_map_pairs.key_len_huge" => 0,
            "get_header_map_value.after_malformed" => Status::NotFound.as_u32(),
            c if c.starts_with("fd_write.") => WASI_FAULT,
            _ => INVALID_MEMORY_ACCESS,
        };
        assert_eq!(*status, expected, "{check}");
    }
    assert_eq!(
        h.vm.headers(ctx, MapType::HttpResponseHeaders)
            .map(|m| m.len()),
        Some(0),
        "emptied by the malformed payloads"
    );
    no_side_effects(&h.effects());
    assert!(h.vm.memory_size() < 1 << 20, "no huge allocation");
}

fn bad_malloc_config(name: &str, vm_config: &str) -> PluginConfig {
    PluginConfig {
        vm_configuration: vm_config.as_bytes().to_vec(),
        ..config(name)
    }
}

#[test]
fn allocators_returning_garbage_or_null() {
    for name in ["bad_malloc", "bad_malloc_zero"] {
        for vm_config in ["", "some vm config"] {
            let mut h = Harness::load_with(
                Source::Wat(name),
                bad_malloc_config(name, vm_config),
                echo(),
            )
            .expect("starts");
            h.request_headers(request("/", &[]), true).expect("request");
            let prefix = format!("{name}: ");
            assert!(h.logs.contains(&format!("{prefix}done")), "{name}");
            let results = checks(&h.logs, &prefix);
            let vm_config_status = if vm_config.is_empty() {
                0
            } else {
                INVALID_MEMORY_ACCESS
            };
            for (check, expected) in [
                ("vm_start.get_buffer_bytes.vm_config", vm_config_status),
                ("get_header_map_value", INVALID_MEMORY_ACCESS),
                ("get_header_map_pairs", INVALID_MEMORY_ACCESS),
                ("get_property", INVALID_MEMORY_ACCESS),
                ("set_shared_data", 0),
                ("get_shared_data", INVALID_MEMORY_ACCESS),
                ("get_buffer_bytes.vm_config", vm_config_status),
                ("call_foreign_function", INVALID_MEMORY_ACCESS),
            ] {
                assert_eq!(
                    results.get(check).copied(),
                    Some(expected),
                    "{name} ({vm_config:?}): {check}"
                );
            }
            assert!(
                results.get("malloc_calls").is_some_and(|n| *n > 0),
                "{name}"
            );
            assert!(!h.vm.is_failed());
        }
    }
}

#[test]
fn trapping_allocator_fails_the_vm() {
    // Empty VM configuration: start-up needs no allocation.
    let mut h = Harness::load(
        Source::Wat("bad_malloc_trap"),
        bad_malloc_config("bad_malloc_trap", ""),
    )
    .expect("starts");
    assert!(
        h.logs
            .contains("bad_malloc_trap: vm_start.get_buffer_bytes.vm_config=0")
    );
    let err = h
        .request_headers(request("/", &[]), true)
        .map(|_| ())
        .expect_err("the allocator traps");
    let trap = err.trap().expect("a trap");
    assert_eq!(trap.callback, "proxy_on_request_headers");
    assert_eq!(trap.plugin, "bad_malloc_trap");
    assert!(
        matches!(trap.kind, TrapKind::Wasm(Trap::UnreachableCodeReached)),
        "{trap:?}"
    );
    assert!(!h.logs.contains("bad_malloc_trap: done"));

    // Non-empty VM configuration: on_vm_start's read allocates and traps.
    let (env, _) = env_with_logs(HostEnv::builder());
    let p = plugin(
        Source::Wat("bad_malloc_trap"),
        bad_malloc_config("bad_malloc_trap", "cfg"),
    )
    .expect("loads");
    let err = Vm::new(&p, &env).map(|_| ()).expect_err("start fails");
    assert_eq!(err.trap().map(|t| t.callback), Some("proxy_on_vm_start"));
}

#[test]
fn the_allocator_may_only_log() {
    let mut p = Probe::new();
    let key = p.bytes(b"k");
    let val = p.bytes(b"v");
    let path = p.bytes(b":path");
    p.alloc_hook(format!(
        "(drop (call $proxy_log (i32.const 2) {val}))
    (if (i32.eq (local.get $size) (i32.const 2))
      (then (drop (call $proxy_set_shared_data {key} {val} (i32.const 0)))))"
    ));
    p.on(Callback::RequestHeaders)
        // ":path" = "/a": a 2-byte allocation makes the allocator misbehave.
        .status(
            "get",
            format!(
                "(call $proxy_get_header_map_value (i32.const 0) {path} {} {})",
                c(RET_PTR),
                c(RET_SIZE)
            ),
        );
    p.on(Callback::ResponseHeaders)
        // ":status" is 3 bytes: only logging happens in the allocator.
        .status(
            "get_ok",
            format!(
                "(call $proxy_get_header_map_pairs (i32.const 2) {} {})",
                c(RET_PTR),
                c(OUT)
            ),
        );
    let plugin = p.load(config("alloc_hook")).expect("loads");

    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let (ctx, _) = h
        .request_headers(request("/xyz", &[]), true)
        .expect("allowed");
    h.vm.on_response_headers(ctx, headers(&[(":status", "200")]), true)
        .expect("only logging in the allocator");
    assert!(h.logs.contains("v"), "the allocator logged");
    let r = ProbeResults::from_logs(&h.logs);
    assert_eq!(r.value("get"), Some(0));
    assert_eq!(r.value("get_ok"), Some(0));

    let err = h
        .request_headers(request("/a", &[]), true)
        .map(|_| ())
        .expect_err("restricted hostcall in the allocator");
    let trap = err.trap().expect("a trap");
    assert!(matches!(trap.kind, TrapKind::Host(_)), "{trap:?}");
    assert!(
        trap.message.contains("restricted_callback"),
        "{}",
        trap.message
    );
    assert!(
        trap.message.contains("proxy_set_shared_data"),
        "{}",
        trap.message
    );
    assert_eq!(h.env.shared_data().get("", b"k"), Err(Status::NotFound));
    assert!(matches!(h.vm.failure(), Some(VmError::Trap(_))));
}
