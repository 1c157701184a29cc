//! A cluster's load balancer: the endpoints with their live state (requests
//! in flight, active health, outlier ejection) and the pick.
//!
//! - **Policies:** `ROUND_ROBIN`, `LEAST_REQUEST` (the fewest in flight
//!   among `choice_count` random endpoints, Envoy's power of two choices)
//!   and `RANDOM`.
//! - **Health:** an endpoint is available when its active health check (if
//!   any) passes and it is not ejected. When fewer than the panic threshold
//!   (default 50%) are available, the cluster is in *panic* and balances
//!   over every endpoint, as Envoy does.
//! - **Override host:** a request header may name the endpoint (`ip:port`,
//!   or a comma-separated list tried in order): the first that is in the
//!   cluster and available is used; otherwise the policy picks.
//! - **Outlier detection:** consecutive 5xx answers (connect failures and
//!   resets count, as in Envoy without `split_external_local_origin_errors`)
//!   eject an endpoint for `n × base_ejection_time` (n-th ejection, capped
//!   at `max_ejection_time`). At most `max_ejection_percent` of the
//!   endpoints are out at once, but always at least one may be.
//!
//! An endpoint's state survives a DNS refresh that keeps its address.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::config::{LbPolicy, LoadBalancing, OutlierDetection};

/// One endpoint and its live state.
#[derive(Debug)]
pub(crate) struct EndpointState {
    pub(crate) addr: SocketAddr,
    in_flight: AtomicU64,
    requests: AtomicU64,
    /// Active health: true without a health check; with one, false until
    /// the first check passes.
    hc_healthy: AtomicBool,
    hc_checked: AtomicBool,
    hc_passes: AtomicU32,
    hc_failures: AtomicU32,
    consecutive_5xx: AtomicU32,
    /// Milliseconds since the balancer's epoch until which it is ejected
    /// (0: not ejected).
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    /// The last scrape of its `/metrics` (`vessel_metrics_scrape`):
    /// running and waiting requests (`u64::MAX`: not reported), KV-cache
    /// use as a fraction (f64 bits; NaN: not reported), and when (ms since
    /// the balancer's epoch; 0: never).
    running: AtomicU64,
    waiting: AtomicU64,
    kv_cache: AtomicU64,
    scraped_at: AtomicU64,
}

impl EndpointState {
    fn new(addr: SocketAddr, checked: bool) -> Self {
        Self {
            addr,
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            hc_healthy: AtomicBool::new(!checked),
            hc_checked: AtomicBool::new(false),
            hc_passes: AtomicU32::new(0),
            hc_failures: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            running: AtomicU64::new(u64::MAX),
            waiting: AtomicU64::new(u64::MAX),
            kv_cache: AtomicU64::new(f64::NAN.to_bits()),
            scraped_at: AtomicU64::new(0),
        }
    }

    /// Records a scrape of the endpoint's model-server metrics.
    pub(crate) fn record_load(&self, load: &ScrapedLoad, now_ms: u64) {
        self.running
            .store(load.running.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.waiting
            .store(load.waiting.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.kv_cache.store(
            load.kv_cache.unwrap_or(f64::NAN).to_bits(),
            Ordering::Relaxed,
        );
        self.scraped_at.store(now_ms.max(1), Ordering::Relaxed);
    }

    /// Requests sent to it and not yet finished.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests sent to it since start.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Whether its active health check passes (true without one).
    pub(crate) fn hc_healthy(&self) -> bool {
        self.hc_healthy.load(Ordering::Relaxed)
    }

    fn ejected_at(&self, now_ms: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms < until
    }
}

/// What one scrape of a model server's `/metrics` said (summed over label
/// sets): vLLM's `vllm:num_requests_running`, `vllm:num_requests_waiting`,
/// `vllm:gpu_cache_usage_perc` (or `vllm:kv_cache_usage_perc`), or SGLang's
/// `sglang:num_running_reqs`, `sglang:num_queue_reqs`, `sglang:token_usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ScrapedLoad {
    pub(crate) running: Option<u64>,
    pub(crate) waiting: Option<u64>,
    pub(crate) kv_cache: Option<f64>,
}

impl ScrapedLoad {
    /// Reads the Prometheus text exposition format; unknown metrics, and
    /// lines that do not parse, are skipped.
    pub(crate) fn parse(text: &str) -> Self {
        let mut out = Self::default();
        let mut kv_sum: Option<f64> = None;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => continue,
            };
            let rest = match rest.strip_prefix('{') {
                Some(r) => match r.find('}') {
                    Some(end) => &r[end + 1..],
                    None => continue,
                },
                None => rest,
            };
            let Some(value) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
            else {
                continue;
            };
            // Counts are whole numbers; truncation of a fraction is fine.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let count = value as u64;
            match name {
                "vllm:num_requests_running" | "sglang:num_running_reqs" => {
                    out.running = Some(out.running.unwrap_or(0).saturating_add(count));
                }
                "vllm:num_requests_waiting" | "sglang:num_queue_reqs" => {
                    out.waiting = Some(out.waiting.unwrap_or(0).saturating_add(count));
                }
                "vllm:gpu_cache_usage_perc" | "vllm:kv_cache_usage_perc" | "sglang:token_usage" => {
                    // Several engines behind one endpoint: the busiest.
                    kv_sum = Some(kv_sum.map_or(value, |k| k.max(value)));
                }
                _ => {}
            }
        }
        out.kv_cache = kv_sum;
        out
    }
}

