//! `guest_hello`: the classic hello-world filter, used by the README and the
//! examples.
//!
//! * `GET /hello` is answered locally: status 200, header `hello: World`,
//!   body `Hello, World!\n`.
//! * Any other request gets the request header `x-hello: seen` and continues.
//!
//! This guest is also built for `wasm32-unknown-unknown`, where the SDK exports
//! its allocator as `malloc` instead of `proxy_on_memory_allocate`
//! (ABI reference §3). Contract: `spec-tests/guests/README.md`.

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(HelloRoot) });
}}

struct HelloRoot;

impl Context for HelloRoot {}

impl RootContext for HelloRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Hello))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Hello;

impl Context for Hello {}

impl HttpContext for Hello {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let method = self.get_http_request_header(":method");
        let path = self.get_http_request_header(":path");
        if method.as_deref() == Some("GET") && path.as_deref() == Some("/hello") {
            info!("hello: answering GET /hello");
            self.send_http_response(200, vec![("hello", "World")], Some(b"Hello, World!\n"));
            return Action::Pause;
        }
        self.add_http_request_header("x-hello", "seen");
        Action::Continue
    }
}
