//! Data a plugin must never see (`PluginConfig::hidden`), with real
//! Rust-SDK guests (`spec-tests/guests`, built by `cargo xtask guests`) in a
//! chain driven by [`HttpStream`]: the hiding plugin's logs never hold a
//! hidden value, its writes to hidden headers change nothing, the values
//! reach the upstream and the client, and a later plugin of the chain that
//! may see them does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, OnceLock};

use crate::guest;
use vessel_host::{
    Action, ContextId, Effect, FailurePolicy, FilterVms, HeaderMap, Hidden, HostEnv, HttpStream,
    LogRecord, LogSink, Plugin, PluginConfig, PropertyMap, StreamConfig, Vm,
};

/// Guest log lines, as `<plugin>: <text>`.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl LogSink for Lines {
    fn log(&self, record: &LogRecord<'_>) {
        self.0.lock().unwrap().push(format!(
            "{}: {}",
            record.plugin,
            String::from_utf8_lossy(record.message)
        ));
    }
}

impl Lines {
    fn of(&self, plugin: &str) -> Vec<String> {
        let prefix = format!("{plugin}: ");
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

/// Host log lines of target `vessel::hidden` (the `log` facade is
/// process-wide: every test of the binary shares this logger, so each test
/// reads only the lines naming its own plugins).
struct HostLog(Mutex<Vec<String>>);

impl log::Log for HostLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == "vessel::hidden"
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}

fn host_log() -> &'static HostLog {
    static LOG: OnceLock<&'static HostLog> = OnceLock::new();
    LOG.get_or_init(|| {
        let log: &'static HostLog = Box::leak(Box::new(HostLog(Mutex::new(Vec::new()))));
        log::set_logger(log).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Warn);
        log
    })
}

fn host_lines_naming(plugin: &str) -> Vec<String> {
    let needle = format!("plugin `{plugin}`");
    host_log()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(&needle))
        .cloned()
        .collect()
}

struct Chain {
    vms: Vec<Vm>,
}

impl FilterVms for Chain {
    fn with_vm<R>(&mut self, i: usize, f: impl FnOnce(&mut Vm) -> R) -> R {
        let r = f(&mut self.vms[i]);
        let _: Vec<Effect> = self.vms[i].drain_effects().collect();
        r
    }

    fn policy(&self, _: usize) -> FailurePolicy {
        FailurePolicy::FailClosed
    }

    fn context_finished(&mut self, _: usize, _: ContextId, _: bool) {}
}

fn chain(plugins: Vec<(&str, PluginConfig)>) -> (Chain, Lines) {
    // The host logger must be in place before any VM logs, whichever test
    // of this binary runs first (or alone).
    host_log();
    let lines = Lines::default();
    let env = HostEnv::builder().log_sink(lines.clone()).build();
    let engine = vessel_host::Engine::new(vessel_host::EngineConfig::default()).expect("engine");
    let vms = plugins
        .into_iter()
        .map(|(g, cfg)| {
            let plugin = Plugin::load(&engine, &guest(g), cfg).expect("loads");
            Vm::new(&plugin, &env).expect("starts")
        })
        .collect();
    (Chain { vms }, lines)
}

fn config(name: &str, configuration: &str, hidden: Hidden) -> PluginConfig {
    PluginConfig {
        configuration: configuration.as_bytes().to_vec(),
        log_level: vessel_host::LogLevel::Trace,
        hidden,
        ..PluginConfig::named(name)
    }
}

fn hidden(request: &[&str], response: &[&str], properties: &[&str]) -> Hidden {
    let mut h = Hidden::new();
    for n in request {
        h.hide_request_header(n).unwrap();
    }
    for n in response {
        h.hide_response_header(n).unwrap();
    }
    for p in properties {
        h.hide_property(p).unwrap();
    }
    h
}

fn actions(s: &mut HttpStream) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn upstream_headers(s: &mut HttpStream) -> HeaderMap {
    match actions(s).as_slice() {
        [Action::UpstreamHeaders { headers, .. }] => headers.clone(),
        other => panic!("{other:?}"),
    }
}

fn downstream_headers(s: &mut HttpStream) -> HeaderMap {
    match actions(s).as_slice() {
        [Action::DownstreamHeaders { headers, .. }] => headers.clone(),
        other => panic!("{other:?}"),
    }
}

const SECRETS: [&str; 6] = [
    "Bearer s3cr3t",
    "session=abc123",
    "original-value",
    "keep-me",
    "dropped-not",
    "id=topsecret",
];

