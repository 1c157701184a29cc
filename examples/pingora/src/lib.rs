//! A [Pingora](https://github.com/cloudflare/pingora) reverse proxy (the
//! `pingora` crates 0.9.1 from crates.io, without TLS) that runs a vessel
//! proxy-wasm filter chain: issue 9's second embedding of vessel's core.
//!
//! [`VesselProxy`] implements [`ProxyHttp`]: each request gets a
//! [`PooledStream`] (vessel-hyper's [`vessel_host::HttpStream`] over one VM
//! of each [`FilterPool`]) in its context, and the Pingora hooks feed it
//! events and carry out the [`Action`]s it returns. Every stream rule
//! (iteration, stops and buffering, local replies, failure policies,
//! `on_log`/`on_done`/`on_delete`) is the core's; this crate only moves
//! headers and bytes between Pingora and it.
//!
//! | Pingora hook | what it does with the stream |
//! |---|---|
//! | `request_filter` (async) | feeds the request headers; waits for VM signals (a callout's answer) while a filter holds them; a local reply is written here and the hook returns `Ok(true)` |
//! | `request_body_filter` (async, per chunk) | feeds the chunk; hands on what the chain let through (an **empty** `Bytes` while a filter buffers: `None` would end the upstream body); at the end of the body, and while a filter over its limit asks to pause reading, waits for signals |
//! | `upstream_request_filter` (async) | applies the headers the chain produced to Pingora's upstream request (only what the filters changed) |
//! | `response_filter` (async) | feeds the response headers, waits for signals while a filter holds them, applies what the chain produced |
//! | `response_body_filter` (**sync**, per chunk) | feeds the chunk, applies signals already waiting, emits what the chain let through |
//! | `fail_to_proxy` (async) | writes a local reply sent after `request_filter` (from a body callback, from the response headers); runs Pingora's own error answers (502 for an unreachable upstream, ...) through the chain as Envoy runs its router's |
//! | `logging` (async, once) | ends the stream: `on_log`, `on_done`, `on_delete` |
//!
//! A local reply that is not written in `request_filter` ends the hook
//! that saw it with an error (`ErrorType::HTTPStatus`), so Pingora drops
//! the upstream request; `fail_to_proxy` then writes the reply the chain
//! built. A reset (`proxy_close_stream`, a local reply after the response
//! head left) closes the connection without an answer.
//!
//! Over HTTP/1 a body's end reaches the filters as Envoy's HTTP/1 codec
//! reports it: after the last data, as one more body callback with no data
//! and `end_of_stream = true`.
//!
//! # What Pingora's hooks cannot express
//!
//! * **`StopIteration` from a header callback** (a plugin with
//!   `allow_on_headers_stop_iteration`): the headers would wait at the
//!   filter while its body callbacks run. Pingora sends the request head
//!   upstream before it reads any of the body, and a response head
//!   downstream before any of the response body, so nothing could ever
//!   continue such headers. [`VesselProxy::new`] refuses those plugins
//!   ([`SetupError::HeadersStopIteration`]). Envoy's default translation
//!   (`StopAllIterationAndWatermark`: the filter sees no body until it
//!   continues) works, and is what the SDKs' `Action::Pause` gets.
//! * **Waiting in the response body.** `response_body_filter` is
//!   synchronous: it cannot await a VM signal. Signals that already arrived
//!   are applied, and a filter that buffers the body until its end works (it
//!   continues within the last body callback). But a filter that still
//!   holds the response when its last chunk was fed (waiting for a callout
//!   or a timer), or one that buffers with flow control past the buffer
//!   limit (the proxy cannot stop reading the upstream), fails the request:
//!   the hook returns an error, and the client gets a 500 if Pingora had
//!   not written the response head yet (it writes it with the first body
//!   chunk), else the connection closes on a truncated response. Nothing is
//!   sent that the chain did not let through.
//! * **The other direction waits.** While an async hook awaits a VM signal
//!   (a request head or body held for a callout), Pingora's task for the
//!   request does nothing else: the response is not read meanwhile (Envoy
//!   would go on with it).
//! * **Trailers.** Pingora has no hook for request trailers, and
//!   `response_trailer_filter` is not used here: trailers are not fed to
//!   the chain, and trailers a filter adds are dropped (logged at debug).
//! * **1xx responses** pass through without reaching the filters (Envoy
//!   does not give them to proxy-wasm either).
//!
//! [`serve`] runs the proxy on a listener the caller bound (port 0 works),
//! through Pingora's own HTTP session code (`http_proxy` +
//! `ServerApp::process_new`), so tests need no `pingora::server::Server`
//! (which takes over signals and cannot report a port it bound).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use pingora::apps::ServerApp;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::proxy::{FailToProxy, ProxyHttp, Session, http_proxy};
use pingora::server::configuration::ServerConf;
use pingora::{Error, ErrorSource, ErrorType, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use vessel_host::{Action, Direction, HeaderMap, LocalResponse, StreamConfig};
use vessel_hyper::{FilterPool, PooledStream, convert};

/// Why a [`VesselProxy`] cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The plugin passes `StopIteration` from header callbacks through,
    /// which Pingora's hooks cannot honour (see the crate docs).
    #[error(
        "plugin `{plugin}` sets allow_on_headers_stop_iteration: Pingora sends a message's head before its body, so headers cannot wait for body callbacks"
    )]
    HeadersStopIteration {
        /// The plugin's name.
        plugin: String,
    },
}

