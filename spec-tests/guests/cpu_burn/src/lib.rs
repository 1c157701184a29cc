//! `guest_cpu_burn`: a CPU-bound filter for the VM-pool scaling benchmark.
//!
//! On request headers it runs `x-rounds` (default 20,000) rounds of a
//! xorshift mix seeded from the request path and adds the result as request
//! header `x-burn`. No logging. Contract: `spec-tests/guests/README.md`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(BurnRoot) });
}}

struct BurnRoot;

impl Context for BurnRoot {}

impl RootContext for BurnRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Burn))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Burn;

impl Context for Burn {}

impl HttpContext for Burn {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let rounds: u64 = self
            .get_http_request_header("x-rounds")
            .and_then(|r| r.parse().ok())
            .unwrap_or(20_000);
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for b in path.bytes() {
            x = x.rotate_left(5) ^ u64::from(b);
        }
        for _ in 0..rounds {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        self.set_http_request_header("x-burn", Some(&format!("{x:016x}")));
        Action::Continue
    }
}
