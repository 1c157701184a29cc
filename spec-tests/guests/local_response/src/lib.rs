//! `guest_local_response`: `proxy_send_local_response` (ABI reference §4.4,
//! §11.3) from request headers, from the request body and from response
//! headers, selected by `:path`.
//!
//! | `:path`           | where                  | reply |
//! |-------------------|------------------------|-------|
//! | `/local/headers`  | request headers        | 403, `x-local: headers`, body `denied by headers\n` |
//! | `/local/body`     | request body (at eos)  | 400, `x-local: body`, body `request body was: <body>\n` |
//! | `/local/response` | response headers       | 500, `x-local: response`, body `replaced upstream <status>\n` |
//! | `/local/empty`    | request headers        | 204, no headers, no body |
//! | `/local/multi`    | request headers        | 200, two `set-cookie` headers, body `multi\n` |
//! | `/local/grpc`     | request headers        | gRPC reply, grpc-status 7, message `denied` |
//! | `/local/hop`      | request headers        | 200, `x-local: hop` and connection-specific headers (`transfer-encoding: chunked`, `connection: close`, `keep-alive`, `proxy-connection`), body `hop\n` |
//! | `/local/details`  | request headers        | 403, details `denied by guest`, body `denied with details\n` |
//!
//! The full contract (log lines included) is in `spec-tests/guests/README.md`.

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, GrpcStatusCode, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(LocalRoot) });
}}

struct LocalRoot;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// `proxy_send_local_response(status, details, details_size, body,
    /// body_size, headers, headers_size, grpc_status) -> status` (§4.4).
    /// The SDK's `send_http_response` always passes empty details.
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

/// A local reply with response-code details and no headers; returns the
/// host's status.
fn send_with_details(status: u32, details: &str, body: &[u8]) -> u32 {
    // An empty header map, encoded: a pair count of 0 (§5.1).
    let headers = [0u8; 4];
    // SAFETY: every pointer is valid for its size for the whole call, and
    // the host only reads through them.
    unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    }
}

impl Context for LocalRoot {}

impl RootContext for LocalRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Local::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Default)]
struct Local {
    path: String,
    /// Set once this context has sent a local reply; the reply itself may
    /// come back through on_http_response_headers (Envoy does that).
    replied: bool,
}

impl Local {
    fn reply(
        &mut self,
        where_: &str,
        status: u32,
        headers: Vec<(&str, &str)>,
        body: Option<&[u8]>,
    ) {
        info!("local_response: sending {status} from {where_}");
        self.replied = true;
        self.send_http_response(status, headers, body);
    }
}

impl Context for Local {}

impl HttpContext for Local {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.path = self.get_http_request_header(":path").unwrap_or_default();
        info!(
            "local_response: request path={} end_of_stream={end_of_stream}",
            self.path
        );
        match self.path.as_str() {
            "/local/headers" => {
                self.reply(
                    "request_headers",
                    403,
                    vec![("x-local", "headers")],
                    Some(b"denied by headers\n"),
                );
                Action::Pause
            }
            "/local/body" if end_of_stream => {
                // No body will come: answer now with an empty body.
                self.reply(
                    "request_headers",
                    400,
                    vec![("x-local", "body")],
                    Some(b"request body was: \n"),
                );
                Action::Pause
            }
            "/local/empty" => {
                self.reply("request_headers", 204, vec![], None);
                Action::Pause
            }
            "/local/multi" => {
                self.reply(
                    "request_headers",
                    200,
                    vec![
                        ("set-cookie", "a=1"),
                        ("set-cookie", "b=2"),
                        ("x-local", "multi"),
                    ],
                    Some(b"multi\n"),
                );
                Action::Pause
            }
            "/local/hop" => {
                // What a filter that copies a callout's response headers
                // into its reply sends: the proxy must frame the body itself.
                self.reply(
                    "request_headers",
                    200,
                    vec![
                        ("transfer-encoding", "chunked"),
                        ("connection", "close"),
                        ("keep-alive", "timeout=5"),
                        ("proxy-connection", "keep-alive"),
                        ("x-local", "hop"),
                    ],
                    Some(b"hop\n"),
                );
                Action::Pause
            }
            "/local/details" => {
                info!("local_response: sending 403 with details from request_headers");
                self.replied = true;
                let status = send_with_details(403, "denied by guest", b"denied with details\n");
                info!("local_response: send_local_response status={status}");
                Action::Pause
            }
            "/local/grpc" => {
                info!("local_response: sending grpc status 7 from request_headers");
                self.replied = true;
                self.send_grpc_response(GrpcStatusCode::PermissionDenied, Some("denied"), vec![]);
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.path != "/local/body" || self.replied {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let reply = format!("request body was: {}\n", String::from_utf8_lossy(&body));
        self.reply(
            "request_body",
            400,
            vec![("x-local", "body")],
            Some(reply.as_bytes()),
        );
        Action::Pause
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let status = self.get_http_response_header(":status").unwrap_or_default();
        if self.replied {
            // Our own local reply travelling through the response path.
            info!("local_response: response headers of local reply status={status}");
            return Action::Continue;
        }
        info!("local_response: upstream response status={status}");
        if self.path == "/local/response" {
            let body = format!("replaced upstream {status}\n");
            self.reply(
                "response_headers",
                500,
                vec![("x-local", "response")],
                Some(body.as_bytes()),
            );
            return Action::Pause;
        }
        Action::Continue
    }
}
