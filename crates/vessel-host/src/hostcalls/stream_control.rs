//! Stream control and context management (ABI reference §4.1, §4.4,
//! §11.3, §11.4, §11.8, §11.11).
//!
//! * `proxy_continue_stream`: OK; type > 3 → BAD_ARGUMENT; UPSTREAM →
//!   UNIMPLEMENTED (as Envoy). For a TCP stream, DOWNSTREAM emits
//!   [`Effect::ContinueStream`] (the filter manager resumes reading after
//!   the callback); the HTTP types are no-ops. For an HTTP stream it emits
//!   [`Effect::ContinueStream`] and seals that
//!   direction's headers and trailers (later map calls → BAD_ARGUMENT, as in
//!   Envoy). From a root context it is a no-op that returns OK.
//! * `proxy_continue_request`, `proxy_continue_response` (0.1.0): as
//!   `proxy_continue_stream(HTTP_REQUEST / HTTP_RESPONSE)`.
//! * `proxy_close_stream`: OK, emits [`Effect::CloseStream`]; type > 3 → BAD_ARGUMENT.
//!   For a TCP stream only DOWNSTREAM and UPSTREAM close (the connection).
//! * `proxy_send_local_response`: OK; emits
//!   [`Effect::LocalResponse`] and makes the
//!   current callback's result a stop (§11.3). From a root context or a
//!   TCP stream: OK, ignored.
//! * `proxy_clear_route_cache` (0.1.0): OK, emits [`Effect::ClearRouteCache`].
//! * `proxy_set_effective_context`: OK; unknown id → BAD_ARGUMENT.
//! * `proxy_done`: OK if the root context was waiting in `on_done`
//!   (its `on_delete` runs after the current call); else NOT_FOUND.
//! * `proxy_get_status`: OK with the root context's last callout status
//!   (code, message).
//!
//! Each effect these queue counts against
//! [`Limits::max_effect_bytes`](crate::Limits::max_effect_bytes) until the
//! embedder takes it; past it (a guest that continues or replies in a
//! loop) the VM fails with
//! [`LimitExceeded::EffectBytes`], since
//! the SDKs accept only OK from these calls (§11.20). Local reply headers
//! over [`Limits::max_header_map_bytes`](crate::Limits::max_header_map_bytes)
//! or [`Limits::max_header_map_entries`](crate::Limits::max_header_map_entries)
//! fail the VM the same way, with
//! [`LimitExceeded::HeaderMapBytes`] /
//! [`HeaderMapEntries`](crate::LimitExceeded::HeaderMapEntries).

use vessel_abi::{Status, StreamType, pairs};
use wasmtime::Caller;

use super::{Registry, hostcall};
use crate::effects::{Effect, LocalResponse};
use crate::headers::HeaderMap;
use crate::ids::ContextId;
use crate::limits::LimitExceeded;
use crate::memory::{Fail, HostResult, range, read, return_bytes, return_u32, u, with_mem};
use crate::state::{Context, HostState};

pub(crate) fn add_to_linker(reg: &mut Registry) -> wasmtime::Result<()> {
    hostcall!(reg, "env", "proxy_continue_stream", continue_stream, ty: i32);
    hostcall!(reg, "env", "proxy_close_stream", close_stream, ty: i32);
    hostcall!(reg, "env", "proxy_continue_request", continue_request);
    hostcall!(reg, "env", "proxy_continue_response", continue_response);
    hostcall!(reg, "env", "proxy_clear_route_cache", clear_route_cache);
    hostcall!(reg, "env", "proxy_send_local_response", send_local_response,
        status: i32, details: i32, details_len: i32, body: i32, body_len: i32,
        hdr: i32, hdr_len: i32, grpc: i32);
    hostcall!(reg, "env", "proxy_set_effective_context", set_effective_context, id: i32);
    hostcall!(reg, "env", "proxy_done", done);
    hostcall!(reg, "env", "proxy_get_status", get_status, code: i32, msg_ptr: i32, msg_size: i32);
    Ok(())
}

fn stream_type(ty: i32) -> Result<StreamType, Status> {
    StreamType::try_from(u(ty)).map_err(|_| Status::BadArgument)
}

