//! `guest_bodies`: body buffering and body rewrites through
//! `proxy_get_buffer_bytes` / `proxy_set_buffer_bytes` (ABI reference §4.2,
//! §11.2).
//!
//! The mode of each side is chosen per request:
//! * request body: request header `x-body-mode`, else `request=<mode>` in the
//!   plugin configuration, else `passthrough`;
//! * response body: request header `x-resp-body-mode`, else `response=<mode>`
//!   in the plugin configuration, else `passthrough`.
//!
//! The plugin configuration is a comma-separated list such as
//! `request=buffer,response=replace`. Modes and exact log lines are listed in
//! `spec-tests/guests/README.md` (the contract).

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(BodiesRoot::default()) });
}}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// `proxy_set_buffer_bytes` called directly, so an unexpected status is
    /// logged instead of panicking inside the SDK.
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: u32,
        size: u32,
        data: *const u8,
        data_size: u32,
    ) -> u32;
}

/// Raw `proxy_set_buffer_bytes`; returns the status.
fn raw_set_buffer(buffer: BufferType, start: u32, size: u32, data: &[u8]) -> u32 {
    // SAFETY: `data` is a live slice for the whole call; the host only reads
    // `data.len()` bytes from it.
    unsafe { proxy_set_buffer_bytes(buffer as u32, start, size, data.as_ptr(), data.len() as u32) }
}

/// What the guest does with one side's body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Passthrough,
    Buffer,
    Replace,
    Grow,
    Shrink,
    Prepend,
    Append,
    AppendMax,
    Clear,
    Middle,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s.trim() {
            "passthrough" => Mode::Passthrough,
            "buffer" => Mode::Buffer,
            "replace" => Mode::Replace,
            "grow" => Mode::Grow,
            "shrink" => Mode::Shrink,
            "prepend" => Mode::Prepend,
            "append" => Mode::Append,
            "append-max" => Mode::AppendMax,
            "clear" => Mode::Clear,
            "middle" => Mode::Middle,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Passthrough => "passthrough",
            Mode::Buffer => "buffer",
            Mode::Replace => "replace",
            Mode::Grow => "grow",
            Mode::Shrink => "shrink",
            Mode::Prepend => "prepend",
            Mode::Append => "append",
            Mode::AppendMax => "append-max",
            Mode::Clear => "clear",
            Mode::Middle => "middle",
        }
    }

    /// Modes that change the body length (content-length is removed).
    fn rewrites(self) -> bool {
        !matches!(self, Mode::Passthrough | Mode::Buffer | Mode::Middle)
    }
}

#[derive(Default)]
struct BodiesRoot {
    request_default: Option<Mode>,
    response_default: Option<Mode>,
}

impl Context for BodiesRoot {}

impl RootContext for BodiesRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .unwrap_or_default();
        for item in config.split(',') {
            let Some((key, value)) = item.split_once('=') else {
                continue;
            };
            let mode = Mode::parse(value);
            match key.trim() {
                "request" => self.request_default = mode,
                "response" => self.response_default = mode,
                _ => {}
            }
        }
        info!(
            "bodies configured request={} response={}",
            self.request_default.unwrap_or(Mode::Passthrough).name(),
            self.response_default.unwrap_or(Mode::Passthrough).name()
        );
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Bodies {
            request_mode: self.request_default.unwrap_or(Mode::Passthrough),
            response_mode: self.response_default.unwrap_or(Mode::Passthrough),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Bodies {
    request_mode: Mode,
    response_mode: Mode,
}

/// Handles one body callback of one side. Returns the action.
fn on_body(side: &str, buffer: BufferType, mode: Mode, body_size: usize, eos: bool) -> Action {
    use proxy_wasm::hostcalls as hc;
    info!("{side}-body chunk size={body_size} eos={eos}");
    if mode == Mode::Passthrough {
        let chunk = hc::get_buffer(buffer, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        info!("{side}-body chunk data={}", String::from_utf8_lossy(&chunk));
        return Action::Continue;
    }
    if !eos {
        // Keep buffering: the next callback sees the cumulative body.
        return Action::Pause;
    }
    let body = hc::get_buffer(buffer, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    info!(
        "{side}-body buffered size={} body={}",
        body.len(),
        String::from_utf8_lossy(&body)
    );
    let size = body.len();
    match mode {
        Mode::Passthrough | Mode::Buffer => return Action::Continue,
        Mode::Replace => {
            hc::set_buffer(buffer, 0, size, b"replaced").ok();
        }
        Mode::Grow => {
            let doubled = [body.as_slice(), body.as_slice()].concat();
            hc::set_buffer(buffer, 0, size, &doubled).ok();
        }
        Mode::Shrink => {
            hc::set_buffer(buffer, 0, size, &body[..size / 2]).ok();
        }
        Mode::Prepend => {
            hc::set_buffer(buffer, 0, 0, b"prepended:").ok();
        }
        Mode::Append => {
            hc::set_buffer(buffer, size, 0, b":appended").ok();
        }
        Mode::AppendMax => {
            hc::set_buffer(buffer, usize::MAX, 0, b":appended").ok();
        }
        Mode::Clear => {
            hc::set_buffer(buffer, 0, size, b"").ok();
        }
        Mode::Middle => {
            let status = raw_set_buffer(buffer, 1, 1, b"X");
            info!("{side}-body middle status={status}");
        }
    }
    let after = hc::get_buffer(buffer, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default();
    info!("{side}-body after={}", String::from_utf8_lossy(&after));
    Action::Continue
}

impl Context for Bodies {}

impl HttpContext for Bodies {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if let Some(mode) = self
            .get_http_request_header("x-body-mode")
            .and_then(|m| Mode::parse(&m))
        {
            self.request_mode = mode;
        }
        if let Some(mode) = self
            .get_http_request_header("x-resp-body-mode")
            .and_then(|m| Mode::parse(&m))
        {
            self.response_mode = mode;
        }
        info!(
            "bodies modes request={} response={} end_of_stream={end_of_stream}",
            self.request_mode.name(),
            self.response_mode.name()
        );
        if self.request_mode.rewrites() {
            self.set_http_request_header("content-length", None);
            info!("request content-length removed");
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        on_body(
            "request",
            BufferType::HttpRequestBody,
            self.request_mode,
            body_size,
            end_of_stream,
        )
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.response_mode.rewrites() {
            self.set_http_response_header("content-length", None);
            info!("response content-length removed");
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        on_body(
            "response",
            BufferType::HttpResponseBody,
            self.response_mode,
            body_size,
            end_of_stream,
        )
    }
}