fn request() -> HeaderMap {
    HeaderMap::from_pairs([
        (":method", "GET"),
        (":path", "/hidden"),
        (":authority", "example.com"),
        (":scheme", "http"),
        ("authorization", "Bearer s3cr3t"),
        ("Cookie", "session=abc123"),
        ("x-replace", "original-value"),
        ("x-remove", "keep-me"),
        ("x-drop", "dropped-not"),
        ("x-visible", "plain"),
        ("x-op", "add,replace,remove,set-pairs"),
    ])
}

#[test]
fn a_hidden_header_does_not_exist_for_its_plugin_and_reaches_the_next_one_and_the_upstream() {
    let hide = hidden(
        &[
            "authorization",
            "cookie",
            "x-replace",
            "x-remove",
            "x-drop",
            "x-set-pairs",
            "x-added",
        ],
        &["set-cookie"],
        &[],
    );
    let (mut vms, lines) = chain(vec![
        ("headers", config("hide-f0", "", hide)),
        (
            "chain_probe",
            config(
                "hide-f1",
                "tag=two show=authorization,cookie,x-replace,x-remove,x-drop",
                Hidden::new(),
            ),
        ),
    ]);
    let before = host_lines_naming("hide-f0").len();
    let mut s = HttpStream::new(StreamConfig::new(2));
    s.request_headers(&mut vms, request(), true);
    let up = upstream_headers(&mut s);

    // The upstream gets every hidden header unchanged, and nothing the
    // hiding plugin tried to add under a hidden name.
    assert_eq!(up.get_str("authorization"), Some("Bearer s3cr3t"));
    assert_eq!(up.get_str("cookie"), Some("session=abc123"));
    assert_eq!(up.get_str("x-replace"), Some("original-value"));
    assert_eq!(up.get_str("x-remove"), Some("keep-me"));
    assert_eq!(up.get_str("x-drop"), Some("dropped-not"));
    assert_eq!(up.get_str("x-set-pairs"), None);
    assert_eq!(up.get_str("x-added"), None);
    assert_eq!(up.get_str("x-visible"), Some("plain"));

    s.response_headers(
        &mut vms,
        HeaderMap::from_pairs([
            (":status", "200"),
            ("set-cookie", "id=topsecret"),
            ("content-length", "0"),
        ]),
        true,
    );
    let down = downstream_headers(&mut s);
    assert_eq!(down.get_str("set-cookie"), Some("id=topsecret"));
    s.finish(&mut vms);

    let f0 = lines.of("hide-f0");
    assert!(
        f0.iter().any(|l| l == "request-header x-visible=plain"),
        "{f0:#?}"
    );
    for secret in SECRETS {
        assert!(
            !f0.iter().any(|l| l.contains(secret)),
            "hide-f0 logged `{secret}`: {f0:#?}"
        );
    }
    for line in [
        "request cookie first=None",
        "request after add x-added=None",
        "request after replace x-replace=None",
        "request after remove x-remove=None",
        "request after set-pairs x-set-pairs=None",
        "set-cookie count=0",
        "set-cookie first=None",
    ] {
        assert!(f0.iter().any(|l| l == line), "no `{line}` in {f0:#?}");
    }
    // The size counts only what the plugin sees: the first line is before
    // any op, of a map whose visible entries are these.
    let visible: usize = [
        (":method", "GET"),
        (":path", "/hidden"),
        (":authority", "example.com"),
        (":scheme", "http"),
        ("x-visible", "plain"),
        ("x-op", "add,replace,remove,set-pairs"),
    ]
    .iter()
    .map(|(k, v)| k.len() + v.len())
    .sum();
    let size_line = format!("request-header-map-size status=0 size={visible}");
    assert!(f0.contains(&size_line), "no `{size_line}` in {f0:#?}");

    // The next plugin sees what the first one may not.
    let f1 = lines.of("hide-f1");
    for line in [
        "chain_probe two: request header authorization=Some(\"Bearer s3cr3t\")",
        "chain_probe two: request header cookie=Some(\"session=abc123\")",
        "chain_probe two: request header x-replace=Some(\"original-value\")",
        "chain_probe two: request header x-remove=Some(\"keep-me\")",
        "chain_probe two: request header x-drop=Some(\"dropped-not\")",
    ] {
        assert!(f1.iter().any(|l| l == line), "no `{line}` in {f1:#?}");
    }

    // add, replace, remove and set-pairs were each refused; one host line
    // for the stream, naming the plugin and the header, not a value.
    assert_eq!(vms.vms[0].hidden_writes(), 4);
    assert_eq!(vms.vms[1].hidden_writes(), 0);
    let logged = host_lines_naming("hide-f0");
    assert_eq!(logged.len() - before, 1, "{logged:#?}");
    let line = logged.last().unwrap();
    assert!(
        line.starts_with("WARN ") && line.contains("request header `x-added`"),
        "{line}"
    );
    for secret in SECRETS {
        assert!(!line.contains(secret), "{line}");
    }

    // A second stream logs once more.
    let mut s = HttpStream::new(StreamConfig::new(2));
    s.request_headers(&mut vms, request(), true);
    let up = upstream_headers(&mut s);
    assert_eq!(up.get_str("x-replace"), Some("original-value"));
    s.finish(&mut vms);
    assert_eq!(vms.vms[0].hidden_writes(), 8);
    assert_eq!(host_lines_naming("hide-f0").len() - before, 2);
}

