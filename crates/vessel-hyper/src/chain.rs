//! [`PooledChain`] and [`PooledStream`]: one stream's filters over
//! [`FilterPool`]s, for any tokio-based proxy.
//!
//! The filter manager is [`vessel_host::HttpStream`]: it owns every stream
//! rule of Envoy's (iteration, stops and buffering, local replies, the
//! failure policies, `on_log`/`on_done`/`on_delete`). It is sans-IO and
//! reaches the VMs through [`FilterVms`]; [`PooledChain`] is that trait
//! over pools. When a stream starts it pins one VM of each pool (under
//! `FAIL_RELOAD`, a failed VM is replaced first if the backoff allows);
//! each callback takes that VM's lock for the callback only, and the
//! effects the guest queued are carried out right after (callouts and
//! timers on tokio). What a VM asks for the stream outside the stream's own
//! callbacks (a callout response that resumes it, a failure in a root
//! callback) reaches the stream's task as a signal:
//! [`PooledChain::next_signal`].
//!
//! [`PooledStream`] is the two together, with the stream's end in its
//! `Drop`: a proxy feeds it the request and response, carries out its
//! [`Action`]s, and awaits
//! [`PooledStream::next_signal`] whenever it has nothing else to wait for
//! (or alongside its sockets, in a `select!`). `vessel-hyper`'s own
//! [`VesselService`](crate::VesselService) is such a pump.
//!
//! ```no_run
//! # async fn demo(pools: Vec<std::sync::Arc<vessel_hyper::FilterPool>>) {
//! use vessel_host::{Action, Direction, HeaderMap, StreamConfig};
//! use vessel_hyper::PooledStream;
//!
//! let mut stream = PooledStream::new(&pools, StreamConfig::new(pools.len()));
//! let headers = HeaderMap::from_pairs([(":method", "GET"), (":path", "/")]);
//! stream.request_headers(headers, true);
//! loop {
//!     while let Some(action) = stream.poll_action() {
//!         match action {
//!             Action::UpstreamHeaders { .. } => { /* send the request upstream */ }
//!             Action::DownstreamHeaders { .. } => { /* answer the client */ }
//!             _ => { /* ... */ }
//!         }
//!     }
//!     if stream.is_done() || !stream.is_held(Direction::Request) {
//!         break;
//!     }
//!     // A filter holds the request (waiting for a callout, say).
//!     stream.next_signal().await;
//! }
//! // Dropping `stream` runs on_log, on_done and on_delete.
//! # }
//! ```

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use smallvec::SmallVec;
use vessel_host::{
    Action, ContextId, Direction, FailurePolicy, FilterVms, HeaderMap, HttpStream, LocalResponse,
    PropertyMap, PropertySource, PropertyValue, StreamConfig, StreamSignal, Vm, VmError,
};

use crate::pool::{FilterPool, VmCell, dispatch};
use crate::signal::{self, SignalRx, SignalTx};

/// One filter of a chain: its pool and the VM the stream is pinned to.
struct Pinned {
    pool: Arc<FilterPool>,
    cell: Arc<VmCell>,
}

/// The VMs of one stream's filters, one per [`FilterPool`], pinned for the
/// stream's life: [`FilterVms`] over pools. See the [module docs](self).
pub struct PooledChain {
    /// Inline for chains of up to two filters.
    filters: SmallVec<[Pinned; 2]>,
    tx: SignalTx,
    rx: SignalRx,
}

impl std::fmt::Debug for PooledChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledChain")
            .field("filters", &self.filters.len())
            .finish_non_exhaustive()
    }
}

impl PooledChain {
    /// Pins one VM of each pool, in chain order (round-robin in each pool;
    /// under `FAIL_RELOAD`, a failed VM is replaced first if its backoff
    /// allows).
    pub fn new(pools: &[Arc<FilterPool>]) -> Self {
        let (tx, rx) = signal::channel();
        Self {
            filters: pools
                .iter()
                .map(|pool| Pinned {
                    cell: pool.pick(),
                    pool: pool.clone(),
                })
                .collect(),
            tx,
            rx,
        }
    }

    /// Number of filters.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// True if the chain has no filters.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Filter `i`'s pool.
    pub fn pool(&self, i: usize) -> Option<&Arc<FilterPool>> {
        self.filters.get(i).map(|f| &f.pool)
    }

