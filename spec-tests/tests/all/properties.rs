//! Properties (ABI reference §4.6, §5.2, §10): built-ins, stream
//! properties, `request.*`/`response.*` derived from the header maps,
//! plugin and provider properties, missing → NOT_FOUND, and
//! `proxy_set_property` round trips.

use vessel_host::{
    HostEnv, MapType, PluginConfig, PropertyMap, PropertyProvider, PropertyScope, PropertyValue,
    Status,
};
use vessel_spec_tests::probe::{Blob, Callback, Probe, ProbeResults, RET_PTR, RET_SIZE, c};
use vessel_spec_tests::{Harness, Source, config, headers, value};

fn full_config() -> PluginConfig {
    PluginConfig {
        root_id: "my_root".into(),
        vm_id: "my_vm".into(),
        vm_configuration: b"vmcfg".to_vec(),
        configuration: b"plugcfg".to_vec(),
        ..config("props")
    }
}

#[test]
fn guest_reads_builtins_stream_and_derived_properties() {
    let mut h = Harness::load(Source::Guest("properties"), full_config()).expect("starts");
    for line in [
        "properties: vm_configuration_size=5 vm_configuration=vmcfg",
        "properties: plugin_configuration_size=7 plugin_configuration=plugcfg",
        "properties: root plugin_name=props",
        "properties: root plugin_root_id=my_root",
        "properties: root plugin_vm_id=my_vm",
    ] {
        assert!(
            h.logs.contains(line),
            "missing `{line}` in {:#?}",
            h.logs.lines()
        );
    }
    let mut stream = PropertyMap::new();
    stream.insert_dotted("source.address", "10.0.0.1:1234");
    stream.insert_dotted("source.port", 1234i64);
    let ctx = h.vm.create_http_context_with(stream).expect("context");
    let req = headers(&[
        (":method", "POST"),
        (":path", "/a/b?c=d"),
        (":authority", "example.com"),
        ("x-prop", "pv"),
        ("x-set-prop", "hello"),
    ]);
    h.vm.on_request_headers(ctx, req, false).expect("request");
    h.vm.on_response_headers(ctx, headers(&[(":status", "200")]), true)
        .expect("response");
    let resp =
        h.vm.headers(ctx, MapType::HttpResponseHeaders)
            .expect("kept");
    for (header, expected) in [
        ("x-prop-plugin-name", "props"),
        ("x-prop-plugin-root-id", "my_root"),
        ("x-prop-plugin-vm-id", "my_vm"),
        ("x-prop-source-address", "10.0.0.1:1234"),
        ("x-prop-source-port", "1234"),
        ("x-prop-request-path", "/a/b?c=d"),
        ("x-prop-request-method", "POST"),
        ("x-prop-request-header", "pv"),
        ("x-prop-missing", "<none>"),
        ("x-prop-missing-status", "1"),
        ("x-prop-roundtrip", "hello"),
    ] {
        assert_eq!(value(resp, header).as_deref(), Some(expected), "{header}");
    }
}

/// Adds a `get_property(path)` check reporting `<label>` and `<label>.value`.
fn get(p: &mut Probe, cb: Callback, label: &str, path: &[&str]) {
    let path: Blob = p.bytes(path.join("\0").as_bytes());
    p.on(cb)
        .raw(format!("(i32.store {} (i32.const 0))", c(RET_SIZE)))
        .status(
            label,
            format!(
                "(call $proxy_get_property {path} {} {})",
                c(RET_PTR),
                c(RET_SIZE)
            ),
        )
        .returned(&format!("{label}.value"));
}

struct Provider;

impl PropertyProvider for Provider {
    fn get_property(
        &self,
        path: &[&[u8]],
        scope: PropertyScope<'_>,
    ) -> Result<Option<Vec<u8>>, Status> {
        match path {
            [b"node", b"id"] => Ok(Some(b"provider-node".to_vec())),
            [b"xds", b"root_only"] if scope.is_root => Ok(Some(b"root".to_vec())),
            [b"broken"] => Err(Status::SerializationFailure),
            _ => Ok(None),
        }
    }
}

