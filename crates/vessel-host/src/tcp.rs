//! [`TcpStream`]: the network filter manager. One TCP connection through an
//! ordered chain of network filters, each a context in its own [`Vm`](crate::Vm), with
//! Envoy's connection rules. Sans-IO like [`HttpStream`](crate::HttpStream):
//! events come in (the connection opened, bytes and half-closes from each
//! side, a side went away, signals from the VMs), and [`TcpAction`]s come
//! out (send these bytes upstream or to the client, close a side). It runs
//! over the same [`FilterVms`] as the HTTP filter manager.
//!
//! # Envoy's rules, as this type applies them
//!
//! (`source/common/network/filter_manager_impl.cc`,
//! `source/extensions/common/wasm/context.cc`, proxy-wasm-cpp-host
//! `src/context.cc`, `source/extensions/filters/network/wasm/wasm_filter.h`.)
//!
//! * Read filters (client bytes, `proxy_on_downstream_data`) run in chain
//!   order; write filters (upstream bytes, `proxy_on_upstream_data`) in
//!   reverse chain order (Envoy's `addWriteFilter` puts each new filter
//!   first).
//! * A filter's context is created, and `proxy_on_new_connection` runs,
//!   when the read iteration first reaches it: at
//!   [`new_connection`](TcpStream::new_connection) for every filter up to
//!   the first that returns `StopIteration`, the rest later, when the
//!   iteration goes past it. A filter without a context gets no callbacks.
//! * `StopIteration` from `proxy_on_downstream_data` leaves the bytes in the
//!   connection's read buffer (here: the filter's `DOWNSTREAM_DATA`
//!   buffer, readable and writable by the guest while it is paused). The
//!   next bytes from the client are appended and the iteration starts again
//!   at the first filter with the whole buffer (`data_size` = its length).
//!   `proxy_continue_stream(DOWNSTREAM)`, run after the callback as Envoy
//!   defers it, resumes at the next filter with the buffer as the filter
//!   left it. Over the buffer limit, [`read_paused`](TcpStream::read_paused)
//!   asks the embedder to stop reading the client (Envoy's read disable);
//!   reading resumes when the bytes move on.
//! * The write side has no continue (`proxy_continue_stream(UPSTREAM)` is
//!   UNIMPLEMENTED in Envoy): bytes a write filter stops wait in its
//!   `UPSTREAM_DATA` buffer, and the next upstream bytes run through the
//!   write filters again with the whole buffer.
//! * End of stream is a flag on the data. Every write filter that sees the
//!   upstream's end gets `proxy_on_upstream_connection_close(UNKNOWN)`
//!   right after its data callback (Envoy synthesises it there).
//! * `proxy_close_stream(DOWNSTREAM or UPSTREAM)` closes the connection
//!   after the callback, flushing what was written
//!   ([`TcpAction::CloseDownstream`] then [`TcpAction::CloseUpstream`]);
//!   bytes in flight stop there.
//! * When the client connection closes, each filter with a context gets, in
//!   chain order, `proxy_on_downstream_connection_close(peer)` then
//!   `proxy_on_done`, `proxy_on_log`, `proxy_on_delete` (Envoy's
//!   `onCloseTCP`). It closes when a filter or a failure closes it (LOCAL),
//!   when both sides have sent their end (LOCAL if the upstream's end was
//!   the last, REMOTE if the client's was), when the embedder reports it
//!   closed ([`downstream_closed`](TcpStream::downstream_closed)) and when
//!   the upstream went away ([`upstream_closed`](TcpStream::upstream_closed):
//!   the proxy closes the client, LOCAL).
//! * Failures: the connection whose own callback fails is closed, under
//!   every policy (what Envoy 1.40 does, as for an HTTP stream's
//!   `wasm_fail_stream`; `spec-tests/scenarios/tcp_fail_open.yaml`). A
//!   filter whose VM had failed before (in another connection, or at its
//!   context's creation) is passed by under `FAIL_OPEN` (the bytes go on
//!   untouched) and closes the connection under `FAIL_CLOSED` and
//!   `FAIL_RELOAD` (cpp-host's `CHECK_FAIL_NET`, Envoy's fail-closed empty
//!   context). Bytes
//!   past [`Limits::max_body_bytes`](crate::Limits::max_body_bytes) in one
//!   filter's buffer close the connection (the VM is fine).
//!
//! # Signals
//!
//! What a guest asks for during this connection's callbacks the stream
//! takes from the VM at once. What it asks for from another callback (a
//! callout answer that resumes the connection, say) the embedder routes
//! with [`StreamSignal::from_effect`] and delivers with
//! [`TcpStream::signal`]: `Continue(Direction::Request)` is
//! `continue_stream(DOWNSTREAM)`, `Close` closes the connection.

