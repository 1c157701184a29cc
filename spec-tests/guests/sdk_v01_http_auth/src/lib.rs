//! `guest_sdk_v01_http_auth`: the external-authorization filter of
//! `guest_sdk_http_auth`, written against `proxy-wasm` **0.1.x**, so it runs
//! on ABI 0.1.0 (reference §1.2): `proxy_get_configuration`, two-argument
//! header callbacks, `proxy_continue_request` to resume, and OK + empty for
//! a missing header.
//!
//! The plugin configuration is the auth cluster's name (default
//! `ext-authz`). No `authorization` header → 401; otherwise `GET /check`
//! on the cluster, paused until the answer: 200 → request header
//! `x-user: <x-auth-user of the answer>` and resume; anything else → 403.
//! Contract: `spec-tests/guests/README.md`.

use std::time::Duration;

use log::info;
use proxy_wasm_v01 as proxy_wasm;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

/// Entry point of a 0.1.x module (the SDK has no `main!` macro).
#[unsafe(no_mangle)]
pub extern "C" fn _start() {
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(V01AuthRoot {
            cluster: "ext-authz".to_owned(),
        })
    });
}

struct V01AuthRoot {
    cluster: String,
}

impl Context for V01AuthRoot {}

impl RootContext for V01AuthRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self
            .get_configuration()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .unwrap_or_default();
        if !config.is_empty() {
            self.cluster = config;
        }
        info!("sdk_v01_http_auth: configured cluster={}", self.cluster);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(V01Auth {
            cluster: self.cluster.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct V01Auth {
    cluster: String,
}

impl Context for V01Auth {
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) {
        let status = if num_headers == 0 {
            "none".to_owned()
        } else {
            self.get_http_call_response_header(":status")
                .unwrap_or_default()
        };
        if status == "200" {
            let user = self
                .get_http_call_response_header("x-auth-user")
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "anonymous".to_owned());
            info!("sdk_v01_http_auth: allowed user={user}");
            self.set_http_request_header("x-user", Some(&user));
            self.resume_http_request();
        } else {
            info!("sdk_v01_http_auth: denied status={status}");
            self.send_http_response(403, vec![("x-auth-status", &status)], Some(b"forbidden\n"));
        }
    }
}

impl HttpContext for V01Auth {
    fn on_http_request_headers(&mut self, _num_headers: usize) -> Action {
        // ABI 0.1.0: a missing header is OK + empty, which the SDK gives as
        // None (or an empty string).
        let credentials = self
            .get_http_request_header("authorization")
            .filter(|v| !v.is_empty());
        let Some(credentials) = credentials else {
            info!("sdk_v01_http_auth: no credentials");
            self.send_http_response(
                401,
                vec![("www-authenticate", "Bearer realm=\"vessel\"")],
                Some(b"missing credentials\n"),
            );
            return Action::Pause;
        };
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let cluster = self.cluster.clone();
        match self.dispatch_http_call(
            &cluster,
            vec![
                (":method", "GET"),
                (":path", "/check"),
                (":authority", &cluster),
                ("authorization", &credentials),
                ("x-original-path", &path),
            ],
            None,
            vec![],
            Duration::from_secs(1),
        ) {
            Ok(_) => {
                info!("sdk_v01_http_auth: checking path={path} cluster={cluster}");
                Action::Pause
            }
            Err(status) => {
                info!("sdk_v01_http_auth: dispatch to {cluster} failed: {status:?}");
                self.send_http_response(503, vec![], Some(b"auth service unavailable\n"));
                Action::Pause
            }
        }
    }
}
