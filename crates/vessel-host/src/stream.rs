//! [`HttpStream`]: the filter manager. One HTTP stream through an ordered
//! chain of filters, each a context in its own [`Vm`] (possibly of
//! different plugins), with Envoy's stream rules (ABI reference §11.1–§11.4,
//! §11.11, §6.6). It is sans-IO: events come in (headers, data and trailers
//! of each direction, signals from the VMs, resets), and [`Action`]s come
//! out (send this upstream, send that downstream, cancel the upstream,
//! reset). The embedder moves bytes between the network (or a script) and
//! the stream, and nothing else; every rule below exists only here.
//!
//! # Envoy's rules, as this type applies them
//!
//! * Request callbacks run in chain order, response callbacks in reverse.
//!   A filter's context is created when the request headers first reach
//!   it; a filter the request never reached gets no response callbacks, and
//!   its context is created at the end only for `on_log` (Envoy's
//!   `Context::log`).
//! * Headers that a filter stops with `StopIteration` (only with
//!   `allow_on_headers_stop_iteration`, or for modules with the 0.2.100
//!   marker) wait at that filter while its body callbacks keep running;
//!   when a body callback returns `Continue`, or the filter calls
//!   `proxy_continue_stream`, the headers and then the data flow on.
//! * Headers stopped with `StopAllIterationAndBuffer` or `...Watermark`
//!   stop every callback of that filter: data and trailers that arrive are
//!   buffered for it (in its VM's body buffer) and delivered to it when it
//!   continues. Over the buffer limit, `...Buffer` answers 413 (request) or
//!   500 (response); `...Watermark` asks the embedder to stop reading
//!   ([`HttpStream::read_paused`]).
//! * A body callback that returns `StopIterationAndBuffer` makes the filter
//!   buffer (413/500 over the limit), `StopIterationAndWatermark` buffers
//!   with flow control, `StopIterationNoBuffer` drops the chunk. Trailers
//!   that reach a filter holding data push the data on first.
//! * Trailers that a filter adds in its last body callback follow the body.
//! * A local reply sent while the request is processed runs through the
//!   response callbacks of every filter that has a context (so the filters
//!   before the sender, and the sender itself); one sent while the
//!   response is processed, before its headers left, replaces the response
//!   directly; after that, the stream can only be reset. A reply that is
//!   sent sets the `response.code_details` property to its details, as
//!   Envoy's stream info records them.
//! * `on_log` runs for every filter, then `on_done` and `on_delete` for
//!   every filter, aborted streams included ([`HttpStream::finish`]).
//! * Filter state: what a filter sets with `proxy_set_property`, the later
//!   filters of the stream read with `proxy_get_property`
//!   ([`FilterState`]).
//! * A filter whose VM failed follows its [`FailurePolicy`]: the stream
//!   whose own callback failed gets a 503 `wasm_fail_stream` reply (a reset
//!   once its response headers left), under every policy, as in Envoy. A
//!   stream that starts on a failed VM, or is paused on a VM that fails in
//!   a root callback, gets the 503 under `FAIL_CLOSED` and `FAIL_RELOAD`
//!   and skips the filter under `FAIL_OPEN`.
//!
//! # Signals
//!
//! What a guest asks for during a callback of this stream (continue, local
//! reply, close) the stream takes from the VM at once. What a VM asks for
//! outside the stream's callbacks (a callout response that resumes the
//! stream, say) the embedder routes with [`StreamSignal::from_effect`] to
//! the stream that owns the context, and delivers with
//! [`HttpStream::signal`]. Callouts, ticks and queues belong to the VM's
//! root context; the embedder carries them out
//! ([`FilterVms::with_vm`]).

use std::collections::VecDeque;

use vessel_abi::{
    BufferType, FilterDataStatus, FilterHeadersStatus, FilterTrailersStatus, MapType, StreamType,
};

use crate::effects::{Effect, LocalResponse};
use crate::error::VmError;
use crate::headers::HeaderMap;
use crate::ids::ContextId;
use crate::policy::FailurePolicy;
use crate::properties::{FilterState, PropertyMap, PropertySource, PropertyValue};
use crate::vm::Vm;

/// Envoy's default `per_connection_buffer_limit_bytes` (1 MiB): the default
/// limit of what the filter manager buffers per filter and direction.
pub const DEFAULT_BUFFER_LIMIT: usize = 1 << 20;

/// The VMs of a stream's filters, as the embedder holds them (owned, or
/// behind locks in a pool).
pub trait FilterVms {
    /// Runs `f` on filter `i`'s VM. After `f`, the implementation carries
    /// out the effects left in the VM ([`Vm::drain_effects`]): callouts,
    /// tick periods, queue notifications, and signals for other streams.
    /// The stream has already taken its own.
    fn with_vm<R>(&mut self, i: usize, f: impl FnOnce(&mut Vm) -> R) -> R;

    /// Filter `i`'s failure policy.
    fn policy(&self, i: usize) -> FailurePolicy;

    /// Creates filter `i`'s context for this stream. The default runs
    /// [`Vm::create_http_context_with`]; an embedder that routes signals
    /// by context registers the new context here, under the same lock.
    fn create_context(&mut self, i: usize, properties: PropertyMap) -> Result<ContextId, VmError> {
        self.with_vm(i, |vm| vm.create_http_context_with(properties))
    }

    /// [`create_context`](Self::create_context), then `then` on the same
    /// VM with the new context, in one access if the implementation can
    /// (the default makes two). The filter manager takes the signals
    /// `on_context_create` left this way.
    fn create_context_then<R>(
        &mut self,
        i: usize,
        properties: PropertyMap,
        then: impl FnOnce(&mut Vm, ContextId) -> R,
    ) -> Result<(ContextId, R), VmError> {
        let ctx = self.create_context(i, properties)?;
        Ok((ctx, self.with_vm(i, |vm| then(vm, ctx))))
    }

    /// Creates filter `i`'s context for a TCP connection
    /// ([`TcpStream`](crate::TcpStream)). The default runs
    /// [`Vm::create_tcp_context_with`]; an embedder that routes signals by
    /// context registers the new context here. The connection takes the
    /// signals `on_context_create` left.
    fn create_tcp_context(
        &mut self,
        i: usize,
        properties: PropertyMap,
    ) -> Result<ContextId, VmError> {
        self.with_vm(i, |vm| vm.create_tcp_context_with(properties))
    }

    /// Filter `i`'s context ended ([`HttpStream::finish`], or the end of a
    /// [`TcpStream`](crate::TcpStream) connection); `vm_ok` is
    /// false if its VM had failed. The default does nothing.
    fn context_finished(&mut self, i: usize, context: ContextId, vm_ok: bool) {
        let _ = (i, context, vm_ok);
    }
}

/// A direction of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to upstream (decoding).
    Request,
    /// Upstream to client (encoding).
    Response,
}

impl Direction {
    fn index(self) -> usize {
        self as usize
    }

