//! `guest_logging`: `proxy_log` at every level, `proxy_get_log_level`, and
//! stdout/stderr through WASI `fd_write` (ABI reference §4.1, §7, §10.3,
//! §11.19).
//!
//! In `on_vm_start` and in each `on_http_request_headers` the guest logs one
//! line per level (`logging: <where> <level>`), logs the raw host log level,
//! and writes one line to stdout and one to stderr (each in a single WASI
//! `fd_write` call ending in `\n`). The request also gets the
//! response header `x-log-level`. Contract: `spec-tests/guests/README.md`.

#![allow(clippy::print_stdout)]

use std::io::Write;

use log::{debug, error, info, trace, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(LogRoot) });
}}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// `proxy_get_log_level(ret_level_ptr)`, declared with a plain u32 so a
    /// level outside 0..=5 (Envoy can return 6 = off) is not undefined
    /// behaviour, as it would be with the SDK's enum-typed wrapper.
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
}

/// Returns `(status, level)` from the raw hostcall.
fn host_log_level() -> (u32, u32) {
    let mut level: u32 = u32::MAX;
    // SAFETY: `level` is a valid, aligned u32 for the duration of the call.
    let status = unsafe { proxy_get_log_level(&mut level) };
    (status, level)
}

/// Logs the fixed set of lines for `where_` (`vm_start` or `request`).
fn log_everything(where_: &str) -> u32 {
    trace!("logging: {where_} trace");
    debug!("logging: {where_} debug");
    info!("logging: {where_} info");
    warn!("logging: {where_} warn");
    error!("logging: {where_} error");
    // The `log` crate has no critical level: call the hostcall directly.
    hostcalls::log(LogLevel::Critical, &format!("logging: {where_} critical")).ok();
    let (status, level) = host_log_level();
    info!("logging: {where_} get_log_level status={status} level={level}");
    // stdout is line-buffered: println! reaches the host as one fd_write.
    println!("logging: {where_} stdout");
    // stderr is unbuffered and eprintln! would write the pieces of the
    // format string separately; write the whole line in one fd_write.
    let line = format!("logging: {where_} stderr\n");
    std::io::stderr().write_all(line.as_bytes()).ok();
    level
}

struct LogRoot;

impl Context for LogRoot {}

impl RootContext for LogRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        log_everything("vm_start");
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(LogHttp { level: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct LogHttp {
    level: Option<u32>,
}

impl Context for LogHttp {}

impl HttpContext for LogHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.level = Some(log_everything("request"));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(level) = self.level {
            self.add_http_response_header("x-log-level", &level.to_string());
        }
        Action::Continue
    }
}