use std::collections::VecDeque;

use vessel_abi::{BufferType, FilterStatus, PeerType};

use crate::error::VmError;
use crate::ids::ContextId;
use crate::properties::{FilterState, PropertyMap, PropertyValue};
use crate::stream::{Direction, FilterVms, StreamSignal, set_property_on, take_own};

/// What the embedder must do, in order ([`TcpStream::poll_action`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TcpAction {
    /// Write these bytes to the upstream connection.
    UpstreamData {
        /// The bytes (possibly empty when only the end is sent).
        data: Vec<u8>,
        /// The client's end: half-close the upstream connection's write
        /// side after the bytes.
        end_stream: bool,
    },
    /// Write these bytes to the client.
    DownstreamData {
        /// The bytes (possibly empty when only the end is sent).
        data: Vec<u8>,
        /// The upstream's end: half-close the client connection's write
        /// side after the bytes.
        end_stream: bool,
    },
    /// Close the client connection once what was written to it is flushed
    /// (Envoy's `FlushWrite`).
    CloseDownstream,
    /// Close the upstream connection once what was written to it is
    /// flushed.
    CloseUpstream,
}

/// Why the connection closed ([`TcpStream::close_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// A filter called `proxy_close_stream`.
    FilterClosed,
    /// A filter's VM failed under `FAIL_CLOSED` or `FAIL_RELOAD`.
    FilterFailed,
    /// A filter would hold more than `Limits::max_body_bytes`.
    BufferLimit,
    /// Both sides sent their end.
    Ended,
    /// The embedder reported the client connection closed.
    DownstreamClosed,
    /// The embedder reported the upstream connection closed.
    UpstreamClosed,
    /// [`TcpStream::finish`] ended a connection that was still open.
    Aborted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Active,
    /// FAIL_OPEN after a failure: passed by from then on.
    Bypassed,
}

#[derive(Debug)]
struct Filter {
    ctx: Option<ContextId>,
    status: Status,
    /// The read iteration reached it (context created, on_new_connection
    /// ran, or its creation failed).
    initialized: bool,
}

/// One side's bytes on their way through the chain.
#[derive(Debug, Default)]
struct Side {
    /// The filter whose data buffer holds the side's paused bytes.
    holder: Option<usize>,
    /// Paused bytes no filter holds (the read iteration stopped in
    /// `on_new_connection`).
    pending: Vec<u8>,
    /// How many bytes are paused (for flow control).
    held: usize,
    /// The side's end arrived.
    end: bool,
    /// The side's end left the chain.
    end_sent: bool,
}

/// The outcome of one data callback.
enum Step {
    /// Continue with these bytes.
    Go(Vec<u8>),
    /// The bytes wait at this filter.
    Stop,
    /// The connection closed.
    Closed,
}

/// One TCP connection through a chain of network filters. See the module
/// docs.
#[derive(Debug)]
pub struct TcpStream {
    filters: Vec<Filter>,
    /// Read side (client to upstream) and write side (upstream to client).
    sides: [Side; 2],
    actions: VecDeque<TcpAction>,
    limit: usize,
    properties: PropertyMap,
    started: bool,
    closed: Option<CloseReason>,
    finished: bool,
    /// Signals that arrived while a callback ran, applied after it.
    deferred: Vec<(usize, StreamSignal)>,
}