    fn maps(self) -> (MapType, BufferType, MapType) {
        match self {
            Self::Request => (
                MapType::HttpRequestHeaders,
                BufferType::HttpRequestBody,
                MapType::HttpRequestTrailers,
            ),
            Self::Response => (
                MapType::HttpResponseHeaders,
                BufferType::HttpResponseBody,
                MapType::HttpResponseTrailers,
            ),
        }
    }

    /// The ABI's stream type of this direction.
    pub fn stream_type(self) -> StreamType {
        match self {
            Self::Request => StreamType::HttpRequest,
            Self::Response => StreamType::HttpResponse,
        }
    }
}

/// What the embedder must do, in order ([`HttpStream::poll_action`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Send the request headers upstream.
    UpstreamHeaders {
        /// The headers as the filters left them.
        headers: HeaderMap,
        /// No body follows.
        end_stream: bool,
    },
    /// Send request body bytes upstream.
    UpstreamData {
        /// The bytes.
        data: Vec<u8>,
        /// The request ends with them.
        end_stream: bool,
    },
    /// Send the request trailers upstream (the request ends).
    UpstreamTrailers {
        /// The trailers.
        trailers: HeaderMap,
    },
    /// Abandon the upstream request and its response: a local reply
    /// answers the stream.
    CancelUpstream,
    /// Send the response headers downstream.
    DownstreamHeaders {
        /// The headers.
        headers: HeaderMap,
        /// No body follows.
        end_stream: bool,
    },
    /// Send response body bytes downstream.
    DownstreamData {
        /// The bytes.
        data: Vec<u8>,
        /// The response ends with them.
        end_stream: bool,
    },
    /// Send the response trailers downstream (the response ends).
    DownstreamTrailers {
        /// The trailers.
        trailers: HeaderMap,
    },
    /// Reset the stream (downstream and upstream).
    Reset {
        /// Why.
        reason: ResetReason,
    },
}

/// Why the stream asked for a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetReason {
    /// A filter called `proxy_close_stream`.
    FilterClosed,
    /// A local reply (a filter's, a failure's or the buffer limit's) came
    /// after the response headers had left.
    LocalReplyAfterHeaders,
}

/// Something a VM asked for a stream outside that stream's own callbacks,
/// routed by the embedder ([`HttpStream::signal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamSignal {
    /// `proxy_continue_stream` for a direction (for a TCP stream,
    /// `Direction::Request` is `DOWNSTREAM`: resume reading).
    Continue(Direction),
    /// `proxy_close_stream` (for a TCP stream: close the connection).
    Close,
    /// `proxy_send_local_response`.
    LocalReply(LocalResponse),
    /// The filter's VM failed (in a root callback, say).
    VmFailed,
}

impl StreamSignal {
    /// Splits an effect into the context it targets and its signal, or
    /// gives it back if it is not for a stream.
    // The `Err` hands the effect back unchanged, it is no error path:
    // boxing it would cost an allocation per routed effect.
    #[allow(clippy::result_large_err)]
    pub fn from_effect(effect: Effect) -> Result<(ContextId, Self), Effect> {
        match effect {
            Effect::ContinueStream { context, stream } => match stream {
                StreamType::HttpRequest => Ok((context, Self::Continue(Direction::Request))),
                StreamType::HttpResponse => Ok((context, Self::Continue(Direction::Response))),
                // A TCP stream's read side ([`TcpStream`](crate::TcpStream)).
                StreamType::Downstream => Ok((context, Self::Continue(Direction::Request))),
                _ => Err(Effect::ContinueStream { context, stream }),
            },
            Effect::CloseStream { context, .. } => Ok((context, Self::Close)),
            Effect::LocalResponse { context, response } => {
                Ok((context, Self::LocalReply(response)))
            }
            other => Err(other),
        }
    }
}

/// Settings of one stream.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Number of filters in the chain.
    pub filters: usize,
    /// The most a filter may buffer per direction (Envoy's
    /// `per_connection_buffer_limit_bytes` for HTTP/1, the stream window
    /// for HTTP/2).
    pub buffer_limit: usize,
    /// Stream properties every filter context starts with (`source.*`,
    /// `request.protocol`...). The stream attaches its filter state.
    pub properties: PropertyMap,
    /// Filters whose failure skips them instead of failing the stream
    /// (`true` at their index; missing entries are `false`): routing
    /// policies with a native fallback. Under every failure policy, a
    /// stream whose own callback of such a filter fails goes on as if the
    /// filter were absent from then on (what the filter held goes on as it
    /// left it), and a stream that meets such a filter's failed VM skips
    /// it. The embedder reads [`HttpStream::skipped_failures`] to fall
    /// back.
    pub skip_on_failure: Vec<bool>,
}

impl StreamConfig {
    /// `filters` filters, the default buffer limit, no properties.
    pub fn new(filters: usize) -> Self {
        Self {
            filters,
            buffer_limit: DEFAULT_BUFFER_LIMIT,
            properties: PropertyMap::new(),
            skip_on_failure: Vec::new(),
        }
    }
}

/// Where a direction's headers are at one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Hdr {
    #[default]
    NotReached,
    /// Held here; `all` for StopAll (no callbacks until continue),
    /// `buffer` for the 413/500 limit (else watermark).
    Stopped {
        all: bool,
        buffer: bool,
    },
    Passed,
}

/// One direction at one filter.
#[derive(Debug, Default)]
struct At {
    hdr: Hdr,
    /// Stopped on a body callback (Envoy's StopSingleIteration from data).
    data_stopped: bool,
    /// ... with StopIterationAndBuffer (413/500 over the limit).
    data_buffer_limit: bool,
    /// Data arrived while stopped-all (delivered on continue).
    pending_data: bool,
    /// The end of the direction reached this filter.
    end: bool,
    /// Trailers held here.
    trailers: Option<HeaderMap>,
    /// Stopped on the trailers callback.
    trailers_stopped: bool,
}

impl At {
    fn stopped_all(&self) -> bool {
        matches!(self.hdr, Hdr::Stopped { all: true, .. })
    }
    fn holding(&self) -> bool {
        matches!(self.hdr, Hdr::Stopped { .. }) || self.data_stopped || self.trailers_stopped
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Active,
    /// FAIL_OPEN after a failure: skipped from then on.
    Bypassed,
    /// Its VM failed: no more callbacks.
    Failed,
}

#[derive(Debug)]
struct Filter {
    ctx: Option<ContextId>,
    status: Status,
    at: [At; 2],
    /// [`StreamConfig::skip_on_failure`].
    skip_on_failure: bool,
}

/// A direction as a whole.
#[derive(Debug, Default)]
struct Side {
    /// Headers entered the chain (for the response: the response started).
    started: bool,
    /// Headers left the chain.
    sent: bool,
    /// The end left the chain.
    ended: bool,
    /// The pump should stop reading (a watermark buffer is over the limit).
    read_paused: bool,
}

/// How a run through the chain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Passed every filter, or is held at one.
    Go,
    /// The stream ended (local reply, reset, failure): stop.
    Done,
}

