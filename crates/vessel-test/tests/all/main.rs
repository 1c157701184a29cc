//! vessel-test's integration tests, one binary (`tests/all`): what a filter
//! author's `cargo test` does with the crate, over real SDK guests built by
//! `cargo xtask guests` (a missing guest fails the test and says so).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use vessel_host::{Engine, EngineConfig, RedisCallOutcome, RedisCallRequest};
use vessel_test::{Error, Loaded, NoServices, Scenario, Services};

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec-tests/scenarios")
}

fn engine() -> Engine {
    Engine::new(EngineConfig::default()).expect("the default engine builds")
}

#[test]
fn tcp_scenarios_run_in_process_and_pass() {
    let files: Vec<PathBuf> = [
        "tcp_rewrite.yaml",
        "tcp_count.yaml",
        "tcp_close_on_pattern.yaml",
        "tcp_pause.yaml",
        "tcp_pause_check.yaml",
        "tcp_pause_check_denied.yaml",
        "tcp_chain.yaml",
        "tcp_fail_open.yaml",
        "tcp_fail_closed.yaml",
    ]
    .iter()
    .map(|f| scenarios().join(f))
    .collect();
    let report = vessel_test::run_files(&files).expect("the TCP scenarios load");
    assert!(report.passed(), "{}", report.render());
    assert!(report.results.len() >= files.len(), "{}", report.render());
}

#[test]
fn chains_of_filters_run_in_process_and_pass() {
    let files: Vec<PathBuf> = [
        "chain_local_reply.yaml",
        "chain_filter_state.yaml",
        "chain_paused_first.yaml",
        "chain_fail_closed.yaml",
        "chain_fail_open.yaml",
        "chain_fail_reload.yaml",
        "chain_stop_iteration_headers.yaml",
        "chain_stop_all_headers.yaml",
    ]
    .iter()
    .map(|f| scenarios().join(f))
    .collect();
    let report = vessel_test::run_files(&files).expect("the chain scenarios load");
    assert!(report.passed(), "{}", report.render());
    assert!(report.results.len() >= files.len(), "{}", report.render());
}

#[test]
fn a_failed_expectation_is_reported_with_the_difference() {
    let text = std::fs::read_to_string(scenarios().join("headers.yaml")).expect("headers.yaml");
    let mut scenario = Scenario::from_yaml(&text).expect("parses");
    let expect = &mut scenario.streams[0].expect;
    let response = expect.response.get_or_insert_with(Default::default);
    response.status = Some(599);
    let mut loaded = Loaded::new(
        &engine(),
        &scenarios().join("headers.yaml"),
        scenario.clone(),
    )
    .expect("loads");
    let observations = loaded.run();
    let failures = vessel_test::check(&scenario.streams[0].expect, &observations[0]);
    assert!(
        failures
            .iter()
            .any(|f| f.contains("response.status: expected 599")),
        "{failures:?}"
    );
}

#[test]
fn a_tcp_receive_step_that_gets_other_bytes_fails_naming_the_step() {
    let path = scenarios().join("tcp_rewrite.yaml");
    let text = std::fs::read_to_string(&path).expect("tcp_rewrite.yaml");
    let mut scenario = Scenario::from_yaml(&text).expect("parses");
    scenario.connections[0].steps[1] =
        vessel_test::scenario::Step::UpstreamReceive("hello world\n".into());
    let mut loaded = Loaded::new(&engine(), &path, scenario.clone()).expect("loads");
    let observations = loaded.run();
    let failures = vessel_test::check_connection(&scenario.connections[0].expect, &observations[0]);
    assert!(
        failures
            .iter()
            .any(|f| f.starts_with("step 2 (upstream_receive)") && f.contains("HELLO-THERE world")),
        "{failures:?}"
    );
}

