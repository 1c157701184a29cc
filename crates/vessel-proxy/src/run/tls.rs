//! TLS for `vessel run`, with rustls and its default provider (aws-lc-rs).
//!
//! Downstream ([`ServerTls`], from a `DownstreamTlsContext`): several
//! certificates chosen by the client's SNI (`CertResolver`: the first
//! whose DNS SANs match the name exactly, then by a wildcard, else the first
//! certificate, as Envoy does), each read again when its files change (the
//! files' modification times and sizes are compared at each handshake; a
//! change that does not load, e.g. a key written after its certificate,
//! keeps the old pair and is tried again on the next change, so no
//! connection is lost during a reload); client certificates checked against
//! `validation_context.trusted_ca`; ALPN from `alpn_protocols`. After the
//! handshake, [`ServerTls::accept`] returns the connection's
//! [`TlsInfo`] (the `connection.*` TLS properties).
//!
//! Upstream (`upstream_tls`, from an `UpstreamTlsContext`): a
//! [`vessel_hyper::tls::UpstreamTls`] with the SNI, the trusted CAs, the
//! client certificate and ALPN (`h2` for HTTP/2 clusters when none is
//! given).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use vessel_hyper::{CertificateInfo, TlsInfo};

use crate::config::{
    CertificateSource, CommonTls, DownstreamTls, PemSource, TlsCertificate, TlsVersion, UpstreamTls,
};

/// Why a TLS context could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate, key or CA file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// PEM data without what it should hold, or malformed.
    #[error("{what}: {message}")]
    Pem {
        /// What was read (`certificate_chain /path`, `inline private_key`…).
        what: String,
        /// What is wrong.
        message: String,
    },
    /// An SDS file that does not hold the named secret.
    #[error("SDS file {}: {message}", path.display())]
    Sds {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration (a key that does not match its
    /// certificate, an unusable CA).
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("TLS client verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The upstream TLS configuration could not be built.
    #[error(transparent)]
    Upstream(#[from] vessel_hyper::tls::TlsConfigError),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn describe(src: &PemSource, field: &str) -> String {
    match src {
        PemSource::File(p) => format!("{field} {}", p.display()),
        PemSource::Inline(_) => format!("inline {field}"),
    }
}

fn read_source(src: &PemSource) -> Result<Vec<u8>, TlsError> {
    match src {
        PemSource::File(p) => std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.clone(),
            source,
        }),
        PemSource::Inline(b) => Ok(b.clone()),
    }
}

/// Reads the PEM certificates of `src` (at least one).
pub(crate) fn read_certificates(
    src: &PemSource,
    field: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_source(src)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: describe(src, field),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: describe(src, field),
            message: "no PEM certificate".into(),
        });
    }
    Ok(certs)
}

fn read_key(src: &PemSource) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_source(src)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        what: describe(src, "private_key"),
        message: e.to_string(),
    })
}

fn versions(common: &CommonTls) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut v = Vec::new();
    if common.min_version <= TlsVersion::Tls13 && common.max_version >= TlsVersion::Tls13 {
        v.push(&rustls::version::TLS13);
    }
    if common.min_version <= TlsVersion::Tls12 {
        v.push(&rustls::version::TLS12);
    }
    v
}

/// A certificate's fields for the properties, from its DER.
pub(crate) fn certificate_info(der: &[u8]) -> Option<CertificateInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut info = CertificateInfo {
        subject: rfc2253(cert.subject()),
        ..CertificateInfo::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::URI(u) => info.uri_sans.push((*u).into()),
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    info.dns_sans.push((*d).into());
                }
                _ => {}
            }
        }
    }
    Some(info)
}

