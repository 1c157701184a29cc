//! vessel as an xDS data plane: `dynamic_resources.ads_config` makes
//! `vessel run` follow a control plane over ADS (gRPC, state of the world):
//! listeners (LDS), route configs (RDS), clusters (CDS), endpoints (EDS)
//! and wasm HTTP filter configs (ECDS).
//!
//! Each resource arrives as protobuf, is turned into Envoy's JSON form by
//! reflection ([`proto`]) and read by the same strict config reader as the
//! bootstrap file, so what a control plane may send is exactly what a file
//! may say. After each response the client assembles a candidate bootstrap
//! (the file's static resources plus the dynamic ones, leaving out what
//! still warms, [`store`]), parses it, hands it to the running proxy, and
//! ACKs, or NACKs with the error while the last good config keeps serving
//! (`client`). docs/xds.md describes the subset.

pub(crate) mod client;
mod dump;
pub mod proto;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

pub use proto::descriptors;
use store::{BootstrapFile, Kind, Store, Subscriptions};

use crate::config::{Bootstrap, ConfigError};

pub(crate) use client::ApplyFn;

/// Envoy's default `initial_fetch_timeout`: how long `vessel run` waits for
/// the first configuration before it serves what it has.
pub const INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// The client's state, shared with the admin.
pub(crate) struct State {
    pub(crate) store: Store,
    /// The last accepted `version_info` per kind.
    pub(crate) versions: BTreeMap<Kind, String>,
    /// The last nonce per kind.
    pub(crate) nonces: BTreeMap<Kind, String>,
    /// Kinds with an accepted response.
    pub(crate) received: BTreeSet<Kind>,
    /// The last rejected version and its error, per kind.
    pub(crate) rejected: BTreeMap<Kind, (String, String)>,
    pub(crate) subs: Subscriptions,
    /// Dynamic listeners and clusters whose newest version warms.
    pub(crate) warming: (BTreeSet<String>, BTreeSet<String>),
    /// Whether the first configuration was handed to `serve`: from then on
    /// updates are applied to the running proxy.
    pub(crate) initial_done: bool,
    lds: bool,
    cds: bool,
}

impl State {
    /// Whether the first configuration is complete: LDS and CDS answered,
    /// nothing warming.
    pub(crate) fn initial_complete(&self, file: &BootstrapFile) -> bool {
        (!self.lds || self.received.contains(&Kind::Listener))
            && (!self.cds || self.received.contains(&Kind::Cluster))
            && self.warming.0.is_empty()
            && self.warming.1.is_empty()
            && self.store.assemble(file).left_out_static == 0
    }
}

/// Per-type counters (`listener_manager.lds.*`, ...).
#[derive(Debug, Default)]
pub(crate) struct TypeStats {
    pub(crate) attempt: AtomicU64,
    pub(crate) success: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) version: AtomicU64,
}

/// The client's counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) connected: AtomicI64,
    pub(crate) reconnects: AtomicU64,
    per: [TypeStats; 5],
}

impl Stats {
    pub(crate) fn of(&self, kind: Kind) -> &TypeStats {
        &self.per[kind as usize]
    }
}

/// The stat prefix of a kind.
fn stat_prefix(kind: Kind) -> &'static str {
    match kind {
        Kind::Listener => "listener_manager.lds",
        Kind::Cluster => "cluster_manager.cds",
        Kind::Route => "vessel.xds.rds",
        Kind::Endpoint => "vessel.xds.eds",
        Kind::Extension => "vessel.xds.ecds",
    }
}

/// What the client task and the admin share.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) stats: Stats,
    pub(crate) file: BootstrapFile,
    pub(crate) initial: watch::Sender<bool>,
}

impl Shared {
    /// `/stats` lines: (name, counter?, value).
    pub(crate) fn stat_lines(&self) -> Vec<(String, bool, i64)> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
        let mut out = vec![
            (
                "control_plane.connected_state".to_owned(),
                false,
                self.stats.connected.load(Ordering::Relaxed),
            ),
            (
                "vessel.xds.reconnects".to_owned(),
                true,
                load(&self.stats.reconnects),
            ),
        ];
        for kind in Kind::ALL {
            let s = self.stats.of(kind);
            let p = stat_prefix(kind);
            out.push((format!("{p}.update_attempt"), true, load(&s.attempt)));
            out.push((format!("{p}.update_success"), true, load(&s.success)));
            out.push((format!("{p}.update_rejected"), true, load(&s.rejected)));
            out.push((format!("{p}.version"), false, load(&s.version)));
        }
        out
    }

    /// `/config_dump`.
    pub(crate) fn config_dump(&self) -> String {
        dump::config_dump(self)
    }
}