#[test]
fn probe_reads_every_property_source() {
    let mut p = Probe::new();
    let root = Callback::Configure;
    get(
        &mut p,
        root,
        "root.vm_configuration",
        &["plugin_vm_configuration"],
    );
    get(&mut p, root, "root.plugin_name", &["plugin_name"]);
    get(&mut p, root, "root.node", &["node", "id"]);
    get(&mut p, root, "root.cluster", &["xds", "cluster_name"]);
    get(&mut p, root, "root.root_only", &["xds", "root_only"]);
    get(&mut p, root, "root.request_path", &["request", "path"]);
    get(&mut p, root, "root.broken", &["broken"]);
    let set_path = p.bytes(b"my\0prop");
    let set_val = p.bytes(b"set-value");
    p.on(root).status(
        "root.set_property",
        format!("(call $proxy_set_property {set_path} {set_val})"),
    );
    let req = Callback::RequestHeaders;
    get(&mut p, req, "req.url_path", &["request", "url_path"]);
    get(&mut p, req, "req.query", &["request", "query"]);
    get(&mut p, req, "req.host", &["request", "host"]);
    get(&mut p, req, "req.scheme", &["request", "scheme"]);
    get(&mut p, req, "req.useragent", &["request", "useragent"]);
    get(&mut p, req, "req.id", &["request", "id"]);
    get(&mut p, req, "req.headers", &["request", "headers"]);
    get(
        &mut p,
        req,
        "req.header.multi",
        &["request", "headers", "x-multi"],
    );
    get(
        &mut p,
        req,
        "req.header.absent",
        &["request", "headers", "x-absent"],
    );
    get(&mut p, req, "req.stream_prop", &["connection", "id"]);
    get(&mut p, req, "req.node", &["node", "id"]);
    get(&mut p, req, "req.cluster", &["xds", "cluster_name"]);
    get(&mut p, req, "req.root_only", &["xds", "root_only"]);
    get(&mut p, req, "req.trailing_nul", &["plugin_name", ""]);
    get(&mut p, req, "req.response_code", &["response", "code"]);
    p.on(req)
        .status(
            "req.set_property",
            format!("(call $proxy_set_property {set_path} {set_val})"),
        )
        .status(
            "req.set_property.empty",
            "(call $proxy_set_property (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))",
        );
    get(&mut p, req, "req.get_set", &["my", "prop"]);
    get(&mut p, req, "req.get_empty_path", &[""]);
    let resp = Callback::ResponseHeaders;
    get(&mut p, resp, "resp.code", &["response", "code"]);
    get(
        &mut p,
        resp,
        "resp.header",
        &["response", "headers", "x-up"],
    );
    get(&mut p, resp, "resp.get_set", &["my", "prop"]);

    let mut cfg = config("probe-props");
    cfg.vm_configuration = b"VM".to_vec();
    cfg.properties
        .insert_dotted("xds.cluster_name", "plugin-cluster");
    let plugin = p.load(cfg).expect("loads");
    let mut h =
        Harness::new(&plugin, HostEnv::builder().property_provider(Provider)).expect("starts");
    let mut stream = PropertyMap::new();
    stream.insert_dotted("connection.id", PropertyValue::Uint(42));
    let ctx = h.vm.create_http_context_with(stream).expect("context");
    let req_headers = headers(&[
        (":method", "GET"),
        (":path", "/p/q?x=1&y=2"),
        (":authority", "host.example"),
        (":scheme", "https"),
        ("user-agent", "ua/1"),
        ("x-request-id", "rid"),
        ("x-multi", "1"),
        ("x-multi", "2"),
    ]);
    h.vm.on_request_headers(ctx, req_headers.clone(), true)
        .expect("request");
    h.vm.on_response_headers(ctx, headers(&[(":status", "404"), ("x-up", "u")]), true)
        .expect("response");
    let r = ProbeResults::from_logs(&h.logs);
    let ok = Some(Status::Ok.as_u32());
    let not_found = Some(Status::NotFound.as_u32());
    let expect = |label: &str, status: Option<u32>, bytes: &[u8]| {
        assert_eq!(r.value(label), status, "{label} status");
        if status == ok {
            assert_eq!(
                r.bytes(&format!("{label}.value")),
                Some(bytes),
                "{label} value"
            );
        }
    };
    expect("root.vm_configuration", ok, b"VM");
    expect("root.plugin_name", ok, b"probe-props");
    expect("root.node", ok, b"provider-node");
    expect("root.cluster", ok, b"plugin-cluster");
    expect("root.root_only", ok, b"root");
    expect("root.request_path", not_found, b"");
    assert_eq!(
        r.value("root.broken"),
        Some(Status::SerializationFailure.as_u32())
    );
    // The root context has no stream information (Envoy: NOT_FOUND).
    assert_eq!(r.value("root.set_property"), not_found);

    expect("req.url_path", ok, b"/p/q");
    expect("req.query", ok, b"x=1&y=2");
    expect("req.host", ok, b"host.example");
    expect("req.scheme", ok, b"https");
    expect("req.useragent", ok, b"ua/1");
    expect("req.id", ok, b"rid");
    expect("req.headers", ok, &req_headers.encode());
    // Several values are comma-joined (Envoy attributes).
    expect("req.header.multi", ok, b"1,2");
    expect("req.header.absent", not_found, b"");
    expect("req.stream_prop", ok, &42u64.to_le_bytes());
    expect("req.node", ok, b"provider-node");
    expect("req.cluster", ok, b"plugin-cluster");
    expect("req.root_only", not_found, b"");
    expect("req.trailing_nul", not_found, b"");
    expect("req.response_code", not_found, b"");
    assert_eq!(r.value("req.set_property"), ok);
    assert_eq!(
        r.value("req.set_property.empty"),
        ok,
        "(0, 0) is an empty slice"
    );
    expect("req.get_set", ok, b"set-value");
    // The (0, 0) path set above reads back as an empty value.
    expect("req.get_empty_path", ok, b"");
    expect("resp.code", ok, &404i64.to_le_bytes());
    expect("resp.header", ok, b"u");
    expect("resp.get_set", ok, b"set-value");
}
