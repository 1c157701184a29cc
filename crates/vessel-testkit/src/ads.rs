//! A small ADS server (xDS over gRPC, state of the world) for vessel's
//! tests, written with the same crates as vessel's client (tonic,
//! envoy-types) and vessel-proxy's descriptor set: the test sets a snapshot
//! (per type: a version and the resources, written as Envoy YAML or JSON),
//! the server pushes it to every connected stream, and records each
//! client's ACK or NACK per type and version (with the error). It can be
//! stopped and started again on the same port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// LDS.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// RDS.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// CDS.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// EDS.
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// ECDS.
pub const EXTENSION: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// What a client answered to one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The client's `node.id`.
    pub node: String,
    /// The response's type URL.
    pub type_url: String,
    /// The response's `version_info`.
    pub version: String,
    /// The `version_info` the client sent back (its accepted version).
    pub client_version: String,
    /// `None` for an ACK; the `error_detail` message for a NACK.
    pub error: Option<String>,
}

struct Stream1 {
    id: u64,
    node: String,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    /// type URL → subscribed names (empty: all).
    subs: BTreeMap<String, Vec<String>>,
    /// The last nonce sent per type.
    last_nonce: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    /// type URL → (version, encoded resources, their names).
    snapshot: BTreeMap<String, (String, Vec<(String, Any)>)>,
    streams: Vec<Stream1>,
    /// nonce → (type URL, version).
    sent: BTreeMap<String, (String, String)>,
    answers: Vec<Answer>,
    next: u64,
    /// Streams opened so far, per node.
    connects: BTreeMap<String, u64>,
}

#[derive(Clone, Default)]
struct Inner(Arc<Mutex<State>>);

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The response of `type_url` for one stream, if the snapshot has it.
fn response_for(state: &mut State, stream: usize, type_url: &str) -> Option<DiscoveryResponse> {
    let (version, resources) = state.snapshot.get(type_url)?.clone();
    let names = state.streams[stream]
        .subs
        .get(type_url)
        .cloned()
        .unwrap_or_default();
    let wildcard = type_url == LISTENER || type_url == CLUSTER;
    let resources: Vec<Any> = resources
        .into_iter()
        .filter(|(n, _)| wildcard || names.contains(n))
        .map(|(_, a)| a)
        .collect();
    if !wildcard && resources.is_empty() {
        return None;
    }
    state.next += 1;
    let nonce = state.next.to_string();
    state
        .sent
        .insert(nonce.clone(), (type_url.to_owned(), version.clone()));
    state.streams[stream]
        .last_nonce
        .insert(type_url.to_owned(), nonce.clone());
    Some(DiscoveryResponse {
        version_info: version,
        resources,
        type_url: type_url.to_owned(),
        nonce,
        ..DiscoveryResponse::default()
    })
}

#[derive(Clone)]
struct Service(Inner);

type RespStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = RespStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<RespStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let inner = self.0.clone();
        let id = {
            let mut s = inner.lock();
            s.next += 1;
            let id = s.next;
            s.streams.push(Stream1 {
                id,
                node: String::new(),
                tx: tx.clone(),
                subs: BTreeMap::new(),
                last_nonce: BTreeMap::new(),
            });
            id
        };
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let out = {
                    let mut s = inner.lock();
                    let Some(i) = s.streams.iter().position(|st| st.id == id) else {
                        break;
                    };
                    on_request(&mut s, i, req)
                };
                if let Some(resp) = out
                    && tx.send(Ok(resp)).await.is_err()
                {
                    break;
                }
            }
            inner.lock().streams.retain(|st| st.id != id);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "the test ADS server speaks state of the world only",
        ))
    }
}

/// Records an ACK/NACK, follows the subscription, and answers a new or
/// changed subscription with the snapshot.
fn on_request(s: &mut State, i: usize, req: DiscoveryRequest) -> Option<DiscoveryResponse> {
    if let Some(node) = &req.node
        && s.streams[i].node.is_empty()
    {
        s.streams[i].node = node.id.clone();
        *s.connects.entry(node.id.clone()).or_default() += 1;
    }
    let node = s.streams[i].node.clone();
    if !req.response_nonce.is_empty()
        && let Some((type_url, version)) = s.sent.get(&req.response_nonce).cloned()
    {
        s.answers.push(Answer {
            node,
            type_url,
            version,
            client_version: req.version_info.clone(),
            error: req.error_detail.as_ref().map(|e| e.message.clone()),
        });
    }
    let old = s.streams[i].subs.get(&req.type_url).cloned();
    let mut names = req.resource_names.clone();
    names.sort();
    s.streams[i]
        .subs
        .insert(req.type_url.clone(), names.clone());
    let latest = s.streams[i].last_nonce.get(&req.type_url).cloned();
    let fresh = req.response_nonce.is_empty() || latest.is_none();
    let changed = old.as_ref() != Some(&names) && latest.as_deref() == Some(&req.response_nonce);
    if fresh || changed {
        response_for(s, i, &req.type_url)
    } else {
        None
    }
}