    /// The next signal for this stream (filter index and signal), waiting
    /// for one. Hand it to [`HttpStream::signal`]. Cancel-safe: a signal
    /// is taken only when the future completes.
    pub async fn next_signal(&mut self) -> (usize, StreamSignal) {
        poll_fn(|cx| self.poll_signal(cx)).await
    }

    /// [`next_signal`](Self::next_signal) as a poll (for hand-written
    /// futures and bodies).
    pub fn poll_signal(&mut self, cx: &mut Context<'_>) -> Poll<(usize, StreamSignal)> {
        self.rx.poll_recv(cx)
    }

    /// A signal if one is waiting.
    pub fn try_signal(&mut self) -> Option<(usize, StreamSignal)> {
        self.rx.try_recv()
    }
}

impl FilterVms for PooledChain {
    fn with_vm<R>(&mut self, i: usize, f: impl FnOnce(&mut Vm) -> R) -> R {
        let cell = &self.filters[i].cell;
        let mut shared = cell.lock();
        let r = f(&mut shared.vm);
        dispatch(cell, &mut shared);
        r
    }

    fn policy(&self, i: usize) -> FailurePolicy {
        self.filters[i].pool.policy()
    }

    fn create_context(&mut self, i: usize, properties: PropertyMap) -> Result<ContextId, VmError> {
        self.create_context_then(i, properties, |_, _| ())
            .map(|(ctx, ())| ctx)
    }

    fn create_context_then<R>(
        &mut self,
        i: usize,
        properties: PropertyMap,
        then: impl FnOnce(&mut Vm, ContextId) -> R,
    ) -> Result<(ContextId, R), VmError> {
        let cell = &self.filters[i].cell;
        let mut shared = cell.lock();
        let created = shared.vm.create_http_context_with(properties);
        let r = created.map(|ctx| {
            // Registered under the lock, so no signal for it is lost;
            // `then` takes what is the stream's own before the rest of
            // what `on_context_create` queued is carried out.
            shared.streams.insert(ctx, (self.tx.clone(), i));
            (ctx, then(&mut shared.vm, ctx))
        });
        dispatch(cell, &mut shared);
        r
    }

    fn create_tcp_context(
        &mut self,
        i: usize,
        properties: PropertyMap,
    ) -> Result<ContextId, VmError> {
        let cell = &self.filters[i].cell;
        let mut shared = cell.lock();
        let created = shared.vm.create_tcp_context_with(properties);
        if let Ok(ctx) = created {
            // Registered under the lock, so no signal for it is lost.
            shared.streams.insert(ctx, (self.tx.clone(), i));
        }
        dispatch(cell, &mut shared);
        created
    }

    fn context_finished(&mut self, i: usize, context: ContextId, vm_ok: bool) {
        let cell = &self.filters[i].cell;
        let mut shared = cell.lock();
        shared.streams.remove(&context);
        dispatch(cell, &mut shared);
        drop(shared);
        cell.stream_finished(vm_ok);
    }
}

/// One stream through a chain of pooled filters: an [`HttpStream`] and its
/// [`PooledChain`]. Dropping it ends the stream ([`HttpStream::finish`]:
/// `on_log`, `on_done` and `on_delete` for every filter), so a stream whose
/// client went away ends too. See the [module docs](self).
#[derive(Debug)]
pub struct PooledStream {
    stream: HttpStream,
    chain: PooledChain,
}

impl PooledStream {
    /// A stream through one VM of each of `pools` (`config.filters` is
    /// taken from `pools`).
    pub fn new(pools: &[Arc<FilterPool>], mut config: StreamConfig) -> Self {
        config.filters = pools.len();
        if pools.iter().any(|p| p.skips_on_failure()) {
            config.skip_on_failure = pools.iter().map(|p| p.skips_on_failure()).collect();
        }
        Self {
            stream: HttpStream::new(config),
            chain: PooledChain::new(pools),
        }
    }

    /// The plugin names of the filters the stream skipped because they
    /// failed ([`FilterPoolBuilder::skip_on_failure`](crate::pool::FilterPoolBuilder::skip_on_failure)).
    pub fn skipped_failures(&self) -> Vec<String> {
        self.stream
            .skipped_failures()
            .iter()
            .filter_map(|i| self.chain.filters.get(*i))
            .map(|p| p.pool.plugin().config().name.clone())
            .collect()
    }

