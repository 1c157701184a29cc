//! `envoy.filters.network.tcp_proxy`: a filter chain that sends a
//! connection's bytes to an endpoint of a cluster
//! ([`vessel_hyper::tcp::proxy`]), with Envoy's `tcp.<stat_prefix>.*`
//! counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpStream;
use vessel_hyper::ConnectionInfo;
use vessel_hyper::tcp::TcpOptions;

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
}

impl TcpProxyServe {
    /// Proxies one accepted connection (plain TCP, or TLS terminated by
    /// the chain's transport socket) until it ends.
    pub(crate) async fn serve<D>(&self, downstream: D, info: ConnectionInfo)
    where
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
        let connect =
            tokio::time::timeout(self.upstream.connect_timeout(), TcpStream::connect(ep.addr))
                .await;
        let upstream = match connect {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.stats.connect_fail.fetch_add(1, Ordering::Relaxed);
                log::debug!("tcp_proxy: cannot connect to {} ({cluster}): {e}", ep.addr);
                return;
            }
            Err(_) => {
                self.stats.connect_fail.fetch_add(1, Ordering::Relaxed);
                log::debug!("tcp_proxy: connecting to {} ({cluster}) timed out", ep.addr);
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        let options = TcpOptions {
            idle_timeout: self.config.idle_timeout,
            ..TcpOptions::default()
        };
        // A cluster with a transport socket: TLS to the endpoint.
        let proxied = match self.upstream.tls() {
            None => vessel_hyper::tcp::proxy(downstream, upstream, options).await,
            Some(tls) => {
                let handshake = tokio::time::timeout(
                    self.upstream.connect_timeout(),
                    tls.handshake(upstream, ep.addr.ip()),
                )
                .await;
                match handshake {
                    Ok(Ok(stream)) => vessel_hyper::tcp::proxy(downstream, stream, options).await,
                    Ok(Err(e)) => {
                        self.stats.connect_fail.fetch_add(1, Ordering::Relaxed);
                        log::debug!("tcp_proxy: TLS to {} ({cluster}): {e}", ep.addr);
                        return;
                    }
                    Err(_) => {
                        self.stats.connect_fail.fetch_add(1, Ordering::Relaxed);
                        log::debug!("tcp_proxy: TLS to {} ({cluster}) timed out", ep.addr);
                        return;
                    }
                }
            }
        };
        match proxied {
            Ok(out) => {
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
            Err(e) => log::debug!("tcp_proxy: connection from {}: {e}", info.source),
        }
    }
}
