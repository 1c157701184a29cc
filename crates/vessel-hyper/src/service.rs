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
use vessel_host::vessel_abi::path_from_dotted;
use vessel_host::{PropertyMap, PropertySource, PropertyValue, StreamConfig};

use crate::body::{BoxError, VesselBody};
use crate::chain::PooledStream;
use crate::convert;
use crate::future::ResponseFuture;
use crate::layer::CurrentChain;
use crate::stream::Exchange;

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

/// The TLS facts of a downstream connection, which the embedder puts in
/// the request's extensions (as an `Arc<TlsInfo>`) next to its
/// [`ConnectionInfo`]. They become Envoy's `connection.*` TLS properties
/// (`tls_version`, `mtls`, `requested_server_name`, the peer's and the
/// local certificate's subject, URI SAN and DNS SAN, and
/// `sha256_peer_certificate_digest`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The SNI the client sent (empty without one).
    pub requested_server_name: String,
    /// The client's certificate, when it presented one.
    pub peer: Option<CertificateInfo>,
    /// The lower-case hex SHA-256 of the client's certificate (DER), empty
    /// without one.
    pub sha256_peer_certificate_digest: String,
    /// The certificate the server presented.
    pub local: Option<CertificateInfo>,
}

/// The fields of a certificate that Envoy's properties expose.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertificateInfo {
    /// The subject in RFC 2253 form (`CN=client,O=Example`).
    pub subject: String,
    /// The URI subject alternative names, in order.
    pub uri_sans: Vec<String>,
    /// The DNS subject alternative names, in order.
    pub dns_sans: Vec<String>,
}

/// The route a request matched, which an embedder that routes before the
/// filters puts in the **request**'s extensions. A non-empty name becomes
/// the `xds.route_name` property and its deprecated alias `route_name`
/// (ABI reference §10.2), from the request headers on; an empty name gives
/// neither (Envoy gives an empty string for an unnamed route).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteInfo {
    /// The route's `name`.
    pub name: String,
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

/// How a response came about, as Envoy's stream info records it; the inner
/// service puts it in the **response**'s extensions. It becomes the
/// `response.code_details` (string) and `response.flags` (int, Envoy's
/// `ResponseFlag` bits) properties of the response path, readable from the
/// response callbacks to `on_done` (wasm-go reads `response.code_details`;
/// GPUStack's `gpustack-lb` reads `response.flags` for its passive health).
///
/// The filter chain takes it out of the response it passes on.
///
/// A response with [`UpstreamInfo`] and no `ResponseInfo` came from the
/// upstream: `via_upstream` and no flags. Without either (an inner
/// service's own reply), neither property is set (`response.flags` then
/// reads 0, vessel-host's default for a stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseInfo {
    /// Envoy's response code details: `via_upstream` for an upstream's
    /// answer, else the reason of a local reply (`no_healthy_upstream`,
    /// `cluster_not_found`, `route_not_found`,
    /// `upstream_reset_before_response_started{remote_connection_failure}`,
    /// …).
    pub code_details: String,
    /// Envoy's `ResponseFlag` bits ([`ResponseInfo::NO_HEALTHY_UPSTREAM`],
    /// …); 0 for none.
    pub flags: u64,
}

impl ResponseInfo {
    /// `UH`: no healthy upstream.
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    /// `UT`: upstream request timeout.
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    /// `UF`: upstream connection failure.
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    /// `UC`: upstream connection termination.
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    /// `NR`: no route found.
    pub const NO_ROUTE_FOUND: u64 = 0x100;
    /// `NC`: no cluster found.
    pub const NO_CLUSTER_FOUND: u64 = 0x100_0000;

    /// The details of an upstream's answer.
    pub const VIA_UPSTREAM: &'static str = "via_upstream";

    /// A response with these details and flags.
    pub fn new(code_details: impl Into<String>, flags: u64) -> Self {
        Self {
            code_details: code_details.into(),
            flags,
        }
    }

