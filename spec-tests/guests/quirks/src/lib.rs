//! `guest_quirks`: Envoy behaviours the differential runner pins down (ABI
//! reference §11.4, §11.11, §11.18, §12 "Empty serialized map"). Contract:
//! `spec-tests/guests/README.md`.
//!
//! * `on_http_request_headers`: logs the request trailers' pair count (no
//!   trailers yet: an empty map), adds request header `x-raw` with the
//!   non-UTF-8 bytes `ff fe 41`, reads it back and logs the bytes in hex,
//!   then Continue.
//! * `on_http_request_body`: logs the request headers' pair count (after
//!   Continue Envoy has dropped them: OK + empty).
//! * `on_http_response_headers`: logs the request headers' pair count (same)
//!   and the response trailers' pair count, adds response header
//!   `x-raw-resp` with bytes `c3 28`, then Continue.
//! * `on_log` and `on_done` log their names, so their order is visible.

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(QuirksRoot) });
}}

struct QuirksRoot;

impl Context for QuirksRoot {}

impl RootContext for QuirksRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Quirks))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Quirks;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Context for Quirks {
    fn on_done(&mut self) -> bool {
        info!("quirks: on_done");
        true
    }
}

impl HttpContext for Quirks {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        info!("quirks: request headers end_of_stream={end_of_stream}");
        let trailers = self.get_http_request_trailers_bytes();
        info!("quirks: request trailers during headers count={}", trailers.len());
        self.add_http_request_header_bytes("x-raw", &[0xff, 0xfe, 0x41]);
        match self.get_http_request_header_bytes("x-raw") {
            Some(v) => info!("quirks: x-raw bytes={}", hex(&v)),
            None => info!("quirks: x-raw missing"),
        }
        info!(
            "quirks: x-missing={:?}",
            self.get_http_request_header_bytes("x-missing")
        );
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        info!(
            "quirks: request body size={body_size} eos={end_of_stream} request headers count={}",
            self.get_http_request_headers_bytes().len()
        );
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        info!(
            "quirks: response headers; request headers count={}",
            self.get_http_request_headers_bytes().len()
        );
        info!(
            "quirks: response trailers during headers count={}",
            self.get_http_response_trailers_bytes().len()
        );
        self.add_http_response_header_bytes("x-raw-resp", &[0xc3, 0x28]);
        Action::Continue
    }

    fn on_log(&mut self) {
        info!("quirks: on_log");
    }
}
