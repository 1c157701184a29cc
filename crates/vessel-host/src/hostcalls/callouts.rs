//! HTTP and gRPC callouts (ABI reference §4.5, §11.6, §11.7, §11.27).
//!
//! Callouts belong to the caller's **root** context. Each is recorded as an
//! [`Effect`] with Envoy's token numbering (HTTP 4, 8, …;
//! gRPC calls 5, 9, …; gRPC streams 6, 10, …) and answered later by the
//! embedder through `Vm::on_http_call_response` and the gRPC events.
//!
//! * `proxy_http_call`: OK with a token; a cluster the embedder does not
//!   know (see [`HostEnvBuilder::known_clusters`](crate::HostEnvBuilder::known_clusters)),
//!   missing `:method`, `:path` or `:authority`, or a negative timeout →
//!   BAD_ARGUMENT; [`Limits::max_callouts_in_flight`](crate::Limits::max_callouts_in_flight)
//!   callouts already in flight in this VM → INTERNAL_FAILURE.
//! * `proxy_grpc_call`, `proxy_grpc_stream`: OK with a token; unknown
//!   cluster → PARSE_FAILURE (as Envoy); too many in flight → INTERNAL_FAILURE.
//!   The gRPC timeout is unsigned milliseconds (0 = none), as in cpp-host.
//! * `proxy_grpc_send`: OK; not a stream token → BAD_ARGUMENT; unknown → NOT_FOUND.
//! * `proxy_grpc_cancel`, `proxy_grpc_close`: OK; unknown → NOT_FOUND. As in
//!   Envoy, a stream's token stays valid after `proxy_on_grpc_close` until
//!   the guest closes (or cancels) it too.

use std::time::Duration;

use vessel_abi::{Status, pairs};
use wasmtime::Caller;

use super::{Registry, hostcall};
use crate::effects::{Effect, GrpcCallRequest, HttpCallRequest};
use crate::headers::HeaderMap;
use crate::ids::{CalloutKind, Token};
use crate::memory::{HostResult, range, read, return_u32, u, with_mem};
use crate::state::{Callout, HostState};

pub(crate) fn add_to_linker(reg: &mut Registry) -> wasmtime::Result<()> {
    hostcall!(reg, "env", "proxy_http_call", http_call,
        up: i32, up_len: i32, hdr: i32, hdr_len: i32, body: i32, body_len: i32,
        trl: i32, trl_len: i32, timeout: i32, ret: i32);
    hostcall!(reg, "env", "proxy_grpc_call", grpc_call,
        up: i32, up_len: i32, svc: i32, svc_len: i32, method: i32, method_len: i32,
        md: i32, md_len: i32, msg: i32, msg_len: i32, timeout: i32, ret: i32);
    hostcall!(reg, "env", "proxy_grpc_stream", grpc_stream,
        up: i32, up_len: i32, svc: i32, svc_len: i32, method: i32, method_len: i32,
        md: i32, md_len: i32, ret: i32);
    hostcall!(reg, "env", "proxy_grpc_send", grpc_send, token: i32, msg: i32, msg_len: i32, end: i32);
    hostcall!(reg, "env", "proxy_grpc_cancel", grpc_cancel, token: i32);
    hostcall!(reg, "env", "proxy_grpc_close", grpc_close, token: i32);
    Ok(())
}

pub(crate) fn next_token(state: &mut HostState, kind: CalloutKind) -> Token {
    let callouts = &mut state.callouts;
    let slot = match kind {
        CalloutKind::Http => &mut callouts.next_http_token,
        CalloutKind::GrpcCall => &mut callouts.next_grpc_call_token,
        CalloutKind::GrpcStream => &mut callouts.next_grpc_stream_token,
        CalloutKind::Redis => &mut callouts.redis.next_token,
    };
    loop {
        *slot = slot.wrapping_add(4);
        if *slot >= 4 && !callouts.in_flight.contains_key(slot) {
            return Token(*slot);
        }
    }
}

fn timeout(ms: i32) -> Result<Option<Duration>, Status> {
    match ms {
        0 => Ok(None),
        ms if ms < 0 => Err(Status::BadArgument),
        ms => Ok(Some(Duration::from_millis(ms as u64))),
    }
}

#[allow(clippy::too_many_arguments)]
fn http_call(
    caller: &mut Caller<'_, HostState>,
    up: i32,
    up_len: i32,
    hdr: i32,
    hdr_len: i32,
    body: i32,
    body_len: i32,
    trl: i32,
    trl_len: i32,
    timeout_ms: i32,
    ret: i32,
) -> HostResult {
    let token = with_mem(caller, |mem, state| {
        range(mem.len(), ret, 4)?;
        let upstream = String::from_utf8_lossy(read(mem, up, up_len)?).into_owned();
        let mut headers = HeaderMap::from_pairs(pairs::decode_lenient(read(mem, hdr, hdr_len)?));
        let body = read(mem, body, body_len)?.to_vec();
        let trailers = HeaderMap::from_pairs(pairs::decode_lenient(read(mem, trl, trl_len)?));
        let timeout = timeout(timeout_ms)?;
        if !state.env.knows_cluster(&upstream) {
            return Err(Status::BadArgument);
        }
        for required in [&b":method"[..], b":path", b":authority"] {
            if headers.get(required).is_none_or(<[u8]>::is_empty) {
                return Err(Status::BadArgument);
            }
        }
        if state.callouts.in_flight.len() >= state.plugin.config.limits.max_callouts_in_flight {
            return Err(Status::InternalFailure);
        }
        if !body.is_empty() {
            headers.insert(b"content-length", body.len().to_string().as_bytes());
        }
        let root = state.target_root();
        let token = next_token(state, CalloutKind::Http);
        state.callouts.in_flight.insert(
            token.0,
            Callout {
                root,
                kind: CalloutKind::Http,
                local_closed: false,
                remote_closed: false,
            },
        );
        state.effects.push(Effect::HttpCall {
            root,
            token,
            request: HttpCallRequest {
                upstream,
                headers,
                body,
                trailers,
                timeout,
            },
        });
        Ok(token)
    })??;
    return_u32(caller, ret, token.0)
}