/// The test ADS server.
pub struct AdsServer {
    inner: Inner,
    addr: SocketAddr,
    running: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl AdsServer {
    /// Starts on 127.0.0.1, a port the system picks.
    pub async fn start() -> Self {
        let mut server = Self {
            inner: Inner::default(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            running: None,
        };
        server.listen().await;
        server
    }

    async fn listen(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("bind the ADS server on {}: {e}", self.addr));
        self.addr = listener.local_addr().expect("local address");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let service = AggregatedDiscoveryServiceServer::new(Service(self.inner.clone()))
            .max_decoding_message_size(64 << 20);
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        self.running = Some((stop_tx, task));
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the resources of `type_url` at `version` (each in Envoy's JSON
    /// form) and pushes them to every stream subscribed to that type.
    ///
    /// # Panics
    /// If a resource is not a valid message of that type.
    pub fn set(&self, type_url: &str, version: &str, resources: &[serde_json::Value]) {
        let name_field = if type_url == ENDPOINT {
            "cluster_name"
        } else {
            "name"
        };
        let encoded = resources
            .iter()
            .map(|r| {
                let value = vessel_proxy::xds::proto::from_json(type_url, r)
                    .unwrap_or_else(|e| panic!("a test resource of {type_url}: {e}\n{r:#}"));
                let name = r[name_field].as_str().unwrap_or_default().to_owned();
                (
                    name,
                    Any {
                        type_url: type_url.to_owned(),
                        value,
                    },
                )
            })
            .collect();
        let mut s = self.inner.lock();
        s.snapshot
            .insert(type_url.to_owned(), (version.to_owned(), encoded));
        for i in 0..s.streams.len() {
            if s.streams[i].subs.contains_key(type_url)
                && let Some(resp) = response_for(&mut s, i, type_url)
            {
                let _ = s.streams[i].tx.try_send(Ok(resp));
            }
        }
    }

    /// [`AdsServer::set`] with the resources written as a YAML (or JSON)
    /// list.
    ///
    /// # Panics
    /// If the YAML does not parse, or as [`AdsServer::set`].
    pub fn set_yaml(&self, type_url: &str, version: &str, yaml: &str) {
        let value: serde_json::Value =
            vessel_test::yaml::from_str(yaml).unwrap_or_else(|e| panic!("test YAML: {e}\n{yaml}"));
        let list = match value {
            serde_json::Value::Array(a) => a,
            other => vec![other],
        };
        self.set(type_url, version, &list);
    }

    /// Every ACK and NACK so far, in order.
    pub fn answers(&self) -> Vec<Answer> {
        self.inner.lock().answers.clone()
    }

    /// The answer of `node` to `version` of `type_url`, once it came
    /// (bounded by [`crate::WAIT`]).
    pub async fn answer(&self, node: &str, type_url: &str, version: &str) -> Answer {
        crate::eventually_some(
            &format!("{node} answers {type_url} version {version}"),
            || {
                self.answers()
                    .into_iter()
                    .find(|a| a.node == node && a.type_url == type_url && a.version == version)
            },
        )
        .await
    }

    /// How many streams `node` has opened.
    pub fn connects(&self, node: &str) -> u64 {
        self.inner.lock().connects.get(node).copied().unwrap_or(0)
    }

    /// Whether `node` has a stream open now.
    pub fn connected(&self, node: &str) -> bool {
        self.inner.lock().streams.iter().any(|s| s.node == node)
    }

    /// Stops: every stream ends with UNAVAILABLE and the port is closed.
    pub async fn stop(&mut self) {
        let streams: Vec<_> = {
            let mut s = self.inner.lock();
            s.streams.drain(..).map(|st| st.tx).collect()
        };
        for tx in streams {
            let _ = tx
                .send(Err(Status::unavailable("the control plane stopped")))
                .await;
        }
        if let Some((stop, mut task)) = self.running.take() {
            let _ = stop.send(());
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Starts again on the same port, with the same snapshot.
    pub async fn restart(&mut self) {
        self.listen().await;
    }
}

impl Drop for AdsServer {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}