/// Counts a request in flight on an endpoint until dropped (with the
/// response body, so a streamed answer counts until its last byte).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<EndpointState>);

impl InFlight {
    pub(crate) fn new(ep: Arc<EndpointState>) -> Self {
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        ep.requests.fetch_add(1, Ordering::Relaxed);
        Self(ep)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a try ended, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response head with this status.
    Status(u16),
    /// No connection, a reset before the head, or a per-try timeout.
    Failure,
}

/// Counters of a cluster's balancer (`/stats`).
#[derive(Debug, Default)]
pub(crate) struct LbCounters {
    pub(crate) retries: AtomicU64,
    pub(crate) no_healthy: AtomicU64,
    pub(crate) panic: AtomicU64,
    pub(crate) override_used: AtomicU64,
    pub(crate) ejections: AtomicU64,
    pub(crate) hc_attempt: AtomicU64,
    pub(crate) hc_success: AtomicU64,
    pub(crate) hc_failure: AtomicU64,
}

/// A cluster's balancer.
#[derive(Debug)]
pub(crate) struct Balancer {
    pub(crate) cluster: String,
    policy: LbPolicy,
    override_headers: Vec<http::HeaderName>,
    panic_bp: u32,
    outlier: Option<OutlierDetection>,
    checked: bool,
    endpoints: RwLock<Arc<[Arc<EndpointState>]>>,
    next: AtomicUsize,
    epoch: Instant,
    pub(crate) counters: LbCounters,
}

impl Balancer {
    pub(crate) fn new(
        cluster: &str,
        endpoints: &[SocketAddr],
        lb: &LoadBalancing,
        outlier: Option<OutlierDetection>,
        checked: bool,
    ) -> Self {
        Self {
            cluster: cluster.to_owned(),
            policy: lb.policy,
            override_headers: lb
                .override_host_headers
                .iter()
                .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            panic_bp: lb.panic_threshold_bp,
            outlier,
            checked,
            endpoints: RwLock::new(
                endpoints
                    .iter()
                    .map(|a| Arc::new(EndpointState::new(*a, checked)))
                    .collect(),
            ),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            counters: LbCounters::default(),
        }
    }

