//! `guest_tcp_close`: a network filter (the Rust SDK's `StreamContext`)
//! that closes the connection when it sees a pattern: in the client's
//! bytes with `close_downstream()` (`proxy_close_stream(DOWNSTREAM)`), in
//! the upstream's with `close_upstream()` (`proxy_close_stream(UPSTREAM)`).
//! Both close the client connection after flushing, in Envoy; the bytes
//! that carried the pattern go no further.
//!
//! Configuration: the pattern (default `QUIT`). Logs `tcp_close:
//! <side> pattern seen, closing` and `tcp_close: downstream close <peer>`.
//! Contract: `spec-tests/guests/README.md`.

use log::info;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, PeerType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(CloseRoot { pattern: b"QUIT".to_vec() })
    });
}}

struct CloseRoot {
    pattern: Vec<u8>,
}

impl Context for CloseRoot {}

impl RootContext for CloseRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        if let Some(p) = self.get_plugin_configuration()
            && !p.trim_ascii().is_empty()
        {
            self.pattern = p.trim_ascii().to_vec();
        }
        true
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Close {
            pattern: self.pattern.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

struct Close {
    pattern: Vec<u8>,
}

impl Close {
    fn seen(&self, data: &[u8]) -> bool {
        data.windows(self.pattern.len()).any(|w| w == self.pattern)
    }
}

impl Context for Close {}

impl StreamContext for Close {
    fn on_downstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        let data = self.get_downstream_data(0, data_size).unwrap_or_default();
        if self.seen(&data) {
            info!("tcp_close: downstream pattern seen, closing");
            self.close_downstream();
        }
        Action::Continue
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        let data = self.get_upstream_data(0, data_size).unwrap_or_default();
        if self.seen(&data) {
            info!("tcp_close: upstream pattern seen, closing");
            self.close_upstream();
        }
        Action::Continue
    }

    fn on_downstream_close(&mut self, peer_type: PeerType) {
        let peer = match peer_type {
            PeerType::Local => "LOCAL",
            PeerType::Remote => "REMOTE",
            _ => "UNKNOWN",
        };
        info!("tcp_close: downstream close {peer}");
    }
}