/// A reverse proxy to one upstream that runs every request through a chain
/// of vessel filters (one [`FilterPool`] per filter, in chain order).
#[derive(Debug)]
pub struct VesselProxy {
    pools: Vec<Arc<FilterPool>>,
    upstream: SocketAddr,
}

impl VesselProxy {
    /// A proxy to `upstream` through `pools`. Refuses a plugin that
    /// Pingora cannot run as Envoy would ([`SetupError`]).
    pub fn new(pools: Vec<Arc<FilterPool>>, upstream: SocketAddr) -> Result<Self, SetupError> {
        if let Some(pool) = pools
            .iter()
            .find(|p| p.plugin().config().allow_on_headers_stop_iteration)
        {
            return Err(SetupError::HeadersStopIteration {
                plugin: pool.plugin().config().name.clone(),
            });
        }
        Ok(Self { pools, upstream })
    }
}

/// One request's state: its stream through the chain, and what the chain
/// produced that Pingora has not taken yet.
#[derive(Debug)]
pub struct StreamCtx {
    stream: PooledStream,
    /// The request's end was fed to the chain.
    request_fed: bool,
    /// The response's end was fed to the chain.
    response_fed: bool,
    /// The request head, as the chain let it go upstream.
    upstream_head: Option<HeaderMap>,
    /// Request body bytes the chain let through, not yet handed on.
    upstream_body: Vec<u8>,
    /// The request's end left the chain.
    upstream_done: bool,
    /// The response head (the upstream's as filtered, or a local reply's).
    downstream_head: Option<HeaderMap>,
    /// Response body bytes the chain let through, not yet handed on.
    downstream_body: Vec<u8>,
    /// The response's end left the chain.
    downstream_done: bool,
    /// The chain reset the stream.
    reset: bool,
    /// A hook ended with a filter's local reply ([`local_reply`]).
    filter_reply: bool,
}

impl StreamCtx {
    /// Carries out the chain's actions: what goes out is kept until the
    /// hook that can send it takes it.
    fn drain(&mut self) {
        while let Some(action) = self.stream.poll_action() {
            match action {
                Action::UpstreamHeaders {
                    headers,
                    end_stream,
                } => {
                    self.upstream_head = Some(headers);
                    self.upstream_done |= end_stream;
                }
                Action::UpstreamData { data, end_stream } => {
                    self.upstream_body.extend_from_slice(&data);
                    self.upstream_done |= end_stream;
                }
                Action::UpstreamTrailers { .. } => {
                    log::debug!("request trailers from a filter dropped: Pingora has no hook");
                    self.upstream_done = true;
                }
                Action::CancelUpstream => self.upstream_body.clear(),
                Action::DownstreamHeaders {
                    headers,
                    end_stream,
                } => {
                    self.downstream_head = Some(headers);
                    self.downstream_done |= end_stream;
                }
                Action::DownstreamData { data, end_stream } => {
                    self.downstream_body.extend_from_slice(&data);
                    self.downstream_done |= end_stream;
                }
                Action::DownstreamTrailers { .. } => {
                    log::debug!("response trailers from a filter dropped");
                    self.downstream_done = true;
                }
                Action::Reset { reason } => {
                    log::debug!("the filter chain reset the stream: {reason:?}");
                    self.reset = true;
                }
                other => log::debug!("unexpected action {other:?}"),
            }
        }
    }

