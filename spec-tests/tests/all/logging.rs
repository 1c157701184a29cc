//! Logging (ABI reference §4.1, §7, §10.3, §11.19): `proxy_log` at every
//! level, the plugin's log level as a filter, `proxy_get_log_level`, and
//! WASI `fd_write` to stdout (INFO) and stderr (ERROR).

use vessel_host::{HostEnv, LogLevel, MapType, PluginConfig, Status};
use vessel_spec_tests::probe::{Callback, OUT, Probe, ProbeResults, c, load};
use vessel_spec_tests::{Harness, Source, config, headers, request, value};

fn cfg(level: LogLevel) -> PluginConfig {
    PluginConfig {
        log_level: level,
        ..config("logging")
    }
}

#[test]
fn every_level_and_wasi_streams() {
    let h = Harness::load(Source::Guest("logging"), cfg(LogLevel::Trace)).expect("starts");
    let root = h.vm.root_context();
    let expected = [
        ("logging: vm_start trace", LogLevel::Trace),
        ("logging: vm_start debug", LogLevel::Debug),
        ("logging: vm_start info", LogLevel::Info),
        ("logging: vm_start warn", LogLevel::Warn),
        ("logging: vm_start error", LogLevel::Error),
        ("logging: vm_start critical", LogLevel::Critical),
        (
            "logging: vm_start get_log_level status=0 level=0",
            LogLevel::Info,
        ),
        // println! → fd_write(1) → INFO, one trailing newline stripped.
        ("logging: vm_start stdout", LogLevel::Info),
        // stderr → fd_write(2) → ERROR.
        ("logging: vm_start stderr", LogLevel::Error),
    ];
    let records = h.logs.records();
    assert_eq!(records.len(), expected.len(), "{:#?}", h.logs.lines());
    for (record, (line, level)) in records.iter().zip(expected) {
        assert_eq!(record.text(), line);
        assert_eq!(record.level, level, "{line}");
        assert_eq!(record.context, root, "{line}");
        assert_eq!(record.plugin, "logging");
    }
}

#[test]
fn lines_below_the_plugin_level_are_dropped() {
    let mut h = Harness::load(Source::Guest("logging"), cfg(LogLevel::Warn)).expect("starts");
    h.logs.clear();
    let (ctx, _) = h.request_headers(request("/", &[]), true).expect("request");
    h.vm.on_response_headers(ctx, headers(&[(":status", "200")]), true)
        .expect("response");
    assert_eq!(
        h.logs.lines(),
        [
            "logging: request warn",
            "logging: request error",
            "logging: request critical",
            "logging: request stderr"
        ]
    );
    assert!(h.logs.records().iter().all(|r| r.context == ctx));
    // proxy_get_log_level returns the plugin's level.
    let resp =
        h.vm.headers(ctx, MapType::HttpResponseHeaders)
            .expect("kept");
    assert_eq!(value(resp, "x-log-level").as_deref(), Some("3"));
}

#[test]
fn raw_log_and_fd_write_statuses() {
    let mut p = Probe::new();
    p.import_wasi_unstable();
    let msg = p.bytes(b"raw \xff\xfe bytes");
    let two_newlines = p.bytes(b"line\n\n");
    // iovec array for fd_write: two buffers.
    let part1 = p.bytes(b"hello, ");
    let part2 = p.bytes(b"world\n");
    let iovs = p.bytes(
        &[part1.ptr, part1.len, part2.ptr, part2.len]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    let one_iov = p.bytes(
        &[two_newlines.ptr, two_newlines.len]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    let out = c(OUT);
    p.on(Callback::RequestHeaders)
        .status("log.info", format!("(call $proxy_log (i32.const 2) {msg})"))
        .status(
            "log.level6",
            format!("(call $proxy_log (i32.const 6) {msg})"),
        )
        .status(
            "log.level_neg",
            format!("(call $proxy_log (i32.const -1) {msg})"),
        )
        .status(
            "log.bad_ptr",
            "(call $proxy_log (i32.const 2) (i32.const -256) (i32.const 4))",
        )
        .status(
            "get_log_level",
            format!("(call $proxy_get_log_level {out})"),
        )
        .value("get_log_level.value", load(OUT))
        .status(
            "fd_write.stdout",
            format!(
                "(call $fd_write (i32.const 1) (i32.const {}) (i32.const 2) {out})",
                iovs.ptr
            ),
        )
        .value("fd_write.stdout.n", load(OUT))
        .status(
            "fd_write.unstable_stderr",
            format!(
                "(call $wasi_unstable.fd_write (i32.const 2) (i32.const {}) (i32.const 1) {out})",
                one_iov.ptr
            ),
        )
        .status(
            "fd_write.fd3",
            format!(
                "(call $fd_write (i32.const 3) (i32.const {}) (i32.const 1) {out})",
                one_iov.ptr
            ),
        );
    let mut cfg = config("raw-logging");
    cfg.log_level = LogLevel::Debug;
    let plugin = p.load(cfg).expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    h.request_headers(request("/", &[]), true).expect("request");
    let r = ProbeResults::from_logs(&h.logs);
    let st = |s: Status| Some(s.as_u32());
    assert_eq!(r.value("log.info"), st(Status::Ok));
    assert_eq!(r.value("log.level6"), st(Status::BadArgument));
    assert_eq!(r.value("log.level_neg"), st(Status::BadArgument));
    assert_eq!(r.value("log.bad_ptr"), st(Status::InvalidMemoryAccess));
    assert_eq!(r.value("get_log_level"), st(Status::Ok));
    assert_eq!(
        r.value("get_log_level.value"),
        Some(LogLevel::Debug.as_u32())
    );
    assert_eq!(r.value("fd_write.stdout"), Some(0), "errno SUCCESS");
    assert_eq!(r.value("fd_write.stdout.n"), Some(13), "bytes written");
    assert_eq!(r.value("fd_write.unstable_stderr"), Some(0));
    assert_eq!(r.value("fd_write.fd3"), Some(8), "errno BADF");
    let records = h.logs.records();
    let find = |bytes: &[u8]| records.iter().find(|r| r.message == bytes).map(|r| r.level);
    // Non-UTF-8 bytes reach the sink unchanged.
    assert_eq!(find(b"raw \xff\xfe bytes"), Some(LogLevel::Info));
    // iovecs are concatenated; one trailing newline is stripped.
    assert_eq!(find(b"hello, world"), Some(LogLevel::Info));
    assert_eq!(find(b"line\n"), Some(LogLevel::Error));
}
