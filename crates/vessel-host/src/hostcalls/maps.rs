//! Header, trailer and metadata maps (ABI reference §4.3, §5.1, §11.4,
//! §11.5, §11.18).
//!
//! * `proxy_get_header_map_pairs`: OK; map > 7 → BAD_ARGUMENT; a map that
//!   is not available now, or is empty → OK with ptr 0 / size 0 (as Envoy).
//! * `proxy_set_header_map_pairs`: OK; unavailable → BAD_ARGUMENT; a
//!   malformed payload becomes an empty map (cpp-host `PairsUtil::toPairs`).
//! * `proxy_get_header_map_size`: OK with Envoy's `byteSize()` (key + value
//!   bytes); unavailable → BAD_ARGUMENT.
//! * `proxy_get_header_map_value`: OK with the **first** value; missing key →
//!   NOT_FOUND (0.2.x) or OK with an empty value (0.1.0); unavailable →
//!   BAD_ARGUMENT, except during `proxy_on_log`, where a map the stream never
//!   had reads like a missing key (as in Envoy's access-log phase).
//! * `proxy_add_header_map_value` (append), `proxy_replace_header_map_value`
//!   (set), `proxy_remove_header_map_value` (OK even if absent): unavailable →
//!   BAD_ARGUMENT. Keys are lower-cased.
//! * An add, replace or set-pairs that would take a map past
//!   [`Limits::max_header_map_bytes`](crate::Limits::max_header_map_bytes)
//!   or [`Limits::max_header_map_entries`](crate::Limits::max_header_map_entries)
//!   changes nothing and fails the VM with
//!   [`LimitExceeded::HeaderMapBytes`] /
//!   [`HeaderMapEntries`](crate::LimitExceeded::HeaderMapEntries): the Rust
//!   SDK accepts only OK from these calls (§11.20), so a status would panic
//!   the guest with a message that names no limit. An edit that does not
//!   grow the map (a remove, a shorter value) always passes.
//!
//! A header the plugin's [`Hidden`](crate::Hidden) hides in maps 0–3 does
//! not exist for it: NOT_FOUND, left out of the pairs and the size; an add,
//! replace or remove of it changes nothing and returns OK, a set-pairs keeps
//! it as it was and drops the plugin's entries of its name; the first such
//! write of a stream is logged (see [`crate::hidden`]).
//!
//! Maps 0–3 belong to the target stream and are available while the host
//! holds them: after the embedder takes request headers (on Continue) they
//! are gone, as in Envoy. Maps 4–7 are readable only during the callout
//! callback that carries them, and are read-only.

use std::sync::Arc;

use vessel_abi::{MapType, Status, pairs};
use wasmtime::Caller;

use super::{Registry, hostcall};
use crate::headers::{HeaderMap, HeaderMapFull, HeaderMapLimits};
use crate::limits::LimitExceeded;
use crate::memory::{
    Fail, HostResult, check_ret, fill, read, return_blob, return_checked_blob, u, with_mem,
    write_u32,
};
use crate::state::{HostState, Phase};

pub(crate) fn add_to_linker(reg: &mut Registry) -> wasmtime::Result<()> {
    hostcall!(reg, "env", "proxy_get_header_map_pairs", get_header_map_pairs, ty: i32, ret_ptr: i32, ret_size: i32);
    hostcall!(reg, "env", "proxy_set_header_map_pairs", set_header_map_pairs, ty: i32, ptr: i32, size: i32);
    hostcall!(reg, "env", "proxy_get_header_map_size", get_header_map_size, ty: i32, ret: i32);
    hostcall!(reg, "env", "proxy_get_header_map_value", get_header_map_value, ty: i32, key: i32, key_len: i32, ret_ptr: i32, ret_size: i32);
    hostcall!(reg, "env", "proxy_add_header_map_value", add_header_map_value, ty: i32, key: i32, key_len: i32, val: i32, val_len: i32);
    hostcall!(reg, "env", "proxy_replace_header_map_value", replace_header_map_value, ty: i32, key: i32, key_len: i32, val: i32, val_len: i32);
    hostcall!(reg, "env", "proxy_remove_header_map_value", remove_header_map_value, ty: i32, key: i32, key_len: i32);
    Ok(())
}

