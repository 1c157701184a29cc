//! DNS for `STRICT_DNS` and `LOGICAL_DNS` clusters: the names are resolved
//! at start-up and again every `dns_refresh_rate` (Envoy's default 5 s),
//! and the results replace the endpoints of the router's cluster and of the
//! callout cluster of the same name. A failed resolution keeps the previous
//! endpoints, as Envoy does.
//!
//! Each DNS cluster counts its resolutions in Envoy's cluster stats
//! `cluster.<name>.update_attempt`, `update_success`, `update_failure`, and
//! `membership_total` (a gauge), shown on the admin `/stats`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::JoinHandle;
use vessel_hyper::Runtime;

use super::router::Upstream;
use crate::config::{self, ClusterKind};

/// Envoy's DNS cluster stats.
#[derive(Debug, Default)]
pub(crate) struct DnsStats {
    prefix: String,
    attempt: AtomicU64,
    success: AtomicU64,
    failure: AtomicU64,
    members: AtomicU64,
}

impl DnsStats {
    pub(crate) fn new(cluster: &str) -> Self {
        Self {
            prefix: format!("cluster.{cluster}."),
            ..Self::default()
        }
    }

    fn record(&self, result: &Result<Vec<SocketAddr>, std::io::Error>) {
        self.attempt.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(addrs) => {
                self.success.fetch_add(1, Ordering::Relaxed);
                self.members.store(addrs.len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.failure.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `(name, value)` of every counter.
    pub(crate) fn counters(&self) -> Vec<(String, u64)> {
        vec![
            (
                format!("{}update_attempt", self.prefix),
                self.attempt.load(Ordering::Relaxed),
            ),
            (
                format!("{}update_failure", self.prefix),
                self.failure.load(Ordering::Relaxed),
            ),
            (
                format!("{}update_success", self.prefix),
                self.success.load(Ordering::Relaxed),
            ),
        ]
    }

    /// `(name, value)` of every gauge.
    pub(crate) fn gauges(&self) -> Vec<(String, i64)> {
        vec![(
            format!("{}membership_total", self.prefix),
            i64::try_from(self.members.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        )]
    }
}

/// Keeps what a resolution gives for the cluster's kind: every address
/// (STRICT_DNS) or the first (LOGICAL_DNS).
fn select(kind: ClusterKind, addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    match kind {
        ClusterKind::LogicalDns => addrs.into_iter().take(1).collect(),
        ClusterKind::Static | ClusterKind::StrictDns | ClusterKind::Eds => addrs,
    }
}

/// Resolves every endpoint of `c` (tokio's resolver, off the workers).
pub(crate) async fn resolve(c: &config::Cluster) -> Result<Vec<SocketAddr>, std::io::Error> {
    let mut out = Vec::new();
    for e in &c.endpoints {
        let addrs: Vec<SocketAddr> = match e.address.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, e.port)],
            Err(_) => tokio::net::lookup_host((e.address.as_str(), e.port))
                .await?
                .collect(),
        };
        out.extend(select(c.kind, addrs));
    }
    Ok(out)
}

/// Counts the start-up resolution of a DNS cluster.
pub(crate) fn record_startup(stats: &DnsStats, endpoints: &[SocketAddr]) {
    stats.record(&Ok(endpoints.to_vec()));
}

/// Re-resolves `c` every `dns_refresh_rate` for as long as the task runs.
pub(crate) fn spawn_refresh(
    c: config::Cluster,
    upstream: Arc<Upstream>,
    runtime: Arc<Runtime>,
    stats: Arc<DnsStats>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(c.dns_refresh_rate);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let result = resolve(&c).await;
            stats.record(&result);
            match result {
                Ok(addrs) => {
                    if addrs != upstream.endpoints() {
                        log::info!("cluster `{}`: endpoints now {addrs:?}", c.name);
                    }
                    runtime.set_cluster_endpoints(&c.name, addrs.clone());
                    upstream.set_endpoints(addrs);
                }
                Err(e) => {
                    log::warn!(
                        "cluster `{}`: DNS resolution failed ({e}); keeping the previous endpoints",
                        c.name
                    );
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;

    fn cluster(kind: ClusterKind) -> config::Cluster {
        config::Cluster {
            name: "c".into(),
            kind,
            connect_timeout: std::time::Duration::from_secs(1),
            endpoints: vec![
                Endpoint {
                    address: "localhost".into(),
                    port: 8080,
                    hostname: None,
                },
                Endpoint {
                    address: "127.0.0.2".into(),
                    port: 9090,
                    hostname: None,
                },
            ],
            load_balancing: config::LoadBalancing::default(),
            health_check: None,
            outlier_detection: None,
            metrics_scrape: None,
            http2: false,
            dns_refresh_rate: config::DEFAULT_DNS_REFRESH_RATE,
            tls: None,
        }
    }

    #[tokio::test]
    async fn strict_dns_keeps_every_address_logical_dns_the_first() {
        let strict = resolve(&cluster(ClusterKind::StrictDns))
            .await
            .expect("resolves");
        assert!(strict.len() >= 2, "{strict:?}");
        assert!(
            strict
                .iter()
                .any(|a| a.ip().is_loopback() && a.port() == 8080)
        );
        assert_eq!(
            strict.last(),
            Some(&"127.0.0.2:9090".parse().expect("addr"))
        );
        let logical = resolve(&cluster(ClusterKind::LogicalDns))
            .await
            .expect("resolves");
        assert_eq!(logical.len(), 2, "one address per endpoint: {logical:?}");
        assert_eq!(logical[0].port(), 8080);
        assert!(logical[0].ip().is_loopback());
    }

    #[test]
    fn stats_count_attempts_successes_and_failures() {
        let s = DnsStats::new("c");
        s.record(&Ok(vec!["127.0.0.1:1".parse().expect("addr")]));
        s.record(&Err(std::io::Error::other("no")));
        assert_eq!(
            s.counters(),
            vec![
                ("cluster.c.update_attempt".to_owned(), 2),
                ("cluster.c.update_failure".to_owned(), 1),
                ("cluster.c.update_success".to_owned(), 1),
            ]
        );
        assert_eq!(
            s.gauges(),
            vec![("cluster.c.membership_total".to_owned(), 1)]
        );
    }
}
