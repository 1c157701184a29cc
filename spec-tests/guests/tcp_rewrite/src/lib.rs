//! `guest_tcp_rewrite`: a network filter (the Rust SDK's `StreamContext`)
//! that rewrites bytes: every occurrence of a word in the client's bytes
//! (and, optionally, in the upstream's) is replaced before they go on
//! (ABI reference §4.2: `DOWNSTREAM_DATA`, `UPSTREAM_DATA`).
//!
//! Configuration: one rule a line, `downstream FROM TO` or `upstream FROM
//! TO` (words without spaces). Each data callback logs `tcp_rewrite:
//! <side> <n> bytes -> <m> bytes`. Contract: `spec-tests/guests/README.md`.

use log::info;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(RewriteRoot::default())
    });
}}

/// The rules of each side.
#[derive(Debug, Default, Clone)]
struct Rules {
    downstream: Vec<(Vec<u8>, Vec<u8>)>,
    upstream: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Default)]
struct RewriteRoot {
    rules: Rules,
}

impl Context for RewriteRoot {}

impl RootContext for RewriteRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let text = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let mut rules = Rules::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["downstream", from, to] => rules
                    .downstream
                    .push((from.as_bytes().to_vec(), to.as_bytes().to_vec())),
                ["upstream", from, to] => rules
                    .upstream
                    .push((from.as_bytes().to_vec(), to.as_bytes().to_vec())),
                _ => {
                    log::error!("tcp_rewrite: bad rule `{line}`");
                    return false;
                }
            }
        }
        self.rules = rules;
        true
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Rewrite {
            rules: self.rules.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

struct Rewrite {
    rules: Rules,
}

impl Context for Rewrite {}

/// `data` with every rule applied.
fn apply(rules: &[(Vec<u8>, Vec<u8>)], data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    for (from, to) in rules {
        if from.is_empty() {
            continue;
        }
        let mut next = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(from) {
                next.extend_from_slice(to);
                i += from.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

impl StreamContext for Rewrite {
    fn on_downstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        if data_size == 0 || self.rules.downstream.is_empty() {
            return Action::Continue;
        }
        let data = self.get_downstream_data(0, data_size).unwrap_or_default();
        let out = apply(&self.rules.downstream, &data);
        info!(
            "tcp_rewrite: downstream {} bytes -> {} bytes",
            data.len(),
            out.len()
        );
        self.set_downstream_data(0, data_size, &out);
        Action::Continue
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        if data_size == 0 || self.rules.upstream.is_empty() {
            return Action::Continue;
        }
        let data = self.get_upstream_data(0, data_size).unwrap_or_default();
        let out = apply(&self.rules.upstream, &data);
        info!(
            "tcp_rewrite: upstream {} bytes -> {} bytes",
            data.len(),
            out.len()
        );
        self.set_upstream_data(0, data_size, &out);
        Action::Continue
    }
}
