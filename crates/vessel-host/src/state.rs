//! The per-VM host state that lives in the wasmtime `Store` ([`HostState`]),
//! in named parts:
//!
//! * [`Frame`]: what the running callback sees and leaves (current and
//!   effective context, phase, its stop request, its log budget, a refused
//!   memory grow), reset in one assignment before every guest call;
//! * the contexts: [`RootContext`]s and [`HttpContext`]s, each stream with a
//!   `request` and a `response` [`DirectionState`] (headers, trailers, body);
//! * [`Callouts`]: callouts in flight, token counters, the answer being
//!   delivered; [`Metrics`]; [`LogStats`]; the effect queue.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use vessel_abi::{BufferType, MapType, Status};
use wasmtime::{Memory, TypedFunc};

use crate::effects::Effect;
use crate::env::HostEnv;
use crate::headers::HeaderMap;
use crate::ids::{CalloutKind, ContextId, Token, VmInstanceId};
use crate::limits::{LimitExceeded, VmLimiter};
use crate::plugin::PluginShared;
use crate::properties::PropertyMap;
use crate::shared::metrics::Metric;
use crate::stream::Direction;

/// A hasher for small integer ids the host allocates (context ids,
/// tokens), never chosen by a client: one multiplication per key, where
/// SipHash costs more than the map's other work. Embedders that key maps
/// by [`ContextId`] or [`Token`] use it too
/// (`HashMap<ContextId, V, BuildHasherDefault<IdHasher>>`).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

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

/// The contexts of a VM by id: a hash map, and the most recently created
/// context kept beside it. A stream's callbacks mostly come before the next
/// stream starts, so most lookups compare one id instead of probing the
/// map, and a short stream is never inserted into it or removed from it.
/// The methods are the map's.
#[derive(Debug, Default)]
pub(crate) struct Contexts {
    map: IdMap<Context>,
    hot: Option<(u32, Context)>,
}

impl Contexts {
    /// The number of contexts.
    pub(crate) fn len(&self) -> usize {
        self.map.len() + usize::from(self.hot.is_some())
    }

    /// No context at all.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Context `id` exists.
    pub(crate) fn contains_key(&self, id: &u32) -> bool {
        self.get(id).is_some()
    }

    /// Context `id`.
    pub(crate) fn get(&self, id: &u32) -> Option<&Context> {
        match &self.hot {
            Some((h, c)) if h == id => Some(c),
            _ => self.map.get(id),
        }
    }

    /// Context `id`, mutably.
    pub(crate) fn get_mut(&mut self, id: &u32) -> Option<&mut Context> {
        match &mut self.hot {
            Some((h, c)) if h == id => Some(c),
            _ => self.map.get_mut(id),
        }
    }

    /// Adds (or replaces) context `id`; it becomes the hot one, and the one
    /// it displaces moves into the map.
    pub(crate) fn insert(&mut self, id: u32, context: Context) -> Option<Context> {
        if let Some((h, c)) = &mut self.hot
            && *h == id
        {
            return Some(std::mem::replace(c, context));
        }
        let old = self.map.remove(&id);
        if let Some((h, c)) = self.hot.replace((id, context)) {
            self.map.insert(h, c);
        }
        old
    }

    /// Adds context `id`, which [`HostState::alloc_context_id`] just handed
    /// out (so no context has it): [`Contexts::insert`] without the lookup
    /// for one to replace.
    pub(crate) fn insert_new(&mut self, id: u32, context: Context) {
        debug_assert!(!self.contains_key(&id), "context {id} exists");
        if let Some((h, c)) = self.hot.replace((id, context)) {
            self.map.insert(h, c);
        }
    }

    /// Removes context `id`.
    pub(crate) fn remove(&mut self, id: &u32) -> Option<Context> {
        match &self.hot {
            Some((h, _)) if h == id => self.hot.take().map(|(_, c)| c),
            _ => self.map.remove(id),
        }
    }
}

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

