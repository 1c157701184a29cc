//! The upstream clusters as they serve, one [`LiveCluster`] per name.
//!
//! A cluster is built from its config (names resolved, TLS set up, its
//! [`Balancer`] and client made) before anything of a new config is used,
//! warmed (the first health-check round, as Envoy's cluster warming), then
//! started (its health checker, metrics scraper and DNS refresh tasks). A
//! reload keeps a cluster whose config did not change (`==`), with its
//! balancer state and tasks; a changed or removed one is stopped when it is
//! dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::JoinHandle;
use vessel_hyper::Runtime;

use super::dns::{self, DnsStats};
use super::health;
use super::lb::Balancer;
use super::router::Upstream;
use super::{RunError, resolve, tls};
use crate::config::{self, ClusterKind};

/// One cluster as it serves.
pub(crate) struct LiveCluster {
    /// What it was built from.
    pub(crate) config: config::Cluster,
    /// The router's and tcp_proxy's side: the balancer and the client.
    pub(crate) upstream: Arc<Upstream>,
    /// The callouts' side (`proxy_http_call`, gRPC, Redis).
    pub(crate) callout: vessel_hyper::Cluster,
    /// `cluster.<name>.update_*` (DNS clusters only).
    pub(crate) dns: Option<Arc<DnsStats>>,
    checker: Option<Arc<health::Checker>>,
    scraper: Option<Arc<health::Scraper>>,
    /// Health checks, scrapes and DNS refreshes, once started.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl LiveCluster {
    /// Builds cluster `c` (resolving its names blocks). `dns`: the DNS
    /// stats of the cluster it replaces, kept so its counters go on.
    pub(crate) fn build(c: &config::Cluster, dns: Option<Arc<DnsStats>>) -> Result<Self, RunError> {
        let endpoints = resolve(c)?;
        let upstream_tls = c
            .tls
            .as_ref()
            .map(|t| tls::upstream_tls(t, c.http2).map(Arc::new))
            .transpose()
            .map_err(|source| RunError::Tls {
                context: format!("cluster `{}`", c.name),
                source,
            })?;
        let callout = vessel_hyper::Cluster {
            name: c.name.clone(),
            endpoints: endpoints.clone(),
            connect_timeout: c.connect_timeout,
            http2: c.http2,
            tls: upstream_tls.clone(),
        };
        let balancer = Arc::new(Balancer::new(
            &c.name,
            &endpoints,
            &c.load_balancing,
            c.outlier_detection.clone(),
            c.health_check.is_some(),
        ));
        let checker = c.health_check.as_ref().map(|hc| {
            Arc::new(health::Checker::new(
                balancer.clone(),
                hc.clone(),
                upstream_tls.clone(),
            ))
        });
        let scraper = c.metrics_scrape.as_ref().map(|m| {
            Arc::new(health::Scraper::new(
                balancer.clone(),
                m.clone(),
                upstream_tls.clone(),
            ))
        });
        let upstream = Arc::new(Upstream::new(
            balancer,
            c.connect_timeout,
            c.http2,
            upstream_tls,
        ));
        let dns = matches!(c.kind, ClusterKind::StrictDns | ClusterKind::LogicalDns).then(|| {
            let stats = dns.unwrap_or_else(|| Arc::new(DnsStats::new(&c.name)));
            dns::record_startup(&stats, &endpoints);
            stats
        });
        Ok(Self {
            config: c.clone(),
            upstream,
            callout,
            dns,
            checker,
            scraper,
            tasks: Mutex::default(),
        })
    }

    /// The cluster's name.
    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// Its balancer.
    pub(crate) fn balancer(&self) -> &Arc<Balancer> {
        &self.upstream.balancer
    }

    /// Its endpoints now.
    pub(crate) fn endpoints(&self) -> Vec<SocketAddr> {
        self.upstream.endpoints()
    }

    /// The first health-check round, before the cluster is used.
    pub(crate) async fn warm(&self) {
        if let Some(c) = &self.checker {
            c.round().await;
        }
    }

    /// Starts the health checks, scrapes and DNS refreshes; `runtime`
    /// gets the refreshed endpoints of the callout cluster.
    pub(crate) fn start(&self, runtime: &Arc<Runtime>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.extend(self.checker.clone().map(health::Checker::spawn));
        tasks.extend(self.scraper.clone().map(health::Scraper::spawn));
        if let Some(stats) = &self.dns {
            tasks.push(dns::spawn_refresh(
                self.config.clone(),
                self.upstream.clone(),
                runtime.clone(),
                stats.clone(),
            ));
        }
    }

    /// Stops its tasks (requests in flight to it finish).
    pub(crate) fn stop(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            t.abort();
        }
    }
}

impl Drop for LiveCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
