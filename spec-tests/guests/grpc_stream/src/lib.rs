//! `guest_grpc_stream`: gRPC streams (ABI reference §4.5, §11.27).
//!
//! `on_http_request_headers` opens a stream to `echo.Echo/<x-grpc-method>`
//! on cluster `x-grpc-cluster` (default `grpc`) with metadata
//! `x-trace: t1`, sends the comma-separated messages of `x-grpc-send`,
//! optionally half-closes or cancels, and pauses. Every stream callback is
//! recorded; on close (or cancel) the request is answered locally with the
//! record as the body. Contract: `spec-tests/guests/README.md`.

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(StreamRoot) });
}}

struct StreamRoot;

impl Context for StreamRoot {}

impl RootContext for StreamRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(GrpcStream::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Default)]
struct GrpcStream {
    token: Option<u32>,
    events: Vec<String>,
    messages: usize,
    cancel_after: Option<usize>,
    close_after_remote: bool,
    answered: bool,
}

/// `<key>=<value>` for the pairs whose key starts with `x-` or `grpc-`.
fn interesting(pairs: &[(String, proxy_wasm::types::Bytes)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if k.starts_with("x-") || k.starts_with("grpc-") {
            out.push(' ');
            out.push_str(k);
            out.push('=');
            out.push_str(&String::from_utf8_lossy(v));
        }
    }
    out
}

impl GrpcStream {
    fn record(&mut self, line: String) {
        info!("grpc_stream {line}");
        self.events.push(line);
    }

    fn answer(&mut self) {
        if self.answered {
            return;
        }
        self.answered = true;
        let mut body = self.events.join("\n");
        body.push('\n');
        let token = self.token.map(|t| t.to_string()).unwrap_or_default();
        self.send_http_response(
            200,
            vec![("x-grpc-stream-token", token.as_str())],
            Some(body.as_bytes()),
        );
    }

    fn cancel(&mut self, token: u32) {
        self.cancel_grpc_stream(token);
        self.record("cancelled".into());
        self.answer();
    }
}

impl Context for GrpcStream {
    fn on_grpc_stream_initial_metadata(&mut self, _token_id: u32, num_elements: u32) {
        let pairs = interesting(&self.get_grpc_stream_initial_metadata());
        self.record(format!("initial n={num_elements}{pairs}"));
    }

    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        let message = self
            .get_grpc_stream_message(0, message_size)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        self.record(format!("message {message}"));
        self.messages += 1;
        if self.cancel_after == Some(self.messages) {
            self.cancel(token_id);
        }
    }

    fn on_grpc_stream_trailing_metadata(&mut self, _token_id: u32, num_elements: u32) {
        let pairs = interesting(&self.get_grpc_stream_trailing_metadata());
        self.record(format!("trailing n={num_elements}{pairs}"));
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        let (_, message) = self.get_grpc_status();
        let message = message.unwrap_or_default();
        self.record(format!("close status={status_code} message={message}"));
        if self.close_after_remote {
            let r = proxy_wasm::hostcalls::close_grpc_stream(token_id);
            self.record(format!("local close after remote close: {r:?}"));
        }
        self.answer();
    }
}

impl HttpContext for GrpcStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let header = |name: &str| self.get_http_request_header(name);
        let cluster = header("x-grpc-cluster").unwrap_or_else(|| "grpc".into());
        let method = header("x-grpc-method").unwrap_or_else(|| "Chat".into());
        let send = header("x-grpc-send");
        let end = header("x-grpc-end").unwrap_or_default();
        let cancel_after = header("x-grpc-cancel-after").and_then(|n| n.parse().ok());
        let close_after_remote = header("x-grpc-close-after-remote").is_some();
        self.cancel_after = cancel_after;
        self.close_after_remote = close_after_remote;
        let token = match self.open_grpc_stream(
            &cluster,
            "echo.Echo",
            &method,
            vec![("x-trace", b"t1".as_slice())],
        ) {
            Ok(token) => token,
            Err(status) => {
                info!("grpc_stream open failed status={status:?}");
                let body = format!("open failed {status:?}\n");
                self.send_http_response(503, vec![], Some(body.as_bytes()));
                return Action::Pause;
            }
        };
        info!("grpc_stream opened token_id={token}");
        self.token = Some(token);
        let messages: Vec<String> = send
            .map(|s| s.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        for (i, m) in messages.iter().enumerate() {
            let eos = end == "eos" && i + 1 == messages.len();
            self.send_grpc_stream_message(token, Some(m.as_bytes()), eos);
            info!("grpc_stream sent {m} end_stream={eos}");
        }
        if end == "eos" && messages.is_empty() {
            self.send_grpc_stream_message(token, None, true);
        }
        if end == "close" {
            self.close_grpc_stream(token);
            info!("grpc_stream closed locally");
        }
        if self.cancel_after == Some(0) {
            self.cancel(token);
        }
        Action::Pause
    }
}
