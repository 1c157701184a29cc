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
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use vessel_testkit::certs::{CertPair, TestCa};

use crate::common::TempDir;
use crate::support::{
    Bootstrap, Cluster, Listener, Route, VesselProcess, WasmFilter, client, guest, send,
};

/// A TLS upstream: requires a client certificate signed by `ca`, offers
/// ALPN `h2` and `http/1.1`, and answers 200 with what it saw: `x-seen-sni`,
/// `x-seen-alpn`, `x-seen-client` (`yes` with a client certificate),
/// `x-seen-version`, `x-seen-auth-user` and `x-seen-grpc-user` (those
/// request headers); it also sends `x-auth-user: tls-user` (for the
/// `http_call` guest). `POST /auth.Auth/Check` gets a unary gRPC answer,
/// the message `grpc-tls-user` (for the `grpc_call` guest).
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
                    let seen = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("none")
                            .to_owned()
                    };
                    let resp = if req.uri().path() == "/auth.Auth/Check" {
                        // A unary gRPC answer: one message, grpc-status 0.
                        let msg = b"grpc-tls-user";
                        let mut frame = vec![0u8];
                        frame.extend_from_slice(
                            &u32::try_from(msg.len()).unwrap_or(0).to_be_bytes(),
                        );
                        frame.extend_from_slice(msg);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(
                                Full::new(Bytes::from(frame))
                                    .with_trailers(async move { Some(Ok(trailers)) })
                                    .boxed(),
                            )
                            .expect("response")
                    } else {
                        http::Response::builder()
                            .header("x-seen-sni", sni.as_str())
                            .header("x-seen-alpn", alpn.as_str())
                            .header("x-seen-client", client)
                            .header("x-seen-version", format!("{:?}", req.version()))
                            .header("x-seen-auth-user", seen("x-auth-user"))
                            .header("x-seen-grpc-user", seen("x-grpc-user"))
                            .header("x-auth-user", "tls-user")
                            .body(Full::new(Bytes::from_static(b"secure")).boxed())
                            .expect("response")
                    };
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
                .route(Route::prefix("/checked").to("checked"))
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
        .cluster(
            // Health checks go over the cluster's TLS too: a check over
            // plain TCP would fail, and without panic mode the route would
            // get 503.
            Cluster::new("checked")
                .endpoint(s.upstream)
                .field(
                    "transport_socket",
                    upstream_tls(s.dir.path(), "upstream.test", "ca.crt"),
                )
                .field(
                    "health_checks",
                    json!([{
                        "timeout": "1s", "interval": "0.05s",
                        "unhealthy_threshold": 1, "healthy_threshold": 1,
                        "http_health_check": {"path": "/health"},
                    }]),
                )
                .field(
                    "common_lb_config",
                    json!({"healthy_panic_threshold": {"value": 0}}),
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

    let a = send(&c, addr, "/checked", &[]).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("x-seen-client"), Some("yes"));

    // A server whose chain does not lead to the trusted CA: no connection.
    let a = send(&c, addr, "/stranger", &[]).await;
    assert_eq!(a.status, 503, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_reaches_a_tls_cluster_over_h2() {
    let s = setup("tls-grpc").await;
    let config = Bootstrap::new()
        .listener(
            Listener::new("main")
                .route(Route::prefix("/").to("secure"))
                .filter(WasmFilter::new("auth", guest("grpc_call"))),
        )
        .cluster(Cluster::new("secure").endpoint(s.upstream).field(
            "transport_socket",
            upstream_tls(s.dir.path(), "upstream.test", "ca.crt"),
        ))
        .cluster(Cluster::new("grpc").endpoint(s.upstream).http2().field(
            "transport_socket",
            upstream_tls(s.dir.path(), "grpc.test", "ca.crt"),
        ));
    let vessel = crate::support::start_vessel("tls-grpc", &config, 1).await;
    let addr = vessel.listener("main");
    let a = send(&client(), addr, "/", &[("x-token", "t")]).await;
    // The gRPC call (HTTP/2 by ALPN over TLS) answered OK with its message;
    // the guest added it to the request, which the TLS upstream saw.
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("x-seen-grpc-user"), Some("grpc-tls-user"));
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

// ---- Downstream: `DownstreamTlsContext` on the listener's filter chain,
// driven by curl and openssl s_client.

/// The TLS properties `guest_phase_properties` copies into response
/// headers (`x-req-<path with . → ->`).
const TLS_PROPERTIES: &str = "connection.tls_version,connection.mtls:bool,\
    connection.requested_server_name,connection.subject_peer_certificate,\
    connection.uri_san_peer_certificate,connection.dns_san_peer_certificate,\
    connection.sha256_peer_certificate_digest,connection.subject_local_certificate,\
    connection.dns_san_local_certificate,request.protocol";

/// True if `curl` and `openssl` run here. Without them the test is skipped
/// (printed); under CI=true it fails.
#[allow(clippy::print_stderr)]
fn tls_clients(test: &str) -> bool {
    let works = |tool: &str, arg: &str| {
        std::process::Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("curl", "--version") && works("openssl", "version") {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true needs curl and openssl (Debian: apt-get install curl openssl)"
    );
    eprintln!("skipped {test}: curl or openssl is missing");
    false
}

/// A `DownstreamTlsContext` with `certs` (`<name>.crt`/`.key` in `dir`),
/// ALPN h2 and http/1.1, and the CA `ca.crt` for client certificates.
fn downstream_tls(dir: &Path, certs: &[&str], require_client: bool) -> serde_json::Value {
    let certs: Vec<serde_json::Value> = certs
        .iter()
        .map(|n| {
            json!({
                "certificate_chain": { "filename": dir.join(format!("{n}.crt")) },
                "private_key": { "filename": dir.join(format!("{n}.key")) },
            })
        })
        .collect();
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": require_client,
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": certs,
                "validation_context": { "trusted_ca": { "filename": dir.join("ca.crt") } },
            },
        },
    })
}