const READ: usize = 0;
const WRITE: usize = 1;

impl TcpStream {
    /// A connection through `filters` filters, pausing reads past
    /// `buffer_limit` held bytes per side (Envoy's
    /// `per_connection_buffer_limit_bytes`;
    /// [`DEFAULT_BUFFER_LIMIT`](crate::DEFAULT_BUFFER_LIMIT) is its default).
    pub fn new(filters: usize, buffer_limit: usize) -> Self {
        Self {
            filters: (0..filters)
                .map(|_| Filter {
                    ctx: None,
                    status: Status::Active,
                    initialized: false,
                })
                .collect(),
            sides: Default::default(),
            actions: VecDeque::new(),
            limit: buffer_limit,
            properties: PropertyMap::new(),
            started: false,
            closed: None,
            finished: false,
            deferred: Vec::new(),
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

    /// The next thing to do, oldest first.
    pub fn poll_action(&mut self) -> Option<TcpAction> {
        self.actions.pop_front()
    }

    /// True if actions are waiting.
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Filter `i`'s context, once created (and until the connection ended).
    pub fn context(&self, i: usize) -> Option<ContextId> {
        self.filters.get(i).and_then(|f| f.ctx)
    }

    /// True once the connection closed: it takes no more events; the
    /// filters' contexts have ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Why the connection closed, once it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed
    }

    /// True if the embedder should stop reading the client for now: the
    /// bytes the filters hold on the read side are over the buffer limit
    /// (Envoy's read disable). Reading resumes when they move on.
    pub fn read_paused(&self) -> bool {
        self.sides[READ].held > self.limit
    }

    /// True if the embedder should stop reading the upstream for now (the
    /// write side's held bytes are over the buffer limit).
    pub fn upstream_read_paused(&self) -> bool {
        self.sides[WRITE].held > self.limit
    }

    /// True if a filter holds client bytes (the connection waits for a
    /// signal or for more bytes).
    pub fn is_read_held(&self) -> bool {
        self.sides[READ].holder.is_some() || !self.sides[READ].pending.is_empty()
    }

    /// The buffer limit.
    pub fn buffer_limit(&self) -> usize {
        self.limit
    }

    // ---- events ----------------------------------------------------------

    /// The connection opened: every filter's context is created with
    /// `properties` (the connection's `source.address`,
    /// `destination.address`, `connection.id`...; the stream adds its
    /// filter state for chains of more than one filter) and
    /// `proxy_on_new_connection` runs, in chain order, up to the first
    /// filter that stops. Runs once.
    pub fn new_connection(&mut self, vms: &mut impl FilterVms, properties: PropertyMap) {
        if self.started || self.closed.is_some() {
            return;
        }
        self.started = true;
        self.properties = properties;
        if self.filters.len() > 1 {
            self.properties.set_filter_state(FilterState::new());
        }
        self.run_read(vms, 0, Vec::new());
        self.flush_deferred(vms);
    }

    /// Bytes from the client (`end_stream`: the client half-closed), through
    /// the read filters in chain order, from the first, with whatever a
    /// filter held before them.
    pub fn downstream_data(&mut self, vms: &mut impl FilterVms, data: &[u8], end_stream: bool) {
        if self.closed.is_some() {
            return;
        }
        if !self.started {
            self.new_connection(vms, PropertyMap::new());
        }
        let side = &mut self.sides[READ];
        if side.end {
            return;
        }
        side.end = end_stream;
        let mut buf = self.take_held(vms, READ);
        buf.extend_from_slice(data);
        self.run_read(vms, 0, buf);
        self.flush_deferred(vms);
    }

    /// Bytes from the upstream (`end_stream`: the upstream half-closed),
    /// through the write filters in reverse chain order, with whatever a
    /// filter held before them.
    pub fn upstream_data(&mut self, vms: &mut impl FilterVms, data: &[u8], end_stream: bool) {
        if self.closed.is_some() || !self.started {
            return;
        }
        let side = &mut self.sides[WRITE];
        if side.end {
            return;
        }
        side.end = end_stream;
        let mut buf = self.take_held(vms, WRITE);
        buf.extend_from_slice(data);
        self.run_write(vms, buf);
        self.flush_deferred(vms);
    }

    /// The client connection closed (`peer`: who closed it; REMOTE for a
    /// client that went away). Each filter gets the close and its end;
    /// [`TcpAction::CloseUpstream`] follows.
    pub fn downstream_closed(&mut self, vms: &mut impl FilterVms, peer: PeerType) {
        if self.closed.is_some() {
            return;
        }
        self.actions.push_back(TcpAction::CloseUpstream);
        self.close_with(vms, CloseReason::DownstreamClosed, peer);
    }

    /// The upstream connection went away without its end (a reset, a
    /// failed connect; its half-close is `upstream_data(.., true)`). As
    /// Envoy's tcp_proxy, the proxy closes the client connection after
    /// flushing ([`TcpAction::CloseDownstream`]), so the filters get the
    /// downstream close with LOCAL and their end. `peer` is not given to
    /// the filters: Envoy reports the upstream side to network filters
    /// only as `proxy_on_upstream_connection_close(UNKNOWN)` after the
    /// upstream's end.
    pub fn upstream_closed(&mut self, vms: &mut impl FilterVms, peer: PeerType) {
        let _ = peer;
        if self.closed.is_some() {
            return;
        }
        self.actions.push_back(TcpAction::CloseDownstream);
        self.close_with(vms, CloseReason::UpstreamClosed, PeerType::Local);
    }

    /// A signal from filter `i`'s VM (routed by the embedder):
    /// `Continue(Direction::Request)` resumes reading at the next filter,
    /// `Close` closes the connection, `VmFailed` applies the failure
    /// policy to the bytes the filter holds. Local replies and
    /// `Continue(Direction::Response)` do nothing on a connection.
    pub fn signal(&mut self, vms: &mut impl FilterVms, i: usize, signal: StreamSignal) {
        if self.closed.is_some() || i >= self.filters.len() {
            return;
        }
        self.apply_signal(vms, i, signal);
        self.flush_deferred(vms);
    }

    /// Sets a connection property on every filter context, and on the
    /// contexts created later.
    pub fn set_property(
        &mut self,
        vms: &mut impl FilterVms,
        dotted: &str,
        value: impl Into<PropertyValue>,
    ) {
        let contexts = self.filters.iter().enumerate();
        let contexts = contexts.filter_map(|(i, f)| Some((i, f.ctx?)));
        set_property_on(
            vms,
            contexts,
            &mut self.properties,
            dotted,
            value.into(),
            "vessel::tcp",
        );
    }

    /// Ends the connection: if it is still open, each filter gets
    /// `proxy_on_downstream_connection_close(LOCAL)` and its end
    /// (`on_done`, `on_log`, `on_delete`), as when Envoy closes a
    /// connection it drops. Runs once; later calls do nothing.
    pub fn finish(&mut self, vms: &mut impl FilterVms) {
        if self.finished {
            return;
        }
        if self.closed.is_none() {
            self.close_with(vms, CloseReason::Aborted, PeerType::Local);
        }
        self.finished = true;
    }

    // ---- the chain -------------------------------------------------------

    /// Closes the connection: what the filters held is dropped, each
    /// filter with a context gets the downstream close (`peer`) and its
    /// end, in chain order.
    fn close_with(&mut self, vms: &mut impl FilterVms, reason: CloseReason, peer: PeerType) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(reason);
        self.deferred.clear();
        for side in &mut self.sides {
            side.holder = None;
            side.pending = Vec::new();
            side.held = 0;
        }
        for i in 0..self.filters.len() {
            let Some(ctx) = self.filters[i].ctx.take() else {
                continue;
            };
            let vm_ok = vms.with_vm(i, |vm| {
                if !vm.is_failed() {
                    let r = vm.on_downstream_connection_close(ctx, peer);
                    if let Err(e) = r {
                        log::debug!(target: "vessel::tcp", "close of filter {i}: {e}");
                    }
                }
                // The connection is over: what the close asked is dropped.
                take_own(vm, ctx);
                let r = vm.finish_tcp_stream(ctx);
                take_own(vm, ctx);
                if let Err(e) = r
                    && !vm.is_failed()
                {
                    log::debug!(target: "vessel::tcp", "ending filter {i}: {e}");
                }
                !vm.is_failed()
            });
            vms.context_finished(i, ctx, vm_ok);
        }
    }