/// The outcome of one guest callback.
enum Call<T> {
    /// The callback's result, and whether the filter continued this
    /// direction during it.
    Value(T, bool),
    /// The filter is skipped (bypassed, or no context in the response).
    Skip,
    /// The stream ended.
    Done,
}

/// One HTTP stream through a chain of filters. See the module docs.
#[derive(Debug)]
pub struct HttpStream {
    filters: Vec<Filter>,
    sides: [Side; 2],
    actions: VecDeque<Action>,
    limit: usize,
    properties: PropertyMap,
    /// The request is gRPC: local replies take gRPC's shape.
    grpc: bool,
    /// The response is a local reply: upstream events are ignored.
    local: bool,
    /// A reset, a direct local reply or [`finish`](Self::finish) ended the
    /// stream.
    done: bool,
    finished: bool,
    /// Signals that arrived while a callback ran, for another direction.
    deferred: Vec<(usize, StreamSignal)>,
    /// Filters skipped because they failed ([`StreamConfig::skip_on_failure`]).
    skipped_failures: Vec<usize>,
    /// The trailers a `skip_on_failure` filter's trailers callback is
    /// given, for [`bypass_resume`](Self::bypass_resume) if it fails.
    trailers_in_call: Option<HeaderMap>,
}

impl HttpStream {
    /// A stream through `config.filters` filters.
    pub fn new(config: StreamConfig) -> Self {
        let mut properties = config.properties;
        if config.filters > 1 {
            properties.set_filter_state(FilterState::new());
        }
        Self {
            filters: (0..config.filters)
                .map(|i| Filter {
                    ctx: None,
                    status: Status::Active,
                    at: Default::default(),
                    skip_on_failure: config.skip_on_failure.get(i).copied().unwrap_or(false),
                })
                .collect(),
            sides: Default::default(),
            // Every stream has actions (headers and data each way): room
            // for them up front, not on the first push.
            actions: VecDeque::with_capacity(4),
            limit: config.buffer_limit,
            properties,
            grpc: false,
            local: false,
            done: false,
            finished: false,
            deferred: Vec::new(),
            skipped_failures: Vec::new(),
            trailers_in_call: None,
        }
    }

    /// The filters this stream skipped because they failed (marked in
    /// [`StreamConfig::skip_on_failure`]), in the order they failed.
    pub fn skipped_failures(&self) -> &[usize] {
        &self.skipped_failures
    }

    /// Number of filters.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// True if the chain has no filters.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The next thing to do, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// True if actions are waiting.
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Filter `i`'s context, once created.
    pub fn context(&self, i: usize) -> Option<ContextId> {
        self.filters.get(i).and_then(|f| f.ctx)
    }

    /// True once the stream needs no more events, only
    /// [`finish`](Self::finish): a reset, or a local reply that has left
    /// whole.
    pub fn is_done(&self) -> bool {
        self.done || (self.local && self.sides[1].ended)
    }

    /// True if a local reply answers the stream (its upstream, if any, was
    /// cancelled).
    pub fn is_local_reply(&self) -> bool {
        self.local
    }

    /// True once the direction's end left the chain.
    pub fn is_complete(&self, dir: Direction) -> bool {
        self.sides[dir.index()].ended
    }

    /// True once the direction's headers left the chain.
    pub fn headers_sent(&self, dir: Direction) -> bool {
        self.sides[dir.index()].sent
    }

    /// True if a filter holds the direction (the stream waits for a
    /// signal, or for more of the body).
    pub fn is_held(&self, dir: Direction) -> bool {
        let d = dir.index();
        self.filters
            .iter()
            .any(|f| f.status == Status::Active && f.at[d].holding())
    }

    /// True if the embedder should stop reading the direction's body for
    /// now: a filter buffers with flow control (watermark) over the limit.
    /// Reading resumes when the filter continues.
    pub fn read_paused(&self, dir: Direction) -> bool {
        self.sides[dir.index()].read_paused
    }

    /// The buffer limit.
    pub fn buffer_limit(&self) -> usize {
        self.limit
    }

    // ---- events ----------------------------------------------------------

    /// The client's request headers.
    pub fn request_headers(
        &mut self,
        vms: &mut impl FilterVms,
        headers: HeaderMap,
        end_stream: bool,
    ) {
        if self.done || self.local || self.sides[0].started {
            return;
        }
        self.grpc = crate::effects::is_grpc_request(&headers);
        self.sides[0].started = true;
        self.run_headers(vms, Direction::Request, 0, headers, end_stream);
        self.flush_deferred(vms);
    }

    /// A chunk of the request body.
    pub fn request_data(&mut self, vms: &mut impl FilterVms, data: Vec<u8>, end_stream: bool) {
        if self.done || self.local {
            return;
        }
        self.run_data(vms, Direction::Request, 0, data, end_stream);
        self.flush_deferred(vms);
    }

    /// The request trailers (the request ends).
    pub fn request_trailers(&mut self, vms: &mut impl FilterVms, trailers: HeaderMap) {
        if self.done || self.local {
            return;
        }
        self.run_trailers(vms, Direction::Request, 0, trailers);
        self.flush_deferred(vms);
    }

    /// The upstream's response headers.
    pub fn response_headers(
        &mut self,
        vms: &mut impl FilterVms,
        headers: HeaderMap,
        end_stream: bool,
    ) {
        if self.done || self.local || self.sides[1].started {
            return;
        }
        self.sides[1].started = true;
        self.run_headers(vms, Direction::Response, 0, headers, end_stream);
        self.flush_deferred(vms);
    }

    /// A chunk of the response body.
    pub fn response_data(&mut self, vms: &mut impl FilterVms, data: Vec<u8>, end_stream: bool) {
        if self.done || self.local {
            return;
        }
        self.run_data(vms, Direction::Response, 0, data, end_stream);
        self.flush_deferred(vms);
    }

    /// The response trailers (the response ends).
    pub fn response_trailers(&mut self, vms: &mut impl FilterVms, trailers: HeaderMap) {
        if self.done || self.local {
            return;
        }
        self.run_trailers(vms, Direction::Response, 0, trailers);
        self.flush_deferred(vms);
    }

    /// A reply that does not come from a filter (the router's 503 for an
    /// unreachable upstream, say): it runs through the response callbacks
    /// of every filter with a context, as Envoy's local replies do.
    pub fn send_local_reply(&mut self, vms: &mut impl FilterVms, reply: LocalResponse) {
        if self.done || self.local {
            return;
        }
        self.local_reply(vms, None, reply);
        self.flush_deferred(vms);
    }

    /// The client went away (or reset the stream): nothing more is sent.
    /// Call [`finish`](Self::finish) next.
    pub fn downstream_reset(&mut self) {
        self.done = true;
    }

    /// A signal from filter `i`'s VM (routed by the embedder).
    pub fn signal(&mut self, vms: &mut impl FilterVms, i: usize, signal: StreamSignal) {
        if self.done || i >= self.filters.len() {
            return;
        }
        self.apply_signal(vms, i, signal);
        self.flush_deferred(vms);
    }

