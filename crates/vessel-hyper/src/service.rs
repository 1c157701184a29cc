//! [`VesselService`]: runs each request through the filter chain, calls the
//! inner service (the upstream), and runs the response back through.
//!
//! The buffer limit of the chain ([`crate::VesselLayer::buffer_limit`])
//! applies to HTTP/1 streams; an HTTP/2 stream gets
//! Envoy's default HTTP/2 initial stream window (256 MiB), as in Envoy.
//!
//! Over HTTP/1.x a body's end reaches the filters as Envoy's HTTP/1 codec
//! reports it: after the last data, as one more body callback with 0 new
//! bytes and `end_of_stream = true` (`SplitEnd`), whether the message is
//! framed by length or by chunks. Over HTTP/2, a DATA frame with
//! END_STREAM carries the end with its data, as in Envoy (ABI reference
//! §11.2).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::Service;
use vessel_host::{PropertyMap, PropertyValue, StreamType};

use crate::body::{BoxError, VesselBody};
use crate::convert;
use crate::future::ResponseFuture;
use crate::layer::{ChainConfig, CurrentChain};
use crate::stream::{Chain, Flow};

/// The buffer limit of an HTTP/2 stream: Envoy's default HTTP/2
/// `initial_stream_window_size` (256 MiB), which Envoy applies to the L7
/// buffers of HTTP/2 streams in place of `per_connection_buffer_limit_bytes`
/// (which limits HTTP/1 streams).
pub(crate) const HTTP2_STREAM_BUFFER_LIMIT: usize = 256 << 20;

/// Connection facts the embedder puts in the request's extensions; they
/// become the `source.*`, `destination.*` and `connection.id` properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client's address.
    pub source: SocketAddr,
    /// The local (listener) address.
    pub destination: SocketAddr,
    /// A process-unique connection id.
    pub id: u64,
}

/// Facts about the upstream a response came from, which the inner service
/// puts in the **response**'s extensions. They become the properties of the
/// response path (ABI reference §10.2): `upstream.address` (`ip:port`),
/// `upstream.port` (int), `upstream.local_address` (`ip:port`),
/// `upstream.transport_failure_reason` (empty), and with a cluster
/// `xds.cluster_name` and its deprecated alias `cluster_name`.
///
/// Without it, the `HttpInfo` that hyper-util's legacy client adds to each
/// response gives the address and the local address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamInfo {
    /// The upstream host's address.
    pub address: SocketAddr,
    /// The local address of the connection to it.
    pub local_address: Option<SocketAddr>,
    /// The cluster the route picked.
    pub cluster: Option<String>,
}

impl UpstreamInfo {
    /// Reads the upstream facts of a response: an [`UpstreamInfo`], else
    /// hyper-util's `HttpInfo`.
    pub fn from_extensions(ext: &http::Extensions) -> Option<Self> {
        if let Some(info) = ext.get::<Self>() {
            return Some(info.clone());
        }
        ext.get::<hyper_util::client::legacy::connect::HttpInfo>()
            .map(|h| Self {
                address: h.remote_addr(),
                local_address: Some(h.local_addr()),
                cluster: None,
            })
    }

    /// The properties, with Envoy's names and encodings.
    pub fn properties(&self) -> Vec<(&'static str, PropertyValue)> {
        let mut p = vec![
            ("upstream.address", self.address.to_string().into()),
            ("upstream.port", i64::from(self.address.port()).into()),
            ("upstream.transport_failure_reason", "".into()),
        ];
        if let Some(local) = self.local_address {
            p.push(("upstream.local_address", local.to_string().into()));
        }
        if let Some(cluster) = &self.cluster {
            p.push(("xds.cluster_name", cluster.as_str().into()));
            p.push(("cluster_name", cluster.as_str().into()));
        }
        p
    }
}

/// See [`VesselLayer`](crate::VesselLayer).
#[derive(Debug, Clone)]
pub struct VesselService<S> {
    inner: S,
    config: Arc<CurrentChain>,
}

impl<S> VesselService<S> {
    pub(crate) fn new(inner: S, config: Arc<CurrentChain>) -> Self {
        Self { inner, config }
    }
}

