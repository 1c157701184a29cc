//! `guest_headers`: exercises every header-map hostcall (ABI reference §4.3)
//! on request headers, response headers and trailers, and logs what it sees.
//!
//! Request headers drive it:
//! * `x-op: <op>[,<op>...]` applies ops to the **request** headers in
//!   `on_http_request_headers`;
//! * `x-resp-op: <op>[,<op>...]` applies ops to the **response** headers in
//!   `on_http_response_headers` (and `add-trailer` in
//!   `on_http_response_trailers`).
//!
//! Ops: `add`, `add-existing`, `replace`, `replace-new`, `remove`,
//! `set-pairs`, `add-trailer`. Every op and every observation is logged at
//! INFO with a fixed prefix; the exact lines are listed in
//! `spec-tests/guests/README.md`, which is the contract of this guest.
//!
//! `proxy_get_header_map_size` is not wrapped by the Rust SDK, so this guest
//! imports it itself and logs the raw status and size.

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(HeadersRoot) });
}}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// `proxy_get_header_map_size(map_type, ret_size_ptr) -> status` (§4.3).
    fn proxy_get_header_map_size(map_type: u32, return_size: *mut u32) -> u32;
}

/// Calls `proxy_get_header_map_size` and returns `(status, size)`.
fn header_map_size(map: MapType) -> (u32, u32) {
    let mut size: u32 = 0;
    // SAFETY: `size` is a valid, aligned u32 that outlives the call; the host
    // writes at most 4 bytes there.
    let status = unsafe { proxy_get_header_map_size(map as u32, &mut size) };
    (status, size)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Splits a comma-separated op list, trimming blanks.
fn ops(value: Option<String>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

struct HeadersRoot;

impl Context for HeadersRoot {}

impl RootContext for HeadersRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Headers::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Default)]
struct Headers {
    resp_ops: Vec<String>,
}

impl Headers {
    /// Logs every pair of `map` as `<label> <key>=<value>` and the count.
    fn log_pairs(&self, map: MapType, label: &str) -> Vec<(String, Vec<u8>)> {
        let pairs = proxy_wasm::hostcalls::get_map_bytes(map).unwrap_or_default();
        for (k, v) in &pairs {
            info!("{label} {k}={}", lossy(v));
        }
        info!("{label} count={}", pairs.len());
        pairs
    }

    fn log_size(&self, map: MapType, label: &str) {
        let (status, size) = header_map_size(map);
        info!("{label} status={status} size={size}");
    }

    /// Applies one op to `map` (request or response headers).
    fn apply(&self, map: MapType, side: &str, op: &str) {
        use proxy_wasm::hostcalls as hc;
        // Header names used by each op, per side.
        let (added, existing, replaced, replaced_new, removed, set_pairs) = if side == "request" {
            (
                "x-added",
                "x-existing",
                "x-replace",
                "x-replace-new",
                "x-remove",
                "x-set-pairs",
            )
        } else {
            (
                "x-resp-added",
                "x-resp-existing",
                "x-resp-replace",
                "x-resp-replace-new",
                "x-resp-remove",
                "x-resp-set-pairs",
            )
        };
        match op {
            "add" => {
                hc::add_map_value(map, added, "added").ok();
                self.log_after(map, side, op, added);
            }
            "add-existing" => {
                hc::add_map_value(map, existing, "second").ok();
                let all: Vec<String> = hc::get_map_bytes(map)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(k, _)| k == existing)
                    .map(|(_, v)| lossy(&v))
                    .collect();
                info!(
                    "{side} after add-existing {existing} values={}",
                    all.join("|")
                );
            }
            "replace" => {
                hc::set_map_value(map, replaced, Some("replaced")).ok();
                self.log_after(map, side, op, replaced);
            }
            "replace-new" => {
                hc::set_map_value(map, replaced_new, Some("created")).ok();
                self.log_after(map, side, op, replaced_new);
            }
            "remove" => {
                hc::remove_map_value(map, removed).ok();
                self.log_after(map, side, op, removed);
            }
            "set-pairs" => {
                let pairs = hc::get_map_bytes(map).unwrap_or_default();
                let mut new: Vec<(&str, &[u8])> = pairs
                    .iter()
                    .filter(|(k, _)| k != "x-drop")
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                    .collect();
                new.push((set_pairs, b"yes"));
                hc::set_map_bytes(map, new).ok();
                self.log_after(map, side, op, set_pairs);
                self.log_after(map, side, op, "x-drop");
            }
            other => info!("{side} unknown op {other}"),
        }
    }

    fn log_after(&self, map: MapType, side: &str, op: &str, key: &str) {
        let value = proxy_wasm::hostcalls::get_map_value_bytes(map, key)
            .ok()
            .flatten()
            .map(|v| lossy(&v));
        info!("{side} after {op} {key}={value:?}");
    }
}

