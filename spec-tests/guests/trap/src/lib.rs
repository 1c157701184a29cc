//! `guest_trap`: a Rust SDK filter that traps on purpose, so tests can show
//! that a trap fails the VM (ABI reference §6.6) and how each stream then
//! follows the failure policy.
//!
//! Where it traps:
//! * per request: request header `x-trap-in: <callback>`;
//! * for every request / at the root: the **selector**, which is the VM
//!   configuration if non-empty, else the plugin configuration.
//!
//! Callback names: `vm_start` (VM configuration only), `configure`,
//! `create_context`, `tick`, `request_headers`, `request_body`,
//! `request_trailers`, `response_headers`, `response_body`,
//! `response_trailers`, `log`, `done`, `http_call_response`.
//!
//! `x-trap-kind: unreachable` traps with a bare `unreachable` instruction
//! instead of a Rust panic (no panic message is logged). Contract:
//! `spec-tests/guests/README.md`.

use std::time::Duration;

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(TrapRoot::default()) });
}}

/// Traps in `callback` with the given kind (`panic` or `unreachable`).
fn trap(callback: &str, kind: &str) -> ! {
    info!("trap: about to trap in {callback} ({kind})");
    if kind == "unreachable" {
        core::arch::wasm32::unreachable()
    }
    panic!("trap: panicking in {callback}");
}

#[derive(Default)]
struct TrapRoot {
    selector: String,
}

impl TrapRoot {
    fn check(&self, callback: &str) {
        if self.selector == callback {
            trap(callback, "panic");
        }
    }
}

impl Context for TrapRoot {}

impl RootContext for TrapRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        self.selector = self
            .get_vm_configuration()
            .map(|c| String::from_utf8_lossy(&c).trim().to_owned())
            .unwrap_or_default();
        info!("trap: vm_start selector={}", self.selector);
        self.check("vm_start");
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        if self.selector.is_empty() {
            self.selector = self
                .get_plugin_configuration()
                .map(|c| String::from_utf8_lossy(&c).trim().to_owned())
                .unwrap_or_default();
        }
        info!("trap: configure selector={}", self.selector);
        self.check("configure");
        if self.selector == "tick" {
            self.set_tick_period(Duration::from_millis(10));
        }
        true
    }

    fn on_tick(&mut self) {
        self.check("tick");
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        self.check("create_context");
        Some(Box::new(TrapHttp {
            trap_in: self.selector.clone(),
            kind: "panic".to_owned(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct TrapHttp {
    trap_in: String,
    kind: String,
}

impl TrapHttp {
    fn check(&self, callback: &str) {
        if self.trap_in == callback {
            trap(callback, &self.kind);
        }
    }
}

impl Context for TrapHttp {
    fn on_http_call_response(&mut self, _token_id: u32, _: usize, _: usize, _: usize) {
        self.check("http_call_response");
        self.resume_http_request();
    }

    fn on_done(&mut self) -> bool {
        self.check("done");
        true
    }
}

impl HttpContext for TrapHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(trap_in) = self.get_http_request_header("x-trap-in") {
            self.trap_in = trap_in;
        }
        if let Some(kind) = self.get_http_request_header("x-trap-kind") {
            self.kind = kind;
        }
        info!("trap: request trap_in={} kind={}", self.trap_in, self.kind);
        self.check("request_headers");
        if self.trap_in == "http_call_response" {
            let headers = vec![
                (":method", "GET"),
                (":path", "/auth"),
                (":authority", "auth"),
            ];
            if self
                .dispatch_http_call("auth", headers, None, vec![], Duration::from_secs(5))
                .is_ok()
            {
                return Action::Pause;
            }
            info!("trap: dispatch to auth failed");
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.check("request_body");
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.check("request_trailers");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.check("response_headers");
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.check("response_body");
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.check("response_trailers");
        Action::Continue
    }

    fn on_log(&mut self) {
        self.check("log");
    }
}