    /// Sets a stream property on every filter context (the `upstream.*`
    /// attributes once the upstream answered, say), and on the contexts
    /// created later.
    pub fn set_property(
        &mut self,
        vms: &mut impl FilterVms,
        dotted: &str,
        value: impl Into<PropertyValue>,
    ) {
        let contexts = live_contexts(&self.filters);
        set_property_on(
            vms,
            contexts,
            &mut self.properties,
            dotted,
            value.into(),
            "vessel::stream",
        );
    }

    /// Adds stream properties computed only when a guest reads one
    /// ([`PropertyMap::add_late_source`]): for facts learnt mid-stream
    /// (the upstream's address, the response's details) that most filters
    /// never read, on every filter context and on the contexts created
    /// later. A value from `source` wins over one set before.
    pub fn add_property_source(&mut self, vms: &mut impl FilterVms, source: PropertySource) {
        for (i, ctx) in live_contexts(&self.filters) {
            let source = source.clone();
            if let Err(e) = vms.with_vm(i, |vm| vm.add_stream_property_source(ctx, source)) {
                log::debug!(target: "vessel::stream", "property source: {e}");
            }
        }
        self.properties.add_late_source(source);
    }

    /// Ends the stream: `on_log` for every filter, then `on_done` and
    /// `on_delete` for every filter, in chain order (Envoy's `log()` then
    /// `onDestroy()`). A filter the request never reached gets its context
    /// now, for `on_log`. Runs once; later calls do nothing.
    #[inline]
    pub fn finish(&mut self, vms: &mut impl FilterVms) {
        if !self.finished {
            self.finish_now(vms);
        }
    }

    /// [`finish`](Self::finish) the first time.
    #[inline(never)]
    fn finish_now(&mut self, vms: &mut impl FilterVms) {
        self.finished = true;
        self.done = true;
        for i in 0..self.filters.len() {
            if self.filters[i].ctx.is_none() && self.filters[i].status == Status::Active {
                // What `on_context_create` asks for the stream is dropped:
                // the stream is over.
                if let Ok((ctx, _)) = vms.create_context_then(i, self.properties.clone(), take_own)
                {
                    self.filters[i].ctx = Some(ctx);
                }
            }
        }
        // One filter: its three callbacks in one VM access.
        let single = self.filters.len() == 1;
        if !single {
            for i in 0..self.filters.len() {
                if let Some(ctx) = self.filters[i].ctx {
                    vms.with_vm(i, |vm| log_context(vm, i, ctx));
                }
            }
        }
        for i in 0..self.filters.len() {
            let Some(ctx) = self.filters[i].ctx.take() else {
                continue;
            };
            let vm_ok = vms.with_vm(i, |vm| {
                if single {
                    log_context(vm, i, ctx);
                }
                let done = if vm.is_failed() {
                    Ok(())
                } else {
                    vm.on_done(ctx).map(|_| ())
                };
                // `on_delete` forgets the context even on a failed VM.
                let deleted = vm.on_delete(ctx);
                take_own(vm, ctx);
                if let Err(e) = done.and(deleted)
                    && !vm.is_failed()
                {
                    log::debug!(target: "vessel::stream", "ending filter {i}: {e}");
                }
                !vm.is_failed()
            });
            vms.context_finished(i, ctx, vm_ok);
        }
    }

    // ---- the chain -------------------------------------------------------

    /// Filter index at position `p` of the direction's order.
    fn index(&self, dir: Direction, p: usize) -> usize {
        match dir {
            Direction::Request => p,
            Direction::Response => self.filters.len() - 1 - p,
        }
    }

    /// Position of filter `i` in the direction's order.
    fn position(&self, dir: Direction, i: usize) -> usize {
        self.index(dir, i)
    }

    /// Filter `i`'s context for a callback in `dir`, created when the
    /// request first reaches it; `Skip` for a filter the stream skips.
    #[inline]
    fn enter(&mut self, vms: &mut impl FilterVms, i: usize, dir: Direction) -> Call<ContextId> {
        // The common case (an active filter that has its context), inlined.
        let filter = &self.filters[i];
        if filter.status == Status::Active
            && let Some(ctx) = filter.ctx
        {
            return Call::Value(ctx, false);
        }
        self.enter_first(vms, i, dir)
    }

    /// [`enter`](Self::enter) past the common case: a filter that failed,
    /// or whose context is not created yet.
    #[inline(never)]
    fn enter_first(
        &mut self,
        vms: &mut impl FilterVms,
        i: usize,
        dir: Direction,
    ) -> Call<ContextId> {
        if self.filters[i].status != Status::Active {
            return Call::Skip;
        }
        if let Some(ctx) = self.filters[i].ctx {
            return Call::Value(ctx, false);
        }
        if dir == Direction::Response {
            // The request never reached it: no response callbacks.
            return Call::Skip;
        }
        match vms.create_context_then(i, self.properties.clone(), take_own) {
            Ok((ctx, own)) => {
                self.filters[i].ctx = Some(ctx);
                let mut continued = false;
                // What `on_context_create` asked for.
                for s in own {
                    if let Some(flow) = self.own_signal(vms, i, dir, s, &mut continued) {
                        return flow;
                    }
                }
                Call::Value(ctx, false)
            }
            Err(e) => {
                log::debug!(target: "vessel::stream", "filter {i}: no context: {e}");
                self.start_failed(vms, i, dir)
            }
        }
    }

    /// Runs one guest callback on filter `i` (entered with
    /// [`enter`](Self::enter)), takes the stream's own signals, and applies
    /// the failure policy.
    fn call<T>(
        &mut self,
        vms: &mut impl FilterVms,
        i: usize,
        dir: Direction,
        ctx: ContextId,
        f: impl FnOnce(&mut Vm, ContextId) -> Result<T, VmError>,
    ) -> Call<T> {
        match self.call_then(vms, i, dir, ctx, f, |_, _, _| None::<()>) {
            Call::Value((v, _), c) => Call::Value(v, c),
            Call::Skip => Call::Skip,
            Call::Done => Call::Done,
        }
    }

    /// [`call`](Self::call), and `then` on the VM right after the callback,
    /// in the same [`FilterVms::with_vm`], if the callback succeeded and left
    /// no signal for this stream (what `then` reads is then what a second
    /// `with_vm` after the signals would read: one VM access instead of
    /// two, on every callback of a stream that flows).
    fn call_then<T, X>(
        &mut self,
        vms: &mut impl FilterVms,
        i: usize,
        dir: Direction,
        ctx: ContextId,
        f: impl FnOnce(&mut Vm, ContextId) -> Result<T, VmError>,
        then: impl FnOnce(&mut Vm, ContextId, &T) -> Option<X>,
    ) -> Call<(T, Option<X>)> {
        let (result, own, next) = vms.with_vm(i, |vm| {
            let r = f(vm, ctx);
            let own = take_own(vm, ctx);
            let next = match &r {
                Ok(v) if own.is_empty() => then(vm, ctx, v),
                _ => None,
            };
            (r, own, next)
        });
        let value = match result {
            Ok(v) => (v, next),
            Err(VmError::StreamLimit { .. }) => {
                // Body data over what the filter may hold
                // (`Limits::max_body_bytes`): this stream is over its
                // buffer limit; the VM is fine.
                self.local_reply(vms, None, too_large(dir));
                return Call::Done;
            }
            Err(e) => {
                log::debug!(target: "vessel::stream", "filter {i}: {e}");
                return self.fail(vms, i, dir);
            }
        };
        let mut continued = false;
        for s in own {
            if let Some(flow) = self.own_signal(vms, i, dir, s, &mut continued) {
                return flow;
            }
        }
        Call::Value(value, continued)
    }

