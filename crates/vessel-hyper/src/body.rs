//! [`VesselBody`]: the body type of requests sent upstream and of responses
//! sent to the client. It is either complete (local replies), streamed from
//! a channel fed by the filter chain (a request body going upstream), pumped
//! through the chain by the body's own `poll_frame` (a response body: no
//! task and no channel per response), or empty.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::stream::Chain;

/// Errors carried in a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One frame, or the error that ends a body.
pub(crate) type Item = Result<Frame<Bytes>, BoxError>;

/// Where the filter chain sends the frames that passed it.
#[derive(Clone)]
pub(crate) enum FrameTx {
    /// To a [`VesselBody`] read by someone else (the upstream's client).
    Channel(mpsc::Sender<Item>),
    /// To the [`VesselBody`] that polls the pump itself: a one-frame slot.
    /// A send waits (without a waker) while the slot is full; the body only
    /// polls the pump again once it has taken the frame out, so no wake-up
    /// is lost.
    Inline(Arc<Mutex<Option<Item>>>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FrameTx {
    /// Sends a frame; fails if the receiving body is gone.
    pub(crate) async fn send(&self, item: Item) -> Result<(), Item> {
        match self {
            Self::Channel(tx) => tx.send(item).await.map_err(|e| e.0),
            Self::Inline(slot) => {
                let mut item = Some(item);
                std::future::poll_fn(|_| {
                    let mut s = lock(slot);
                    if s.is_none() {
                        *s = item.take();
                        Poll::Ready(Ok(()))
                    } else {
                        Poll::Pending
                    }
                })
                .await
            }
        }
    }

    /// Resolves when the receiving body is gone. An inline pump is owned by
    /// its body, so it is dropped with it and never needs to ask.
    pub(crate) async fn closed(&self) {
        match self {
            Self::Channel(tx) => tx.closed().await,
            Self::Inline(_) => std::future::pending().await,
        }
    }
}

/// A response body pump: the future that runs the chain over the upstream
/// body (it owns the stream's [`Chain`]), and the slot it fills.
type PumpFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A body produced by the filter chain.
pub struct VesselBody {
    kind: Kind,
    /// Keeps the stream's contexts alive until the body is done with
    /// (`on_log`/`on_done`/`on_delete` run when the last holder drops).
    guard: Option<Chain>,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Item>),
    Pump {
        slot: Arc<Mutex<Option<Item>>>,
        /// `None` once the pump has finished. The mutex only makes the
        /// body `Sync`; it is reached through `get_mut`, never locked.
        pump: Option<Mutex<PumpFuture>>,
    },
    Error(Option<BoxError>),
}

impl std::fmt::Debug for VesselBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Channel(_) => "channel",
            Kind::Pump { .. } => "pump",
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
            guard: None,
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
            guard: None,
        }
    }

    /// A body that fails at once (the filter reset the stream).
    pub(crate) fn error(e: BoxError) -> Self {
        Self {
            kind: Kind::Error(Some(e)),
            guard: None,
        }
    }

    pub(crate) fn channel(capacity: usize) -> (FrameTx, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            FrameTx::Channel(tx),
            Self {
                kind: Kind::Channel(rx),
                guard: None,
            },
        )
    }

    /// A body whose frames come from `pump`, run by this body's
    /// `poll_frame`; `pump` gets the [`FrameTx`] to send them on.
    pub(crate) fn pumped<F, Fut>(pump: F) -> Self
    where
        F: FnOnce(FrameTx) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let slot = Arc::new(Mutex::new(None));
        let fut: PumpFuture = Box::pin(pump(FrameTx::Inline(slot.clone())));
        Self {
            kind: Kind::Pump {
                slot,
                pump: Some(Mutex::new(fut)),
            },
            guard: None,
        }
    }

    pub(crate) fn with_guard(mut self, chain: Chain) -> Self {
        self.guard = Some(chain);
        self
    }
}

impl Body for VesselBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Channel(rx) => rx.poll_recv(cx),
            Kind::Pump { slot, pump } => loop {
                if let Some(item) = lock(slot).take() {
                    return Poll::Ready(Some(item));
                }
                let Some(fut) = pump.as_mut() else {
                    return Poll::Ready(None);
                };
                let fut = fut.get_mut().unwrap_or_else(PoisonError::into_inner);
                match fut.as_mut().poll(cx) {
                    // Done: the chain is dropped here (on_log, on_done,
                    // on_delete); the last frame may still be in the slot.
                    Poll::Ready(()) => *pump = None,
                    // Waiting on the upstream body or a paused filter (it
                    // registered `cx`), or on the slot (take the frame).
                    Poll::Pending => {
                        if lock(slot).is_none() {
                            return Poll::Pending;
                        }
                    }
                }
            },
            Kind::Error(e) => Poll::Ready(e.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Channel(_) => false,
            Kind::Pump { slot, pump } => pump.is_none() && lock(slot).is_none(),
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