    /// The endpoints and their state now.
    pub(crate) fn snapshot(&self) -> Arc<[Arc<EndpointState>]> {
        self.endpoints
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the endpoints; one whose address stays keeps its state.
    pub(crate) fn set_endpoints(&self, addrs: &[SocketAddr]) {
        let old = self.snapshot();
        let new: Arc<[Arc<EndpointState>]> = addrs
            .iter()
            .map(|a| {
                old.iter()
                    .find(|e| e.addr == *a)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(EndpointState::new(*a, self.checked)))
            })
            .collect();
        *self
            .endpoints
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether `ep` is ejected now.
    #[cfg(test)]
    pub(crate) fn ejected(&self, ep: &EndpointState) -> bool {
        ep.ejected_at(self.now_ms())
    }

    /// The header names of the override-host policy.
    pub(crate) fn override_headers(&self) -> &[http::HeaderName] {
        &self.override_headers
    }

    /// The endpoint an override-host value names: the first `ip:port` of
    /// the comma-separated list that is in the cluster and available.
    pub(crate) fn pick_override(&self, value: &str) -> Option<Arc<EndpointState>> {
        let eps = self.snapshot();
        let now = self.now_ms();
        for part in value.split(',') {
            let Ok(addr) = part.trim().parse::<SocketAddr>() else {
                continue;
            };
            if let Some(ep) = eps
                .iter()
                .find(|e| e.addr == addr && e.hc_healthy() && !e.ejected_at(now))
            {
                self.counters.override_used.fetch_add(1, Ordering::Relaxed);
                return Some(ep.clone());
            }
        }
        None
    }

    /// Picks an endpoint with the cluster's policy. `avoid`: endpoints a
    /// retry should not reuse (the previous-hosts predicate), tried up to
    /// `attempts` picks. `None` when the cluster has no endpoint.
    pub(crate) fn pick(&self, avoid: &[SocketAddr], attempts: u32) -> Option<Arc<EndpointState>> {
        let eps = self.snapshot();
        if eps.is_empty() {
            self.counters.no_healthy.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let now = self.now_ms();
        let all_available = eps.iter().all(|e| e.hc_healthy() && !e.ejected_at(now));
        let candidates: Vec<&Arc<EndpointState>> = if all_available {
            eps.iter().collect()
        } else {
            let available: Vec<_> = eps
                .iter()
                .filter(|e| e.hc_healthy() && !e.ejected_at(now))
                .collect();
            // Panic: fewer available than the threshold (of 10,000 points).
            let panic = (available.len() as u128) * 10_000
                < u128::from(self.panic_bp) * (eps.len() as u128);
            if panic {
                self.counters.panic.fetch_add(1, Ordering::Relaxed);
                eps.iter().collect()
            } else {
                available
            }
        };
        if candidates.is_empty() {
            self.counters.no_healthy.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut picked = self.pick_among(&candidates);
        for _ in 1..attempts.max(1) {
            if !avoid.contains(&picked.addr) {
                break;
            }
            picked = self.pick_among(&candidates);
        }
        Some(picked.clone())
    }

    fn pick_among<'e>(&self, c: &[&'e Arc<EndpointState>]) -> &'e Arc<EndpointState> {
        match self.policy {
            LbPolicy::LeastRequest { choice_count } => {
                let mut best = c[random_index(c.len())];
                for _ in 1..choice_count {
                    let other = c[random_index(c.len())];
                    if other.in_flight() < best.in_flight() {
                        best = other;
                    }
                }
                best
            }
            LbPolicy::Random => c[random_index(c.len())],
            // RoundRobin, and any policy a newer config reader adds.
            _ => c[self.next.fetch_add(1, Ordering::Relaxed) % c.len()],
        }
    }

    /// Records how a try to `ep` ended (outlier detection).
    pub(crate) fn report(&self, ep: &EndpointState, outcome: Outcome) {
        let Some(od) = &self.outlier else {
            return;
        };
        let bad = match outcome {
            Outcome::Status(s) => s >= 500,
            Outcome::Failure => true,
        };
        if !bad {
            ep.consecutive_5xx.store(0, Ordering::Relaxed);
            return;
        }
        let n = ep.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        if n < od.consecutive_5xx {
            return;
        }
        ep.consecutive_5xx.store(0, Ordering::Relaxed);
        let now = self.now_ms();
        if ep.ejected_at(now) {
            return;
        }
        if od.enforcing_consecutive_5xx < 100
            && random_index(100) >= od.enforcing_consecutive_5xx as usize
        {
            return;
        }
        let eps = self.snapshot();
        let ejected = eps.iter().filter(|e| e.ejected_at(now)).count();
        // Envoy: eject while the share after this one stays within the
        // limit, and always allow one.
        let within = (ejected + 1) * 100 <= od.max_ejection_percent as usize * eps.len();
        if !within && ejected > 0 {
            return;
        }
        let times = ep.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let time = od
            .base_ejection_time
            .saturating_mul(times)
            .min(od.max_ejection_time);
        let until = now.saturating_add(u64::try_from(time.as_millis()).unwrap_or(u64::MAX));
        ep.ejected_until.store(until, Ordering::Relaxed);
        self.counters.ejections.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "cluster `{}`: endpoint {} ejected for {time:?} ({} consecutive 5xx)",
            self.cluster,
            ep.addr,
            od.consecutive_5xx
        );
    }

