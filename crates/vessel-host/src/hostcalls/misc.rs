//! Imports that Envoy links beyond the ABI text, so that filters importing
//! them still load (ABI reference §4.7). Higress's 0.2.100 Redis calls are
//! in [`super::redis`].
//!
//! * `env.envoy_resolve_dns`: UNIMPLEMENTED (vessel has no DNS callback yet).
//! * `env.pthread_equal(a, b)`: returns `a == b` (Emscripten modules).
//! * `env.emscripten_notify_memory_growth`: no-op.

use vessel_abi::Status;
use wasmtime::{Caller, ValType};

use super::{Registry, fixed, hostcall};
use crate::memory::HostResult;
use crate::state::HostState;

pub(crate) fn add_to_linker(reg: &mut Registry) -> wasmtime::Result<()> {
    hostcall!(reg, "env", "envoy_resolve_dns", unimplemented3, a: i32, b: i32, c: i32);
    reg.record(
        "env",
        "pthread_equal",
        vec![ValType::I32; 2],
        vec![ValType::I32],
    );
    reg.linker
        .func_wrap("env", "pthread_equal", |a: i32, b: i32| i32::from(a == b))?;
    reg.record(
        "env",
        "emscripten_notify_memory_growth",
        vec![ValType::I32],
        vec![],
    );
    reg.linker
        .func_wrap("env", "emscripten_notify_memory_growth", |_: i32| {})?;
    Ok(())
}

fn unimplemented3(_: &mut Caller<'_, HostState>, _: i32, _: i32, _: i32) -> HostResult {
    fixed(Status::Unimplemented)
}
