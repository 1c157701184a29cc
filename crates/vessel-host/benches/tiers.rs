//! Compile time of each tier (`cargo xtask bench tiered` runs it): for each
//! module given as an argument, `Plugin::load` on a tiered engine without a
//! module cache (Winch) and on a plain one (Cranelift), three times each;
//! prints the median of each, in milliseconds, one line per module:
//! `tiers: <file> winch_ms=<n> cranelift_ms=<n>`.

#![allow(clippy::print_stderr, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use vessel_host::{Engine, EngineConfig, Plugin, PluginConfig, Tier};

fn median_load(engine: &Engine, wasm: &[u8], tier: Tier) -> Duration {
    let mut times: Vec<Duration> = (0..3)
        .map(|_| {
            let start = Instant::now();
            let plugin = Plugin::load(engine, wasm, PluginConfig::named("p")).expect("loads");
            let took = start.elapsed();
            assert_eq!(plugin.tier(), tier);
            took
        })
        .collect();
    times.sort();
    times[1]
}

fn main() {
    let files: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if files.is_empty() {
        eprintln!("tiers: no modules given (cargo xtask bench tiered passes them)");
        return;
    }
    let winch = Engine::new(EngineConfig {
        tiered: true,
        ..EngineConfig::default()
    })
    .expect("engine");
    assert!(winch.is_tiered());
    let cranelift = Engine::new(EngineConfig::default()).expect("engine");
    for file in files {
        let wasm = std::fs::read(&file).expect("readable");
        let w = median_load(&winch, &wasm, Tier::Baseline);
        let c = median_load(&cranelift, &wasm, Tier::Optimized);
        eprintln!(
            "tiers: {file} winch_ms={} cranelift_ms={}",
            w.as_millis(),
            c.as_millis()
        );
    }
}
