//! The per-VM host state that lives in the wasmtime `Store`: contexts, their
//! maps and buffers, the effect queue, callout and metric tables.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use vessel_abi::{BufferType, MapType, Status};
use wasmtime::{Memory, TypedFunc};

use crate::effects::Effect;
use crate::env::HostEnv;
use crate::headers::HeaderMap;
use crate::ids::{CalloutKind, ContextId, VmInstanceId};
use crate::limits::VmLimiter;
use crate::plugin::PluginShared;
use crate::properties::PropertyMap;
use crate::shared::metrics::Metric;

/// Identity hasher for small integer keys (context ids, tokens).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Which guest entry point is running; decides what is readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No guest call is running.
    Idle,
    /// `_initialize`, `_start`, `main`: only logging, WASI and time.
    Start,
    /// `proxy_on_vm_start`.
    VmStart,
    /// `proxy_on_configure` / `proxy_validate_configuration`: plugin config readable.
    Configure,
    /// `proxy_on_log`: sealed maps are readable.
    Log,
    /// Any other callback.
    Callback,
}

/// A root context.
#[derive(Debug, Default)]
pub(crate) struct RootContext {
    /// `proxy_get_status`: the last callout status.
    pub(crate) status_code: u32,
    pub(crate) status_message: Vec<u8>,
    pub(crate) tick_period_ms: u32,
    pub(crate) properties: PropertyMap,
    /// `on_done` returned false: waiting for `proxy_done`.
    pub(crate) pending_done: bool,
}

/// An HTTP stream context.
///
/// The host keeps the stream's header maps for the stream's whole life (so
/// `request.*` properties and `on_log` can read them), but a map is
/// *sealed* once the stream continued past it: from then on map hostcalls
/// get BAD_ARGUMENT, as in Envoy, which drops its pointer on Continue (ABI
/// reference §11.4). During `on_log` sealed maps are readable again, like
/// Envoy's access-log copies. Bodies are `Some` while the host holds them
/// (during the body callback and while the stream is paused).
#[derive(Debug, Default)]
pub(crate) struct HttpContext {
    pub(crate) root: ContextId,
    /// Request headers, request trailers, response headers, response trailers.
    pub(crate) maps: [HeaderMap; 4],
    pub(crate) present: [bool; 4],
    pub(crate) sealed: [bool; 4],
    /// Request body, response body.
    pub(crate) bodies: [Option<Vec<u8>>; 2],
    /// Trailers may be created in this body callback (end_of_stream, none yet).
    pub(crate) may_add_trailers: [bool; 2],
    pub(crate) local_response_sent: bool,
    pub(crate) properties: PropertyMap,
}

/// Index of a stream map (0–3) in [`HttpContext::maps`].
pub(crate) fn map_index(ty: MapType) -> Option<usize> {
    let i = ty.as_u32() as usize;
    (i < 4).then_some(i)
}

/// Index of a body buffer in [`HttpContext::bodies`].
pub(crate) fn body_index(ty: BufferType) -> Option<usize> {
    match ty {
        BufferType::HttpRequestBody => Some(0),
        BufferType::HttpResponseBody => Some(1),
        _ => None,
    }
}

impl HttpContext {
    pub(crate) fn map(&self, ty: MapType, log_phase: bool) -> Option<&HeaderMap> {
        let i = map_index(ty)?;
        (self.present[i] && (!self.sealed[i] || log_phase)).then(|| &self.maps[i])
    }

    pub(crate) fn map_mut(&mut self, ty: MapType) -> Option<&mut HeaderMap> {
        let i = map_index(ty)?;
        if !self.present[i] && (i == 1 || i == 3) && self.may_add_trailers[i / 2] {
            self.present[i] = true;
        }
        (self.present[i] && !self.sealed[i]).then(|| &mut self.maps[i])
    }

    pub(crate) fn body(&self, ty: BufferType) -> Option<&Vec<u8>> {
        self.bodies[body_index(ty)?].as_ref()
    }

    pub(crate) fn body_mut(&mut self, ty: BufferType) -> Option<&mut Vec<u8>> {
        self.bodies[body_index(ty)?].as_mut()
    }
}

/// One context of a VM.
#[derive(Debug)]
pub(crate) enum Context {
    Root(RootContext),
    Http(Box<HttpContext>),
}

impl Context {
    pub(crate) fn root_id(&self, own: ContextId) -> ContextId {
        match self {
            Self::Root(_) => own,
            Self::Http(h) => h.root,
        }
    }
}