fn map_type(ty: i32) -> Result<MapType, Status> {
    MapType::try_from(u(ty)).map_err(|_| Status::BadArgument)
}

/// How a limit message names a stream map.
pub(crate) fn map_name(ty: MapType) -> &'static str {
    match ty {
        MapType::HttpRequestHeaders => "request headers",
        MapType::HttpRequestTrailers => "request trailers",
        MapType::HttpResponseHeaders => "response headers",
        MapType::HttpResponseTrailers => "response trailers",
        MapType::GrpcReceiveInitialMetadata => "gRPC initial metadata",
        MapType::GrpcReceiveTrailingMetadata => "gRPC trailing metadata",
        MapType::HttpCallResponseHeaders => "HTTP call response headers",
        MapType::HttpCallResponseTrailers => "HTTP call response trailers",
        _ => "header map",
    }
}

fn get_header_map_pairs(
    caller: &mut Caller<'_, HostState>,
    ty: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> HostResult {
    let ty = map_type(ty)?;
    let state = caller.data();
    let hidden = &state.plugin.config.hidden;
    if hidden.hides_in(ty) {
        // The plugin's view: the map without its hidden entries.
        let len = state.map(ty).map_or(0, |m| {
            pairs::encoded_len(m.iter().filter(|(k, _)| !hidden.hides_header(ty, k)))
        });
        return return_blob(caller, ret_ptr, ret_size, len, |dst, state| {
            let hidden = &state.plugin.config.hidden;
            pairs::encode_into(
                state
                    .map(ty)?
                    .iter()
                    .filter(|(k, _)| !hidden.hides_header(ty, k)),
                dst,
            )
            .map_err(|_| Status::InternalFailure)
        });
    }
    let len = state.map(ty).map_or(0, |m| m.encoded_len());
    return_blob(caller, ret_ptr, ret_size, len, |dst, state| {
        state
            .map(ty)?
            .encode_into(dst)
            .map_err(|_| Status::InternalFailure)
    })
}

fn set_header_map_pairs(
    caller: &mut Caller<'_, HostState>,
    ty: i32,
    ptr: i32,
    size: i32,
) -> HostResult {
    let ty = map_type(ty)?;
    with_mem(caller, |mem, state| {
        let bytes = read(mem, ptr, size)?;
        let limits = state.plugin.config.limits.header_map();
        if !state.plugin.config.hidden.hides_in(ty) {
            let map = state.map_mut(ty)?;
            return map
                .try_replace_with(pairs::decode_lenient(bytes), limits)
                .map_err(|full| LimitExceeded::header_map(map_name(ty), full).into());
        }
        let plugin = Arc::clone(&state.plugin);
        let hidden = &plugin.config.hidden;
        // The hidden entries stay as they were (pseudo-headers first, the
        // others last); hidden names among the plugin's pairs are dropped.
        let map = state.map_mut(ty)?;
        let kept: Vec<(Vec<u8>, Vec<u8>)> = map
            .iter()
            .filter(|(k, _)| hidden.hides_header(ty, k))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        let given = pairs::decode_lenient(bytes);
        let attempted = given
            .iter()
            .find_map(|(k, _)| hidden.header(ty, k))
            .map(str::to_owned);
        let pseudo = |k: &[u8]| k.first() == Some(&b':');
        let entries = kept
            .iter()
            .filter(|(k, _)| pseudo(k))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .chain(
                given
                    .iter()
                    .copied()
                    .filter(|(k, _)| !hidden.hides_header(ty, k)),
            )
            .chain(
                kept.iter()
                    .filter(|(k, _)| !pseudo(k))
                    .map(|(k, v)| (k.as_slice(), v.as_slice())),
            );
        map.try_replace_with(entries, limits)
            .map_err(|full| Fail::from(LimitExceeded::header_map(map_name(ty), full)))?;
        if let Some(name) = attempted {
            state.hidden_write(&HiddenHeader(ty, &name));
        }
        Ok(())
    })?
}

fn get_header_map_size(caller: &mut Caller<'_, HostState>, ty: i32, ret: i32) -> HostResult {
    let ty = map_type(ty)?;
    with_mem(caller, |mem, state| {
        let map = state.map(ty)?;
        let hidden = &state.plugin.config.hidden;
        let size = if hidden.hides_in(ty) {
            map.iter()
                .filter(|(k, _)| !hidden.hides_header(ty, k))
                .map(|(k, v)| k.len() + v.len())
                .sum()
        } else {
            map.byte_size()
        };
        write_u32(mem, ret, u32::try_from(size).unwrap_or(u32::MAX))
    })??;
    Ok(())
}

/// How a write log names a hidden header: "request header `cookie`".
struct HiddenHeader<'a>(MapType, &'a str);

