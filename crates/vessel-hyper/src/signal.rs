//! The queue that carries [`StreamSignal`]s (continue, local reply, close,
//! VM failure) from effect dispatch, outside the stream's own callbacks, to
//! the task that drives the stream ([`PooledChain::next_signal`]).
//!
//! Every stream has one, shared by its filters (each signal names the
//! filter it is for), and almost none is ever used: a filter that never
//! pauses, replies or closes from a root callback sends nothing. So it must
//! cost next to nothing to create: one small allocation, where tokio's
//! unbounded channel allocates a block of 32 messages up front. The
//! receiver never sees the end of the queue: a stream waits for a signal
//! only while a filter holds it, and the chain keeps that filter's VM (and
//! so its senders) alive.
//!
//! [`PooledChain::next_signal`]: crate::PooledChain::next_signal

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use vessel_host::StreamSignal;

/// A signal for filter `.0` of a stream.
pub(crate) type Routed = (usize, StreamSignal);

#[derive(Default)]
struct State {
    queue: VecDeque<Routed>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The queue is not empty: read without the lock, so a stream that
    /// looks for signals between its other events pays one atomic load.
    pending: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending side, kept in a VM's stream table (one per context).
#[derive(Clone)]
pub(crate) struct SignalTx(Arc<Shared>);

/// The receiving side, kept by the stream's chain.
pub(crate) struct SignalRx(Arc<Shared>);

/// A new queue.
pub(crate) fn channel() -> (SignalTx, SignalRx) {
    let shared = Arc::new(Shared::default());
    (SignalTx(shared.clone()), SignalRx(shared))
}

impl SignalTx {
    /// Queues a signal and wakes the stream if it waits.
    pub(crate) fn send(&self, signal: Routed) {
        let waker = {
            let mut s = self.0.lock();
            s.queue.push_back(signal);
            self.0.pending.store(true, Ordering::Release);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl SignalRx {
    fn pop(&self, s: &mut State) -> Option<Routed> {
        let signal = s.queue.pop_front();
        if s.queue.is_empty() {
            self.0.pending.store(false, Ordering::Release);
        }
        signal
    }

    /// The next queued signal, if any.
    pub(crate) fn try_recv(&mut self) -> Option<Routed> {
        if !self.0.pending.load(Ordering::Acquire) {
            return None;
        }
        let mut s = self.0.lock();
        self.pop(&mut s)
    }

    /// The next signal, or `Pending` (and a wake-up when one comes).
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Routed> {
        let mut s = self.0.lock();
        if let Some(signal) = self.pop(&mut s) {
            return Poll::Ready(signal);
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_host::Direction;

    #[tokio::test]
    async fn fifo_from_every_sender() {
        let (tx, mut rx) = channel();
        assert!(rx.try_recv().is_none());
        let tx2 = tx.clone();
        tx.send((0, StreamSignal::Continue(Direction::Request)));
        tx2.send((1, StreamSignal::Close));
        assert_eq!(
            rx.try_recv(),
            Some((0, StreamSignal::Continue(Direction::Request)))
        );
        let next = std::future::poll_fn(|cx| rx.poll_recv(cx)).await;
        assert_eq!(next, (1, StreamSignal::Close));
    }

    #[tokio::test]
    async fn a_send_wakes_the_waiting_stream() {
        let (tx, mut rx) = channel();
        let waiter = tokio::spawn(async move { std::future::poll_fn(|cx| rx.poll_recv(cx)).await });
        tokio::task::yield_now().await;
        tx.send((2, StreamSignal::VmFailed));
        assert_eq!(waiter.await.expect("joins"), (2, StreamSignal::VmFailed));
    }
}
