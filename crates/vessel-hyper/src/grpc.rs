//! gRPC callouts over HTTP/2 to a cluster, with the callbacks Envoy's async
//! gRPC client gives (ABI reference §4.5, §11.27):
//!
//! * `proxy_grpc_stream` opens a POST to `/<service>/<method>` with
//!   `content-type: application/grpc`, `te: trailers` and the initial
//!   metadata; `proxy_grpc_send` writes one length-prefixed message
//!   (`end_stream` half-closes after it); `proxy_grpc_close` half-closes
//!   (an empty DATA frame with END_STREAM, as Envoy's `closeStream`), and the
//!   stream stays open for what the server still sends; `proxy_grpc_cancel`
//!   resets the HTTP/2 stream and **no further callback** reaches the guest.
//! * The response head becomes `proxy_on_grpc_receive_initial_metadata`
//!   (with `:status`), each message `proxy_on_grpc_receive`, the trailers
//!   `proxy_on_grpc_receive_trailing_metadata`, then
//!   `proxy_on_grpc_close(status)` with `grpc-status` / `grpc-message`
//!   (readable with `proxy_get_status`).
//! * A trailers-only answer gives empty initial metadata, the head as
//!   trailing metadata, and its status (Unknown (2) if it has none).
//! * A non-200 answer without `grpc-status`: empty initial and trailing
//!   metadata, then the status mapped from the HTTP status (Envoy's
//!   `httpToGrpcStatus`).
//! * A body that ends without trailers closes with Unknown (2); an upstream
//!   reset with Internal (13); a compressed message with Internal (13); a
//!   message over [`MAX_CALLOUT_RESPONSE_BYTES`] with ResourceExhausted (8).
//! * An unknown cluster, an endpoint that cannot be reached or a connection
//!   lost before the response head is answered as Envoy's router answers a
//!   gRPC request it cannot forward: a trailers-only Unavailable (14) with
//!   the reason in `grpc-message`.
//!
//! Unary calls (`proxy_grpc_call`, see [`crate::callout`]) are tracked
//! here too, so that `proxy_grpc_cancel` / `proxy_grpc_close` on them abort
//! the request and suppress the callback.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Uri};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::AbortHandle;
use vessel_host::{CalloutKind, GrpcCallRequest, HeaderMap, Token, Vm, VmError};

use crate::callout::{self, GrpcOutcome, MAX_CALLOUT_RESPONSE_BYTES};
use crate::cluster::Clusters;
use crate::convert;
use crate::pool::{VmCell, VmShared, dispatch};

/// Envoy's `grpc-message` when the upstream connection cannot be made.
const CONNECT_FAILURE: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
/// Envoy's `grpc-message` when the connection is lost before the head.
const CONNECTION_TERMINATION: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
/// Envoy's `grpc-message` when the cluster has no endpoint.
const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";

/// gRPC status codes used here.
mod code {
    pub(super) const UNKNOWN: u32 = 2;
    pub(super) const RESOURCE_EXHAUSTED: u32 = 8;
    pub(super) const INTERNAL: u32 = 13;
    pub(super) const UNAVAILABLE: u32 = 14;
}

/// A gRPC call or stream in flight, owned by the VM that started it.
pub(crate) struct GrpcHandle {
    /// Distinguishes this call from a later one that reuses the token.
    id: u64,
    /// Outgoing messages (framed); `None` once half-closed (and for unary
    /// calls).
    tx: Option<UnboundedSender<Bytes>>,
    task: AbortHandle,
}

/// The gRPC calls and streams of one VM, by token.
#[derive(Default)]
pub(crate) struct GrpcCalls {
    by_token: HashMap<Token, GrpcHandle>,
}

impl GrpcCalls {
    fn is_current(&self, token: Token, id: u64) -> bool {
        self.by_token.get(&token).is_some_and(|h| h.id == id)
    }

    /// `proxy_grpc_send`: queues one message; `end_stream` half-closes.
    pub(crate) fn send(&mut self, token: Token, message: &[u8], end_stream: bool) {
        let Some(h) = self.by_token.get_mut(&token) else {
            return;
        };
        match &h.tx {
            Some(tx) => {
                let _ = tx.send(frame(message));
            }
            None => {
                log::debug!(target: "vessel::grpc", "send on half-closed gRPC stream {token} dropped");
            }
        }
        if end_stream {
            h.tx = None;
        }
    }

    /// `proxy_grpc_close`: half-closes a stream; cancels a unary call.
    pub(crate) fn close(&mut self, token: Token) {
        if token.kind() == Some(CalloutKind::GrpcStream) {
            if let Some(h) = self.by_token.get_mut(&token) {
                h.tx = None;
            }
        } else {
            self.cancel(token);
        }
    }

    /// `proxy_grpc_cancel`: resets the call; no callback follows.
    pub(crate) fn cancel(&mut self, token: Token) {
        if let Some(h) = self.by_token.remove(&token) {
            h.task.abort();
        }
    }