/// One header map of a stream (headers or trailers of one direction) and
/// whether the guest may see it.
///
/// The host keeps a stream's maps for the stream's whole life (so
/// `request.*` properties and `on_log` can read them), but a map is
/// *sealed* once the stream continued past it: from then on map hostcalls
/// get BAD_ARGUMENT, as in Envoy, which drops its pointer on Continue (ABI
/// reference §11.4). During `on_log` sealed maps are readable again, like
/// Envoy's access-log copies.
#[derive(Debug, Default)]
pub(crate) struct MapSlot {
    map: HeaderMap,
    /// The host holds the map (the stream had it and it was not taken).
    present: bool,
    /// The stream continued past it.
    sealed: bool,
}

impl MapSlot {
    /// Puts a map the guest is about to see (present, not sealed).
    pub(crate) fn open(&mut self, map: HeaderMap) {
        *self = Self {
            map,
            present: true,
            sealed: false,
        };
    }

    /// Puts a copy of `map` the guest is about to see (present, not
    /// sealed), in the slot's own buffers: no allocation when they have
    /// the room (see [`MapSlot::reset`]).
    pub(crate) fn open_copy(&mut self, map: &HeaderMap) {
        self.map.clone_from(map);
        self.present = true;
        self.sealed = false;
    }

    /// Empties the slot for the next stream, keeping the map's buffers up to
    /// [`RETAINED_MAP_BYTES`].
    pub(crate) fn reset(&mut self) {
        self.map.clear_retaining(RETAINED_MAP_BYTES);
        self.present = false;
        self.sealed = false;
    }

    /// Puts a map without changing whether it is sealed.
    pub(crate) fn provide(&mut self, map: HeaderMap) {
        self.map = map;
        self.present = true;
    }

    /// Seals the map.
    pub(crate) fn seal(&mut self) {
        self.sealed = true;
    }

    /// The map, sealed or not, if the host holds it.
    pub(crate) fn get(&self) -> Option<&HeaderMap> {
        self.present.then_some(&self.map)
    }

    /// Moves the map out; the host no longer holds it.
    pub(crate) fn take(&mut self) -> Option<HeaderMap> {
        if !self.present {
            return None;
        }
        self.present = false;
        Some(std::mem::take(&mut self.map))
    }

    /// The map as the guest may read it (sealed maps only during `on_log`).
    pub(crate) fn readable(&self, log_phase: bool) -> Option<&HeaderMap> {
        (self.present && (!self.sealed || log_phase)).then_some(&self.map)
    }

    /// The map as the guest may change it (not sealed).
    pub(crate) fn writable(&mut self) -> Option<&mut HeaderMap> {
        (self.present && !self.sealed).then_some(&mut self.map)
    }
}

/// The most buffer capacity an emptied [`MapSlot`] keeps for the next
/// stream of its VM (a VM keeps one emptied stream context, four slots).
/// A map a guest grew larger is freed when its stream ends.
pub(crate) const RETAINED_MAP_BYTES: usize = 16 * 1024;

/// One direction of an HTTP stream (request or response): its headers,
/// body and trailers as the host holds them.
#[derive(Debug, Default)]
pub(crate) struct DirectionState {
    pub(crate) headers: MapSlot,
    pub(crate) trailers: MapSlot,
    /// The buffered body: `Some` while the host holds it (during the body
    /// callback and while the stream is paused).
    pub(crate) body: Option<Vec<u8>>,
    /// Trailers may be created in this body callback (end_of_stream, none yet).
    pub(crate) may_add_trailers: bool,
}

impl DirectionState {
    /// Empties the direction for the next stream, keeping the maps'
    /// buffers (bounded, see [`MapSlot::reset`]).
    pub(crate) fn reset(&mut self) {
        self.headers.reset();
        self.trailers.reset();
        self.body = None;
        self.may_add_trailers = false;
    }

    /// Seals headers and trailers, as when the stream continues past them.
    pub(crate) fn seal(&mut self) {
        self.headers.seal();
        self.trailers.seal();
    }
}