/// OpenSSL's short name of an attribute type (what Envoy prints), by OID.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// A name in RFC 2253 form, as Envoy prints subjects: the last RDN first,
/// `,` between RDNs, `+` inside one, OpenSSL's short attribute names (else
/// the dotted OID), and `,+"\<>;` escaped.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let key = short_name(&oid).map_or(oid, str::to_owned);
                    let value = match atv.as_str() {
                        Ok(s) => escape_rfc2253(s),
                        Err(_) => {
                            let hex: String = atv
                                .attr_value()
                                .data
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect();
                            format!("#{hex}")
                        }
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_rfc2253(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == s.chars().count() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A loaded certificate: the key rustls serves, the names it is chosen by,
/// and its fields for the properties.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    info: CertificateInfo,
}

/// A file's modification time, size and inode, to notice a change (a
/// rename over the file, as Kubernetes and SDS file providers do, gives a
/// new inode).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// One certificate of a server, reloaded when its files change.
struct CertEntry {
    source: CertificateSource,
    state: Mutex<EntryState>,
}

struct EntryState {
    /// The files it was read from, with the stamps they had.
    files: Vec<(PathBuf, Stamp)>,
    current: Arc<Loaded>,
}

impl fmt::Debug for CertEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertEntry")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Reads a certificate and its key; the files it used.
fn load(
    source: &CertificateSource,
    provider: &CryptoProvider,
) -> Result<(Loaded, Vec<PathBuf>), TlsError> {
    let mut files = Vec::new();
    let pair: TlsCertificate = match source {
        CertificateSource::Static(c) => c.clone(),
        CertificateSource::Sds(s) => {
            files.push(s.path.clone());
            let text = std::fs::read_to_string(&s.path).map_err(|source| TlsError::Read {
                path: s.path.clone(),
                source,
            })?;
            crate::config::sds_certificate(&text, &s.path, &s.name).map_err(|message| {
                TlsError::Sds {
                    path: s.path.clone(),
                    message,
                }
            })?
        }
    };
    for src in [&pair.certificate_chain, &pair.private_key] {
        if let PemSource::File(p) = src {
            files.push(p.clone());
        }
    }
    let chain = read_certificates(&pair.certificate_chain, "certificate_chain")?;
    let key = read_key(&pair.private_key)?;
    let info = certificate_info(&chain[0]).ok_or_else(|| TlsError::Pem {
        what: describe(&pair.certificate_chain, "certificate_chain"),
        message: "the first certificate is not valid X.509".into(),
    })?;
    let key = Arc::new(CertifiedKey::from_der(chain, key, provider)?);
    Ok((Loaded { key, info }, files))
}

impl CertEntry {
    fn new(source: CertificateSource, provider: &CryptoProvider) -> Result<Self, TlsError> {
        let (loaded, files) = load(&source, provider)?;
        Ok(Self {
            source,
            state: Mutex::new(EntryState {
                files: files
                    .into_iter()
                    .map(|p| {
                        let s = stamp(&p);
                        (p, s)
                    })
                    .collect(),
                current: Arc::new(loaded),
            }),
        })
    }

    /// The certificate, read again first if one of its files changed.
    fn current(&self, provider: &CryptoProvider) -> Arc<Loaded> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = state.files.iter().any(|(p, s)| stamp(p) != *s);
        if changed {
            // Stamps are taken before reading: a write during the read is
            // seen as another change next time.
            let stamps: Vec<(PathBuf, Stamp)> = state
                .files
                .iter()
                .map(|(p, _)| (p.clone(), stamp(p)))
                .collect();
            match load(&self.source, provider) {
                Ok((loaded, files)) => {
                    log::info!("TLS certificate reloaded: {:?}", self.source);
                    state.current = Arc::new(loaded);
                    state.files = files
                        .into_iter()
                        .map(|p| {
                            let s = stamps
                                .iter()
                                .find(|(q, _)| *q == p)
                                .map_or_else(|| stamp(&p), |(_, s)| *s);
                            (p, s)
                        })
                        .collect();
                }
                Err(e) => {
                    log::warn!("TLS certificate not reloaded (the old one stays): {e}");
                    state.files = stamps;
                }
            }
        }
        state.current.clone()
    }
}

/// Picks a server certificate by SNI, reloading changed ones.
#[derive(Debug)]
struct CertResolver {
    entries: Vec<CertEntry>,
    provider: Arc<CryptoProvider>,
}

/// Whether a certificate DNS name (maybe `*.example.com`) covers `sni`.
fn name_matches(pattern: &str, sni: &str) -> bool {
    if pattern.eq_ignore_ascii_case(sni) {
        return true;
    }
    match (pattern.strip_prefix("*."), sni.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
        }
        _ => false,
    }
}

