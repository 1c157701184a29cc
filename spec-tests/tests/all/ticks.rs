//! Timers (ABI reference §4.1, §11.13): `proxy_set_tick_period_milliseconds`
//! becomes `Effect::TickPeriod` for the caller's root context, and
//! `Vm::on_tick` runs `proxy_on_tick` on it.

use std::time::Duration;

use vessel_host::{Effect, HostEnv, PluginConfig, Status};
use vessel_spec_tests::probe::{Callback, Probe, ProbeResults};
use vessel_spec_tests::{Harness, Source, config, request};

fn cfg(configuration: &str) -> PluginConfig {
    PluginConfig {
        configuration: configuration.as_bytes().to_vec(),
        vm_id: format!("ticks-{configuration}"),
        ..config("ticks")
    }
}

#[test]
fn tick_period_from_on_configure_then_ticks_until_stopped() {
    let mut h = Harness::load(Source::Guest("ticks"), cfg("50,2")).expect("starts");
    let root = h.vm.root_context();
    assert_eq!(
        h.effects(),
        [Effect::TickPeriod {
            root,
            period: Some(Duration::from_millis(50))
        }]
    );
    assert_eq!(h.vm.tick_period_ms(), 50);
    assert!(h.logs.contains("tick period set to 50ms max_ticks=2"));

    h.vm.on_tick().expect("tick 1");
    assert!(h.effects().is_empty());
    assert!(h.logs.contains("tick 1"));
    assert_eq!(h.vm.tick_period_ms(), 50);

    h.vm.on_tick().expect("tick 2");
    assert!(h.logs.contains("tick 2"));
    assert!(h.logs.contains("ticks stopped"));
    assert_eq!(h.effects(), [Effect::TickPeriod { root, period: None }]);
    assert_eq!(h.vm.tick_period_ms(), 0);
    let (count, _) = h
        .env
        .shared_data()
        .get("ticks-50,2", b"ticks.count")
        .expect("counter");
    assert_eq!(count, b"2");
}

#[test]
fn default_period() {
    let mut h = Harness::load(Source::Guest("ticks"), cfg("")).expect("starts");
    assert_eq!(h.vm.tick_period_ms(), 100);
    assert_eq!(
        h.effects(),
        [Effect::TickPeriod {
            root: h.vm.root_context(),
            period: Some(Duration::from_millis(100))
        }]
    );
}

#[test]
fn a_stream_sets_its_root_contexts_timer() {
    let mut p = Probe::new();
    p.on(Callback::RequestHeaders).status(
        "set_tick",
        "(call $proxy_set_tick_period_milliseconds (i32.const 250))",
    );
    p.on(Callback::Tick).value("tick.root", "(local.get $a)");
    let plugin = p.load(config("stream-tick")).expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    assert!(h.effects().is_empty(), "no timer until asked");
    assert_eq!(h.vm.tick_period_ms(), 0);
    let (ctx, _) = h.request_headers(request("/", &[]), true).expect("request");
    let root = h.vm.root_context();
    assert_ne!(ctx, root);
    assert_eq!(
        h.effects(),
        [Effect::TickPeriod {
            root,
            period: Some(Duration::from_millis(250))
        }]
    );
    assert_eq!(h.vm.tick_period_ms(), 250);
    h.vm.on_tick().expect("tick");
    let r = ProbeResults::from_logs(&h.logs);
    assert_eq!(r.value("set_tick"), Some(Status::Ok.as_u32()));
    assert_eq!(
        r.value("tick.root"),
        Some(root.get()),
        "on_tick runs on the root context"
    );
}