    /// Aborts every call (the VM is going away).
    pub(crate) fn abort_all(&mut self) {
        for (_, h) in self.by_token.drain() {
            h.task.abort();
        }
    }

    /// Calls in flight.
    pub(crate) fn len(&self) -> usize {
        self.by_token.len()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What the server sent, in order.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Initial(HeaderMap),
    Message(Vec<u8>),
    Trailing(HeaderMap),
    Close(u32, String),
}

/// Hands one event to the VM, if the call is still current (not cancelled,
/// not replaced). Returns false when the call must stop.
fn deliver(cell: &Weak<VmCell>, token: Token, id: u64, event: Event, last: bool) -> bool {
    let Some(cell) = cell.upgrade() else {
        return false;
    };
    let mut shared = cell.lock();
    if !shared.grpc.is_current(token, id) {
        return false;
    }
    if last {
        shared.grpc.by_token.remove(&token);
    }
    let vm: &mut Vm = &mut shared.vm;
    let result: Result<(), VmError> = match event {
        Event::Initial(md) => vm.on_grpc_receive_initial_metadata(token, md),
        Event::Message(m) => vm.on_grpc_receive(token, m),
        Event::Trailing(md) => vm.on_grpc_receive_trailing_metadata(token, md),
        Event::Close(status, message) => vm.on_grpc_close(token, status, &message),
    };
    if let Err(e) = result {
        log::debug!(target: "vessel::grpc", "gRPC callback for {token}: {e}");
    }
    dispatch(&cell, &mut shared);
    !last && shared.grpc.is_current(token, id)
}

/// Starts a unary call (`Effect::GrpcCall`).
pub(crate) fn start_call(
    cell: &Arc<VmCell>,
    shared: &mut VmShared,
    token: Token,
    call: GrpcCallRequest,
) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let weak = Arc::downgrade(cell);
    let clusters = cell.runtime.clusters();
    let task = tokio::spawn(async move {
        let event = match callout::grpc_call(&clusters, call).await {
            GrpcOutcome::Message(m) => Event::Message(m),
            GrpcOutcome::Closed(status, message) => Event::Close(status, message),
        };
        deliver(&weak, token, id, event, true);
    });
    shared.grpc.by_token.insert(
        token,
        GrpcHandle {
            id,
            tx: None,
            task: task.abort_handle(),
        },
    );
}

/// Opens a stream (`Effect::GrpcStream`).
pub(crate) fn start_stream(
    cell: &Arc<VmCell>,
    shared: &mut VmShared,
    token: Token,
    call: GrpcCallRequest,
) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let weak = Arc::downgrade(cell);
    let clusters = cell.runtime.clusters();
    let (tx, rx) = unbounded_channel();
    let task = tokio::spawn(async move {
        run_stream(&clusters, call, rx, &mut |event| {
            let last = matches!(event, Event::Close(..));
            deliver(&weak, token, id, event, last)
        })
        .await;
    });
    shared.grpc.by_token.insert(
        token,
        GrpcHandle {
            id,
            tx: Some(tx),
            task: task.abort_handle(),
        },
    );
}

/// One message with gRPC's 5-byte prefix (uncompressed, big-endian length).
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 5);
    out.extend_from_slice(&[0]);
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    out.freeze()
}

/// Splits a stream of DATA bytes into gRPC messages.
#[derive(Debug, Default)]
struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, or the gRPC status to close with.
    fn next(&mut self) -> Option<Result<Vec<u8>, u32>> {
        if self.buf.len() < 5 {
            return None;
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_CALLOUT_RESPONSE_BYTES {
            return Some(Err(code::RESOURCE_EXHAUSTED));
        }
        if len > 0 && flags != 0 {
            return Some(Err(code::INTERNAL));
        }
        if self.buf.len() < 5 + len {
            return None;
        }
        self.buf.advance(5);
        Some(Ok(self.buf.split_to(len).to_vec()))
    }
}

/// The outgoing messages of a stream, as an HTTP body that ends when the
/// guest half-closes (or the call goes away).
struct Outgoing(UnboundedReceiver<Bytes>);

impl Body for Outgoing {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

fn grpc_status(h: &http::HeaderMap) -> Option<(u32, String)> {
    let status = h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
    let message = h
        .get("grpc-message")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    Some((status, message))
}

type Emit<'a> = dyn FnMut(Event) -> bool + Send + 'a;

/// What Envoy's router answers a gRPC request it cannot forward: a
/// trailers-only reply with `grpc-status` 14 and the reason.
fn unavailable(emit: &mut Emit<'_>, reason: &str) {
    let trailers = HeaderMap::from_pairs([
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "14"),
        ("grpc-message", reason),
    ]);
    let _ = emit(Event::Initial(HeaderMap::new()))
        && emit(Event::Trailing(trailers))
        && emit(Event::Close(code::UNAVAILABLE, reason.to_owned()));
}