/// The stream properties of a request (`request.protocol`, and from its
/// [`ConnectionInfo`] `source.*`, `destination.*` and `connection.id`),
/// computed only when a guest reads one: most filters never do, and
/// formatting addresses for every request costs more than the filter.
fn properties<B>(req: &Request<B>) -> PropertyMap {
    let protocol: &'static str = match req.version() {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    };
    let conn = req.extensions().get::<ConnectionInfo>().copied();
    PropertyMap::with_source(move |path| {
        let value: PropertyValue = match (path, conn) {
            (b"request\0protocol", _) => protocol.into(),
            (b"source\0address", Some(c)) => c.source.to_string().into(),
            (b"source\0port", Some(c)) => i64::from(c.source.port()).into(),
            (b"destination\0address", Some(c)) => c.destination.to_string().into(),
            (b"destination\0port", Some(c)) => i64::from(c.destination.port()).into(),
            (b"connection\0id", Some(c)) => PropertyValue::Uint(c.id),
            _ => return None,
        };
        Some(value.encode())
    })
}

fn local_response(headers: &vessel_host::HeaderMap, body: Vec<u8>) -> Response<VesselBody> {
    let mut parts = Response::new(()).into_parts().0;
    convert::apply_response(headers, &mut parts);
    if !body.is_empty() {
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, body.len().into());
    }
    Response::from_parts(parts, VesselBody::full(body))
}

/// A body that never reports its end together with data: after the last
/// data frame it says "not ended" until the inner body yields `None`, so
/// the chain sees the end as a separate, empty callback (Envoy's HTTP/1
/// codec). A body that is empty from the start still reports its end at
/// once (headers-only messages).
struct SplitEnd<B> {
    inner: B,
    started: bool,
    done: bool,
}

impl<B: Body + Unpin> SplitEnd<B> {
    fn new(inner: B) -> Self {
        Self {
            inner,
            started: false,
            done: false,
        }
    }
}

impl<B: Body + Unpin> Body for SplitEnd<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.done = true,
            Poll::Ready(Some(_)) => this.started = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.done || (!self.started && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Either the body itself (HTTP/2 and later) or [`SplitEnd`] (HTTP/1.x).
enum Framed<B> {
    Direct(B),
    Split(SplitEnd<B>),
}

impl<B: Body + Unpin> Framed<B> {
    fn new(body: B, version: http::Version) -> Self {
        if version < http::Version::HTTP_2 {
            Framed::Split(SplitEnd::new(body))
        } else {
            Framed::Direct(body)
        }
    }
}

impl<B: Body + Unpin> Body for Framed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        match self.get_mut() {
            Framed::Direct(b) => std::pin::Pin::new(b).poll_frame(cx),
            Framed::Split(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Framed::Direct(b) => b.is_end_stream(),
            Framed::Split(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Framed::Direct(b) => b.size_hint(),
            Framed::Split(b) => b.size_hint(),
        }
    }
}

fn reset() -> Response<VesselBody> {
    Response::new(VesselBody::error("the filter reset the stream".into()))
}

impl<S, B, RB> Service<Request<B>> for VesselService<S>
where
    S: Service<Request<VesselBody>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
    RB: Body<Data = Bytes> + Send + Unpin + 'static,
    RB::Error: Into<BoxError> + Send,
{
    type Response = Response<VesselBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        // One snapshot per stream: a hot reload does not touch it.
        let config = self.config.load();
        ResponseFuture {
            inner: Box::pin(run(config, inner, req)),
        }
    }
}

async fn reply(mut chain: Chain, flow: Flow, encode: bool) -> Response<VesselBody> {
    match flow {
        Flow::Reply(r, from) => {
            let (headers, body) = if encode {
                chain.encode_local_reply(r, from).await
            } else {
                r.to_response(chain.grpc)
            };
            local_response(&headers, body).with_guard(chain)
        }
        Flow::Reset | Flow::Go => reset().with_guard(chain),
    }
}

trait WithGuard {
    fn with_guard(self, chain: Chain) -> Self;
}

impl WithGuard for Response<VesselBody> {
    fn with_guard(self, chain: Chain) -> Self {
        self.map(|b| b.with_guard(chain))
    }
}

