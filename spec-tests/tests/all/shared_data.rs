//! Shared data (ABI reference §4.6, §11.14): get/set with CAS through the
//! Rust SDK guest `guest_shared_data`, VMs with the same `vm_id` sharing a
//! namespace, and raw statuses through a probe.

use vessel_host::{HostEnv, MapType, PluginConfig, Status, Vm};
use vessel_spec_tests::probe::{Callback, OUT, Probe, ProbeResults, RET_PTR, RET_SIZE, c, load};
use vessel_spec_tests::{Harness, Source, config, headers, plugin, request, value};

const COUNTER: &[u8] = b"shared_data.requests";

fn cfg(vm_id: &str) -> PluginConfig {
    PluginConfig {
        vm_id: vm_id.to_owned(),
        ..config("shared_data")
    }
}

/// Runs one request with `extra` headers on `vm`; returns the response headers.
fn run(vm: &mut Vm, extra: &[(&str, &str)]) -> vessel_host::HeaderMap {
    let ctx = vm.create_http_context().expect("context");
    vm.on_request_headers(ctx, request("/", extra), true)
        .expect("request headers");
    vm.on_response_headers(ctx, headers(&[(":status", "200")]), true)
        .expect("response headers");
    let out = vm
        .headers(ctx, MapType::HttpResponseHeaders)
        .cloned()
        .expect("response headers kept");
    vm.finish_http_stream(ctx).expect("finish");
    out
}

#[test]
fn counter_increments_with_cas() {
    let mut h = Harness::load(Source::Guest("shared_data"), cfg("counter")).expect("starts");
    let counts: Vec<Option<String>> = (0..3)
        .map(|_| value(&run(&mut h.vm, &[]), "x-request-count"))
        .collect();
    assert_eq!(
        counts,
        [Some("1".into()), Some("2".into()), Some("3".into())]
    );
    let (stored, cas) = h.env.shared_data().get("counter", COUNTER).expect("stored");
    assert_eq!(stored, b"3");
    assert_ne!(cas, 0);
    assert!(h.logs.contains("shared_data: counter=3"));
}

#[test]
fn cas_mismatch_then_success() {
    let mut h = Harness::load(Source::Guest("shared_data"), cfg("cas")).expect("starts");
    run(&mut h.vm, &[("x-shared-op", "cas-demo")]);
    for line in [
        "cas mismatch",
        "cas ok",
        "shared_data: cas-demo value=Some(\"v2\") cas_changed=true",
    ] {
        assert!(
            h.logs.contains(line),
            "missing `{line}` in {:#?}",
            h.logs.lines()
        );
    }
    let (v, _) = h
        .env
        .shared_data()
        .get("cas", b"shared_data.cas-demo")
        .expect("stored");
    assert_eq!(v, b"v2");
}

#[test]
fn same_vm_id_shares_and_other_vm_id_is_isolated() {
    let mut a = Harness::load(Source::Guest("shared_data"), cfg("tenant")).expect("starts");
    let same = plugin(Source::Guest("shared_data"), cfg("tenant")).expect("plugin");
    let other = plugin(Source::Guest("shared_data"), cfg("other-tenant")).expect("plugin");
    let mut b = a.sibling(&same).expect("second VM, same vm_id");
    let mut c = a.sibling(&other).expect("third VM, other vm_id");
    assert_ne!(a.vm.instance_id(), b.instance_id());

    let ra = run(&mut a.vm, &[("x-shared-set", "greeting=hello")]);
    let rb = run(&mut b, &[("x-shared-get", "greeting")]);
    let rc = run(&mut c, &[("x-shared-get", "greeting")]);
    assert_eq!(value(&ra, "x-request-count").as_deref(), Some("1"));
    assert_eq!(
        value(&rb, "x-request-count").as_deref(),
        Some("2"),
        "shared counter"
    );
    assert_eq!(value(&rb, "x-shared-value").as_deref(), Some("hello"));
    assert_eq!(
        value(&rc, "x-request-count").as_deref(),
        Some("1"),
        "own counter"
    );
    assert_eq!(value(&rc, "x-shared-value").as_deref(), Some("<none>"));
    assert_eq!(value(&rc, "x-shared-cas").as_deref(), Some("0"));
    // The cas a reader gets is the one the store holds.
    let (_, cas) = a
        .env
        .shared_data()
        .get("tenant", b"greeting")
        .expect("stored");
    assert_eq!(value(&rb, "x-shared-cas"), Some(cas.to_string()));
}

