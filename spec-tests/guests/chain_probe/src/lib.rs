//! `guest_chain_probe`: one filter of a chain of filters. Its plugin
//! configuration says what it does, so several instances of the same module,
//! each with its own configuration, make a chain whose order and shared
//! state show in the logs and the headers (ABI reference §10, §11.1, §11.4).
//!
//! The configuration is whitespace-separated `key=value` items; every line
//! logged starts with `chain_probe <tag>: `. Contract (every key and line):
//! `spec-tests/guests/README.md`.

use std::time::Duration;

use log::{info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot::default()) });
}}

/// What the plugin configuration asks for.
#[derive(Debug, Clone, Default)]
struct Config {
    tag: String,
    warn: bool,
    show: Vec<String>,
    add_request_header: Option<(String, String)>,
    set_state: Option<(String, String)>,
    get_state: Option<(String, String)>,
    local_reply: Option<u32>,
    callout: Option<String>,
    pause_headers: bool,
    body_until_eos: bool,
    body_header: Option<String>,
    add_response_header: Option<(String, String)>,
}

fn pair(v: &str) -> Option<(String, String)> {
    v.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned()))
}

impl Config {
    /// Parses the configuration; the `Err` names the first bad item.
    fn parse(text: &str) -> Result<Self, String> {
        let mut c = Config {
            tag: "probe".to_owned(),
            ..Config::default()
        };
        for item in text.split_whitespace() {
            let Some((k, v)) = item.split_once('=') else {
                return Err(item.to_owned());
            };
            let ok = match k {
                "tag" => {
                    c.tag = v.to_owned();
                    true
                }
                "level" => {
                    c.warn = v == "warn";
                    v == "warn" || v == "info"
                }
                "show" => {
                    c.show = v.split(',').map(str::to_owned).collect();
                    true
                }
                "add_request_header" => {
                    c.add_request_header = pair(v);
                    c.add_request_header.is_some()
                }
                "set_state" => {
                    c.set_state = pair(v);
                    c.set_state.is_some()
                }
                "get_state" => {
                    c.get_state = pair(v);
                    c.get_state.is_some()
                }
                "local_reply" => {
                    c.local_reply = v.parse().ok();
                    c.local_reply.is_some()
                }
                "callout" => {
                    c.callout = Some(v.to_owned());
                    true
                }
                "request_headers" => {
                    c.pause_headers = v == "pause";
                    v == "pause" || v == "continue"
                }
                "request_body" => {
                    c.body_until_eos = v == "until_eos";
                    v == "until_eos" || v == "continue"
                }
                "body_header" => {
                    c.body_header = Some(v.to_owned());
                    true
                }
                "add_response_header" => {
                    c.add_response_header = pair(v);
                    c.add_response_header.is_some()
                }
                _ => false,
            };
            if !ok {
                return Err(item.to_owned());
            }
        }
        Ok(c)
    }

    /// Logs one line with the tag, at the configured level.
    fn log(&self, line: &str) {
        if self.warn {
            warn!("chain_probe {}: {line}", self.tag);
        } else {
            info!("chain_probe {}: {line}", self.tag);
        }
    }
}

#[derive(Default)]
struct ProbeRoot {
    config: std::rc::Rc<Config>,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let text = self
            .get_plugin_configuration()
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .unwrap_or_default();
        match Config::parse(&text) {
            Ok(c) => {
                self.config = std::rc::Rc::new(c);
                true
            }
            Err(item) => {
                warn!("chain_probe: bad configuration item `{item}`");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    config: std::rc::Rc<Config>,
}

impl Probe {
    /// Adds a request header; logs the status if the host refuses.
    fn add_request_header(&self, name: &str, value: &str) {
        if let Err(s) = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value) {
            self.config
                .log(&format!("add request header {name} failed status={s:?}"));
        }
    }
}

impl Context for Probe {
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) {
        let status = if num_headers == 0 {
            None
        } else {
            self.get_http_call_response_header(":status")
        };
        let status = status.unwrap_or_else(|| "none".to_owned());
        self.config
            .log(&format!("callout response status={status}; resuming"));
        self.add_request_header(&format!("x-{}-callout", self.config.tag), &status);
        self.resume_http_request();
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let c = self.config.clone();
        c.log(&format!("request_headers eos={end_of_stream}"));
        for h in &c.show {
            c.log(&format!(
                "request header {h}={:?}",
                self.get_http_request_header(h)
            ));
        }
        if let Some((name, value)) = &c.add_request_header {
            self.add_request_header(name, value);
        }
        if let Some((key, header)) = &c.get_state {
            let value = match hostcalls::get_property(vec![key.as_str()]) {
                Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
                Ok(None) => "<none>".to_owned(),
                Err(s) => format!("<error {s:?}>"),
            };
            c.log(&format!("get_state {key}={value}"));
            self.add_request_header(header, &value);
        }
        if let Some((key, value)) = &c.set_state {
            let r = hostcalls::set_property(vec![key.as_str()], Some(value.as_bytes()));
            c.log(&format!("set_state {key}={value} result={r:?}"));
        }
        if let Some(status) = c.local_reply {
            c.log(&format!("sending local reply {status}"));
            let body = format!("local reply from {}\n", c.tag);
            self.send_http_response(status, vec![("x-local-by", &c.tag)], Some(body.as_bytes()));
            return Action::Pause;
        }
        if let Some(cluster) = &c.callout {
            let headers = vec![
                (":method", "GET"),
                (":path", "/probe"),
                (":authority", cluster.as_str()),
            ];
            return match self.dispatch_http_call(
                cluster,
                headers,
                None,
                vec![],
                Duration::from_secs(5),
            ) {
                Ok(_) => {
                    c.log(&format!("callout to {cluster} dispatched; pausing"));
                    Action::Pause
                }
                Err(s) => {
                    c.log(&format!("callout to {cluster} failed status={s:?}"));
                    Action::Continue
                }
            };
        }
        if c.pause_headers {
            c.log("pausing request headers");
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let c = self.config.clone();
        c.log(&format!(
            "request_body size={body_size} eos={end_of_stream}"
        ));
        if c.body_until_eos && !end_of_stream {
            return Action::Pause;
        }
        if end_of_stream && let Some(name) = &c.body_header {
            self.add_request_header(name, &body_size.to_string());
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let c = self.config.clone();
        let status = self.get_http_response_header(":status");
        c.log(&format!(
            "response_headers status={} eos={end_of_stream}",
            status.as_deref().unwrap_or("none")
        ));
        if let Some((name, value)) = &c.add_response_header {
            self.set_http_response_header(name, Some(value));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.config.log("on_log");
    }
}
