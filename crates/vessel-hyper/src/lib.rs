//! # vessel-hyper
//!
//! Runs proxy-wasm filter chains on real HTTP traffic: a tower
//! [`VesselLayer`] that any hyper, axum or hyper-util server can add in
//! front of its upstream service, with VM pools, HTTP callouts to named
//! [`Cluster`]s, tick timers and queue notifications on tokio.
//!
//! Every stream rule of Envoy's (iteration across filters, stops and
//! buffering, local replies, the failure policies, `on_log`/`on_done`/
//! `on_delete`) lives in the sans-IO core, [`vessel_host::HttpStream`]; the
//! layer's service is a pump that moves frames and events between hyper and
//! it. [`PooledStream`] (an `HttpStream` over [`PooledChain`], one VM of
//! each [`FilterPool`]) is that core with its VMs, for any other tokio-based
//! proxy to drive the same way.
//!
//! A VM that traps or hits a limit follows its plugin's [`FailurePolicy`]
//! (Envoy's `FAIL_CLOSED`, `FAIL_OPEN`, `FAIL_RELOAD`; counted in
//! [`PluginStats`]), and [`VesselLayer::reload`] swaps a chain's filters
//! atomically while streams in flight finish on the old VMs.
//!
//! ```no_run
//! # async fn demo(plugin: vessel_host::Plugin) -> Result<(), Box<dyn std::error::Error>> {
//! use vessel_hyper::{Clusters, FailurePolicy, FilterPool, Runtime, VesselLayer};
//! let runtime = Runtime::new(Clusters::new());
//! let env = vessel_host::HostEnv::default();
//! let pool = FilterPool::new(&plugin, &env, &runtime, 2, FailurePolicy::FailClosed)?;
//! let layer = VesselLayer::new(vec![pool]);
//! // tower::ServiceBuilder::new().layer(layer).service(upstream)
//! # let _ = layer; Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod body;
pub mod callout;
pub mod chain;
pub mod cluster;
pub mod convert;
pub mod future;
mod grpc;
pub mod layer;
pub mod pool;
pub mod redis;
pub mod service;
mod signal;
mod stream;
pub mod tcp;
pub mod tls;

pub use body::{BoxError, VesselBody};
pub use chain::{PooledChain, PooledStream};
pub use cluster::{Cluster, Clusters};
pub use future::ResponseFuture;
pub use layer::{ChainConfig, DEFAULT_BUFFER_LIMIT, VesselLayer};
pub use pool::{
    FailurePolicy, FilterPool, FilterPoolBuilder, PluginError, PluginStats, ReloadBackoff, Runtime,
};
pub use service::{
    CertificateInfo, ConnectionInfo, ResponseInfo, RouteInfo, TlsInfo, UpstreamInfo, VesselService,
    connection_properties,
};

/// On an upstream request: the plugin names of the filters the stream
/// skipped because they failed (pools built with
/// [`skip_on_failure`](pool::FilterPoolBuilder::skip_on_failure)), so that
/// the inner service can route without them (vessel run's policy
/// fallback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFilters(pub Vec<String>);
