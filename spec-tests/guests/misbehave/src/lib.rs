//! `guest_misbehave`: a Rust SDK filter that misbehaves on demand, for the
//! failure-policy and hot-reload tests (ABI reference §6.6). Each VM counts
//! the requests it has seen, so a test can tell a fresh VM (the count starts
//! again at 1) from a reused one. Contract: `spec-tests/guests/README.md`.
//!
//! * request header `x-misbehave: trap` panics (a trap), `loop` loops
//!   forever, `grow` allocates until memory runs out; `header-bomb` adds
//!   1 MiB request header values in an endless loop, `property-bomb` sets
//!   1 MiB stream properties under new paths in an endless loop,
//!   `effect-bomb` calls `proxy_continue_stream` in an endless loop, and
//!   `body-bomb` appends 1 MiB to the request body in an endless loop from
//!   `on_http_request_body` (each until the host stops it);
//! * response headers `x-vm-requests` (this VM's request count) and
//!   `x-plugin-config` (the plugin configuration);
//! * plugin configuration `fail-configure` makes `on_configure` return
//!   false; VM configuration `start-once` makes `on_vm_start` return false
//!   for every VM after the first of its vm_id (counted in shared data).

use std::cell::Cell;
use std::rc::Rc;

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

const STARTS_KEY: &str = "misbehave.starts";

#[derive(Default)]
struct Root {
    config: Rc<String>,
    requests: Rc<Cell<u64>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let vm_config = self
            .get_vm_configuration()
            .map(|c| String::from_utf8_lossy(&c).trim().to_owned())
            .unwrap_or_default();
        let (starts, cas) = match self.get_shared_data(STARTS_KEY) {
            (Some(v), cas) => (
                String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0),
                cas,
            ),
            (None, cas) => (0, cas),
        };
        let starts = starts + 1;
        // A lost CAS race only miscounts; the count is informative.
        let _ = self.set_shared_data(STARTS_KEY, Some(starts.to_string().as_bytes()), cas);
        info!("misbehave: vm_start #{starts} vm_config={vm_config}");
        if vm_config == "start-once" && starts > 1 {
            info!("misbehave: refusing to start again");
            return false;
        }
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .map(|c| String::from_utf8_lossy(&c).trim().to_owned())
            .unwrap_or_default();
        info!("misbehave: configure config={config}");
        if config == "fail-configure" {
            return false;
        }
        self.config = Rc::new(config);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            config: self.config.clone(),
            requests: self.requests.clone(),
            seen: 0,
            body_bomb: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    config: Rc<String>,
    requests: Rc<Cell<u64>>,
    seen: u64,
    body_bomb: bool,
}

/// 1 MiB of `x`, allocated once: the loops below reuse it, so the guest's
/// own memory stays small and only the host could grow.
fn mebibyte() -> String {
    "x".repeat(1 << 20)
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.seen = self.requests.get() + 1;
        self.requests.set(self.seen);
        match self.get_http_request_header("x-misbehave").as_deref() {
            Some("trap") => panic!("misbehave: trap requested"),
            Some("loop") => {
                info!("misbehave: entering an endless loop");
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("grow") => {
                info!("misbehave: allocating until memory runs out");
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every page so the memory is really used.
                    hoard.push(std::hint::black_box(vec![0x5a; 1 << 20]));
                }
            }
            Some("header-bomb") => {
                info!("misbehave: adding 1 MiB header values until the host refuses");
                let value = mebibyte();
                loop {
                    self.add_http_request_header("x-bomb", &value);
                }
            }
            Some("property-bomb") => {
                info!("misbehave: setting 1 MiB properties until the host refuses");
                let value = mebibyte();
                let mut n: u64 = 0;
                loop {
                    n += 1;
                    let name = n.to_string();
                    self.set_property(vec!["misbehave", &name], Some(value.as_bytes()));
                }
            }
            Some("effect-bomb") => {
                info!("misbehave: continuing the request until the host refuses");
                loop {
                    self.resume_http_request();
                }
            }
            Some("body-bomb") => {
                self.body_bomb = true;
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        if !self.body_bomb {
            return Action::Continue;
        }
        info!("misbehave: appending 1 MiB to the request body until the host refuses");
        let value = mebibyte();
        loop {
            // A start past the end appends (Envoy's rule).
            self.set_http_request_body(usize::MAX, 0, value.as_bytes());
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("x-vm-requests", Some(&self.seen.to_string()));
        self.set_http_response_header("x-plugin-config", Some(self.config.as_str()));
        Action::Continue
    }
}
