//! The compiled-module cache and the pooling allocator, with real Rust-SDK
//! guests (`spec-tests/guests`, built by `cargo xtask guests`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use crate::guest;
use vessel_host::cache::{CacheKey, ModuleCache};
use vessel_host::{
    CacheConfig, CacheError, CacheOutcome, Engine, EngineConfig, FilterHeadersStatus, HeaderMap,
    HostEnv, InstantiateError, MapType, Plugin, PluginConfig, PoolingConfig, Vm, VmError,
};

/// A fresh, empty directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("module-cache-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn cached_engine(dir: &Path) -> Engine {
    Engine::new(EngineConfig {
        cache: CacheConfig::in_dir(dir),
        ..EngineConfig::default()
    })
    .expect("engine")
}

/// The directory's file names, sorted; empty if it does not exist.
fn files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn entries(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|n| n.ends_with(".vmc"))
        .collect()
}

/// Runs one request through a `guest_hello` VM: the filter adds
/// `x-hello: seen`.
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

fn load(engine: &Engine, wasm: &[u8]) -> Plugin {
    Plugin::load(engine, wasm, PluginConfig::named("hello")).expect("loads")
}

#[test]
fn a_cache_hit_gives_a_module_that_runs() {
    let dir = scratch("hit");
    let wasm = guest("hello");

    let first = load(&cached_engine(&dir), &wasm);
    assert_eq!(first.cache_outcome(), CacheOutcome::Miss);
    let stored = entries(&dir);
    assert_eq!(stored.len(), 1, "{:?}", files(&dir));
    let entry = dir.join(&stored[0]);
    let written = std::fs::read(&entry).expect("entry");
    hello_runs(&first);

    // A new engine with the same settings (as a new process would build).
    let second = load(&cached_engine(&dir), &wasm);
    assert_eq!(second.cache_outcome(), CacheOutcome::Hit);
    assert_eq!(
        std::fs::read(&entry).expect("entry"),
        written,
        "a hit does not rewrite"
    );
    assert_eq!(files(&dir), stored, "no temporary files are left");
    hello_runs(&second);
}

#[test]
fn a_corrupt_entry_is_ignored_and_rebuilt() {
    let dir = scratch("corrupt");
    let wasm = guest("hello");
    let engine = cached_engine(&dir);
    assert_eq!(load(&engine, &wasm).cache_outcome(), CacheOutcome::Miss);
    let entry = dir.join(&entries(&dir)[0]);
    let good = std::fs::read(&entry).expect("entry");

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let damaged: [(&str, Vec<u8>); 4] = [
        ("a flipped byte in the code", flipped),
        ("truncated", good[..good.len() / 3].to_vec()),
        ("empty", Vec::new()),
        ("not an entry", b"garbage".repeat(100)),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&entry, &bytes).expect("damage the entry");
        let plugin = load(&engine, &wasm);
        assert_eq!(plugin.cache_outcome(), CacheOutcome::Rebuilt, "{what}");
        hello_runs(&plugin);
        assert_eq!(
            std::fs::read(&entry).expect("entry"),
            good,
            "{what}: rewritten"
        );
        assert_eq!(
            load(&engine, &wasm).cache_outcome(),
            CacheOutcome::Hit,
            "{what}"
        );
    }
    assert_eq!(entries(&dir).len(), 1);
}

#[test]
fn concurrent_writers_all_succeed_and_leave_one_valid_entry() {
    let dir = scratch("concurrent");
    let wasm = Arc::new(guest("hello"));
    const WRITERS: usize = 6;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let threads: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (dir, wasm, barrier) = (dir.clone(), wasm.clone(), barrier.clone());
            std::thread::spawn(move || {
                // One engine per writer, as separate processes would have.
                let engine = cached_engine(&dir);
                barrier.wait();
                let plugin = load(&engine, &wasm);
                hello_runs(&plugin);
                plugin.cache_outcome()
            })
        })
        .collect();
    let outcomes: Vec<CacheOutcome> = threads
        .into_iter()
        .map(|t| t.join().expect("writer thread"))
        .collect();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, CacheOutcome::Miss | CacheOutcome::Hit)),
        "{outcomes:?}"
    );
    assert_eq!(entries(&dir).len(), 1);
    assert_eq!(files(&dir), entries(&dir), "no temporary files are left");
    let after = load(&cached_engine(&dir), &wasm);
    assert_eq!(after.cache_outcome(), CacheOutcome::Hit);
    hello_runs(&after);
}

