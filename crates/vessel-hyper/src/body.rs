//! [`VesselBody`]: the body type of requests sent upstream and of responses
//! sent to the client. It is either complete (local replies), streamed from
//! a channel fed by the filter chain, or empty.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// Errors carried in a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) type FrameTx = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

/// A body produced by the filter chain.
pub struct VesselBody {
    kind: Kind,
    /// Keeps the stream's contexts alive until the body is done with
    /// (`on_log`/`on_done`/`on_delete` run when the last holder drops).
    _guard: Option<Box<dyn Send + Sync>>,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Result<Frame<Bytes>, BoxError>>),
    Error(Option<BoxError>),
}

impl std::fmt::Debug for VesselBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Channel(_) => "channel",
            Kind::Error(_) => "error",
        };
        f.debug_struct("VesselBody").field("kind", &kind).finish()
    }
}

impl VesselBody {
    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Empty,
            _guard: None,
        }
    }

    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b: Bytes = bytes.into();
        Self {
            kind: if b.is_empty() {
                Kind::Empty
            } else {
                Kind::Full(Some(b))
            },
            _guard: None,
        }
    }

    /// A body that fails at once (the filter reset the stream).
    pub(crate) fn error(e: BoxError) -> Self {
        Self {
            kind: Kind::Error(Some(e)),
            _guard: None,
        }
    }

    pub(crate) fn channel(capacity: usize) -> (FrameTx, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            tx,
            Self {
                kind: Kind::Channel(rx),
                _guard: None,
            },
        )
    }

    pub(crate) fn with_guard(mut self, guard: impl Send + Sync + 'static) -> Self {
        self._guard = Some(Box::new(guard));
        self
    }
}

impl Body for VesselBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Channel(rx) => rx.poll_recv(cx),
            Kind::Error(e) => Poll::Ready(e.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Channel(_) => false,
            Kind::Error(e) => e.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