#[test]
fn without_hiding_the_same_chain_sees_and_changes_everything() {
    // The control of the test above: the same guests and request with
    // nothing hidden log the values and change the headers.
    let (mut vms, lines) = chain(vec![("headers", config("plain-f0", "", Hidden::new()))]);
    let mut s = HttpStream::new(StreamConfig::new(1));
    s.request_headers(&mut vms, request(), true);
    let up = upstream_headers(&mut s);
    assert_eq!(up.get_str("x-replace"), Some("replaced"));
    assert_eq!(up.get_str("x-remove"), None);
    s.finish(&mut vms);
    let f0 = lines.of("plain-f0");
    assert!(
        f0.iter()
            .any(|l| l == "request-header authorization=Bearer s3cr3t"),
        "{f0:#?}"
    );
    assert!(
        f0.iter()
            .any(|l| l == "request cookie first=Some(\"session=abc123\")")
    );
    assert_eq!(vms.vms[0].hidden_writes(), 0);
    assert!(host_lines_naming("plain-f0").is_empty());
}

fn properties_stream(hide: Hidden, name: &str) -> (Chain, Lines, HeaderMap) {
    let (mut vms, lines) = chain(vec![("properties", config(name, "", hide))]);
    let mut props = PropertyMap::new();
    props.insert_dotted("source.address", "10.9.8.7:4321");
    let mut cfg = StreamConfig::new(1);
    cfg.properties = props;
    let mut s = HttpStream::new(cfg);
    let req = HeaderMap::from_pairs([
        (":method", "GET"),
        (":path", "/p"),
        (":authority", "example.com"),
        ("x-prop", "prop-secret"),
        ("x-set-prop", "planted"),
    ]);
    s.request_headers(&mut vms, req, true);
    let _ = upstream_headers(&mut s);
    s.response_headers(
        &mut vms,
        HeaderMap::from_pairs([(":status", "200"), ("content-length", "0")]),
        true,
    );
    let down = downstream_headers(&mut s);
    s.finish(&mut vms);
    (vms, lines, down)
}

#[test]
fn hidden_properties_and_header_attributes_are_not_found_and_not_written() {
    let hide = hidden(&["x-prop"], &[], &["source.address", "guest_property"]);
    let (vms, lines, down) = properties_stream(hide, "hide-props");
    assert_eq!(down.get_str("x-prop-source-address"), Some("<none>"));
    assert_eq!(down.get_str("x-prop-request-header"), Some("<none>"));
    // set_property got OK (the guest did not trap) and stored nothing.
    assert_eq!(down.get_str("x-prop-roundtrip"), Some("<none>"));
    // Paths that are not hidden still resolve.
    assert_eq!(down.get_str("x-prop-request-path"), Some("/p"));
    let logs = lines.of("hide-props");
    for secret in ["10.9.8.7", "prop-secret"] {
        assert!(!logs.iter().any(|l| l.contains(secret)), "{logs:#?}");
    }
    assert_eq!(vms.vms[0].hidden_writes(), 1);
    let logged = host_lines_naming("hide-props");
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert!(
        logged[0].contains("property `guest_property`"),
        "{logged:?}"
    );

    // The control: nothing hidden, everything seen.
    let (_, _, down) = properties_stream(Hidden::new(), "plain-props");
    assert_eq!(down.get_str("x-prop-source-address"), Some("10.9.8.7:4321"));
    assert_eq!(down.get_str("x-prop-request-header"), Some("prop-secret"));
    assert_eq!(down.get_str("x-prop-roundtrip"), Some("planted"));
}

#[test]
fn a_prefix_hides_every_property_under_it() {
    let hide = hidden(&[], &[], &["source.*"]);
    let (_, _, down) = properties_stream(hide, "hide-prefix");
    assert_eq!(down.get_str("x-prop-source-address"), Some("<none>"));
    assert_eq!(down.get_str("x-prop-request-header"), Some("prop-secret"));
}