#[test]
fn a_disabled_cache_writes_nothing() {
    assert_eq!(EngineConfig::default().cache, CacheConfig::disabled());
    // The CLI's default directory (if this environment has one) is not
    // used by the crate default.
    let user_dir = CacheConfig::user_default().dir;
    let before = user_dir.as_deref().map(files);

    let wasm = guest("hello");
    let plugin = load(
        &Engine::new(EngineConfig::default()).expect("the default engine builds"),
        &wasm,
    );
    assert_eq!(plugin.cache_outcome(), CacheOutcome::Disabled);
    hello_runs(&plugin);
    let explicit = Engine::new(EngineConfig {
        cache: CacheConfig::disabled(),
        ..EngineConfig::default()
    })
    .expect("engine");
    assert_eq!(
        load(&explicit, &wasm).cache_outcome(),
        CacheOutcome::Disabled
    );
    assert_eq!(user_dir.as_deref().map(files), before);
}

#[test]
fn different_code_or_settings_give_different_entries() {
    let dir = scratch("keys");
    let engine = cached_engine(&dir);
    let unoptimized = Engine::new(EngineConfig {
        optimize: false,
        cache: CacheConfig::in_dir(&dir),
        ..EngineConfig::default()
    })
    .expect("engine");
    let (hello, noop) = (guest("hello"), guest("noop"));

    assert_eq!(load(&engine, &hello).cache_outcome(), CacheOutcome::Miss);
    assert_eq!(load(&engine, &noop).cache_outcome(), CacheOutcome::Miss);
    assert_eq!(
        load(&unoptimized, &hello).cache_outcome(),
        CacheOutcome::Miss
    );
    assert_eq!(entries(&dir).len(), 3);

    assert_eq!(load(&engine, &hello).cache_outcome(), CacheOutcome::Hit);
    assert_eq!(load(&engine, &noop).cache_outcome(), CacheOutcome::Hit);
    let again = load(&unoptimized, &hello);
    assert_eq!(again.cache_outcome(), CacheOutcome::Hit);
    hello_runs(&again);
}

#[test]
fn an_unwritable_cache_directory_still_loads() {
    let dir = scratch("unwritable");
    std::fs::create_dir_all(dir.parent().expect("parent")).expect("tmpdir");
    // A file where the directory should be: creating the directory fails.
    std::fs::write(&dir, b"not a directory").expect("file");
    let plugin = load(&cached_engine(&dir), &guest("hello"));
    assert_eq!(plugin.cache_outcome(), CacheOutcome::Miss);
    hello_runs(&plugin);
    // What was logged: a typed error that keeps the OS error.
    let cache = ModuleCache::new(&dir);
    let key = CacheKey::new(plugin.engine().wasmtime(), &guest("hello"));
    let err = cache.put(&key, plugin.module()).expect_err("cannot create");
    let CacheError::Io { op, path, source } = &err else {
        panic!("{err:?}");
    };
    assert_eq!((*op, path.as_path()), ("create", dir.as_path()));
    assert!(
        std::error::Error::source(&err).is_some_and(|s| s.to_string() == source.to_string()),
        "{err:?}"
    );
    assert!(err.to_string().contains(&source.to_string()), "{err}");
    std::fs::remove_file(&dir).expect("cleanup");
}

#[test]
fn the_pool_bounds_live_vms_and_reuses_freed_slots() {
    let engine = Engine::new(EngineConfig {
        pooling: Some(PoolingConfig {
            max_vms: 2,
            ..PoolingConfig::default()
        }),
        ..EngineConfig::default()
    })
    .expect("engine");
    let plugin = load(&engine, &guest("hello"));
    let env = HostEnv::default();
    let a = Vm::new(&plugin, &env).expect("first VM");
    let _b = Vm::new(&plugin, &env).expect("second VM");
    let err = Vm::new(&plugin, &env).expect_err("the pool is full");
    assert!(
        matches!(
            err,
            VmError::Instantiate {
                source: InstantiateError::PoolFull { max_vms: 2, .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("PoolingConfig::max_vms"), "{err}");
    drop(a);
    hello_runs(&plugin);
}

#[test]
fn vms_run_without_pooling_or_copy_on_write() {
    let engine = Engine::new(EngineConfig {
        pooling: None,
        memory_init_cow: false,
        ..EngineConfig::default()
    })
    .expect("engine");
    hello_runs(&load(&engine, &guest("hello")));
}
