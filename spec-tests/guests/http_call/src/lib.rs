//! `guest_http_call`: an auth filter built on `proxy_http_call` (ABI
//! reference §4.5, §11.6, §11.7).
//!
//! `on_http_request_headers` dispatches `GET /auth` to the cluster `auth`
//! (or `x-auth-cluster`), forwarding the request's `x-token`, and pauses.
//! `on_http_call_response` reads the call's status, headers and body:
//! status 200 → adds request header `x-auth-user` (from the call response
//! header `x-auth-user`, else its body) and resumes the request; anything
//! else (including a failed call) → local 403. Contract:
//! `spec-tests/guests/README.md`.

use std::time::Duration;

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(AuthRoot) });
}}

struct AuthRoot;

impl Context for AuthRoot {}

impl RootContext for AuthRoot {
    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Auth { context_id }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Auth {
    context_id: u32,
}

impl Context for Auth {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        info!(
            "http_call response context_id={} token_id={token_id} headers={num_headers} body_size={body_size} trailers={num_trailers}",
            self.context_id
        );
        let headers = self.get_http_call_response_headers_bytes();
        for (k, v) in &headers {
            info!(
                "http_call response header {k}={}",
                String::from_utf8_lossy(v)
            );
        }
        let body = self
            .get_http_call_response_body(0, body_size)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        info!("http_call body={body}");
        // A failed call carries no response map: reading it would get
        // BAD_ARGUMENT (as in Envoy), so check the count first.
        let status = if num_headers == 0 {
            None
        } else {
            self.get_http_call_response_header(":status")
        };
        info!("http_call status={}", status.as_deref().unwrap_or("none"));
        if status.as_deref() == Some("200") {
            let user = self
                .get_http_call_response_header("x-auth-user")
                .unwrap_or_else(|| body.trim().to_owned());
            info!("http_call allowed user={user}");
            self.add_http_request_header("x-auth-user", &user);
            self.resume_http_request();
        } else {
            let status = status.unwrap_or_else(|| "none".to_owned());
            info!("http_call denied status={status}");
            self.send_http_response(403, vec![("x-auth-status", &status)], Some(b"forbidden\n"));
        }
    }
}

impl HttpContext for Auth {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let token = self.get_http_request_header("x-token").unwrap_or_default();
        let cluster = self
            .get_http_request_header("x-auth-cluster")
            .unwrap_or_else(|| "auth".to_owned());
        let mut headers = vec![
            (":method", "GET"),
            (":path", "/auth"),
            (":authority", "auth"),
        ];
        if !token.is_empty() {
            headers.push(("x-token", token.as_str()));
        }
        match self.dispatch_http_call(&cluster, headers, None, vec![], Duration::from_secs(5)) {
            Ok(token_id) => {
                info!(
                    "http_call dispatched cluster={cluster} token_id={token_id} auth_token={token}"
                );
                Action::Pause
            }
            Err(status) => {
                info!("http_call dispatch failed cluster={cluster} status={status:?}");
                self.send_http_response(503, vec![], Some(b"auth dispatch failed\n"));
                Action::Pause
            }
        }
    }
}
