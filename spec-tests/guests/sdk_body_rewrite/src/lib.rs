//! `guest_sdk_body_rewrite`: the body-rewriting filter SDK users ship:
//! buffer the whole body with `StopIterationAndBuffer` until
//! `end_of_stream`, replace patterns, write the body back (ABI reference
//! §4.2, §11.2, §11.4).
//!
//! Headers decide whether a message is rewritten (its `content-type`
//! starts with one of the configured prefixes and there are rules for that
//! direction). A rewritten message loses its `content-length` in the header
//! callback, before the headers continue, because the headers cannot be
//! changed once they have gone on and the body's length will change.
//! Contract: `spec-tests/guests/README.md`.

use std::rc::Rc;

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(BodyRoot { config: Rc::new(Config::default()) })
    });
}}

/// One replacement: every occurrence of `from` becomes `to`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Replace {
    from: String,
    to: String,
}

fn default_content_types() -> Vec<String> {
    vec!["text/".to_owned()]
}

/// The plugin configuration (JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    request: Vec<Replace>,
    #[serde(default)]
    response: Vec<Replace>,
    /// `content-type` prefixes of the messages to rewrite.
    #[serde(default = "default_content_types")]
    content_types: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request: Vec::new(),
            response: Vec::new(),
            content_types: default_content_types(),
        }
    }
}

impl Config {
    fn applies(&self, content_type: Option<&str>) -> bool {
        content_type.is_some_and(|ct| {
            self.content_types
                .iter()
                .any(|p| ct.to_ascii_lowercase().starts_with(&p.to_ascii_lowercase()))
        })
    }
}

/// Replaces every non-overlapping occurrence of `from` in `data`, left to
/// right; returns the new bytes and the number of replacements.
fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> (Vec<u8>, usize) {
    if from.is_empty() {
        return (data.to_vec(), 0);
    }
    let mut out = Vec::with_capacity(data.len());
    let mut count = 0;
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
            count += 1;
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    (out, count)
}

fn rewrite(rules: &[Replace], body: &[u8]) -> (Vec<u8>, usize) {
    let mut current = body.to_vec();
    let mut total = 0;
    for r in rules {
        let (next, n) = replace_all(&current, r.from.as_bytes(), r.to.as_bytes());
        current = next;
        total += n;
    }
    (current, total)
}

struct BodyRoot {
    config: Rc<Config>,
}

impl Context for BodyRoot {}

impl RootContext for BodyRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Config>(&bytes) {
                Ok(c) => self.config = Rc::new(c),
                Err(e) => {
                    error!("sdk_body_rewrite: bad configuration: {e}");
                    return false;
                }
            }
        }
        info!(
            "sdk_body_rewrite: configured request_rules={} response_rules={} content_types={}",
            self.config.request.len(),
            self.config.response.len(),
            self.config.content_types.join("|")
        );
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(BodyRewrite {
            config: Rc::clone(&self.config),
            request: false,
            response: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct BodyRewrite {
    config: Rc<Config>,
    /// The request body is being rewritten.
    request: bool,
    /// The response body is being rewritten.
    response: bool,
}

impl Context for BodyRewrite {}

impl HttpContext for BodyRewrite {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let ct = self.get_http_request_header("content-type");
        if !end_of_stream && !self.config.request.is_empty() && self.config.applies(ct.as_deref()) {
            info!(
                "sdk_body_rewrite: request will be rewritten content-type={}",
                ct.unwrap_or_default()
            );
            self.set_http_request_header("content-length", None);
            self.request = true;
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.request {
            return Action::Continue;
        }
        if !end_of_stream {
            // StopIterationAndBuffer: the next call sees the whole body so far.
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let (new, n) = rewrite(&self.config.request, &body);
        info!(
            "sdk_body_rewrite: request body {} -> {} bytes, {n} replacement(s)",
            body.len(),
            new.len()
        );
        if n > 0 {
            self.set_http_request_body(0, body_size, &new);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let ct = self.get_http_response_header("content-type");
        if !end_of_stream && !self.config.response.is_empty() && self.config.applies(ct.as_deref())
        {
            info!(
                "sdk_body_rewrite: response will be rewritten content-type={}",
                ct.unwrap_or_default()
            );
            self.set_http_response_header("content-length", None);
            self.response = true;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.response {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self
            .get_http_response_body(0, body_size)
            .unwrap_or_default();
        let (new, n) = rewrite(&self.config.response, &body);
        info!(
            "sdk_body_rewrite: response body {} -> {} bytes, {n} replacement(s)",
            body.len(),
            new.len()
        );
        if n > 0 {
            self.set_http_response_body(0, body_size, &new);
        }
        Action::Continue
    }
}
