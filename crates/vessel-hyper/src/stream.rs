//! One stream through a chain of filters, with Envoy's filter-manager
//! semantics (ABI reference §11.1–§11.4, §11.11):
//!
//! * request callbacks run in chain order, response callbacks in reverse;
//! * a filter that stops on headers holds the stream until it calls
//!   `proxy_continue_stream` (e.g. from a callout response or a tick);
//! * a filter that stops on a body chunk makes the chain buffer until it
//!   continues or the body ends; over the buffer limit the request gets 413
//!   and the response 500 (or a reset once headers left);
//! * a local reply from any phase answers the client; one sent while
//!   processing the request runs through the response callbacks of the
//!   filters it passes, as in Envoy;
//! * `on_log`, `on_done` and `on_delete` run for every stream, also when the
//!   client or the upstream goes away (see [`Chain`]'s `Drop`);
//! * a filter whose VM failed (ABI reference §6.6) answers the stream with
//!   one 503 local reply (`wasm_fail_stream`), under `FAIL_CLOSED` and
//!   `FAIL_RELOAD`, or is skipped from then on under `FAIL_OPEN`;
//! * a stream holds the VMs (and pools) it started on until it ends, so a
//!   hot reload never moves a stream in flight to another VM.

use std::sync::Arc;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use vessel_host::{
    BufferType, ContextId, FilterDataStatus, FilterHeadersStatus, FilterTrailersStatus, HeaderMap,
    LocalResponse, MapType, PropertyMap, PropertyValue, StreamType, Vm, VmError,
};

use crate::body::{BoxError, FrameTx};
use crate::pool::{FilterPool, Signal, VmCell, dispatch};
use crate::signal::{self, SignalRx};

/// What a phase decided.
#[derive(Debug)]
pub(crate) enum Flow {
    /// Carry on.
    Go,
    /// Answer the client with this reply; `from` is the index of the filter
    /// that sent it.
    Reply(LocalResponse, usize),
    /// Reset the stream.
    Reset,
}

pub(crate) struct Slot {
    pub(crate) pool: Arc<FilterPool>,
    cell: Arc<VmCell>,
    ctx: Option<ContextId>,
    rx: SignalRx,
    /// False once the filter failed open: the stream skips it.
    open: bool,
}

/// The filter contexts of one stream. Dropping it ends every context in
/// Envoy's order (`on_log`, `on_done`, `on_delete`).
pub(crate) struct Chain {
    pub(crate) slots: Vec<Slot>,
    limit: usize,
    /// The request is gRPC: local replies take gRPC's shape.
    pub(crate) grpc: bool,
}

impl Drop for Chain {
    fn drop(&mut self) {
        for slot in &self.slots {
            let Some(ctx) = slot.ctx else { continue };
            let mut shared = slot.cell.lock();
            shared.streams.remove(&ctx);
            if let Err(e) = shared.vm.finish_http_stream(ctx) {
                log::debug!(target: "vessel::hyper", "finishing stream {ctx}: {e}");
            }
            dispatch(&slot.cell, &mut shared);
            slot.cell.stream_finished(!shared.vm.is_failed());
        }
    }
}

fn fail_stream() -> LocalResponse {
    LocalResponse {
        status: 503,
        details: "wasm_fail_stream".into(),
        body: Vec::new(),
        headers: HeaderMap::new(),
        grpc_status: None,
    }
}

fn too_large(dir: StreamType) -> LocalResponse {
    let (status, body, details) = match dir {
        StreamType::HttpRequest => (413, "Payload Too Large", "request_payload_too_large"),
        _ => (500, "Internal Server Error", "response_payload_too_large"),
    };
    LocalResponse {
        status,
        details: details.into(),
        body: body.as_bytes().to_vec(),
        headers: HeaderMap::new(),
        grpc_status: None,
    }
}

/// Filter positions in callback order (no allocation).
fn order(n: usize, dir: StreamType) -> impl Iterator<Item = usize> {
    let rev = dir != StreamType::HttpRequest;
    (0..n).map(move |k| if rev { n - 1 - k } else { k })
}

fn types(dir: StreamType) -> (MapType, BufferType, MapType) {
    match dir {
        StreamType::HttpRequest => (
            MapType::HttpRequestHeaders,
            BufferType::HttpRequestBody,
            MapType::HttpRequestTrailers,
        ),
        _ => (
            MapType::HttpResponseHeaders,
            BufferType::HttpResponseBody,
            MapType::HttpResponseTrailers,
        ),
    }
}