/// The xDS client of one `vessel run`.
pub struct Xds {
    pub(crate) shared: Arc<Shared>,
    applier: watch::Sender<Option<ApplyFn>>,
    task: tokio::task::JoinHandle<()>,
}

/// Why the xDS client cannot start.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// The bootstrap file cannot be read again.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The control plane's cluster cannot be used.
    #[error("dynamic_resources: {0}")]
    Cluster(String),
}

impl Xds {
    /// Starts following the control plane of `boot` (which must have
    /// `dynamic_resources`), read from `path`. Must run in a tokio runtime.
    pub fn start(boot: &Bootstrap, path: &Path) -> Result<Xds, XdsError> {
        let Some(dynamic) = &boot.dynamic else {
            return Err(XdsError::Cluster("no dynamic_resources".to_owned()));
        };
        let file = store::read_file(path)?;
        let cluster = boot
            .cluster(&dynamic.ads_cluster)
            .ok_or_else(|| XdsError::Cluster(format!("no cluster `{}`", dynamic.ads_cluster)))?;
        if cluster.tls.is_some() {
            return Err(XdsError::Cluster(format!(
                "cluster `{}`: TLS to the control plane is not supported",
                cluster.name
            )));
        }
        let Some(ep) = cluster.endpoints.first() else {
            return Err(XdsError::Cluster(format!(
                "cluster `{}` has no endpoint",
                cluster.name
            )));
        };
        let host = if ep.address.contains(':') {
            format!("[{}]", ep.address)
        } else {
            ep.address.clone()
        };
        let target = client::Target {
            uri: format!("http://{host}:{}", ep.port),
            connect_timeout: cluster.connect_timeout,
            node: client::node_proto(boot),
            node_first_only: dynamic.node_on_first_message_only,
            lds: dynamic.lds,
            cds: dynamic.cds,
        };
        let (initial, _) = watch::channel(false);
        let mut state = State {
            store: Store::default(),
            versions: BTreeMap::new(),
            nonces: BTreeMap::new(),
            received: BTreeSet::new(),
            rejected: BTreeMap::new(),
            subs: Subscriptions::default(),
            warming: Default::default(),
            initial_done: false,
            lds: dynamic.lds,
            cds: dynamic.cds,
        };
        state.subs = state.store.subscriptions(&file);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            stats: Stats::default(),
            file,
            initial,
        });
        let (applier, applier_rx) = watch::channel(None);
        let task = tokio::spawn(client::run(shared.clone(), target, applier_rx));
        Ok(Xds {
            shared,
            applier,
            task,
        })
    }

    /// Waits for the first configuration (LDS and CDS answered, nothing
    /// warming) up to `timeout`, then returns the bootstrap to serve: what
    /// arrived by then, the rest following as updates.
    pub async fn initial_boot(&self, timeout: Duration) -> Result<Bootstrap, ConfigError> {
        let mut rx = self.shared.initial.subscribe();
        if tokio::time::timeout(timeout, rx.wait_for(|done| *done))
            .await
            .is_err()
        {
            log::warn!(
                "xDS: no complete configuration within {timeout:?}; serving what arrived, the \
                 rest follows as updates"
            );
        }
        let mut state = self.shared.lock();
        state.initial_done = true;
        let assembly = state.store.assemble(&self.shared.file);
        state.store.serving_listeners = assembly.listeners;
        state.store.serving_clusters = assembly.clusters;
        assembly.boot
    }

    /// From now on, updates are applied with `apply`.
    pub(crate) fn set_applier(&self, apply: ApplyFn) {
        let _ = self.applier.send(Some(apply));
    }

    /// The shared state (for the admin).
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Stops the client.
    pub fn abort(&self) {
        self.task.abort();
    }
}