    /// Records an active health check of `ep`.
    pub(crate) fn record_check(&self, ep: &EndpointState, passed: bool, thresholds: (u32, u32)) {
        let (healthy_threshold, unhealthy_threshold) = thresholds;
        self.counters.hc_attempt.fetch_add(1, Ordering::Relaxed);
        let first = !ep.hc_checked.swap(true, Ordering::Relaxed);
        if passed {
            self.counters.hc_success.fetch_add(1, Ordering::Relaxed);
            ep.hc_failures.store(0, Ordering::Relaxed);
            let passes = ep.hc_passes.fetch_add(1, Ordering::Relaxed) + 1;
            // The first check of a new endpoint counts alone (Envoy).
            if !ep.hc_healthy() && (first || passes >= healthy_threshold) {
                ep.hc_healthy.store(true, Ordering::Relaxed);
                log::info!(
                    "cluster `{}`: endpoint {} passes its health check",
                    self.cluster,
                    ep.addr
                );
            }
        } else {
            self.counters.hc_failure.fetch_add(1, Ordering::Relaxed);
            ep.hc_passes.store(0, Ordering::Relaxed);
            let failures = ep.hc_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if ep.hc_healthy() && failures >= unhealthy_threshold {
                ep.hc_healthy.store(false, Ordering::Relaxed);
                log::warn!(
                    "cluster `{}`: endpoint {} fails its health check",
                    self.cluster,
                    ep.addr
                );
            }
        }
    }

    /// `(name, value)` counters for `/stats`.
    pub(crate) fn counters(&self) -> Vec<(String, u64)> {
        let c = &self.counters;
        let p = format!("cluster.{}.", self.cluster);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = vec![
            (format!("{p}upstream_rq_retry"), load(&c.retries)),
            (format!("{p}upstream_cx_none_healthy"), load(&c.no_healthy)),
            (format!("{p}lb_healthy_panic"), load(&c.panic)),
            (
                format!("{p}vessel.override_host_used"),
                load(&c.override_used),
            ),
            (
                format!("{p}outlier_detection.ejections_enforced_total"),
                load(&c.ejections),
            ),
        ];
        if self.checked {
            out.push((format!("{p}health_check.attempt"), load(&c.hc_attempt)));
            out.push((format!("{p}health_check.success"), load(&c.hc_success)));
            out.push((format!("{p}health_check.failure"), load(&c.hc_failure)));
        }
        out
    }

    /// `(name, value)` gauges for `/stats`.
    pub(crate) fn gauges(&self) -> Vec<(String, i64)> {
        let eps = self.snapshot();
        let now = self.now_ms();
        let p = format!("cluster.{}.", self.cluster);
        let count = |f: &dyn Fn(&EndpointState) -> bool| {
            i64::try_from(eps.iter().filter(|e| f(e)).count()).unwrap_or(i64::MAX)
        };
        vec![
            (
                format!("{p}membership_healthy"),
                count(&|e| e.hc_healthy() && !e.ejected_at(now)),
            ),
            (
                format!("{p}outlier_detection.ejections_active"),
                count(&|e| e.ejected_at(now)),
            ),
            (
                format!("{p}upstream_rq_active"),
                i64::try_from(eps.iter().map(|e| e.in_flight()).sum::<u64>()).unwrap_or(i64::MAX),
            ),
        ]
    }