/// An HTTP stream context.
#[derive(Debug, Default)]
pub(crate) struct HttpContext {
    pub(crate) root: ContextId,
    pub(crate) request: DirectionState,
    pub(crate) response: DirectionState,
    pub(crate) local_response_sent: bool,
    pub(crate) properties: PropertyMap,
    /// A TCP stream (network filter) context: its data buffers are
    /// `DOWNSTREAM_DATA` (in `request.body`) and `UPSTREAM_DATA` (in
    /// `response.body`), and the HTTP body buffers are not available.
    pub(crate) tcp: bool,
    /// The plugin tried to write something its
    /// [`Hidden`](crate::Hidden) hides, and it was logged (once per stream).
    pub(crate) hidden_write_logged: bool,
}

/// Which part of a stream a stream map type (0–3) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapPart {
    Headers,
    Trailers,
}

impl HttpContext {
    /// The direction of a stream map type and which of its maps it is;
    /// `None` for maps that are not a stream's (4–7).
    pub(crate) fn map_part(ty: MapType) -> Option<(Direction, MapPart)> {
        match ty {
            MapType::HttpRequestHeaders => Some((Direction::Request, MapPart::Headers)),
            MapType::HttpRequestTrailers => Some((Direction::Request, MapPart::Trailers)),
            MapType::HttpResponseHeaders => Some((Direction::Response, MapPart::Headers)),
            MapType::HttpResponseTrailers => Some((Direction::Response, MapPart::Trailers)),
            _ => None,
        }
    }

    /// One direction of the stream.
    pub(crate) fn direction(&self, direction: Direction) -> &DirectionState {
        match direction {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        }
    }

    /// One direction of the stream, mutably.
    pub(crate) fn direction_mut(&mut self, direction: Direction) -> &mut DirectionState {
        match direction {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }

    /// The slot of a stream map (0–3).
    pub(crate) fn slot(&self, ty: MapType) -> Option<&MapSlot> {
        let (direction, part) = Self::map_part(ty)?;
        let d = self.direction(direction);
        Some(match part {
            MapPart::Headers => &d.headers,
            MapPart::Trailers => &d.trailers,
        })
    }

    /// The slot of a stream map (0–3), mutably.
    pub(crate) fn slot_mut(&mut self, ty: MapType) -> Option<&mut MapSlot> {
        let (direction, part) = Self::map_part(ty)?;
        let d = self.direction_mut(direction);
        Some(match part {
            MapPart::Headers => &mut d.headers,
            MapPart::Trailers => &mut d.trailers,
        })
    }

    pub(crate) fn map(&self, ty: MapType, log_phase: bool) -> Option<&HeaderMap> {
        self.slot(ty)?.readable(log_phase)
    }

    pub(crate) fn map_mut(&mut self, ty: MapType) -> Option<&mut HeaderMap> {
        let (direction, part) = Self::map_part(ty)?;
        let d = self.direction_mut(direction);
        let slot = match part {
            MapPart::Headers => &mut d.headers,
            MapPart::Trailers => {
                // A body callback at the end of the stream may add trailers.
                if !d.trailers.present && d.may_add_trailers {
                    d.trailers.present = true;
                }
                &mut d.trailers
            }
        };
        slot.writable()
    }

    /// The direction of a body or data buffer type (`None` for other
    /// buffers): `HTTP_REQUEST_BODY` and `DOWNSTREAM_DATA` are the request
    /// (client to upstream) side, `HTTP_RESPONSE_BODY` and `UPSTREAM_DATA`
    /// the response side.
    pub(crate) fn body_direction(ty: BufferType) -> Option<Direction> {
        match ty {
            BufferType::HttpRequestBody | BufferType::DownstreamData => Some(Direction::Request),
            BufferType::HttpResponseBody | BufferType::UpstreamData => Some(Direction::Response),
            _ => None,
        }
    }

    /// The direction of buffer `ty` in this context: body buffers for an
    /// HTTP stream, data buffers for a TCP stream, `None` otherwise.
    fn own_direction(&self, ty: BufferType) -> Option<Direction> {
        let tcp_buffer = matches!(ty, BufferType::DownstreamData | BufferType::UpstreamData);
        if tcp_buffer != self.tcp {
            return None;
        }
        Self::body_direction(ty)
    }

    /// The body (or data) buffer slot of a direction (`None` for other
    /// buffer types, and for the buffers of the other kind of stream).
    pub(crate) fn body_slot(&mut self, ty: BufferType) -> Option<&mut Option<Vec<u8>>> {
        let direction = self.own_direction(ty)?;
        Some(&mut self.direction_mut(direction).body)
    }

    pub(crate) fn body(&self, ty: BufferType) -> Option<&Vec<u8>> {
        self.direction(self.own_direction(ty)?).body.as_ref()
    }

    pub(crate) fn body_mut(&mut self, ty: BufferType) -> Option<&mut Vec<u8>> {
        self.body_slot(ty)?.as_mut()
    }
}

/// One context of a VM. Both kinds are boxed, so that the context table
/// moves only pointers.
#[derive(Debug)]
pub(crate) enum Context {
    Root(Box<RootContext>),
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
    /// Bytes of its request, held against `Limits::max_effect_bytes`
    /// until the callout ends (set by [`HostState::start_callout`]).
    pub(crate) bytes: usize,
}

/// What one guest callback sees and leaves behind. [`Vm`](crate::Vm)
/// resets it in one assignment ([`Frame::new`]) before every guest call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Which entry point is running.
    pub(crate) phase: Phase,
    /// The context whose callback is running.
    pub(crate) current: ContextId,
    /// Set by `proxy_set_effective_context`.
    pub(crate) effective: Option<ContextId>,
    /// Set by `proxy_send_local_response`; makes the result of the stream
    /// callback that is running a stop. VM-wide and cleared before every
    /// guest call, as Envoy's `WasmBase::stopNextIteration` (ABI reference
    /// §11.1, §11.3): a reply sent from a callout response does not leak
    /// into the stream's next callback.
    pub(crate) stop_next_iteration: bool,
    /// Bytes logged during this callback (bounded per callback).
    pub(crate) log_bytes: usize,
    /// A log line was dropped during this callback.
    pub(crate) log_dropped: bool,
    /// The last `memory.grow` the limiter refused in this callback (or
    /// during instantiation): `(limit, requested)`, so that a following
    /// trap can name the limit.
    pub(crate) memory_refused: Option<(usize, usize)>,
    /// A refusal for a limit was logged during this callback.
    pub(crate) limit_logged: bool,
}