    /// A local reply answers the stream and has left the chain whole.
    fn local_reply_done(&self) -> bool {
        self.stream.stream().is_local_reply() && self.downstream_done
    }

    /// Carries out actions and waits for VM signals until `ready` holds.
    /// Fails if the chain reset the stream, or if nothing could move it on.
    async fn settle(&mut self, ready: impl Fn(&Self) -> bool + Send) -> Result<()> {
        loop {
            self.drain();
            if self.reset {
                return Err(reset());
            }
            if ready(self) {
                return Ok(());
            }
            let held =
                self.stream.is_held(Direction::Request) || self.stream.is_held(Direction::Response);
            if self.stream.is_done() || !held {
                // A bug of the filter manager if it ever happens: fail the
                // request rather than hang it.
                log::warn!("a stream stalled: nothing can resume it");
                return Err(Error::explain(
                    ErrorType::InternalError,
                    "vessel: the filter chain stalled",
                ));
            }
            self.stream.next_signal().await;
        }
    }

    /// Feeds a chunk of `dir`'s body; with `end`, the end follows as one
    /// more callback with no data (Envoy's HTTP/1 codec).
    fn feed(&mut self, dir: Direction, data: Option<Bytes>, end: bool) {
        let data = data.map(Vec::from).unwrap_or_default();
        let split = end && !data.is_empty();
        let s = &mut self.stream;
        let mut push = |data: Vec<u8>, end: bool| match dir {
            Direction::Request => s.request_data(data, end),
            Direction::Response => s.response_data(data, end),
        };
        push(data, end && !split);
        if split {
            push(Vec::new(), true);
        }
    }
}

fn reset() -> Box<Error> {
    Error::explain(
        ErrorType::ConnectionClosed,
        "vessel: the filter chain reset the stream",
    )
}

/// The error that ends a hook when a local reply answers the stream;
/// [`ProxyHttp::fail_to_proxy`] writes the reply.
fn local_reply(ctx: &mut StreamCtx) -> Box<Error> {
    ctx.filter_reply = true;
    let status = ctx
        .downstream_head
        .as_ref()
        .and_then(|h| h.get_str(":status")?.parse().ok())
        .unwrap_or(500);
    Error::explain(ErrorType::HTTPStatus(status), "vessel: local reply")
}

/// The regular headers whose values differ between `before` and `after`,
/// with their values in `after` (none: removed), in `after`'s order.
fn changed(before: &HeaderMap, after: &HeaderMap) -> Vec<(HeaderName, Vec<HeaderValue>)> {
    let (mut b, mut a) = (http::HeaderMap::new(), http::HeaderMap::new());
    convert::to_http_headers(before, &mut b);
    convert::to_http_headers(after, &mut a);
    let removed = b.keys().filter(|k| !a.contains_key(*k));
    a.keys()
        .chain(removed)
        .filter(|k| !b.get_all(*k).iter().eq(a.get_all(*k).iter()))
        .map(|k| (k.clone(), a.get_all(k).iter().cloned().collect()))
        .collect()
}

/// Applies what the filters changed (`before` → `after`) to a request head.
fn apply_request(before: &HeaderMap, after: &HeaderMap, req: &mut RequestHeader) -> Result<()> {
    for (name, values) in changed(before, after) {
        req.remove_header(&name);
        for value in values {
            req.append_header(name.clone(), value)?;
        }
    }
    let differs = |k: &str| before.get_str(k) != after.get_str(k);
    if differs(":method")
        && let Some(m) = after.get(b":method")
    {
        req.set_method(Method::from_bytes(m).map_err(|e| bad_header(":method", e))?);
    }
    if differs(":path") {
        req.set_raw_path(after.get(b":path").unwrap_or(b"/"))?;
    }
    if differs(":authority")
        && let Some(authority) = after.get(b":authority").filter(|a| !a.is_empty())
    {
        let value = HeaderValue::from_bytes(authority).map_err(|e| bad_header(":authority", e))?;
        req.insert_header(http::header::HOST, value)?;
    }
    Ok(())
}

