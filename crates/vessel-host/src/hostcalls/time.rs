//! Time and timers: `proxy_get_current_time_nanoseconds`,
//! `proxy_set_tick_period_milliseconds` (ABI reference §4.1, §11.13).
//!
//! * `proxy_get_current_time_nanoseconds`: OK, writes the injected
//!   [`Clock`](crate::Clock)'s wall time as u64.
//! * `proxy_set_tick_period_milliseconds`: OK; sets the period of the
//!   caller's **root** context (0 stops ticks) and emits
//!   [`Effect::TickPeriod`]. Past
//!   [`Limits::max_effect_bytes`](crate::Limits::max_effect_bytes) of effects
//!   the embedder has not taken (a guest calling it in a loop), the VM fails
//!   with [`LimitExceeded::EffectBytes`](crate::LimitExceeded::EffectBytes):
//!   the SDKs accept only OK from it.

use std::time::Duration;

use wasmtime::Caller;

use super::{Registry, hostcall};
use crate::effects::Effect;
use crate::memory::{HostResult, return_u64, u};
use crate::state::HostState;

pub(crate) fn add_to_linker(reg: &mut Registry) -> wasmtime::Result<()> {
    hostcall!(reg, "env", "proxy_get_current_time_nanoseconds", get_current_time_nanoseconds, ret: i32);
    hostcall!(reg, "env", "proxy_set_tick_period_milliseconds", set_tick_period_milliseconds, period: i32);
    Ok(())
}

fn get_current_time_nanoseconds(caller: &mut Caller<'_, HostState>, ret: i32) -> HostResult {
    let now = caller.data().env.inner.clock.wall_nanos();
    return_u64(caller, ret, now)
}

fn set_tick_period_milliseconds(caller: &mut Caller<'_, HostState>, period: i32) -> HostResult {
    let state = caller.data_mut();
    let root = state.target_root();
    let period = u(period);
    state.queue_effect(Effect::TickPeriod {
        root,
        period: (period != 0).then(|| Duration::from_millis(u64::from(period))),
    })?;
    if let Some(r) = state.root_mut(root) {
        r.tick_period_ms = period;
    }
    Ok(())
}
