//! The pump: moves one stream's frames and events between hyper (the
//! client's request, the inner service that is the upstream, its response)
//! and the filter manager ([`vessel_host::HttpStream`], through
//! [`PooledStream`]). Every stream rule lives in the core; this module only
//! carries out its [`Action`]s:
//!
//! * `UpstreamHeaders` builds the upstream request and calls the inner
//!   service; `UpstreamData` and `UpstreamTrailers` feed its body (a
//!   bounded pipe: the client's body is not read while it is full);
//! * `CancelUpstream` drops the upstream call and its response (a local
//!   reply answers the stream);
//! * `DownstreamHeaders` becomes the response head, and the rest of the
//!   response (`DownstreamData`, `DownstreamTrailers`) is pumped by the
//!   response body as the client reads it;
//! * `Reset` errors the response (or its body, once the head left).
//!
//! It reads a body only while the core does not ask to pause it
//! ([`HttpStream::read_paused`](vessel_host::HttpStream::read_paused)), and
//! waits for the VMs' signals ([`PooledStream::poll_signal`]) alongside
//! the bodies and the upstream. When the upstream answers, the rest of the
//! request body is not read (spec-tests/DEVIATIONS.md A3). The stream ends
//! (`on_log`, `on_done`, `on_delete`) when the [`PooledStream`] drops: with
//! the response body, or with the whole exchange when the client goes away.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response, header, request, response};
use http_body::{Body, Frame};
use tower::Service;
use vessel_host::{Action, Direction, HeaderMap};

use crate::body::{BoxError, Item, PipeTx, Pump, VesselBody};
use crate::chain::PooledStream;
use crate::convert;
use crate::service::{Framed, ResponseInfo, UpstreamInfo};

/// How the response starts.
pub(crate) enum Head {
    /// With this head; `true` if no body follows.
    Response(response::Parts, bool),
    /// With a reset (a filter closed the stream, a body failed).
    Reset,
}

/// What woke the stream's task.
enum Event<R, E> {
    /// A signal was applied or a frame fed: look at the actions.
    Progress,
    /// The upstream answered.
    Upstream(Result<R, E>),
    /// Nothing can move the stream on (a bug of the filter manager if it
    /// ever happens): reset it rather than hang.
    Stalled,
}

/// One stream between hyper and the filter manager.
pub(crate) struct Exchange<S, B, RB>
where
    S: Service<Request<VesselBody>>,
{
    stream: PooledStream,
    /// The client's request body, while it is read.
    request_body: Option<Framed<B>>,
    /// The request head and the inner service, until the filters let the
    /// request go upstream.
    request: Option<(request::Parts, S)>,
    /// The request body going upstream.
    upstream_body: Option<PipeTx>,
    /// The upstream's answer, once the request went.
    upstream: Option<Pin<Box<S::Future>>>,
    /// The upstream's response head, until the filters let it go
    /// downstream.
    response: Option<response::Parts>,
    /// The upstream's response body, while it is read.
    response_body: Option<Framed<RB>>,
    /// An action taken out early (to size a local reply).
    pending: Option<Action>,
    /// Why a body failed.
    error: Option<BoxError>,
    /// The response body has no more frames.
    body_done: bool,
}

