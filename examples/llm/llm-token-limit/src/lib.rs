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
//!
//! # The Redis budget (cargo feature `redis`)
//!
//! Built with the feature `redis` (the crate `llm-token-limit-redis`, the
//! file `llm_token_limit_redis.wasm`), the filter can keep the budget in
//! Redis instead, so it holds across gateway instances:
//! `"redis": {"cluster": "redis", "key_prefix": "llm_budget",
//! "timeout_ms": 1000}` (`cluster` names the gateway's cluster of the
//! Redis server; `key_prefix` and `timeout_ms` have these defaults). The
//! windows are then fixed: the key `<key_prefix>:<caller>:<now /
//! window_seconds>`. On the request headers the filter sends `GET key`
//! and pauses the request; on the answer, a caller at or over its budget
//! gets the same 429 (`retry-after`: the seconds until the window ends),
//! any other request resumes. The response's tokens are added with one
//! `EVAL` (`INCRBY key n`, `EXPIRE key 2 * window_seconds`), fire and
//! forget. **Fail open:** if Redis cannot be reached or answers an error
//! (or times out), the request passes and a warning is logged once per
//! stream. That build uses Higress's Redis hostcalls (ABI 0.2.100): vessel
//! and Envoy-Higress run it, stock Envoy refuses it. The default build has
//! no Redis code and refuses a `redis` block.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use llm_common::{UsageTap, key_of, label, openai};
use log::{info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};
use serde::Deserialize;

#[cfg(feature = "redis")]
mod redis;

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

fn default_key_prefix() -> String {
    "llm_budget".into()
}

fn default_timeout_ms() -> u32 {
    1000
}

/// Where the Redis budget lives (feature `redis`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
struct RedisConfig {
    /// The gateway's cluster of the Redis server.
    cluster: String,
    /// The first part of every key: `<key_prefix>:<caller>:<window>`.
    #[serde(default = "default_key_prefix")]
    key_prefix: String,
    /// The timeout of each Redis call (ms).
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u32,
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
    /// Keep the budget in Redis (only in the `redis` build).
    #[serde(default)]
    redis: Option<RedisConfig>,
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
            Ok(c) if c.window_seconds == 0 => {
                warn!("llm-token-limit: bad configuration: window_seconds must be > 0");
                false
            }
            #[cfg(not(feature = "redis"))]
            Ok(Config { redis: Some(_), .. }) => {
                warn!(
                    "llm-token-limit: bad configuration: this build has no Redis support \
                     (use llm_token_limit_redis.wasm for a `redis` block)"
                );
                false
            }
            Ok(c) => {
                #[cfg(feature = "redis")]
                if let Some(r) = &c.redis {
                    if let Err(status) = redis::init(r) {
                        warn!(
                            "llm-token-limit: bad configuration: redis cluster `{}` (status {status})",
                            r.cluster
                        );
                        return false;
                    }
                    info!(
                        "llm-token-limit: budget in redis `{}` under `{}`",
                        r.cluster, r.key_prefix
                    );
                }
                info!(
                    "llm-token-limit: {} tokens per {} s by default",
                    c.tokens_per_minute, c.window_seconds
                );
                self.config = Some(Rc::new(c));
                true
            }
            Err(e) => {
                warn!("llm-token-limit: bad configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Limit {
            config: Rc::clone(self.config.as_ref()?),
            who: String::new(),
            body: UsageTap::Off,
            context_id,
            #[cfg(feature = "redis")]
            flags: Rc::default(),
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
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    context_id: u32,
    /// The stream's flags shared with the Redis answers.
    #[cfg(feature = "redis")]
    flags: Rc<redis::StreamFlags>,
}

impl Context for Limit {}

/// Answers 429 with `retry-after` and an OpenAI-style body to the current
/// stream (`who` used `used` of `budget` tokens).
fn reject(who: &str, used: u64, budget: u64, retry: u64) {
    let retry = retry.max(1).to_string();
    info!("llm-token-limit: 429 {who} used {used}/{budget}, retry-after={retry}");
    let message = format!(
        "Rate limit reached for {who}: {used} of {budget} tokens used in this window. \
         Retry after the seconds in the retry-after header."
    );
    let body = openai::error_body(&message, "tokens", "rate_limit_exceeded");
    if let Err(e) = hostcalls::send_http_response(
        429,
        vec![
            ("content-type", "application/json"),
            ("retry-after", &retry),
        ],
        Some(body.as_bytes()),
    ) {
        warn!("llm-token-limit: cannot answer 429: {e:?}");
    }
}

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

#[cfg(feature = "redis")]
impl Limit {
    /// The caller's Redis key of the current window and the seconds until
    /// the window ends.
    fn redis_key(&self, r: &RedisConfig) -> (String, u64) {
        let window = self.config.window_seconds;
        let now = self.now();
        let index = now / window;
        let end = index.saturating_add(1).saturating_mul(window);
        (
            format!("{}:{}:{index}", r.key_prefix, self.who),
            end.saturating_sub(now),
        )
    }

    /// `GET` of the caller's tokens in this window: pauses the request
    /// until the answer, or lets it pass if the call cannot start.
    fn check_in_redis(&mut self, budget: u64) -> Action {
        let Some(r) = &self.config.redis else {
            return Action::Continue;
        };
        let (key, retry) = self.redis_key(r);
        match redis::check(
            r,
            self.context_id,
            &key,
            &self.who,
            budget,
            retry,
            &self.flags,
        ) {
            Ok(()) => {
                self.flags.waiting.set(true);
                Action::Pause
            }
            Err(status) => {
                self.flags.warn_once(&format!(
                    "llm-token-limit: redis call failed (status {status}); {} let through (fail open)",
                    self.who
                ));
                Action::Continue
            }
        }
    }

    /// `INCRBY` + `EXPIRE` of the caller's key, fire and forget.
    fn charge_in_redis(&self, tokens: u64) {
        let Some(r) = &self.config.redis else {
            return;
        };
        let (key, _) = self.redis_key(r);
        let ttl = self.config.window_seconds.saturating_mul(2);
        let budget = self.config.budget(&self.who);
        redis::charge(r, &key, ttl, &self.who, tokens, budget, &self.flags);
    }
}

impl HttpContext for Limit {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.who = self.identity();
        let budget = self.config.budget(&self.who);
        #[cfg(feature = "redis")]
        if self.config.redis.is_some() {
            return self.check_in_redis(budget);
        }
        let (value, _) = self.get_shared_data(&self.key());
        let now = self.now();
        if let Some((start, used)) = parse(value.as_deref()) {
            let end = start.saturating_add(self.config.window_seconds);
            if now < end && used >= budget {
                reject(&self.who, used, budget, end - now);
                return Action::Pause;
            }
        }
        Action::Continue
    }

    /// While the Redis budget check is out, the body waits too (a 0.2.100
    /// module's paused headers let the body callbacks run).
    #[cfg(feature = "redis")]
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        if self.flags.waiting.get() {
            Action::Pause
        } else {
            Action::Continue
        }
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
                #[cfg(feature = "redis")]
                Some(u) if self.config.redis.is_some() => self.charge_in_redis(u.total),
                Some(u) => self.charge(u.total),
                None => info!("llm-token-limit: {} response without usage", self.who),
            }
        }
        Action::Continue
    }
}
