//! `guest_metrics`: `proxy_define_metric`, `proxy_increment_metric`,
//! `proxy_record_metric`, `proxy_get_metric` (ABI reference §4.6).
//!
//! `on_configure` defines counter `guest_requests_total`, gauge
//! `guest_header_count` and histogram `guest_value`. Each request:
//! increments the counter (by `x-counter-increment`, default 1), records the
//! number of request headers in the gauge, records `x-histogram-value`
//! (default 42) in the histogram, reads all three back and echoes them as
//! response headers. Contract: `spec-tests/guests/README.md`.

use log::info;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(MetricsRoot::default()) });
}}

#[derive(Default, Clone, Copy)]
struct Ids {
    counter: u32,
    gauge: u32,
    histogram: u32,
}

#[derive(Default)]
struct MetricsRoot {
    ids: Ids,
}

impl Context for MetricsRoot {}

impl RootContext for MetricsRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let define = |ty, name| hostcalls::define_metric(ty, name).unwrap_or(0);
        self.ids = Ids {
            counter: define(MetricType::Counter, "guest_requests_total"),
            gauge: define(MetricType::Gauge, "guest_header_count"),
            histogram: define(MetricType::Histogram, "guest_value"),
        };
        info!(
            "metrics defined counter={} gauge={} histogram={}",
            self.ids.counter, self.ids.gauge, self.ids.histogram
        );
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Metrics {
            ids: self.ids,
            echo: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Metrics {
    ids: Ids,
    echo: Vec<(&'static str, String)>,
}

/// `Ok(v)` → `v`, `Err(status)` → `error:<Status>`.
fn show<T: std::fmt::Display>(r: Result<T, Status>) -> String {
    match r {
        Ok(v) => v.to_string(),
        Err(status) => format!("error:{status:?}"),
    }
}

impl Context for Metrics {}

impl HttpContext for Metrics {
    fn on_http_request_headers(&mut self, num_headers: usize, _end_of_stream: bool) -> Action {
        let increment = self
            .get_http_request_header("x-counter-increment")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(1);
        let value = self
            .get_http_request_header("x-histogram-value")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(42);

        let inc = hostcalls::increment_metric(self.ids.counter, increment);
        info!(
            "metrics increment counter by {increment}: {}",
            show(inc.map(|()| "ok"))
        );
        let rec = hostcalls::record_metric(self.ids.gauge, num_headers as u64);
        info!(
            "metrics record gauge {num_headers}: {}",
            show(rec.map(|()| "ok"))
        );
        let hist = hostcalls::record_metric(self.ids.histogram, value);
        info!(
            "metrics record histogram {value}: {}",
            show(hist.map(|()| "ok"))
        );

        let counter = show(hostcalls::get_metric(self.ids.counter));
        let gauge = show(hostcalls::get_metric(self.ids.gauge));
        let histogram = show(hostcalls::get_metric(self.ids.histogram));
        info!("metrics counter={counter} gauge={gauge} histogram={histogram}");
        self.echo = vec![
            ("x-metric-counter", counter),
            ("x-metric-gauge", gauge),
            ("x-metric-histogram", histogram),
        ];
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.echo) {
            self.add_http_response_header(name, &value);
        }
        Action::Continue
    }
}
