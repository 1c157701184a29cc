//! The ADS client: one gRPC stream to the control plane, state of the
//! world, ACK/NACK, warming, reconnection with backoff.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node as NodeProto;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::store::{BootstrapFile, Kind, Store, Subscriptions};
use super::{Shared, State};
use crate::config::Bootstrap;

/// Applies a bootstrap to the running proxy: the summary, or why not.
pub(crate) type ApplyFn = Arc<
    dyn Fn(Bootstrap) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync,
>;

/// Envoy's gRPC mux retry: 500 ms doubling up to 30 s, jittered.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// See [`BACKOFF_BASE`].
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The delay before retry `attempt` (0-based): uniformly drawn from the
/// upper half of `min(max, base * 2^attempt)`.
pub(crate) fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let cap = base
        .saturating_mul(1u32 << attempt.min(20))
        .min(max)
        .as_millis() as u64;
    let half = cap / 2;
    Duration::from_millis(half + random() % (cap - half + 1))
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The node sent in the first request: `node.{id, cluster, metadata}` and
/// vessel's user agent.
pub(crate) fn node_proto(boot: &Bootstrap) -> NodeProto {
    let node = boot.node.clone().unwrap_or_default();
    let json = serde_json::json!({
        "id": node.id,
        "cluster": node.cluster,
        "metadata": node.metadata,
        "user_agent_name": "vessel",
        "user_agent_version": env!("CARGO_PKG_VERSION"),
    });
    super::proto::from_json("type.googleapis.com/envoy.config.core.v3.Node", &json)
        .ok()
        .and_then(|b| prost::Message::decode(b.as_slice()).ok())
        .unwrap_or_else(|| NodeProto {
            id: node.id,
            cluster: node.cluster,
            user_agent_name: "vessel".to_owned(),
            ..NodeProto::default()
        })
}

/// What the task needs to talk to the control plane.
pub(crate) struct Target {
    pub(crate) uri: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) node: NodeProto,
    pub(crate) node_first_only: bool,
    pub(crate) lds: bool,
    pub(crate) cds: bool,
}

/// Runs the client until aborted: connect, stream, reconnect with backoff.
pub(crate) async fn run(
    shared: Arc<Shared>,
    target: Target,
    applier: watch::Receiver<Option<ApplyFn>>,
) {
    let mut attempt: u32 = 0;
    let mut applier = applier;
    loop {
        match stream_once(&shared, &target, &mut applier).await {
            Ok(got_response) => {
                if got_response {
                    attempt = 0;
                }
                log::warn!("xDS: the control plane closed the stream; reconnecting");
            }
            Err((got_response, e)) => {
                if got_response {
                    attempt = 0;
                }
                log::warn!("xDS: {e}; reconnecting");
            }
        }
        shared.stats.connected.store(0, Ordering::Relaxed);
        shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        let delay = backoff(attempt, BACKOFF_BASE, BACKOFF_MAX);
        attempt = attempt.saturating_add(1);
        log::info!("xDS: next attempt in {delay:?}");
        tokio::time::sleep(delay).await;
    }
}

/// Builds a request for `kind` from the accepted state.
fn request(
    state: &State,
    kind: Kind,
    nonce: String,
    error: Option<String>,
    node: Option<&NodeProto>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: state.versions.get(&kind).cloned().unwrap_or_default(),
        node: node.cloned(),
        resource_names: state.subs.names(kind).iter().cloned().collect(),
        type_url: kind.type_url().to_owned(),
        response_nonce: nonce,
        error_detail: error.map(|message| RpcStatus {
            code: 3, // INVALID_ARGUMENT, as Envoy
            message,
            details: Vec::new(),
        }),
        ..DiscoveryRequest::default()
    }
}

