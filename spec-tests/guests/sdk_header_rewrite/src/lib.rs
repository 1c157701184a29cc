//! `guest_sdk_header_rewrite`: the header-rewriting filter SDK users ship,
//! driven by a JSON plugin configuration (ABI reference §4.3, §11.16,
//! §11.18).
//!
//! `on_configure` parses the configuration with serde; a configuration that
//! does not parse makes `on_configure` return false (the plugin is refused).
//! Request headers and response headers are rewritten with `remove`, then
//! `set` (replace, or add when absent), then `add` (append, so a repeated
//! name gets another value). `copy_to_response` carries request header
//! values over to the response. Contract: `spec-tests/guests/README.md`.

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(RewriteRoot { config: Rc::new(Config::default()) })
    });
}}

/// The rules for one direction.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rules {
    /// Header names to remove.
    #[serde(default)]
    remove: Vec<String>,
    /// `[name, value]`: replace the value (or add the header if absent).
    #[serde(default)]
    set: Vec<(String, String)>,
    /// `[name, value]`: append another value.
    #[serde(default)]
    add: Vec<(String, String)>,
}

impl Rules {
    fn len(&self) -> usize {
        self.remove.len() + self.set.len() + self.add.len()
    }
}

/// The plugin configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    request: Rules,
    #[serde(default)]
    response: Rules,
    /// Request header names whose values are added to the response.
    #[serde(default)]
    copy_to_response: Vec<String>,
}

struct RewriteRoot {
    config: Rc<Config>,
}

impl Context for RewriteRoot {}

impl RootContext for RewriteRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config: Config = if bytes.iter().all(u8::is_ascii_whitespace) {
            Config::default()
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(c) => c,
                Err(e) => {
                    error!("sdk_header_rewrite: bad configuration: {e}");
                    return false;
                }
            }
        };
        info!(
            "sdk_header_rewrite: configured request_rules={} response_rules={} copy_to_response={}",
            config.request.len(),
            config.response.len(),
            config.copy_to_response.len()
        );
        self.config = Rc::new(config);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Rewrite {
            config: Rc::clone(&self.config),
            copied: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Rewrite {
    config: Rc<Config>,
    /// Request header values to add to the response (`copy_to_response`).
    copied: Vec<(String, String)>,
}

impl Context for Rewrite {}

impl HttpContext for Rewrite {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Read what goes to the response before the request rules run, so
        // the client sees what it sent.
        for name in &self.config.copy_to_response {
            match self.get_http_request_header(name) {
                Some(v) => {
                    info!("sdk_header_rewrite: copy {name}={v}");
                    self.copied.push((name.clone(), v));
                }
                None => info!("sdk_header_rewrite: copy {name} absent"),
            }
        }
        let rules = &self.config.request;
        for name in &rules.remove {
            info!("sdk_header_rewrite: request remove {name}");
            self.set_http_request_header(name, None);
        }
        for (name, value) in &rules.set {
            info!("sdk_header_rewrite: request set {name}={value}");
            self.set_http_request_header(name, Some(value));
        }
        for (name, value) in &rules.add {
            info!("sdk_header_rewrite: request add {name}={value}");
            self.add_http_request_header(name, value);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let rules = &self.config.response;
        for name in &rules.remove {
            info!("sdk_header_rewrite: response remove {name}");
            self.set_http_response_header(name, None);
        }
        for (name, value) in &rules.set {
            info!("sdk_header_rewrite: response set {name}={value}");
            self.set_http_response_header(name, Some(value));
        }
        for (name, value) in &rules.add {
            info!("sdk_header_rewrite: response add {name}={value}");
            self.add_http_response_header(name, value);
        }
        for (name, value) in &self.copied {
            self.add_http_response_header(name, value);
        }
        Action::Continue
    }
}