    fn own_signal<T>(
        &mut self,
        vms: &mut impl FilterVms,
        i: usize,
        dir: Direction,
        signal: StreamSignal,
        continued: &mut bool,
    ) -> Option<Call<T>> {
        match signal {
            StreamSignal::Continue(d) if d == dir => *continued = true,
            StreamSignal::Continue(_) => self.deferred.push((i, signal)),
            StreamSignal::Close => {
                self.reset(ResetReason::FilterClosed);
                return Some(Call::Done);
            }
            StreamSignal::LocalReply(r) => {
                self.local_reply(vms, Some(i), r);
                return Some(Call::Done);
            }
            StreamSignal::VmFailed => {}
        }
        None
    }

    /// The stream whose own callback failed on filter `i`: a 503 (a reset
    /// once the response headers left), under every policy (Envoy's
    /// `failStream`); or, for a filter marked
    /// [`skip_on_failure`](StreamConfig::skip_on_failure), the filter is
    /// skipped from then on: what it held in `dir` goes on as it left it
    /// (`Done`: the rest of the chain has run), or, holding nothing, the
    /// call site goes on without it (`Skip`).
    fn fail<T>(&mut self, vms: &mut impl FilterVms, i: usize, dir: Direction) -> Call<T> {
        if self.filters[i].skip_on_failure {
            log::warn!(target: "vessel::stream", "filter {i} failed: skipped for this stream (skip_on_failure)");
            self.skipped_failures.push(i);
            let at = &mut self.filters[i].at[dir.index()];
            if at.holding() {
                if let Some(t) = self.trailers_in_call.take() {
                    at.trailers = Some(t);
                    at.end = true;
                }
                self.bypass_resume(vms, i, dir);
                return Call::Done;
            }
            self.filters[i].status = Status::Bypassed;
            return Call::Skip;
        }
        // No more callbacks of this filter: its own encode callbacks are
        // skipped for the 503, as Envoy's `failure_local_reply_sent_` does.
        self.filters[i].status = Status::Failed;
        self.local_reply(vms, Some(i), fail_stream());
        Call::Done
    }

    /// Filter `i` has no context because its VM failed before this stream
    /// reached it: the policy decides (a `skip_on_failure` filter is
    /// skipped).
    fn start_failed<T>(&mut self, vms: &mut impl FilterVms, i: usize, dir: Direction) -> Call<T> {
        if self.filters[i].skip_on_failure {
            self.skipped_failures.push(i);
            self.filters[i].status = Status::Bypassed;
            return Call::Skip;
        }
        if vms.policy(i).passes_through() {
            self.filters[i].status = Status::Bypassed;
            return Call::Skip;
        }
        self.fail(vms, i, dir)
    }

    fn reset(&mut self, reason: ResetReason) {
        if !self.done {
            self.done = true;
            self.actions.push_back(Action::Reset { reason });
        }
    }

    /// A local reply from filter `from` (`None`: from the filter manager or
    /// the router).
    fn local_reply(&mut self, vms: &mut impl FilterVms, from: Option<usize>, reply: LocalResponse) {
        if self.done {
            return;
        }
        if self.sides[1].sent {
            // Response headers left: all that is left is a reset.
            self.reset(ResetReason::LocalReplyAfterHeaders);
            return;
        }
        // Envoy's `sendLocalReply` records the reply's details in the
        // stream info: `response.code_details` from here on (wasm-go reads
        // it to tell a local reply from an upstream's answer).
        self.set_property(vms, "response.code_details", reply.details.as_str());
        let (headers, body) = reply.to_response(self.grpc);
        if self.sides[0].sent && !self.local {
            self.actions.push_back(Action::CancelUpstream);
        }
        self.local = true;
        if self.sides[1].started {
            // Envoy's `sendDirectLocalReply`: the reply replaces the
            // response being processed, without the filters.
            log::debug!(target: "vessel::stream", "local reply from {from:?} replaces the response");
            self.emit_local(headers, body);
            self.done = true;
            return;
        }
        self.sides[1].started = true;
        // Through the response callbacks of the filters with a context.
        let eos = body.is_empty();
        if self.run_headers(vms, Direction::Response, 0, headers, eos) == Flow::Go && !eos {
            self.run_data(vms, Direction::Response, 0, body, true);
        }
    }

    fn emit_local(&mut self, headers: HeaderMap, body: Vec<u8>) {
        let end = body.is_empty();
        self.sides[1].sent = true;
        self.actions.push_back(Action::DownstreamHeaders {
            headers,
            end_stream: end,
        });
        if !end {
            self.actions.push_back(Action::DownstreamData {
                data: body,
                end_stream: true,
            });
        }
        self.sides[1].ended = true;
    }

    fn emit_headers(&mut self, dir: Direction, headers: HeaderMap, end_stream: bool) {
        let side = &mut self.sides[dir.index()];
        side.sent = true;
        side.ended |= end_stream;
        self.actions.push_back(match dir {
            Direction::Request => Action::UpstreamHeaders {
                headers,
                end_stream,
            },
            Direction::Response => Action::DownstreamHeaders {
                headers,
                end_stream,
            },
        });
    }

    fn emit_data(&mut self, dir: Direction, data: Vec<u8>, end_stream: bool) {
        if data.is_empty() && !end_stream {
            return;
        }
        self.sides[dir.index()].ended |= end_stream;
        self.actions.push_back(match dir {
            Direction::Request => Action::UpstreamData { data, end_stream },
            Direction::Response => Action::DownstreamData { data, end_stream },
        });
    }

    fn emit_trailers(&mut self, dir: Direction, trailers: HeaderMap) {
        self.sides[dir.index()].ended = true;
        self.actions.push_back(match dir {
            Direction::Request => Action::UpstreamTrailers { trailers },
            Direction::Response => Action::DownstreamTrailers { trailers },
        });
    }