#[test]
fn the_tcp_form_is_checked_when_it_loads() {
    let two_keys = "plugin: { wasm: x.wasm }\nconnections:\n  - steps:\n      - client_send: a\n        client_close: {}\n";
    assert!(Scenario::from_yaml(two_keys).is_err(), "a step has one key");
    let unknown = "plugin: { wasm: x.wasm }\nconnections:\n  - steps:\n      - client_shout: a\n";
    assert!(Scenario::from_yaml(unknown).is_err(), "unknown step");
    let path = scenarios().join("tcp_rewrite.yaml");
    let text = std::fs::read_to_string(&path).expect("tcp_rewrite.yaml");
    let mut both = Scenario::from_yaml(&text).expect("parses");
    let http = std::fs::read_to_string(scenarios().join("headers.yaml")).expect("headers.yaml");
    both.streams = Scenario::from_yaml(&http).expect("parses").streams;
    match Loaded::new(&engine(), &path, both) {
        Err(Error::Invalid { key, .. }) => assert_eq!(key, "connections"),
        Err(e) => panic!("expected the form error, got {e}"),
        Ok(_) => panic!("a file with streams and connections loaded"),
    }
    let mut slow = Scenario::from_yaml(&text).expect("parses");
    slow.connections[0]
        .steps
        .insert(1, vessel_test::scenario::Step::SleepMs(1_001));
    match Loaded::new(&engine(), &path, slow) {
        Err(Error::Invalid { key, message, .. }) => {
            assert_eq!(key, "connections[0].steps[1].sleep_ms");
            assert!(message.contains("at most 1000"), "{message}");
        }
        Err(e) => panic!("expected the sleep_ms error, got {e}"),
        Ok(_) => panic!("a 1,001 ms sleep_ms step loaded"),
    }
}

/// Counts what the runner asks of it; answers every Redis call as failed.
#[derive(Default)]
struct Recording {
    calls: AtomicUsize,
    flushes: AtomicUsize,
}

impl Services for Recording {
    fn redis_call(&self, _: SocketAddr, _: &RedisCallRequest) -> RedisCallOutcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        RedisCallOutcome::Failed
    }

    fn redis_flush(&self, _: SocketAddr) -> Result<(), String> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

const REDIS_SCENARIO: &str = r#"
plugin:
  wasm: ../guests/target/wasm32-wasip1/release/guest_sdk_header_rewrite.wasm
clusters:
  cache:
    redis: 127.0.0.1:1
    redis_flush: true
streams:
  - request:
      headers: [[":method", "GET"], [":path", "/"]]
"#;

#[test]
fn a_redis_cluster_opens_nothing_without_services_and_goes_to_the_given_ones() {
    let scenario = Scenario::from_yaml(REDIS_SCENARIO).expect("parses");
    let path = scenarios().join("inline.yaml");
    let refused = Loaded::new_with(&engine(), &path, scenario.clone(), Arc::new(NoServices));
    match refused {
        Err(Error::Invalid { key, message, .. }) => {
            assert_eq!(key, "clusters.cache.redis");
            assert!(message.contains("opens no connection"), "{message}");
        }
        Err(other) => panic!("another error: {other}"),
        Ok(_) => panic!("a Redis cluster loaded without services"),
    }
    let services = Arc::new(Recording::default());
    let mut loaded = Loaded::new_with(&engine(), &path, scenario, services.clone())
        .expect("loads with services");
    assert_eq!(services.flushes.load(Ordering::SeqCst), 1, "redis_flush");
    let observations = loaded.run();
    assert_eq!(observations.len(), 1);
    assert!(
        observations[0].errors.is_empty(),
        "{:?}",
        observations[0].errors
    );
}

#[test]
fn upstream_chunks_are_separate_body_callbacks_and_clusters_refuse_them() {
    let yaml = r#"
plugin:
  wasm: ../guests/target/wasm32-wasip1/release/guest_bodies.wasm
streams:
  - request:
      headers: [[":method", "GET"], [":path", "/"]]
    upstream:
      headers: [[":status", "200"]]
      chunks: ["ab", "cde"]
    expect:
      response:
        body: "abcde"
      logs_include: ["response-body chunk size=2 eos=false", "response-body chunk size=3 eos=false"]
      logs_exclude: ["response-body chunk size=5"]
"#;
    let path = scenarios().join("inline.yaml");
    let scenario = Scenario::from_yaml(yaml).expect("parses");
    let mut loaded = Loaded::new(&engine(), &path, scenario.clone()).expect("loads");
    let observations = loaded.run();
    let failures = vessel_test::check(&scenario.streams[0].expect, &observations[0]);
    assert!(failures.is_empty(), "{failures:?}");

    let with_cluster = format!("{yaml}clusters:\n  c:\n    chunks: [\"x\"]\n");
    let scenario = Scenario::from_yaml(&with_cluster).expect("parses");
    match Loaded::new(&engine(), &path, scenario) {
        Err(Error::Invalid { key, .. }) => assert_eq!(key, "clusters.c.chunks"),
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a cluster with chunks loaded"),
    }
}

/// The `tls` scenarios run in-process with the `connection.*` properties of
/// their handshake, and pass.
#[test]
fn tls_scenarios_run_in_process_and_pass() {
    let files: Vec<PathBuf> = [
        "tls_http1.yaml",
        "tls_h2_mtls.yaml",
        "tls_mtls_no_inspector.yaml",
        "tls_h2_no_sni.yaml",
    ]
    .iter()
    .map(|f| scenarios().join(f))
    .collect();
    let report = vessel_test::run_files(&files).expect("the TLS scenarios load");
    assert!(report.passed(), "{}", report.render());
    assert!(report.results.len() >= files.len(), "{}", report.render());
}