/// Data readable only during a callout callback (maps 4–7, buffers 4–5).
#[derive(Debug, Default)]
pub(crate) struct CalloutData {
    pub(crate) headers: Option<HeaderMap>,
    pub(crate) trailers: Option<HeaderMap>,
    pub(crate) body: Option<Vec<u8>>,
}

/// A callout in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Callout {
    pub(crate) root: ContextId,
    pub(crate) kind: CalloutKind,
    /// gRPC stream: the guest called `proxy_grpc_close`.
    pub(crate) local_closed: bool,
    /// gRPC stream: `proxy_on_grpc_close` was delivered. As in Envoy, the
    /// token stays valid until the guest closes it too.
    pub(crate) remote_closed: bool,
}

/// The store data of one VM.
pub(crate) struct HostState {
    pub(crate) plugin: Arc<PluginShared>,
    pub(crate) env: HostEnv,
    pub(crate) instance: VmInstanceId,
    pub(crate) limiter: VmLimiter,
    pub(crate) memory: Option<Memory>,
    pub(crate) allocator: Option<TypedFunc<i32, i32>>,
    pub(crate) phase: Phase,
    /// The context whose callback is running.
    pub(crate) current: ContextId,
    /// Set by `proxy_set_effective_context`; reset at every guest call.
    pub(crate) effective: Option<ContextId>,
    /// True while the host runs the guest allocator.
    pub(crate) in_allocator: bool,
    /// Set by `proxy_send_local_response`; makes the result of the stream
    /// callback that is running a stop. VM-wide and cleared before every
    /// guest call, as Envoy's `WasmBase::stopNextIteration` (ABI reference
    /// §11.1, §11.3): a reply sent from a callout response does not leak
    /// into the stream's next callback.
    pub(crate) stop_next_iteration: bool,
    pub(crate) contexts: IdMap<Context>,
    pub(crate) next_context_id: u32,
    pub(crate) effects: Vec<Effect>,
    pub(crate) callout_data: CalloutData,
    pub(crate) foreign_args: Vec<u8>,
    pub(crate) callouts: IdMap<Callout>,
    pub(crate) next_http_token: u32,
    pub(crate) next_grpc_call_token: u32,
    pub(crate) next_grpc_stream_token: u32,
    pub(crate) metrics: IdMap<Arc<Metric>>,
    pub(crate) metric_ids: HashMap<(u32, Vec<u8>), u32>,
    pub(crate) next_metric_id: [u32; 3],
    /// Root contexts that called `proxy_done`: `on_delete` runs after the call.
    pub(crate) done_requested: Vec<ContextId>,
    /// Bytes logged during the current callback (bounded per callback).
    pub(crate) log_bytes: usize,
    /// Higress 0.2.100 Redis calls.
    pub(crate) redis: crate::hostcalls::redis::RedisState,
    /// A log line was dropped during the current callback.
    pub(crate) log_dropped_in_callback: bool,
    /// Log lines dropped over the per-callback budget, since the VM started.
    pub(crate) dropped_log_lines: u64,
    /// Their bytes.
    pub(crate) dropped_log_bytes: u64,
    /// Calls of hostcalls the plugin's capabilities do not allow.
    pub(crate) denied_calls: u64,
}

impl HostState {
    pub(crate) fn new(
        plugin: Arc<PluginShared>,
        env: HostEnv,
        instance: VmInstanceId,
        limiter: VmLimiter,
    ) -> Self {
        Self {
            plugin,
            env,
            instance,
            limiter,
            memory: None,
            allocator: None,
            phase: Phase::Idle,
            current: ContextId(0),
            effective: None,
            in_allocator: false,
            stop_next_iteration: false,
            contexts: IdMap::default(),
            next_context_id: 0,
            effects: Vec::new(),
            callout_data: CalloutData::default(),
            foreign_args: Vec::new(),
            callouts: IdMap::default(),
            next_http_token: 0,
            next_grpc_call_token: 1,
            next_grpc_stream_token: 2,
            metrics: IdMap::default(),
            metric_ids: HashMap::new(),
            next_metric_id: [0, 1, 2],
            done_requested: Vec::new(),
            log_bytes: 0,
            redis: Default::default(),
            log_dropped_in_callback: false,
            dropped_log_lines: 0,
            dropped_log_bytes: 0,
            denied_calls: 0,
        }
    }

    /// Allocates the next context id, skipping 0 and live ids.
    pub(crate) fn alloc_context_id(&mut self) -> ContextId {
        loop {
            self.next_context_id = self.next_context_id.wrapping_add(1);
            let id = self.next_context_id;
            if id != 0 && !self.contexts.contains_key(&id) {
                return ContextId(id);
            }
        }
    }