    /// A filter (or a failure) closes the connection: flush and close both
    /// sides, as Envoy's `close(FlushWrite)` and the tcp_proxy after it.
    fn close_connection(&mut self, vms: &mut impl FilterVms, reason: CloseReason) {
        if self.closed.is_some() {
            return;
        }
        self.actions.push_back(TcpAction::CloseDownstream);
        self.actions.push_back(TcpAction::CloseUpstream);
        self.close_with(vms, reason, PeerType::Local);
    }

    /// The bytes side `s` held (in a filter's buffer or here), taken.
    fn take_held(&mut self, vms: &mut impl FilterVms, s: usize) -> Vec<u8> {
        let side = &mut self.sides[s];
        let mut buf = std::mem::take(&mut side.pending);
        side.held = 0;
        if let Some(i) = side.holder.take()
            && let Some(ctx) = self.filters[i].ctx
        {
            let ty = buffer_type(s);
            let held = vms
                .with_vm(i, |vm| vm.take_body(ctx, ty))
                .unwrap_or_default();
            if buf.is_empty() {
                buf = held;
            } else {
                buf.extend_from_slice(&held);
            }
        }
        buf
    }

    /// Filter `i` becomes passed by (FAIL_OPEN) or closes the connection;
    /// true if the connection closed.
    fn failed(&mut self, vms: &mut impl FilterVms, i: usize) -> bool {
        if vms.policy(i).passes_through() {
            self.filters[i].status = Status::Bypassed;
            false
        } else {
            self.close_connection(vms, CloseReason::FilterFailed);
            true
        }
    }