/// A bad `tls` is refused when the file loads, naming the key: an `alpn`
/// that is no protocol and an unknown key by the reader, a `sni` that is
/// no DNS name, `http/1.1` with trailers, and a `properties` entry the
/// handshake gives, by the loader.
#[test]
fn a_bad_tls_key_is_refused_with_its_key() {
    let head =
        "plugin: { wasm: ../guests/target/wasm32-wasip1/release/guest_phase_properties.wasm }\n";
    let stream =
        "streams:\n  - request: { headers: [[\":method\", \"GET\"], [\":path\", \"/\"]] }\n";
    for (tls, want) in [
        ("tls: { alpn: h3 }\n", "tls.alpn"),
        ("tls: { sni: a.test, client_cert: true }\n", "client_cert"),
    ] {
        match Scenario::from_yaml(&format!("{head}{tls}{stream}")) {
            Err(e) => assert!(e.to_string().contains(want), "{tls}: {e}"),
            Ok(s) => panic!("{tls} parsed: {s:?}"),
        }
    }
    let path = scenarios().join("inline.yaml");
    let trailers = "streams:\n  - request: { headers: [[\":method\", \"POST\"]], body: b, trailers: [[\"t\", \"1\"]] }\n";
    for (text, key) in [
        (format!("{head}tls: {{ sni: \"\" }}\n{stream}"), "tls.sni"),
        (
            format!("{head}tls: {{ sni: \"a_b.test\" }}\n{stream}"),
            "tls.sni",
        ),
        (
            format!("{head}tls: {{ sni: \"-a.test\" }}\n{stream}"),
            "tls.sni",
        ),
        (
            format!("{head}tls: {{ sni: \"10.0.0.1\" }}\n{stream}"),
            "tls.sni",
        ),
        (
            format!("{head}tls: {{ alpn: http/1.1 }}\n{trailers}"),
            "tls.alpn",
        ),
        (
            format!("{head}tls: {{}}\nproperties: {{ connection.mtls: true }}\n{stream}"),
            "properties.connection.mtls",
        ),
    ] {
        let scenario = Scenario::from_yaml(&text).expect("parses");
        match Loaded::new(&engine(), &path, scenario) {
            Err(Error::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
            Err(e) => panic!("{text}: another error: {e}"),
            Ok(_) => panic!("{text}: loaded"),
        }
    }
    // Valid: no SNI, an SNI with digits and inner dashes, `h2` with trailers.
    for text in [
        format!("{head}tls: {{}}\n{stream}"),
        format!("{head}tls: {{ sni: x-1.b2.test, inspector: true }}\n{stream}"),
        format!("{head}tls: {{ alpn: h2 }}\n{trailers}"),
    ] {
        let scenario = Scenario::from_yaml(&text).expect("parses");
        if let Err(e) = Loaded::new(&engine(), &path, scenario) {
            panic!("{text}: {e}");
        }
    }
}

/// The in-process properties of a handshake: the SNI only with the
/// inspector, the peer's fields only with a client certificate, and no
/// digest (it is of a certificate made at run time).
#[test]
fn tls_gives_the_properties_of_its_handshake() {
    use vessel_test::scenario::{PropertyScalar as P, TlsSpec};
    let get = |t: &TlsSpec, k: &str| {
        t.properties()
            .into_iter()
            .find(|(p, _)| *p == k)
            .map(|(_, v)| v)
    };
    let mut t = TlsSpec {
        sni: Some("A.Test".into()),
        ..TlsSpec::default()
    };
    assert_eq!(
        get(&t, "connection.requested_server_name"),
        Some(P::Str(String::new()))
    );
    assert_eq!(get(&t, "connection.mtls"), Some(P::Bool(false)));
    assert_eq!(get(&t, "connection.uri_san_peer_certificate"), None);
    assert_eq!(
        get(&t, "connection.dns_san_local_certificate"),
        Some(P::Str("a.test".into()))
    );
    t.inspector = true;
    t.client_certificate = true;
    assert_eq!(
        get(&t, "connection.requested_server_name"),
        Some(P::Str("a.test".into()))
    );
    assert_eq!(get(&t, "connection.mtls"), Some(P::Bool(true)));
    assert_eq!(
        get(&t, "connection.subject_peer_certificate"),
        Some(P::Str("CN=vessel scenario client,O=vessel tests".into()))
    );
    assert_eq!(get(&t, "connection.sha256_peer_certificate_digest"), None);
}
