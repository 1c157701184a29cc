//! Metrics (ABI reference §4.5 ids, §4.6, §9): define, increment, record,
//! get; values readable by the embedder through `env.metrics().snapshot()`.

use vessel_host::shared::metrics::{HistogramSummary, MetricValue};
use vessel_host::{HostEnv, MapType, Status, Vm};
use vessel_spec_tests::probe::{Callback, OUT, Probe, ProbeResults, c, load};
use vessel_spec_tests::{Harness, Source, config, headers, plugin, request, value};

fn run(vm: &mut Vm, extra: &[(&str, &str)]) -> vessel_host::HeaderMap {
    let ctx = vm.create_http_context().expect("context");
    vm.on_request_headers(ctx, request("/", extra), true)
        .expect("request");
    vm.on_response_headers(ctx, headers(&[(":status", "200")]), true)
        .expect("response");
    vm.headers(ctx, MapType::HttpResponseHeaders)
        .cloned()
        .expect("kept")
}

#[test]
fn define_increment_record_get() {
    let mut h = Harness::load(Source::Guest("metrics"), config("metrics")).expect("starts");
    // Envoy's id scheme: type in the low two bits, stepping by 4 per VM.
    assert!(
        h.logs
            .contains("metrics defined counter=4 gauge=5 histogram=6")
    );

    let resp = run(
        &mut h.vm,
        &[("x-counter-increment", "3"), ("x-histogram-value", "7")],
    );
    // The request had 4 + 2 headers.
    assert_eq!(value(&resp, "x-metric-counter").as_deref(), Some("3"));
    assert_eq!(value(&resp, "x-metric-gauge").as_deref(), Some("6"));
    assert_eq!(
        value(&resp, "x-metric-histogram").as_deref(),
        Some("error:BadArgument"),
        "histograms are not readable (Envoy)"
    );
    let resp = run(&mut h.vm, &[("x-histogram-value", "1")]);
    assert_eq!(value(&resp, "x-metric-counter").as_deref(), Some("4"));
    assert_eq!(value(&resp, "x-metric-gauge").as_deref(), Some("5"));

    let snapshot = h.env.metrics().snapshot();
    assert_eq!(
        snapshot,
        vec![
            ("guest_header_count".to_owned(), MetricValue::Gauge(5)),
            ("guest_requests_total".to_owned(), MetricValue::Counter(4)),
            (
                "guest_value".to_owned(),
                MetricValue::Histogram(HistogramSummary {
                    count: 2,
                    sum: 8,
                    min: Some(1),
                    max: Some(7)
                })
            ),
        ]
    );
}

#[test]
fn counter_increments_must_be_positive() {
    let mut h = Harness::load(Source::Guest("metrics"), config("metrics")).expect("starts");
    run(&mut h.vm, &[("x-counter-increment", "0")]);
    run(&mut h.vm, &[("x-counter-increment", "-2")]);
    assert!(
        h.logs
            .contains("metrics increment counter by 0: error:BadArgument")
    );
    assert!(
        h.logs
            .contains("metrics increment counter by -2: error:BadArgument")
    );
    assert_eq!(
        h.env.metrics().get("guest_requests_total"),
        Some(MetricValue::Counter(0))
    );
    assert!(!h.vm.is_failed(), "the SDK accepts BAD_ARGUMENT here");
}

#[test]
fn metrics_are_process_wide_by_name_ids_per_vm() {
    let mut a = Harness::load(Source::Guest("metrics"), config("metrics")).expect("starts");
    let p = plugin(Source::Guest("metrics"), config("metrics")).expect("plugin");
    let mut b = a.sibling(&p).expect("second VM");
    run(&mut a.vm, &[("x-counter-increment", "2")]);
    let resp = run(&mut b, &[("x-counter-increment", "5")]);
    assert_eq!(value(&resp, "x-metric-counter").as_deref(), Some("7"));
    assert_eq!(
        a.env.metrics().get("guest_requests_total"),
        Some(MetricValue::Counter(7))
    );
}

