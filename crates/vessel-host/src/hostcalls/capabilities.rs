//! Capability restriction, as Envoy's
//! `PluginConfig.capability_restriction_config.allowed_capabilities` (ABI
//! reference §6.5; cpp-host `WasmBase::registerCallbacks`, `getFunctions`
//! and the `_CREATE_*_STUB` macros of `exports.h`).
//!
//! [`PluginConfig::allowed_capabilities`](crate::PluginConfig::allowed_capabilities)
//! lists the allowed names. `None` allows everything, and so does an empty
//! list, exactly as in Envoy (`capabilityAllowed` = the map is empty or
//! holds the name). Names are the full import or export names: `proxy_log`,
//! `proxy_http_call`, `fd_write`, `proxy_on_request_headers`, ...
//!
//! What a name that is **not** allowed does:
//!
//! | Kind | Restrictable names | Not allowed → |
//! |---|---|---|
//! | proxy-wasm hostcall | every `env.proxy_*` import | a stub: logs `Attempted call to restricted proxy-wasm capability: proxy_X` (target `vessel::capabilities`) and returns **INTERNAL_FAILURE** (10), as Envoy |
//! | WASI function returning an errno | every `wasi_snapshot_preview1.*` / `wasi_unstable.*` import | a stub: logs `Attempted call to restricted WASI capability: X` and returns **`ENOTCAPABLE`** (76), as Envoy |
//! | WASI `proc_exit` (returns nothing) | `proc_exit` | a stub that **traps** (the VM fails with [`TrapKind::Host`](crate::TrapKind::Host)); Envoy logs and returns, which runs the guest past a `noreturn` call (DEVIATIONS.md) |
//! | guest callback | every `proxy_on_*` export | treated as not exported: never called |
//! | other imports | `env.pthread_equal`, `env.emscripten_notify_memory_growth`, `env.envoy_*` | always linked, as in Envoy |
//!
//! The guest allocator (`malloc` / `proxy_on_memory_allocate`) and the
//! start functions (`_initialize`, `_start`, `main`) are never restricted.
//!
//! Whether a filter survives a denied hostcall depends on its SDK, as in
//! Envoy. The Rust SDK (0.2.5) accepts INTERNAL_FAILURE only from
//! `proxy_get_property`, `proxy_http_call`, `proxy_grpc_call`,
//! `proxy_grpc_stream` and `proxy_call_foreign_function` (it returns an
//! `Err`); from any other hostcall it panics on the status, so the filter
//! traps and its VM fails (ABI reference §11.20). A call that is not
//! allowed never changes host state, and each
//! one is counted ([`Vm::denied_capability_calls`](crate::Vm::denied_capability_calls)).

use vessel_abi::Status;
use wasmtime::{Caller, Engine, FuncType, Linker, Val};

use super::ImportTable;
use crate::state::HostState;

/// The errno a restricted WASI function returns (`__WASI_ENOTCAPABLE`).
pub const WASI_ENOTCAPABLE: i32 = 76;

/// True if `module.name` is subject to capability restriction.
pub fn is_restrictable(module: &str, name: &str) -> bool {
    match module {
        "env" => name.starts_with("proxy_"),
        "wasi_snapshot_preview1" | "wasi_unstable" => true,
        _ => false,
    }
}

/// True if `name` is allowed by `allowed` (`None` or empty: everything).
pub fn is_allowed(allowed: Option<&[String]>, name: &str) -> bool {
    match allowed {
        None => true,
        Some(list) => list.is_empty() || list.iter().any(|n| n == name),
    }
}

/// The effective restriction: `None` when everything is allowed.
pub(crate) fn restriction(allowed: Option<&Vec<String>>) -> Option<&[String]> {
    allowed.map(Vec::as_slice).filter(|l| !l.is_empty())
}

/// Replaces every import of `table` that `allowed` does not allow with its stub.
pub(crate) fn restrict(
    linker: &mut Linker<HostState>,
    engine: &Engine,
    table: &ImportTable,
    allowed: &[String],
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    for sig in table.iter() {
        if !is_restrictable(sig.module, sig.name) || is_allowed(Some(allowed), sig.name) {
            continue;
        }
        let ty = FuncType::new(engine, sig.params.clone(), sig.results.clone());
        let name = sig.name;
        let wasi = sig.module != "env";
        let returns = !sig.results.is_empty();
        linker.func_new(
            sig.module,
            sig.name,
            ty,
            move |mut caller: Caller<'_, HostState>, _args: &[Val], results: &mut [Val]| {
                denied(&mut caller, name, wasi);
                if !returns {
                    return Err(wasmtime::Error::msg(format!(
                        "restricted WASI capability: `{name}` is not in allowed_capabilities"
                    )));
                }
                let code = if wasi {
                    WASI_ENOTCAPABLE
                } else {
                    Status::InternalFailure.as_u32() as i32
                };
                if let Some(slot) = results.first_mut() {
                    *slot = Val::I32(code);
                }
                Ok(())
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

fn denied(caller: &mut Caller<'_, HostState>, name: &str, wasi: bool) {
    let state = caller.data_mut();
    state.denied_calls = state.denied_calls.saturating_add(1);
    let kind = if wasi { "WASI" } else { "proxy-wasm" };
    log::error!(
        target: "vessel::capabilities",
        "plugin `{}`: Attempted call to restricted {kind} capability: {name}",
        state.plugin.config.name
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_allow_rules() {
        let list = vec!["proxy_log".to_owned(), "fd_write".to_owned()];
        assert!(is_allowed(None, "proxy_http_call"));
        assert!(
            is_allowed(Some(&[]), "proxy_http_call"),
            "empty = all, as Envoy"
        );
        assert!(is_allowed(Some(&list), "proxy_log"));
        assert!(!is_allowed(Some(&list), "proxy_http_call"));
        assert_eq!(restriction(Some(&Vec::new())), None);
        assert!(is_restrictable("env", "proxy_log"));
        assert!(is_restrictable("wasi_unstable", "fd_write"));
        assert!(!is_restrictable("env", "pthread_equal"));
        assert!(!is_restrictable("env", "envoy_resolve_dns"));
    }
}