pub(crate) fn do_continue(state: &mut HostState, stream: StreamType) -> HostResult {
    if stream == StreamType::Upstream {
        return Err(Status::Unimplemented.into());
    }
    let target = state.target();
    // Each kind of stream continues only its own directions; the others
    // are no-ops that return OK, as in Envoy (no callbacks of that kind).
    let own = match state.http(target) {
        Some(h) if h.tcp => stream == StreamType::Downstream,
        Some(_) => matches!(stream, StreamType::HttpRequest | StreamType::HttpResponse),
        None => false,
    };
    if own {
        state.queue_effect(Effect::ContinueStream {
            context: target,
            stream,
        })?;
    }
    if let Some(h) = state.http_mut(target) {
        match stream {
            StreamType::HttpRequest => h.request.seal(),
            StreamType::HttpResponse => h.response.seal(),
            _ => {}
        }
    }
    Ok(())
}

fn continue_stream(caller: &mut Caller<'_, HostState>, ty: i32) -> HostResult {
    let ty = stream_type(ty)?;
    do_continue(caller.data_mut(), ty)
}

fn continue_request(caller: &mut Caller<'_, HostState>) -> HostResult {
    do_continue(caller.data_mut(), StreamType::HttpRequest)
}

fn continue_response(caller: &mut Caller<'_, HostState>) -> HostResult {
    do_continue(caller.data_mut(), StreamType::HttpResponse)
}

fn close_stream(caller: &mut Caller<'_, HostState>, ty: i32) -> HostResult {
    let stream = stream_type(ty)?;
    let state = caller.data_mut();
    let context = state.target();
    // A TCP stream closes its connection for DOWNSTREAM and UPSTREAM (both
    // close the client connection in Envoy, with FlushWrite); the HTTP
    // types are no-ops for it.
    let queue = match state.http(context) {
        Some(h) if h.tcp => matches!(stream, StreamType::Downstream | StreamType::Upstream),
        Some(_) => true,
        None => false,
    };
    if queue {
        state.queue_effect(Effect::CloseStream { context, stream })?;
    }
    Ok(())
}

fn clear_route_cache(caller: &mut Caller<'_, HostState>) -> HostResult {
    let state = caller.data_mut();
    let context = state.target();
    state.queue_effect(Effect::ClearRouteCache { context })?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn send_local_response(
    caller: &mut Caller<'_, HostState>,
    status: i32,
    details: i32,
    details_len: i32,
    body: i32,
    body_len: i32,
    hdr: i32,
    hdr_len: i32,
    grpc: i32,
) -> HostResult {
    with_mem(caller, |mem, state| {
        let details: String = String::from_utf8_lossy(read(mem, details, details_len)?)
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
        let body = read(mem, body, body_len)?;
        let header_bytes = read(mem, hdr, hdr_len)?;
        let target = state.target();
        // From a root context or a TCP stream: OK, ignored (Envoy has no
        // decoder callbacks there).
        if state.http(target).is_none_or(|h| h.tcp) {
            return Ok(());
        }
        let limits = state.plugin.config.limits.header_map();
        let headers = HeaderMap::try_from_pairs(pairs::decode_lenient(header_bytes), limits)
            .map_err(|full| Fail::from(LimitExceeded::header_map("local reply headers", full)))?;
        state.queue_effect(Effect::LocalResponse {
            context: target,
            response: LocalResponse {
                status: u(status),
                details,
                body: body.to_vec(),
                headers,
                grpc_status: (0..=16).contains(&grpc).then_some(u(grpc)),
            },
        })?;
        if let Some(h) = state.http_mut(target) {
            h.local_response_sent = true;
        }
        state.frame.stop_next_iteration = true;
        Ok::<(), Fail>(())
    })?
}

fn set_effective_context(caller: &mut Caller<'_, HostState>, id: i32) -> HostResult {
    let state = caller.data_mut();
    if !state.contexts.contains_key(&u(id)) {
        return Err(Status::BadArgument.into());
    }
    state.frame.effective = Some(ContextId(u(id)));
    Ok(())
}

fn done(caller: &mut Caller<'_, HostState>) -> HostResult {
    let state = caller.data_mut();
    let target = state.target();
    match state.contexts.get_mut(&target.0) {
        Some(Context::Root(r)) if r.pending_done => {
            r.pending_done = false;
            state.done_requested.push(target);
            Ok(())
        }
        _ => Err(Status::NotFound.into()),
    }
}

fn get_status(
    caller: &mut Caller<'_, HostState>,
    code: i32,
    msg_ptr: i32,
    msg_size: i32,
) -> HostResult {
    let (status, message) = with_mem(caller, |mem, state| {
        range(mem.len(), code, 4)?;
        let root = state.target_root();
        match state.contexts.get(&root.0) {
            Some(Context::Root(r)) => Ok::<_, Status>((r.status_code, r.status_message.clone())),
            _ => Ok((0, Vec::new())),
        }
    })??;
    return_bytes(caller, msg_ptr, msg_size, &message)?;
    return_u32(caller, code, status)
}