    /// Headers through the chain from position `from`.
    fn run_headers(
        &mut self,
        vms: &mut impl FilterVms,
        dir: Direction,
        from: usize,
        mut headers: HeaderMap,
        end_stream: bool,
    ) -> Flow {
        let (hty, _, _) = dir.maps();
        let d = dir.index();
        for p in from..self.filters.len() {
            let i = self.index(dir, p);
            let ctx = match self.enter(vms, i, dir) {
                Call::Done => return Flow::Done,
                Call::Skip => continue,
                Call::Value(ctx, _) => ctx,
            };
            // The VM copies the headers into its stream's own map (kept
            // from stream to stream: no allocation), and the map as the
            // filter left it is copied back into `headers`, whose buffers
            // have the room (the pump sizes them): a stream that flows
            // allocates no map here. What a stopped filter holds stays in
            // its VM until it continues.
            let headers_mut = &mut headers;
            let step = self.call(vms, i, dir, ctx, |vm, ctx| {
                let status = match dir {
                    Direction::Request => vm.on_request_headers_from(ctx, headers_mut, end_stream),
                    Direction::Response => {
                        vm.on_response_headers_from(ctx, headers_mut, end_stream)
                    }
                }?;
                if status == FilterHeadersStatus::Continue {
                    match vm.headers(ctx, hty) {
                        Some(out) => headers_mut.clone_from(out),
                        None => *headers_mut = HeaderMap::new(),
                    }
                }
                Ok(status)
            });
            let (status, continued) = match step {
                Call::Done => return Flow::Done,
                Call::Skip => continue,
                Call::Value(s, c) => (s, c),
            };
            let at = &mut self.filters[i].at[d];
            at.end = end_stream;
            if status == FilterHeadersStatus::Continue || continued {
                at.hdr = Hdr::Passed;
                if status != FilterHeadersStatus::Continue {
                    // Continued during the callback that stopped.
                    headers = self.headers_of(vms, i, hty);
                }
                continue;
            }
            at.hdr = match status {
                FilterHeadersStatus::StopIteration => Hdr::Stopped {
                    all: false,
                    buffer: false,
                },
                FilterHeadersStatus::StopAllIterationAndBuffer => Hdr::Stopped {
                    all: true,
                    buffer: true,
                },
                _ => Hdr::Stopped {
                    all: true,
                    buffer: false,
                },
            };
            return Flow::Go;
        }
        self.emit_headers(dir, headers, end_stream);
        Flow::Go
    }

    /// The headers filter `i` holds (as it left them).
    fn headers_of(&self, vms: &mut impl FilterVms, i: usize, ty: MapType) -> HeaderMap {
        let Some(ctx) = self.filters[i].ctx else {
            return HeaderMap::new();
        };
        vms.with_vm(i, |vm| vm.headers(ctx, ty).cloned())
            .unwrap_or_default()
    }

    /// Data through the chain from position `from`. `data` is what reaches
    /// that position.
    fn run_data(
        &mut self,
        vms: &mut impl FilterVms,
        dir: Direction,
        from: usize,
        mut data: Vec<u8>,
        mut end_stream: bool,
    ) -> Flow {
        let (_, bty, tty) = dir.maps();
        let d = dir.index();
        let mut added_trailers: Option<(usize, HeaderMap)> = None;
        for p in from..self.filters.len() {
            let i = self.index(dir, p);
            if self.filters[i].status != Status::Active || self.filters[i].ctx.is_none() {
                continue;
            }
            if self.filters[i].at[d].stopped_all() {
                // Buffered for the filter, without a callback.
                return self.buffer_for(vms, i, dir, &data, end_stream);
            }
            let ctx = match self.enter(vms, i, dir) {
                Call::Done => return Flow::Done,
                Call::Skip => continue,
                Call::Value(ctx, _) => ctx,
            };
            // What a filter that continues passes on: its body, and trailers
            // it added in its last body callback.
            let passed_on = |vm: &mut Vm, ctx| {
                (
                    vm.take_body(ctx, bty).unwrap_or_default(),
                    if end_stream {
                        vm.headers(ctx, tty).cloned()
                    } else {
                        None
                    },
                )
            };
            // The chunk moves into the VM's body buffer (uncopied when
            // nothing is buffered) and comes back out when the filter
            // continues, or is skipped after failing. No other outcome of
            // the call reads `data` again.
            let chunk = std::mem::take(&mut data);
            self.filters[i].at[d].end |= end_stream;
            let step = self.call_then(
                vms,
                i,
                dir,
                ctx,
                |vm, ctx| vm.on_body_owned(ctx, dir, chunk, end_stream),
                |vm, ctx, status| {
                    (*status == FilterDataStatus::Continue).then(|| passed_on(vm, ctx))
                },
            );
            let (status, out, continued) = match step {
                Call::Done => return Flow::Done,
                Call::Skip => {
                    // Failed and skipped (`skip_on_failure`): the chunk goes
                    // on from the VM's buffer, where the callback found it.
                    data = vms
                        .with_vm(i, |vm| vm.take_body(ctx, bty))
                        .unwrap_or_default();
                    continue;
                }
                Call::Value((s, out), c) => (s, out, c),
            };
            if status == FilterDataStatus::Continue || continued {
                let (body, trailers) = match out {
                    Some(out) => out,
                    None => vms.with_vm(i, |vm| passed_on(vm, ctx)),
                };
                data = body;
                if let Some(t) = trailers {
                    // Added in this last body callback: the body no longer
                    // ends the direction; the trailers follow it.
                    end_stream = false;
                    added_trailers = Some((p, t));
                }
                let at = &mut self.filters[i].at[d];
                at.data_stopped = false;
                if at.hdr != Hdr::Passed {
                    // Continue from a body callback while the headers wait
                    // here: the headers go on first, then this data.
                    at.hdr = Hdr::Passed;
                    let (hty, _, _) = dir.maps();
                    let headers = self.headers_of(vms, i, hty);
                    if self.run_headers(vms, dir, p + 1, headers, false) == Flow::Done {
                        return Flow::Done;
                    }
                }
                continue;
            }
            // A stop on data.
            let at = &mut self.filters[i].at[d];
            at.data_stopped = true;
            at.data_buffer_limit = status == FilterDataStatus::StopIterationAndBuffer;
            if status == FilterDataStatus::StopIterationNoBuffer {
                return Flow::Go;
            }
            let buffer = at.data_buffer_limit;
            return self.check_limit(vms, i, dir, buffer);
        }
        self.emit_data(dir, data, end_stream);
        if let Some((p, trailers)) = added_trailers {
            return self.run_trailers(vms, dir, p + 1, trailers);
        }
        Flow::Go
    }

    /// Data for a filter that stopped all iteration: into its buffer.
    fn buffer_for(
        &mut self,
        vms: &mut impl FilterVms,
        i: usize,
        dir: Direction,
        data: &[u8],
        end_stream: bool,
    ) -> Flow {
        let (_, bty, _) = dir.maps();
        let d = dir.index();
        let Some(ctx) = self.filters[i].ctx else {
            return Flow::Go;
        };
        let r = vms.with_vm(i, |vm| vm.append_body(ctx, bty, data));
        if let Err(e) = r {
            log::debug!(target: "vessel::stream", "buffering for filter {i}: {e}");
            if matches!(e, VmError::StreamLimit { .. }) {
                self.local_reply(vms, None, too_large(dir));
                return Flow::Done;
            }
        }
        let at = &mut self.filters[i].at[d];
        at.pending_data = true;
        at.end |= end_stream;
        let buffer = matches!(at.hdr, Hdr::Stopped { buffer: true, .. });
        self.check_limit(vms, i, dir, buffer)
    }

