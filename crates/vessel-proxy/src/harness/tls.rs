//! A scenario's `tls` key on the real backends: certificates made at run
//! time with rcgen (a CA, a server certificate for the SNI, a client
//! certificate when asked; no key is ever committed), the listener's
//! `DownstreamTlsContext` (and TLS inspector) in the generated bootstrap,
//! and the rustls client the requests go through.
//!
//! The certificates carry the fixed names of
//! [`vessel_test::scenario::tls_names`], so the in-process runner gives the
//! same `connection.*` properties. They are made once per scenario file and
//! process (and written into each run's scratch files), so `vessel run` and
//! Envoy in one `envoy-diff` present the same client certificate and give
//! the same `connection.sha256_peer_certificate_digest`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use vessel_test::scenario::{Alpn, TlsSpec, tls_names};

/// The PEM files of a `tls` scenario.
#[derive(Debug, Clone)]
pub(crate) struct Certs {
    ca: String,
    server: (String, String),
    client: Option<(String, String)>,
}

fn subject(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, tls_names::ORGANISATION);
    dn.push(DnType::CommonName, cn);
    dn
}

impl Certs {
    /// Makes the certificates of `tls`.
    fn make(tls: &TlsSpec) -> Result<Self, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name = subject(tls_names::CA_COMMON_NAME);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate()?;
        let mut server = CertificateParams::new(vec![tls.server_dns(), "127.0.0.1".to_owned()])?;
        server.distinguished_name = subject(tls_names::SERVER_COMMON_NAME);
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = (server.signed_by(&key, &issuer)?.pem(), key.serialize_pem());

        let client = if tls.client_certificate {
            let key = KeyPair::generate()?;
            let mut p = CertificateParams::new(vec![tls_names::CLIENT_DNS_SAN.to_owned()])?;
            p.subject_alt_names
                .push(SanType::URI(tls_names::CLIENT_URI_SAN.try_into()?));
            p.distinguished_name = subject(tls_names::CLIENT_COMMON_NAME);
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            Some((p.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
        } else {
            None
        };
        Ok(Self {
            ca: ca_pem,
            server,
            client,
        })
    }

    /// The certificates of the scenario file `path`: made on first use,
    /// then the same for every run of it in this process.
    pub(crate) fn of(path: &Path, tls: &TlsSpec) -> Result<Arc<Self>, String> {
        type Cache = Mutex<HashMap<(PathBuf, String), Arc<Certs>>>;
        static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
        let key = (path.to_owned(), format!("{tls:?}"));
        let cache = CACHE.get_or_init(Cache::default);
        if let Some(c) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(c);
        }
        let made = Arc::new(Self::make(tls).map_err(|e| format!("making certificates: {e}"))?);
        if let Ok(mut c) = cache.lock() {
            c.insert(key, made.clone());
        }
        Ok(made)
    }
}

/// The certificate files of one run, and the client that trusts them.
pub(crate) struct RunTls {
    /// The files written (removed with the run's other files).
    pub(crate) files: Vec<PathBuf>,
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    require_client: bool,
    inspector: bool,
    client: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    /// The protocol the client offers and speaks.
    pub(crate) alpn: Alpn,
}

impl RunTls {
    /// Writes `certs` into scratch files (named by `scratch(tag, ext)`)
    /// and builds the client for `tls`.
    pub(crate) fn new(
        certs: &Certs,
        tls: &TlsSpec,
        alpn: Alpn,
        scratch: impl Fn(&str, &str) -> PathBuf,
    ) -> Result<Self, String> {
        let mut files = Vec::new();
        let mut write = |tag: &str, text: &str| -> Result<PathBuf, String> {
            let p = scratch(tag, "pem");
            std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
            files.push(p.clone());
            Ok(p)
        };
        let ca = write("ca", &certs.ca)?;
        let server = (
            write("server-crt", &certs.server.0)?,
            write("server-key", &certs.server.1)?,
        );
        let bad = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(certs.ca.as_bytes()) {
            let c = c.map_err(|e| bad("the CA certificate", &e))?;
            roots.add(c).map_err(|e| bad("the CA certificate", &e))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS versions", &e))?
            .with_root_certificates(roots);
        let mut client = match &certs.client {
            Some((crt, key)) => {
                let chain = CertificateDer::pem_slice_iter(crt.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad("the client certificate", &e))?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                    .map_err(|e| bad("the client key", &e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad("the client certificate", &e))?
            }
            None => builder.with_no_client_auth(),
        };
        client.alpn_protocols = vec![alpn.id().as_bytes().to_vec()];
        let server_name = match &tls.sni {
            Some(sni) => {
                ServerName::try_from(sni.to_ascii_lowercase()).map_err(|e| bad("tls.sni", &e))?
            }
            None => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
        };
        Ok(Self {
            files,
            ca,
            server,
            require_client: tls.client_certificate,
            inspector: tls.inspector,
            client: Arc::new(client),
            server_name,
            alpn,
        })
    }

    /// The `transport_socket` of the listener's filter chain, as one YAML
    /// flow mapping: the server certificate, ALPN `h2` and `http/1.1`,
    /// and with `client_certificate` the CA for client certificates and
    /// `require_client_certificate`.
    pub(crate) fn transport_socket(&self) -> String {
        let s = |p: &Path| super::real::yaml_str(&p.to_string_lossy());
        let validation = if self.require_client {
            format!(
                ", validation_context: {{ trusted_ca: {{ filename: {} }} }}",
                s(&self.ca)
            )
        } else {
            String::new()
        };
        format!(
            "{{ name: envoy.transport_sockets.tls, typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, require_client_certificate: {req}, common_tls_context: {{ alpn_protocols: [h2, http/1.1], tls_certificates: [{{ certificate_chain: {{ filename: {crt} }}, private_key: {{ filename: {key} }} }}]{validation} }} }} }}",
            req = self.require_client,
            crt = s(&self.server.0),
            key = s(&self.server.1),
        )
    }

    /// The listener's `listener_filters` line (with its indentation and
    /// newline), or nothing without `inspector`.
    pub(crate) fn listener_filters(&self) -> &'static str {
        if self.inspector {
            "    listener_filters:\n    - name: envoy.filters.listener.tls_inspector\n      typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }\n"
        } else {
            ""
        }
    }

    /// Connects to `front` and makes the handshake: the TLS stream, for
    /// the TCP driver.
    pub(crate) async fn connect_stream(
        &self,
        front: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(front).await?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(self.client.clone())
            .connect(self.server_name.clone(), tcp)
            .await
    }

    /// Connects to `front` and makes the handshake, for hyper's client.
    pub(crate) async fn connect(&self, front: SocketAddr) -> std::io::Result<Conn> {
        let tls = self.connect_stream(front).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Conn::Tls {
            io: Box::new(TokioIo::new(tls)),
            h2,
        })
    }
}

/// A client connection to the listener, plain or over TLS, for
/// hyper-util's client.
pub(crate) enum Conn {
    /// Plain TCP.
    Plain(TokioIo<tokio::net::TcpStream>),
    /// TLS; `h2` when ALPN chose HTTP/2.
    Tls {
        /// The stream.
        io: Box<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>,
        /// ALPN chose `h2`.
        h2: bool,
    },
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Self::Tls { h2: true, .. } => Connected::new().negotiated_h2(),
            _ => Connected::new(),
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Self::Tls { io, .. } => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Self::Tls { io, .. } => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_flush(cx),
            Self::Tls { io, .. } => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Self::Tls { io, .. } => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }
}