#[test]
fn raw_statuses_follow_envoy() {
    let mut p = Probe::new();
    let key = p.bytes(b"probe-key");
    let fresh = p.bytes(b"fresh-key");
    let empty_key = p.bytes(b"empty");
    let v1 = p.bytes(b"one");
    let v2 = p.bytes(b"two");
    let (rp, rs, out) = (c(RET_PTR), c(RET_SIZE), c(OUT));
    p.on(Callback::RequestHeaders)
        .status(
            "get.missing",
            format!("(call $proxy_get_shared_data {key} {rp} {rs} {out})"),
        )
        .status("set.v1", format!("(call $proxy_set_shared_data {key} {v1} (i32.const 0))"))
        .status("get.v1", format!("(call $proxy_get_shared_data {key} {rp} {rs} {out})"))
        .returned("get.v1.bytes")
        .value("get.v1.cas", load(OUT))
        .status(
            "set.stale",
            format!("(call $proxy_set_shared_data {key} {v2} (i32.add {} (i32.const 1)))", load(OUT)),
        )
        .status("set.cas", format!("(call $proxy_set_shared_data {key} {v2} {})", load(OUT)))
        .status("get.v2", format!("(call $proxy_get_shared_data {key} {rp} {rs} {out})"))
        .returned("get.v2.bytes")
        .value("get.v2.cas", load(OUT))
        // A non-zero cas on an absent key is not checked (cpp-host SharedData::set).
        .status(
            "set.absent_with_cas",
            format!("(call $proxy_set_shared_data {fresh} {v1} (i32.const 12345))"),
        )
        .status(
            "set.empty",
            format!("(call $proxy_set_shared_data {empty_key} (i32.const 0) (i32.const 0) (i32.const 0))"),
        )
        .raw(format!("(i32.store {rp} (i32.const 99))"))
        .status("get.empty", format!("(call $proxy_get_shared_data {empty_key} {rp} {rs} {out})"))
        .value("get.empty.ptr", load(RET_PTR))
        .value("get.empty.size", load(RET_SIZE));
    let plugin = p
        .load(PluginConfig {
            vm_id: "raw".into(),
            ..config("raw")
        })
        .expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    h.request_headers(request("/", &[]), true).expect("request");
    let r = ProbeResults::from_logs(&h.logs);
    let ok = Some(Status::Ok.as_u32());
    assert_eq!(r.value("get.missing"), Some(Status::NotFound.as_u32()));
    assert_eq!(r.value("set.v1"), ok);
    assert_eq!(r.value("get.v1"), ok);
    assert_eq!(r.bytes("get.v1.bytes"), Some(&b"one"[..]));
    assert_eq!(r.value("set.stale"), Some(Status::CasMismatch.as_u32()));
    assert_eq!(r.value("set.cas"), ok);
    assert_eq!(r.bytes("get.v2.bytes"), Some(&b"two"[..]));
    let (cas1, cas2) = (r.value("get.v1.cas"), r.value("get.v2.cas"));
    assert!(cas1.is_some_and(|c| c != 0));
    assert_ne!(cas1, cas2, "every set assigns a fresh cas");
    assert_eq!(r.value("set.absent_with_cas"), ok);
    assert_eq!(r.value("set.empty"), ok);
    assert_eq!(r.value("get.empty"), ok);
    assert_eq!(r.value("get.empty.ptr"), Some(0));
    assert_eq!(r.value("get.empty.size"), Some(0));
    let data = h.env.shared_data();
    assert_eq!(
        data.get("raw", b"probe-key").map(|(v, _)| v),
        Ok(b"two".to_vec())
    );
    assert_eq!(
        data.get("raw", b"fresh-key").map(|(v, _)| v),
        Ok(b"one".to_vec())
    );
    assert_eq!(
        data.get("", b"probe-key"),
        Err(Status::NotFound),
        "namespaced by vm_id"
    );
}
