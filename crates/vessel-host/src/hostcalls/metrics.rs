//! Metrics (ABI reference §4.5 ids, §4.6, §9).
//!
//! * `proxy_define_metric`: OK with an id (type in the low two bits,
//!   stepping by 4 per VM; the same type and name give the same id); type > 2
//!   → BAD_ARGUMENT. A name longer than
//!   [`Limits::max_metric_name_bytes`](crate::Limits::max_metric_name_bytes),
//!   or a new metric past [`Limits::max_metrics`](crate::Limits::max_metrics)
//!   in this VM, fails the VM with
//!   [`LimitExceeded::MetricName`] /
//!   [`LimitExceeded::Metrics`] (the Rust SDK
//!   accepts only OK here, §11.20), and nothing is registered.
//! * `proxy_increment_metric`: OK; counter needs offset > 0, else
//!   BAD_ARGUMENT; gauge adds; histogram → BAD_ARGUMENT; unknown → NOT_FOUND.
//! * `proxy_record_metric`: OK; counter adds, gauge sets, histogram
//!   records; unknown → NOT_FOUND.
//! * `proxy_get_metric`: OK with the value as u64; histogram → BAD_ARGUMENT;
//!   unknown → NOT_FOUND.

use std::sync::Arc;

use vessel_abi::{MetricType, Status};
use wasmtime::Caller;

use super::{Registry, hostcall};
use crate::limits::LimitExceeded;
use crate::memory::{Fail, HostResult, range, read, return_u32, return_u64, u, with_mem};
use crate::shared::metrics::Metric;
use crate::state::HostState;

pub(crate) fn add_to_linker(reg: &mut Registry) -> wasmtime::Result<()> {
    hostcall!(reg, "env", "proxy_define_metric", define_metric, ty: i32, name: i32, name_len: i32, ret: i32);
    hostcall!(reg, "env", "proxy_increment_metric", increment_metric, id: i32, offset: i64);
    hostcall!(reg, "env", "proxy_record_metric", record_metric, id: i32, value: i64);
    hostcall!(reg, "env", "proxy_get_metric", get_metric, id: i32, ret: i32);
    Ok(())
}

fn define_metric(
    caller: &mut Caller<'_, HostState>,
    ty: i32,
    name: i32,
    name_len: i32,
    ret: i32,
) -> HostResult {
    let ty = MetricType::try_from(u(ty)).map_err(|_| Status::BadArgument)?;
    // Only the kinds this host records (a newer vessel-abi may know more).
    if !matches!(
        ty,
        MetricType::Counter | MetricType::Gauge | MetricType::Histogram
    ) {
        return Err(Status::BadArgument.into());
    }
    let id = with_mem(caller, |mem, state| {
        range(mem.len(), ret, 4)?;
        let name = read(mem, name, name_len)?;
        let limits = &state.plugin.config.limits;
        if name.len() > limits.max_metric_name_bytes {
            return Err(Fail::from(LimitExceeded::MetricName {
                limit_bytes: limits.max_metric_name_bytes,
                requested_bytes: name.len(),
            }));
        }
        let key = (ty.as_u32(), name.to_vec());
        if let Some(id) = state.metrics.ids.get(&key) {
            return Ok(*id);
        }
        if state.metrics.ids.len() >= limits.max_metrics {
            return Err(Fail::from(LimitExceeded::Metrics {
                limit: limits.max_metrics,
            }));
        }
        let slot = &mut state.metrics.next_id[ty.as_u32() as usize];
        *slot = slot.wrapping_add(4);
        let id = *slot;
        let cell = state
            .env
            .inner
            .metrics
            .define(ty, &String::from_utf8_lossy(name));
        state.metrics.by_id.insert(id, cell);
        state.metrics.ids.insert(key, id);
        Ok::<u32, Fail>(id)
    })??;
    return_u32(caller, ret, id)
}

fn metric(state: &HostState, id: i32) -> Result<Arc<Metric>, Status> {
    state
        .metrics
        .by_id
        .get(&u(id))
        .cloned()
        .ok_or(Status::NotFound)
}

fn increment_metric(caller: &mut Caller<'_, HostState>, id: i32, offset: i64) -> HostResult {
    let m = metric(caller.data(), id)?;
    match m.kind() {
        MetricType::Counter if offset > 0 => m.add(offset),
        MetricType::Gauge => m.add(offset),
        _ => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

fn record_metric(caller: &mut Caller<'_, HostState>, id: i32, value: i64) -> HostResult {
    let m = metric(caller.data(), id)?;
    match m.kind() {
        MetricType::Counter => m.add(value),
        MetricType::Gauge => m.set(value),
        MetricType::Histogram => m.record(value as u64),
        // A metric type a newer vessel-abi knows: `proxy_define_metric` never creates one.
        _ => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

fn get_metric(caller: &mut Caller<'_, HostState>, id: i32, ret: i32) -> HostResult {
    let m = metric(caller.data(), id)?;
    if m.kind() == MetricType::Histogram {
        return Err(Status::BadArgument.into());
    }
    return_u64(caller, ret, m.value() as u64)
}
