//! `guest_sdk_tick_counter`: a tick-driven shared-data counter, with an
//! optional per-tick request budget (a small local rate limiter) — the
//! kind of background-state filter SDK users ship (ABI reference §4.1,
//! §4.6, §11.13, §11.14).
//!
//! `on_tick` increments the shared-data key `<key>` with a get → set(cas)
//! loop that retries on CAS_MISMATCH (every worker's root context ticks, so
//! writers race). With `requests_per_tick` > 0, each tick also resets the
//! key `<key>.window`, and each request increments it the same way; a
//! request over the budget gets 429. Responses carry the tick count in
//! `x-tick-count`. Contract: `spec-tests/guests/README.md`.

use std::rc::Rc;
use std::time::Duration;

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(TickRoot { config: Rc::new(Config::default()) })
    });
}}

fn default_period_ms() -> u64 {
    1000
}
fn default_key() -> String {
    "sdk_tick_counter.ticks".to_owned()
}

/// The plugin configuration (JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_period_ms")]
    period_ms: u64,
    #[serde(default = "default_key")]
    key: String,
    /// 0 = no budget.
    #[serde(default)]
    requests_per_tick: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            period_ms: default_period_ms(),
            key: default_key(),
            requests_per_tick: 0,
        }
    }
}

impl Config {
    fn window_key(&self) -> String {
        format!("{}.window", self.key)
    }
}

/// Reads a decimal counter from shared data: (value, cas).
fn read_counter(ctx: &dyn Context, key: &str) -> (u64, Option<u32>) {
    let (data, cas) = ctx.get_shared_data(key);
    let value = data
        .and_then(|d| String::from_utf8(d).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (value, cas)
}

/// Adds one to a decimal shared-data counter with compare-and-swap,
/// retrying on a CAS mismatch. Returns the new value.
fn increment(ctx: &dyn Context, key: &str) -> Result<u64, Status> {
    for _ in 0..16 {
        let (value, cas) = read_counter(ctx, key);
        let next = value + 1;
        match ctx.set_shared_data(key, Some(next.to_string().as_bytes()), cas) {
            Ok(()) => return Ok(next),
            Err(Status::CasMismatch) => info!("sdk_tick_counter: cas mismatch on {key}, retrying"),
            Err(e) => return Err(e),
        }
    }
    Err(Status::CasMismatch)
}

struct TickRoot {
    config: Rc<Config>,
}

impl Context for TickRoot {}

impl RootContext for TickRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Config>(&bytes) {
                Ok(c) => self.config = Rc::new(c),
                Err(e) => {
                    error!("sdk_tick_counter: bad configuration: {e}");
                    return false;
                }
            }
        }
        info!(
            "sdk_tick_counter: period_ms={} key={} requests_per_tick={}",
            self.config.period_ms, self.config.key, self.config.requests_per_tick
        );
        self.set_tick_period(Duration::from_millis(self.config.period_ms));
        true
    }

    fn on_tick(&mut self) {
        match increment(self, &self.config.key) {
            Ok(n) => info!("sdk_tick_counter: tick count={n}"),
            Err(e) => error!("sdk_tick_counter: tick increment failed: {e:?}"),
        }
        if self.config.requests_per_tick > 0
            && let Err(e) = self.set_shared_data(&self.config.window_key(), Some(b"0"), None)
        {
            error!("sdk_tick_counter: window reset failed: {e:?}");
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Counter {
            config: Rc::clone(&self.config),
            window: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Counter {
    config: Rc<Config>,
    /// Requests in the current tick window, including this one.
    window: Option<u64>,
}

impl Context for Counter {}

impl HttpContext for Counter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let limit = self.config.requests_per_tick;
        if limit == 0 {
            return Action::Continue;
        }
        let n = match increment(self, &self.config.window_key()) {
            Ok(n) => n,
            Err(e) => {
                error!("sdk_tick_counter: window increment failed: {e:?}");
                return Action::Continue;
            }
        };
        self.window = Some(n);
        let (ticks, _) = read_counter(self, &self.config.key);
        if n > limit {
            info!("sdk_tick_counter: request {n} over budget {limit} ticks={ticks}");
            let ticks = ticks.to_string();
            self.send_http_response(429, vec![("x-tick-count", &ticks)], Some(b"rate limited\n"));
            return Action::Pause;
        }
        info!("sdk_tick_counter: request {n} of {limit} ticks={ticks}");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Also runs for this filter's own 429 (Envoy's encoder path, §11.3),
        // which already carries the count.
        if self.get_http_response_header("x-tick-count").is_none() {
            let (ticks, _) = read_counter(self, &self.config.key);
            self.set_http_response_header("x-tick-count", Some(&ticks.to_string()));
        }
        if let Some(n) = self.window {
            self.set_http_response_header("x-window-requests", Some(&n.to_string()));
        }
        Action::Continue
    }
}
