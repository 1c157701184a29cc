//! The README's embedding example: one request through a filter.
//!
//! `cargo run -p vessel-examples --example embed` (run it from a directory
//! holding `filter.wasm`).

#![allow(clippy::print_stdout)]

use vessel_host::{
    Effect, Engine, EngineConfig, HeaderMap, HostEnv, MapType, Plugin, PluginConfig, Vm,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::new(EngineConfig::default())?; // one per process
    let wasm = std::fs::read("filter.wasm")?;
    let plugin = Plugin::load(&engine, &wasm, PluginConfig::named("my_filter"))?;
    let mut vm = Vm::new(&plugin, &HostEnv::default())?; // _initialize, on_vm_start, on_configure

    let stream = vm.create_http_context()?;
    let headers = HeaderMap::from_pairs([(":method", "GET"), (":path", "/"), (":authority", "a")]);
    let status = vm.on_request_headers(stream, headers, true)?; // translated as Envoy does
    for effect in vm.drain_effects() {
        // continue, local reply, callouts...
        if let Effect::LocalResponse { response, .. } = effect {
            println!("local reply {}", response.status);
        }
    }
    println!(
        "{status:?}: {:?}",
        vm.headers(stream, MapType::HttpRequestHeaders)
    );
    vm.finish_http_stream(stream)?; // on_log, on_done, on_delete
    Ok(())
}
