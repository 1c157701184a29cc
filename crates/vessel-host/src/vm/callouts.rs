//! Events for a [`Vm`]'s root context: callout answers (HTTP, gRPC,
//! Redis), ticks, queue notifications and foreign functions.

use vessel_abi::Status;

use super::callbacks::{
    Callback, OnForeignFunction, OnGrpcClose, OnGrpcReceive, OnGrpcReceiveInitialMetadata,
    OnGrpcReceiveTrailingMetadata, OnHttpCallResponse, OnQueueReady, OnRedisCallResponse, OnTick,
};
use super::{Vm, len_i32};
use crate::error::VmError;
use crate::headers::HeaderMap;
use crate::ids::{CalloutKind, ContextId, QueueToken, Token};
use crate::state::Phase;

/// The answer to an HTTP call, delivered with [`Vm::on_http_call_response`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpCallResponse {
    /// Response headers, including `:status`.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Vec<u8>,
    /// Response trailers.
    pub trailers: HeaderMap,
}

/// How an HTTP call ended.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpCallOutcome {
    /// A response arrived. A timeout is reported this way too, as Envoy's
    /// async client does: a `504` response.
    Response(HttpCallResponse),
    /// The call failed without a response (connection failure, reset). The
    /// guest gets 0 headers, 0 body bytes, 0 trailers and
    /// `proxy_get_status` gives `(BROKEN_CONNECTION, reason)`, as in Envoy.
    Failed {
        /// Envoy's message, e.g. `"reset"`.
        reason: String,
    },
}

/// How a Redis call (Higress 0.2.100) ended, delivered with
/// [`Vm::on_redis_call_response`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisCallOutcome {
    /// One RESP reply, raw (an error reply such as `-ERR ...` included).
    /// The guest gets status 0 and reads it as buffer 9.
    Reply(Vec<u8>),
    /// No reply: connection failure or timeout. The guest gets status 1
    /// (`NetworkError`) and size 0; `proxy_get_status` gives
    /// `(BROKEN_CONNECTION, "reset")`, as in Envoy-Higress.
    Failed,
}

impl Vm {
    // ---- root-context events ------------------------------------------

    /// Runs `proxy_on_tick` on the root context.
    pub fn on_tick(&mut self) -> Result<(), VmError> {
        let root = self.root;
        self.call::<OnTick>(root, Phase::Callback, root.0 as i32)?;
        Ok(())
    }

    /// Runs `proxy_on_queue_ready(root, token)`.
    pub fn on_queue_ready(&mut self, root: ContextId, token: QueueToken) -> Result<(), VmError> {
        self.call::<OnQueueReady>(root, Phase::Callback, (root.0 as i32, token.0 as i32))?;
        Ok(())
    }

    /// Runs `proxy_on_foreign_function(root, function_id, args_size)` with
    /// `args` readable as the foreign-function argument buffer (0.2.x only).
    pub fn on_foreign_function(&mut self, function_id: u32, args: &[u8]) -> Result<(), VmError> {
        self.alive()?;
        if self.plugin.abi_version().is_v0_1() {
            // 0.1.0 has no foreign functions.
            return Ok(());
        }
        self.store.data_mut().foreign_args = args.to_vec();
        let root = self.root;
        let r = self.call::<OnForeignFunction>(
            root,
            Phase::Callback,
            (root.0 as i32, function_id as i32, len_i32(args.len())),
        );
        self.store.data_mut().foreign_args.clear();
        r.map(drop)
    }

    fn take_callout(&mut self, token: Token) -> Result<crate::state::Callout, VmError> {
        self.store
            .data_mut()
            .end_callout(token)
            .ok_or(VmError::UnknownToken(token))
    }

    fn set_status(&mut self, root: ContextId, code: u32, message: &[u8]) {
        if let Some(r) = self.store.data_mut().root_mut(root) {
            r.status_code = code;
            r.status_message.clear();
            r.status_message.extend_from_slice(message);
        }
    }