impl CertResolver {
    /// The certificate for `sni`: an exact DNS SAN match, then a wildcard
    /// one, else the first certificate.
    fn pick(&self, sni: Option<&str>) -> Option<Arc<Loaded>> {
        let all: Vec<Arc<Loaded>> = self
            .entries
            .iter()
            .map(|e| e.current(&self.provider))
            .collect();
        if let Some(sni) = sni {
            let exact = all.iter().find(|l| {
                l.info
                    .dns_sans
                    .iter()
                    .any(|d| !d.starts_with("*.") && d.eq_ignore_ascii_case(sni))
            });
            let wild = || {
                all.iter()
                    .find(|l| l.info.dns_sans.iter().any(|d| name_matches(d, sni)))
            };
            if let Some(l) = exact.or_else(wild) {
                return Some(l.clone());
            }
        }
        all.into_iter().next()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name()).map(|l| l.key.clone())
    }
}

/// A listener's (filter chain's) TLS: the rustls configuration and the
/// certificates.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    resolver: Arc<CertResolver>,
}

impl ServerTls {
    /// Reads the certificates and builds the configuration.
    pub fn new(t: &DownstreamTls) -> Result<Self, TlsError> {
        let provider = provider();
        let entries = t
            .common
            .certificates
            .iter()
            .map(|c| CertEntry::new(c.clone(), &provider))
            .collect::<Result<Vec<_>, _>>()?;
        let resolver = Arc::new(CertResolver {
            entries,
            provider: provider.clone(),
        });
        let verifier = match &t.common.trusted_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in read_certificates(ca, "trusted_ca")? {
                    roots.add(c)?;
                }
                let b =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                if t.require_client_certificate {
                    b.build()?
                } else {
                    b.allow_unauthenticated().build()?
                }
            }
            None => WebPkiClientVerifier::no_client_auth(),
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions(&t.common))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = t
            .common
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        Ok(Self {
            config: Arc::new(config),
            resolver,
        })
    }

    /// The rustls configuration (for a `LazyConfigAcceptor`'s
    /// `into_stream`).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Makes the handshake on `tcp`.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<(TlsStream<TcpStream>, Arc<TlsInfo>)> {
        let stream = tokio_rustls::TlsAcceptor::from(self.config.clone())
            .accept(tcp)
            .await?;
        let info = self.info(&stream);
        Ok((stream, info))
    }

    /// The TLS facts of an established connection.
    pub fn info(&self, stream: &TlsStream<TcpStream>) -> Arc<TlsInfo> {
        let (_, conn) = stream.get_ref();
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        let sni = conn.server_name().map(str::to_owned);
        let peer_der = conn.peer_certificates().and_then(|c| c.first());
        let peer = peer_der.and_then(|d| certificate_info(d.as_ref()));
        let digest = peer_der.map_or_else(String::new, |d| {
            Sha256::digest(d.as_ref())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        });
        let local = self.resolver.pick(sni.as_deref()).map(|l| l.info.clone());
        Arc::new(TlsInfo {
            version,
            requested_server_name: sni.unwrap_or_default(),
            peer,
            sha256_peer_certificate_digest: digest,
            local,
        })
    }

    /// Whether `h2` was negotiated by ALPN.
    pub fn negotiated_h2(stream: &TlsStream<TcpStream>) -> bool {
        stream.get_ref().1.alpn_protocol() == Some(b"h2")
    }
}

/// How long a listener that must read the TLS ClientHello (to choose a
/// filter chain by SNI, or to terminate TLS) waits for it: Envoy's default
/// `listener_filters_timeout`.
pub(crate) const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest ClientHello read ahead (a TLS record: 16 KiB and its header).
const MAX_CLIENT_HELLO: usize = 16 * 1024 + 5;