#[test]
fn raw_statuses_follow_envoy() {
    let mut p = Probe::new();
    let counter = p.bytes(b"probe_counter");
    let gauge = p.bytes(b"probe_gauge");
    let hist = p.bytes(b"probe_hist");
    let out = c(OUT);
    let id = |n: u32| format!("(i32.load (i32.const {}))", 0x40 + 4 * n);
    let save = |n: u32| format!("(i32.store (i32.const {}) {})", 0x40 + 4 * n, load(OUT));
    p.on(Callback::Configure)
        .status(
            "define.counter",
            format!("(call $proxy_define_metric (i32.const 0) {counter} {out})"),
        )
        .value("id.counter", load(OUT))
        .raw(save(0))
        .status(
            "define.counter.again",
            format!("(call $proxy_define_metric (i32.const 0) {counter} {out})"),
        )
        .value("id.counter.again", load(OUT))
        .status(
            "define.gauge",
            format!("(call $proxy_define_metric (i32.const 1) {gauge} {out})"),
        )
        .value("id.gauge", load(OUT))
        .raw(save(1))
        .status(
            "define.histogram",
            format!("(call $proxy_define_metric (i32.const 2) {hist} {out})"),
        )
        .value("id.histogram", load(OUT))
        .raw(save(2))
        .status(
            "define.type3",
            format!("(call $proxy_define_metric (i32.const 3) {hist} {out})"),
        )
        .status(
            "inc.counter",
            format!("(call $proxy_increment_metric {} (i64.const 5))", id(0)),
        )
        .status(
            "inc.counter.zero",
            format!("(call $proxy_increment_metric {} (i64.const 0))", id(0)),
        )
        .status(
            "inc.gauge.neg",
            format!("(call $proxy_increment_metric {} (i64.const -3))", id(1)),
        )
        .status(
            "inc.histogram",
            format!("(call $proxy_increment_metric {} (i64.const 1))", id(2)),
        )
        .status(
            "inc.unknown",
            "(call $proxy_increment_metric (i32.const 999) (i64.const 1))",
        )
        .status(
            "record.counter",
            format!("(call $proxy_record_metric {} (i64.const 2))", id(0)),
        )
        .status(
            "record.gauge",
            format!("(call $proxy_record_metric {} (i64.const 40))", id(1)),
        )
        .status(
            "record.histogram",
            format!("(call $proxy_record_metric {} (i64.const 9))", id(2)),
        )
        .status(
            "record.unknown",
            "(call $proxy_record_metric (i32.const 999) (i64.const 1))",
        )
        .status(
            "get.counter",
            format!("(call $proxy_get_metric {} {out})", id(0)),
        )
        .value("get.counter.value", load(OUT))
        .status(
            "get.gauge",
            format!("(call $proxy_get_metric {} {out})", id(1)),
        )
        .value("get.gauge.value", load(OUT))
        .status(
            "get.histogram",
            format!("(call $proxy_get_metric {} {out})", id(2)),
        )
        .status(
            "get.unknown",
            format!("(call $proxy_get_metric (i32.const 999) {out})"),
        );
    let plugin = p.load(config("raw-metrics")).expect("loads");
    let h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    let r = ProbeResults::from_logs(&h.logs);
    let st = |s: Status| Some(s.as_u32());
    for label in [
        "define.counter",
        "define.counter.again",
        "define.gauge",
        "define.histogram",
    ] {
        assert_eq!(r.value(label), st(Status::Ok), "{label}");
    }
    assert_eq!(r.value("id.counter"), Some(4));
    assert_eq!(r.value("id.counter.again"), Some(4), "same name, same id");
    assert_eq!(r.value("id.gauge"), Some(5));
    assert_eq!(r.value("id.histogram"), Some(6));
    assert_eq!(r.value("define.type3"), st(Status::BadArgument));
    assert_eq!(r.value("inc.counter"), st(Status::Ok));
    assert_eq!(r.value("inc.counter.zero"), st(Status::BadArgument));
    assert_eq!(r.value("inc.gauge.neg"), st(Status::Ok));
    assert_eq!(r.value("inc.histogram"), st(Status::BadArgument));
    assert_eq!(r.value("inc.unknown"), st(Status::NotFound));
    assert_eq!(r.value("record.counter"), st(Status::Ok));
    assert_eq!(r.value("record.gauge"), st(Status::Ok));
    assert_eq!(r.value("record.histogram"), st(Status::Ok));
    assert_eq!(r.value("record.unknown"), st(Status::NotFound));
    assert_eq!(r.value("get.counter"), st(Status::Ok));
    assert_eq!(r.value("get.counter.value"), Some(7), "5 + 2");
    assert_eq!(r.value("get.gauge"), st(Status::Ok));
    assert_eq!(r.value("get.gauge.value"), Some(40), "record sets a gauge");
    assert_eq!(r.value("get.histogram"), st(Status::BadArgument));
    assert_eq!(r.value("get.unknown"), st(Status::NotFound));
    assert_eq!(
        h.env.metrics().get("probe_counter"),
        Some(MetricValue::Counter(7))
    );
    assert_eq!(
        h.env.metrics().get("probe_gauge"),
        Some(MetricValue::Gauge(40))
    );
}
