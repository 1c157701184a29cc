//! Metrics defined by guests (`proxy_define_metric` and friends; ABI
//! reference §4.6, §9). Metrics are process-wide by name, as Envoy's stats
//! are; ids are per VM and map onto these shared cells. Envoy names them
//! `wasmcustom.<name>`; [`Metrics::snapshot`] gives the guest's name and the
//! embedder adds the prefix when it exports them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use vessel_abi::MetricType;

use super::lock;

/// Summary of the values recorded into a histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSummary {
    /// Number of values recorded.
    pub count: u64,
    /// Sum of the values (saturating).
    pub sum: u64,
    /// Smallest value, if any.
    pub min: Option<u64>,
    /// Largest value, if any.
    pub max: Option<u64>,
}

/// One metric cell.
#[derive(Debug)]
pub struct Metric {
    kind: MetricType,
    name: String,
    value: AtomicI64,
    histogram: Mutex<HistogramSummary>,
}

impl Metric {
    /// The metric's type.
    pub fn kind(&self) -> MetricType {
        self.kind
    }
    /// The name the guest defined.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Counter or gauge value (a counter is never negative).
    pub fn value(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
    /// Adds to a counter or gauge.
    pub(crate) fn add(&self, delta: i64) {
        self.value.fetch_add(delta, Ordering::Relaxed);
    }
    /// Sets a gauge.
    pub(crate) fn set(&self, value: i64) {
        self.value.store(value, Ordering::Relaxed);
    }
    /// Records a histogram value.
    pub(crate) fn record(&self, value: u64) {
        let mut h = lock(&self.histogram);
        h.count += 1;
        h.sum = h.sum.saturating_add(value);
        h.min = Some(h.min.map_or(value, |m| m.min(value)));
        h.max = Some(h.max.map_or(value, |m| m.max(value)));
    }
    /// Histogram summary.
    pub fn histogram(&self) -> HistogramSummary {
        *lock(&self.histogram)
    }
}

/// A point-in-time view of one metric.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricValue {
    /// A counter.
    Counter(u64),
    /// A gauge.
    Gauge(i64),
    /// A histogram.
    Histogram(HistogramSummary),
}

/// The process-wide metric registry.
#[derive(Debug, Default)]
pub struct Metrics {
    by_name: Mutex<BTreeMap<(String, u32), Arc<Metric>>>,
}

impl Metrics {
    /// Returns the cell for `(kind, name)`, creating it at zero.
    pub fn define(&self, kind: MetricType, name: &str) -> Arc<Metric> {
        let mut map = lock(&self.by_name);
        map.entry((name.to_owned(), kind.as_u32()))
            .or_insert_with(|| {
                Arc::new(Metric {
                    kind,
                    name: name.to_owned(),
                    value: AtomicI64::new(0),
                    histogram: Mutex::default(),
                })
            })
            .clone()
    }

    /// Every metric, sorted by name. A metric [`define`](Self::define)d
    /// with a kind this version cannot report (one a newer vessel-abi
    /// added) is left out and logged.
    pub fn snapshot(&self) -> Vec<(String, MetricValue)> {
        lock(&self.by_name)
            .values()
            .filter_map(|m| {
                let v = match m.kind {
                    MetricType::Counter => MetricValue::Counter(m.value().max(0).unsigned_abs()),
                    MetricType::Gauge => MetricValue::Gauge(m.value()),
                    MetricType::Histogram => MetricValue::Histogram(m.histogram()),
                    other => {
                        log::warn!(
                            target: "vessel::metrics",
                            "metric `{}` has kind {}, which this version cannot report; left out",
                            m.name,
                            other.name()
                        );
                        return None;
                    }
                };
                Some((m.name.clone(), v))
            })
            .collect()
    }

    /// The value of one metric by name, if defined.
    pub fn get(&self, name: &str) -> Option<MetricValue> {
        self.snapshot()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn define_is_idempotent_and_snapshot_reads_values() {
        let m = Metrics::default();
        let c = m.define(MetricType::Counter, "reqs");
        c.add(2);
        m.define(MetricType::Counter, "reqs").add(3);
        let h = m.define(MetricType::Histogram, "lat");
        h.record(5);
        h.record(1);
        assert_eq!(m.get("reqs"), Some(MetricValue::Counter(5)));
        assert_eq!(
            m.get("lat"),
            Some(MetricValue::Histogram(HistogramSummary {
                count: 2,
                sum: 6,
                min: Some(1),
                max: Some(5)
            }))
        );
        assert_eq!(m.get("nope"), None);
    }
}