/// Applies what the filters changed (`before` → `after`) to a response
/// head.
fn apply_response(before: &HeaderMap, after: &HeaderMap, resp: &mut ResponseHeader) -> Result<()> {
    for (name, values) in changed(before, after) {
        resp.remove_header(&name);
        for value in values {
            resp.append_header(name.clone(), value)?;
        }
    }
    if before.get_str(":status") != after.get_str(":status") {
        let status = after.get(b":status").unwrap_or(b"");
        resp.set_status(StatusCode::from_bytes(status).map_err(|e| bad_header(":status", e))?)?;
    }
    Ok(())
}

fn bad_header(name: &str, e: impl std::fmt::Display) -> Box<Error> {
    Error::explain(
        ErrorType::InvalidHTTPHeader,
        format!("vessel: a filter set {name}: {e}"),
    )
}

/// True if a response with this status never has a body.
fn bodiless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Writes the local reply the chain built (head and whole body). Returns
/// its status.
async fn write_local_reply(session: &mut Session, ctx: &mut StreamCtx) -> Result<u16> {
    let head = ctx.downstream_head.take().unwrap_or_default();
    let body = Bytes::from(std::mem::take(&mut ctx.downstream_body));
    let mut resp = ResponseHeader::build(StatusCode::INTERNAL_SERVER_ERROR, Some(head.len()))?;
    apply_response(&HeaderMap::new(), &head, &mut resp)?;
    if !bodiless(resp.status) {
        resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    }
    let status = resp.status.as_u16();
    session
        .write_response_header(Box::new(resp), body.is_empty())
        .await?;
    if !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(status)
}

#[async_trait]
impl ProxyHttp for VesselProxy {
    type CTX = StreamCtx;

