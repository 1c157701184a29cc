//! `llm-moderation`: content moderation by a tiny model inside the
//! filter, a naive-Bayes text classifier trained offline
//! (`data/train.tsv`, a few dozen lines) and compiled in
//! (`src/weights.rs`, generated; llm-common `classifier`).
//!
//! The request body (`application/json`) is buffered, and the texts of
//! `messages[].content` are scored together. At or above `threshold`
//! (the probability of `flagged`):
//!
//! * `mode: block`: a 400 with an OpenAI-style error body
//!   (`code: content_policy_violation`); the request never goes upstream;
//! * `mode: annotate`: the request goes on; the client's response gets
//!   `<header>: flagged; score=0.97` (`ok; score=0.03` below the
//!   threshold), and so does the upstream request with `upstream_header`.
//!
//! The request headers go on at once, so in `block` mode the upstream
//! has seen the headers of a request that gets the 400 (as with any
//! filter that answers from a body callback). With `upstream_header:
//! true` the filter holds the request headers until the verdict (header
//! callback result 1), which is StopIteration only when the filter runs
//! with Envoy's `allow_on_headers_stop_iteration: true`; without it the
//! proxy stops the body callbacks too and the request stalls. A body that
//! is not JSON passes unscored.
//!
//! Configuration (JSON, optional; README.md):
//! `{"mode": "block", "threshold": 0.5, "header": "x-llm-moderation",
//!   "upstream_header": false}`.

use std::rc::Rc;

use llm_common::classifier::Model;
use llm_common::{is_json, openai};
use log::{info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use serde_json::Value;

mod weights;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(ModerationRoot {
            config: Rc::new(Config::default()),
            model: Rc::new(Model::new(weights::DOCS, weights::WORDS, weights::VOCAB)),
        })
    });
}}

/// What a flagged request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// A 400.
    Block,
    /// A request header.
    Annotate,
}

fn default_threshold() -> f64 {
    0.5
}

fn default_header() -> String {
    "x-llm-moderation".into()
}

/// The plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_mode")]
    mode: Mode,
    /// The flagged probability from which a request is flagged.
    #[serde(default = "default_threshold")]
    threshold: f64,
    /// The header of `annotate`.
    #[serde(default = "default_header")]
    header: String,
    /// Hold the request headers until the verdict and add the annotation
    /// to them too (needs `allow_on_headers_stop_iteration`).
    #[serde(default)]
    upstream_header: bool,
}

fn default_mode() -> Mode {
    Mode::Block
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Block,
            threshold: default_threshold(),
            header: default_header(),
            upstream_header: false,
        }
    }
}

struct ModerationRoot {
    config: Rc<Config>,
    model: Rc<Model>,
}

impl Context for ModerationRoot {}

impl RootContext for ModerationRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Config>(&bytes) {
                Ok(c) if (0.0..=1.0).contains(&c.threshold) => self.config = Rc::new(c),
                Ok(_) => {
                    warn!("llm-moderation: bad configuration: threshold must be in 0..=1");
                    return false;
                }
                Err(e) => {
                    warn!("llm-moderation: bad configuration: {e}");
                    return false;
                }
            }
        }
        info!(
            "llm-moderation: mode={:?} threshold={} vocabulary={}",
            self.config.mode,
            self.config.threshold,
            weights::VOCAB.len()
        );
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Moderation {
            config: Rc::clone(&self.config),
            model: Rc::clone(&self.model),
            json: false,
            annotation: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Moderation {
    config: Rc<Config>,
    model: Rc<Model>,
    json: bool,
    /// The verdict for the response header (`annotate`).
    annotation: Option<String>,
}

impl Context for Moderation {}

impl HttpContext for Moderation {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let ct = self.get_http_request_header("content-type");
        self.json = !end_of_stream && is_json(ct.as_deref());
        if self.json && self.config.mode == Mode::Annotate && self.config.upstream_header {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.json {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
            info!("llm-moderation: request body is not JSON, not scored");
            return Action::Continue;
        };
        let text = openai::message_texts(&doc).join("\n");
        let p = self.model.flagged_probability(&text);
        let flagged = p >= self.config.threshold;
        let verdict = if flagged { "flagged" } else { "ok" };
        info!("llm-moderation: {verdict} score={p:.2}");
        match self.config.mode {
            Mode::Block if flagged => {
                let body = openai::error_body(
                    "Your request was rejected by the content policy.",
                    "invalid_request_error",
                    "content_policy_violation",
                );
                self.send_http_response(
                    400,
                    vec![("content-type", "application/json")],
                    Some(body.as_bytes()),
                );
                return Action::Pause;
            }
            Mode::Block => {}
            Mode::Annotate => {
                let value = format!("{verdict}; score={p:.2}");
                if self.config.upstream_header {
                    self.set_http_request_header(&self.config.header, Some(&value));
                }
                self.annotation = Some(value);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(value) = self.annotation.take() {
            self.set_http_response_header(&self.config.header, Some(&value));
        }
        Action::Continue
    }
}
