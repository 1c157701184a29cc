//! A minimal [Pingora](https://github.com/cloudflare/pingora) reverse proxy
//! (the `pingora` crates 0.9.1 from crates.io, without TLS), as the starting
//! point for issue 9's second embedding of vessel. vessel is not wired in
//! yet: this crate shows, and its tests pin, the Pingora hooks a vessel
//! filter chain will be driven from.
//!
//! [`LoopbackProxy`] implements [`ProxyHttp`] and forwards every request to
//! one upstream address. Each hook that vessel will use does one small,
//! observable thing:
//!
//! | Pingora hook | here | vessel (later) |
//! |---|---|---|
//! | `request_filter` (async) | `GET /local` gets a local 403 reply | request headers through the chain; a local reply |
//! | `request_body_filter` (async, per chunk) | with `x-hold-body`, holds the body and sends it whole at the end | request body callbacks; StopIteration buffers |
//! | `upstream_request_filter` (async) | adds `x-via: pingora` | headers a filter set, as sent upstream |
//! | `upstream_response_filter` (async) | counts upstream responses | — |
//! | `response_filter` (async) | adds `x-proxied-by: pingora` | response headers through the chain |
//! | `response_body_filter` (sync, per chunk) | with `x-hold-body`, holds the body and sends it whole at the end | response body callbacks |
//! | `logging` (async, once) | reports the stream's outcome on a channel | `on_log`, `on_done`, `on_delete` |
//!
//! Two rules of Pingora that the body hooks follow (the tests show that
//! bodies held this way arrive whole):
//! * in `request_body_filter`, `*body = None` means "end of body" to the
//!   upstream (`send_body_to_pipe` in pingora-proxy's `proxy_h1.rs`), so a
//!   held chunk is replaced by an **empty** `Bytes`, which is not written;
//! * in `response_body_filter`, `*body = None` writes nothing for that chunk;
//!   at `end_of_stream` the held bytes are put back. A response whose body
//!   may change must then drop `Content-Length` in `response_filter`.
//!
//! [`serve`] runs the proxy on a listener the caller bound (port 0 works),
//! through Pingora's own HTTP session code (`http_proxy` +
//! `ServerApp::process_new`), so tests need no `pingora::server::Server`
//! (which takes over signals and cannot report a port it bound).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::apps::ServerApp;
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::proxy::{ProxyHttp, Session, http_proxy};
use pingora::server::configuration::ServerConf;
use pingora::{Error, Result};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// The request header that asks the proxy to hold both bodies until their
/// end (the buffering a filter's StopIteration causes).
pub const HOLD_BODY: &str = "x-hold-body";

/// What [`ProxyHttp::logging`] saw of one finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The request path.
    pub path: String,
    /// The status sent downstream (0 if none was).
    pub status: u16,
    /// Request body bytes that `request_body_filter` saw.
    pub request_body_bytes: usize,
    /// Response body bytes that `response_body_filter` saw.
    pub response_body_bytes: usize,
    /// The error that ended the request, if any.
    pub error: Option<String>,
}

/// A reverse proxy to one upstream.
#[derive(Debug)]
pub struct LoopbackProxy {
    upstream: SocketAddr,
    upstream_responses: Arc<AtomicUsize>,
    log: mpsc::UnboundedSender<LogEntry>,
}

impl LoopbackProxy {
    /// A proxy to `upstream`; each finished request is reported on the
    /// returned channel.
    pub fn new(upstream: SocketAddr) -> (Self, mpsc::UnboundedReceiver<LogEntry>) {
        let (log, rx) = mpsc::unbounded_channel();
        let proxy = Self {
            upstream,
            upstream_responses: Arc::new(AtomicUsize::new(0)),
            log,
        };
        (proxy, rx)
    }

    /// A counter of the responses the upstream sent (read it after the
    /// proxy is moved into [`serve`]).
    pub fn upstream_responses(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.upstream_responses)
    }
}

/// Per-request state: what a vessel `HttpStream` will hold.
#[derive(Debug, Default)]
pub struct RequestCtx {
    hold: bool,
    request_held: BytesMut,
    request_body_bytes: usize,
    response_held: BytesMut,
    response_body_bytes: usize,
}

#[async_trait]
impl ProxyHttp for LoopbackProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        ctx.hold = req.headers.contains_key(HOLD_BODY);
        if req.uri.path() == "/local" {
            // A local reply: write it, and return true so Pingora skips the
            // upstream and goes to `logging`.
            let body = Bytes::from_static(b"denied by the proxy\n");
            let mut resp = ResponseHeader::build(403, Some(2))?;
            resp.insert_header("content-type", "text/plain")?;
            resp.insert_header("content-length", body.len().to_string())?;
            session.write_response_header(Box::new(resp), false).await?;
            session.write_response_body(Some(body), true).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(chunk) = body.as_ref() {
            ctx.request_body_bytes += chunk.len();
        }
        if ctx.hold {
            if let Some(chunk) = body.take() {
                ctx.request_held.extend_from_slice(&chunk);
            }
            // Not `None`: that would end the upstream body here.
            *body = Some(if end_of_stream {
                ctx.request_held.split().freeze()
            } else {
                Bytes::new()
            });
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_request.insert_header("x-via", "pingora")?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.upstream_responses.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_response.insert_header("x-proxied-by", "pingora")?;
        if ctx.hold {
            // A held (and, with a filter, possibly rewritten) body has no
            // known length yet: send it chunked.
            upstream_response.remove_header("content-length");
            upstream_response.insert_header("transfer-encoding", "chunked")?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(chunk) = body.as_ref() {
            ctx.response_body_bytes += chunk.len();
        }
        if ctx.hold {
            if let Some(chunk) = body.take() {
                ctx.response_held.extend_from_slice(&chunk);
            }
            if end_of_stream {
                *body = Some(ctx.response_held.split().freeze());
            }
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let entry = LogEntry {
            path: session.req_header().uri.path().to_owned(),
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            request_body_bytes: ctx.request_body_bytes,
            response_body_bytes: ctx.response_body_bytes,
            error: e.map(|e| e.to_string()),
        };
        // The receiver may be gone (the test finished): nothing to report to.
        let _ = self.log.send(entry);
    }
}

/// Serves `proxy` on `listener` until `shutdown` turns true (or its sender
/// is dropped). Each connection runs Pingora's HTTP/1.1 session code, with
/// keep-alive.
pub async fn serve(listener: TcpListener, proxy: LoopbackProxy, shutdown: watch::Receiver<bool>) {
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
