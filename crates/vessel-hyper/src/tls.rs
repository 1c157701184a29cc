//! Upstream TLS with rustls: a cluster's [`UpstreamTls`] (its client
//! configuration and server name), and [`Connector`], the hyper-util
//! connector that makes plain or TLS connections for callouts, gRPC calls
//! and `vessel run`'s router.
//!
//! Certificate checks follow Envoy's `UpstreamTlsContext`: with trusted CAs
//! the server's chain must lead to one of them (the name in the certificate
//! is not compared: Envoy checks names only with SAN matchers, which vessel
//! does not read); without CAs the server's certificate is not verified.
//! Handshake signatures are always checked.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tower::Service;

/// Why an upstream TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// rustls refused the configuration (a bad key, no usable versions).
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS side of one upstream cluster: how its connections are made.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
    h2: bool,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("h2", &self.h2)
            .finish_non_exhaustive()
    }
}

/// Two are equal when they share one client configuration.
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(self.connector.config(), other.connector.config())
            && self.server_name == other.server_name
    }
}

impl Eq for UpstreamTls {}

/// What an [`UpstreamTls`] is made of.
#[derive(Debug, Default)]
pub struct UpstreamTlsOptions {
    /// The CAs the server's chain must lead to; `None`: not verified.
    pub trusted_ca: Option<Vec<CertificateDer<'static>>>,
    /// A client certificate chain and its key.
    pub client_certificate: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// The ALPN protocols offered, in order.
    pub alpn_protocols: Vec<Vec<u8>>,
    /// The protocol versions allowed (rustls's defaults, TLS 1.2 and 1.3,
    /// when empty).
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    /// The SNI sent. Without it, no SNI is sent (the connection names the
    /// endpoint by its IP address).
    pub sni: Option<ServerName<'static>>,
}

impl UpstreamTls {
    /// A cluster's TLS from its options, with rustls's default provider.
    pub fn new(options: UpstreamTlsOptions) -> Result<Self, TlsConfigError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = if options.versions.is_empty()
        {
            rustls::DEFAULT_VERSIONS
        } else {
            &options.versions
        };
        let roots = match options.trusted_ca {
            Some(cas) => {
                let mut store = RootCertStore::empty();
                for ca in cas {
                    store.add(ca)?;
                }
                Some(Arc::new(store))
            }
            None => None,
        };
        let verifier = Arc::new(ChainVerifier {
            roots,
            provider: provider.clone(),
        });
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match options.client_certificate {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
            None => builder.with_no_client_auth(),
        };
        let h2 = options.alpn_protocols.first().is_some_and(|p| p == b"h2");
        config.alpn_protocols = options.alpn_protocols;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: options.sni,
            h2,
        })
    }

    /// Makes the TLS handshake on `tcp` (to `peer`).
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        peer: IpAddr,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = self
            .server_name
            .clone()
            .unwrap_or(ServerName::IpAddress(peer.into()));
        self.connector.connect(name, tcp).await
    }

    /// Whether `h2` is the first ALPN protocol offered.
    pub fn offers_h2(&self) -> bool {
        self.h2
    }
}

/// Verifies the server's chain against the trusted CAs (if any), not its
/// name, as Envoy does without SAN matchers.
#[derive(Debug)]
struct ChainVerifier {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// hyper-util's [`HttpConnector`], with TLS on top for clusters that have
/// an [`UpstreamTls`]. The request URI names the endpoint by IP.
#[derive(Clone, Debug)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<Arc<UpstreamTls>>,
}

impl Connector {
    /// A connector over `http` (timeouts, nodelay set by the caller); it
    /// takes `https` URIs too.
    pub fn new(mut http: HttpConnector, tls: Option<Arc<UpstreamTls>>) -> Self {
        http.enforce_http(false);
        Self { http, tls }
    }
}

/// A connection made by [`Connector`].
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TokioIo<TcpStream>),
    /// TLS over TCP (boxed: the rustls state is large).
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?;
            let Some(tls) = tls else {
                return Ok(Conn::Plain(tcp));
            };
            let tcp = tcp.into_inner();
            let peer = tcp.peer_addr()?.ip();
            let stream = tls.handshake(tcp, peer).await?;
            Ok(Conn::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(t) => t.connected(),
            Self::Tls(t) => {
                let (tcp, session) = t.inner().get_ref();
                let c = tcp.connected();
                if session.alpn_protocol() == Some(b"h2") {
                    c.negotiated_h2()
                } else {
                    c
                }
            }
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(t) => Pin::new(t).poll_read(cx, buf),
            Self::Tls(t) => Pin::new(&mut **t).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(t) => Pin::new(t).poll_write(cx, buf),
            Self::Tls(t) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(t) => Pin::new(t).poll_flush(cx),
            Self::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(t) => Pin::new(t).poll_shutdown(cx),
            Self::Tls(t) => Pin::new(&mut **t).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(t) => t.is_write_vectored(),
            Self::Tls(t) => t.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(t) => Pin::new(t).poll_write_vectored(cx, bufs),
            Self::Tls(t) => Pin::new(&mut **t).poll_write_vectored(cx, bufs),
        }
    }
}
