//! `envoy.filters.network.tcp_proxy`: a filter chain that sends a
//! connection's bytes to an endpoint of a cluster
//! ([`vessel_hyper::tcp::proxy`]), with Envoy's `tcp.<stat_prefix>.*`
//! counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpStream;
use vessel_hyper::tcp::TcpOptions;
use vessel_hyper::{ConnectionInfo, FilterPool};

use super::lb::InFlight;
use super::router::Upstream;
use crate::config::TcpProxy;

/// One tcp_proxy's counters (Envoy's names under `tcp.<stat_prefix>.`).
#[derive(Debug, Default)]
pub(crate) struct TcpStats {
    prefix: String,
    cx_total: AtomicU64,
    no_route: AtomicU64,
    connect_fail: AtomicU64,
    idle_timeout: AtomicU64,
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
}

impl TcpStats {
    pub(crate) fn new(stat_prefix: &str) -> Self {
        Self {
            prefix: format!("tcp.{stat_prefix}."),
            ..Self::default()
        }
    }

    /// `tcp.<stat_prefix>.`.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `(name, value)` of every counter.
    pub(crate) fn counters(&self) -> Vec<(String, u64)> {
        let c = |name: &str, v: &AtomicU64| {
            (format!("{}{name}", self.prefix), v.load(Ordering::Relaxed))
        };
        vec![
            c("downstream_cx_total", &self.cx_total),
            c("downstream_cx_no_route", &self.no_route),
            c("upstream_cx_connect_fail", &self.connect_fail),
            c("idle_timeout", &self.idle_timeout),
            c("downstream_cx_rx_bytes_total", &self.rx_bytes),
            c("downstream_cx_tx_bytes_total", &self.tx_bytes),
        ]
    }
}

/// A tcp_proxy chain as it serves.
pub(crate) struct TcpProxyServe {
    pub(crate) config: TcpProxy,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) stats: Arc<TcpStats>,
    /// The chain's network wasm filters, in order.
    pub(crate) filters: Vec<Arc<FilterPool>>,
    /// The listener's `per_connection_buffer_limit_bytes`.
    pub(crate) buffer_limit: usize,
}

impl TcpProxyServe {
    /// Proxies one accepted connection (plain TCP, or TLS terminated by
    /// the chain's transport socket) until it ends: through the network
    /// filters when the chain has some.
    pub(crate) async fn serve<D>(
        &self,
        downstream: D,
        info: ConnectionInfo,
        tls: Option<Arc<vessel_hyper::TlsInfo>>,
    ) where
        D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.stats.cx_total.fetch_add(1, Ordering::Relaxed);
        let cluster = &self.config.cluster;
        let Some(ep) = self.upstream.balancer.pick(&[], 1) else {
            self.stats.no_route.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "tcp_proxy `{}`: cluster `{cluster}` has no healthy endpoint; closing the \
                 connection from {}",
                self.config.stat_prefix,
                info.source
            );
            return;
        };
        let _in_flight = InFlight::new(ep.clone());
        let timeout = self.upstream.connect_timeout();
        let addr = ep.addr;
        let connect = async move {
            let s = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            let _ = s.set_nodelay(true);
            Ok::<_, std::io::Error>(s)
        };
        let options = TcpOptions {
            idle_timeout: self.config.idle_timeout,
            ..TcpOptions::default()
        };
        // A cluster with a transport socket: TLS to the endpoint.
        let (bytes, connect_failed) = match self.upstream.tls().cloned() {
            None => self.pump(downstream, connect, info, tls, options).await,
            Some(origin) => {
                let connect = async move {
                    let s = connect.await?;
                    tokio::time::timeout(timeout, origin.handshake(s, addr.ip()))
                        .await
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
                };
                self.pump(downstream, connect, info, tls, options).await
            }
        };
        if connect_failed {
            self.stats.connect_fail.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(out) = bytes {
            self.stats
                .rx_bytes
                .fetch_add(out.downstream_rx, Ordering::Relaxed);
            self.stats
                .tx_bytes
                .fetch_add(out.downstream_tx, Ordering::Relaxed);
            if out.idle_timeout {
                self.stats.idle_timeout.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Connects (`connect`) and moves the bytes, through the network
    /// filters when the chain has some: the byte counts (none if the
    /// proxy failed) and whether the connection to the upstream failed.
    async fn pump<D, U, C>(
        &self,
        downstream: D,
        connect: C,
        info: ConnectionInfo,
        tls: Option<Arc<vessel_hyper::TlsInfo>>,
        options: TcpOptions,
    ) -> (Option<vessel_hyper::tcp::TcpOutcome>, bool)
    where
        D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        C: std::future::Future<Output = std::io::Result<U>>,
    {
        if self.filters.is_empty() {
            match connect.await {
                Err(e) => {
                    log::debug!(
                        "tcp_proxy: cannot connect to cluster `{}`: {e}",
                        self.config.cluster
                    );
                    (None, true)
                }
                Ok(upstream) => {
                    match vessel_hyper::tcp::proxy(downstream, upstream, options).await {
                        Ok(out) => (Some(out), false),
                        Err(e) => {
                            log::debug!("tcp_proxy: connection from {}: {e}", info.source);
                            (None, false)
                        }
                    }
                }
            }
        } else {
            let out = vessel_hyper::tcp::proxy_filtered(
                downstream,
                connect,
                &self.filters,
                vessel_hyper::connection_properties(info, tls),
                self.buffer_limit,
                options,
            )
            .await;
            (Some(out.bytes), out.connect_failed)
        }
    }
}
