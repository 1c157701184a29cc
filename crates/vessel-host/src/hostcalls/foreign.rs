//! Foreign functions: `proxy_call_foreign_function` (ABI reference §4.1, §9).
//!
//! The embedder fills the registry with
//! [`HostEnvBuilder::foreign_function`](crate::HostEnvBuilder::foreign_function).
//!
//! * OK with the result (allocated in the guest; if `ret_ptr_ptr` is 0 the
//!   result is dropped, as in cpp-host); unknown name → NOT_FOUND (after
//!   the Higress built-ins of [`super::higress`]); the
//!   function's own error status is passed through; bad memory →
//!   INVALID_MEMORY_ACCESS.

use vessel_abi::Status;
use wasmtime::Caller;

use super::{Registry, hostcall};
use crate::memory::{HostResult, read, return_bytes, with_mem};
use crate::state::HostState;

pub(crate) fn add_to_linker(reg: &mut Registry) -> wasmtime::Result<()> {
    hostcall!(reg, "env", "proxy_call_foreign_function", call_foreign_function,
        name: i32, name_len: i32, args: i32, args_len: i32, ret_ptr: i32, ret_size: i32);
    Ok(())
}

fn call_foreign_function(
    caller: &mut Caller<'_, HostState>,
    name: i32,
    name_len: i32,
    args: i32,
    args_len: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> HostResult {
    let result = with_mem(caller, |mem, state| {
        let name = read(mem, name, name_len)?;
        let args = read(mem, args, args_len)?;
        let name = std::str::from_utf8(name).map_err(|_| Status::NotFound)?;
        match state.env.inner.foreign.get(name) {
            Some(f) => f.call(args),
            None => super::higress::foreign(state, name, args).ok_or(Status::NotFound)?,
        }
    })??;
    if ret_ptr == 0 {
        return Ok(());
    }
    return_bytes(caller, ret_ptr, ret_size, &result)
}