impl Frame {
    /// No guest call is running.
    pub(crate) const IDLE: Self = Self::new(ContextId(0), Phase::Idle);

    /// The frame of a callback of `ctx` in `phase`.
    pub(crate) const fn new(current: ContextId, phase: Phase) -> Self {
        Self {
            phase,
            current,
            effective: None,
            stop_next_iteration: false,
            log_bytes: 0,
            log_dropped: false,
            memory_refused: None,
            limit_logged: false,
        }
    }
}

/// Callouts of one VM: those in flight, their token counters and the answer
/// being delivered.
#[derive(Debug)]
pub(crate) struct Callouts {
    pub(crate) in_flight: IdMap<Callout>,
    pub(crate) next_http_token: u32,
    pub(crate) next_grpc_call_token: u32,
    pub(crate) next_grpc_stream_token: u32,
    /// The answer being delivered (maps 4–7, buffers 4–5).
    pub(crate) response: CalloutData,
    /// Higress 0.2.100 Redis calls.
    pub(crate) redis: crate::hostcalls::redis::RedisState,
}

impl Default for Callouts {
    fn default() -> Self {
        Self {
            in_flight: IdMap::default(),
            // Envoy's counters: `CalloutType` (0, 1, 2), += 4.
            next_http_token: 0,
            next_grpc_call_token: 1,
            next_grpc_stream_token: 2,
            response: CalloutData::default(),
            redis: Default::default(),
        }
    }
}

/// The guest log counters of one VM (the per-callback budget is in [`Frame`]).
#[derive(Debug, Default)]
pub(crate) struct LogStats {
    /// Log lines dropped over the per-callback budget, since the VM started.
    pub(crate) dropped_lines: u64,
    /// Their bytes.
    pub(crate) dropped_bytes: u64,
}

