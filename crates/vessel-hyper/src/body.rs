//! [`VesselBody`]: the body type of requests sent upstream and of responses
//! sent to the client. It is either complete (local replies), fed through a
//! bounded pipe by the stream's task (a request body going upstream),
//! pumped through the filter chain by the body's own `poll_frame` (a
//! response body: no task and no channel per response), passed through
//! untouched (no filters), or empty.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

/// Errors carried in a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One frame, or the error that ends a body.
pub(crate) type Item = Result<Frame<Bytes>, BoxError>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How many frames a request pipe holds before the stream stops reading
/// the client's body.
const PIPE_FRAMES: usize = 16;

#[derive(Default)]
struct PipeState {
    queue: VecDeque<Item>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    writer_gone: bool,
    reader_gone: bool,
}

/// The writing end of a request body's pipe (the stream's task).
pub(crate) struct PipeTx(Arc<Mutex<PipeState>>);

/// The reading end (the upstream's client).
struct PipeRx(Arc<Mutex<PipeState>>);

/// The reader of a pipe went away.
#[derive(Debug)]
pub(crate) struct PipeClosed;

impl PipeTx {
    /// Queues a frame (the pipe may go over its size by the frames of one
    /// event; [`poll_ready`](Self::poll_ready) is what holds the client
    /// back).
    pub(crate) fn push(&self, item: Item) {
        let waker = {
            let mut s = lock(&self.0);
            if s.reader_gone {
                return;
            }
            s.queue.push_back(item);
            s.reader.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ready when the pipe has room for more; an error once the reader is
    /// gone.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), PipeClosed>> {
        let mut s = lock(&self.0);
        if s.reader_gone {
            return Poll::Ready(Err(PipeClosed));
        }
        if s.queue.len() < PIPE_FRAMES {
            return Poll::Ready(Ok(()));
        }
        match &mut s.writer {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for PipeTx {
    fn drop(&mut self) {
        let waker = {
            let mut s = lock(&self.0);
            s.writer_gone = true;
            s.reader.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl PipeRx {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let (item, waker) = {
            let mut s = lock(&self.0);
            match s.queue.pop_front() {
                Some(item) => (Some(item), s.writer.take()),
                None if s.writer_gone => return Poll::Ready(None),
                None => {
                    match &mut s.reader {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        w => *w = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        Poll::Ready(item)
    }

    fn is_end_stream(&self) -> bool {
        let s = lock(&self.0);
        s.writer_gone && s.queue.is_empty()
    }
}

impl Drop for PipeRx {
    fn drop(&mut self) {
        let waker = {
            let mut s = lock(&self.0);
            s.reader_gone = true;
            s.queue.clear();
            s.writer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// What runs the rest of a stream as its response body is read: the
/// stream's pump, which owns the stream (it ends when the pump drops).
pub(crate) trait Pump: Send {
    /// The next frame of the response body.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>>;
    /// True once no frame is left.
    fn is_end_stream(&self) -> bool;
}

/// A body produced by the filter chain.
pub struct VesselBody {
    kind: Kind,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Pipe(PipeRx),
    /// The mutex only makes the body `Sync`; it is reached through
    /// `get_mut`, never locked. `ended` is the pump's `is_end_stream` as
    /// of the last poll (only a poll changes it), so hyper's checks
    /// between polls read a flag.
    Pump {
        pump: Mutex<Box<dyn Pump>>,
        ended: bool,
    },
    /// Another body, untouched (a chain with no filters). The mutex only
    /// makes the body `Sync`, as above.
    Passed(Mutex<UnsyncBoxBody<Bytes, BoxError>>),
}

impl std::fmt::Debug for VesselBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Pipe(_) => "pipe",
            Kind::Pump { .. } => "pump",
            Kind::Passed(_) => "passed",
        };
        f.debug_struct("VesselBody").field("kind", &kind).finish()
    }
}

impl VesselBody {
    fn of(kind: Kind) -> Self {
        Self { kind }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::of(Kind::Empty)
    }

    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b: Bytes = bytes.into();
        Self::of(if b.is_empty() {
            Kind::Empty
        } else {
            Kind::Full(Some(b))
        })
    }

    /// Another body, passed on as it is.
    pub(crate) fn passed<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self::of(Kind::Passed(Mutex::new(
            body.map_err(Into::into).boxed_unsync(),
        )))
    }

    /// A body fed by the returned [`PipeTx`].
    pub(crate) fn pipe() -> (PipeTx, Self) {
        let state = Arc::new(Mutex::new(PipeState::default()));
        (PipeTx(state.clone()), Self::of(Kind::Pipe(PipeRx(state))))
    }

    /// A body whose frames come from `pump`.
    pub(crate) fn pump(pump: Box<dyn Pump>) -> Self {
        Self::of(Kind::Pump {
            ended: pump.is_end_stream(),
            pump: Mutex::new(pump),
        })
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
            Kind::Pipe(rx) => rx.poll_frame(cx),
            Kind::Pump { pump, ended } => {
                let pump = pump.get_mut().unwrap_or_else(PoisonError::into_inner);
                let frame = pump.poll_frame(cx);
                *ended = pump.is_end_stream();
                frame
            }
            Kind::Passed(b) => {
                Pin::new(b.get_mut().unwrap_or_else(PoisonError::into_inner)).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Pipe(rx) => rx.is_end_stream(),
            Kind::Pump { ended, .. } => *ended,
            Kind::Passed(b) => lock(b).is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Passed(b) => lock(b).size_hint(),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pipe_holds_the_writer_back_when_full_and_ends_when_it_goes() {
        let (tx, mut body) = VesselBody::pipe();
        let ready = |tx: &PipeTx| {
            let waker = Waker::noop();
            tx.poll_ready(&mut Context::from_waker(waker))
        };
        for i in 0..PIPE_FRAMES {
            assert!(matches!(ready(&tx), Poll::Ready(Ok(()))), "frame {i}");
            tx.push(Ok(Frame::data(Bytes::from(vec![b'a'; 3]))));
        }
        assert!(ready(&tx).is_pending(), "full");
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data").len(), 3);
        assert!(matches!(ready(&tx), Poll::Ready(Ok(()))), "room again");
        drop(tx);
        let mut n = 1;
        while let Some(f) = body.frame().await {
            f.expect("data");
            n += 1;
        }
        assert_eq!(n, PIPE_FRAMES);
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn a_pipe_tells_the_writer_when_the_reader_is_gone() {
        let (tx, body) = VesselBody::pipe();
        drop(body);
        let waker = Waker::noop();
        assert!(matches!(
            tx.poll_ready(&mut Context::from_waker(waker)),
            Poll::Ready(Err(PipeClosed))
        ));
    }
}