/// Reads the SNI of the TLS ClientHello that starts `tcp` without taking
/// any bytes off the socket (as Envoy's `tls_inspector`), so the chosen
/// filter chain then terminates TLS or passes it through. `Ok(None)`: the
/// connection is not TLS, or its ClientHello names no server. An error:
/// the peer closed, or sent nothing within `timeout`.
pub(crate) async fn peek_server_name(
    tcp: &TcpStream,
    timeout: Duration,
) -> io::Result<Option<String>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_CLIENT_HELLO];
    let mut last = 0;
    loop {
        let n = tokio::time::timeout_at(deadline, tcp.peek(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no ClientHello in time"))??;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // A TLS handshake record starts with content type 22.
        if buf[0] != 0x16 {
            return Ok(None);
        }
        if n > last {
            last = n;
            let mut acceptor = rustls::server::Acceptor::default();
            let mut rd = &buf[..n];
            while !rd.is_empty() {
                match acceptor.read_tls(&mut rd) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(_) => return Ok(None),
                }
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    return Ok(accepted.client_hello().server_name().map(str::to_owned));
                }
                Ok(None) if n < buf.len() => {}
                Ok(None) | Err(_) => return Ok(None),
            }
        }
        // Part of the ClientHello is here: wait for the rest (peek sees
        // the same bytes until more arrive).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Wraps a connection's service so that every request carries the
/// connection's TLS facts (the `connection.*` TLS properties).
pub(crate) fn with_tls_info<S>(
    svc: S,
    info: Arc<TlsInfo>,
) -> impl tower::Service<
    http::Request<hyper::body::Incoming>,
    Response = S::Response,
    Error = S::Error,
    Future = S::Future,
> + Clone
where
    S: tower::Service<http::Request<hyper::body::Incoming>> + Clone,
{
    tower::util::MapRequest::new(svc, move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(info.clone());
        req
    })
}