    /// The context hostcalls act on: the effective context if one is set and
    /// still alive, else the current one (Envoy `contextOrEffectiveContext`).
    pub(crate) fn target(&self) -> ContextId {
        match self.effective {
            Some(id) if self.contexts.contains_key(&id.0) => id,
            _ => self.current,
        }
    }

    /// The root context of the target context.
    pub(crate) fn target_root(&self) -> ContextId {
        let t = self.target();
        self.contexts.get(&t.0).map_or(t, |c| c.root_id(t))
    }

    pub(crate) fn http(&self, id: ContextId) -> Option<&HttpContext> {
        match self.contexts.get(&id.0) {
            Some(Context::Http(h)) => Some(h),
            _ => None,
        }
    }

    pub(crate) fn http_mut(&mut self, id: ContextId) -> Option<&mut HttpContext> {
        match self.contexts.get_mut(&id.0) {
            Some(Context::Http(h)) => Some(h),
            _ => None,
        }
    }

    pub(crate) fn root_mut(&mut self, id: ContextId) -> Option<&mut RootContext> {
        match self.contexts.get_mut(&id.0) {
            Some(Context::Root(r)) => Some(r),
            _ => None,
        }
    }

    /// Reads a header map for the target context (maps 0–3) or the callout
    /// being delivered (maps 4–7). `Err(BAD_ARGUMENT)` if unavailable.
    pub(crate) fn map(&self, ty: MapType) -> Result<&HeaderMap, Status> {
        match ty {
            MapType::HttpRequestHeaders
            | MapType::HttpRequestTrailers
            | MapType::HttpResponseHeaders
            | MapType::HttpResponseTrailers => self
                .http(self.target())
                .and_then(|h| h.map(ty, self.phase == Phase::Log))
                .ok_or(Status::BadArgument),
            MapType::GrpcReceiveInitialMetadata | MapType::HttpCallResponseHeaders => self
                .callout_data
                .headers
                .as_ref()
                .ok_or(Status::BadArgument),
            MapType::GrpcReceiveTrailingMetadata | MapType::HttpCallResponseTrailers => self
                .callout_data
                .trailers
                .as_ref()
                .ok_or(Status::BadArgument),
            // A map type a newer vessel-abi knows and this host does not serve.
            _ => Err(Status::BadArgument),
        }
    }

    /// Mutable access to a header map (only stream maps 0–3 are writable).
    pub(crate) fn map_mut(&mut self, ty: MapType) -> Result<&mut HeaderMap, Status> {
        let target = self.target();
        match ty {
            MapType::HttpRequestHeaders
            | MapType::HttpRequestTrailers
            | MapType::HttpResponseHeaders
            | MapType::HttpResponseTrailers => self
                .http_mut(target)
                .and_then(|h| h.map_mut(ty))
                .ok_or(Status::BadArgument),
            _ => Err(Status::BadArgument),
        }
    }

    /// Reads a buffer (ABI reference §4.2, §11.16). `Err(NOT_FOUND)` if unavailable.
    pub(crate) fn buffer(&self, ty: BufferType) -> Result<&[u8], Status> {
        match ty {
            BufferType::HttpRequestBody | BufferType::HttpResponseBody => self
                .http(self.target())
                .and_then(|h| h.body(ty))
                .map(Vec::as_slice)
                .ok_or(Status::NotFound),
            BufferType::HttpCallResponseBody | BufferType::GrpcReceiveBuffer => {
                self.callout_data.body.as_deref().ok_or(Status::NotFound)
            }
            BufferType::VmConfiguration => Ok(&self.plugin.config.vm_configuration),
            BufferType::PluginConfiguration => {
                if self.phase == Phase::Configure {
                    Ok(&self.plugin.config.configuration)
                } else {
                    Err(Status::NotFound)
                }
            }
            BufferType::CallData => Ok(&self.foreign_args),
            // Envoy-Higress's buffer 9; upstream Envoy knows no type 9, so
            // other ABI versions keep getting BAD_ARGUMENT.
            BufferType::RedisCallResponse if self.plugin.abi.has_higress_extensions() => {
                Ok(&self.redis.response)
            }
            BufferType::RedisCallResponse => Err(Status::BadArgument),
            BufferType::DownstreamData | BufferType::UpstreamData => Err(Status::NotFound),
            // A buffer type a newer vessel-abi knows and this host does not serve.
            _ => Err(Status::BadArgument),
        }
    }
}
