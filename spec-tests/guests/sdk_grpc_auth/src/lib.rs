//! `guest_sdk_grpc_auth`: authorization through a unary gRPC callout
//! (`proxy_grpc_call`), with the request paused until the answer (ABI
//! reference §4.5, §11.6, §11.7, §11.27).
//!
//! The request message is a protobuf `CheckRequest { string token = 1;
//! string path = 2; string method = 3; }`, encoded by hand as small filters
//! do; the answer is `CheckResponse { string user = 1; bool allowed = 2;
//! string reason = 3; }`. gRPC status 0 with `allowed` resumes the request
//! with the user in a request header; `allowed = false` answers 403; a
//! gRPC error answers 401 (UNAUTHENTICATED), 403 (PERMISSION_DENIED) or 503
//! (anything else: fail closed). Contract: `spec-tests/guests/README.md`.

use std::rc::Rc;
use std::time::Duration;

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(GrpcAuthRoot { config: Rc::new(Config::default()) })
    });
}}

fn default_cluster() -> String {
    "authz-grpc".to_owned()
}
fn default_service() -> String {
    "vessel.auth.v1.Authorizer".to_owned()
}
fn default_method() -> String {
    "Check".to_owned()
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_token_header() -> String {
    "x-api-key".to_owned()
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
    #[serde(default = "default_service")]
    service: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    /// The request header with the credential sent to the auth service.
    #[serde(default = "default_token_header")]
    token_header: String,
    /// The request header that carries the user upstream.
    #[serde(default = "default_user_header")]
    user_header: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster: default_cluster(),
            service: default_service(),
            method: default_method(),
            timeout_ms: default_timeout_ms(),
            token_header: default_token_header(),
            user_header: default_user_header(),
        }
    }
}

/// Protobuf wire format, just what this filter needs.
mod pb {
    pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field (wire type 2).
    pub fn put_bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
        put_varint(out, (u64::from(field) << 3) | 2);
        put_varint(out, data.len() as u64);
        out.extend_from_slice(data);
    }

    fn varint(data: &[u8], pos: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *data.get(*pos)?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A decoded field value.
    pub enum Value<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
    }

    /// Splits a message into (field number, value); `None` if malformed or
    /// if it uses a wire type other than varint / length-delimited.
    pub fn fields(data: &[u8]) -> Option<Vec<(u64, Value<'_>)>> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < data.len() {
            let key = varint(data, &mut pos)?;
            let value = match key & 7 {
                0 => Value::Varint(varint(data, &mut pos)?),
                2 => {
                    let len = usize::try_from(varint(data, &mut pos)?).ok()?;
                    let end = pos.checked_add(len)?;
                    let v = data.get(pos..end)?;
                    pos = end;
                    Value::Bytes(v)
                }
                _ => return None,
            };
            out.push((key >> 3, value));
        }
        Some(out)
    }
}

/// `CheckResponse`.
#[derive(Debug, Default)]
struct CheckResponse {
    user: String,
    allowed: bool,
    reason: String,
}

impl CheckResponse {
    fn decode(data: &[u8]) -> Option<Self> {
        let mut r = CheckResponse::default();
        for (field, value) in pb::fields(data)? {
            match (field, value) {
                (1, pb::Value::Bytes(b)) => r.user = String::from_utf8_lossy(b).into_owned(),
                (2, pb::Value::Varint(v)) => r.allowed = v != 0,
                (3, pb::Value::Bytes(b)) => r.reason = String::from_utf8_lossy(b).into_owned(),
                _ => {} // unknown fields are skipped, as protobuf does
            }
        }
        Some(r)
    }
}

struct GrpcAuthRoot {
    config: Rc<Config>,
}

impl Context for GrpcAuthRoot {}

impl RootContext for GrpcAuthRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Config>(&bytes) {
                Ok(c) => self.config = Rc::new(c),
                Err(e) => {
                    error!("sdk_grpc_auth: bad configuration: {e}");
                    return false;
                }
            }
        }
        info!(
            "sdk_grpc_auth: configured cluster={} service={} method={}",
            self.config.cluster, self.config.service, self.config.method
        );
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(GrpcAuth {
            config: Rc::clone(&self.config),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct GrpcAuth {
    config: Rc<Config>,
}

impl Context for GrpcAuth {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if status_code != 0 {
            let (_, message) = self.get_grpc_status();
            let message = message.unwrap_or_default();
            info!(
                "sdk_grpc_auth: call token_id={token_id} failed grpc_status={status_code} message={message}"
            );
            let http = match status_code {
                16 => 401, // UNAUTHENTICATED
                7 => 403,  // PERMISSION_DENIED
                _ => 503,  // fail closed
            };
            let code = status_code.to_string();
            self.send_http_response(http, vec![("x-grpc-status", &code)], Some(b"denied\n"));
            return;
        }
        let message = self
            .get_grpc_call_response_body(0, response_size)
            .unwrap_or_default();
        let Some(answer) = CheckResponse::decode(&message) else {
            info!("sdk_grpc_auth: call token_id={token_id} bad response ({response_size} bytes)");
            self.send_http_response(503, vec![], Some(b"bad auth response\n"));
            return;
        };
        if answer.allowed {
            info!(
                "sdk_grpc_auth: call token_id={token_id} allowed user={}",
                answer.user
            );
            self.set_http_request_header(&self.config.user_header, Some(&answer.user));
            self.resume_http_request();
        } else {
            info!(
                "sdk_grpc_auth: call token_id={token_id} denied reason={}",
                answer.reason
            );
            let body = format!("denied: {}\n", answer.reason);
            self.send_http_response(403, vec![], Some(body.as_bytes()));
        }
    }
}

impl HttpContext for GrpcAuth {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        let Some(token) = self.get_http_request_header(&config.token_header) else {
            info!("sdk_grpc_auth: no {}", config.token_header);
            self.send_http_response(401, vec![], Some(b"missing credentials\n"));
            return Action::Pause;
        };
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let method = self.get_http_request_header(":method").unwrap_or_default();
        let mut request = Vec::new();
        pb::put_bytes(&mut request, 1, token.as_bytes());
        pb::put_bytes(&mut request, 2, path.as_bytes());
        pb::put_bytes(&mut request, 3, method.as_bytes());
        match self.dispatch_grpc_call(
            &config.cluster,
            &config.service,
            &config.method,
            vec![("x-request-path", path.as_bytes())],
            Some(&request),
            Duration::from_millis(config.timeout_ms),
        ) {
            Ok(token_id) => {
                info!("sdk_grpc_auth: checking path={path} token_id={token_id}");
                Action::Pause
            }
            Err(status) => {
                info!(
                    "sdk_grpc_auth: dispatch to {} failed: {status:?}",
                    config.cluster
                );
                self.send_http_response(503, vec![], Some(b"auth service unavailable\n"));
                Action::Pause
            }
        }
    }
}