async fn run<S, B, RB>(
    config: Arc<ChainConfig>,
    mut inner: S,
    req: Request<B>,
) -> Result<Response<VesselBody>, S::Error>
where
    S: Service<Request<VesselBody>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
    RB: Body<Data = Bytes> + Send + Unpin + 'static,
    RB::Error: Into<BoxError> + Send,
{
    // With no filter, nothing reads the properties or the header maps.
    let filtered = !config.pools.is_empty();
    let props = if filtered {
        properties(&req)
    } else {
        PropertyMap::new()
    };
    let (mut parts, body) = req.into_parts();
    let body = Framed::new(body, parts.version);
    // Envoy limits the L7 buffers of an HTTP/1 stream by the listener's
    // `per_connection_buffer_limit_bytes`, and those of an HTTP/2 stream by
    // the HTTP/2 initial stream window instead.
    let limit = if parts.version >= http::Version::HTTP_2 {
        HTTP2_STREAM_BUFFER_LIMIT
    } else {
        config.buffer_limit
    };
    let (mut chain, failed) = Chain::start(&config.pools, props, limit);
    let end = body.is_end_stream();
    if filtered {
        let input = convert::request_headers(&parts);
        chain.grpc = vessel_host::is_grpc_request(&input);
        if let Some(flow) = failed {
            return Ok(Box::pin(reply(chain, flow, false)).await);
        }
        let mut headers = input.clone();
        match chain
            .headers(StreamType::HttpRequest, &mut headers, end, 0)
            .await
        {
            Flow::Go => {}
            flow => return Ok(Box::pin(reply(chain, flow, true)).await),
        }
        // Filters that only add headers (or change nothing) leave the
        // parts as they are, plus the new headers.
        convert::update_request(&input, &headers, &mut parts);
    } else {
        convert::unchanged_request(&mut parts);
    }

    // Send the request upstream while its body flows through the chain.
    let (tx, upstream_body) = if end {
        (None, VesselBody::empty())
    } else {
        let (tx, body) = VesselBody::channel(16);
        (Some(tx), body)
    };
    let mut response = Box::pin(inner.call(Request::from_parts(parts, upstream_body)));
    let upstream = match tx {
        None => response.await,
        Some(tx) => {
            let outcome = {
                // Boxed, like the local replies: the rare paths would
                // otherwise grow the future of every stream.
                let mut pump = Box::pin(chain.pump(StreamType::HttpRequest, body, tx));
                let mut pumped = false;
                loop {
                    tokio::select! {
                        flow = &mut pump, if !pumped => {
                            pumped = true;
                            if !matches!(flow, Flow::Go) {
                                break Err(flow);
                            }
                        }
                        r = &mut response => break Ok(r),
                    }
                }
            };
            match outcome {
                Ok(r) => r,
                Err(flow) => {
                    // A local reply after the request went upstream: the
                    // upstream call is abandoned.
                    drop(response);
                    return Ok(Box::pin(reply(chain, flow, true)).await);
                }
            }
        }
    };
    let upstream = upstream?;
    let (mut rparts, rbody) = upstream.into_parts();
    let info = UpstreamInfo::from_extensions(&rparts.extensions);
    // Only a response that came over an HTTP/1 connection is framed the
    // HTTP/1 way; the inner service's own replies (no upstream facts) come
    // whole, as Envoy's local replies do.
    let rbody = if info.is_some() {
        Framed::new(rbody, rparts.version)
    } else {
        Framed::Direct(rbody)
    };
    let end = rbody.is_end_stream();
    if filtered {
        if let Some(info) = &info {
            chain.set_properties(&info.properties());
        }
        let input = convert::response_headers(&rparts);
        let mut rheaders = input.clone();
        match chain
            .headers(StreamType::HttpResponse, &mut rheaders, end, 0)
            .await
        {
            Flow::Go => {}
            flow => return Ok(Box::pin(reply(chain, flow, false)).await),
        }
        convert::update_response(&input, &rheaders, &mut rparts);
    }
    if end {
        return Ok(Response::from_parts(rparts, VesselBody::empty()).with_guard(chain));
    }
    // The body runs the chain itself as the client reads it: no task and
    // no channel per response. The chain (and so the stream's contexts)
    // ends with the pump, or when the client drops the body.
    let body = VesselBody::pumped(move |tx| async move {
        let flow = chain
            .pump(StreamType::HttpResponse, rbody, tx.clone())
            .await;
        if !matches!(flow, Flow::Go) {
            // Headers already left: the only way to fail now is a reset.
            let _ = tx
                .send(Err("the filter chain stopped the response".into()))
                .await;
        }
        drop(chain);
    });
    Ok(Response::from_parts(rparts, body))
}