impl<S, B, RB> Exchange<S, B, RB>
where
    S: Service<Request<VesselBody>, Response = Response<RB>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    /// A stream whose request headers (built from `parts`) were fed to
    /// `stream`; `inner` is the upstream.
    pub(crate) fn new(
        stream: PooledStream,
        parts: request::Parts,
        body: Option<Framed<B>>,
        inner: S,
    ) -> Self {
        Self {
            stream,
            request_body: body,
            request: Some((parts, inner)),
            upstream_body: None,
            upstream: None,
            response: None,
            response_body: None,
            pending: None,
            error: None,
            body_done: false,
        }
    }

    fn next_action(&mut self) -> Option<Action> {
        self.pending.take().or_else(|| self.stream.poll_action())
    }

    /// Runs the stream until the response head is known.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Head, S::Error>> {
        loop {
            while let Some(action) = self.next_action() {
                if let Some(head) = self.head_action(action) {
                    return Poll::Ready(Ok(head));
                }
            }
            if self.stream.is_done() {
                return Poll::Ready(Ok(Head::Reset));
            }
            match ready!(self.poll_event(cx)) {
                Event::Progress => {}
                Event::Upstream(Ok(answer)) => self.upstream_answered(answer),
                Event::Upstream(Err(e)) => return Poll::Ready(Err(e)),
                Event::Stalled => return Poll::Ready(Ok(Head::Reset)),
            }
        }
    }

    /// Runs the rest of the stream: the next frame of the response body.
    ///
    /// With a frame in hand, the stream keeps going while its events are
    /// ready, until a second frame would be needed: the end of the body
    /// then travels with the last data. A client of a body framed by
    /// `content-length` stops polling once it has every byte, and the
    /// filters must still see the end (Envoy's HTTP/1 codec reports it
    /// after the data: one more body callback, 0 bytes, end of stream).
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let mut out: Option<Item> = None;
        loop {
            if self.body_done {
                return Poll::Ready(out);
            }
            while let Some(action) = self.next_action() {
                let (frame, end) = match action {
                    Action::DownstreamData { data, end_stream } if data.is_empty() => {
                        (None, end_stream)
                    }
                    Action::DownstreamData { data, end_stream } if out.is_none() => {
                        (Some(Ok(Frame::data(Bytes::from(data)))), end_stream)
                    }
                    Action::DownstreamTrailers { trailers } if out.is_none() => {
                        let trailers = convert::to_trailers(&trailers);
                        (Some(Ok(Frame::trailers(trailers))), true)
                    }
                    Action::Reset { .. } if out.is_none() => (Some(Err(self.failure())), true),
                    Action::CancelUpstream => {
                        self.response_body = None;
                        continue;
                    }
                    // The request side is over (A3).
                    Action::UpstreamHeaders { .. }
                    | Action::UpstreamData { .. }
                    | Action::UpstreamTrailers { .. } => continue,
                    // A second frame: it waits for the next poll.
                    other => {
                        self.pending = Some(other);
                        return Poll::Ready(out);
                    }
                };
                if frame.is_some() {
                    out = frame;
                }
                if end {
                    self.end_body();
                    return Poll::Ready(out);
                }
            }
            // An error or a stall comes after the frame in hand, next poll.
            if self.stream.is_done() {
                if out.is_none() {
                    self.end_body();
                    out = self.error.take().map(Err);
                }
                return Poll::Ready(out);
            }
            match self.poll_event(cx) {
                Poll::Ready(Event::Stalled) if out.is_none() => {
                    let e = self.failure();
                    self.end_body();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Event::Stalled) | Poll::Pending if out.is_some() => {
                    return Poll::Ready(out);
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(_) => {}
            }
        }
    }

    /// The body ended: the stream ends now (`on_log`, `on_done`,
    /// `on_delete`), before the client has the last frame, as in Envoy.
    fn end_body(&mut self) {
        self.body_done = true;
        self.response_body = None;
        self.stream.finish();
    }

    /// Why the stream was reset.
    fn failure(&mut self) -> BoxError {
        self.error
            .take()
            .unwrap_or_else(|| "the filter chain reset the stream".into())
    }

    /// Carries out an action before the response head; the head, if this
    /// is it.
    fn head_action(&mut self, action: Action) -> Option<Head> {
        match action {
            Action::UpstreamHeaders {
                headers,
                end_stream,
            } => {
                self.send_upstream(&headers, end_stream);
                convert::recycle(headers);
            }
            Action::UpstreamData { data, end_stream } => {
                if let Some(tx) = &self.upstream_body
                    && !data.is_empty()
                {
                    tx.push(Ok(Frame::data(Bytes::from(data))));
                }
                if end_stream {
                    self.upstream_body = None;
                }
            }
            Action::UpstreamTrailers { trailers } => {
                if let Some(tx) = self.upstream_body.take() {
                    tx.push(Ok(Frame::trailers(convert::to_trailers(&trailers))));
                }
            }
            Action::CancelUpstream => {
                self.upstream = None;
                self.upstream_body = None;
                self.request_body = None;
                self.response = None;
                self.response_body = None;
            }
            Action::DownstreamHeaders {
                headers,
                end_stream,
            } => {
                let head = self.downstream_head(&headers, end_stream);
                convert::recycle(headers);
                return Some(head);
            }
            Action::Reset { .. } => return Some(Head::Reset),
            other => log::debug!(target: "vessel::hyper", "before the response head: {other:?}"),
        }
        None
    }

    fn send_upstream(&mut self, headers: &HeaderMap, end_stream: bool) {
        let Some((mut parts, mut inner)) = self.request.take() else {
            return;
        };
        // Filters that only add headers (or change nothing) leave the parts
        // as they are, plus the new headers.
        convert::update_request(headers, &mut parts);
        let skipped = self.stream.skipped_failures();
        if !skipped.is_empty() {
            parts.extensions.insert(crate::SkippedFilters(skipped));
        }
        let body = if end_stream {
            VesselBody::empty()
        } else {
            let (tx, body) = VesselBody::pipe();
            self.upstream_body = Some(tx);
            body
        };
        self.upstream = Some(Box::pin(inner.call(Request::from_parts(parts, body))));
    }

    fn upstream_answered(&mut self, answer: Response<RB>) {
        // The rest of the request body is not read (A3).
        self.request_body = None;
        self.upstream_body = None;
        let (mut parts, body) = answer.into_parts();
        let info = UpstreamInfo::from_extensions(&parts.extensions);
        // Taken, not copied: nothing reads it past the filters.
        let details = parts.extensions.remove::<ResponseInfo>().or_else(|| {
            info.as_ref()
                .map(|_| ResponseInfo::new(ResponseInfo::VIA_UPSTREAM, 0))
        });
        // Only a response that came over an HTTP/1 connection is framed the
        // HTTP/1 way; the inner service's own replies (no upstream facts)
        // come whole, as Envoy's local replies do.
        let body = match &info {
            Some(_) => Framed::new(body, parts.version),
            None => Framed::Direct(body),
        };
        if details.is_some() || info.is_some() {
            self.stream
                .add_property_source(crate::service::response_properties(details, info));
        }
        let end = body.is_end_stream();
        let input = convert::response_headers(&parts);
        self.response = Some(parts);
        self.response_body = (!end).then_some(body);
        self.stream.response_headers(input, end);
    }

    fn downstream_head(&mut self, headers: &HeaderMap, end_stream: bool) -> Head {
        if let Some(mut parts) = self.response.take() {
            convert::update_response(headers, &mut parts);
            convert::strip_hop_by_hop(&mut parts.headers);
            return Head::Response(parts, end_stream);
        }
        // A local reply: sized when its whole body is known.
        let mut parts = Response::new(()).into_parts().0;
        convert::apply_response(headers, &mut parts);
        convert::strip_hop_by_hop(&mut parts.headers);
        if !end_stream {
            self.pending = self.stream.poll_action();
            if let Some(Action::DownstreamData {
                data,
                end_stream: true,
            }) = &self.pending
            {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, data.len().into());
            }
        }
        Head::Response(parts, end_stream)
    }

    /// Waits for a signal, the upstream's answer or a body frame (whichever
    /// the stream may take now), and feeds what came.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event<Response<RB>, S::Error>> {
        // Signals first (a local reply or a reset should not wait behind
        // the body); the wake-up for them is registered last, as few
        // streams ever get one.
        if self.stream.try_signal() {
            return Poll::Ready(Event::Progress);
        }
        if let Some(upstream) = &mut self.upstream
            && let Poll::Ready(answer) = upstream.as_mut().poll(cx)
        {
            self.upstream = None;
            return Poll::Ready(Event::Upstream(answer));
        }
        if !self.stream.read_paused(Direction::Response)
            && let Some(body) = &mut self.response_body
            && let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx)
        {
            let end = body.is_end_stream();
            self.feed(Direction::Response, frame, end);
            return Poll::Ready(Event::Progress);
        }
        if !self.stream.read_paused(Direction::Request)
            && self.upstream_ready(cx)
            && let Some(body) = &mut self.request_body
            && let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx)
        {
            let end = body.is_end_stream();
            self.feed(Direction::Request, frame, end);
            return Poll::Ready(Event::Progress);
        }
        if self.stream.poll_signal(cx).is_ready() {
            return Poll::Ready(Event::Progress);
        }
        let waiting = self.request_body.is_some()
            || self.upstream.is_some()
            || self.response_body.is_some()
            || self.stream.is_held(Direction::Request)
            || self.stream.is_held(Direction::Response);
        if waiting {
            Poll::Pending
        } else {
            log::warn!(target: "vessel::hyper", "a stream stalled: nothing can resume it");
            Poll::Ready(Event::Stalled)
        }
    }

    /// True if the upstream takes more of the request body now (or the
    /// request has not gone yet).
    fn upstream_ready(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(tx) = &self.upstream_body else {
            return true;
        };
        match tx.poll_ready(cx) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(_)) => {
                // The upstream dropped the request body: read no more.
                self.upstream_body = None;
                self.request_body = None;
                false
            }
            Poll::Pending => false,
        }
    }

    /// Feeds a frame of the `dir` body to the stream; `end` if the body
    /// ended with it.
    fn feed<E: Into<BoxError>>(
        &mut self,
        dir: Direction,
        frame: Option<Result<Frame<Bytes>, E>>,
        end: bool,
    ) {
        let over = match &frame {
            Some(Ok(f)) => end || f.is_trailers(),
            _ => true,
        };
        if over {
            match dir {
                Direction::Request => self.request_body = None,
                Direction::Response => self.response_body = None,
            }
        }
        let s = &mut self.stream;
        match frame.map(|f| f.map(Frame::into_data)) {
            None => match dir {
                Direction::Request => s.request_data(Vec::new(), true),
                Direction::Response => s.response_data(Vec::new(), true),
            },
            // Without a copy when the frame owns its bytes alone.
            Some(Ok(Ok(data))) => match dir {
                Direction::Request => s.request_data(Vec::from(data), end),
                Direction::Response => s.response_data(Vec::from(data), end),
            },
            Some(Ok(Err(frame))) => {
                if let Ok(t) = frame.into_trailers() {
                    let t = convert::trailers(&t);
                    match dir {
                        Direction::Request => s.request_trailers(t),
                        Direction::Response => s.response_trailers(t),
                    }
                }
            }
            Some(Err(e)) => {
                let e: BoxError = e.into();
                log::debug!(target: "vessel::hyper", "{dir:?} body: {e}");
                if let Some(tx) = self.upstream_body.take() {
                    tx.push(Err(e.to_string().into()));
                }
                self.error = Some(e);
                self.stream.downstream_reset();
            }
        }
    }
}