/// The outcome of one guest callback, after the policy and the signals.
enum Step<T> {
    Value(T, bool),
    Skip,
    Stop(Flow),
}

impl Chain {
    /// Creates one context per filter. A filter whose VM failed follows its
    /// policy: fail-open skips it, fail-closed answers 503.
    pub(crate) fn start(
        pools: &[Arc<FilterPool>],
        mut props: PropertyMap,
        limit: usize,
    ) -> (Self, Option<Flow>) {
        let mut chain = Self {
            slots: Vec::with_capacity(pools.len()),
            limit,
            grpc: false,
        };
        let mut flow = None;
        for (i, pool) in pools.iter().enumerate() {
            let cell = pool.pick();
            let (tx, rx) = signal::channel();
            let mut slot = Slot {
                pool: pool.clone(),
                cell: cell.clone(),
                ctx: None,
                rx,
                open: true,
            };
            if flow.is_none() {
                let mut shared = cell.lock();
                let props = if i + 1 == pools.len() {
                    std::mem::take(&mut props)
                } else {
                    props.clone()
                };
                match shared.vm.create_http_context_with(props) {
                    Ok(ctx) => {
                        shared.streams.insert(ctx, tx);
                        slot.ctx = Some(ctx);
                    }
                    Err(e) => {
                        log::debug!(target: "vessel::hyper", "stream start: {e}");
                        slot.open = false;
                        if !pool.policy().passes_through() {
                            flow = Some(Flow::Reply(fail_stream(), i));
                        }
                    }
                }
                dispatch(&cell, &mut shared);
            } else {
                slot.open = false;
            }
            chain.slots.push(slot);
        }
        (chain, flow)
    }

    /// Runs a guest callback on filter `i`, dispatches its effects, applies
    /// the failure policy, and reads the signals it caused.
    fn call<T>(
        &mut self,
        i: usize,
        dir: StreamType,
        f: impl FnOnce(&mut Vm, ContextId) -> Result<T, VmError>,
    ) -> Step<T> {
        let slot = &mut self.slots[i];
        let Some(ctx) = slot.ctx.filter(|_| slot.open) else {
            return Step::Skip;
        };
        let result = {
            let mut shared = slot.cell.lock();
            let r = f(&mut shared.vm, ctx);
            dispatch(&slot.cell, &mut shared);
            r
        };
        let value = match result {
            Ok(v) => v,
            Err(VmError::StreamLimit { .. }) => {
                // Body data over what the filter may hold
                // (`Limits::max_body_bytes`): this stream is over its
                // buffer limit; the VM is fine.
                return Step::Stop(Flow::Reply(too_large(dir), i));
            }
            Err(e) => {
                log::warn!(target: "vessel::hyper", "{e}");
                slot.open = false;
                return if slot.pool.policy().passes_through() {
                    Step::Skip
                } else {
                    Step::Stop(Flow::Reply(fail_stream(), i))
                };
            }
        };
        let mut continued = false;
        while let Ok(signal) = slot.rx.try_recv() {
            match signal {
                Signal::LocalReply(r) => return Step::Stop(Flow::Reply(r, i)),
                Signal::Reset => return Step::Stop(Flow::Reset),
                Signal::Continue(d) if d == dir => continued = true,
                Signal::Continue(_) | Signal::Failed => {}
            }
        }
        Step::Value(value, continued)
    }

    /// Waits until filter `i` resumes direction `dir`.
    async fn wait(&mut self, i: usize, dir: StreamType) -> Flow {
        let slot = &mut self.slots[i];
        loop {
            match slot.rx.recv().await {
                Some(Signal::Continue(d)) if d == dir => return Flow::Go,
                Some(Signal::Continue(_)) => {}
                Some(Signal::LocalReply(r)) => return Flow::Reply(r, i),
                Some(Signal::Failed) => {
                    slot.open = false;
                    return if slot.pool.policy().passes_through() {
                        Flow::Go
                    } else {
                        Flow::Reply(fail_stream(), i)
                    };
                }
                Some(Signal::Reset) | None => return Flow::Reset,
            }
        }
    }

