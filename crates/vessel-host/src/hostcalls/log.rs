//! Logging: `proxy_log`, `proxy_get_log_level` (ABI reference §4.1, §10.3).
//!
//! * `proxy_log`: OK; level > 5 → BAD_ARGUMENT; bad memory → INVALID_MEMORY_ACCESS.
//!   Lines below the plugin's log level are dropped. At most
//!   [`MAX_LOG_BYTES_PER_CALLBACK`] bytes are passed on per callback; the rest
//!   is dropped (still OK, since the SDKs accept only OK here).
//! * `proxy_get_log_level`: OK, writes the plugin's level as u32.

use vessel_abi::{LogLevel, Status};
use wasmtime::Caller;

use super::{Registry, hostcall};
use crate::embedder::LogRecord;
use crate::ids::ContextId;
use crate::memory::{HostResult, read, return_u32, with_mem};
use crate::state::HostState;

/// Largest number of guest log bytes passed on during one callback.
pub const MAX_LOG_BYTES_PER_CALLBACK: usize = 1 << 20;

pub(crate) fn add_to_linker(reg: &mut Registry) -> wasmtime::Result<()> {
    hostcall!(reg, "env", "proxy_log", log, level: i32, ptr: i32, len: i32);
    hostcall!(reg, "env", "proxy_get_log_level", get_log_level, ret: i32);
    Ok(())
}

/// Sends one line to the log sink if its level passes the plugin's level and
/// the per-callback budget allows it.
pub(crate) fn emit(state: &mut HostState, level: LogLevel, context: ContextId, message: &[u8]) {
    if level < state.plugin.config.log_level {
        return;
    }
    if state.log_bytes >= MAX_LOG_BYTES_PER_CALLBACK {
        return;
    }
    state.log_bytes += message.len();
    let plugin = &state.plugin.config.name;
    state.env.inner.logs.log(&LogRecord {
        plugin,
        level,
        context,
        message,
    });
}

fn log(caller: &mut Caller<'_, HostState>, level: i32, ptr: i32, len: i32) -> HostResult {
    let level = LogLevel::try_from(level as u32).map_err(|_| Status::BadArgument)?;
    with_mem(caller, |mem, state| {
        let msg = read(mem, ptr, len)?;
        let ctx = state.current;
        emit(state, level, ctx, msg);
        Ok::<(), Status>(())
    })??;
    Ok(())
}

fn get_log_level(caller: &mut Caller<'_, HostState>, ret: i32) -> HostResult {
    let level = caller.data().plugin.config.log_level.as_u32();
    return_u32(caller, ret, level)
}
