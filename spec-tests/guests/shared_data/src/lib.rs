//! `guest_shared_data`: `proxy_get_shared_data` / `proxy_set_shared_data`
//! with CAS (ABI reference §4.6, §11.14).
//!
//! * Every request increments the shared counter `shared_data.requests`
//!   (get → set with the returned CAS, retried on CAS_MISMATCH) and echoes the
//!   new value as response header `x-request-count`.
//! * `x-shared-op: cas-demo` shows a CAS mismatch then a CAS success on key
//!   `shared_data.cas-demo`.
//! * `x-shared-set: <key>=<value>` sets a key unconditionally.
//! * `x-shared-get: <key>` reads a key and echoes it as `x-shared-value` /
//!   `x-shared-cas`.
//!
//! Exact log lines: `spec-tests/guests/README.md` (the contract).

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(SharedRoot) });
}}

const COUNTER_KEY: &str = "shared_data.requests";
const CAS_DEMO_KEY: &str = "shared_data.cas-demo";
/// Upper bound on CAS retries for the counter (only contention retries).
const MAX_RETRIES: u32 = 100;

struct SharedRoot;

impl Context for SharedRoot {}

impl RootContext for SharedRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Shared::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Default)]
struct Shared {
    count: Option<u64>,
    echo: Option<(String, String)>,
}

impl Shared {
    /// Increments the shared request counter; returns the new value.
    fn increment_counter(&self) -> Option<u64> {
        for _ in 0..MAX_RETRIES {
            let (value, cas) = self.get_shared_data(COUNTER_KEY);
            let current = value
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            let next = current + 1;
            match self.set_shared_data(COUNTER_KEY, Some(next.to_string().as_bytes()), cas) {
                Ok(()) => {
                    info!("shared_data: counter={next}");
                    return Some(next);
                }
                Err(Status::CasMismatch) => info!("shared_data: counter cas mismatch, retrying"),
                Err(other) => {
                    info!("shared_data: counter set failed: {other:?}");
                    return None;
                }
            }
        }
        info!("shared_data: counter gave up after {MAX_RETRIES} retries");
        None
    }

    fn cas_demo(&self) {
        // Make sure the key exists (a non-zero CAS on a missing key is not checked).
        self.set_shared_data(CAS_DEMO_KEY, Some(b"v1"), None).ok();
        let (_, cas) = self.get_shared_data(CAS_DEMO_KEY);
        let cas = cas.unwrap_or(0);
        info!("shared_data: cas-demo cas={cas}");
        // Any non-zero value other than the current CAS must be rejected.
        let stale = if cas == u32::MAX { 1 } else { cas + 1 };
        match self.set_shared_data(CAS_DEMO_KEY, Some(b"stale"), Some(stale)) {
            Err(Status::CasMismatch) => info!("cas mismatch"),
            Ok(()) => info!("cas mismatch NOT reported"),
            Err(other) => info!("cas stale set failed: {other:?}"),
        }
        match self.set_shared_data(CAS_DEMO_KEY, Some(b"v2"), Some(cas)) {
            Ok(()) => info!("cas ok"),
            Err(other) => info!("cas set failed: {other:?}"),
        }
        let (value, new_cas) = self.get_shared_data(CAS_DEMO_KEY);
        let value = value.map(|v| String::from_utf8_lossy(&v).into_owned());
        info!(
            "shared_data: cas-demo value={value:?} cas_changed={}",
            new_cas.unwrap_or(0) != cas
        );
    }
}

impl Context for Shared {}

impl HttpContext for Shared {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.count = self.increment_counter();

        if self.get_http_request_header("x-shared-op").as_deref() == Some("cas-demo") {
            self.cas_demo();
        }
        if let Some(kv) = self.get_http_request_header("x-shared-set") {
            let (key, value) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            match self.set_shared_data(key, Some(value.as_bytes()), None) {
                Ok(()) => info!("shared_data: set {key}={value}"),
                Err(status) => info!("shared_data: set {key} failed: {status:?}"),
            }
        }
        if let Some(key) = self.get_http_request_header("x-shared-get") {
            let (value, cas) = self.get_shared_data(&key);
            let value = value.map(|v| String::from_utf8_lossy(&v).into_owned());
            info!("shared_data: get {key}={value:?} cas={}", cas.unwrap_or(0));
            self.echo = Some((
                value.unwrap_or_else(|| "<none>".to_owned()),
                cas.unwrap_or(0).to_string(),
            ));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(count) = self.count {
            self.add_http_response_header("x-request-count", &count.to_string());
        }
        if let Some((value, cas)) = self.echo.take() {
            self.add_http_response_header("x-shared-value", &value);
            self.add_http_response_header("x-shared-cas", &cas);
        }
        Action::Continue
    }
}