    /// Sets stream properties on every filter's context (e.g. the
    /// `upstream.*` attributes once the upstream answered).
    pub(crate) fn set_properties(&self, props: &[(&str, PropertyValue)]) {
        for slot in &self.slots {
            let Some(ctx) = slot.ctx else { continue };
            let mut shared = slot.cell.lock();
            for (path, value) in props {
                if let Err(e) = shared.vm.set_stream_property(ctx, path, value.clone()) {
                    log::debug!(target: "vessel::hyper", "property {path}: {e}");
                }
            }
        }
    }

    fn headers_of(&self, i: usize, ty: MapType) -> Option<HeaderMap> {
        let slot = &self.slots[i];
        let ctx = slot.ctx?;
        slot.cell.lock().vm.headers(ctx, ty).cloned()
    }

    fn take_body(&self, i: usize, ty: BufferType) -> Vec<u8> {
        let slot = &self.slots[i];
        let Some(ctx) = slot.ctx else {
            return Vec::new();
        };
        slot.cell.lock().vm.take_body(ctx, ty).unwrap_or_default()
    }

    fn buffered(&self, i: usize, ty: BufferType) -> usize {
        let slot = &self.slots[i];
        let Some(ctx) = slot.ctx else { return 0 };
        slot.cell.lock().vm.body(ctx, ty).map_or(0, <[u8]>::len)
    }

    /// Headers through the chain (`from` = first position in the order).
    pub(crate) async fn headers(
        &mut self,
        dir: StreamType,
        map: &mut HeaderMap,
        end_of_stream: bool,
        skip: usize,
    ) -> Flow {
        let (hty, _, _) = types(dir);
        for i in order(self.slots.len(), dir).skip(skip) {
            // The VM keeps the map it is given; what the filter left is
            // cloned back out below, so the input can be moved in.
            let input = if self.slots[i].open && self.slots[i].ctx.is_some() {
                std::mem::take(map)
            } else {
                continue;
            };
            let step = self.call(i, dir, |vm, ctx| match dir {
                StreamType::HttpRequest => vm.on_request_headers(ctx, input, end_of_stream),
                _ => vm.on_response_headers(ctx, input, end_of_stream),
            });
            match step {
                Step::Skip => {
                    // A filter that failed open: take its input back.
                    if let Some(h) = self.headers_of(i, hty) {
                        *map = h;
                    }
                    continue;
                }
                Step::Stop(flow) => return flow,
                Step::Value(st, continued) => {
                    if st != FilterHeadersStatus::Continue && !continued {
                        match self.wait(i, dir).await {
                            Flow::Go => {}
                            other => return other,
                        }
                    }
                }
            }
            if let Some(h) = self.headers_of(i, hty) {
                *map = h;
            }
        }
        Flow::Go
    }

    /// One data chunk through the chain, from position `from` on. What
    /// passes every filter is sent on `tx`.
    async fn data(
        &mut self,
        dir: StreamType,
        mut data: Vec<u8>,
        end_of_stream: bool,
        from: usize,
        tx: &FrameTx,
    ) -> Flow {
        let (_, bty, _) = types(dir);
        for i in order(self.slots.len(), dir).skip(from) {
            let step = self.call(i, dir, |vm, ctx| match dir {
                StreamType::HttpRequest => vm.on_request_body(ctx, &data, end_of_stream),
                _ => vm.on_response_body(ctx, &data, end_of_stream),
            });
            match step {
                Step::Skip => continue,
                Step::Stop(flow) => return flow,
                Step::Value(st, continued) => {
                    if st == FilterDataStatus::Continue || continued {
                        data = self.take_body(i, bty);
                        continue;
                    }
                    if st == FilterDataStatus::StopIterationNoBuffer {
                        return Flow::Go;
                    }
                    if self.buffered(i, bty) > self.limit {
                        return Flow::Reply(too_large(dir), i);
                    }
                    if !end_of_stream {
                        return Flow::Go;
                    }
                    // The whole body is in this filter and it stopped: wait for it.
                    match self.wait(i, dir).await {
                        Flow::Go => data = self.take_body(i, bty),
                        other => return other,
                    }
                }
            }
        }
        if !data.is_empty() {
            let _ = tx.send(Ok(Frame::data(Bytes::from(data)))).await;
        }
        Flow::Go
    }