/// A cluster's TLS. Without `alpn_protocols`, an HTTP/2 cluster offers
/// `h2` (as Envoy does for its HTTP/2 upstreams).
pub(crate) fn upstream_tls(
    t: &UpstreamTls,
    http2: bool,
) -> Result<vessel_hyper::tls::UpstreamTls, TlsError> {
    let trusted_ca = t
        .common
        .trusted_ca
        .as_ref()
        .map(|ca| read_certificates(ca, "trusted_ca"))
        .transpose()?;
    let client_certificate = match t.common.certificates.first() {
        Some(source) => {
            let pair = match source {
                CertificateSource::Static(c) => c.clone(),
                CertificateSource::Sds(s) => {
                    let text =
                        std::fs::read_to_string(&s.path).map_err(|source| TlsError::Read {
                            path: s.path.clone(),
                            source,
                        })?;
                    crate::config::sds_certificate(&text, &s.path, &s.name).map_err(|message| {
                        TlsError::Sds {
                            path: s.path.clone(),
                            message,
                        }
                    })?
                }
            };
            Some((
                read_certificates(&pair.certificate_chain, "certificate_chain")?,
                read_key(&pair.private_key)?,
            ))
        }
        None => None,
    };
    let mut alpn_protocols: Vec<Vec<u8>> = t
        .common
        .alpn_protocols
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    if alpn_protocols.is_empty() && http2 {
        alpn_protocols.push(b"h2".to_vec());
    }
    let sni = t
        .sni
        .as_ref()
        .and_then(|s| ServerName::try_from(s.clone()).ok());
    Ok(vessel_hyper::tls::UpstreamTls::new(
        vessel_hyper::tls::UpstreamTlsOptions {
            trusted_ca,
            client_certificate,
            alpn_protocols,
            versions: versions(&t.common),
            sni,
        },
    )?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::SdsSecret;
    use vessel_hyper::tls::UpstreamTls as UpstreamClient;
    use vessel_testkit::certs::{CertPair, TestCa};

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(name_matches("A.example.com", "a.EXAMPLE.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
    }

    #[test]
    fn rfc2253_escapes() {
        assert_eq!(escape_rfc2253("a,b"), "a\\,b");
        assert_eq!(escape_rfc2253(" x "), "\\ x\\ ");
        assert_eq!(escape_rfc2253("#1"), "\\#1");
    }

    /// A fresh directory for one test's files.
    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vessel-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn inline(pair: &CertPair) -> CertificateSource {
        CertificateSource::Static(TlsCertificate {
            certificate_chain: PemSource::Inline(pair.cert_pem.clone().into_bytes()),
            private_key: PemSource::Inline(pair.key_pem.clone().into_bytes()),
        })
    }

    fn context(certs: Vec<CertificateSource>, ca: Option<&TestCa>, require: bool) -> DownstreamTls {
        DownstreamTls {
            common: CommonTls {
                certificates: certs,
                trusted_ca: ca.map(|c| PemSource::Inline(c.cert_pem.clone().into_bytes())),
                alpn_protocols: vec!["h2".into(), "http/1.1".into()],
                min_version: TlsVersion::Tls12,
                max_version: TlsVersion::Tls13,
            },
            require_client_certificate: require,
        }
    }

    /// A client (vessel's upstream TLS: the chain is verified, not the
    /// name, so a certificate for another name is still seen).
    fn client(ca: &TestCa, cert: Option<&CertPair>, tls12: bool, sni: &str) -> UpstreamClient {
        let ca_der = CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        UpstreamClient::new(vessel_hyper::tls::UpstreamTlsOptions {
            trusted_ca: Some(ca_der),
            client_certificate: cert.map(|p| {
                (
                    vec![CertificateDer::from(p.cert_der.clone())],
                    PrivateKeyDer::from_pem_slice(p.key_pem.as_bytes()).unwrap(),
                )
            }),
            alpn_protocols: vec![b"h2".to_vec()],
            versions: if tls12 {
                vec![&rustls::version::TLS12]
            } else {
                Vec::new()
            },
            sni: Some(ServerName::try_from(sni.to_owned()).unwrap()),
        })
        .unwrap()
    }

    /// One handshake: the server's facts (or its error) and the
    /// certificate the client was served.
    async fn handshake(
        server: &ServerTls,
        client: UpstreamClient,
    ) -> (io::Result<Arc<TlsInfo>>, Option<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = server.clone();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (mut stream, info) = server.accept(tcp).await?;
            // Finish the handshake for TLS 1.3 client certificates.
            use tokio::io::AsyncWriteExt;
            stream.write_all(b"x").await?;
            stream.flush().await?;
            Ok::<_, io::Error>(info)
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let served = match client.handshake(tcp, addr.ip()).await {
            Ok(mut s) => {
                use tokio::io::AsyncReadExt;
                let mut b = [0u8; 1];
                let _ = s.read(&mut b).await;
                s.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec())
            }
            Err(_) => None,
        };
        (accept.await.unwrap(), served)
    }

    #[tokio::test]
    async fn sni_picks_the_certificate_and_mtls_fills_the_properties() {
        let ca = TestCa::new("vessel test CA");
        let a = ca.server("a", &["a.test"]);
        let b = ca.server("b", &["*.b.test"]);
        let c = ca.server("c", &["x.b.test"]);
        let me = ca.client("client", "spiffe://vessel/client", "client.test");
        let server = ServerTls::new(&context(
            vec![inline(&a), inline(&b), inline(&c)],
            Some(&ca),
            true,
        ))
        .expect("a server");

        // The exact name wins over the wildcard; an unknown name gets the first.
        for (sni, want) in [
            ("x.b.test", &c),
            ("y.b.test", &b),
            ("a.test", &a),
            ("z.test", &a),
        ] {
            let (info, served) = handshake(&server, client(&ca, Some(&me), false, sni)).await;
            assert_eq!(served.as_deref(), Some(want.cert_der.as_slice()), "{sni}");
            let info = info.expect("handshake");
            assert_eq!(info.requested_server_name, sni);
            assert_eq!(
                info.local.as_ref().map(|l| l.dns_sans.clone()),
                certificate_info(&want.cert_der).map(|l| l.dns_sans)
            );
        }
        let (info, _) = handshake(&server, client(&ca, Some(&me), false, "a.test")).await;
        let info = info.expect("handshake");
        assert_eq!(info.version, "TLSv1.3");
        let peer = info.peer.clone().expect("the client's certificate");
        assert_eq!(peer.subject, "CN=client,O=vessel tests");
        assert_eq!(peer.uri_sans, ["spiffe://vessel/client"]);
        assert_eq!(peer.dns_sans, ["client.test"]);
        let digest: String = Sha256::digest(&me.cert_der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(info.sha256_peer_certificate_digest, digest);
        assert_eq!(info.local.as_ref().unwrap().subject, "CN=a,O=vessel tests");

        let (info, _) = handshake(&server, client(&ca, Some(&me), true, "a.test")).await;
        assert_eq!(info.expect("TLS 1.2").version, "TLSv1.2");

        // Without a client certificate the handshake is refused.
        let (info, served) = handshake(&server, client(&ca, None, false, "a.test")).await;
        assert!(info.is_err(), "no client certificate: {info:?}");
        let _ = served;
    }

    #[tokio::test]
    async fn client_certificates_are_optional_without_require() {
        let ca = TestCa::new("vessel test CA");
        let a = ca.server("a", &["a.test"]);
        let server = ServerTls::new(&context(vec![inline(&a)], Some(&ca), false)).expect("server");
        let (info, _) = handshake(&server, client(&ca, None, false, "a.test")).await;
        let info = info.expect("handshake");
        assert!(info.peer.is_none());
        assert!(info.sha256_peer_certificate_digest.is_empty());
    }

    #[tokio::test]
    async fn a_changed_certificate_file_is_served_and_a_bad_one_is_not() {
        let d = dir("reload");
        let ca = TestCa::new("vessel test CA");
        let old = ca.server("old", &["a.test"]);
        let new = ca.server("new", &["a.test"]);
        let (cert, key) = old.write(&d, "server");
        let source = CertificateSource::Static(TlsCertificate {
            certificate_chain: PemSource::File(cert.clone()),
            private_key: PemSource::File(key.clone()),
        });
        let server = ServerTls::new(&context(vec![source], None, false)).expect("server");
        let (_, served) = handshake(&server, client(&ca, None, false, "a.test")).await;
        assert_eq!(served.as_deref(), Some(old.cert_der.as_slice()));

        // The certificate alone (its key not yet written) does not load:
        // the old pair stays. (Files are replaced by a rename, as
        // Kubernetes does.)
        let replace = |path: &Path, text: &str| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        };
        replace(&cert, &new.cert_pem);
        let (_, served) = handshake(&server, client(&ca, None, false, "a.test")).await;
        assert_eq!(served.as_deref(), Some(old.cert_der.as_slice()));
        // With its key, the new pair is served.
        replace(&key, &new.key_pem);
        let (_, served) = handshake(&server, client(&ca, None, false, "a.test")).await;
        assert_eq!(served.as_deref(), Some(new.cert_der.as_slice()));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn sds_files_are_read_and_reloaded() {
        let d = dir("sds");
        let ca = TestCa::new("vessel test CA");
        let one = ca.server("one", &["a.test"]);
        let two = ca.server("two", &["a.test"]);
        one.write(&d, "one");
        two.write(&d, "two");
        let sds = d.join("sds.yaml");
        let secret = |n: &str| {
            format!(
                "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: server\n  tls_certificate:\n    certificate_chain: {{ filename: {n}.crt }}\n    private_key: {{ filename: {n}.key }}\n"
            )
        };
        std::fs::write(&sds, secret("one")).unwrap();
        let source = CertificateSource::Sds(SdsSecret {
            name: "server".into(),
            path: sds.clone(),
        });
        let server = ServerTls::new(&context(vec![source], None, false)).expect("server");
        let (_, served) = handshake(&server, client(&ca, None, false, "a.test")).await;
        assert_eq!(served.as_deref(), Some(one.cert_der.as_slice()));
        // A rename over the old file, as SDS file providers do.
        let tmp = d.join("sds.tmp");
        std::fs::write(&tmp, secret("two")).unwrap();
        std::fs::rename(&tmp, &sds).unwrap();
        let (_, served) = handshake(&server, client(&ca, None, false, "a.test")).await;
        assert_eq!(served.as_deref(), Some(two.cert_der.as_slice()));
        let _ = std::fs::remove_dir_all(&d);
    }
}
