//! One epoch ticker thread per engine, stopped when the last clone of the
//! engine is dropped (ABI reference §6.6; `vessel_host::epoch`). It counts
//! the threads of its process, so it runs alone in a child process of the
//! test binary (`crate::alone`), where no other engine runs meanwhile.

#![cfg(target_os = "linux")]

use vessel_host::epoch::TICKER_THREAD_NAME;
use vessel_host::{Engine, EngineConfig, HostEnv, Plugin, PluginConfig, Vm};

/// Threads of this process named like the ticker.
fn tickers() -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").expect("procfs");
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == TICKER_THREAD_NAME)
        .count()
}

const WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1)))"#;

#[test]
fn one_ticker_per_engine_stopped_when_the_engine_is_dropped() {
    if !crate::alone::alone(
        "epoch_ticker::one_ticker_per_engine_stopped_when_the_engine_is_dropped",
    ) {
        return;
    }
    assert_eq!(tickers(), 0);
    let a = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let b = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let clone = a.clone();
    assert_eq!(tickers(), 2, "one thread per engine, not per clone");
    let off = Engine::new(EngineConfig {
        epoch_interruption: false,
        ..EngineConfig::default()
    })
    .expect("engine");
    assert_eq!(tickers(), 2, "no thread without epochs");
    drop(off);

    // Plugins and VMs keep their engine (and its ticker) alive.
    let wasm = wat::parse_str(WAT).expect("assembles");
    let plugin = Plugin::load(&a, &wasm, PluginConfig::named("t")).expect("loads");
    let vm = Vm::new(&plugin, &HostEnv::default()).expect("starts");
    drop(a);
    drop(clone);
    drop(plugin);
    assert_eq!(tickers(), 2);
    drop(vm);
    assert_eq!(tickers(), 1, "the ticker is joined when the last user goes");
    drop(b);
    assert_eq!(tickers(), 0);
}