impl Context for Headers {}

impl HttpContext for Headers {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        info!("request-headers num_headers={num_headers} end_of_stream={end_of_stream}");
        let path = self.get_http_request_header(":path");
        info!("path={}", path.unwrap_or_default());
        let method = self.get_http_request_header(":method");
        info!("method={}", method.unwrap_or_default());
        // A key that is absent: 0.2.x hosts return NOT_FOUND, the SDK maps it to None.
        let missing = self.get_http_request_header("x-missing");
        info!("x-missing={missing:?}");
        // Multi-value request header (e.g. two `cookie` entries): first value
        // only through get_header_map_value.
        let first_cookie = self
            .get_http_request_header_bytes("cookie")
            .map(|v| lossy(&v));
        info!("request cookie first={first_cookie:?}");

        self.log_pairs(MapType::HttpRequestHeaders, "request-header");
        self.log_size(MapType::HttpRequestHeaders, "request-header-map-size");

        let req_ops = ops(self.get_http_request_header("x-op"));
        self.resp_ops = ops(self.get_http_request_header("x-resp-op"));
        for op in &req_ops {
            self.apply(MapType::HttpRequestHeaders, "request", op);
        }
        if !req_ops.is_empty() {
            self.log_size(MapType::HttpRequestHeaders, "request-header-map-size-after");
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        info!("request-trailers num_trailers={num_trailers}");
        self.log_pairs(MapType::HttpRequestTrailers, "request-trailer");
        self.log_size(MapType::HttpRequestTrailers, "request-trailer-map-size");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        info!("response-headers num_headers={num_headers} end_of_stream={end_of_stream}");
        let status = self.get_http_response_header(":status");
        info!("status={}", status.unwrap_or_default());
        let pairs = self.log_pairs(MapType::HttpResponseHeaders, "response-header");
        // Multi-value header: every set-cookie value seen in get_pairs, then
        // what get_header_map_value returns for it (Envoy: the first one).
        let cookies: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| lossy(v))
            .collect();
        for cookie in &cookies {
            info!("set-cookie={cookie}");
        }
        info!("set-cookie count={}", cookies.len());
        let first = self
            .get_http_response_header_bytes("set-cookie")
            .map(|v| lossy(&v));
        info!("set-cookie first={first:?}");
        self.log_size(MapType::HttpResponseHeaders, "response-header-map-size");

        let resp_ops = std::mem::take(&mut self.resp_ops);
        for op in resp_ops.iter().filter(|op| op.as_str() != "add-trailer") {
            self.apply(MapType::HttpResponseHeaders, "response", op);
        }
        if !resp_ops.is_empty() {
            self.log_size(
                MapType::HttpResponseHeaders,
                "response-header-map-size-after",
            );
        }
        self.resp_ops = resp_ops;
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, num_trailers: usize) -> Action {
        info!("response-trailers num_trailers={num_trailers}");
        self.log_pairs(MapType::HttpResponseTrailers, "response-trailer");
        self.log_size(MapType::HttpResponseTrailers, "response-trailer-map-size");
        if self.resp_ops.iter().any(|op| op == "add-trailer") {
            self.add_http_response_trailer("x-trailer-added", "yes");
            let value = self.get_http_response_trailer("x-trailer-added");
            info!("response after add-trailer x-trailer-added={value:?}");
        }
        Action::Continue
    }
}
