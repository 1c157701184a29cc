//! `guest_phase_properties`: reads the properties named in the plugin
//! configuration on the request path and on the response path, and reports
//! both as response headers (ABI reference §10; e.g. `upstream.*`, which
//! only the response path has). Contract: `spec-tests/guests/README.md`.

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(PropsRoot { paths: Vec::new() })
    });
}}

/// How a property's value is shown.
#[derive(Clone, Copy)]
enum Kind {
    /// Lossy UTF-8.
    Str,
    /// An 8-byte little-endian integer, in decimal.
    Int,
    /// A 1-byte boolean: `true` or `false`.
    Bool,
}

/// `(dotted path, kind)` pairs from the configuration.
type Paths = Vec<(String, Kind)>;

struct PropsRoot {
    paths: Paths,
}

impl Context for PropsRoot {}

impl RootContext for PropsRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .unwrap_or_default();
        self.paths = config
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                if let Some(path) = p.strip_suffix(":int") {
                    (path.to_owned(), Kind::Int)
                } else if let Some(path) = p.strip_suffix(":bool") {
                    (path.to_owned(), Kind::Bool)
                } else {
                    (p.strip_suffix(":str").unwrap_or(p).to_owned(), Kind::Str)
                }
            })
            .collect();
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(PhaseProps {
            paths: self.paths.clone(),
            request: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct PhaseProps {
    paths: Paths,
    request: Vec<(String, String)>,
}

impl Context for PhaseProps {}

fn header_name(path: &str) -> String {
    path.replace('.', "-")
}

impl PhaseProps {
    fn read(&self, phase: &str, path: &str, kind: Kind) -> String {
        let segments: Vec<&str> = path.split('.').collect();
        let value = match self.get_property(segments) {
            None => "<none>".to_owned(),
            Some(v) if v.is_empty() => "<empty>".to_owned(),
            Some(v) => match kind {
                Kind::Int => match <[u8; 8]>::try_from(v.as_slice()) {
                    Ok(b) => i64::from_le_bytes(b).to_string(),
                    Err(_) => format!("bad-int-size:{}", v.len()),
                },
                Kind::Bool => match v.as_slice() {
                    [0] => "false".to_owned(),
                    [1] => "true".to_owned(),
                    _ => format!("bad-bool-size:{}", v.len()),
                },
                Kind::Str => String::from_utf8_lossy(&v).into_owned(),
            },
        };
        info!("phase_properties: {phase} {path}={value}");
        value
    }
}

impl HttpContext for PhaseProps {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let paths = self.paths.clone();
        for (path, kind) in &paths {
            let value = self.read("request", path, *kind);
            self.request.push((path.clone(), value));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let paths = self.paths.clone();
        for (path, kind) in &paths {
            let value = self.read("response", path, *kind);
            self.add_http_response_header(&format!("x-resp-{}", header_name(path)), &value);
        }
        let request = std::mem::take(&mut self.request);
        for (path, value) in &request {
            self.add_http_response_header(&format!("x-req-{}", header_name(path)), value);
        }
        Action::Continue
    }
}
