//! `llm-token-limit`: a token budget per caller per minute.
//!
//! The caller is the tenant `llm-auth` put in the filter state
//! (`llm_tenant`), else the `identity_header` request header (default
//! `x-llm-tenant`), else the bearer key of `authorization`, else
//! `anonymous`. Its tokens are counted from the response's `usage`: the
//! JSON body's, or, for a `text/event-stream`, the last event that
//! carries one (`stream_options.include_usage`). The response passes
//! chunk by chunk; the filter reads a bounded copy (1 MiB) and never
//! makes the host buffer it.
//!
//! The budget is kept in shared data (one key per caller, updated with
//! compare-and-swap, so it holds across the gateway's VMs): a window opens
//! at the caller's first request and lasts `window_seconds`. A request
//! whose caller has used its budget in the current window gets a 429 with
//! `retry-after` (the seconds until the window ends) and an OpenAI-style
//! error body. A request admitted under the budget may overshoot it: its
//! tokens are known only once its answer has been read.
//!
//! Configuration (JSON; README.md):
//! `{"tokens_per_minute": 1000, "tenants": {"acme": 50000},
//!   "identity_header": "x-llm-tenant", "window_seconds": 60}`.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use llm_common::{UsageTap, key_of, label, openai};
use log::{info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(LimitRoot { config: None })
    });
}}

/// The most of a response body the filter copies to find `usage`.
const MAX_COPY: usize = 1 << 20;
/// CAS attempts before an update is given up (and logged).
const CAS_ATTEMPTS: usize = 16;

fn default_identity_header() -> String {
    "x-llm-tenant".into()
}

fn default_window() -> u64 {
    60
}

/// The plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Tokens per window for callers without an entry in `tenants`.
    tokens_per_minute: u64,
    /// Budgets of named callers.
    #[serde(default)]
    tenants: HashMap<String, u64>,
    /// The request header naming the caller when no `llm_tenant` filter
    /// state is set.
    #[serde(default = "default_identity_header")]
    identity_header: String,
    /// The window's length (seconds).
    #[serde(default = "default_window")]
    window_seconds: u64,
}

impl Config {
    fn budget(&self, who: &str) -> u64 {
        self.tenants
            .get(who)
            .copied()
            .unwrap_or(self.tokens_per_minute)
    }
}

struct LimitRoot {
    config: Option<Rc<Config>>,
}

impl Context for LimitRoot {}

impl RootContext for LimitRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(c) if c.window_seconds > 0 => {
                info!(
                    "llm-token-limit: {} tokens per {} s by default",
                    c.tokens_per_minute, c.window_seconds
                );
                self.config = Some(Rc::new(c));
                true
            }
            Ok(_) => {
                warn!("llm-token-limit: bad configuration: window_seconds must be > 0");
                false
            }
            Err(e) => {
                warn!("llm-token-limit: bad configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Limit {
            config: Rc::clone(self.config.as_ref()?),
            who: String::new(),
            body: UsageTap::Off,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Limit {
    config: Rc<Config>,
    /// The caller's name (already a safe label).
    who: String,
    body: UsageTap,
}

impl Context for Limit {}

/// A window in shared data: `"<start> <used>"`.
fn parse(value: Option<&[u8]>) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(value?).ok()?;
    let (start, used) = text.split_once(' ')?;
    Some((start.parse().ok()?, used.parse().ok()?))
}

impl Limit {
    fn now(&self) -> u64 {
        self.get_current_time()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn key(&self) -> String {
        format!("llm-token-limit/{}", self.who)
    }

    fn identity(&self) -> String {
        if let Some(t) = self.get_property(vec!["llm_tenant"]) {
            return label(&String::from_utf8_lossy(&t));
        }
        if let Some(v) = self.get_http_request_header(&self.config.identity_header) {
            return label(&v);
        }
        if let Some(k) = self
            .get_http_request_header("authorization")
            .and_then(|v| key_of("authorization", &v))
        {
            return label(&k);
        }
        "anonymous".into()
    }

    /// Adds `tokens` to the caller's window (a new window if the last one
    /// is over), with compare-and-swap.
    fn charge(&self, tokens: u64) {
        let key = self.key();
        let window = self.config.window_seconds;
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = self.get_shared_data(&key);
            let now = self.now();
            let (start, used) = match parse(value.as_deref()) {
                Some((start, used)) if now < start.saturating_add(window) => (start, used),
                _ => (now, 0),
            };
            let used = used.saturating_add(tokens);
            let new = format!("{start} {used}");
            match self.set_shared_data(&key, Some(new.as_bytes()), cas) {
                Ok(()) => {
                    info!(
                        "llm-token-limit: {} charged {tokens} tokens, {used}/{} used",
                        self.who,
                        self.config.budget(&self.who)
                    );
                    return;
                }
                Err(Status::CasMismatch) => continue,
                Err(e) => {
                    warn!("llm-token-limit: cannot store {key}: {e:?}");
                    return;
                }
            }
        }
        warn!("llm-token-limit: {key} kept changing; {tokens} tokens not counted");
    }
}

impl HttpContext for Limit {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.who = self.identity();
        let budget = self.config.budget(&self.who);
        let (value, _) = self.get_shared_data(&self.key());
        let now = self.now();
        if let Some((start, used)) = parse(value.as_deref()) {
            let end = start.saturating_add(self.config.window_seconds);
            if now < end && used >= budget {
                let retry = (end - now).max(1).to_string();
                info!(
                    "llm-token-limit: 429 {} used {used}/{budget}, retry-after={retry}",
                    self.who
                );
                let message = format!(
                    "Rate limit reached for {}: {used} of {budget} tokens used in this window. \
                     Retry after the seconds in the retry-after header.",
                    self.who
                );
                let body = openai::error_body(&message, "tokens", "rate_limit_exceeded");
                self.send_http_response(
                    429,
                    vec![
                        ("content-type", "application/json"),
                        ("retry-after", &retry),
                    ],
                    Some(body.as_bytes()),
                );
                return Action::Pause;
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            return Action::Continue;
        }
        let ct = self.get_http_response_header("content-type");
        self.body = UsageTap::for_response(ct.as_deref(), MAX_COPY);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let chunk = if body_size > 0 {
            self.get_http_response_body(0, body_size)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        self.body.push(&chunk);
        if end_of_stream {
            let usage = self.body.finish().and_then(|v| openai::usage_of(&v));
            match usage {
                Some(u) => self.charge(u.total),
                None => info!("llm-token-limit: {} response without usage", self.who),
            }
        }
        Action::Continue
    }
}