    /// Over the limit: 413/500 for a buffering stop, flow control for a
    /// watermark one.
    fn check_limit(
        &mut self,
        vms: &mut impl FilterVms,
        i: usize,
        dir: Direction,
        buffer: bool,
    ) -> Flow {
        let (_, bty, _) = dir.maps();
        let Some(ctx) = self.filters[i].ctx else {
            return Flow::Go;
        };
        let buffered = vms.with_vm(i, |vm| vm.body(ctx, bty).map_or(0, <[u8]>::len));
        if buffered <= self.limit {
            return Flow::Go;
        }
        if buffer {
            self.local_reply(vms, None, too_large(dir));
            return Flow::Done;
        }
        self.sides[dir.index()].read_paused = true;
        Flow::Go
    }

    /// Trailers through the chain from position `from`.
    fn run_trailers(
        &mut self,
        vms: &mut impl FilterVms,
        dir: Direction,
        from: usize,
        mut trailers: HeaderMap,
    ) -> Flow {
        let (_, bty, tty) = dir.maps();
        let d = dir.index();
        for p in from..self.filters.len() {
            let i = self.index(dir, p);
            if self.filters[i].status != Status::Active || self.filters[i].ctx.is_none() {
                continue;
            }
            if self.filters[i].at[d].stopped_all() {
                let at = &mut self.filters[i].at[d];
                at.trailers = Some(trailers);
                at.end = true;
                return Flow::Go;
            }
            let ctx = match self.enter(vms, i, dir) {
                Call::Done => return Flow::Done,
                Call::Skip => continue,
                Call::Value(ctx, _) => ctx,
            };
            let input = trailers.clone();
            if self.filters[i].skip_on_failure {
                self.trailers_in_call = Some(trailers.clone());
            }
            let step = self.call(vms, i, dir, ctx, |vm, ctx| match dir {
                Direction::Request => vm.on_request_trailers(ctx, input),
                Direction::Response => vm.on_response_trailers(ctx, input),
            });
            self.trailers_in_call = None;
            let (status, continued) = match step {
                Call::Done => return Flow::Done,
                Call::Skip => continue,
                Call::Value(s, c) => (s, c),
            };
            self.filters[i].at[d].end = true;
            if status != FilterTrailersStatus::Continue && !continued {
                let at = &mut self.filters[i].at[d];
                at.trailers_stopped = true;
                return Flow::Go;
            }
            // Continue: what the filter held goes on first.
            let ctx = self.filters[i].ctx;
            let (held, out) = vms.with_vm(i, |vm| match ctx {
                Some(ctx) => (vm.take_body(ctx, bty), vm.headers(ctx, tty).cloned()),
                None => (None, None),
            });
            let at = &mut self.filters[i].at[d];
            let headers_waiting = at.hdr != Hdr::Passed;
            at.hdr = Hdr::Passed;
            at.data_stopped = false;
            if headers_waiting {
                let (hty, _, _) = dir.maps();
                let headers = self.headers_of(vms, i, hty);
                if self.run_headers(vms, dir, p + 1, headers, false) == Flow::Done {
                    return Flow::Done;
                }
            }
            if let Some(held) = held.filter(|b| !b.is_empty())
                && self.run_data(vms, dir, p + 1, held, false) == Flow::Done
            {
                return Flow::Done;
            }
            if let Some(t) = out {
                trailers = t;
            }
        }
        self.emit_trailers(dir, trailers);
        Flow::Go
    }

    /// Filter `i` continues direction `dir` (Envoy's `commonContinue`).
    fn resume(&mut self, vms: &mut impl FilterVms, i: usize, dir: Direction) -> Flow {
        let d = dir.index();
        let (hty, bty, _) = dir.maps();
        let at = &self.filters[i].at[d];
        if !at.holding() {
            return Flow::Go;
        }
        let p = self.position(dir, i);
        let stopped_all = at.stopped_all();
        let headers_waiting = matches!(at.hdr, Hdr::Stopped { .. });
        let end = at.end;
        let ctx = self.filters[i].ctx;
        self.sides[d].read_paused = false;
        let at = &mut self.filters[i].at[d];
        let pending_data = std::mem::take(&mut at.pending_data);
        let trailers = at.trailers.take();
        let trailers_stopped = std::mem::take(&mut at.trailers_stopped);
        at.data_stopped = false;
        at.hdr = Hdr::Passed;
        if headers_waiting {
            let headers = self.headers_of(vms, i, hty);
            let has_body = vms.with_vm(i, |vm| {
                ctx.and_then(|c| vm.body(c, bty))
                    .is_some_and(|b| !b.is_empty())
            });
            let headers_end = end && !has_body && !pending_data && trailers.is_none();
            if self.run_headers(vms, dir, p + 1, headers, headers_end) == Flow::Done {
                return Flow::Done;
            }
            if headers_end {
                return Flow::Go;
            }
        }
        let data_end = end && trailers.is_none() && !trailers_stopped;
        if stopped_all && (pending_data || data_end) {
            // The filter that stopped everything gets its buffered body now.
            if self.run_data(vms, dir, p, Vec::new(), data_end) == Flow::Done {
                return Flow::Done;
            }
            // It may have stopped again.
            if self.filters[i].at[d].holding() {
                if let Some(t) = trailers {
                    self.filters[i].at[d].trailers = Some(t);
                }
                return Flow::Go;
            }
        } else {
            let held = vms.with_vm(i, |vm| ctx.and_then(|c| vm.take_body(c, bty)));
            let held = held.unwrap_or_default();
            if (!held.is_empty() || (data_end && !headers_waiting))
                && self.run_data(vms, dir, p + 1, held, data_end) == Flow::Done
            {
                return Flow::Done;
            }
        }
        if let Some(t) = trailers {
            let from = if stopped_all { p } else { p + 1 };
            return self.run_trailers(vms, dir, from, t);
        }
        if trailers_stopped {
            let (_, _, tty) = dir.maps();
            let t = vms.with_vm(i, |vm| ctx.and_then(|c| vm.headers(c, tty).cloned()));
            return self.run_trailers(vms, dir, p + 1, t.unwrap_or_default());
        }
        Flow::Go
    }

    fn apply_signal(&mut self, vms: &mut impl FilterVms, i: usize, signal: StreamSignal) {
        match signal {
            StreamSignal::Continue(dir) => {
                if self.filters[i].status == Status::Active {
                    self.resume(vms, i, dir);
                }
            }
            StreamSignal::Close => self.reset(ResetReason::FilterClosed),
            StreamSignal::LocalReply(r) => {
                if self.filters[i].status == Status::Active {
                    self.local_reply(vms, Some(i), r);
                }
            }
            StreamSignal::VmFailed => {
                if self.filters[i].status != Status::Active || self.filters[i].ctx.is_none() {
                    return;
                }
                let waiting: Vec<Direction> = [Direction::Request, Direction::Response]
                    .into_iter()
                    .filter(|d| self.filters[i].at[d.index()].holding())
                    .collect();
                if waiting.is_empty() {
                    // Its next callback fails, and the stream with it, as
                    // in Envoy.
                    return;
                }
                if self.filters[i].skip_on_failure {
                    self.skipped_failures.push(i);
                }
                if vms.policy(i).passes_through() || self.filters[i].skip_on_failure {
                    // As if the filter were absent: what it held goes on.
                    for dir in waiting {
                        self.bypass_resume(vms, i, dir);
                        if self.done {
                            return;
                        }
                    }
                    self.filters[i].status = Status::Bypassed;
                } else {
                    self.fail::<()>(vms, i, waiting[0]);
                }
            }
        }
    }

