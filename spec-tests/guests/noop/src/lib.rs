//! `guest_noop`: an HTTP filter whose callbacks are all the SDK defaults
//! (every stream callback returns Continue, nothing is logged). The root
//! context is the SDK's built-in no-op root. Contract:
//! `spec-tests/guests/README.md`.

use proxy_wasm::traits::{Context, HttpContext};

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Noop) });
}}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {}
