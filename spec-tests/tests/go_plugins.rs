//! Go-built Higress plugins (ABI marker 0_2_100, Go wasip1 with the wide
//! WASI surface) run unmodified. `cargo xtask test` downloads them from
//! PyPI (`gpustack-higress-plugins`) into `target/higress/`.

#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};

use vessel_host::{AbiVersion, FilterHeadersStatus, HostEnv, MapType, Plugin, PluginConfig, Vm};
use vessel_spec_tests::{engine, request, value};

fn plugin_path(name: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/higress/gpustack_higress_plugins/plugins")
        .join(name);
    let version = std::fs::read_dir(&dir).ok()?.flatten().next()?.path();
    let wasm = version.join("plugin.wasm");
    wasm.exists().then_some(wasm)
}

#[test]
fn higress_transformer_adds_a_request_header() {
    let Some(path) = plugin_path("transformer") else {
        eprintln!("skipped: run `cargo xtask test` to download the Higress plugins");
        return;
    };
    let wasm = std::fs::read(&path).expect("readable");
    let config = PluginConfig {
        configuration:
            br#"{"reqRules":[{"operate":"add","headers":[{"key":"x-add","value":"foo"}]}]}"#
                .to_vec(),
        ..PluginConfig::named("transformer")
    };
    let plugin = Plugin::load(&engine().expect("engine"), &wasm, config).expect("loads");
    assert_eq!(plugin.abi_version(), AbiVersion::V0_2_100);
    let mut vm = Vm::new(&plugin, &HostEnv::default()).expect("starts");
    let ctx = vm.create_http_context().expect("context");
    let status = vm
        .on_request_headers(ctx, request("/", &[]), true)
        .expect("request headers");
    assert_eq!(status, FilterHeadersStatus::Continue);
    let headers = vm.headers(ctx, MapType::HttpRequestHeaders).expect("held");
    assert_eq!(value(headers, "x-add").as_deref(), Some("foo"));
    vm.finish_http_stream(ctx).expect("ends");
    assert_eq!(vm.context_count(), 1);
}

#[test]
fn higress_transformer_without_rules_is_refused_with_a_clear_error() {
    let Some(path) = plugin_path("transformer") else {
        eprintln!("skipped: run `cargo xtask test` to download the Higress plugins");
        return;
    };
    let wasm = std::fs::read(&path).expect("readable");
    let plugin = Plugin::load(
        &engine().expect("engine"),
        &wasm,
        PluginConfig::named("transformer"),
    )
    .expect("loads");
    let err = Vm::new(&plugin, &HostEnv::default()).expect_err("an empty config is refused");
    assert!(
        err.to_string()
            .contains("proxy_on_configure returned false"),
        "{err}"
    );
}