    /// The stream's state (`is_done`, `is_held`, `read_paused`, ...).
    pub fn stream(&self) -> &HttpStream {
        &self.stream
    }

    /// The stream and its chain, for the events this type does not wrap.
    pub fn parts(&mut self) -> (&mut HttpStream, &mut PooledChain) {
        (&mut self.stream, &mut self.chain)
    }

    /// The next action to carry out ([`HttpStream::poll_action`]).
    pub fn poll_action(&mut self) -> Option<Action> {
        self.stream.poll_action()
    }

    /// True once the stream needs no more events ([`HttpStream::is_done`]).
    pub fn is_done(&self) -> bool {
        self.stream.is_done()
    }

    /// True if a filter holds the direction ([`HttpStream::is_held`]).
    pub fn is_held(&self, dir: Direction) -> bool {
        self.stream.is_held(dir)
    }

    /// True if the direction's body should not be read for now
    /// ([`HttpStream::read_paused`]).
    pub fn read_paused(&self, dir: Direction) -> bool {
        self.stream.read_paused(dir)
    }

    /// The client's request headers.
    pub fn request_headers(&mut self, headers: HeaderMap, end_stream: bool) {
        self.stream
            .request_headers(&mut self.chain, headers, end_stream);
    }

    /// A chunk of the request body.
    pub fn request_data(&mut self, data: Vec<u8>, end_stream: bool) {
        self.stream.request_data(&mut self.chain, data, end_stream);
    }

    /// The request trailers.
    pub fn request_trailers(&mut self, trailers: HeaderMap) {
        self.stream.request_trailers(&mut self.chain, trailers);
    }

    /// The upstream's response headers.
    pub fn response_headers(&mut self, headers: HeaderMap, end_stream: bool) {
        self.stream
            .response_headers(&mut self.chain, headers, end_stream);
    }

    /// A chunk of the response body.
    pub fn response_data(&mut self, data: Vec<u8>, end_stream: bool) {
        self.stream.response_data(&mut self.chain, data, end_stream);
    }

    /// The response trailers.
    pub fn response_trailers(&mut self, trailers: HeaderMap) {
        self.stream.response_trailers(&mut self.chain, trailers);
    }

    /// A reply that does not come from a filter (the router's 503, say).
    pub fn send_local_reply(&mut self, reply: LocalResponse) {
        self.stream.send_local_reply(&mut self.chain, reply);
    }

    /// Sets a stream property on every filter context (`upstream.*`...).
    pub fn set_property(&mut self, dotted: &str, value: impl Into<PropertyValue>) {
        self.stream.set_property(&mut self.chain, dotted, value);
    }

    /// Adds stream properties computed when a guest reads one
    /// ([`HttpStream::add_property_source`]).
    pub fn add_property_source(&mut self, source: PropertySource) {
        self.stream.add_property_source(&mut self.chain, source);
    }

    /// The client went away: nothing more is sent.
    pub fn downstream_reset(&mut self) {
        self.stream.downstream_reset();
    }

    /// Waits for the next signal from a filter's VM and applies it (it may
    /// queue actions). Cancel-safe.
    pub async fn next_signal(&mut self) {
        let (i, signal) = self.chain.next_signal().await;
        self.stream.signal(&mut self.chain, i, signal);
    }

    /// Applies a signal if one is waiting; true if it did.
    pub fn try_signal(&mut self) -> bool {
        match self.chain.try_signal() {
            Some((i, signal)) => {
                self.stream.signal(&mut self.chain, i, signal);
                true
            }
            None => false,
        }
    }

    /// [`next_signal`](Self::next_signal) as a poll: `Ready` once a signal
    /// was applied.
    pub fn poll_signal(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.chain.poll_signal(cx).map(|(i, signal)| {
            self.stream.signal(&mut self.chain, i, signal);
        })
    }

    /// Ends the stream now (see [`HttpStream::finish`]); `Drop` does it
    /// otherwise.
    pub fn finish(&mut self) {
        self.stream.finish(&mut self.chain);
    }
}

impl Drop for PooledStream {
    fn drop(&mut self) {
        self.stream.finish(&mut self.chain);
    }
}
