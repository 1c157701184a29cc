//! Named upstream clusters for HTTP, gRPC and Redis callouts (ABI reference §4.5),
//! registered by the embedder, and the pooled hyper-util clients that reach
//! them.
//!
//! A cluster's endpoints can be replaced while it is in use
//! ([`Clusters::set_endpoints`]), e.g. by an embedder that re-resolves DNS
//! names as Envoy's `STRICT_DNS` and `LOGICAL_DNS` clusters do, and the set
//! of clusters itself while callouts run ([`crate::Runtime::update_clusters`]:
//! a cluster left alone keeps its client, endpoints and Redis connections).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// One upstream cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The name filters use in `proxy_http_call`.
    pub name: String,
    /// Its endpoints, tried round-robin.
    pub endpoints: Vec<SocketAddr>,
    /// TCP connect timeout. Envoy's default is 5 s.
    pub connect_timeout: Duration,
    /// Speak HTTP/2 (prior knowledge) to it, as gRPC needs.
    pub http2: bool,
    /// TLS to the endpoints (none: plain TCP).
    pub tls: Option<Arc<crate::tls::UpstreamTls>>,
}

impl Cluster {
    /// Envoy's default connect timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A cluster with one endpoint and the defaults.
    pub fn new(name: impl Into<String>, endpoint: SocketAddr) -> Self {
        Self {
            name: name.into(),
            endpoints: vec![endpoint],
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            http2: false,
            tls: None,
        }
    }

    /// Connects with TLS.
    pub fn tls(mut self, tls: crate::tls::UpstreamTls) -> Self {
        self.tls = Some(Arc::new(tls));
        self
    }

    /// Uses HTTP/2 with prior knowledge.
    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }
}

/// The body of callout requests: complete (HTTP calls, unary gRPC) or
/// streamed (gRPC streams).
pub(crate) type CalloutBody = BoxBody<Bytes, Infallible>;

pub(crate) type HttpClient = Client<crate::tls::Connector, CalloutBody>;

pub(crate) struct ClusterEntry {
    pub(crate) cluster: Cluster,
    pub(crate) client: HttpClient,
    /// The endpoints in use (starts as `cluster.endpoints`).
    endpoints: RwLock<Arc<[SocketAddr]>>,
    /// Idle Redis connections (Higress `proxy_redis_call`).
    pub(crate) redis: crate::redis::IdleConnections,
    next: AtomicUsize,
}

impl ClusterEntry {
    /// The URI scheme of requests to this cluster.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.cluster.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub(crate) fn next_endpoint(&self) -> Option<SocketAddr> {
        let endpoints = self
            .endpoints
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len();
        Some(endpoints[i])
    }
}

/// The clusters callouts may use.
#[derive(Default)]
pub struct Clusters {
    pub(crate) by_name: HashMap<String, Arc<ClusterEntry>>,
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.by_name.values().map(|c| &c.cluster))
            .finish()
    }
}

impl Clusters {
    /// No clusters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a cluster.
    pub fn add(&mut self, cluster: Cluster) {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cluster.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(cluster.http2)
            .build(crate::tls::Connector::new(connector, cluster.tls.clone()));
        self.by_name.insert(
            cluster.name.clone(),
            Arc::new(ClusterEntry {
                endpoints: RwLock::new(cluster.endpoints.clone().into()),
                cluster,
                client,
                redis: Default::default(),
                next: AtomicUsize::new(0),
            }),
        );
    }

    /// A copy sharing every cluster's entry (its client, endpoints and
    /// idle connections) with `self`.
    pub(crate) fn share(&self) -> Self {
        Self {
            by_name: self.by_name.clone(),
        }
    }

    /// Removes cluster `name`; false if there was none.
    pub fn remove(&mut self, name: &str) -> bool {
        self.by_name.remove(name).is_some()
    }

    /// Replaces the endpoints of cluster `name` (new callouts use them;
    /// pooled connections to old endpoints are reused until they close).
    /// Returns false if there is no such cluster.
    pub fn set_endpoints(&self, name: &str, endpoints: Vec<SocketAddr>) -> bool {
        let Some(entry) = self.by_name.get(name) else {
            return false;
        };
        *entry
            .endpoints
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = endpoints.into();
        true
    }

    /// The endpoints cluster `name` uses now.
    pub fn endpoints(&self, name: &str) -> Option<Vec<SocketAddr>> {
        self.by_name.get(name).map(|e| {
            e.endpoints
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .to_vec()
        })
    }

    /// True if `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The cluster names.
    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&ClusterEntry> {
        self.by_name.get(name).map(|e| &**e)
    }
}