    /// Creates filter `i`'s context and runs `on_new_connection`; true if
    /// the read iteration goes on past it.
    fn initialize(&mut self, vms: &mut impl FilterVms, i: usize) -> bool {
        self.filters[i].initialized = true;
        let created = vms.create_tcp_context(i, self.properties.clone());
        let ctx = match created {
            Ok(ctx) => ctx,
            Err(e) => {
                log::debug!(target: "vessel::tcp", "filter {i}: no context: {e}");
                return !self.failed(vms, i);
            }
        };
        self.filters[i].ctx = Some(ctx);
        let (result, own, was_failed) = vms.with_vm(i, |vm| {
            // What `on_context_create` asked, then the callback.
            let mut own = take_own(vm, ctx);
            let was_failed = vm.is_failed();
            let r = vm.on_new_connection(ctx);
            own.extend(take_own(vm, ctx));
            (r, own, was_failed)
        });
        let status = match result {
            Ok(s) => s,
            Err(e) => {
                log::debug!(target: "vessel::tcp", "filter {i}: {e}");
                if !was_failed {
                    // Its own callback failed: closed under every policy.
                    self.close_connection(vms, CloseReason::FilterFailed);
                    return false;
                }
                return !self.failed(vms, i);
            }
        };
        let mut continued = false;
        if self.own_signals(i, own, true, &mut continued) {
            self.close_connection(vms, CloseReason::FilterClosed);
            return false;
        }
        status == FilterStatus::Continue || continued
    }

    /// Takes filter `i`'s own signals: true if it closed the connection;
    /// `continued` if it continued reading (`read`: during a read-side
    /// callback); other continues wait until after the event.
    fn own_signals(
        &mut self,
        i: usize,
        own: Vec<StreamSignal>,
        read: bool,
        continued: &mut bool,
    ) -> bool {
        let mut close = false;
        for s in own {
            match s {
                StreamSignal::Close => close = true,
                StreamSignal::Continue(Direction::Request) if read => *continued = true,
                s @ StreamSignal::Continue(Direction::Request) => self.deferred.push((i, s)),
                _ => {}
            }
        }
        close
    }