/// One stream; `Ok(got_response)` when the server ended it, `Err` on a
/// failure (with whether any response came).
async fn stream_once(
    shared: &Arc<Shared>,
    target: &Target,
    applier: &mut watch::Receiver<Option<ApplyFn>>,
) -> Result<bool, (bool, String)> {
    let endpoint = tonic::transport::Endpoint::from_shared(target.uri.clone())
        .map_err(|e| {
            (
                false,
                format!("bad control plane address {}: {e}", target.uri),
            )
        })?
        .connect_timeout(target.connect_timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| (false, format!("cannot connect to {}: {e}", target.uri)))?;
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(64);
    let mut node_sent = false;
    let node_for = |sent: &mut bool| -> Option<NodeProto> {
        if target.node_first_only && *sent {
            None
        } else {
            *sent = true;
            Some(target.node.clone())
        }
    };
    // The first requests: every type vessel follows, with the versions it
    // holds (so a control plane that comes back knows what vessel serves).
    {
        let state = shared.lock();
        for kind in Kind::ALL {
            let wanted = match kind {
                Kind::Cluster => target.cds,
                Kind::Listener => target.lds,
                _ => !state.subs.names(kind).is_empty(),
            };
            if wanted {
                let req = request(
                    &state,
                    kind,
                    String::new(),
                    None,
                    node_for(&mut node_sent).as_ref(),
                );
                let _ = tx.try_send(req);
            }
        }
    }
    let response = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| (false, format!("the ADS stream failed: {e}")))?;
    shared.stats.connected.store(1, Ordering::Relaxed);
    log::info!("xDS: connected to {}", target.uri);
    let mut inbound = response.into_inner();
    let mut got = false;
    loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(got),
            Err(e) => return Err((got, format!("the ADS stream failed: {e}"))),
        };
        got = true;
        // After the initial configuration is served, updates are applied
        // to the running proxy: wait until it can take them.
        let requests = handle(shared, msg, applier).await;
        for mut req in requests {
            req.node = node_for(&mut node_sent);
            if tx.send(req).await.is_err() {
                return Err((got, "the ADS request stream closed".to_owned()));
            }
        }
    }
}

/// Handles one response: the requests to send (its ACK or NACK, and new
/// subscriptions).
async fn handle(
    shared: &Arc<Shared>,
    resp: DiscoveryResponse,
    applier: &mut watch::Receiver<Option<ApplyFn>>,
) -> Vec<DiscoveryRequest> {
    let Some(kind) = Kind::from_type_url(&resp.type_url) else {
        log::warn!("xDS: ignoring a response of type `{}`", resp.type_url);
        return Vec::new();
    };
    let stats = shared.stats.of(kind);
    stats.attempt.fetch_add(1, Ordering::Relaxed);
    // Before the first configuration is served, a response is only
    // checked: decide and commit under one lock, so `Xds::initial_boot`
    // serves either the store before it or the store after it.
    {
        let mut state = shared.lock();
        if !state.initial_done {
            let outcome = match candidate(&shared.file, &state, kind, &resp) {
                Err(e) => Err(e),
                Ok((_, Err(e), _)) => Err(e.to_string()),
                Ok((store, Ok(_), warming)) => Ok((store, warming)),
            };
            return commit(shared, &mut state, kind, &resp, outcome);
        }
    }
    // Then updates are applied to the running proxy: wait until it can
    // take them. Decide under the lock (only this task changes the store),
    // apply outside it, commit under it again.
    let apply = match applier.wait_for(Option::is_some).await {
        Ok(a) => a.clone(),
        Err(_) => None,
    };
    let Some(apply) = apply else {
        return Vec::new();
    };
    let decided = {
        let state = shared.lock();
        candidate(&shared.file, &state, kind, &resp)
    };
    let outcome = match decided {
        Err(e) => Err(e),
        Ok((_, Err(e), _)) => Err(e.to_string()),
        Ok((store, Ok(boot), warming)) => match apply(boot).await {
            Ok(summary) => {
                log::info!(
                    "xDS {} version {}: {summary}",
                    kind.short(),
                    resp.version_info
                );
                Ok((store, warming))
            }
            Err(e) => Err(e),
        },
    };
    let mut state = shared.lock();
    commit(shared, &mut state, kind, &resp, outcome)
}

