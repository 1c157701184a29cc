//! `guest_ticks`: `proxy_set_tick_period_milliseconds` and `proxy_on_tick`
//! (ABI reference §4.1, §11.13).
//!
//! Plugin configuration: `<period_ms>` or `<period_ms>,<max_ticks>` (default
//! period 100 ms, no maximum). `on_configure` sets the period; each
//! `on_tick` increments the shared-data counter `ticks.count` and logs
//! `tick N`; after `max_ticks` ticks of this root context it sets the period
//! to 0 and logs `ticks stopped`. Requests get `x-ticks: <count>`.
//! Contract: `spec-tests/guests/README.md`.

use std::time::Duration;

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(TickRoot::default()) });
}}

const KEY: &str = "ticks.count";
const DEFAULT_PERIOD_MS: u64 = 100;

fn read_count<C: Context + ?Sized>(ctx: &C) -> (u64, Option<u32>) {
    let (value, cas) = ctx.get_shared_data(KEY);
    let n = value
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (n, cas)
}

#[derive(Default)]
struct TickRoot {
    local_ticks: u64,
    max_ticks: Option<u64>,
}

impl Context for TickRoot {}

impl RootContext for TickRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .map(|c| String::from_utf8_lossy(&c).trim().to_owned())
            .unwrap_or_default();
        let mut parts = config.split(',').map(str::trim);
        let period = parts
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(DEFAULT_PERIOD_MS);
        self.max_ticks = parts.next().and_then(|m| m.parse().ok());
        self.set_tick_period(Duration::from_millis(period));
        match self.max_ticks {
            Some(max) => info!("tick period set to {period}ms max_ticks={max}"),
            None => info!("tick period set to {period}ms"),
        }
        true
    }

    fn on_tick(&mut self) {
        self.local_ticks += 1;
        let mut n = 0;
        for _ in 0..100 {
            let (current, cas) = read_count(self);
            n = current + 1;
            match self.set_shared_data(KEY, Some(n.to_string().as_bytes()), cas) {
                Ok(()) => break,
                Err(Status::CasMismatch) => continue,
                Err(other) => {
                    info!("tick counter set failed: {other:?}");
                    break;
                }
            }
        }
        info!("tick {n}");
        if self.max_ticks.is_some_and(|max| self.local_ticks >= max) {
            self.set_tick_period(Duration::ZERO);
            info!("ticks stopped");
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(TickHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct TickHttp;

impl Context for TickHttp {}

impl HttpContext for TickHttp {
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (n, _) = read_count(self);
        self.add_http_response_header("x-ticks", &n.to_string());
        Action::Continue
    }
}
