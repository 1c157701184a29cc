//! One full HTTP request lifecycle through a Rust-SDK filter:
//! context create, request headers (7), response headers (3), then
//! `on_log`, `on_done`, `on_delete`. Run with `cargo xtask bench`.
//!
//! * `bench_headers`: the filter reads one request header, adds a request
//!   header and adds a response header.
//! * `noop`: the same lifecycle through a filter that does nothing.
//!
//! Group `epochs` shows what the CPU limit costs: the same lifecycles, and
//! one `guest_cpu_burn` request (20,000 rounds of a tight loop, where
//! epoch checks in loop headers matter most), on an engine with epoch
//! interruption (`epochs/on/*`, the default, 100 ms callback timeout) and
//! without (`epochs/off/*`, no timeouts).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use vessel_host::{Engine, EngineConfig, HeaderMap, HostEnv, Limits, Plugin, PluginConfig, Vm};

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

fn request() -> HeaderMap {
    HeaderMap::from_pairs([
        (":method", "GET"),
        (":path", "/api/v1/items?limit=10"),
        (":authority", "example.com"),
        (":scheme", "http"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-bench", "1"),
    ])
}

fn response() -> HeaderMap {
    HeaderMap::from_pairs([
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-length", "2"),
    ])
}

fn lifecycle(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let env = HostEnv::default();
    let mut group = c.benchmark_group("lifecycle");
    for name in ["bench_headers", "noop"] {
        let plugin = Plugin::load(&engine, &guest(name), PluginConfig::named(name)).expect("loads");
        let mut vm = Vm::new(&plugin, &env).expect("starts");
        let (req, resp) = (request(), response());
        group.bench_function(name, |b| {
            b.iter(|| {
                let ctx = vm.create_http_context().unwrap();
                vm.on_request_headers(ctx, req.clone(), true).unwrap();
                vm.on_response_headers(ctx, resp.clone(), true).unwrap();
                vm.finish_http_stream(ctx).unwrap();
            });
        });
        assert_eq!(vm.context_count(), 1, "every stream context was deleted");
    }
    group.finish();
}

fn epochs(c: &mut Criterion) {
    let env = HostEnv::default();
    let mut group = c.benchmark_group("epochs");
    for epochs in [true, false] {
        let engine = Engine::new(EngineConfig {
            epoch_interruption: epochs,
            ..EngineConfig::default()
        })
        .unwrap();
        let mode = if epochs { "on" } else { "off" };
        for name in ["bench_headers", "noop", "cpu_burn"] {
            let config = PluginConfig {
                limits: Limits {
                    callback_timeout: epochs.then_some(Limits::DEFAULT_CALLBACK_TIMEOUT),
                    startup_timeout: epochs.then_some(Limits::DEFAULT_STARTUP_TIMEOUT),
                    ..Limits::default()
                },
                ..PluginConfig::named(name)
            };
            let plugin = Plugin::load(&engine, &guest(name), config).expect("loads");
            let mut vm = Vm::new(&plugin, &env).expect("starts");
            let (req, resp) = (request(), response());
            group.bench_function(format!("{mode}/{name}"), |b| {
                b.iter(|| {
                    let ctx = vm.create_http_context().unwrap();
                    vm.on_request_headers(ctx, req.clone(), true).unwrap();
                    vm.on_response_headers(ctx, resp.clone(), true).unwrap();
                    vm.finish_http_stream(ctx).unwrap();
                });
            });
            assert_eq!(vm.context_count(), 1, "every stream context was deleted");
        }
    }
    group.finish();
}

criterion_group!(benches, lifecycle, epochs);
criterion_main!(benches);
