//! Logging: `proxy_log`, `proxy_get_log_level` (ABI reference §4.1, §10.3).
//!
//! * `proxy_log`: OK; level > 5 → BAD_ARGUMENT; bad memory → INVALID_MEMORY_ACCESS.
//!   Lines below the plugin's log level are dropped. At most
//!   [`Limits::max_log_bytes_per_callback`](crate::Limits::max_log_bytes_per_callback)
//!   bytes are passed on per callback: a line that does not fit in what is
//!   left is **dropped whole** (never truncated), still with OK, since the
//!   SDKs accept only OK here. Dropped lines are counted
//!   ([`Vm::dropped_log_lines`](crate::Vm::dropped_log_lines)) and the first
//!   drop of a callback is reported once on the `log` facade.
//! * `proxy_get_log_level`: OK, writes the plugin's level as u32.

use vessel_abi::{LogLevel, Status};
use wasmtime::Caller;

use super::{Registry, hostcall};
use crate::embedder::LogRecord;
use crate::ids::ContextId;
use crate::memory::{HostResult, read, return_u32, with_mem};
use crate::state::HostState;

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
    let budget = state.plugin.config.limits.max_log_bytes_per_callback;
    if message.len() > budget.saturating_sub(state.frame.log_bytes) {
        if !state.frame.log_dropped {
            log::warn!(
                target: "vessel::limits",
                "plugin `{}`: guest log lines over {budget} bytes in one callback are dropped (Limits::max_log_bytes_per_callback)",
                state.plugin.config.name
            );
        }
        state.frame.log_dropped = true;
        state.log.dropped_lines += 1;
        state.log.dropped_bytes += message.len() as u64;
        return;
    }
    state.frame.log_bytes += message.len();
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
        let ctx = state.frame.current;
        emit(state, level, ctx, msg);
        Ok::<(), Status>(())
    })??;
    Ok(())
}

fn get_log_level(caller: &mut Caller<'_, HostState>, ret: i32) -> HostResult {
    let level = caller.data().plugin.config.log_level.as_u32();
    return_u32(caller, ret, level)
}