    /// Trailers through the chain. Before trailers pass a filter, what it
    /// buffered flows on to the filters after it.
    async fn trailers(&mut self, dir: StreamType, mut map: HeaderMap, tx: &FrameTx) -> Flow {
        let (_, bty, tty) = types(dir);
        for (pos, i) in order(self.slots.len(), dir).enumerate() {
            let input = map.clone();
            let step = self.call(i, dir, |vm, ctx| match dir {
                StreamType::HttpRequest => vm.on_request_trailers(ctx, input),
                _ => vm.on_response_trailers(ctx, input),
            });
            match step {
                Step::Skip => continue,
                Step::Stop(flow) => return flow,
                Step::Value(st, continued) => {
                    if st != FilterTrailersStatus::Continue && !continued {
                        match self.wait(i, dir).await {
                            Flow::Go => {}
                            other => return other,
                        }
                    }
                }
            }
            let held = self.take_body(i, bty);
            if !held.is_empty() {
                match Box::pin(self.data(dir, held, false, pos + 1, tx)).await {
                    Flow::Go => {}
                    other => return other,
                }
            }
            if let Some(t) = self.headers_of(i, tty) {
                map = t;
            }
        }
        let _ = tx
            .send(Ok(Frame::trailers(crate::convert::to_trailers(&map))))
            .await;
        Flow::Go
    }

    /// Pumps a body through the chain into `tx` until it ends.
    pub(crate) async fn pump<B>(&mut self, dir: StreamType, body: B, tx: FrameTx) -> Flow
    where
        B: Body<Data = Bytes> + Send + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut body = body;
        loop {
            let frame = tokio::select! {
                f = body.frame() => f,
                () = tx.closed() => return Flow::Reset,
            };
            match frame {
                None => {
                    let flow = self.data(dir, Vec::new(), true, 0, &tx).await;
                    return self.flush_end(dir, flow, &tx).await;
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(e.into())).await;
                    return Flow::Reset;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let eos = body.is_end_stream();
                        let flow = self.data(dir, data.to_vec(), eos, 0, &tx).await;
                        if eos || !matches!(flow, Flow::Go) {
                            return self.flush_end(dir, flow, &tx).await;
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            let t = crate::convert::trailers(&t);
                            // Boxed: rare, and it would grow every pump.
                            return Box::pin(self.trailers(dir, t, &tx)).await;
                        }
                    }
                },
            }
        }
    }

    /// At the end of a body: trailers a filter added in its last body
    /// callback are sent too.
    async fn flush_end(&mut self, dir: StreamType, flow: Flow, tx: &FrameTx) -> Flow {
        if !matches!(flow, Flow::Go) {
            return flow;
        }
        let (_, _, tty) = types(dir);
        let mut added = HeaderMap::new();
        for i in 0..self.slots.len() {
            if let Some(t) = self.headers_of(i, tty) {
                for (k, v) in t.iter() {
                    added.append(k, v);
                }
            }
        }
        if !added.is_empty() {
            let _ = tx
                .send(Ok(Frame::trailers(crate::convert::to_trailers(&added))))
                .await;
        }
        Flow::Go
    }

    /// Runs a local reply sent by filter `from` while the request was being
    /// processed through the response callbacks of the filters between it
    /// and the client (it included), as Envoy does. Returns the response
    /// head and body the client gets.
    pub(crate) async fn encode_local_reply(
        &mut self,
        reply: LocalResponse,
        from: usize,
    ) -> (HeaderMap, Vec<u8>) {
        let (mut headers, body) = reply.to_response(self.grpc);
        let n = self.slots.len();
        // Response order is reverse; skip the filters after `from`.
        let skip = n.saturating_sub(from + 1);
        if let Flow::Go = self
            .headers(
                StreamType::HttpResponse,
                &mut headers,
                body.is_empty(),
                skip,
            )
            .await
        {
            if body.is_empty() {
                return (headers, body);
            }
            let (tx, mut rx) = mpsc::channel(4);
            let tx = FrameTx::Channel(tx);
            if let Flow::Go = self
                .data(StreamType::HttpResponse, body.clone(), true, skip, &tx)
                .await
            {
                drop(tx);
                let mut out = Vec::new();
                while let Some(Ok(frame)) = rx.recv().await {
                    if let Ok(d) = frame.into_data() {
                        out.extend_from_slice(&d);
                    }
                }
                return (headers, out);
            }
        }
        reply.to_response(self.grpc)
    }
}
