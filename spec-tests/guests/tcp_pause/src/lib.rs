//! `guest_tcp_pause`: a network filter (the Rust SDK's `StreamContext`)
//! that pauses the client's bytes (`Action::Pause`, Envoy's
//! `StopIteration`) until a whole line has arrived; Envoy keeps the bytes in
//! the read buffer and calls the filter again with all of them when more
//! come. With a configured cluster, the first complete line is also checked
//! with an HTTP call (`POST /check`, the line as body) while the connection
//! stays paused; a 200 resumes it (`resume_downstream()`,
//! `proxy_continue_stream(DOWNSTREAM)`), anything else closes it.
//!
//! Configuration: empty, or the check cluster's name. Logs `tcp_pause:
//! waiting for a full line (<n> bytes)`, `tcp_pause: line complete (<n>
//! bytes)`, `tcp_pause: checking`, `tcp_pause: check <status>, resuming` or
//! `tcp_pause: check <status>, closing`. Contract:
//! `spec-tests/guests/README.md`.

use std::time::Duration;

use log::info;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(PauseRoot { cluster: None })
    });
}}

struct PauseRoot {
    cluster: Option<String>,
}

impl Context for PauseRoot {}

impl RootContext for PauseRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.cluster = self
            .get_plugin_configuration()
            .map(|c| String::from_utf8_lossy(&c).trim().to_owned())
            .filter(|c| !c.is_empty());
        true
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Pause {
            cluster: self.cluster.clone(),
            checked: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

struct Pause {
    cluster: Option<String>,
    /// The first line was checked (or is being checked).
    checked: bool,
}

impl Context for Pause {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, _body: usize, _t: usize) {
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_default();
        if status == "200" {
            info!("tcp_pause: check {status}, resuming");
            self.resume_downstream();
        } else {
            info!("tcp_pause: check {status}, closing");
            self.close_downstream();
        }
    }
}

impl StreamContext for Pause {
    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        let data = self.get_downstream_data(0, data_size).unwrap_or_default();
        if !data.contains(&b'\n') && !end_of_stream {
            info!("tcp_pause: waiting for a full line ({data_size} bytes)");
            return Action::Pause;
        }
        info!("tcp_pause: line complete ({data_size} bytes)");
        if self.checked {
            return Action::Continue;
        }
        self.checked = true;
        let Some(cluster) = self.cluster.clone() else {
            return Action::Continue;
        };
        let line = data.split(|b| *b == b'\n').next().unwrap_or_default();
        match self.dispatch_http_call(
            &cluster,
            vec![
                (":method", "POST"),
                (":path", "/check"),
                (":authority", "check"),
            ],
            Some(line),
            vec![],
            Duration::from_secs(5),
        ) {
            Ok(_) => {
                info!("tcp_pause: checking");
                Action::Pause
            }
            Err(e) => {
                info!("tcp_pause: check failed to start: {e:?}, closing");
                self.close_downstream();
                Action::Pause
            }
        }
    }
}
