//! What a routing policy costs per request, in-process: `guest_llm_policy`
//! (Rust SDK: least queue, then prompt-prefix affinity) over a cluster of
//! 2, 16 and 128 endpoints served through a [`PropertyProvider`] in the
//! text form of `vessel.cluster.<name>.endpoints` (docs/envoy-config.md).
//!
//! One iteration is one request: context create, request headers (held),
//! the JSON body (the decision: property read, parse, choose, header set),
//! then `on_log`/`on_done`/`on_delete`. `policy/noop` runs the same calls
//! through `guest_noop`: the decision's cost is the difference. Run with
//! `cargo bench -p vessel-host --bench policy` (or `cargo xtask bench`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use vessel_host::{
    Engine, EngineConfig, HeaderMap, HostEnv, MapType, Plugin, PluginConfig, PropertyProvider,
    PropertyScope, Status, Vm,
};

fn guest(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec-tests/guests/target/wasm32-wasip1/release")
        .join(format!("guest_{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests with `cargo xtask guests`",
            path.display()
        )
    })
}

/// `n` healthy endpoints with varied queues, as vessel run serves them.
struct Endpoints(Vec<u8>);

impl Endpoints {
    fn new(n: u16) -> Self {
        let mut text = String::new();
        for i in 0..n {
            let waiting = (u32::from(i) * 7919) % 5;
            text.push_str(&format!(
                "10.0.{}.{}:8000 1 {} 2 {waiting} 0.{:04} 120\n",
                i / 250,
                i % 250,
                i % 3,
                (u32::from(i) * 37) % 10_000
            ));
        }
        Self(text.into_bytes())
    }
}

impl PropertyProvider for Endpoints {
    fn get_property(
        &self,
        path: &[&[u8]],
        _scope: PropertyScope<'_>,
    ) -> Result<Option<Vec<u8>>, Status> {
        Ok(match path {
            [b"vessel", b"cluster", b"workers", b"endpoints"] => Some(self.0.clone()),
            _ => None,
        })
    }
}

fn request() -> HeaderMap {
    HeaderMap::from_pairs([
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "gateway"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("content-length", "120"),
    ])
}

const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello"}]}"#;

fn policy(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let mut group = c.benchmark_group("policy");
    let req = request();
    for (name, n) in [
        ("noop", 16),
        ("rust/2", 2),
        ("rust/16", 16),
        ("rust/128", 128),
    ] {
        let env = HostEnv::builder()
            .property_provider(Endpoints::new(n))
            .build();
        let module = if name == "noop" { "noop" } else { "llm_policy" };
        let mut config = PluginConfig::named(module);
        config.configuration = br#"{"cluster":"workers"}"#.to_vec();
        config.allow_on_headers_stop_iteration = true;
        let plugin = Plugin::load(&engine, &guest(module), config).expect("loads");
        let mut vm = Vm::new(&plugin, &env).expect("starts");
        if module == "llm_policy" {
            // The policy decides: the header names one of the endpoints.
            let ctx = vm.create_http_context().unwrap();
            vm.on_request_headers_from(ctx, &req, false).unwrap();
            vm.on_request_body(ctx, BODY, true).unwrap();
            let picked = vm
                .headers(ctx, MapType::HttpRequestHeaders)
                .and_then(|h| h.get(b"x-gateway-destination-endpoint").map(<[u8]>::to_vec))
                .expect("the policy picked an endpoint");
            assert!(picked.starts_with(b"10.0."), "{picked:?}");
            vm.finish_http_stream(ctx).unwrap();
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                let ctx = vm.create_http_context().unwrap();
                vm.on_request_headers_from(ctx, &req, false).unwrap();
                vm.on_request_body(ctx, BODY, true).unwrap();
                vm.finish_http_stream(ctx).unwrap();
            });
        });
    }
    group.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
