//! Measure what Go-built Higress plugins cost: compile time, VM start-up
//! time and resident memory per VM.
//!
//! ```text
//! cargo xtask go-plugins        # builds in release and runs this
//! cargo run --release -p vessel-examples --example go_plugins -- [VMS]
//! ```
//!
//! The plugins come from PyPI `gpustack-higress-plugins` (`cargo xtask
//! test` or `cargo xtask go-plugins` downloads them into target/higress).
//! For each plugin it prints:
//!
//! * `compile`: `Plugin::load` (validation plus Cranelift compilation of the
//!   whole module; vessel has no on-disk module cache yet),
//! * `vm start`: the mean `Vm::new` over VMS VMs (instantiation, Go's
//!   `_initialize` runtime start, `proxy_on_vm_start`, `proxy_on_configure`),
//! * `guest mem/VM`: the guest's linear memory after start-up,
//! * `RSS/VM`: the growth of the process's resident set over those VMs,
//!   divided by VMS (Linux `/proc/self/statm`).

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use vessel_host::{Engine, EngineConfig, HostEnv, Plugin, PluginConfig, Vm};

/// Plugin, version and a configuration from its documentation.
const PLUGINS: &[(&str, &str, &str)] = &[
    (
        "transformer",
        "2.0.0",
        r#"{"reqRules":[{"operate":"add","headers":[{"key":"x-add","value":"1"}]}]}"#,
    ),
    (
        "gpustack-set-header-pre-route",
        "1.0.1",
        r#"{"routeNameHeader":"x-route","clusterNameHeader":"x-model"}"#,
    ),
    (
        "gpustack-ip-acl",
        "0.1.0",
        r#"{"consumers":{"alice":{"allowedCidrs":["192.168.1.0/24"]}}}"#,
    ),
    (
        "gpustack-rate-limit",
        "1.0.1",
        r#"{"rule_name":"m","redis":{"service_name":"redis.static","service_port":6379},
            "limit_combinations":[{"name":"c","match":[{"source":"consumer","value":"*"}],
            "query_limits":{"per_minute":10}}]}"#,
    ),
    (
        "gpustack-ai-proxy",
        "2.0.3-patched",
        r#"{"provider":{"type":"openai","apiTokens":["sk-test"]}}"#,
    ),
];

/// The resident set size of this process, in bytes.
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn mib(bytes: f64) -> f64 {
    bytes / f64::from(1 << 20)
}

fn main() -> anyhow::Result<()> {
    let vms: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()
        .context("usage: go_plugins [VMS]")?
        .unwrap_or(20);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/higress/gpustack_higress_plugins/plugins");
    let engine = Engine::new(EngineConfig::default())?;
    println!(
        "{:<32} {:>9} {:>10} {:>12} {:>14} {:>9}",
        "plugin", "wasm MiB", "compile", "vm start", "guest mem/VM", "RSS/VM"
    );
    for (name, version, config) in PLUGINS {
        let path: PathBuf = dir.join(name).join(version).join("plugin.wasm");
        let wasm = std::fs::read(&path).with_context(|| {
            format!(
                "{}: run `cargo xtask go-plugins` to download the plugins",
                path.display()
            )
        })?;
        let t = Instant::now();
        let plugin = Plugin::load(
            &engine,
            &wasm,
            PluginConfig {
                configuration: config.as_bytes().to_vec(),
                ..PluginConfig::named(*name)
            },
        )?;
        let compile = t.elapsed();
        let env = HostEnv::default();
        let before = rss();
        let t = Instant::now();
        let mut live = Vec::with_capacity(vms);
        for _ in 0..vms {
            live.push(Vm::new(&plugin, &env).with_context(|| format!("{name}: VM start"))?);
        }
        let start = t.elapsed() / u32::try_from(vms.max(1)).unwrap_or(u32::MAX);
        let grown = rss().saturating_sub(before) as f64 / vms.max(1) as f64;
        let guest = live.iter().map(Vm::memory_size).sum::<usize>() as f64 / vms.max(1) as f64;
        println!(
            "{:<32} {:>9.1} {:>8.0}ms {:>10.1}ms {:>10.1} MiB {:>5.1} MiB",
            name,
            mib(wasm.len() as f64),
            compile.as_secs_f64() * 1e3,
            start.as_secs_f64() * 1e3,
            mib(guest),
            mib(grown),
        );
    }
    println!("({vms} VMs per plugin, default engine)");
    Ok(())
}
