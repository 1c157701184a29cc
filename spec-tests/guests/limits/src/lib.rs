//! `guest_limits`: a Rust SDK filter that runs past a resource limit on
//! purpose, or probes its WASI sandbox, so tests can show that the host
//! stops it and that only its VM fails (ABI reference §6.6, §7).
//!
//! # Contract
//!
//! **Operations** (`<op>`):
//! * `loop`: spins forever (`loop {}` around a `black_box`);
//! * `memory`: allocates and fills 1 MiB blocks, keeping them all, until the
//!   allocator fails (the Rust runtime then aborts: a trap);
//! * `log:<n>`: logs `<n>` lines of 1,000 bytes (`x` repeated) at INFO,
//!   then `limits: logged <n> lines`;
//! * `env:<NAME>`: logs `limits: env <NAME>=<value>` (Rust `{:?}` of
//!   `std::env::var(NAME).ok()`, e.g. `Some("v")` or `None`);
//! * `file:<path>`: logs `limits: file <path>=ok <n> bytes` or
//!   `limits: file <path>=err <kind>` (the `std::io::ErrorKind`, `{:?}`)
//!   for `std::fs::read(path)`.
//!
//! **Where**:
//! * at the root: the VM configuration `<op>@<callback>` with callback
//!   `vm_start`, `configure` or `tick` (a 1 ms tick period is set in
//!   `on_configure` for `tick`);
//! * per request: request header `x-limits-op: <op>`, run in the callback
//!   named by `x-limits-in` (`request_headers` if absent;
//!   `response_headers`; `http_call_response`, which first dispatches a GET
//!   `/` to cluster `upstream` with authority `upstream` and pauses).
//!
//! Every other callback continues. It logs
//! `limits: running <op> in <callback>` before each operation.

use std::hint::black_box;
use std::time::Duration;

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(LimitsRoot::default()) });
}}

/// Runs `op` in `callback`.
fn run(op: &str, callback: &str) {
    info!("limits: running {op} in {callback}");
    if op == "loop" {
        let mut n: u64 = 0;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    } else if op == "memory" {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            blocks.push(vec![0xA5; 1 << 20]);
            black_box(&blocks);
        }
    } else if let Some(n) = op.strip_prefix("log:") {
        let n: usize = n.parse().unwrap_or(0);
        let line = "x".repeat(1000);
        for _ in 0..n {
            info!("{line}");
        }
        info!("limits: logged {n} lines");
    } else if let Some(name) = op.strip_prefix("env:") {
        info!("limits: env {name}={:?}", std::env::var(name).ok());
    } else if let Some(path) = op.strip_prefix("file:") {
        match std::fs::read(path) {
            Ok(bytes) => info!("limits: file {path}=ok {} bytes", bytes.len()),
            Err(e) => info!("limits: file {path}=err {:?}", e.kind()),
        }
    }
}

#[derive(Default)]
struct LimitsRoot {
    op: String,
    at: String,
}

impl LimitsRoot {
    fn check(&self, callback: &str) {
        if self.at == callback {
            run(&self.op, callback);
        }
    }
}

impl Context for LimitsRoot {}

impl RootContext for LimitsRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let selector = self
            .get_vm_configuration()
            .map(|c| String::from_utf8_lossy(&c).trim().to_owned())
            .unwrap_or_default();
        if let Some((op, at)) = selector.rsplit_once('@') {
            self.op = op.to_owned();
            self.at = at.to_owned();
        }
        self.check("vm_start");
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.check("configure");
        if self.at == "tick" {
            self.set_tick_period(Duration::from_millis(1));
        }
        true
    }

    fn on_tick(&mut self) {
        self.check("tick");
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(LimitsHttp::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Default)]
struct LimitsHttp {
    op: String,
    at: String,
}

impl LimitsHttp {
    fn check(&self, callback: &str) {
        if self.at == callback {
            run(&self.op, callback);
        }
    }
}

impl Context for LimitsHttp {
    fn on_http_call_response(&mut self, _token_id: u32, _: usize, _: usize, _: usize) {
        self.check("http_call_response");
        self.resume_http_request();
    }
}

impl HttpContext for LimitsHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(op) = self.get_http_request_header("x-limits-op") else {
            return Action::Continue;
        };
        self.op = op;
        self.at = self
            .get_http_request_header("x-limits-in")
            .unwrap_or_else(|| "request_headers".to_owned());
        self.check("request_headers");
        if self.at == "http_call_response" {
            let headers = vec![
                (":method", "GET"),
                (":path", "/"),
                (":authority", "upstream"),
            ];
            if self
                .dispatch_http_call("upstream", headers, None, vec![], Duration::from_secs(5))
                .is_ok()
            {
                return Action::Pause;
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.check("response_headers");
        Action::Continue
    }
}