    /// The `vessel.cluster.<name>.endpoints` property: one line per
    /// endpoint, `<ip:port> <healthy 0|1> <in_flight> <running> <waiting>
    /// <kv_cache> <scrape_age_ms>`, with `-` for what no scrape reported
    /// (docs/llm-gateway.md).
    pub(crate) fn endpoints_property(&self) -> Vec<u8> {
        use std::fmt::Write as _;
        let now = self.now_ms();
        let eps = self.snapshot();
        let mut out = String::with_capacity(eps.len() * 48);
        for ep in eps.iter() {
            let healthy = u8::from(ep.hc_healthy() && !ep.ejected_at(now));
            let _ = write!(out, "{} {healthy} {}", ep.addr, ep.in_flight());
            for v in [
                ep.running.load(Ordering::Relaxed),
                ep.waiting.load(Ordering::Relaxed),
            ] {
                let _ = if v == u64::MAX {
                    write!(out, " -")
                } else {
                    write!(out, " {v}")
                };
            }
            let kv = f64::from_bits(ep.kv_cache.load(Ordering::Relaxed));
            let _ = if kv.is_nan() {
                write!(out, " -")
            } else {
                write!(out, " {kv:.4}")
            };
            let _ = match ep.scraped_at.load(Ordering::Relaxed) {
                0 => writeln!(out, " -"),
                at => writeln!(out, " {}", now.saturating_sub(at)),
            };
        }
        out.into_bytes()
    }

    /// Envoy's `/clusters` text lines for this cluster's endpoints.
    pub(crate) fn clusters_text(&self, out: &mut String) {
        use std::fmt::Write as _;
        let now = self.now_ms();
        for ep in self.snapshot().iter() {
            let (c, a) = (&self.cluster, ep.addr);
            let mut flags = Vec::new();
            if !ep.hc_healthy() {
                flags.push("/failed_active_hc");
            }
            if ep.ejected_at(now) {
                flags.push("/failed_outlier_check");
            }
            let flags = if flags.is_empty() {
                "healthy".to_owned()
            } else {
                flags.concat()
            };
            let _ = writeln!(out, "{c}::{a}::rq_active::{}", ep.in_flight());
            let _ = writeln!(out, "{c}::{a}::rq_total::{}", ep.requests());
            let _ = writeln!(out, "{c}::{a}::health_flags::{flags}");
        }
    }

    /// How long a retry waits before try `n` (1 = the first retry): full
    /// jitter over `base × 2^(n-1)`, capped at `max`, as Envoy's backoff.
    pub(crate) fn backoff(base: Duration, max: Duration, n: u32) -> Duration {
        let ceiling = base
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(max);
        let ms = u64::try_from(ceiling.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(random_u64() % ms)
    }
}

/// The balancers by cluster name, as they serve: replaced whole when the
/// clusters change (a reload or an xDS update).
pub(crate) type LbRegistry =
    Arc<std::sync::RwLock<Arc<std::collections::HashMap<String, Arc<Balancer>>>>>;

/// The properties a routing policy reads (docs/llm-gateway.md):
/// `vessel.cluster.<name>.endpoints` ([`Balancer::endpoints_property`]) and
/// `vessel.clusters` (the cluster names, a list), of the clusters serving
/// now.
pub(crate) struct LbProperties {
    balancers: LbRegistry,
}

impl LbProperties {
    pub(crate) fn new(balancers: LbRegistry) -> Self {
        Self { balancers }
    }

    fn current(&self) -> Arc<std::collections::HashMap<String, Arc<Balancer>>> {
        self.balancers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl vessel_host::PropertyProvider for LbProperties {
    fn get_property(
        &self,
        path: &[&[u8]],
        _scope: vessel_host::PropertyScope<'_>,
    ) -> Result<Option<Vec<u8>>, vessel_abi::Status> {
        Ok(match path {
            [b"vessel", b"cluster", name, b"endpoints"] => std::str::from_utf8(name)
                .ok()
                .and_then(|n| self.current().get(n).cloned())
                .map(|b| b.endpoints_property()),
            [b"vessel", b"clusters"] => {
                let balancers = self.current();
                let mut names: Vec<&String> = balancers.keys().collect();
                names.sort();
                Some(
                    vessel_host::PropertyValue::List(
                        names.into_iter().map(|n| n.as_bytes().to_vec()).collect(),
                    )
                    .encode(),
                )
            }
            _ => None,
        })
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        h.finish() | 1
    });
}

/// A fast non-cryptographic random number (xorshift64*), per thread.
pub(crate) fn random_u64() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A random index below `n` (`n > 0`).
pub(crate) fn random_index(n: usize) -> usize {
    (random_u64() % n as u64) as usize
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect()
    }

    fn lb(policy: LbPolicy) -> LoadBalancing {
        LoadBalancing {
            policy,
            ..LoadBalancing::default()
        }
    }

