//! Shared data: `proxy_get_shared_data`, `proxy_set_shared_data` (ABI
//! reference §4.6, §11.14). The store is process-wide and namespaced by the
//! plugin's `vm_id` ([`SharedData`](crate::shared::data::SharedData)).
//!
//! * `proxy_get_shared_data`: OK with the value and its cas; absent →
//!   NOT_FOUND; bad memory → INVALID_MEMORY_ACCESS.
//! * `proxy_set_shared_data`: OK; stale cas → CAS_MISMATCH; a key or value
//!   over the store's limits → BAD_ARGUMENT.

use wasmtime::Caller;

use super::{Registry, hostcall};
use crate::memory::{HostResult, range, read, return_bytes, return_u32, u, with_mem};
use crate::state::HostState;

pub(crate) fn add_to_linker(reg: &mut Registry) -> wasmtime::Result<()> {
    hostcall!(reg, "env", "proxy_get_shared_data", get_shared_data, key: i32, key_len: i32, ret_ptr: i32, ret_size: i32, ret_cas: i32);
    hostcall!(reg, "env", "proxy_set_shared_data", set_shared_data, key: i32, key_len: i32, val: i32, val_len: i32, cas: i32);
    Ok(())
}

fn get_shared_data(
    caller: &mut Caller<'_, HostState>,
    key: i32,
    key_len: i32,
    ret_ptr: i32,
    ret_size: i32,
    ret_cas: i32,
) -> HostResult {
    let (value, cas) = with_mem(caller, |mem, state| {
        range(mem.len(), ret_cas, 4)?;
        let key = read(mem, key, key_len)?;
        state
            .env
            .inner
            .shared_data
            .get(&state.plugin.config.vm_id, key)
    })??;
    return_bytes(caller, ret_ptr, ret_size, &value)?;
    return_u32(caller, ret_cas, cas)
}

fn set_shared_data(
    caller: &mut Caller<'_, HostState>,
    key: i32,
    key_len: i32,
    val: i32,
    val_len: i32,
    cas: i32,
) -> HostResult {
    with_mem(caller, |mem, state| {
        let key = read(mem, key, key_len)?;
        let val = read(mem, val, val_len)?;
        state
            .env
            .inner
            .shared_data
            .set(&state.plugin.config.vm_id, key, val, u(cas))
    })??;
    Ok(())
}