#[allow(clippy::too_many_arguments)]
fn grpc_call(
    caller: &mut Caller<'_, HostState>,
    up: i32,
    up_len: i32,
    svc: i32,
    svc_len: i32,
    method: i32,
    method_len: i32,
    md: i32,
    md_len: i32,
    msg: i32,
    msg_len: i32,
    timeout_ms: i32,
    ret: i32,
) -> HostResult {
    start_grpc(
        caller,
        CalloutKind::GrpcCall,
        [
            (up, up_len),
            (svc, svc_len),
            (method, method_len),
            (md, md_len),
            (msg, msg_len),
        ],
        timeout_ms,
        ret,
    )
}

#[allow(clippy::too_many_arguments)]
fn grpc_stream(
    caller: &mut Caller<'_, HostState>,
    up: i32,
    up_len: i32,
    svc: i32,
    svc_len: i32,
    method: i32,
    method_len: i32,
    md: i32,
    md_len: i32,
    ret: i32,
) -> HostResult {
    start_grpc(
        caller,
        CalloutKind::GrpcStream,
        [
            (up, up_len),
            (svc, svc_len),
            (method, method_len),
            (md, md_len),
            (0, 0),
        ],
        0,
        ret,
    )
}

fn start_grpc(
    caller: &mut Caller<'_, HostState>,
    kind: CalloutKind,
    args: [(i32, i32); 5],
    timeout_ms: i32,
    ret: i32,
) -> HostResult {
    let token = with_mem(caller, |mem, state| {
        range(mem.len(), ret, 4)?;
        let [up, svc, method, md, msg] = args;
        let upstream = read(mem, up.0, up.1)?.to_vec();
        let service = String::from_utf8_lossy(read(mem, svc.0, svc.1)?).into_owned();
        let method = String::from_utf8_lossy(read(mem, method.0, method.1)?).into_owned();
        let initial_metadata = HeaderMap::from_pairs(pairs::decode_lenient(read(mem, md.0, md.1)?));
        let message = read(mem, msg.0, msg.1)?.to_vec();
        // cpp-host reads the gRPC timeout as an unsigned word: unlike
        // `proxy_http_call`, no value is a BAD_ARGUMENT (which the SDKs
        // would not accept here). 0 = no timeout.
        let timeout = (timeout_ms != 0).then(|| Duration::from_millis(u64::from(u(timeout_ms))));
        if !state.env.knows_cluster(&String::from_utf8_lossy(&upstream)) {
            return Err(Status::ParseFailure);
        }
        if state.callouts.in_flight.len() >= state.plugin.config.limits.max_callouts_in_flight {
            return Err(Status::InternalFailure);
        }
        let root = state.target_root();
        let token = next_token(state, kind);
        state.callouts.in_flight.insert(
            token.0,
            Callout {
                root,
                kind,
                local_closed: false,
                remote_closed: false,
            },
        );
        let call = GrpcCallRequest {
            upstream,
            service,
            method,
            initial_metadata,
            message,
            timeout,
        };
        state.effects.push(match kind {
            CalloutKind::GrpcStream => Effect::GrpcStream { root, token, call },
            _ => Effect::GrpcCall { root, token, call },
        });
        Ok(token)
    })??;
    return_u32(caller, ret, token.0)
}

fn grpc_send(
    caller: &mut Caller<'_, HostState>,
    token: i32,
    msg: i32,
    msg_len: i32,
    end: i32,
) -> HostResult {
    with_mem(caller, |mem, state| {
        let token = Token(u(token));
        let call = state
            .callouts
            .in_flight
            .get(&token.0)
            .ok_or(Status::NotFound)?;
        if call.kind != CalloutKind::GrpcStream {
            return Err(Status::BadArgument);
        }
        let message = read(mem, msg, msg_len)?.to_vec();
        state.effects.push(Effect::GrpcSend {
            token,
            message,
            end_stream: end != 0,
        });
        Ok(())
    })??;
    Ok(())
}

fn grpc_cancel(caller: &mut Caller<'_, HostState>, token: i32) -> HostResult {
    let state = caller.data_mut();
    let token = Token(u(token));
    state
        .callouts
        .in_flight
        .remove(&token.0)
        .ok_or(Status::NotFound)?;
    state.effects.push(Effect::GrpcCancel { token });
    Ok(())
}

fn grpc_close(caller: &mut Caller<'_, HostState>, token: i32) -> HostResult {
    let state = caller.data_mut();
    let token = Token(u(token));
    let call = state
        .callouts
        .in_flight
        .get_mut(&token.0)
        .ok_or(Status::NotFound)?;
    if call.kind != CalloutKind::GrpcStream || call.remote_closed {
        // Closing a unary call cancels it; closing a stream the remote side
        // already closed releases it (Envoy's `grpcClose`).
        state.callouts.in_flight.remove(&token.0);
    } else {
        // A stream stays open until the remote side closes.
        call.local_closed = true;
    }
    state.effects.push(Effect::GrpcClose { token });
    Ok(())
}
