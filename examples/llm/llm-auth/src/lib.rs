//! `llm-auth`: API-key authentication for an OpenAI-compatible gateway.
//!
//! The key comes from `authorization: Bearer <key>` (or the configured
//! header, whose whole value is the key). A missing or unknown key gets a
//! 401 with an OpenAI-style error body. A known key's tenant goes upstream
//! in `tenant_header`, and into the stream's filter state (`llm_tenant`,
//! `proxy_set_property`) for the filters after this one; the key header
//! is removed if `remove_key_header` is set. A client-sent tenant header
//! is always replaced, so it cannot be forged.
//!
//! Configuration (JSON; README.md):
//! `{"keys": {"sk-alice": "acme"}, "header": "authorization",
//!   "tenant_header": "x-llm-tenant", "remove_key_header": true}`.

use std::collections::HashMap;
use std::rc::Rc;

use llm_common::{key_of, openai};
use log::{info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(AuthRoot { config: None })
    });
}}

/// The filter-state name later filters read the tenant from.
const TENANT_PROPERTY: &str = "llm_tenant";

fn default_header() -> String {
    "authorization".into()
}

fn default_tenant_header() -> String {
    "x-llm-tenant".into()
}

/// The plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// API key → tenant.
    keys: HashMap<String, String>,
    /// Where the key is: `authorization` (`Bearer <key>`) or another header.
    #[serde(default = "default_header")]
    header: String,
    /// The request header that carries the tenant upstream.
    #[serde(default = "default_tenant_header")]
    tenant_header: String,
    /// Remove the key header before the request goes upstream.
    #[serde(default)]
    remove_key_header: bool,
}

struct AuthRoot {
    config: Option<Rc<Config>>,
}

impl Context for AuthRoot {}

impl RootContext for AuthRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(c) => {
                info!(
                    "llm-auth: {} key(s), key header `{}`",
                    c.keys.len(),
                    c.header
                );
                self.config = Some(Rc::new(c));
                true
            }
            Err(e) => {
                warn!("llm-auth: bad configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = Rc::clone(self.config.as_ref()?);
        Some(Box::new(Auth { config }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Auth {
    config: Rc<Config>,
}

impl Context for Auth {}

impl Auth {
    fn deny(&self, message: &str) -> Action {
        let body = openai::error_body(message, "invalid_request_error", "invalid_api_key");
        self.send_http_response(
            401,
            vec![("content-type", "application/json")],
            Some(body.as_bytes()),
        );
        Action::Pause
    }
}

impl HttpContext for Auth {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let c = Rc::clone(&self.config);
        let Some(value) = self.get_http_request_header(&c.header) else {
            info!("llm-auth: 401 no key in `{}`", c.header);
            return self.deny("You didn't provide an API key.");
        };
        let tenant = key_of(&c.header, &value).and_then(|k| c.keys.get(&k));
        let Some(tenant) = tenant else {
            info!("llm-auth: 401 unknown key");
            return self.deny("Incorrect API key provided.");
        };
        info!("llm-auth: tenant={tenant}");
        self.set_http_request_header(&c.tenant_header, Some(tenant));
        if c.remove_key_header {
            self.set_http_request_header(&c.header, None);
        }
        self.set_property(vec![TENANT_PROPERTY], Some(tenant.as_bytes()));
        Action::Continue
    }
}
