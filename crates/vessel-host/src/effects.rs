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

/// How to reach a Redis cluster, as set by Higress's `proxy_redis_init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `AUTH` user name (empty: none, or password-only `AUTH`).
    pub username: String,
    /// `AUTH` password (empty: no `AUTH`).
    pub password: String,
    /// Per-command timeout, connecting included (Envoy's `op_timeout`).
    pub timeout: Duration,
    /// The database to `SELECT` on a new connection (the `db=N` query
    /// parameter of the cluster name; 0 = no `SELECT`).
    pub database: u32,
}

impl RedisOptions {
    /// Envoy-Higress's default operation timeout (its `ConfigImpl`).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            username: String::new(),
            password: String::new(),
            timeout: Self::DEFAULT_TIMEOUT,
            database: 0,
        }
    }
}

/// An outgoing Redis command (`proxy_redis_call`, Higress 0.2.100).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisCallRequest {
    /// The cluster name, without the `?param=...` suffix.
    pub cluster: String,
    /// The command exactly as the guest encoded it (RESP: an array of bulk
    /// strings); the embedder sends it as is and reads one reply.
    pub query: Vec<u8>,
    /// The options of the last `proxy_redis_init` for this cluster on this
    /// VM (defaults if none).
    pub options: RedisOptions,
}

/// Something the embedder must do after a callback returns.
#[non_exhaustive]
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
    /// Send a Redis command and read one reply (Higress 0.2.100); answer
    /// with `Vm::on_redis_call_response`.
    RedisCall {
        /// The root context that owns the call.
        root: ContextId,
        /// The call's token.
        token: Token,
        /// The command.
        call: RedisCallRequest,
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

impl Effect {
    /// True for the effects that start a callout (their bytes count until
    /// the callout ends, not until the embedder takes them).
    pub(crate) fn starts_callout(&self) -> bool {
        matches!(
            self,
            Self::HttpCall { .. }
                | Self::GrpcCall { .. }
                | Self::GrpcStream { .. }
                | Self::RedisCall { .. }
        )
    }

    /// The host memory this effect holds: the effect itself plus the bytes
    /// it carries. Counted against
    /// [`Limits::max_effect_bytes`](crate::Limits::max_effect_bytes).
    pub(crate) fn held_bytes(&self) -> usize {
        let payload = match self {
            Self::LocalResponse { response: r, .. } => r
                .details
                .len()
                .saturating_add(r.body.len())
                .saturating_add(r.headers.footprint()),
            Self::HttpCall { request: r, .. } => r
                .upstream
                .len()
                .saturating_add(r.headers.footprint())
                .saturating_add(r.body.len())
                .saturating_add(r.trailers.footprint()),
            Self::GrpcCall { call, .. } | Self::GrpcStream { call, .. } => call
                .upstream
                .len()
                .saturating_add(call.service.len())
                .saturating_add(call.method.len())
                .saturating_add(call.initial_metadata.footprint())
                .saturating_add(call.message.len()),
            Self::RedisCall { call, .. } => call
                .cluster
                .len()
                .saturating_add(call.query.len())
                .saturating_add(call.options.username.len())
                .saturating_add(call.options.password.len()),
            Self::GrpcSend { message, .. } => message.len(),
            Self::ContinueStream { .. }
            | Self::CloseStream { .. }
            | Self::GrpcCancel { .. }
            | Self::GrpcClose { .. }
            | Self::TickPeriod { .. }
            | Self::QueueReady { .. }
            | Self::ClearRouteCache { .. } => 0,
        };
        payload.saturating_add(std::mem::size_of::<Self>())
    }
}

/// Envoy's `Grpc::Common::isGrpcRequestHeaders`: a `:path` and a
/// content-type of `application/grpc` or `application/grpc+...`.
pub fn is_grpc_request(headers: &HeaderMap) -> bool {
    // The content type first: most requests are not gRPC, and then one
    // walk over the map decides.
    headers.get(b"content-type").is_some_and(|ct| {
        ct.strip_prefix(b"application/grpc")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"+"))
    }) && headers.contains(b":path")
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`.
pub fn http_to_grpc_status(status: u32) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// Envoy's `PercentEncoding::encode` for `grpc-message`.
fn percent_encode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for &b in text {
        if !(b' '..=b'~').contains(&b) || b == b'%' {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

impl LocalResponse {
    /// The response head and body the client gets, shaped as Envoy's
    /// `Utility::prepareLocalReply`: for a gRPC request a headers-only `200`
    /// with `content-type: application/grpc`, `grpc-status` (the guest's, or
    /// mapped from the HTTP status) and the body as `grpc-message`;
    /// otherwise the status and body, with `content-type: text/plain` if the
    /// guest set none, and no `grpc-status`.
    pub fn to_response(&self, grpc_request: bool) -> (HeaderMap, Vec<u8>) {
        let mut headers = HeaderMap::new();
        if grpc_request {
            headers.append(b":status", b"200");
        } else {
            headers.append(b":status", self.status.to_string().as_bytes());
        }
        for (k, v) in self.headers.iter() {
            headers.append(k, v);
        }
        if grpc_request {
            headers.insert(b"content-type", b"application/grpc");
            if !headers.contains(b"grpc-status") {
                let code = self
                    .grpc_status
                    .unwrap_or_else(|| http_to_grpc_status(self.status));
                headers.append(b"grpc-status", code.to_string().as_bytes());
            }
            if !self.body.is_empty() {
                headers.insert(b"grpc-message", &percent_encode(&self.body));
            }
            headers.remove(b"content-length");
            return (headers, Vec::new());
        }
        if !self.body.is_empty() && !headers.contains(b"content-type") {
            headers.append(b"content-type", b"text/plain");
        }
        (headers, self.body.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> LocalResponse {
        LocalResponse {
            status: 403,
            details: String::new(),
            body: b"no way\n".to_vec(),
            headers: HeaderMap::from_pairs([("x-a", "1")]),
            grpc_status: None,
        }
    }

    #[test]
    fn http_reply_keeps_status_and_body_and_never_sends_grpc_status() {
        let mut r = reply();
        r.grpc_status = Some(7);
        let (h, b) = r.to_response(false);
        assert_eq!(h.get(b":status"), Some(&b"403"[..]));
        assert_eq!(h.get(b"content-type"), Some(&b"text/plain"[..]));
        assert_eq!(h.get(b"grpc-status"), None);
        assert_eq!(b, b"no way\n");
    }

    #[test]
    fn grpc_reply_is_headers_only_with_mapped_status() {
        let (h, b) = reply().to_response(true);
        assert_eq!(h.get(b":status"), Some(&b"200"[..]));
        assert_eq!(h.get(b"grpc-status"), Some(&b"7"[..]));
        assert_eq!(h.get(b"grpc-message"), Some(&b"no way%0A"[..]));
        assert!(b.is_empty());
        let grpc = HeaderMap::from_pairs([
            (":path", "/s/m"),
            ("content-type", "application/grpc+proto"),
        ]);
        assert!(is_grpc_request(&grpc));
        assert!(!is_grpc_request(&HeaderMap::from_pairs([
            (":path", "/"),
            ("content-type", "application/grpcx")
        ])));
        // Envoy's check wants a `:path` too.
        assert!(!is_grpc_request(&HeaderMap::from_pairs([(
            "content-type",
            "application/grpc"
        )])));
    }
}
