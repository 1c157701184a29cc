//! `guest_bench_headers`: the benchmark filter. On request headers it reads
//! `x-bench` and adds `x-bench-seen: 1`; on response headers it adds
//! `x-bench-response: 1`. It never logs, so a benchmark measures the ABI
//! round trips only. Contract: `spec-tests/guests/README.md`.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Bench) });
}}

struct Bench;

impl Context for Bench {}

impl HttpContext for Bench {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let seen = self.get_http_request_header("x-bench");
        std::hint::black_box(seen);
        self.add_http_request_header("x-bench-seen", "1");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.add_http_response_header("x-bench-response", "1");
        Action::Continue
    }
}
