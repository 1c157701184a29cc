//! `guest_sdk_http_auth`: the external-authorization filter SDK users ship:
//! an HTTP callout to an auth cluster, with the request paused until the
//! answer (ABI reference §4.5, §11.1, §11.6, §11.7).
//!
//! `on_http_request_headers` lets configured public prefixes through,
//! answers 401 when the request has no `authorization` header, and
//! otherwise calls the auth cluster and pauses. `on_http_call_response`:
//! a 200 adds the user the auth service names (response header
//! `x-auth-user`) as a request header, optionally strips `authorization`,
//! and resumes; any other status answers 403; a failed call (no headers)
//! answers 503. Contract: `spec-tests/guests/README.md`.

use std::rc::Rc;
use std::time::Duration;

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(AuthRoot { config: Rc::new(Config::default()) })
    });
}}

fn default_cluster() -> String {
    "ext-authz".to_owned()
}
fn default_path() -> String {
    "/check".to_owned()
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_user_header() -> String {
    "x-user".to_owned()
}

/// The plugin configuration (JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_cluster")]
    cluster: String,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    /// The request header that carries the authenticated user upstream.
    #[serde(default = "default_user_header")]
    user_header: String,
    /// Remove `authorization` before the request goes upstream.
    #[serde(default)]
    strip_authorization: bool,
    /// Path prefixes that need no authorization.
    #[serde(default)]
    public_prefixes: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster: default_cluster(),
            path: default_path(),
            timeout_ms: default_timeout_ms(),
            user_header: default_user_header(),
            strip_authorization: false,
            public_prefixes: Vec::new(),
        }
    }
}

struct AuthRoot {
    config: Rc<Config>,
}

impl Context for AuthRoot {}

impl RootContext for AuthRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Config>(&bytes) {
                Ok(c) => self.config = Rc::new(c),
                Err(e) => {
                    error!("sdk_http_auth: bad configuration: {e}");
                    return false;
                }
            }
        }
        info!(
            "sdk_http_auth: configured cluster={} path={} timeout_ms={}",
            self.config.cluster, self.config.path, self.config.timeout_ms
        );
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Auth {
            config: Rc::clone(&self.config),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Auth {
    config: Rc<Config>,
}

impl Context for Auth {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        // A failed call (reset) has no response headers; reading the map
        // then is BAD_ARGUMENT in Envoy, which the SDK turns into a panic.
        if num_headers == 0 {
            info!("sdk_http_auth: call token_id={token_id} failed");
            self.send_http_response(503, vec![], Some(b"auth service unavailable\n"));
            return;
        }
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_default();
        info!("sdk_http_auth: call token_id={token_id} status={status} body_size={body_size}");
        if status == "200" {
            let user = self
                .get_http_call_response_header("x-auth-user")
                .unwrap_or_else(|| "anonymous".to_owned());
            info!("sdk_http_auth: allowed user={user}");
            self.set_http_request_header(&self.config.user_header, Some(&user));
            if self.config.strip_authorization {
                self.set_http_request_header("authorization", None);
            }
            self.resume_http_request();
        } else {
            info!("sdk_http_auth: denied status={status}");
            self.send_http_response(403, vec![("x-auth-status", &status)], Some(b"forbidden\n"));
        }
    }
}

impl HttpContext for Auth {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        if self
            .config
            .public_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
        {
            info!("sdk_http_auth: public path={path}");
            return Action::Continue;
        }
        let Some(credentials) = self.get_http_request_header("authorization") else {
            info!("sdk_http_auth: no credentials path={path}");
            self.send_http_response(
                401,
                vec![("www-authenticate", "Bearer realm=\"vessel\"")],
                Some(b"missing credentials\n"),
            );
            return Action::Pause;
        };
        let method = self.get_http_request_header(":method").unwrap_or_default();
        let config = Rc::clone(&self.config);
        match self.dispatch_http_call(
            &config.cluster,
            vec![
                (":method", "GET"),
                (":path", &config.path),
                (":authority", &config.cluster),
                ("authorization", &credentials),
                ("x-original-method", &method),
                ("x-original-path", &path),
            ],
            None,
            vec![],
            Duration::from_millis(config.timeout_ms),
        ) {
            Ok(token_id) => {
                info!(
                    "sdk_http_auth: checking path={path} cluster={} token_id={token_id}",
                    config.cluster
                );
                Action::Pause
            }
            Err(status) => {
                info!(
                    "sdk_http_auth: dispatch to {} failed: {status:?}",
                    config.cluster
                );
                self.send_http_response(503, vec![], Some(b"auth service unavailable\n"));
                Action::Pause
            }
        }
    }
}
