//! Start-up costs, for a Rust-SDK filter and for a 9.6 MB Go plugin. Run
//! with `cargo xtask bench`, or `cargo bench -p vessel-host --bench startup`
//! (add `-- rust` to skip the slow Go plugin).
//!
//! * `cold_compile`: `Plugin::load` with the module cache disabled:
//!   Cranelift compiles the module, then vessel checks and links it.
//! * `load_from_cache`: `Plugin::load` with a warm module cache: the
//!   compiled code is read, checked and deserialized.
//! * `instantiate`: `Vm::new` for an already-loaded plugin, through
//!   `proxy_on_vm_start` and `proxy_on_configure`, then dropping the VM,
//!   with the default engine (pooling allocator, copy-on-write memory).
//! * `instantiate_no_pool`: the same with wasmtime's on-demand allocator, for
//!   comparison.
//! * `instantiate_wasm_only`: wasmtime's part of `instantiate` alone (a
//!   store, the instance and its memory, no host state and no guest code run),
//!   with the default engine; the rest of `instantiate` is vessel's set-up
//!   and the guest's own start-up (`_initialize`, `proxy_on_vm_start`, ...).
//!
//! Filters:
//! * `rust_bench_headers`: `spec-tests/guests` `guest_bench_headers.wasm`
//!   (build it with `cargo xtask guests`).
//! * `go_gpustack_ai_proxy`: `gpustack-ai-proxy` from the PyPI wheel
//!   `gpustack-higress-plugins`, which `cargo xtask bench` downloads into
//!   `target/higress/`. Skipped, with a message, when missing.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use vessel_host::{
    CacheConfig, CacheOutcome, Engine, EngineConfig, HostEnv, Plugin, PluginConfig, Vm,
};

struct Filter {
    id: &'static str,
    path: Option<PathBuf>,
    missing: String,
    configuration: &'static [u8],
    slow: bool,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn filters() -> Vec<Filter> {
    let rust =
        root().join("spec-tests/guests/target/wasm32-wasip1/release/guest_bench_headers.wasm");
    let go_dir = root().join("target/higress/gpustack_higress_plugins/plugins/gpustack-ai-proxy");
    let go = std::fs::read_dir(&go_dir)
        .ok()
        .and_then(|mut versions| versions.find_map(|v| v.ok()))
        .map(|v| v.path().join("plugin.wasm"));
    vec![
        Filter {
            id: "rust_bench_headers",
            missing: format!("{}; build it with `cargo xtask guests`", rust.display()),
            path: Some(rust),
            configuration: b"",
            slow: false,
        },
        Filter {
            id: "go_gpustack_ai_proxy",
            missing: format!(
                "{}/<version>/plugin.wasm; `cargo xtask bench` downloads it from PyPI (gpustack-higress-plugins)",
                go_dir.display()
            ),
            path: go,
            configuration: br#"{"provider":{"type":"openai","apiTokens":["sk-bench"]}}"#,
            slow: true,
        },
    ]
}

fn engine(config: EngineConfig) -> Engine {
    Engine::new(config).expect("engine")
}

fn startup(c: &mut Criterion) {
    let cache_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-module-cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let env = HostEnv::default();
    for filter in filters() {
        let Some(wasm) = filter.path.as_deref().and_then(|p| std::fs::read(p).ok()) else {
            eprintln!("startup/{}: skipped: missing {}", filter.id, filter.missing);
            continue;
        };
        let config = PluginConfig {
            configuration: filter.configuration.to_vec(),
            ..PluginConfig::named(filter.id)
        };
        let plain = engine(EngineConfig::default());
        let cached = engine(EngineConfig {
            cache: CacheConfig::in_dir(&cache_dir),
            ..EngineConfig::default()
        });
        let on_demand = engine(EngineConfig {
            pooling: None,
            cache: CacheConfig::in_dir(&cache_dir),
            ..EngineConfig::default()
        });

        let mut group = c.benchmark_group(format!("startup/{}", filter.id));
        if filter.slow {
            group
                .sample_size(10)
                .sampling_mode(SamplingMode::Flat)
                .warm_up_time(Duration::from_millis(1))
                .measurement_time(Duration::from_secs(1));
        }
        group.bench_function("cold_compile", |b| {
            b.iter(|| Plugin::load(&plain, &wasm, config.clone()).expect("loads"));
        });

        // Fill the cache, then every load is a hit.
        Plugin::load(&cached, &wasm, config.clone()).expect("loads");
        let hit = Plugin::load(&cached, &wasm, config.clone()).expect("loads");
        assert_eq!(hit.cache_outcome(), CacheOutcome::Hit);
        if filter.slow {
            group
                .sample_size(20)
                .measurement_time(Duration::from_secs(5));
        }
        group.bench_function("load_from_cache", |b| {
            b.iter(|| Plugin::load(&cached, &wasm, config.clone()).expect("loads"));
        });

        // The cache only saves compile time here; the VMs are the same.
        for (name, engine) in [
            ("instantiate", &cached),
            ("instantiate_no_pool", &on_demand),
        ] {
            let plugin = Plugin::load(engine, &wasm, config.clone()).expect("loads");
            drop(Vm::new(&plugin, &env).expect("starts"));
            group.bench_function(name, |b| {
                b.iter(|| Vm::new(&plugin, &env).expect("starts"));
            });
        }
        let plugin = Plugin::load(&cached, &wasm, config.clone()).expect("loads");
        let mut linker = wasmtime::Linker::<()>::new(cached.wasmtime());
        linker
            .define_unknown_imports_as_traps(plugin.module())
            .expect("linker");
        let pre = linker.instantiate_pre(plugin.module()).expect("links");
        group.bench_function("instantiate_wasm_only", |b| {
            b.iter(|| {
                let mut store = wasmtime::Store::new(cached.wasmtime(), ());
                pre.instantiate(&mut store).expect("instantiates");
                store
            });
        });
        group.finish();
    }
}

criterion_group!(benches, startup);
criterion_main!(benches);