    #[test]
    fn round_robin_cycles() {
        let a = addrs(3);
        let b = Balancer::new("c", &a, &lb(LbPolicy::RoundRobin), None, false);
        let picks: Vec<_> = (0..6).map(|_| b.pick(&[], 1).unwrap().addr).collect();
        assert_eq!(picks, [a[0], a[1], a[2], a[0], a[1], a[2]]);
        let empty = Balancer::new("e", &[], &lb(LbPolicy::RoundRobin), None, false);
        assert!(empty.pick(&[], 1).is_none());
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let a = addrs(2);
        // choice_count 16: with two endpoints, the idle one is drawn at
        // least once in 16 draws except with probability 2^-16 per pick.
        let b = Balancer::new(
            "c",
            &a,
            &lb(LbPolicy::LeastRequest { choice_count: 16 }),
            None,
            false,
        );
        let busy = b.snapshot()[0].clone();
        let _held: Vec<_> = (0..5).map(|_| InFlight::new(busy.clone())).collect();
        assert_eq!(busy.in_flight(), 5);
        let idle_picks = (0..100)
            .filter(|_| b.pick(&[], 1).unwrap().addr == a[1])
            .count();
        assert!(idle_picks >= 99, "{idle_picks}");
        drop(_held);
        assert_eq!(busy.in_flight(), 0);
    }

