//! `guest_foreign`: `proxy_call_foreign_function` and
//! `proxy_on_foreign_function` (ABI reference §3, §4.1).
//!
//! Each request calls the foreign function `x-foreign-fn` (default `echo`)
//! with the argument `x-foreign-arg` (default `ping`), logs the result and
//! echoes it as response header `x-foreign-result`. The root context logs
//! `on_foreign_function` calls and their arguments (buffer type 8).
//! Contract: `spec-tests/guests/README.md`.

use log::info;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ForeignRoot) });
}}

struct ForeignRoot;

impl Context for ForeignRoot {
    fn on_foreign_function(&mut self, function_id: u32, arguments_size: usize) {
        let args = hostcalls::get_buffer(BufferType::CallData, 0, arguments_size)
            .ok()
            .flatten()
            .map(|a| String::from_utf8_lossy(&a).into_owned())
            .unwrap_or_default();
        info!(
            "on_foreign_function function_id={function_id} args_size={arguments_size} args={args}"
        );
    }
}

impl RootContext for ForeignRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Foreign { result: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Foreign {
    result: Option<String>,
}

impl Context for Foreign {}

impl HttpContext for Foreign {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let name = self
            .get_http_request_header("x-foreign-fn")
            .unwrap_or_else(|| "echo".to_owned());
        let arg = self
            .get_http_request_header("x-foreign-arg")
            .unwrap_or_else(|| "ping".to_owned());
        let result = match self.call_foreign_function(&name, Some(arg.as_bytes())) {
            Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(None) => "<empty>".to_owned(),
            Err(status) => format!("error:{status:?}"),
        };
        info!("foreign {name}({arg}) returned {result}");
        self.result = Some(result);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(result) = self.result.take() {
            self.add_http_response_header("x-foreign-result", &result);
        }
        Action::Continue
    }
}