    /// The properties, with Envoy's names and encodings.
    pub fn properties(&self) -> Vec<(&'static str, PropertyValue)> {
        vec![
            ("response.code_details", self.code_details.as_str().into()),
            // Envoy's int attribute: 8 bytes little-endian.
            ("response.flags", PropertyValue::Uint(self.flags)),
        ]
    }
}

/// The properties of a response's [`ResponseInfo`] and [`UpstreamInfo`],
/// computed when a guest reads one: most filters never do, and encoding
/// them into every filter context costs more than the filter.
pub(crate) fn response_properties(
    details: Option<ResponseInfo>,
    info: Option<UpstreamInfo>,
) -> PropertySource {
    std::sync::Arc::new(move |path: &[u8]| {
        details
            .iter()
            .flat_map(ResponseInfo::properties)
            .chain(info.iter().flat_map(UpstreamInfo::properties))
            .find(|(dotted, _)| path_from_dotted(dotted) == path)
            .map(|(_, value)| value.encode())
    })
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
fn properties(req: &http::request::Parts) -> PropertyMap {
    let protocol: &'static str = match req.version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    };
    let conn = req.extensions.get::<ConnectionInfo>().copied();
    let tls = req.extensions.get::<Arc<TlsInfo>>().cloned();
    let route: Option<Arc<str>> = req
        .extensions
        .get::<RouteInfo>()
        .filter(|r| !r.name.is_empty())
        .map(|r| Arc::from(r.name.as_str()));
    PropertyMap::with_source(move |path| {
        let value: PropertyValue = match path {
            b"request\0protocol" => protocol.into(),
            b"xds\0route_name" | b"route_name" => route.as_deref()?.into(),
            _ => return connection_property(conn.as_ref()?, tls.as_deref(), path),
        };
        Some(value.encode())
    })
}

/// The properties of a connection, for its network filters (ABI reference
/// §10.2): `source.*`, `destination.*`, `connection.id`, `connection.mtls`,
/// `connection.requested_server_name`, and with `tls` the other
/// `connection.*` TLS properties. Computed only when a guest reads one.
pub fn connection_properties(info: ConnectionInfo, tls: Option<Arc<TlsInfo>>) -> PropertyMap {
    PropertyMap::with_source(move |path| connection_property(&info, tls.as_deref(), path))
}

/// Property `path` of connection `c` (TLS over it when `tls`), encoded.
fn connection_property(c: &ConnectionInfo, tls: Option<&TlsInfo>, path: &[u8]) -> Option<Vec<u8>> {
    let value: PropertyValue = match path {
        b"source\0address" => c.source.to_string().into(),
        b"source\0port" => i64::from(c.source.port()).into(),
        b"destination\0address" => c.destination.to_string().into(),
        b"destination\0port" => i64::from(c.destination.port()).into(),
        b"connection\0id" => PropertyValue::Uint(c.id),
        // Envoy gives these for every connection, TLS or not.
        b"connection\0mtls" => PropertyValue::Bool(tls.is_some_and(|t| t.peer.is_some())),
        b"connection\0requested_server_name" => {
            tls.map_or("", |t| t.requested_server_name.as_str()).into()
        }
        path => return tls_property(tls?, path),
    };
    Some(value.encode())
}

/// The `connection.*` properties that only a TLS connection has.
fn tls_property(tls: &TlsInfo, path: &[u8]) -> Option<Vec<u8>> {
    let first = |v: &[String]| v.first().map(|s| s.as_bytes().to_vec());
    let subject = |c: &Option<CertificateInfo>| {
        Some(
            c.as_ref()
                .map_or(Vec::new(), |c| c.subject.as_bytes().to_vec()),
        )
    };
    match path {
        b"connection\0tls_version" => Some(tls.version.as_bytes().to_vec()),
        b"connection\0subject_peer_certificate" => subject(&tls.peer),
        b"connection\0subject_local_certificate" => subject(&tls.local),
        b"connection\0uri_san_peer_certificate" => first(&tls.peer.as_ref()?.uri_sans),
        b"connection\0uri_san_local_certificate" => first(&tls.local.as_ref()?.uri_sans),
        b"connection\0dns_san_peer_certificate" => first(&tls.peer.as_ref()?.dns_sans),
        b"connection\0dns_san_local_certificate" => first(&tls.local.as_ref()?.dns_sans),
        b"connection\0sha256_peer_certificate_digest" => {
            let d = &tls.sha256_peer_certificate_digest;
            (!d.is_empty()).then(|| d.as_bytes().to_vec())
        }
        _ => None,
    }
}

/// A body that never reports its end together with data: after the last
/// data frame it says "not ended" until the inner body yields `None`, so
/// the chain sees the end as a separate, empty callback (Envoy's HTTP/1
/// codec). A body that is empty from the start still reports its end at
/// once (headers-only messages).
pub(crate) struct SplitEnd<B> {
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
pub(crate) enum Framed<B> {
    Direct(B),
    Split(SplitEnd<B>),
}

impl<B: Body + Unpin> Framed<B> {
    pub(crate) fn new(body: B, version: http::Version) -> Self {
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
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // One snapshot per stream: a hot reload does not touch it.
        let config = self.config.load();
        let (mut parts, body) = req.into_parts();
        if config.pools.is_empty() {
            // No filter: nothing reads the properties, the maps or the
            // bodies.
            convert::unchanged_request(&mut parts);
            let upstream = inner.call(Request::from_parts(parts, VesselBody::passed(body)));
            return ResponseFuture::passed(
                async move { Ok(upstream.await?.map(VesselBody::passed)) },
            );
        }
        let mut stream_config = StreamConfig::new(config.pools.len());
        stream_config.properties = properties(&parts);
        // Envoy limits the L7 buffers of an HTTP/1 stream by the listener's
        // `per_connection_buffer_limit_bytes`, and those of an HTTP/2 stream
        // by the HTTP/2 initial stream window instead.
        stream_config.buffer_limit = if parts.version >= http::Version::HTTP_2 {
            HTTP2_STREAM_BUFFER_LIMIT
        } else {
            config.buffer_limit
        };
        let mut stream = PooledStream::new(&config.pools, stream_config);
        let body = Framed::new(body, parts.version);
        let end = body.is_end_stream();
        stream.request_headers(convert::request_headers(&parts), end);
        let exchange = Exchange::new(stream, parts, (!end).then_some(body), inner);
        ResponseFuture::filtered(Box::new(exchange))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn response_properties_are_computed_by_their_encoded_paths() {
        let source = response_properties(
            Some(ResponseInfo::new(
                "via_upstream",
                ResponseInfo::NO_HEALTHY_UPSTREAM,
            )),
            Some(UpstreamInfo {
                address: "127.0.0.1:8080".parse().unwrap(),
                local_address: None,
                cluster: Some("backend".into()),
            }),
        );
        let get = |dotted: &str| source(&path_from_dotted(dotted));
        assert_eq!(get("response.code_details").unwrap(), b"via_upstream");
        assert_eq!(get("response.flags").unwrap(), 2u64.to_le_bytes());
        assert_eq!(get("upstream.address").unwrap(), b"127.0.0.1:8080");
        assert_eq!(get("upstream.port").unwrap(), 8080i64.to_le_bytes());
        assert_eq!(get("xds.cluster_name").unwrap(), b"backend");
        assert_eq!(get("cluster_name").unwrap(), b"backend");
        assert_eq!(get("upstream.local_address"), None);
        assert_eq!(get("upstream"), None);
        assert_eq!(get("response.code"), None);
        assert_eq!(
            source(b"response.code_details"),
            None,
            "dots are not separators"
        );
    }
}
