//! `guest_v01_headers`: a filter built with `proxy-wasm` **0.1.x**, so it
//! exports `proxy_abi_version_0_1_0` (ABI reference §1.2) and uses the 0.1.0
//! shapes: `proxy_on_request_headers(ctx, num_headers)` with two params,
//! `proxy_get_configuration`, and OK + empty value for a missing header.
//!
//! It exports `_start` (the 0.1.x convention) and no `_initialize`, so the
//! host has to call `_start` (§3).
//!
//! * `on_vm_start` / `on_configure` log `proxy_get_configuration()`.
//! * Request headers: logs `:path` and the missing `x-missing`, adds request
//!   header `x-v01: seen`.
//! * Response headers: adds `x-v01-config: <plugin configuration>`.
//!
//! Contract: `spec-tests/guests/README.md`.

use log::info;
use proxy_wasm_v01 as proxy_wasm;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

/// Entry point of a 0.1.x module (the SDK has no `main!` macro).
#[unsafe(no_mangle)]
pub extern "C" fn _start() {
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(V01Root {
            config: String::new(),
        })
    });
}

fn text(bytes: Option<Vec<u8>>) -> String {
    bytes
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

struct V01Root {
    config: String,
}

impl Context for V01Root {}

impl RootContext for V01Root {
    fn on_vm_start(&mut self, vm_configuration_size: usize) -> bool {
        // Outside on_configure, proxy_get_configuration returns the VM configuration (Envoy).
        let vm_config = text(self.get_configuration());
        info!("v01: vm_start size={vm_configuration_size} configuration={vm_config}");
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        self.config = text(self.get_configuration());
        info!(
            "v01: configure size={plugin_configuration_size} configuration={}",
            self.config
        );
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(V01Http {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct V01Http {
    config: String,
}

impl Context for V01Http {}

impl HttpContext for V01Http {
    fn on_http_request_headers(&mut self, num_headers: usize) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        info!("v01: request num_headers={num_headers} path={path}");
        // ABI 0.1.0: a missing key is OK + empty (the 0.1.x SDK panics on NOT_FOUND).
        let missing = self.get_http_request_header("x-missing");
        info!("v01: x-missing={missing:?}");
        self.add_http_request_header("x-v01", "seen");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, num_headers: usize) -> Action {
        info!("v01: response num_headers={num_headers}");
        let value = if self.config.is_empty() {
            "none"
        } else {
            self.config.as_str()
        };
        self.add_http_response_header("x-v01-config", value);
        Action::Continue
    }
}
