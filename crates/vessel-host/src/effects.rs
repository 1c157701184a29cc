//! Effects: what a guest asks for during a callback, handed to the embedder
//! after the callback returns (ABI reference §6.4, §11.26). The guest is never
//! re-entered from inside a hostcall; the embedder carries each effect out
//! and feeds the results back as events (`Vm::on_http_call_response`, ...).

use std::time::Duration;

use vessel_abi::StreamType;

use crate::headers::HeaderMap;
use crate::ids::{ContextId, QueueToken, Token, VmInstanceId};

/// A local reply asked for with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status code.
    pub status: u32,
    /// Response-code details; whitespace is replaced by `_` as in Envoy.
    pub details: String,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Extra headers (keys lower-cased).
    pub headers: HeaderMap,
    /// gRPC status to send, if the guest gave one in 0..=16.
    pub grpc_status: Option<u32>,
}

/// An outgoing HTTP call (`proxy_http_call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCallRequest {
    /// The cluster (upstream) name.
    pub upstream: String,
    /// Request headers, including `:method`, `:path` and `:authority`.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: HeaderMap,
    /// Timeout; `None` means no timeout (the guest passed 0).
    pub timeout: Option<Duration>,
}

/// An outgoing gRPC call or stream (`proxy_grpc_call`, `proxy_grpc_stream`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCallRequest {
    /// The upstream: a cluster name, or a serialized `GrpcService` message.
    pub upstream: Vec<u8>,
    /// Service name.
    pub service: String,
    /// Method name.
    pub method: String,
    /// Initial metadata.
    pub initial_metadata: HeaderMap,
    /// The request message (unary calls only; empty for streams).
    pub message: Vec<u8>,
    /// Timeout (unary calls only).
    pub timeout: Option<Duration>,
}

/// Something the embedder must do after a callback returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Resume a paused stream direction (`proxy_continue_stream`,
    /// `proxy_continue_request`/`_response`).
    ContinueStream {
        /// The stream context.
        context: ContextId,
        /// Which direction.
        stream: StreamType,
    },
    /// Reset a stream (`proxy_close_stream`).
    CloseStream {
        /// The stream context.
        context: ContextId,
        /// Which direction.
        stream: StreamType,
    },
    /// Send a local reply on a stream.
    LocalResponse {
        /// The stream context.
        context: ContextId,
        /// The reply.
        response: LocalResponse,
    },
    /// Start an HTTP call; answer with `Vm::on_http_call_response`.
    HttpCall {
        /// The root context that owns the call.
        root: ContextId,
        /// The call's token.
        token: Token,
        /// The request.
        request: HttpCallRequest,
    },
    /// Start a unary gRPC call.
    GrpcCall {
        /// The root context that owns the call.
        root: ContextId,
        /// The call's token.
        token: Token,
        /// The call.
        call: GrpcCallRequest,
    },
    /// Open a gRPC stream.
    GrpcStream {
        /// The root context that owns the stream.
        root: ContextId,
        /// The stream's token.
        token: Token,
        /// The stream.
        call: GrpcCallRequest,
    },
    /// Send a message on a gRPC stream.
    GrpcSend {
        /// The stream's token.
        token: Token,
        /// The message.
        message: Vec<u8>,
        /// Half-close after this message.
        end_stream: bool,
    },
    /// Cancel (reset) a gRPC call or stream.
    GrpcCancel {
        /// The token.
        token: Token,
    },
    /// Half-close a gRPC stream (or cancel a unary call).
    GrpcClose {
        /// The token.
        token: Token,
    },
    /// A root context's tick period changed; `None` stops its ticks.
    TickPeriod {
        /// The root context.
        root: ContextId,
        /// The new period.
        period: Option<Duration>,
    },
    /// Call `proxy_on_queue_ready(root, token)` on VM `vm`.
    QueueReady {
        /// The VM that registered the queue.
        vm: VmInstanceId,
        /// Its root context.
        root: ContextId,
        /// The queue.
        token: QueueToken,
    },
    /// The guest asked to clear the route cache (0.1.0 `proxy_clear_route_cache`).
    ClearRouteCache {
        /// The stream context.
        context: ContextId,
    },
}
