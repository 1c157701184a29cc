//! Every host function, one module per ABI area (ABI reference §4), plus
//! the table of imports vessel provides, used to explain link errors.
//!
//! Each function is named after its import: `proxy_get_buffer_bytes` is
//! `buffers::get_buffer_bytes`. Each returns a [`Status`](vessel_abi::Status) the SDKs accept
//! (ABI reference §11.20) or traps; the module docs list which.
//!
//! A plugin may restrict what it can call with
//! [`PluginConfig::allowed_capabilities`](crate::PluginConfig::allowed_capabilities)
//! (ABI reference §6.5). A hostcall that is not allowed is linked as a stub:
//! `proxy_*` stubs return INTERNAL_FAILURE and WASI stubs `ENOTCAPABLE`, as
//! in Envoy; only `proc_exit`, which has no result to carry a status, traps.
//! [`capabilities`] has the full table and which SDK calls survive a denial.

pub mod buffers;
pub mod callouts;
pub mod capabilities;
pub mod foreign;
pub mod higress;
pub mod log;
pub mod maps;
pub mod metrics;
pub mod misc;
pub mod properties;
pub mod queues;
pub mod redis;
pub mod shared_data;
pub mod stream_control;
pub mod time;

use std::collections::HashMap;
use std::sync::OnceLock;

use wasmtime::{Engine, Linker, ValType};

use crate::error::LoadError;
use crate::memory::HostResult;
use crate::state::HostState;

/// The signature of one provided import.
#[derive(Debug, Clone)]
pub struct ImportSig {
    /// Import module.
    pub module: &'static str,
    /// Import name.
    pub name: &'static str,
    /// Parameter types.
    pub params: Vec<ValType>,
    /// Result types.
    pub results: Vec<ValType>,
}

/// Every import vessel provides, by (module, name).
#[derive(Debug, Default)]
pub struct ImportTable {
    by_name: HashMap<&'static str, HashMap<&'static str, ImportSig>>,
}

impl ImportTable {
    /// Looks up an import.
    pub fn get(&self, module: &str, name: &str) -> Option<&ImportSig> {
        self.by_name.get(module)?.get(name)
    }

    /// Every import, sorted by module and name.
    pub fn iter(&self) -> impl Iterator<Item = &ImportSig> {
        let mut v: Vec<&ImportSig> = self.by_name.values().flat_map(HashMap::values).collect();
        v.sort_by_key(|s| (s.module, s.name));
        v.into_iter()
    }

    /// Number of imports.
    pub fn len(&self) -> usize {
        self.by_name.values().map(HashMap::len).sum()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The import table, built once.
pub fn import_table() -> &'static ImportTable {
    static TABLE: OnceLock<ImportTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let engine = Engine::default();
        let mut reg = Registry {
            linker: Linker::new(&engine),
            table: ImportTable::default(),
        };
        // Registration into a throwaway linker cannot fail: names are unique.
        let _ = add_all(&mut reg);
        reg.table
    })
}

/// Builds a linker with every import, for one engine.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<HostState>, LoadError> {
    let mut reg = Registry {
        linker: Linker::new(engine),
        table: ImportTable::default(),
    };
    add_all(&mut reg).map_err(|e| LoadError::Link(e.into()))?;
    Ok(reg.linker)
}

fn add_all(reg: &mut Registry) -> wasmtime::Result<()> {
    log::add_to_linker(reg)?;
    time::add_to_linker(reg)?;
    buffers::add_to_linker(reg)?;
    maps::add_to_linker(reg)?;
    properties::add_to_linker(reg)?;
    shared_data::add_to_linker(reg)?;
    queues::add_to_linker(reg)?;
    metrics::add_to_linker(reg)?;
    callouts::add_to_linker(reg)?;
    stream_control::add_to_linker(reg)?;
    foreign::add_to_linker(reg)?;
    misc::add_to_linker(reg)?;
    redis::add_to_linker(reg)?;
    crate::wasi::add_to_linker(reg, "wasi_snapshot_preview1")?;
    crate::wasi::add_to_linker(reg, "wasi_unstable")?;
    Ok(())
}

/// A linker plus the table of what was registered.
pub(crate) struct Registry {
    pub(crate) linker: Linker<HostState>,
    pub(crate) table: ImportTable,
}

/// The wasm type of a Rust parameter type.
pub(crate) trait AbiTy {
    const TY: ValType;
}
impl AbiTy for i32 {
    const TY: ValType = ValType::I32;
}
impl AbiTy for i64 {
    const TY: ValType = ValType::I64;
}

impl Registry {
    pub(crate) fn record(
        &mut self,
        module: &'static str,
        name: &'static str,
        params: Vec<ValType>,
        results: Vec<ValType>,
    ) {
        self.table.by_name.entry(module).or_default().insert(
            name,
            ImportSig {
                module,
                name,
                params,
                results,
            },
        );
    }
}

/// Registers a status-returning hostcall: `hostcall!(reg, "env", "proxy_x", f, a: i32, b: i64)`
/// where `f(&mut Caller, a, b) -> HostResult`.
macro_rules! hostcall {
    ($reg:expr, $module:expr, $name:literal, $f:path $(, $arg:ident : $ty:ty)* $(,)?) => {{
        $reg.record(
            $module,
            $name,
            vec![$(<$ty as $crate::hostcalls::AbiTy>::TY),*],
            vec![wasmtime::ValType::I32],
        );
        let allowed_in_allocator = $crate::hostcalls::allowed_in_allocator($name);
        $reg.linker.func_wrap(
            $module,
            $name,
            move |mut caller: wasmtime::Caller<'_, $crate::state::HostState> $(, $arg: $ty)*| -> wasmtime::Result<i32> {
                if !allowed_in_allocator && caller.data().in_allocator {
                    return Err($crate::hostcalls::restricted($name));
                }
                $crate::memory::to_abi($f(&mut caller $(, $arg)*))
            },
        )?;
    }};
}
pub(crate) use hostcall;

/// Hostcalls the guest allocator may make while the host is allocating
/// (cpp-host `allocMemory`: logging, clocks and `poll_oneoff`; ABI reference
/// §5.3). Any other hostcall from inside the allocator traps, since it
/// could change state the host is in the middle of copying.
pub(crate) fn allowed_in_allocator(name: &str) -> bool {
    matches!(
        name,
        "proxy_log" | "proxy_get_log_level" | "proxy_get_current_time_nanoseconds"
    )
}

/// The trap raised by a restricted hostcall.
pub(crate) fn restricted(name: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!(
        "restricted_callback: `{name}` called from the guest allocator"
    ))
}

/// A hostcall body that only returns a fixed status.
pub(crate) fn fixed(status: vessel_abi::Status) -> HostResult {
    if status == vessel_abi::Status::Ok {
        Ok(())
    } else {
        Err(status.into())
    }
}