/// Envoy's `streamError`: empty trailing metadata, then the close.
fn stream_error(emit: &mut Emit<'_>, status: u32, message: &str) {
    let _ =
        emit(Event::Trailing(HeaderMap::new())) && emit(Event::Close(status, message.to_owned()));
}

/// Runs one stream until it closes, handing each event to `emit` (which
/// returns false once the guest cancelled it).
async fn run_stream(
    clusters: &Clusters,
    call: GrpcCallRequest,
    outgoing: UnboundedReceiver<Bytes>,
    emit: &mut Emit<'_>,
) {
    let cluster = String::from_utf8_lossy(&call.upstream).into_owned();
    let Some(entry) = clusters.get(&cluster) else {
        return unavailable(emit, NO_HEALTHY_UPSTREAM);
    };
    let Some(endpoint) = entry.next_endpoint() else {
        return unavailable(emit, NO_HEALTHY_UPSTREAM);
    };
    let Ok(uri) = format!(
        "{}://{endpoint}/{}/{}",
        entry.scheme(),
        call.service,
        call.method
    )
    .parse::<Uri>() else {
        return stream_error(emit, code::INTERNAL, "invalid service or method");
    };
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers");
    for (k, v) in call.initial_metadata.iter() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(k),
            http::HeaderValue::from_bytes(v),
        ) {
            builder = builder.header(name, value);
        }
    }
    let Ok(request) = builder.body(Outgoing(outgoing).boxed()) else {
        return stream_error(emit, code::INTERNAL, "invalid initial metadata");
    };
    let response = match entry.client.request(request).await {
        Ok(r) => r,
        Err(e) => {
            log::debug!(target: "vessel::grpc", "gRPC stream to {cluster} ({endpoint}): {e:?}");
            let reason = if e.is_connect() {
                CONNECT_FAILURE
            } else {
                CONNECTION_TERMINATION
            };
            return unavailable(emit, reason);
        }
    };
    let (parts, mut body) = response.into_parts();
    let end = body.is_end_stream();
    let status = grpc_status(&parts.headers);
    if parts.status != http::StatusCode::OK && !(end && status.is_some()) {
        let mapped = vessel_host::http_to_grpc_status(u32::from(parts.status.as_u16()));
        let _ = emit(Event::Initial(HeaderMap::new()))
            && emit(Event::Trailing(HeaderMap::new()))
            && emit(Event::Close(mapped, String::new()));
        return;
    }
    if end {
        // Trailers-only.
        let (status, message) = status.unwrap_or((code::UNKNOWN, String::new()));
        let _ = emit(Event::Initial(HeaderMap::new()))
            && emit(Event::Trailing(convert::response_headers(&parts)))
            && emit(Event::Close(status, message));
        return;
    }
    if !emit(Event::Initial(convert::response_headers(&parts))) {
        return;
    }
    let mut decoder = Decoder::default();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    decoder.push(&data);
                    while let Some(m) = decoder.next() {
                        match m {
                            Ok(message) => {
                                if !emit(Event::Message(message)) {
                                    return;
                                }
                            }
                            Err(status) => return stream_error(emit, status, ""),
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        let (status, message) =
                            grpc_status(&t).unwrap_or((code::UNKNOWN, String::new()));
                        let _ = emit(Event::Trailing(convert::trailers(&t)))
                            && emit(Event::Close(status, message));
                        return;
                    }
                }
            },
            None => return stream_error(emit, code::UNKNOWN, ""),
            Some(Err(e)) => {
                log::debug!(target: "vessel::grpc", "gRPC stream to {cluster} reset: {e}");
                return stream_error(emit, code::INTERNAL, "upstream reset");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_splits_and_joins_frames() {
        let mut d = Decoder::default();
        let mut wire = frame(b"one").to_vec();
        wire.extend_from_slice(&frame(b""));
        wire.extend_from_slice(&frame(b"three"));
        d.push(&wire[..6]);
        assert_eq!(d.next(), None);
        d.push(&wire[6..]);
        assert_eq!(d.next(), Some(Ok(b"one".to_vec())));
        assert_eq!(d.next(), Some(Ok(Vec::new())));
        assert_eq!(d.next(), Some(Ok(b"three".to_vec())));
        assert_eq!(d.next(), None);
    }

    #[test]
    fn decoder_rejects_compressed_and_oversized_messages() {
        let mut d = Decoder::default();
        d.push(&[1, 0, 0, 0, 1, b'x']);
        assert_eq!(d.next(), Some(Err(code::INTERNAL)));
        let mut d = Decoder::default();
        let too_big = u32::try_from(MAX_CALLOUT_RESPONSE_BYTES + 1).unwrap_or(u32::MAX);
        let mut head = vec![0];
        head.extend_from_slice(&too_big.to_be_bytes());
        d.push(&head);
        assert_eq!(d.next(), Some(Err(code::RESOURCE_EXHAUSTED)));
    }
}
