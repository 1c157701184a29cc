//! `llm-billing`: prompt and completion tokens per tenant and model, as
//! counter metrics.
//!
//! For each answered request the filter adds, to counters named
//!
//! * `llm_prompt_tokens.tenant.<tenant>.model.<model>`,
//! * `llm_completion_tokens.tenant.<tenant>.model.<model>`,
//! * `llm_requests.tenant.<tenant>.model.<model>`,
//!
//! the response's `usage` (the JSON body's, or the last event of a
//! `text/event-stream` that has one). `/stats/prometheus` shows them as
//! `llm_prompt_tokens_tenant_acme_model_gpt-4o` with `.` and `-` made `_`
//! (`llm_prompt_tokens_tenant_acme_model_gpt_4o`). The tenant is
//! `llm-auth`'s (filter state `llm_tenant`), else the `identity_header`
//! request header, else `anonymous`; the model is the response's `model`,
//! else the request's. Names are cut to safe labels (64 bytes of
//! `[A-Za-z0-9_-]`); past `max_series` tenant/model pairs new pairs count
//! under `tenant.other.model.other`, so a client cannot make the host
//! hold unbounded metrics. Bodies pass chunk by chunk; the filter reads
//! bounded copies (1 MiB each).
//!
//! Configuration (JSON, optional; README.md):
//! `{"identity_header": "x-llm-tenant", "max_series": 1000}`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use llm_common::{Tee, UsageTap, label, openai};
use log::{info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use serde::Deserialize;
use serde_json::Value;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(BillingRoot { config: Rc::new(Config::default()) })
    });
}}

const MAX_COPY: usize = 1 << 20;

fn default_identity_header() -> String {
    "x-llm-tenant".into()
}

fn default_max_series() -> usize {
    1000
}

/// The plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The request header naming the tenant when no `llm_tenant` filter
    /// state is set.
    #[serde(default = "default_identity_header")]
    identity_header: String,
    /// The most tenant/model pairs with metrics of their own.
    #[serde(default = "default_max_series")]
    max_series: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            identity_header: default_identity_header(),
            max_series: default_max_series(),
        }
    }
}

/// The metric ids of one tenant/model pair.
#[derive(Clone, Copy)]
struct Series {
    prompt: u32,
    completion: u32,
    requests: u32,
}

thread_local! {
    /// Metric ids by `tenant.<t>.model.<m>`: defined once per VM.
    static SERIES: RefCell<HashMap<String, Series>> = RefCell::new(HashMap::new());
}

fn series(tenant: &str, model: &str, max: usize) -> Option<Series> {
    SERIES.with(|s| {
        let mut s = s.borrow_mut();
        let mut key = format!("tenant.{tenant}.model.{model}");
        if !s.contains_key(&key) && s.len() >= max {
            key = "tenant.other.model.other".into();
        }
        if let Some(found) = s.get(&key) {
            return Some(*found);
        }
        let define =
            |what: &str| hostcalls::define_metric(MetricType::Counter, &format!("{what}.{key}"));
        let new = match (
            define("llm_prompt_tokens"),
            define("llm_completion_tokens"),
            define("llm_requests"),
        ) {
            (Ok(prompt), Ok(completion), Ok(requests)) => Series {
                prompt,
                completion,
                requests,
            },
            other => {
                warn!(
                    "llm-billing: cannot define the metrics of {key}: {:?}",
                    other.0.err()
                );
                return None;
            }
        };
        s.insert(key, new);
        Some(new)
    })
}

struct BillingRoot {
    config: Rc<Config>,
}

impl Context for BillingRoot {}

impl RootContext for BillingRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        llm_common::configure("llm-billing", &bytes, &mut self.config)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Billing {
            config: Rc::clone(&self.config),
            tenant: String::new(),
            request: Tee::new(MAX_COPY),
            response: UsageTap::Off,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Billing {
    config: Rc<Config>,
    tenant: String,
    request: Tee,
    response: UsageTap,
}

impl Context for Billing {}

impl Billing {
    fn bill(&self, doc: &Value) {
        let Some(usage) = openai::usage_of(doc) else {
            info!("llm-billing: {} response without usage", self.tenant);
            return;
        };
        let request: Option<Value> = serde_json::from_slice(self.request.bytes()).ok();
        let model = openai::model_of(doc)
            .or_else(|| request.as_ref().and_then(openai::model_of))
            .map_or_else(|| "unknown".into(), label);
        info!(
            "llm-billing: tenant={} model={model} prompt={} completion={}",
            self.tenant, usage.prompt, usage.completion
        );
        let Some(s) = series(&self.tenant, &model, self.config.max_series) else {
            return;
        };
        let add = |id, n: u64| {
            if let Err(e) = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX)) {
                warn!("llm-billing: increment_metric: {e:?}");
            }
        };
        add(s.prompt, usage.prompt);
        add(s.completion, usage.completion);
        add(s.requests, 1);
    }
}

impl HttpContext for Billing {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.tenant = match self.get_property(vec!["llm_tenant"]) {
            Some(t) => label(&String::from_utf8_lossy(&t)),
            None => self
                .get_http_request_header(&self.config.identity_header)
                .map_or_else(|| "anonymous".into(), |v| label(&v)),
        };
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if body_size > 0
            && let Some(chunk) = self.get_http_request_body(0, body_size)
        {
            self.request.push(&chunk);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            let ct = self.get_http_response_header("content-type");
            self.response = UsageTap::for_response(ct.as_deref(), MAX_COPY);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let chunk = if body_size > 0 {
            self.get_http_response_body(0, body_size)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        self.response.push(&chunk);
        if end_of_stream {
            match self.response.finish() {
                Some(doc) => self.bill(&doc),
                None => info!("llm-billing: {} response without usage", self.tenant),
            }
        }
        Action::Continue
    }
}