    fn new_ctx(&self) -> StreamCtx {
        StreamCtx {
            stream: PooledStream::new(&self.pools, StreamConfig::new(self.pools.len())),
            request_fed: false,
            response_fed: false,
            upstream_head: None,
            upstream_body: Vec::new(),
            upstream_done: false,
            downstream_head: None,
            downstream_body: Vec::new(),
            downstream_done: false,
            reset: false,
            filter_reply: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut StreamCtx) -> Result<bool> {
        let end = session.is_body_empty();
        let headers = convert::request_headers(session.req_header());
        ctx.request_fed = end;
        ctx.stream.request_headers(headers, end);
        // Until the headers go upstream, or a local reply has left whole.
        ctx.settle(|c| c.upstream_head.is_some() || c.local_reply_done())
            .await?;
        if ctx.local_reply_done() {
            write_local_reply(session, ctx).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut StreamCtx,
    ) -> Result<()> {
        if !ctx.request_fed {
            ctx.request_fed = end_of_stream;
            ctx.feed(Direction::Request, body.take(), end_of_stream);
            // At the end, until the end went upstream; before it, while a
            // filter over its limit asks not to read (flow control).
            ctx.settle(|c| {
                c.local_reply_done()
                    || if end_of_stream {
                        c.upstream_done
                    } else {
                        !c.stream.read_paused(Direction::Request)
                    }
            })
            .await?;
            if ctx.local_reply_done() {
                return Err(local_reply(ctx));
            }
        }
        // Before the end, not `None`: that would end the upstream body
        // here. An empty chunk is not written.
        let out = std::mem::take(&mut ctx.upstream_body);
        *body = (!(end_of_stream && out.is_empty())).then(|| Bytes::from(out));
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut StreamCtx,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut StreamCtx,
    ) -> Result<()> {
        let Some(after) = &ctx.upstream_head else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "vessel: no request head from the filter chain",
            ));
        };
        // Only what the filters changed: Pingora's own edits (hop-by-hop
        // headers, version) stay.
        let before = convert::request_headers(session.req_header());
        apply_request(&before, after, upstream_request)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut StreamCtx,
    ) -> Result<()> {
        if upstream_response.status.is_informational() {
            return Ok(());
        }
        let before = convert::response_headers(upstream_response);
        let end = session.req_header().method == Method::HEAD
            || bodiless(upstream_response.status)
            || upstream_response
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|l| l.as_bytes() == b"0");
        ctx.response_fed = end;
        ctx.stream.response_headers(before.clone(), end);
        ctx.settle(|c| c.downstream_head.is_some()).await?;
        if ctx.stream.stream().is_local_reply() {
            // The reply replaces the response (its body may still be held).
            ctx.settle(StreamCtx::local_reply_done).await?;
            return Err(local_reply(ctx));
        }
        if let Some(after) = ctx.downstream_head.take() {
            apply_response(&before, &after, upstream_response)?;
        }
        // As Pingora does before this hook: a body of unknown length (a
        // filter removed `content-length`) goes chunked.
        let headers = &upstream_response.headers;
        if !end
            && !headers.contains_key(http::header::CONTENT_LENGTH)
            && !headers.contains_key(http::header::TRANSFER_ENCODING)
        {
            upstream_response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut StreamCtx,
    ) -> Result<Option<Duration>> {
        if !ctx.response_fed {
            ctx.response_fed = end_of_stream;
            ctx.feed(Direction::Response, body.take(), end_of_stream);
            // Sync: only the signals already here.
            while ctx.stream.try_signal() {}
            ctx.drain();
            if ctx.reset {
                return Err(reset());
            }
            if end_of_stream && !ctx.downstream_done {
                return Err(Error::explain(
                    ErrorType::InternalError,
                    "vessel: a filter holds the end of the response body (waiting for a callout or a timer); Pingora's response_body_filter cannot wait",
                ));
            }
            if ctx.stream.read_paused(Direction::Response) {
                return Err(Error::explain(
                    ErrorType::InternalError,
                    "vessel: a filter buffers the response body past its limit with flow control; Pingora's response_body_filter cannot pause the upstream",
                ));
            }
        }
        let out = std::mem::take(&mut ctx.downstream_body);
        *body = (!out.is_empty()).then(|| Bytes::from(out));
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut StreamCtx,
    ) -> FailToProxy {
        let mut answer = FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
        if ctx.reset || session.response_written().is_some() {
            // Nothing more can be sent: Pingora closes the connection.
            return answer;
        }
        if !ctx.local_reply_done() {
            // Pingora's own answer (its default `fail_to_proxy`'s status),
            // through the chain as a local reply, as Envoy's router does.
            let status = match (e.etype(), e.esource()) {
                (ErrorType::HTTPStatus(code), _) => *code,
                (_, ErrorSource::Upstream) => 502,
                (
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
                    ErrorSource::Downstream,
                ) => return answer,
                (_, ErrorSource::Downstream) => 400,
                _ => 500,
            };
            ctx.downstream_head = None;
            ctx.downstream_body.clear();
            ctx.downstream_done = false;
            ctx.stream.send_local_reply(LocalResponse {
                status: u32::from(status),
                details: "pingora_error".into(),
                body: Vec::new(),
                headers: HeaderMap::new(),
                grpc_status: None,
            });
            if ctx.settle(StreamCtx::local_reply_done).await.is_err() {
                // The chain cannot answer: Pingora's plain error reply.
                if let Err(e) = session.respond_error(status).await {
                    log::debug!("writing an error reply: {e}");
                } else {
                    answer.error_code = status;
                }
                return answer;
            }
        }
        match write_local_reply(session, ctx).await {
            Ok(status) => answer.error_code = status,
            Err(e) => log::debug!("writing a local reply: {e}"),
        }
        answer
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &StreamCtx, _error: &Error) -> bool {
        // A filter's local reply is no error of the proxy.
        ctx.filter_reply
    }

    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut StreamCtx) {
        ctx.stream.finish();
    }
}

/// Serves `proxy` on `listener` until `shutdown` turns true (or its sender
/// is dropped). Each connection runs Pingora's HTTP/1.1 session code, with
/// keep-alive.
pub async fn serve(listener: TcpListener, proxy: VesselProxy, shutdown: watch::Receiver<bool>) {
    let conf = Arc::new(ServerConf::default());
    let app = Arc::new(http_proxy(&conf, proxy));
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                log::warn!("accept failed: {e}");
                continue;
            }
        };
        let app = Arc::clone(&app);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut stream: pingora::protocols::Stream = Box::new(L4Stream::from(tcp));
            // A reusable (keep-alive) connection comes back for its next request.
            while let Some(next) = app.process_new(stream, &shutdown).await {
                stream = next;
            }
            log::debug!("connection from {peer} closed");
        });
    }
}