    /// Runs one data callback of filter `i` with `data`.
    fn data_step(
        &mut self,
        vms: &mut impl FilterVms,
        i: usize,
        s: usize,
        ctx: ContextId,
        data: Vec<u8>,
    ) -> Step {
        let end = self.sides[s].end;
        let ty = buffer_type(s);
        let (result, own, left, was_failed) = vms.with_vm(i, |vm| {
            let was_failed = vm.is_failed();
            let r = if s == READ {
                vm.on_downstream_data(ctx, &data, end)
            } else {
                match vm.on_upstream_data(ctx, &data, end) {
                    // Envoy synthesises the upstream close on its end.
                    Ok(status) if end => vm
                        .on_upstream_connection_close(ctx, PeerType::Unknown)
                        .map(|()| status),
                    r => r,
                }
            };
            let own = take_own(vm, ctx);
            // What continues (or what a failed VM was given) comes back.
            let left = match &r {
                Ok(FilterStatus::StopIteration) => None,
                _ => vm.take_body(ctx, ty),
            };
            (r, own, left, was_failed)
        });
        let status = match result {
            Ok(status) => status,
            Err(VmError::StreamLimit { .. }) => {
                log::warn!(
                    target: "vessel::tcp",
                    "filter {i}: connection data past max_body_bytes: closing the connection"
                );
                self.close_connection(vms, CloseReason::BufferLimit);
                return Step::Closed;
            }
            Err(e) => {
                log::debug!(target: "vessel::tcp", "filter {i}: {e}");
                if !was_failed {
                    // This connection's own callback failed: the
                    // connection closes under every policy, as Envoy 1.40
                    // does (spec-tests/scenarios/tcp_fail_open.yaml).
                    self.close_connection(vms, CloseReason::FilterFailed);
                    return Step::Closed;
                }
                if self.failed(vms, i) {
                    return Step::Closed;
                }
                // FAIL_OPEN: the bytes go on as the filter left them.
                return Step::Go(left.unwrap_or(data));
            }
        };
        let mut continued = false;
        if self.own_signals(i, own, s == READ, &mut continued) {
            self.close_connection(vms, CloseReason::FilterClosed);
            return Step::Closed;
        }
        if status == FilterStatus::StopIteration && !continued {
            return Step::Stop;
        }
        let out = match left {
            Some(b) => b,
            None => vms
                .with_vm(i, |vm| vm.take_body(ctx, ty))
                .unwrap_or_default(),
        };
        Step::Go(out)
    }

    /// The read iteration from filter `from` with `data` (the connection's
    /// read buffer), as Envoy's `onContinueReading`.
    fn run_read(&mut self, vms: &mut impl FilterVms, from: usize, mut data: Vec<u8>) {
        for i in from..self.filters.len() {
            if self.closed.is_some() {
                return;
            }
            if self.filters[i].status != Status::Active {
                continue;
            }
            if !self.filters[i].initialized && !self.initialize(vms, i) {
                if self.closed.is_none() {
                    // Stopped in on_new_connection: the bytes wait here.
                    let side = &mut self.sides[READ];
                    side.held = data.len();
                    side.pending = data;
                }
                return;
            }
            let Some(ctx) = self.filters[i].ctx else {
                continue;
            };
            if self.filters[i].status != Status::Active
                || (data.is_empty() && !self.sides[READ].end)
            {
                continue;
            }
            let len = data.len();
            match self.data_step(vms, i, READ, ctx, data) {
                Step::Closed => return,
                Step::Stop => {
                    let side = &mut self.sides[READ];
                    side.holder = Some(i);
                    side.held = len;
                    return;
                }
                Step::Go(out) => data = out,
            }
        }
        let side = &mut self.sides[READ];
        let end = side.end && !side.end_sent;
        if data.is_empty() && !end {
            return;
        }
        side.end_sent |= end;
        self.actions.push_back(TcpAction::UpstreamData {
            data,
            end_stream: end,
        });
        self.maybe_ended(vms, PeerType::Remote);
    }

