//! TLS to upstreams (`UpstreamTlsContext` on clusters): the router over
//! HTTP/1.1 and HTTP/2 (ALPN `h2`), and a callout (`proxy_http_call`) to a
//! TLS cluster, against a rustls/hyper loopback server that requires a client
//! certificate from the test CA. Certificates are made at test time
//! (`vessel_testkit::certs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use vessel_testkit::certs::{CertPair, TestCa};

use crate::common::TempDir;
use crate::support::{Bootstrap, Cluster, Listener, Route, WasmFilter, client, guest, send};

/// A TLS upstream: requires a client certificate signed by `ca`, offers
/// ALPN `h2` and `http/1.1`, and answers 200 with what it saw: `x-seen-sni`,
/// `x-seen-alpn`, `x-seen-client` (the client certificate's first DNS-less
/// subject bytes length, or `none`), `x-seen-version`, and
/// `x-seen-auth-user` (the request's `x-auth-user`); it also sends
/// `x-auth-user: tls-user` (for the `http_call` guest).
async fn tls_upstream(ca: &TestCa, cert: &CertPair) -> SocketAddr {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("verifier");
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(cert.cert_der.clone())],
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key"),
        )
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let sni = conn.server_name().unwrap_or("none").to_owned();
                let alpn = conn.alpn_protocol().map_or("none".to_owned(), |a| {
                    String::from_utf8_lossy(a).into_owned()
                });
                let client = if conn.peer_certificates().is_some_and(|c| !c.is_empty()) {
                    "yes"
                } else {
                    "none"
                };
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let seen_user = req
                        .headers()
                        .get("x-auth-user")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    let resp = http::Response::builder()
                        .header("x-seen-sni", sni.as_str())
                        .header("x-seen-alpn", alpn.as_str())
                        .header("x-seen-client", client)
                        .header("x-seen-version", format!("{:?}", req.version()))
                        .header("x-seen-auth-user", seen_user)
                        .header("x-auth-user", "tls-user")
                        .body(Full::new(Bytes::from_static(b"secure")))
                        .expect("response");
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// An `UpstreamTlsContext` transport socket with the CA and the client
/// certificate in `dir`.
fn upstream_tls(dir: &Path, sni: &str, ca_file: &str) -> serde_json::Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": sni,
            "common_tls_context": {
                "tls_certificates": [{
                    "certificate_chain": { "filename": dir.join("client.crt") },
                    "private_key": { "filename": dir.join("client.key") },
                }],
                "validation_context": { "trusted_ca": { "filename": dir.join(ca_file) } },
            },
        },
    })
}

struct Setup {
    dir: TempDir,
    upstream: SocketAddr,
}

async fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let ca = TestCa::new("vessel upstream CA");
    ca.write(dir.path(), "ca");
    // Another CA that did not sign the upstream's certificate.
    TestCa::new("a stranger").write(dir.path(), "other-ca");
    ca.client("vessel", "spiffe://vessel/proxy", "vessel.test")
        .write(dir.path(), "client");
    let server = ca.server("upstream", &["upstream.test"]);
    let upstream = tls_upstream(&ca, &server).await;
    Setup { dir, upstream }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_reaches_a_tls_upstream_over_http1_and_h2() {
    let s = setup("tls-router").await;
    let config = Bootstrap::new()
        .listener(
            Listener::new("main")
                .route(Route::prefix("/h2").to("secure_h2"))
                .route(Route::prefix("/stranger").to("stranger"))
                .route(Route::prefix("/").to("secure")),
        )
        .cluster(Cluster::new("secure").endpoint(s.upstream).field(
            "transport_socket",
            upstream_tls(s.dir.path(), "upstream.test", "ca.crt"),
        ))
        .cluster(
            Cluster::new("secure_h2")
                .endpoint(s.upstream)
                .http2()
                .field(
                    "transport_socket",
                    upstream_tls(s.dir.path(), "h2.test", "ca.crt"),
                ),
        )
        .cluster(Cluster::new("stranger").endpoint(s.upstream).field(
            "transport_socket",
            upstream_tls(s.dir.path(), "upstream.test", "other-ca.crt"),
        ));
    let vessel = crate::support::start_vessel("tls-router", &config, 1).await;
    let addr = vessel.listener("main");
    let c = client();

    let a = send(&c, addr, "/", &[]).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body, "secure");
    assert_eq!(a.header("x-seen-sni"), Some("upstream.test"));
    assert_eq!(a.header("x-seen-client"), Some("yes"));
    assert_eq!(a.header("x-seen-alpn"), Some("none"));
    assert_eq!(a.header("x-seen-version"), Some("HTTP/1.1"));

    let a = send(&c, addr, "/h2", &[]).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("x-seen-sni"), Some("h2.test"));
    assert_eq!(a.header("x-seen-alpn"), Some("h2"));
    assert_eq!(a.header("x-seen-version"), Some("HTTP/2.0"));

    // A server whose chain does not lead to the trusted CA: no connection.
    let a = send(&c, addr, "/stranger", &[]).await;
    assert_eq!(a.status, 503, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callout_reaches_a_tls_cluster() {
    let s = setup("tls-callout").await;
    let config = Bootstrap::new()
        .listener(
            Listener::new("main")
                .route(Route::prefix("/").to("secure"))
                .filter(WasmFilter::new("auth", guest("http_call"))),
        )
        .cluster(Cluster::new("secure").endpoint(s.upstream).field(
            "transport_socket",
            upstream_tls(s.dir.path(), "upstream.test", "ca.crt"),
        ))
        .cluster(Cluster::new("auth").endpoint(s.upstream).field(
            "transport_socket",
            upstream_tls(s.dir.path(), "auth.test", "ca.crt"),
        ));
    let vessel = crate::support::start_vessel("tls-callout", &config, 1).await;
    let addr = vessel.listener("main");
    let a = send(&client(), addr, "/", &[("x-token", "t")]).await;
    // The callout answered 200 with `x-auth-user: tls-user`; the guest
    // added it to the request, which the TLS upstream saw.
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("x-seen-auth-user"), Some("tls-user"));
}