/// The metrics one VM defined (`proxy_define_metric`).
#[derive(Debug)]
pub(crate) struct Metrics {
    /// By the id the guest got.
    pub(crate) by_id: IdMap<Arc<Metric>>,
    /// The id of each `(type, name)` already defined.
    pub(crate) ids: HashMap<(u32, Vec<u8>), u32>,
    /// The last id given, per metric type (ids of a type step by 4).
    pub(crate) next_id: [u32; 3],
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            by_id: IdMap::default(),
            ids: HashMap::new(),
            next_id: [0, 1, 2],
        }
    }
}

/// The store data of one VM.
pub(crate) struct HostState {
    pub(crate) plugin: Arc<PluginShared>,
    pub(crate) env: HostEnv,
    pub(crate) instance: VmInstanceId,
    pub(crate) limiter: VmLimiter,
    pub(crate) memory: Option<Memory>,
    pub(crate) allocator: Option<TypedFunc<i32, i32>>,
    /// The callback that is running (or ran last).
    pub(crate) frame: Frame,
    /// True while the host runs the guest allocator.
    pub(crate) in_allocator: bool,
    pub(crate) contexts: Contexts,
    pub(crate) next_context_id: u32,
    /// The box of the last HTTP context removed, emptied, for the next
    /// stream (saves an allocation and a copy per stream).
    spare_http: Option<Box<HttpContext>>,
    pub(crate) effects: Vec<Effect>,
    pub(crate) callouts: Callouts,
    /// The argument buffer of `proxy_on_foreign_function` being delivered.
    pub(crate) foreign_args: Vec<u8>,
    pub(crate) metrics: Metrics,
    /// Root contexts that called `proxy_done`: `on_delete` runs after the call.
    pub(crate) done_requested: Vec<ContextId>,
    pub(crate) log: LogStats,
    /// Calls of hostcalls the plugin's capabilities do not allow.
    pub(crate) denied_calls: u64,
    /// Bytes of the effects queued since the embedder last took them.
    pub(crate) effect_bytes: usize,
    /// Bytes of the requests of the callouts in flight.
    pub(crate) callout_bytes: usize,
    /// Hostcalls refused with an error status because of a limit.
    pub(crate) limit_refusals: u64,
    /// Writes to hidden headers or properties that were ignored.
    pub(crate) hidden_writes: u64,
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
            frame: Frame::IDLE,
            in_allocator: false,
            contexts: Contexts::default(),
            next_context_id: 0,
            spare_http: None,
            effects: Vec::new(),
            callouts: Callouts::default(),
            foreign_args: Vec::new(),
            metrics: Metrics::default(),
            done_requested: Vec::new(),
            log: LogStats::default(),
            denied_calls: 0,
            effect_bytes: 0,
            callout_bytes: 0,
            limit_refusals: 0,
            hidden_writes: 0,
        }
    }

    /// What the VM holds for its embedder: queued effects and the requests
    /// of callouts in flight (`Limits::max_effect_bytes`).
    pub(crate) fn held_bytes(&self) -> usize {
        self.effect_bytes.saturating_add(self.callout_bytes)
    }

    /// `Err` if `extra` more held bytes would pass `Limits::max_effect_bytes`.
    pub(crate) fn effect_room(&self, extra: usize) -> Result<(), LimitExceeded> {
        let limit = self.plugin.config.limits.max_effect_bytes;
        let after = self.held_bytes().saturating_add(extra);
        if after > limit {
            return Err(LimitExceeded::EffectBytes {
                limit_bytes: limit,
                requested_bytes: after,
            });
        }
        Ok(())
    }

    /// Queues an effect for the embedder; its bytes count until the
    /// embedder takes the effects.
    pub(crate) fn queue_effect(&mut self, effect: Effect) -> Result<(), LimitExceeded> {
        let bytes = effect.held_bytes();
        self.effect_room(bytes)?;
        self.effect_bytes += bytes;
        self.effects.push(effect);
        Ok(())
    }

    /// Records a callout in flight and queues the effect that starts it;
    /// its request's bytes count until [`end_callout`](Self::end_callout).
    pub(crate) fn start_callout(
        &mut self,
        token: Token,
        mut callout: Callout,
        effect: Effect,
    ) -> Result<(), LimitExceeded> {
        let bytes = effect.held_bytes();
        self.effect_room(bytes)?;
        callout.bytes = bytes;
        self.callout_bytes += bytes;
        self.callouts.in_flight.insert(token.0, callout);
        self.effects.push(effect);
        Ok(())
    }

    /// Recomputes [`effect_bytes`](Self::effect_bytes) from the queue, after
    /// some effects were taken out of it (callout starts count in
    /// `callout_bytes` instead).
    pub(crate) fn recount_effects(&mut self) {
        self.effect_bytes = self
            .effects
            .iter()
            .filter(|e| !e.starts_callout())
            .map(Effect::held_bytes)
            .sum();
    }

    /// Forgets a callout that ended and releases its bytes.
    pub(crate) fn end_callout(&mut self, token: Token) -> Option<Callout> {
        let call = self.callouts.in_flight.remove(&token.0)?;
        self.callout_bytes = self.callout_bytes.saturating_sub(call.bytes);
        Some(call)
    }

    /// A hostcall refused because of `limit`, with an error status the
    /// SDKs accept for it: counted, and logged once per callback.
    pub(crate) fn refuse(&mut self, limit: &LimitExceeded, status: Status) -> Status {
        self.limit_refusals += 1;
        if !self.frame.limit_logged {
            self.frame.limit_logged = true;
            log::warn!(
                target: "vessel::limits",
                "plugin `{}`: a hostcall got {status:?}: {limit}",
                self.plugin.config.name
            );
        }
        status
    }

    /// A write to something the plugin's [`Hidden`](crate::Hidden) hides
    /// (`what`: "request header `authorization`", never a value): ignored
    /// by the caller, and logged at warn level the first time in the
    /// target stream.
    pub(crate) fn hidden_write(&mut self, what: &dyn std::fmt::Display) {
        self.hidden_writes += 1;
        let target = self.target();
        let Some(h) = self.http_mut(target) else {
            return;
        };
        if std::mem::replace(&mut h.hidden_write_logged, true) {
            return;
        }
        log::warn!(
            target: "vessel::hidden",
            "plugin `{}`: a write to hidden {what} was ignored (logged once per stream)",
            self.plugin.config.name
        );
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

    /// A new HTTP stream context of root context `root`.
    pub(crate) fn new_http_context(
        &mut self,
        root: ContextId,
        properties: PropertyMap,
    ) -> Box<HttpContext> {
        let mut h = self.spare_http.take().unwrap_or_default();
        h.root = root;
        h.properties = properties;
        h
    }

    /// Forgets a context (if it exists). An HTTP context's box is emptied
    /// and kept for the next stream.
    pub(crate) fn remove_context(&mut self, id: ContextId) {
        if let Some(Context::Http(mut h)) = self.contexts.remove(&id.0) {
            let HttpContext {
                root,
                request,
                response,
                local_response_sent,
                properties,
                tcp,
                hidden_write_logged,
            } = &mut *h;
            *root = ContextId(0);
            request.reset();
            response.reset();
            *local_response_sent = false;
            *properties = PropertyMap::new();
            *tcp = false;
            *hidden_write_logged = false;
            self.spare_http = Some(h);
        }
    }

    /// The context hostcalls act on: the effective context if one is set and
    /// still alive, else the current one (Envoy `contextOrEffectiveContext`).
    pub(crate) fn target(&self) -> ContextId {
        match self.frame.effective {
            Some(id) if self.contexts.contains_key(&id.0) => id,
            _ => self.frame.current,
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
                .and_then(|h| h.map(ty, self.frame.phase == Phase::Log))
                .ok_or(Status::BadArgument),
            MapType::GrpcReceiveInitialMetadata | MapType::HttpCallResponseHeaders => self
                .callouts
                .response
                .headers
                .as_ref()
                .ok_or(Status::BadArgument),
            MapType::GrpcReceiveTrailingMetadata | MapType::HttpCallResponseTrailers => self
                .callouts
                .response
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
            BufferType::HttpRequestBody
            | BufferType::HttpResponseBody
            | BufferType::DownstreamData
            | BufferType::UpstreamData => self
                .http(self.target())
                .and_then(|h| h.body(ty))
                .map(Vec::as_slice)
                .ok_or(Status::NotFound),
            BufferType::HttpCallResponseBody | BufferType::GrpcReceiveBuffer => self
                .callouts
                .response
                .body
                .as_deref()
                .ok_or(Status::NotFound),
            BufferType::VmConfiguration => Ok(&self.plugin.config.vm_configuration),
            BufferType::PluginConfiguration => {
                if self.frame.phase == Phase::Configure {
                    Ok(&self.plugin.config.configuration)
                } else {
                    Err(Status::NotFound)
                }
            }
            BufferType::CallData => Ok(&self.foreign_args),
            // Envoy-Higress's buffer 9; upstream Envoy knows no type 9, so
            // other ABI versions keep getting BAD_ARGUMENT.
            BufferType::RedisCallResponse if self.plugin.abi.has_higress_extensions() => {
                Ok(&self.callouts.redis.response)
            }
            BufferType::RedisCallResponse => Err(Status::BadArgument),
            // A buffer type a newer vessel-abi knows and this host does not serve.
            _ => Err(Status::BadArgument),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_keep_the_newest_beside_the_map() {
        let mut c = Contexts::default();
        let root = || Context::Root(Box::default());
        let http = || Context::Http(Box::default());
        assert!(c.insert(1, root()).is_none());
        assert!(c.insert(2, http()).is_none());
        assert!(c.insert(3, http()).is_none());
        assert_eq!(c.len(), 3);
        for id in [1, 2, 3] {
            assert!(c.contains_key(&id), "{id}");
            assert!(c.get_mut(&id).is_some(), "{id}");
        }
        assert!(!c.contains_key(&4));
        // Replacing the hot one and one in the map.
        assert!(matches!(c.insert(3, root()), Some(Context::Http(_))));
        assert!(matches!(c.insert(2, root()), Some(Context::Http(_))));
        assert_eq!(c.len(), 3);
        assert!(matches!(c.get(&3), Some(Context::Root(_))));
        // Removing from both places.
        assert!(c.remove(&2).is_some());
        assert!(c.remove(&2).is_none());
        assert!(c.remove(&1).is_some());
        assert_eq!(c.len(), 1);
        assert!(c.remove(&3).is_some());
        assert!(c.is_empty());
    }
    use crate::effects::LocalResponse;
    use crate::plugin::PluginConfig;
    use vessel_abi::AbiVersion;

    fn headers() -> HeaderMap {
        HeaderMap::from_pairs([(":path", "/"), ("x-a", "1")])
    }

    #[test]
    fn a_sealed_map_is_read_only_in_on_log_and_never_writable() {
        let mut h = HttpContext::default();
        let ty = MapType::HttpRequestHeaders;
        assert!(
            h.map(ty, false).is_none(),
            "no map before the stream has one"
        );
        h.request.headers.open(headers());
        assert_eq!(h.map(ty, false), Some(&headers()));
        assert!(h.map_mut(ty).is_some());
        h.request.seal();
        assert!(h.map(ty, false).is_none());
        assert_eq!(h.map(ty, true), Some(&headers()), "on_log reads it");
        assert!(h.map_mut(ty).is_none());
        // The host still has it; the response side is untouched.
        assert_eq!(h.slot(ty).and_then(MapSlot::get), Some(&headers()));
        assert!(h.map(MapType::HttpResponseHeaders, true).is_none());
        assert_eq!(h.slot_mut(ty).and_then(MapSlot::take), Some(headers()));
        assert!(h.map(ty, true).is_none(), "taken");
    }

    #[test]
    fn trailers_may_be_added_only_while_allowed() {
        let mut h = HttpContext::default();
        let ty = MapType::HttpResponseTrailers;
        assert!(h.map_mut(ty).is_none());
        h.response.may_add_trailers = true;
        h.map_mut(ty).expect("may add").append(b"grpc-status", b"0");
        h.response.may_add_trailers = false;
        assert_eq!(
            h.map(ty, false).and_then(|m| m.get(b"grpc-status")),
            Some(&b"0"[..])
        );
        assert!(h.map(MapType::HttpRequestTrailers, false).is_none());
    }

    #[test]
    fn a_removed_stream_leaves_nothing_in_the_next_one() {
        let plugin = Arc::new(PluginShared {
            config: PluginConfig::named("t"),
            abi: AbiVersion::V0_2_1,
        });
        let env = HostEnv::default();
        let mut st = HostState::new(
            plugin,
            env.clone(),
            env.next_instance_id(),
            VmLimiter::new(1),
        );
        let mut props = PropertyMap::new();
        props.insert_dotted("source.address", "10.0.0.1:1");
        let mut h = st.new_http_context(ContextId(1), props);
        h.request.headers.open(headers());
        h.response.body = Some(b"body".to_vec());
        h.local_response_sent = true;
        st.contexts.insert(7, Context::Http(h));
        st.remove_context(ContextId(7));
        assert!(st.contexts.is_empty());
        let h = st.new_http_context(ContextId(2), PropertyMap::new());
        assert_eq!(h.root, ContextId(2));
        assert!(h.request.headers.get().is_none());
        assert!(h.response.body.is_none());
        assert!(!h.local_response_sent);
        assert_eq!(h.properties, PropertyMap::new());
    }

    fn state(max_effect_bytes: usize) -> HostState {
        let config = PluginConfig {
            limits: crate::Limits {
                max_effect_bytes,
                ..crate::Limits::default()
            },
            ..PluginConfig::named("t")
        };
        let plugin = Arc::new(PluginShared {
            config,
            abi: vessel_abi::AbiVersion::V0_2_1,
        });
        HostState::new(
            plugin,
            HostEnv::default(),
            VmInstanceId(1),
            VmLimiter::new(1 << 20),
        )
    }

    fn reply(body: usize) -> Effect {
        Effect::LocalResponse {
            context: ContextId(2),
            response: LocalResponse {
                status: 200,
                details: String::new(),
                body: vec![0; body],
                headers: HeaderMap::new(),
                grpc_status: None,
            },
        }
    }

    #[test]
    fn queued_effects_count_until_taken_and_refuse_past_the_limit() {
        let one = reply(1000).held_bytes();
        assert_eq!(one, 1000 + std::mem::size_of::<Effect>());
        let mut st = state(2 * one + 10);
        st.queue_effect(reply(1000)).expect("first");
        st.queue_effect(reply(1000)).expect("second");
        assert_eq!(st.held_bytes(), 2 * one);
        assert_eq!(
            st.queue_effect(reply(1000)),
            Err(LimitExceeded::EffectBytes {
                limit_bytes: 2 * one + 10,
                requested_bytes: 3 * one
            })
        );
        assert_eq!(st.effects.len(), 2, "the refused effect is not queued");
        // What Vm::drain_effects does.
        st.effect_bytes = 0;
        st.effects.clear();
        st.queue_effect(reply(1000)).expect("room again");
    }

    #[test]
    fn callouts_hold_their_request_until_they_end() {
        let call = |token: u32| Effect::GrpcSend {
            token: Token(token),
            message: vec![0; 500],
            end_stream: false,
        };
        let size = call(0).held_bytes();
        let mut st = state(2 * size);
        let c = || Callout {
            root: ContextId(1),
            kind: CalloutKind::Http,
            local_closed: false,
            remote_closed: false,
            bytes: 0,
        };
        st.start_callout(Token(4), c(), call(4)).expect("fits");
        // Taking the effects does not release a callout in flight.
        st.effect_bytes = 0;
        st.effects.clear();
        st.start_callout(Token(8), c(), call(8)).expect("fits");
        assert!(st.start_callout(Token(12), c(), call(12)).is_err());
        assert!(!st.callouts.in_flight.contains_key(&12));
        assert_eq!(st.end_callout(Token(4)).map(|c| c.bytes), Some(size));
        assert_eq!(st.held_bytes(), size);
        assert!(st.end_callout(Token(4)).is_none());
        st.start_callout(Token(12), c(), call(12))
            .expect("room again");
    }
}