    /// The write iteration over every write filter (reverse chain order).
    fn run_write(&mut self, vms: &mut impl FilterVms, mut data: Vec<u8>) {
        for i in (0..self.filters.len()).rev() {
            if self.closed.is_some() {
                return;
            }
            if self.filters[i].status != Status::Active {
                continue;
            }
            let Some(ctx) = self.filters[i].ctx else {
                continue;
            };
            let len = data.len();
            match self.data_step(vms, i, WRITE, ctx, data) {
                Step::Closed => return,
                Step::Stop => {
                    let side = &mut self.sides[WRITE];
                    side.holder = Some(i);
                    side.held = len;
                    return;
                }
                Step::Go(out) => data = out,
            }
        }
        let side = &mut self.sides[WRITE];
        let end = side.end && !side.end_sent;
        if data.is_empty() && !end {
            return;
        }
        side.end_sent |= end;
        self.actions.push_back(TcpAction::DownstreamData {
            data,
            end_stream: end,
        });
        self.maybe_ended(vms, PeerType::Local);
    }

    /// Both ends left the chain: the connection closes (`peer`: LOCAL when
    /// the proxy wrote the last end, REMOTE when it read it).
    fn maybe_ended(&mut self, vms: &mut impl FilterVms, peer: PeerType) {
        if self.sides[READ].end_sent && self.sides[WRITE].end_sent && self.closed.is_none() {
            self.actions.push_back(TcpAction::CloseDownstream);
            self.actions.push_back(TcpAction::CloseUpstream);
            self.close_with(vms, CloseReason::Ended, peer);
        }
    }

    fn apply_signal(&mut self, vms: &mut impl FilterVms, i: usize, signal: StreamSignal) {
        match signal {
            StreamSignal::Continue(Direction::Request) => {
                if self.filters[i].status != Status::Active {
                    return;
                }
                // Envoy's `continueReading`: the read buffer from the next
                // filter on.
                let data = self.take_held(vms, READ);
                self.run_read(vms, i + 1, data);
            }
            StreamSignal::Close => self.close_connection(vms, CloseReason::FilterClosed),
            StreamSignal::VmFailed => {
                if self.filters[i].status != Status::Active || self.filters[i].ctx.is_none() {
                    return;
                }
                if !vms.policy(i).passes_through() {
                    self.close_connection(vms, CloseReason::FilterFailed);
                    return;
                }
                self.filters[i].status = Status::Bypassed;
                if self.sides[READ].holder == Some(i) {
                    let data = self.take_held(vms, READ);
                    self.run_read(vms, i + 1, data);
                }
                if self.closed.is_none() && self.sides[WRITE].holder == Some(i) {
                    let data = self.take_held(vms, WRITE);
                    let rest = i;
                    self.run_write_below(vms, rest, data);
                }
            }
            _ => {}
        }
    }

    /// The write iteration from the filter before `i` (in write order: the
    /// filters of lower index).
    fn run_write_below(&mut self, vms: &mut impl FilterVms, i: usize, data: Vec<u8>) {
        // Pass the filters at and above `i` by: they saw these bytes.
        let saved: Vec<Status> = self.filters[i..].iter().map(|f| f.status).collect();
        for f in &mut self.filters[i..] {
            f.status = Status::Bypassed;
        }
        self.run_write(vms, data);
        for (f, s) in self.filters[i..].iter_mut().zip(saved) {
            f.status = s;
        }
    }

    fn flush_deferred(&mut self, vms: &mut impl FilterVms) {
        let mut rounds = 0;
        while !self.deferred.is_empty() && self.closed.is_none() && rounds < 64 {
            rounds += 1;
            for (i, s) in std::mem::take(&mut self.deferred) {
                self.apply_signal(vms, i, s);
            }
        }
        self.deferred.clear();
    }
}

/// The data buffer of a side.
fn buffer_type(s: usize) -> BufferType {
    if s == READ {
        BufferType::DownstreamData
    } else {
        BufferType::UpstreamData
    }
}
