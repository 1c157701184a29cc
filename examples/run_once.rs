//! Run one request through a proxy-wasm filter, with no proxy around it.
//!
//! ```text
//! cargo run -p vessel-examples --example run_once -- path/to/filter.wasm [plugin-config]
//! ```
//!
//! It loads the filter, starts a VM (which runs `_initialize`,
//! `proxy_on_vm_start` and `proxy_on_configure`), sends the request
//! headers of `GET /hello`, prints what the filter asked the host to do,
//! answers any HTTP callout with a canned 200, and ends the stream with
//! `on_log`, `on_done` and `on_delete`, in Envoy's order.

#![allow(clippy::print_stdout)]

use anyhow::Context;
use vessel_host::{
    Effect, Engine, EngineConfig, HeaderMap, HostEnv, HttpCallOutcome, HttpCallResponse, MapType,
    Plugin, PluginConfig, Vm,
};

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .context("usage: run_once FILTER.wasm [CONFIG]")?;
    let config = args.next().unwrap_or_default();

    // One engine per process; the compiled plugin is shared by every VM.
    let engine = Engine::new(EngineConfig::default())?;
    let wasm = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
    let started = std::time::Instant::now();
    let plugin = Plugin::load(
        &engine,
        &wasm,
        PluginConfig {
            configuration: config.into_bytes(),
            ..PluginConfig::named("example")
        },
    )?;
    println!(
        "loaded {path}: ABI {} in {:?}",
        plugin.abi_version(),
        started.elapsed()
    );

    // A VM: one instance, with its root context started and configured.
    let started = std::time::Instant::now();
    let mut vm = Vm::new(&plugin, &HostEnv::default())?;
    println!("VM started in {:?}", started.elapsed());

    // One stream: request headers in, a translated filter status out.
    let stream = vm.create_http_context()?;
    let headers = HeaderMap::from_pairs([
        (":method", "GET"),
        (":path", "/hello"),
        (":authority", "example.com"),
        (":scheme", "http"),
    ]);
    let status = vm.on_request_headers(stream, headers, true)?;
    println!("on_request_headers -> {status:?}");

    // What the guest asked for is handed out after the callback returns.
    let effects: Vec<Effect> = vm.drain_effects().collect();
    for effect in effects {
        println!("effect: {effect:?}");
        if let Effect::HttpCall { token, .. } = effect {
            let answer = HttpCallResponse {
                headers: HeaderMap::from_pairs([(":status", "200")]),
                ..HttpCallResponse::default()
            };
            vm.on_http_call_response(token, HttpCallOutcome::Response(answer))?;
            for e in vm.drain_effects() {
                println!("effect after the callout: {e:?}");
            }
        }
    }
    if let Some(h) = vm.headers(stream, MapType::HttpRequestHeaders) {
        println!("request headers now: {h:?}");
    }
    vm.finish_http_stream(stream)?;
    println!(
        "memory: {} KiB, contexts left: {}",
        vm.memory_size() / 1024,
        vm.context_count()
    );
    Ok(())
}
