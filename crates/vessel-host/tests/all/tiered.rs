//! Tiered compilation (`EngineConfig::tiered`): Winch first, the Cranelift
//! build from `Plugin::optimized`, stored in the module cache so the next
//! load is Cranelift directly; every guest of the suite compiles with Winch;
//! a Winch VM is stopped by its callback timeout (the ticker ticks both
//! engines).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};

use crate::guest;
use vessel_host::{
    CacheConfig, CacheOutcome, Engine, EngineConfig, FilterHeadersStatus, HeaderMap, HostEnv,
    LimitExceeded, MapType, Plugin, PluginConfig, Tier, TrapKind, Vm, VmError,
};

fn tiered(cache: CacheConfig) -> Engine {
    let engine = Engine::new(EngineConfig {
        tiered: true,
        cache,
        ..EngineConfig::default()
    })
    .expect("engine");
    assert!(engine.is_tiered());
    engine
}

/// One request through a `guest_hello` VM: the filter adds `x-hello: seen`.
fn hello_runs(plugin: &Plugin) {
    let mut vm = Vm::new(plugin, &HostEnv::default()).expect("starts");
    let ctx = vm.create_http_context().expect("context");
    let request = HeaderMap::from_pairs([(":method", "GET"), (":path", "/"), (":authority", "a")]);
    let status = vm.on_request_headers(ctx, request, true).expect("headers");
    assert_eq!(status, FilterHeadersStatus::Continue);
    let headers = vm.headers(ctx, MapType::HttpRequestHeaders).expect("held");
    assert_eq!(headers.get_str("x-hello"), Some("seen"));
    vm.finish_http_stream(ctx).expect("ends");
}

#[test]
fn winch_first_then_the_cranelift_build_is_cached_for_the_next_load() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("module-cache-tiered-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = tiered(CacheConfig::in_dir(&dir));
    let wasm = guest("hello");

    let baseline = Plugin::load(&engine, &wasm, PluginConfig::named("hello")).expect("loads");
    assert_eq!(baseline.tier(), Tier::Baseline);
    assert_eq!(baseline.cache_outcome(), CacheOutcome::Miss);
    assert!(!dir.exists(), "a Winch build is never cached");
    hello_runs(&baseline);
    // A copy with another configuration keeps its tier and can still be
    // optimized.
    let renamed = baseline.with_config(PluginConfig::named("renamed"));
    assert_eq!(renamed.tier(), Tier::Baseline);

    let optimized = baseline
        .optimized()
        .expect("Cranelift compiles it")
        .expect("a baseline plugin has an optimized build");
    assert_eq!(optimized.tier(), Tier::Optimized);
    assert_eq!(optimized.cache_outcome(), CacheOutcome::Miss);
    assert_eq!(optimized.config().name, "hello");
    hello_runs(&optimized);
    assert!(optimized.optimized().expect("nothing to do").is_none());
    let entries = std::fs::read_dir(&dir).expect("the cache dir").count();
    assert_eq!(entries, 1, "the Cranelift build is stored");

    // The next load (a restart) is Cranelift from the cache.
    let next = Plugin::load(&engine, &wasm, PluginConfig::named("hello")).expect("loads");
    assert_eq!(next.tier(), Tier::Optimized);
    assert_eq!(next.cache_outcome(), CacheOutcome::Hit);
    hello_runs(&next);
    // The renamed baseline copy's build now comes from the cache too.
    let from_cache = renamed.optimized().expect("loads").expect("optimized");
    assert_eq!(from_cache.cache_outcome(), CacheOutcome::Hit);
    assert_eq!(from_cache.config().name, "renamed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_tiering_or_with_fuel_everything_is_cranelift() {
    let wasm = guest("hello");
    let plain = Engine::new(EngineConfig::default()).expect("engine");
    assert!(!plain.is_tiered());
    let plugin = Plugin::load(&plain, &wasm, PluginConfig::named("p")).expect("loads");
    assert_eq!(plugin.tier(), Tier::Optimized);
    assert!(plugin.optimized().expect("nothing to do").is_none());

    // Winch has no fuel metering: a fuel engine is not tiered.
    let fuel = Engine::new(EngineConfig {
        tiered: true,
        consume_fuel: true,
        ..EngineConfig::default()
    })
    .expect("engine");
    assert!(!fuel.is_tiered());
    let plugin = Plugin::load(&fuel, &wasm, PluginConfig::named("p")).expect("loads");
    assert_eq!(plugin.tier(), Tier::Optimized);
}

#[test]
fn a_winch_vm_is_stopped_by_its_callback_timeout() {
    let engine = tiered(CacheConfig::disabled());
    let plugin =
        Plugin::load(&engine, &guest("misbehave"), PluginConfig::named("loop")).expect("loads");
    assert_eq!(plugin.tier(), Tier::Baseline);
    let mut vm = Vm::new(&plugin, &HostEnv::default()).expect("starts");
    let ctx = vm.create_http_context().expect("context");
    let request = HeaderMap::from_pairs([
        (":method", "GET"),
        (":path", "/"),
        (":authority", "a"),
        ("x-misbehave", "loop"),
    ]);
    let err = vm
        .on_request_headers(ctx, request, true)
        .expect_err("an endless loop is stopped");
    let VmError::Trap(trap) = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(
            trap.kind,
            TrapKind::Limit(LimitExceeded::CallbackTimeout { .. })
        ),
        "{err:?}"
    );
}

/// `dir`'s `*.wasm` files (recursively when `deep`), sorted.
fn wasm_files(dir: &Path, deep: bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.map(|e| e.expect("entry").path()) {
        if e.is_dir() && deep {
            found.extend(wasm_files(&e, true));
        } else if e.extension().is_some_and(|x| x == "wasm") {
            found.push(e);
        }
    }
    found.sort();
    found
}

/// Every guest of the suite: the Rust SDK guests, the AssemblyScript
/// guests and the Go-built Higress plugins compile with Winch (no
/// fallback to Cranelift) and link.
#[test]
fn every_guest_of_the_suite_compiles_with_winch() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sets = [
        (
            "Rust SDK guests (cargo xtask guests)",
            root.join("spec-tests/guests/target/wasm32-wasip1/release"),
            false,
        ),
        (
            "AssemblyScript guests (cargo xtask guests)",
            root.join("spec-tests/as-guests/build"),
            false,
        ),
        (
            "the gpustack-higress-plugins wheel in target/higress",
            root.join("target/higress/gpustack_higress_plugins/plugins"),
            true,
        ),
    ];
    let engine = tiered(CacheConfig::disabled());
    for (what, dir, deep) in sets {
        let files = wasm_files(&dir, deep);
        if files.is_empty() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true needs {what}"
            );
            eprintln!("SKIPPED: {what} is missing ({})", dir.display());
            continue;
        }
        for file in &files {
            let wasm = std::fs::read(file).expect("readable");
            let plugin = Plugin::load(&engine, &wasm, PluginConfig::named("p"))
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(plugin.tier(), Tier::Baseline, "{}", file.display());
        }
        eprintln!("{what}: {} modules compile with Winch", files.len());
    }
}