/// A stream as [`ResponseFuture`](crate::ResponseFuture) drives it, with
/// its types erased.
pub(crate) trait Drive<E>: Send {
    /// Runs the stream until the response head is known.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Head, E>>;

    /// The response that starts with `head`; its body runs the rest of the
    /// stream as the client reads it (no task and no channel per
    /// response), and ends the stream when it drops.
    fn respond(self: Box<Self>, head: Head) -> Response<VesselBody>;
}

impl<S, B, RB> Drive<S::Error> for Exchange<S, B, RB>
where
    S: Service<Request<VesselBody>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + Unpin + 'static,
    RB::Error: Into<BoxError>,
{
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Head, S::Error>> {
        Exchange::poll_head(self, cx)
    }

    fn respond(mut self: Box<Self>, head: Head) -> Response<VesselBody> {
        let parts = match head {
            Head::Response(parts, end) => {
                // A body-less response: the stream ends with the body.
                self.body_done = end;
                parts
            }
            Head::Reset => {
                if self.error.is_none() {
                    self.error = Some("the filter chain reset the stream".into());
                }
                Response::new(()).into_parts().0
            }
        };
        Response::from_parts(parts, VesselBody::pump(self))
    }
}

impl<S, B, RB> Pump for Exchange<S, B, RB>
where
    S: Service<Request<VesselBody>, Response = Response<RB>> + Send,
    S::Future: Send,
    S::Error: Send,
    B: Body<Data = Bytes> + Send + Unpin,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + Unpin,
    RB::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.poll_body(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body_done
    }
}