impl std::fmt::Display for HiddenHeader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let map = map_name(self.0);
        // "request headers" -> "request header"
        let map = map.strip_suffix('s').unwrap_or(map);
        write!(f, "{map} `{}`", self.1)
    }
}

fn get_header_map_value(
    caller: &mut Caller<'_, HostState>,
    ty: i32,
    key: i32,
    key_len: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> HostResult {
    let ty = map_type(ty)?;
    let (index, len) = with_mem(caller, |mem, state| {
        let key = read(mem, key, key_len)?;
        let map = match state.map(ty) {
            Ok(map) => map,
            // Envoy's access-log phase reads a map the stream never had as
            // a missing key, not as an unavailable map (ABI reference §4.3).
            Err(_) if state.frame.phase == Phase::Log => return Ok(None),
            Err(e) => return Err(e),
        };
        if state.plugin.config.hidden.hides_header(ty, key) {
            // A hidden header does not exist for this plugin.
            return Ok(None);
        }
        let found = map
            .position(key)
            .map(|i| (i, map.value_at(i).map_or(0, <[u8]>::len)));
        if found.is_some() {
            // Checked here, in the same borrow of memory, for the blob.
            check_ret(mem, ret_ptr, ret_size)?;
        }
        Ok::<_, Status>(found)
    })??
    .map_or((None, 0), |(i, l)| (Some(i), l));
    let Some(index) = index else {
        if caller.data().plugin.abi.is_v0_1() {
            return return_blob(caller, ret_ptr, ret_size, 0, |_, _| Ok(()));
        }
        return Err(Status::NotFound.into());
    };
    return_checked_blob(caller, ret_ptr, ret_size, len, |dst, state| {
        fill(
            dst,
            state
                .map(ty)?
                .value_at(index)
                .ok_or(Status::InternalFailure)?,
        )
    })
}

fn add_header_map_value(
    caller: &mut Caller<'_, HostState>,
    ty: i32,
    key: i32,
    key_len: i32,
    val: i32,
    val_len: i32,
) -> HostResult {
    edit(caller, ty, key, key_len, val, val_len, |m, k, v, limits| {
        m.try_append(k, v, limits)
    })
}

fn replace_header_map_value(
    caller: &mut Caller<'_, HostState>,
    ty: i32,
    key: i32,
    key_len: i32,
    val: i32,
    val_len: i32,
) -> HostResult {
    edit(caller, ty, key, key_len, val, val_len, |m, k, v, limits| {
        m.try_insert(k, v, limits)
    })
}

fn remove_header_map_value(
    caller: &mut Caller<'_, HostState>,
    ty: i32,
    key: i32,
    key_len: i32,
) -> HostResult {
    edit(caller, ty, key, key_len, 0, 0, |m, k, _, _| {
        m.remove(k);
        Ok(())
    })
}

fn edit(
    caller: &mut Caller<'_, HostState>,
    ty: i32,
    key: i32,
    key_len: i32,
    val: i32,
    val_len: i32,
    op: impl FnOnce(&mut HeaderMap, &[u8], &[u8], HeaderMapLimits) -> Result<(), HeaderMapFull>,
) -> HostResult {
    let ty = map_type(ty)?;
    with_mem(caller, |mem, state| {
        let key = read(mem, key, key_len)?;
        let val = read(mem, val, val_len)?;
        let limits = state.plugin.config.limits.header_map();
        state.map_mut(ty)?;
        if let Some(name) = state.plugin.config.hidden.header(ty, key) {
            // Not written; OK, since the SDKs accept only OK here.
            let name = name.to_owned();
            state.hidden_write(&HiddenHeader(ty, &name));
            return Ok(());
        }
        op(state.map_mut(ty)?, key, val, limits)
            .map_err(|full| Fail::from(LimitExceeded::header_map(map_name(ty), full)))
    })?
}