    /// FAIL_OPEN for a filter that held a direction when its VM failed: the
    /// headers (as the filter left them), the body and the trailers it
    /// held go on without calling it again.
    fn bypass_resume(&mut self, vms: &mut impl FilterVms, i: usize, dir: Direction) {
        let d = dir.index();
        let (hty, bty, tty) = dir.maps();
        let ctx = self.filters[i].ctx;
        let p = self.position(dir, i);
        let at = &mut self.filters[i].at[d];
        let headers_waiting = matches!(at.hdr, Hdr::Stopped { .. });
        let end = at.end;
        let trailers = at.trailers.take();
        let trailers_stopped = std::mem::take(&mut at.trailers_stopped);
        at.hdr = Hdr::Passed;
        at.data_stopped = false;
        at.pending_data = false;
        self.filters[i].status = Status::Bypassed;
        // Its watermark no longer holds the body: the embedder reads on, as
        // when a filter continues.
        self.sides[d].read_paused = false;
        let (headers, body, own_trailers) = vms.with_vm(i, |vm| match ctx {
            Some(c) => (
                vm.headers(c, hty).cloned().unwrap_or_default(),
                vm.take_body(c, bty).unwrap_or_default(),
                vm.headers(c, tty).cloned(),
            ),
            None => Default::default(),
        });
        let trailers = trailers.or(if trailers_stopped { own_trailers } else { None });
        if headers_waiting {
            let headers_end = end && body.is_empty() && trailers.is_none();
            if self.run_headers(vms, dir, p + 1, headers, headers_end) == Flow::Done || headers_end
            {
                return;
            }
        }
        let data_end = end && trailers.is_none();
        if (!body.is_empty() || data_end)
            && self.run_data(vms, dir, p + 1, body, data_end) == Flow::Done
        {
            return;
        }
        if let Some(t) = trailers {
            self.run_trailers(vms, dir, p + 1, t);
        }
    }

    #[inline]
    fn flush_deferred(&mut self, vms: &mut impl FilterVms) {
        if !self.deferred.is_empty() {
            self.flush_deferred_signals(vms);
        }
    }

    /// [`flush_deferred`](Self::flush_deferred) with signals waiting.
    #[inline(never)]
    fn flush_deferred_signals(&mut self, vms: &mut impl FilterVms) {
        let mut rounds = 0;
        while !self.deferred.is_empty() && !self.done && rounds < 64 {
            rounds += 1;
            for (i, s) in std::mem::take(&mut self.deferred) {
                self.apply_signal(vms, i, s);
            }
        }
        self.deferred.clear();
    }
}

/// Takes the signals for `ctx` out of the VM's effect queue, leaving the
/// rest for the embedder.
/// `on_log` of filter `i`'s context (none on a failed VM); what it asked
/// for the stream is dropped, as the stream is over.
fn log_context(vm: &mut Vm, i: usize, ctx: ContextId) {
    let r = if vm.is_failed() {
        Ok(())
    } else {
        vm.on_log(ctx)
    };
    take_own(vm, ctx);
    if let Err(e) = r {
        log::debug!(target: "vessel::stream", "on_log of filter {i}: {e}");
    }
}

/// `(filter index, context)` of each filter of `filters` that has a context.
fn live_contexts(filters: &[Filter]) -> impl Iterator<Item = (usize, ContextId)> + '_ {
    filters
        .iter()
        .enumerate()
        .filter_map(|(i, f)| Some((i, f.ctx?)))
}

/// Sets property `dotted` to `value` on each `(filter, context)` of
/// `contexts`, and in `properties`, which the contexts created later start
/// from: the path and the value are encoded once, and each context gets a
/// copy of the bytes. A context the VM no longer has is logged at debug
/// level under `log_target`. Shared by HTTP streams and TCP connections.
pub(crate) fn set_property_on(
    vms: &mut impl FilterVms,
    contexts: impl Iterator<Item = (usize, ContextId)>,
    properties: &mut PropertyMap,
    dotted: &str,
    value: PropertyValue,
    log_target: &str,
) {
    let path = vessel_abi::path_from_dotted(dotted);
    let value = value.into_encoded();
    for (i, ctx) in contexts {
        let (path, value) = (path.clone(), value.clone());
        if let Err(e) = vms.with_vm(i, |vm| vm.set_stream_property_raw(ctx, path, value)) {
            log::debug!(target: log_target, "property {dotted}: {e}");
        }
    }
    properties.insert_raw(path, value);
}

#[inline]
pub(crate) fn take_own(vm: &mut Vm, ctx: ContextId) -> Vec<StreamSignal> {
    if vm.effects_mut().is_empty() {
        return Vec::new();
    }
    take_own_from(vm, ctx)
}

/// [`take_own`] when the VM queued effects.
#[inline(never)]
fn take_own_from(vm: &mut Vm, ctx: ContextId) -> Vec<StreamSignal> {
    let effects = vm.effects_mut();
    let mut own = Vec::new();
    let mut rest = Vec::with_capacity(effects.len());
    for e in effects.drain(..) {
        match &e {
            Effect::ContinueStream { context, .. }
            | Effect::CloseStream { context, .. }
            | Effect::LocalResponse { context, .. }
                if *context == ctx =>
            {
                match StreamSignal::from_effect(e) {
                    Ok((_, s)) => own.push(s),
                    Err(e) => rest.push(e),
                }
            }
            _ => rest.push(e),
        }
    }
    *effects = rest;
    vm.recount_effects();
    own
}

/// Envoy's fail-closed answer for a failed VM (`wasm_fail_stream`).
pub fn fail_stream() -> LocalResponse {
    LocalResponse {
        status: 503,
        details: "wasm_fail_stream".into(),
        body: Vec::new(),
        headers: HeaderMap::new(),
        grpc_status: None,
    }
}

/// Envoy's answer when a filter buffers past the limit: 413 for a request,
/// 500 for a response.
pub fn too_large(dir: Direction) -> LocalResponse {
    let (status, body, details) = match dir {
        Direction::Request => (413, "Payload Too Large", "request_payload_too_large"),
        Direction::Response => (500, "Internal Server Error", "response_payload_too_large"),
    };
    LocalResponse {
        status,
        details: details.into(),
        body: body.as_bytes().to_vec(),
        headers: HeaderMap::new(),
        grpc_status: None,
    }
}
