//! `guest_llm_policy`: a routing policy for OpenAI-compatible workers,
//! written with the proxy-wasm Rust SDK. It picks the worker a request goes
//! to and names it in `x-gateway-destination-endpoint` (the Gateway API
//! Inference Extension's header), which vessel's override-host policy
//! honours when that worker is in the cluster and healthy.
//!
//! The choice, from the `vessel.cluster.<cluster>.endpoints` property
//! (docs/llm-gateway.md):
//!
//! 1. only healthy endpoints;
//! 2. **least queue**: the waiting requests the worker's `/metrics` reported
//!    (or, without a scrape, the requests vessel has in flight to it), and
//!    every endpoint within `slack` of the least;
//! 3. **prefix affinity**: among those, the one the prompt's first
//!    `prefix_bytes` bytes hash to (rendezvous hashing), so that requests
//!    sharing a prompt prefix land where its KV cache is warm. A request
//!    without a body takes the least loaded.
//!
//! It decides on the body, so the request headers wait
//! (`allow_on_headers_stop_iteration: true`). With no healthy endpoint, or
//! no property, it names none and the cluster's fallback policy picks.
//!
//! Configuration (JSON): `{"cluster": "workers", "header":
//! "x-gateway-destination-endpoint", "slack": 0, "prefix_bytes": 256,
//! "cluster_header": null}`; every key is optional. With `cluster_header`,
//! the policy also names `cluster` in that request header (for a
//! `cluster_header` route).
//!
//! For the fallback tests, the request header `x-policy-test` makes it
//! misbehave: `trap` (a panic in the headers callback), `trap-body` (in the
//! body callback), `loop` (never returns), `grow` (allocates until its
//! memory runs out), `garbage` (names `not-an-endpoint`), `gone` (names
//! `10.255.255.1:1`, in no cluster), `cluster:<name>` (names cluster
//! `<name>` in `cluster_header`).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(PolicyRoot { config: Rc::new(Config::default()) })
    });
}}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    cluster: String,
    header: String,
    slack: u64,
    prefix_bytes: usize,
    cluster_header: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster: "workers".into(),
            header: "x-gateway-destination-endpoint".into(),
            slack: 0,
            prefix_bytes: 256,
            cluster_header: None,
        }
    }
}

struct PolicyRoot {
    config: Rc<Config>,
}

impl Context for PolicyRoot {}

impl RootContext for PolicyRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        match self.get_plugin_configuration() {
            None => true,
            Some(bytes) if bytes.is_empty() => true,
            Some(bytes) => match serde_json::from_slice::<Config>(&bytes) {
                Ok(c) => {
                    self.config = Rc::new(c);
                    true
                }
                Err(e) => {
                    log::error!("llm_policy: bad configuration: {e}");
                    false
                }
            },
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Policy {
            config: self.config.clone(),
            test: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Policy {
    config: Rc<Config>,
    test: Option<String>,
}

impl Context for Policy {}

/// One endpoint line of the property: address, healthy, in flight,
/// waiting (if scraped).
struct Endpoint<'a> {
    addr: &'a str,
    load: u64,
    in_flight: u64,
}

fn parse(text: &str) -> Vec<Endpoint<'_>> {
    let mut out = Vec::with_capacity(text.len() / 24 + 1);
    for line in text.split('\n') {
        let mut f = line.split(' ');
        let (Some(addr), Some("1"), Some(in_flight), Some(_running), Some(waiting)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let in_flight = in_flight.parse().unwrap_or(0);
        out.push(Endpoint {
            addr,
            load: waiting.parse().unwrap_or(in_flight),
            in_flight,
        });
    }
    out
}

/// FNV-1a over `bytes`, from `seed`.
fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The rendezvous weight of `addr` for a prompt whose prefix hashed to
/// `prefix` (the prefix is hashed once per request, not per endpoint).
fn weight(prefix: u64, addr: &str) -> u64 {
    let mut h = fnv(prefix, addr.as_bytes());
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The endpoint for a request whose prompt starts with `prefix`.
fn choose<'a>(eps: &[Endpoint<'a>], slack: u64, prefix: &[u8]) -> Option<&'a str> {
    let least = eps.iter().map(|e| e.load).min()?;
    let near = eps.iter().filter(|e| e.load <= least.saturating_add(slack));
    if prefix.is_empty() {
        return near.min_by_key(|e| (e.load, e.in_flight)).map(|e| e.addr);
    }
    let p = fnv(0xcbf2_9ce4_8422_2325, prefix);
    near.max_by_key(|e| weight(p, e.addr)).map(|e| e.addr)
}

impl Policy {
    fn misbehave_now(&self, when: &str) {
        match (self.test.as_deref(), when) {
            (Some("trap"), "headers") | (Some("trap-body"), "body") => {
                panic!("llm_policy: trap requested")
            }
            (Some("loop"), "headers") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            (Some("grow"), "headers") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            _ => {}
        }
    }

    fn decide(&mut self, prefix: &[u8]) {
        if let Some(h) = &self.config.cluster_header {
            let name = match self.test.as_deref().and_then(|t| t.strip_prefix("cluster:")) {
                Some(other) => other.to_owned(),
                None => self.config.cluster.clone(),
            };
            self.set_http_request_header(h, Some(&name));
        }
        match self.test.as_deref() {
            Some("garbage") => {
                self.set_http_request_header(&self.config.header, Some("not-an-endpoint"));
                return;
            }
            Some("gone") => {
                self.set_http_request_header(&self.config.header, Some("10.255.255.1:1"));
                return;
            }
            _ => {}
        }
        let path = vec!["vessel", "cluster", self.config.cluster.as_str(), "endpoints"];
        let Some(bytes) = self.get_property(path) else {
            log::warn!("llm_policy: no endpoints for cluster `{}`", self.config.cluster);
            return;
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            log::warn!("llm_policy: the endpoints property is not UTF-8");
            return;
        };
        let eps = parse(text);
        match choose(&eps, self.config.slack, prefix) {
            Some(addr) => self.set_http_request_header(&self.config.header, Some(addr)),
            None => log::warn!("llm_policy: no healthy endpoint; the fallback picks"),
        }
    }
}

impl HttpContext for Policy {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        self.test = self.get_http_request_header("x-policy-test");
        self.misbehave_now("headers");
        if end_of_stream {
            self.decide(b"");
            return Action::Continue;
        }
        // Decide on the body.
        Action::Pause
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        self.misbehave_now("body");
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        // The prompt: from the `messages` key on (the model name and the
        // sampling options before it would split equal prompts).
        let start = body
            .windows(10)
            .position(|w| w == b"\"messages\"")
            .unwrap_or(0);
        let end = body.len().min(start + self.config.prefix_bytes);
        let prefix = body[start..end].to_vec();
        self.decide(&prefix);
        Action::Continue
    }
}
