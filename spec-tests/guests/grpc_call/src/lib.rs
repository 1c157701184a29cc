//! `guest_grpc_call`: auth through a unary gRPC callout (ABI reference
//! §4.5, §11.27).
//!
//! `on_http_request_headers` calls `auth.Auth/Check` on the cluster `grpc`
//! with the request's `x-token` as the message and `x-trace` metadata, and
//! pauses. `on_grpc_call_response`: status 0 → reads the response message,
//! adds request header `x-grpc-user: <message>` and resumes; any other
//! status → local 403 with header `x-grpc-status: <status>`. Contract:
//! `spec-tests/guests/README.md`.

use std::time::Duration;

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(GrpcRoot) });
}}

struct GrpcRoot;

impl Context for GrpcRoot {}

impl RootContext for GrpcRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(GrpcAuth))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct GrpcAuth;

impl Context for GrpcAuth {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        info!("grpc_call response token_id={token_id} status={status_code} size={response_size}");
        if status_code == 0 {
            let user = self
                .get_grpc_call_response_body(0, response_size)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            info!("grpc_call allowed user={user}");
            self.add_http_request_header("x-grpc-user", &user);
            self.resume_http_request();
        } else {
            let status = status_code.to_string();
            info!("grpc_call denied status={status}");
            self.send_http_response(403, vec![("x-grpc-status", &status)], Some(b"denied\n"));
        }
    }
}

impl HttpContext for GrpcAuth {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let token = self.get_http_request_header("x-token").unwrap_or_default();
        match self.dispatch_grpc_call(
            "grpc",
            "auth.Auth",
            "Check",
            vec![("x-trace", b"t1".as_slice())],
            Some(token.as_bytes()),
            Duration::from_secs(5),
        ) {
            Ok(token_id) => {
                info!("grpc_call dispatched token_id={token_id}");
                Action::Pause
            }
            Err(status) => {
                info!("grpc_call dispatch failed status={status:?}");
                self.send_http_response(503, vec![], Some(b"grpc dispatch failed\n"));
                Action::Pause
            }
        }
    }
}