/// `listener_filters` with the TLS inspector (Envoy 1.40 needs its
/// `typed_config`).
fn tls_inspector() -> serde_json::Value {
    json!([{
        "name": "envoy.filters.listener.tls_inspector",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        },
    }])
}

/// `vessel run` with one TLS listener `main` (the properties guest, routes
/// to a plain upstream), with the TLS inspector if `inspector`.
async fn tls_vessel(
    name: &str,
    tls: serde_json::Value,
    inspector: bool,
) -> crate::support::VesselProcess {
    let upstream = crate::support::upstream().await;
    let config = Bootstrap::new()
        .listener(
            Listener::new("main")
                .route(Route::prefix("/").to("backend"))
                .filter(
                    WasmFilter::new("props", guest("phase_properties"))
                        .configuration(TLS_PROPERTIES),
                ),
        )
        .cluster(Cluster::new("backend").endpoint(upstream));
    let mut v = config.to_value();
    v["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = tls;
    if inspector {
        v["static_resources"]["listeners"][0]["listener_filters"] = tls_inspector();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vessel-tls-{name}"));
    let mut vessel = crate::support::VesselProcess::start(
        Path::new(env!("CARGO_BIN_EXE_vessel")),
        &dir,
        &serde_json::to_string_pretty(&v).expect("json"),
        &["-l", "info", "--concurrency", "1"],
    );
    vessel.wait_ready().await;
    vessel
}

/// Runs curl on `https://<host>:<port>/` (resolved to the listener) and
/// returns its exit status and the response head (lower-case header names).
fn curl(addr: SocketAddr, host: &str, ca: &Path, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "--max-time", "10"])
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{}:{}", addr.port(), addr.ip()))
        .args(extra)
        .arg(format!("https://{host}:{}/", addr.port()))
        .output()
        .expect("run curl");
    // Header names in lower case (HTTP/1.1 keeps the server's case).
    let head: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| match l.split_once(": ") {
            Some((k, v)) => format!("{}: {v}\n", k.to_ascii_lowercase()),
            None => format!("{}\n", l.to_ascii_lowercase()),
        })
        .collect();
    (
        out.status.success(),
        head + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The value of header `name` in a response head from [`curl`].
fn head_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

/// Runs `openssl s_client` against the listener with `-servername sni` and
/// returns its output (the chain it was served, the verify result).
fn s_client(addr: SocketAddr, sni: &str, ca: &Path, client: Option<(&Path, &Path)>) -> String {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &addr.to_string(),
        "-servername",
        sni,
    ])
    .arg("-CAfile")
    .arg(ca)
    .stdin(std::process::Stdio::null());
    if let Some((cert, key)) = client {
        cmd.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let out = cmd.output().expect("run openssl");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http1_and_h2_sees_the_tls_properties() {
    if !tls_clients("curl_over_http1_and_h2_sees_the_tls_properties") {
        return;
    }
    let dir = TempDir::new("tls-curl");
    let ca = TestCa::new("vessel downstream CA");
    let ca_file = ca.write(dir.path(), "ca");
    ca.server("server-a", &["a.test", "localhost"])
        .write(dir.path(), "a");
    let me = ca.client("curl", "spiffe://vessel/curl", "curl.test");
    let (cert, key) = me.write(dir.path(), "client");
    let vessel = tls_vessel("curl", downstream_tls(dir.path(), &["a"], false), true).await;
    let addr = vessel.listener("main");

    for (flag, protocol) in [("--http1.1", "HTTP/1.1"), ("--http2", "HTTP/2")] {
        let (ok, head) = curl(addr, "a.test", &ca_file, &[flag]);
        assert!(ok, "{flag}: {head}");
        assert!(
            head.starts_with(if protocol == "HTTP/2" {
                "http/2 200"
            } else {
                "http/1.1 200"
            }),
            "{head}"
        );
        assert_eq!(
            head_value(&head, "x-req-request-protocol"),
            Some(protocol),
            "{head}"
        );
        assert_eq!(
            head_value(&head, "x-req-connection-tls_version"),
            Some("TLSv1.3"),
            "{head}"
        );
        assert_eq!(
            head_value(&head, "x-req-connection-mtls"),
            Some("false"),
            "{head}"
        );
        assert_eq!(
            head_value(&head, "x-req-connection-requested_server_name"),
            Some("a.test"),
            "{head}"
        );
        assert_eq!(
            head_value(&head, "x-req-connection-subject_local_certificate"),
            Some("CN=server-a,O=vessel tests"),
            "{head}"
        );
        assert_eq!(
            head_value(&head, "x-req-connection-dns_san_local_certificate"),
            Some("a.test")
        );
        // Envoy gives an empty subject without a client certificate; the SDK
        // reads an empty value as absent.
        assert_eq!(
            head_value(&head, "x-req-connection-subject_peer_certificate"),
            Some("<none>")
        );
        assert_eq!(
            head_value(&head, "x-req-connection-uri_san_peer_certificate"),
            Some("<none>")
        );
    }

    // With a client certificate: mTLS and the peer's fields.
    let (ok, head) = curl(
        addr,
        "a.test",
        &ca_file,
        &[
            "--http2",
            "--cert",
            &cert.to_string_lossy(),
            "--key",
            &key.to_string_lossy(),
        ],
    );
    assert!(ok, "{head}");
    assert_eq!(
        head_value(&head, "x-req-connection-mtls"),
        Some("true"),
        "{head}"
    );
    assert_eq!(
        head_value(&head, "x-req-connection-subject_peer_certificate"),
        Some("CN=curl,O=vessel tests")
    );
    assert_eq!(
        head_value(&head, "x-req-connection-uri_san_peer_certificate"),
        Some("spiffe://vessel/curl")
    );
    assert_eq!(
        head_value(&head, "x-req-connection-dns_san_peer_certificate"),
        Some("curl.test")
    );
    let digest: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&me.cert_der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert_eq!(
        head_value(&head, "x-req-connection-sha256_peer_certificate_digest"),
        Some(digest.as_str())
    );

    // Plain HTTP to the TLS listener gets no answer.
    let a = send(&client(), addr, "/", &[]).await;
    assert_eq!(a.status, 0, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_sni_picks_the_certificate_and_mtls_is_required() {
    if !tls_clients("openssl_sni_picks_the_certificate_and_mtls_is_required") {
        return;
    }
    let dir = TempDir::new("tls-sni");
    let ca = TestCa::new("vessel downstream CA");
    let ca_file = ca.write(dir.path(), "ca");
    ca.server("cert-a", &["a.test"]).write(dir.path(), "a");
    ca.server("cert-wild", &["*.b.test"]).write(dir.path(), "b");
    let (cert, key) = ca
        .client("openssl", "spiffe://vessel/openssl", "openssl.test")
        .write(dir.path(), "client");
    let vessel = tls_vessel("sni", downstream_tls(dir.path(), &["a", "b"], true), true).await;
    let addr = vessel.listener("main");

    for (sni, want, not) in [
        ("x.b.test", "cert-wild", "cert-a"),
        ("a.test", "cert-a", "cert-wild"),
        // A name no certificate has: the first certificate.
        ("c.test", "cert-a", "cert-wild"),
    ] {
        let out = s_client(addr, sni, &ca_file, Some((&cert, &key)));
        assert!(out.contains(want) && !out.contains(not), "{sni}: {out}");
    }
    let out = s_client(addr, "a.test", &ca_file, Some((&cert, &key)));
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");

    // Without a client certificate the server refuses: curl fails, with
    // one it gets its answer.
    let (ok, head) = curl(addr, "a.test", &ca_file, &[]);
    assert!(!ok, "no client certificate: {head}");
    let (ok, head) = curl(
        addr,
        "a.test",
        &ca_file,
        &[
            "--cert",
            &cert.to_string_lossy(),
            "--key",
            &key.to_string_lossy(),
        ],
    );
    assert!(ok, "{head}");
    assert_eq!(
        head_value(&head, "x-req-connection-mtls"),
        Some("true"),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_to_new_connections() {
    if !tls_clients("a_replaced_certificate_is_served_to_new_connections") {
        return;
    }
    let dir = TempDir::new("tls-reload");
    let ca = TestCa::new("vessel downstream CA");
    let ca_file = ca.write(dir.path(), "ca");
    ca.server("first-cert", &["a.test"]).write(dir.path(), "a");
    let vessel = tls_vessel("reload", downstream_tls(dir.path(), &["a"], false), false).await;
    let addr = vessel.listener("main");
    let out = s_client(addr, "a.test", &ca_file, None);
    assert!(out.contains("first-cert"), "{out}");

    let second = ca.server("second-cert", &["a.test"]);
    crate::support::replace_file(&dir.path().join("a.crt"), second.cert_pem.as_bytes());
    crate::support::replace_file(&dir.path().join("a.key"), second.key_pem.as_bytes());
    crate::support::eventually("the new certificate is served", || async {
        s_client(addr, "a.test", &ca_file, None).contains("second-cert")
    })
    .await;
    let (ok, head) = curl(addr, "a.test", &ca_file, &[]);
    assert!(ok, "{head}");
    assert_eq!(
        head_value(&head, "x-req-connection-subject_local_certificate"),
        Some("CN=second-cert,O=vessel tests")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sni_chooses_the_filter_chain_and_its_certificate() {
    if !tls_clients("the_sni_chooses_the_filter_chain_and_its_certificate") {
        return;
    }
    let dir = TempDir::new("tls-chains");
    let ca = TestCa::new("vessel downstream CA");
    let ca_file = ca.write(dir.path(), "ca");
    ca.server("chain-a", &["a.test"]).write(dir.path(), "a");
    ca.server("chain-b", &["b.test"]).write(dir.path(), "b");
    // Two listeners' chains merged into one listener, one per server name.
    let config = Bootstrap::new()
        .listener(Listener::new("main").route(Route::prefix("/").direct(200, Some("from A"))))
        .listener(Listener::new("other").route(Route::prefix("/").direct(200, Some("from B"))));
    let mut v = config.to_value();
    let listeners = v["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners");
    let mut b = listeners.pop().expect("listener other")["filter_chains"][0].clone();
    let a = &mut listeners[0]["filter_chains"][0];
    a["filter_chain_match"] = json!({ "server_names": ["a.test"] });
    a["transport_socket"] = downstream_tls(dir.path(), &["a"], false);
    b["filter_chain_match"] = json!({ "server_names": ["*.b.test", "b.test"] });
    b["transport_socket"] = downstream_tls(dir.path(), &["b"], false);
    listeners[0]["filter_chains"]
        .as_array_mut()
        .expect("chains")
        .push(b);
    let vessel_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vessel-tls-chains");
    let mut vessel = crate::support::VesselProcess::start(
        Path::new(env!("CARGO_BIN_EXE_vessel")),
        &vessel_dir,
        &serde_json::to_string_pretty(&v).expect("json"),
        &["-l", "info", "--concurrency", "1"],
    );
    vessel.wait_ready().await;
    let addr = vessel.listener("main");
    for (host, body, cert) in [
        ("a.test", "from A", "chain-a"),
        ("b.test", "from B", "chain-b"),
    ] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca_file)
            .arg("--resolve")
            .arg(format!("{host}:{}:{}", addr.port(), addr.ip()))
            .arg(format!("https://{host}:{}/", addr.port()))
            .output()
            .expect("run curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            body,
            "{host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let served = s_client(addr, host, &ca_file, None);
        assert!(served.contains(cert), "{host}: {served}");
    }
    // A name no chain matches: no chain, the connection is closed.
    let (ok, head) = curl(addr, "c.test", &ca_file, &[]);
    assert!(!ok, "{head}");
}

/// The same TLS listener (certificates, mTLS, the properties guest) on
/// Envoy and on `vessel run`: curl with a client certificate, over
/// HTTP/1.1 and HTTP/2, sees the same `connection.*` TLS properties from
/// both. Envoy comes from `VESSEL_ENVOY` (`cargo xtask test` sets it);
/// without it the test prints a skip, and fails under `CI=true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_and_vessel_report_the_same_tls_properties() {
    if !tls_clients("envoy_and_vessel_report_the_same_tls_properties") {
        return;
    }
    let Some(envoy) =
        vessel_testkit::envoy_from_env("envoy_and_vessel_report_the_same_tls_properties")
    else {
        return;
    };
    let dir = TempDir::new("tls-envoy");
    let ca = TestCa::new("vessel downstream CA");
    let ca_file = ca.write(dir.path(), "ca");
    ca.server("server-a", &["a.test", "localhost"])
        .write(dir.path(), "a");
    ca.server("server-b", &["*.b.test"]).write(dir.path(), "b");
    let (cert, key) = ca
        .client("peer", "spiffe://vessel/peer", "peer.test")
        .write(dir.path(), "client");
    for inspector in [false, true] {
        compare_with_envoy(&envoy, &dir, &ca_file, (&cert, &key), inspector).await;
    }
}

/// One run of [`envoy_and_vessel_report_the_same_tls_properties`], with or
/// without the TLS inspector (without it Envoy records no SNI).
async fn compare_with_envoy(
    envoy: &Path,
    dir: &TempDir,
    ca_file: &Path,
    (cert, key): (&Path, &Path),
    inspector: bool,
) {
    let tls = downstream_tls(dir.path(), &["a", "b"], true);
    let vessel = tls_vessel(&format!("envoy-diff-{inspector}"), tls.clone(), inspector).await;

    // The same bootstrap for Envoy.
    let upstream = crate::support::upstream().await;
    let config = Bootstrap::new()
        .listener(
            Listener::new("main")
                .route(Route::prefix("/").to("backend"))
                .filter(
                    WasmFilter::new("props", guest("phase_properties"))
                        .configuration(TLS_PROPERTIES),
                ),
        )
        .cluster(Cluster::new("backend").endpoint(upstream));
    let mut v = config.to_value();
    v["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = tls;
    if inspector {
        v["static_resources"]["listeners"][0]["listener_filters"] = tls_inspector();
    }
    let mut envoy = VesselProcess::start_envoy(
        envoy,
        &dir.path().join(format!("envoy-{inspector}")),
        &serde_json::to_string_pretty(&v).expect("json"),
        &["--concurrency", "1", "-l", "warning"],
    );
    envoy.wait_ready().await;
    let envoy_addr = envoy.listener("main");
    let vessel_addr = vessel.listener("main");

    let props = |head: &str| -> Vec<String> {
        let mut p: Vec<String> = head
            .lines()
            .filter(|l| l.starts_with("x-req-"))
            .map(str::to_owned)
            .collect();
        p.sort();
        p
    };
    let with_cert = [
        "--cert",
        &*cert.to_string_lossy(),
        "--key",
        &*key.to_string_lossy(),
    ]
    .map(str::to_owned);
    for (host, flag) in [
        ("a.test", "--http1.1"),
        ("x.b.test", "--http2"),
        ("a.test", "--http2"),
    ] {
        let mut args: Vec<&str> = with_cert.iter().map(String::as_str).collect();
        args.push(flag);
        let (ok_e, head_e) = curl(envoy_addr, host, ca_file, &args);
        let (ok_v, head_v) = curl(vessel_addr, host, ca_file, &args);
        assert!(
            ok_e && ok_v,
            "{host} {flag}:\nenvoy: {head_e}\nvessel: {head_v}"
        );
        let (pe, pv) = (props(&head_e), props(&head_v));
        assert_eq!(pe.len(), 10, "{host} {flag}: envoy: {head_e}");
        assert_eq!(
            pe, pv,
            "{host} {flag} (inspector {inspector}): Envoy (left) and vessel (right) differ"
        );
        let sni = format!("x-req-connection-requested_server_name: {host}");
        assert_eq!(pv.contains(&sni), inspector, "{pv:?}");
    }
}

/// A tcp_proxy listener `name` on port 0 to `cluster`, with `tls` as its
/// chain's transport socket.
fn tcp_listener(name: &str, cluster: &str, tls: Option<serde_json::Value>) -> serde_json::Value {
    let mut chain = json!({
        "filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": name,
                "cluster": cluster,
            },
        }],
    });
    if let Some(t) = tls {
        chain["transport_socket"] = t;
    }
    json!({
        "name": name,
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
        "filter_chains": [chain],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_terminates_and_originates_tls() {
    if !tls_clients("tcp_proxy_terminates_and_originates_tls") {
        return;
    }
    let s = setup("tls-tcp").await;
    let ca = TestCa::new("vessel downstream CA");
    let ca_file = ca.write(s.dir.path(), "down-ca");
    ca.server("tcp-a", &["a.test"]).write(s.dir.path(), "a");
    // `downstream_tls` names `ca.crt` for client certificates; the upstream
    // CA is fine there (no client certificate is required).
    let plain = crate::support::upstream().await;
    let mut v = Bootstrap::new()
        .cluster(Cluster::new("plain").endpoint(plain))
        .cluster(Cluster::new("secure").endpoint(s.upstream).field(
            "transport_socket",
            upstream_tls(s.dir.path(), "upstream.test", "ca.crt"),
        ))
        .to_value();
    v["static_resources"]["listeners"] = json!([
        tcp_listener("wrap", "secure", None),
        tcp_listener(
            "term",
            "plain",
            Some(downstream_tls(s.dir.path(), &["a"], false))
        ),
    ]);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vessel-tls-tcp");
    let mut vessel = crate::support::VesselProcess::start(
        Path::new(env!("CARGO_BIN_EXE_vessel")),
        &dir,
        &serde_json::to_string_pretty(&v).expect("json"),
        &["-l", "info", "--concurrency", "1"],
    );
    vessel.wait_ready().await;

    // Plain bytes in, TLS (with the client certificate) to the upstream.
    let wrap = vessel.listener("wrap");
    let mut tcp = tokio::net::TcpStream::connect(wrap).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(crate::support::WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("x-seen-client: yes"), "{answer}");
    assert!(answer.contains("x-seen-sni: upstream.test"), "{answer}");

    // TLS in (terminated), plain bytes to the upstream.
    let term = vessel.listener("term");
    let (ok, head) = curl(term, "a.test", &ca_file, &["--http1.1"]);
    assert!(ok, "{head}");
    assert!(head.starts_with("http/1.1 200"), "{head}");
}
