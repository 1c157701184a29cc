//! `guest_queues`: shared queues (ABI reference §4.6, §11.15).
//!
//! * `on_vm_start` registers the queue `vessel-queue` (the plugin
//!   configuration, if non-empty, names it instead — read in `on_configure`,
//!   which registers again under that name).
//! * A request with `x-enqueue: a,b,c` resolves the queue by
//!   (`x-queue-vm-id` or `""` = own VM, name) and enqueues each item.
//! * `on_queue_ready` dequeues until EMPTY and logs every item.
//!
//! Exact log lines: `spec-tests/guests/README.md` (the contract).

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(QueueRoot { name: DEFAULT_QUEUE.to_owned() })
    });
}}

const DEFAULT_QUEUE: &str = "vessel-queue";

struct QueueRoot {
    name: String,
}

impl Context for QueueRoot {}

impl RootContext for QueueRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let token = self.register_shared_queue(&self.name);
        info!("queue registered name={} token={token}", self.name);
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .map(|c| String::from_utf8_lossy(&c).trim().to_owned())
            .unwrap_or_default();
        if !config.is_empty() && config != self.name {
            self.name = config;
            let token = self.register_shared_queue(&self.name);
            info!("queue registered name={} token={token}", self.name);
        }
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        info!("queue ready token={queue_id}");
        loop {
            match self.dequeue_shared_queue(queue_id) {
                Ok(Some(item)) => info!("dequeued {}", String::from_utf8_lossy(&item)),
                Ok(None) => {
                    info!("queue empty");
                    break;
                }
                Err(status) => {
                    info!("dequeue failed: {status:?}");
                    break;
                }
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Producer {
            name: self.name.clone(),
            result: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Producer {
    name: String,
    result: Option<&'static str>,
}

impl Context for Producer {}

impl HttpContext for Producer {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(items) = self.get_http_request_header("x-enqueue") else {
            return Action::Continue;
        };
        let vm_id = self
            .get_http_request_header("x-queue-vm-id")
            .unwrap_or_default();
        let token = self.resolve_shared_queue(&vm_id, &self.name);
        match token {
            Some(t) => info!("queue resolved vm_id={vm_id} name={} token={t}", self.name),
            None => info!("queue resolved vm_id={vm_id} name={} token=none", self.name),
        }
        let Some(token) = token else {
            self.result = Some("unresolved");
            return Action::Continue;
        };
        self.result = Some("ok");
        for item in items.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match self.enqueue_shared_queue(token, Some(item.as_bytes())) {
                Ok(()) => info!("enqueued {item}"),
                Err(Status::NotFound) => {
                    info!("enqueue {item} failed: NotFound");
                    self.result = Some("not-found");
                }
                Err(status) => {
                    info!("enqueue {item} failed: {status:?}");
                    self.result = Some("error");
                }
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(result) = self.result {
            self.add_http_response_header("x-enqueue-result", result);
        }
        Action::Continue
    }
}
