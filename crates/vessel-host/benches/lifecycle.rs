//! One full HTTP request lifecycle through a Rust-SDK filter:
//! context create, request headers (7), response headers (3), then
//! `on_log`, `on_done`, `on_delete`. Run with `cargo xtask bench`.
//!
//! The embedder keeps its header maps and lends them
//! ([`Vm::on_request_headers_from`]: copied into the stream's map, which
//! the VM keeps from one stream to the next). The `*_owned` benches give
//! the VM a fresh clone per request instead ([`Vm::on_request_headers`]),
//! as the benches did before 2026-12-06.
//!
//! * `bench_headers`: the filter reads one request header, adds a request
//!   header and adds a response header.
//! * `noop`: the same lifecycle through a filter that does nothing.
//!
//! * `empty_exports`: the same lifecycle through a hand-written module
//!   whose callbacks return at once: what vessel and wasmtime cost without
//!   any SDK work in the guest.
//! * `wasmtime_six_calls`: six calls of an empty export through wasmtime's
//!   typed API alone (no vessel): the floor of six guest entries.
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
                vm.on_request_headers_from(ctx, &req, true).unwrap();
                vm.on_response_headers_from(ctx, &resp, true).unwrap();
                vm.finish_http_stream(ctx).unwrap();
            });
        });
        group.bench_function(format!("{name}_owned"), |b| {
            b.iter(|| {
                let ctx = vm.create_http_context().unwrap();
                vm.on_request_headers(ctx, req.clone(), true).unwrap();
                vm.on_response_headers(ctx, resp.clone(), true).unwrap();
                vm.finish_http_stream(ctx).unwrap();
            });
        });
        assert_eq!(vm.context_count(), 1, "every stream context was deleted");
    }
    // The floor: the same six guest entries into callbacks that do nothing.
    let plugin = Plugin::load(
        &engine,
        &wat::parse_str(EMPTY_EXPORTS).expect("assembles"),
        PluginConfig::named("empty"),
    )
    .expect("loads");
    let mut vm = Vm::new(&plugin, &env).expect("starts");
    let (req, resp) = (request(), response());
    group.bench_function("empty_exports", |b| {
        b.iter(|| {
            let ctx = vm.create_http_context().unwrap();
            vm.on_request_headers_from(ctx, &req, true).unwrap();
            vm.on_response_headers_from(ctx, &resp, true).unwrap();
            vm.finish_http_stream(ctx).unwrap();
        });
    });
    assert_eq!(vm.context_count(), 1, "every stream context was deleted");
    // wasmtime alone: six calls of an empty export, epoch deadline set
    // before each as vessel does.
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    let wt = wasmtime::Engine::new(&config).unwrap();
    let module = wasmtime::Module::new(
        &wt,
        wat::parse_str(r#"(module (func (export "f") (param i32) (result i32) local.get 0))"#)
            .unwrap(),
    )
    .unwrap();
    let mut store = wasmtime::Store::new(&wt, ());
    let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
    let f = instance
        .get_typed_func::<i32, i32>(&mut store, "f")
        .unwrap();
    group.bench_function("wasmtime_six_calls", |b| {
        b.iter(|| {
            let mut sum = 0;
            for i in 0..6 {
                store.set_epoch_deadline(10);
                sum += f.call(&mut store, i).unwrap();
            }
            sum
        });
    });
    group.finish();
}

/// A proxy-wasm 0.2.1 module whose callbacks do nothing and answer
/// Continue.
const EMPTY_EXPORTS: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) i32.const 0)
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) i32.const 0)
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_done") (param i32) (result i32) i32.const 1)
  (func (export "proxy_on_delete") (param i32)))"#;

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