/// Records a decision: the new store (ACK) or the error (NACK); the
/// requests to send.
fn commit(
    shared: &Shared,
    state: &mut State,
    kind: Kind,
    resp: &DiscoveryResponse,
    outcome: Result<(Store, Warming), String>,
) -> Vec<DiscoveryRequest> {
    let stats = shared.stats.of(kind);
    let mut out = Vec::new();
    match outcome {
        Ok((store, warming)) => {
            stats.success.fetch_add(1, Ordering::Relaxed);
            stats
                .version
                .store(version_hash(&resp.version_info), Ordering::Relaxed);
            state.store = store;
            state.versions.insert(kind, resp.version_info.clone());
            state.nonces.insert(kind, resp.nonce.clone());
            state.received.insert(kind);
            state.warming = warming;
            out.push(request(state, kind, resp.nonce.clone(), None, None));
            let subs = state.store.subscriptions(&shared.file);
            let old = std::mem::replace(&mut state.subs, subs);
            for k in [Kind::Endpoint, Kind::Route, Kind::Extension] {
                if state.subs.names(k) != old.names(k) {
                    let nonce = state.nonces.get(&k).cloned().unwrap_or_default();
                    out.push(request(state, k, nonce, None, None));
                }
            }
            if !state.initial_done && state.initial_complete(&shared.file) {
                state.initial_done = true;
                let _ = shared.initial.send(true);
            }
        }
        Err(error) => {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "xDS {} version {} rejected (the last accepted config keeps serving): {error}",
                kind.short(),
                resp.version_info
            );
            state.nonces.insert(kind, resp.nonce.clone());
            state
                .rejected
                .insert(kind, (resp.version_info.clone(), error.clone()));
            out.push(request(state, kind, resp.nonce.clone(), Some(error), None));
        }
    }
    out
}

type Warming = (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
);

/// The store and bootstrap this response would give.
fn candidate(
    file: &BootstrapFile,
    state: &State,
    kind: Kind,
    resp: &DiscoveryResponse,
) -> Result<
    (
        Store,
        Result<Bootstrap, crate::config::ConfigError>,
        Warming,
    ),
    String,
> {
    let mut delivered = Vec::new();
    for any in &resp.resources {
        if any.type_url != kind.type_url() {
            return Err(format!(
                "a resource of type `{}` in a {} response",
                any.type_url,
                kind.type_url()
            ));
        }
        let json = super::proto::to_json(&any.type_url, &any.value)?;
        let name = json
            .get(kind.name_field())
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("a {} resource has no {}", kind.short(), kind.name_field()))?
            .to_owned();
        if delivered.iter().any(|(n, _, _)| *n == name) {
            return Err(format!("{} resource `{name}` is given twice", kind.short()));
        }
        let value: crate::yaml::Value = serde::Deserialize::deserialize(json.clone())
            .map_err(|e: serde_json::Error| format!("{} resource `{name}`: {e}", kind.short()))?;
        delivered.push((name, json, value));
    }
    let mut store = state.store.clone();
    store.take(kind, &resp.version_info, delivered);
    let subs: Subscriptions = store.subscriptions(file);
    store.retain_subscribed(&subs);
    let assembly = store.assemble(file);
    store.serving_listeners = assembly.listeners;
    store.serving_clusters = assembly.clusters;
    Ok((
        store,
        assembly.boot,
        (assembly.warming_listeners, assembly.warming_clusters),
    ))
}

fn version_hash(v: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish() >> 1
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..40 {
            let d = backoff(attempt, BACKOFF_BASE, BACKOFF_MAX);
            let cap = BACKOFF_BASE
                .saturating_mul(1 << attempt.min(20))
                .min(BACKOFF_MAX);
            assert!(
                d <= cap && d >= cap / 2,
                "attempt {attempt}: {d:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
        }
    }
}
