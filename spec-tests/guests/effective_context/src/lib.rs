//! `guest_effective_context`: `proxy_set_effective_context` (ABI reference
//! §4.1, §11.7, §11.8).
//!
//! Every request first calls `set_effective_context` with an id that is not
//! a context (`x-effective-id`, default 999999) and logs the result (Envoy:
//! BAD_ARGUMENT), then restores its own id. `x-effective-mode` then picks:
//! * `callout`: HTTP call to `auth` (or `x-cluster`); the SDK sets the
//!   effective context before `on_http_call_response`, which adds request
//!   header `x-effective-context: <context id>` and resumes;
//! * `tick`: the stream pauses; the root's next `on_tick` switches to it with
//!   `set_effective_context`, adds request header `x-resumed-by: tick` and
//!   resumes it.
//!
//! Plugin configuration: tick period in ms (default 100). Contract:
//! `spec-tests/guests/README.md`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use log::info;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(EffRoot { context_id, paused: Rc::default() })
    });
}}

/// Ids of streams waiting for the next tick (shared by a root and its streams).
type Paused = Rc<RefCell<Vec<u32>>>;

struct EffRoot {
    context_id: u32,
    paused: Paused,
}

impl Context for EffRoot {}

impl RootContext for EffRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let period = self
            .get_plugin_configuration()
            .and_then(|c| String::from_utf8_lossy(&c).trim().parse::<u64>().ok())
            .unwrap_or(100);
        self.set_tick_period(Duration::from_millis(period));
        info!(
            "effective_context: root {} tick period {period}ms",
            self.context_id
        );
        true
    }

    fn on_tick(&mut self) {
        let ids: Vec<u32> = std::mem::take(&mut *self.paused.borrow_mut());
        for id in ids {
            let r = hostcalls::set_effective_context(id);
            info!("effective_context: tick set_effective_context({id})={r:?}");
            if r.is_ok() {
                // Both calls act on the effective context (the paused stream).
                hostcalls::add_map_value(MapType::HttpRequestHeaders, "x-resumed-by", "tick").ok();
                hostcalls::resume_http_request().ok();
                info!("effective_context: tick resumed context_id={id}");
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Eff {
            context_id,
            paused: Rc::clone(&self.paused),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Eff {
    context_id: u32,
    paused: Paused,
}

impl Context for Eff {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, _: usize, _: usize) {
        info!(
            "effective_context: call response token_id={token_id} headers={num_headers} in context_id={}",
            self.context_id
        );
        self.add_http_request_header("x-effective-context", &self.context_id.to_string());
        self.resume_http_request();
    }
}

impl HttpContext for Eff {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let bad = self
            .get_http_request_header("x-effective-id")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(999_999);
        let r = hostcalls::set_effective_context(bad);
        info!("effective_context: set_effective_context({bad})={r:?}");
        let r = hostcalls::set_effective_context(self.context_id);
        info!(
            "effective_context: restore set_effective_context({})={r:?}",
            self.context_id
        );

        match self.get_http_request_header("x-effective-mode").as_deref() {
            Some("callout") => {
                let cluster = self
                    .get_http_request_header("x-cluster")
                    .unwrap_or_else(|| "auth".to_owned());
                let headers = vec![
                    (":method", "GET"),
                    (":path", "/auth"),
                    (":authority", "auth"),
                ];
                match self.dispatch_http_call(
                    &cluster,
                    headers,
                    None,
                    vec![],
                    Duration::from_secs(5),
                ) {
                    Ok(token) => {
                        info!(
                            "effective_context: dispatched token_id={token} from context_id={}",
                            self.context_id
                        );
                        Action::Pause
                    }
                    Err(status) => {
                        info!("effective_context: dispatch failed {status:?}");
                        Action::Continue
                    }
                }
            }
            Some("tick") => {
                self.paused.borrow_mut().push(self.context_id);
                info!(
                    "effective_context: paused context_id={} waiting for tick",
                    self.context_id
                );
                Action::Pause
            }
            _ => Action::Continue,
        }
    }
}