    /// Delivers the end of an HTTP call to its root context
    /// (`proxy_on_http_call_response(root, token, headers, body, trailers)`).
    pub fn on_http_call_response(
        &mut self,
        token: Token,
        outcome: HttpCallOutcome,
    ) -> Result<(), VmError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let call = self.take_callout(token)?;
        let root = call.root;
        let (h, b, t) = match outcome {
            HttpCallOutcome::Response(r) => {
                self.set_status(root, Status::Ok.as_u32(), b"");
                let counts = (
                    len_i32(r.headers.len()),
                    len_i32(r.body.len()),
                    len_i32(r.trailers.len()),
                );
                let data = &mut self.store.data_mut().callouts.response;
                data.headers = Some(r.headers);
                data.body = Some(r.body);
                data.trailers = Some(r.trailers);
                counts
            }
            HttpCallOutcome::Failed { reason } => {
                self.set_status(root, Status::BrokenConnection.as_u32(), reason.as_bytes());
                (0, 0, 0)
            }
        };
        let result = self.call::<OnHttpCallResponse>(
            root,
            Phase::Callback,
            (root.0 as i32, token.0 as i32, h, b, t),
        );
        self.store.data_mut().callouts.response = Default::default();
        result.map(drop)
    }

    /// Delivers the end of a Redis call to its root context
    /// (`proxy_on_redis_call_response(root, token, status, size)`; see
    /// [`hostcalls::redis`](crate::hostcalls::redis)).
    pub fn on_redis_call_response(
        &mut self,
        token: Token,
        outcome: RedisCallOutcome,
    ) -> Result<(), VmError> {
        self.alive()?;
        if token.kind() != Some(CalloutKind::Redis) {
            return Err(VmError::UnknownToken(token));
        }
        let root = self.take_callout(token)?.root;
        let (status, size) = match outcome {
            RedisCallOutcome::Reply(reply) => {
                let n = len_i32(reply.len());
                self.store.data_mut().callouts.redis.response = reply;
                (0, n)
            }
            RedisCallOutcome::Failed => {
                self.set_status(root, Status::BrokenConnection.as_u32(), b"reset");
                (1, 0)
            }
        };
        let result = self.call::<OnRedisCallResponse>(
            root,
            Phase::Callback,
            (root.0 as i32, token.0 as i32, status, size),
        );
        self.store.data_mut().callouts.redis.response = Vec::new();
        result.map(drop)
    }

    /// Runs gRPC callback `C(root, token, arg)`; `finished` ends the call.
    fn grpc_event<C>(&mut self, token: Token, arg: i32, finished: bool) -> Result<(), VmError>
    where
        C: Callback<Params = (i32, i32, i32), Results = ()>,
    {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let call = *self
            .store
            .data()
            .callouts
            .in_flight
            .get(&token.0)
            .ok_or(VmError::UnknownToken(token))?;
        if finished {
            self.store.data_mut().end_callout(token);
        }
        let result = self.call::<C>(
            call.root,
            Phase::Callback,
            (call.root.0 as i32, token.0 as i32, arg),
        );
        self.store.data_mut().callouts.response = Default::default();
        result.map(drop)
    }

    /// A stream the remote side closed gets no more events.
    fn reject_remote_closed(&self, token: Token) -> Result<(), VmError> {
        match self.store.data().callouts.in_flight.get(&token.0) {
            Some(c) if c.remote_closed => Err(VmError::UnknownToken(token)),
            _ => Ok(()),
        }
    }

    /// Delivers gRPC initial metadata (`proxy_on_grpc_receive_initial_metadata`).
    pub fn on_grpc_receive_initial_metadata(
        &mut self,
        token: Token,
        metadata: HeaderMap,
    ) -> Result<(), VmError> {
        self.reject_remote_closed(token)?;
        let n = len_i32(metadata.len());
        self.store.data_mut().callouts.response.headers = Some(metadata);
        self.grpc_event::<OnGrpcReceiveInitialMetadata>(token, n, false)
    }

    /// Delivers a gRPC message (`proxy_on_grpc_receive`). For a unary call
    /// this ends the call, as in Envoy.
    pub fn on_grpc_receive(&mut self, token: Token, message: Vec<u8>) -> Result<(), VmError> {
        self.reject_remote_closed(token)?;
        let n = len_i32(message.len());
        self.store.data_mut().callouts.response.body = Some(message);
        let unary = token.kind() == Some(CalloutKind::GrpcCall);
        if unary && let Some(call) = self.store.data().callouts.in_flight.get(&token.0).copied() {
            self.set_status(call.root, 0, b"");
        }
        self.grpc_event::<OnGrpcReceive>(token, n, unary)
    }

    /// Delivers gRPC trailing metadata.
    pub fn on_grpc_receive_trailing_metadata(
        &mut self,
        token: Token,
        metadata: HeaderMap,
    ) -> Result<(), VmError> {
        self.reject_remote_closed(token)?;
        let n = len_i32(metadata.len());
        self.store.data_mut().callouts.response.trailers = Some(metadata);
        self.grpc_event::<OnGrpcReceiveTrailingMetadata>(token, n, false)
    }

    /// Delivers the close of a gRPC call or stream with its status. A
    /// stream's token stays valid until the guest has closed it too
    /// (`proxy_grpc_close`), as in Envoy.
    pub fn on_grpc_close(
        &mut self,
        token: Token,
        status: u32,
        message: &str,
    ) -> Result<(), VmError> {
        self.reject_remote_closed(token)?;
        let mut finished = true;
        if let Some(call) = self.store.data_mut().callouts.in_flight.get_mut(&token.0) {
            // Envoy keeps a stream the guest has not closed until it does
            // (a `proxy_grpc_close` from now on releases it).
            finished = call.kind != CalloutKind::GrpcStream || call.local_closed;
            call.remote_closed = true;
            let root = call.root;
            self.set_status(root, status, message.as_bytes());
        }
        self.grpc_event::<OnGrpcClose>(token, status as i32, finished)
    }
}
