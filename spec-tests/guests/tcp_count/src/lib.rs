//! `guest_tcp_count`: a network filter (the Rust SDK's `StreamContext`)
//! that counts the bytes of each direction and logs them at the
//! connection's close and in `on_log` (ABI reference §6, §11.11: for a
//! connection Envoy runs `on_done`, `on_log`, `on_delete` when the client
//! connection closes).
//!
//! Logs (each names the connection's context id `#<id>`):
//! `tcp_count #<id>: new connection`, `tcp_count #<id>: upstream close
//! <peer> (down <d>, up <u>)`, `tcp_count #<id>: downstream close <peer>
//! (down <d>, up <u>)`, `tcp_count #<id>: done`, `tcp_count #<id>: log down
//! <d> up <u>`. It also adds `tcp_count.down` and `tcp_count.up` counters.
//! Client bytes that contain `TRAP` make `on_downstream_data` panic (a
//! trap that fails the VM), for the failure-policy scenarios.
//! Contract: `spec-tests/guests/README.md`.

use log::info;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, PeerType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(CountRoot) });
}}

struct CountRoot;

impl Context for CountRoot {}

impl RootContext for CountRoot {
    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        let metric = |name| proxy_wasm::hostcalls::define_metric(MetricType::Counter, name).ok();
        Some(Box::new(Count {
            id: context_id,
            down: 0,
            up: 0,
            down_metric: metric("tcp_count.down"),
            up_metric: metric("tcp_count.up"),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

struct Count {
    id: u32,
    down: usize,
    up: usize,
    down_metric: Option<u32>,
    up_metric: Option<u32>,
}

/// The ABI name of a peer type.
fn peer(p: PeerType) -> &'static str {
    match p {
        PeerType::Local => "LOCAL",
        PeerType::Remote => "REMOTE",
        _ => "UNKNOWN",
    }
}

impl Context for Count {
    fn on_done(&mut self) -> bool {
        info!("tcp_count #{}: done", self.id);
        true
    }
}

impl StreamContext for Count {
    fn on_new_connection(&mut self) -> Action {
        info!("tcp_count #{}: new connection", self.id);
        Action::Continue
    }

    fn on_downstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        let data = self.get_downstream_data(0, data_size).unwrap_or_default();
        if data.windows(4).any(|w| w == b"TRAP") {
            // A trap on request, for the failure-policy scenarios.
            panic!("tcp_count #{}: trapping as asked", self.id);
        }
        self.down += data_size;
        if let Some(m) = self.down_metric {
            let _ = proxy_wasm::hostcalls::increment_metric(m, data_size as i64);
        }
        Action::Continue
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        self.up += data_size;
        if let Some(m) = self.up_metric {
            let _ = proxy_wasm::hostcalls::increment_metric(m, data_size as i64);
        }
        Action::Continue
    }

    fn on_downstream_close(&mut self, peer_type: PeerType) {
        info!(
            "tcp_count #{}: downstream close {} (down {}, up {})",
            self.id,
            peer(peer_type),
            self.down,
            self.up
        );
    }

    fn on_upstream_close(&mut self, peer_type: PeerType) {
        info!(
            "tcp_count #{}: upstream close {} (down {}, up {})",
            self.id,
            peer(peer_type),
            self.down,
            self.up
        );
    }

    fn on_log(&mut self) {
        info!("tcp_count #{}: log down {} up {}", self.id, self.down, self.up);
    }
}