    #[test]
    fn random_reaches_every_endpoint() {
        let a = addrs(4);
        let b = Balancer::new("c", &a, &lb(LbPolicy::Random), None, false);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            seen.insert(b.pick(&[], 1).unwrap().addr);
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn outlier_ejects_after_consecutive_5xx_and_panics_when_few_remain() {
        let a = addrs(2);
        let od = OutlierDetection {
            consecutive_5xx: 3,
            max_ejection_percent: 50,
            ..OutlierDetection::default()
        };
        let b = Balancer::new("c", &a, &lb(LbPolicy::RoundRobin), Some(od), false);
        let bad = b.snapshot()[0].clone();
        b.report(&bad, Outcome::Status(503));
        b.report(&bad, Outcome::Failure);
        b.report(&bad, Outcome::Status(200)); // resets the run
        b.report(&bad, Outcome::Status(500));
        b.report(&bad, Outcome::Status(502));
        assert!(!b.ejected(&bad));
        b.report(&bad, Outcome::Status(504));
        assert!(b.ejected(&bad));
        // One of two is out: 50% available is not below the 50% panic
        // threshold, so every pick is the other endpoint.
        for _ in 0..10 {
            assert_eq!(b.pick(&[], 1).unwrap().addr, a[1]);
        }
        // The second cannot be ejected too (50% at most)...
        let other = b.snapshot()[1].clone();
        for _ in 0..3 {
            b.report(&other, Outcome::Failure);
        }
        assert!(!b.ejected(&other));
    }

    #[test]
    fn one_endpoint_may_always_be_ejected_then_panic_uses_it() {
        let a = addrs(1);
        let od = OutlierDetection {
            consecutive_5xx: 1,
            ..OutlierDetection::default()
        };
        let b = Balancer::new("c", &a, &lb(LbPolicy::RoundRobin), Some(od), false);
        let only = b.snapshot()[0].clone();
        b.report(&only, Outcome::Failure);
        assert!(
            b.ejected(&only),
            "max_ejection_percent 10% still allows one"
        );
        assert_eq!(b.pick(&[], 1).unwrap().addr, a[0], "panic mode");
        assert_eq!(b.counters.panic.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn health_checks_gate_endpoints_with_thresholds() {
        let a = addrs(2);
        let b = Balancer::new("c", &a, &lb(LbPolicy::RoundRobin), None, true);
        let eps = b.snapshot();
        // Unchecked endpoints are unhealthy: panic over both.
        assert!(!eps[0].hc_healthy());
        b.record_check(&eps[0], true, (3, 2));
        assert!(eps[0].hc_healthy(), "the first pass counts alone");
        b.record_check(&eps[1], false, (3, 2));
        for _ in 0..4 {
            assert_eq!(b.pick(&[], 1).unwrap().addr, a[0]);
        }
        b.record_check(&eps[0], false, (3, 2));
        assert!(
            eps[0].hc_healthy(),
            "one failure is below unhealthy_threshold 2"
        );
        b.record_check(&eps[0], false, (3, 2));
        assert!(!eps[0].hc_healthy());
        b.record_check(&eps[0], true, (3, 2));
        b.record_check(&eps[0], true, (3, 2));
        assert!(
            !eps[0].hc_healthy(),
            "two passes are below healthy_threshold 3"
        );
        b.record_check(&eps[0], true, (3, 2));
        assert!(eps[0].hc_healthy());
    }

    #[test]
    fn override_host_takes_the_first_available_listed_endpoint() {
        let a = addrs(3);
        let od = OutlierDetection {
            consecutive_5xx: 1,
            max_ejection_percent: 100,
            ..OutlierDetection::default()
        };
        let b = Balancer::new("c", &a, &lb(LbPolicy::RoundRobin), Some(od), false);
        let value = format!("10.0.0.1:80, {}, {}", a[1], a[2]);
        assert_eq!(b.pick_override(&value).unwrap().addr, a[1]);
        b.report(&b.snapshot()[1], Outcome::Failure);
        assert_eq!(b.pick_override(&value).unwrap().addr, a[2], "ejected: next");
        assert!(b.pick_override("garbage, 10.0.0.1:80").is_none());
    }

    #[test]
    fn previous_hosts_avoid_tried_endpoints() {
        let a = addrs(2);
        let b = Balancer::new("c", &a, &lb(LbPolicy::Random), None, false);
        for _ in 0..50 {
            assert_eq!(b.pick(&[a[0]], 32).unwrap().addr, a[1]);
        }
    }

    #[test]
    fn endpoint_state_survives_a_refresh_that_keeps_it() {
        let a = addrs(2);
        let b = Balancer::new("c", &a, &lb(LbPolicy::RoundRobin), None, false);
        let kept = b.snapshot()[1].clone();
        let _f = InFlight::new(kept.clone());
        b.set_endpoints(&[a[1], SocketAddr::from(([127, 0, 0, 1], 1))]);
        assert!(Arc::ptr_eq(&b.snapshot()[0], &kept));
        assert_eq!(b.snapshot()[0].in_flight(), 1);
    }

    #[test]
    fn scrapes_read_vllm_and_sglang_metrics() {
        let vllm = "# HELP vllm:num_requests_running x\n\
            # TYPE vllm:num_requests_running gauge\n\
            vllm:num_requests_running{model_name=\"a\"} 3.0\n\
            vllm:num_requests_running{model_name=\"b\"} 1\n\
            vllm:num_requests_waiting{model_name=\"a\"} 7\n\
            vllm:gpu_cache_usage_perc{model_name=\"a\"} 0.25\n\
            other_metric 99\n\
            broken{ 1\n";
        let l = ScrapedLoad::parse(vllm);
        assert_eq!(
            (l.running, l.waiting, l.kv_cache),
            (Some(4), Some(7), Some(0.25))
        );
        let sglang = "sglang:num_running_reqs 2\nsglang:num_queue_reqs 5\nsglang:token_usage 0.5\n";
        let l = ScrapedLoad::parse(sglang);
        assert_eq!(
            (l.running, l.waiting, l.kv_cache),
            (Some(2), Some(5), Some(0.5))
        );
        assert_eq!(ScrapedLoad::parse("nothing 1\n"), ScrapedLoad::default());
    }

    #[test]
    fn the_endpoints_property_lists_state_and_load() {
        let a = addrs(2);
        let b = Balancer::new("c", &a, &lb(LbPolicy::RoundRobin), None, false);
        let eps = b.snapshot();
        let _f = InFlight::new(eps[1].clone());
        eps[0].record_load(
            &ScrapedLoad {
                running: Some(2),
                waiting: Some(9),
                kv_cache: Some(0.5),
            },
            b.now_ms(),
        );
        let text = String::from_utf8(b.endpoints_property()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(&format!("{} 1 0 2 9 0.5000 ", a[0])),
            "{text}"
        );
        assert_eq!(lines[1], format!("{} 1 1 - - - -", a[1]));
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let base = Duration::from_millis(25);
        let max = Duration::from_millis(100);
        for n in 1..10 {
            let d = Balancer::backoff(base, max, n);
            assert!(d < max, "{d:?}");
        }
        assert!(Balancer::backoff(base, max, 1) < base);
    }
}
