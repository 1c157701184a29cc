//! Active HTTP health checks (`health_checks[0].http_health_check`): every
//! `interval`, each endpoint gets `GET <path>` with `Host: <host or cluster
//! name>` over HTTP/1.1; an answer whose status is in `expected_statuses`
//! within `timeout` passes. The thresholds are applied by the
//! [`Balancer`].
//!
//! The first round runs before the listeners bind, as Envoy's cluster
//! warming waits for the first health-check pass.
//!
//! [`Scraper`] reads the endpoints' model-server metrics the same way.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use vessel_hyper::tls::{Connector, UpstreamTls};

use super::lb::{Balancer, EndpointState, ScrapedLoad};
use crate::config::{HealthCheck, MetricsScrape};

type CheckClient = Client<Connector, Empty<Bytes>>;

/// The client of health checks and scrapes: one idle connection per
/// endpoint, `timeout` to connect, TLS when the cluster has a transport
/// socket (as Envoy's health checks use the cluster's).
fn probe_client(timeout: std::time::Duration, tls: Option<Arc<UpstreamTls>>) -> CheckClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(Connector::new(connector, tls))
}

/// A cluster's health checker.
pub(crate) struct Checker {
    balancer: Arc<Balancer>,
    hc: HealthCheck,
    host: String,
    client: CheckClient,
}

impl Checker {
    pub(crate) fn new(
        balancer: Arc<Balancer>,
        hc: HealthCheck,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Self {
        let client = probe_client(hc.timeout, tls);
        let host = hc.host.clone().unwrap_or_else(|| balancer.cluster.clone());
        Self {
            balancer,
            hc,
            host,
            client,
        }
    }

    /// Checks every endpoint once, concurrently.
    pub(crate) async fn round(&self) {
        let mut set = tokio::task::JoinSet::new();
        for ep in self.balancer.snapshot().iter() {
            let ep = ep.clone();
            let client = self.client.clone();
            let (host, path, timeout) = (self.host.clone(), self.hc.path.clone(), self.hc.timeout);
            let expected = self.hc.expected_statuses.clone();
            set.spawn(async move {
                let passed = check(&client, &ep, &host, &path, timeout, &expected).await;
                (ep, passed)
            });
        }
        while let Some(done) = set.join_next().await {
            if let Ok((ep, passed)) = done {
                self.balancer.record_check(
                    &ep,
                    passed,
                    (self.hc.healthy_threshold, self.hc.unhealthy_threshold),
                );
            }
        }
    }

    /// Checks every `interval` until aborted.
    pub(crate) fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.hc.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // The first round ran before start-up.
            loop {
                tick.tick().await;
                self.round().await;
            }
        })
    }
}

async fn check(
    client: &CheckClient,
    ep: &EndpointState,
    host: &str,
    path: &str,
    timeout: std::time::Duration,
    expected: &[(u16, u16)],
) -> bool {
    let Ok(req) = Request::get(format!("http://{}{path}", ep.addr))
        .header(header::HOST, host)
        .header(header::USER_AGENT, "Envoy/HC")
        .body(Empty::<Bytes>::new())
    else {
        return false;
    };
    match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(resp)) => {
            let s = resp.status().as_u16();
            expected
                .iter()
                .any(|(start, end)| (*start..*end).contains(&s))
        }
        Ok(Err(e)) => {
            log::debug!("health check of {}: {e}", ep.addr);
            false
        }
        Err(_) => {
            log::debug!("health check of {}: timed out after {timeout:?}", ep.addr);
            false
        }
    }
}

/// Scrapes each endpoint's model-server metrics (`vessel_metrics_scrape`)
/// into its state, every `interval`. A scrape that fails leaves the last
/// one (its age shows in the `endpoints` property).
pub(crate) struct Scraper {
    balancer: Arc<Balancer>,
    config: MetricsScrape,
    client: CheckClient,
}

impl Scraper {
    pub(crate) fn new(
        balancer: Arc<Balancer>,
        config: MetricsScrape,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Self {
        let client = probe_client(config.timeout, tls);
        Self {
            balancer,
            config,
            client,
        }
    }

    /// Scrapes every endpoint once, concurrently.
    pub(crate) async fn round(&self) {
        let mut set = tokio::task::JoinSet::new();
        for ep in self.balancer.snapshot().iter() {
            let ep = ep.clone();
            let client = self.client.clone();
            let balancer = self.balancer.clone();
            let (path, timeout) = (self.config.path.clone(), self.config.timeout);
            set.spawn(async move {
                let Ok(req) = Request::get(format!("http://{}{path}", ep.addr))
                    .header(header::HOST, ep.addr.to_string())
                    .body(Empty::<Bytes>::new())
                else {
                    return;
                };
                let fetched = tokio::time::timeout(timeout, async {
                    let resp = client.request(req).await.ok()?;
                    if !resp.status().is_success() {
                        return None;
                    }
                    // A metrics page is small; a hostile one is cut at 1 MiB.
                    let body = http_body_util::Limited::new(resp.into_body(), 1 << 20);
                    http_body_util::BodyExt::collect(body)
                        .await
                        .ok()
                        .map(|b| b.to_bytes())
                })
                .await;
                match fetched {
                    Ok(Some(bytes)) => {
                        let load = ScrapedLoad::parse(&String::from_utf8_lossy(&bytes));
                        ep.record_load(&load, balancer.now_ms());
                    }
                    _ => log::debug!("metrics scrape of {} failed", ep.addr),
                }
            });
        }
        while set.join_next().await.is_some() {}
    }

    /// Scrapes every `interval` until aborted.
    pub(crate) fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.config.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                self.round().await;
            }
        })
    }
}
