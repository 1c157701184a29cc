//! Buffers: `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`,
//! `proxy_get_buffer_status`, and 0.1.0's `proxy_get_configuration`
//! (ABI reference §4.2, §11.2, §11.16, §11.17).
//!
//! * `proxy_get_buffer_bytes`: OK; type > 8 (> 9 for Higress 0.2.100) → BAD_ARGUMENT; buffer not
//!   available now → NOT_FOUND; bad memory or allocator failure →
//!   INVALID_MEMORY_ACCESS. The range is clamped to the buffer (start and
//!   size are added in 64 bits, so `max_size = u32::MAX` reads everything);
//!   an empty result writes ptr 0 / size 0 without allocating.
//! * `proxy_set_buffer_bytes`: Envoy's rules. `start == 0` drains `size`
//!   bytes then prepends the data; `start >= len` appends; anything else →
//!   BAD_ARGUMENT. Configuration, call and foreign-argument buffers are
//!   immutable → BAD_ARGUMENT. Unavailable body → NOT_FOUND. The same rules
//!   hold for a TCP stream's `DOWNSTREAM_DATA` and `UPSTREAM_DATA`, readable
//!   and writable during their data callback and while the connection is
//!   paused on it (NOT_FOUND otherwise, and in HTTP streams; a TCP stream
//!   has no HTTP bodies). A write that
//!   would grow the body past [`Limits::max_body_bytes`](crate::Limits::max_body_bytes)
//!   changes nothing and fails the VM with
//!   [`LimitExceeded::BodyBytes`] (the
//!   Rust SDK accepts only OK here, §11.20).
//! * `proxy_get_buffer_status`: OK, writes the length and flags 0 (as
//!   cpp-host does); type > 8 (> 9 for 0.2.100) → BAD_ARGUMENT; unavailable → NOT_FOUND.
//! * `proxy_get_configuration` (0.1.0): OK; the plugin configuration during
//!   `proxy_on_configure`, the VM configuration otherwise.

use vessel_abi::{BufferType, Status};
use wasmtime::Caller;

use super::{Registry, hostcall};
use crate::limits::LimitExceeded;
use crate::memory::{Fail, HostResult, fill, read, return_blob, u, with_mem, write_u32};
use crate::state::{HostState, Phase};

pub(crate) fn add_to_linker(reg: &mut Registry) -> wasmtime::Result<()> {
    hostcall!(reg, "env", "proxy_get_buffer_bytes", get_buffer_bytes, ty: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32);
    hostcall!(reg, "env", "proxy_set_buffer_bytes", set_buffer_bytes, ty: i32, start: i32, size: i32, data: i32, data_len: i32);
    hostcall!(reg, "env", "proxy_get_buffer_status", get_buffer_status, ty: i32, ret_len: i32, ret_flags: i32);
    hostcall!(reg, "env", "proxy_get_configuration", get_configuration, ret_ptr: i32, ret_size: i32);
    Ok(())
}

fn buffer_type(ty: i32) -> Result<BufferType, Status> {
    BufferType::try_from(u(ty)).map_err(|_| Status::BadArgument)
}

fn get_buffer_bytes(
    caller: &mut Caller<'_, HostState>,
    ty: i32,
    start: i32,
    max: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> HostResult {
    let ty = buffer_type(ty)?;
    let len = caller.data().buffer(ty)?.len();
    let begin = (u(start) as usize).min(len);
    let end = (u(start) as u64 + u(max) as u64).min(len as u64) as usize;
    let end = end.max(begin);
    return_blob(caller, ret_ptr, ret_size, end - begin, |dst, state| {
        let buf = state.buffer(ty)?;
        fill(dst, buf.get(begin..end).ok_or(Status::InternalFailure)?)
    })
}

fn set_buffer_bytes(
    caller: &mut Caller<'_, HostState>,
    ty: i32,
    start: i32,
    size: i32,
    data: i32,
    data_len: i32,
) -> HostResult {
    let ty = buffer_type(ty)?;
    with_mem(caller, |mem, state| {
        let bytes = read(mem, data, data_len)?;
        let target = state.target();
        let limit = state.plugin.config.limits.max_body_bytes;
        let body = match ty {
            BufferType::HttpRequestBody
            | BufferType::HttpResponseBody
            | BufferType::DownstreamData
            | BufferType::UpstreamData => state
                .http_mut(target)
                .and_then(|h| h.body_mut(ty))
                .ok_or(Status::NotFound)?,
            _ => return Err(Status::BadArgument.into()),
        };
        let start = u(start) as usize;
        let drain = if start == 0 {
            (u(size) as usize).min(body.len())
        } else if start >= body.len() {
            0
        } else {
            return Err(Status::BadArgument.into());
        };
        let new_len = (body.len() - drain).saturating_add(bytes.len());
        check_body_growth(ty, body.len(), new_len, limit)?;
        if start == 0 {
            body.splice(0..drain, bytes.iter().copied());
        } else {
            body.extend_from_slice(bytes);
        }
        Ok::<(), Fail>(())
    })?
}

/// How a limit message names a body buffer.
pub(crate) fn body_name(ty: BufferType) -> &'static str {
    match ty {
        BufferType::HttpResponseBody => "response body",
        BufferType::DownstreamData => "downstream data",
        BufferType::UpstreamData => "upstream data",
        _ => "request body",
    }
}

/// `Err` if a body of `old` bytes may not grow to `new` bytes: past
/// `limit`, unless it does not grow.
pub(crate) fn check_body_growth(
    ty: BufferType,
    old: usize,
    new: usize,
    limit: usize,
) -> Result<(), LimitExceeded> {
    if new > limit && new > old {
        return Err(LimitExceeded::BodyBytes {
            body: body_name(ty),
            limit_bytes: limit,
            requested_bytes: new,
        });
    }
    Ok(())
}

fn get_buffer_status(
    caller: &mut Caller<'_, HostState>,
    ty: i32,
    ret_len: i32,
    ret_flags: i32,
) -> HostResult {
    let ty = buffer_type(ty)?;
    with_mem(caller, |mem, state| {
        let len = state.buffer(ty)?.len();
        write_u32(mem, ret_len, u32::try_from(len).unwrap_or(u32::MAX))?;
        write_u32(mem, ret_flags, 0)
    })??;
    Ok(())
}

fn get_configuration(
    caller: &mut Caller<'_, HostState>,
    ret_ptr: i32,
    ret_size: i32,
) -> HostResult {
    let ty = if caller.data().frame.phase == Phase::Configure {
        BufferType::PluginConfiguration
    } else {
        BufferType::VmConfiguration
    };
    let len = caller.data().buffer(ty)?.len();
    return_blob(caller, ret_ptr, ret_size, len, |dst, state| {
        fill(dst, state.buffer(ty)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_may_not_grow_past_the_limit_but_may_shrink() {
        let ty = BufferType::HttpRequestBody;
        assert_eq!(check_body_growth(ty, 0, 10, 10), Ok(()));
        assert_eq!(
            check_body_growth(ty, 10, 11, 10),
            Err(LimitExceeded::BodyBytes {
                body: "request body",
                limit_bytes: 10,
                requested_bytes: 11
            })
        );
        // Already over (an embedder with a larger limit): no growth passes.
        assert_eq!(check_body_growth(ty, 20, 15, 10), Ok(()));
        assert!(check_body_growth(BufferType::HttpResponseBody, 20, 21, 10).is_err());
    }
}
