//! The queue that carries [`Signal`]s (continue, local reply, reset, VM
//! failure) from effect dispatch to a stream's filter slot.
//!
//! Every stream has one per filter, and almost none is ever used (a filter
//! that never pauses, replies or closes sends nothing), so it must cost
//! next to nothing to create: one small allocation, where tokio's
//! unbounded channel allocates a block of 32 signals up front. It behaves
//! like that channel: unbounded, FIFO, and `recv` gives `None` once every
//! sender is gone (the VM dropped the stream).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use crate::pool::Signal;

struct State {
    queue: VecDeque<Signal>,
    waker: Option<Waker>,
    senders: usize,
}

struct Shared(Mutex<State>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending side, kept in the VM's stream table.
pub(crate) struct SignalTx(Arc<Shared>);

/// The receiving side, kept by the stream's filter slot.
pub(crate) struct SignalRx(Arc<Shared>);

/// A new queue.
pub(crate) fn channel() -> (SignalTx, SignalRx) {
    let shared = Arc::new(Shared(Mutex::new(State {
        queue: VecDeque::new(),
        waker: None,
        senders: 1,
    })));
    (SignalTx(shared.clone()), SignalRx(shared))
}

impl SignalTx {
    /// Queues a signal and wakes the stream if it waits.
    pub(crate) fn send(&self, signal: Signal) -> Result<(), Signal> {
        let waker = {
            let mut s = self.0.lock();
            s.queue.push_back(signal);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl Clone for SignalTx {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Self(self.0.clone())
    }
}

impl Drop for SignalTx {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.0.lock();
            s.senders -= 1;
            if s.senders == 0 { s.waker.take() } else { None }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Why [`SignalRx::try_recv`] gave nothing.
#[derive(Debug)]
pub(crate) struct Empty;

impl SignalRx {
    /// The next queued signal, if any.
    pub(crate) fn try_recv(&mut self) -> Result<Signal, Empty> {
        self.0.lock().queue.pop_front().ok_or(Empty)
    }

    /// Waits for the next signal; `None` once every sender is gone and the
    /// queue is empty.
    pub(crate) async fn recv(&mut self) -> Option<Signal> {
        std::future::poll_fn(|cx| {
            let mut s = self.0.lock();
            if let Some(signal) = s.queue.pop_front() {
                return Poll::Ready(Some(signal));
            }
            if s.senders == 0 {
                return Poll::Ready(None);
            }
            match &mut s.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_host::StreamType;

    #[tokio::test]
    async fn fifo_then_none_when_the_senders_are_gone() {
        let (tx, mut rx) = channel();
        assert!(rx.try_recv().is_err());
        let tx2 = tx.clone();
        tx.send(Signal::Continue(StreamType::HttpRequest)).ok();
        tx2.send(Signal::Reset).ok();
        assert!(matches!(
            rx.try_recv(),
            Ok(Signal::Continue(StreamType::HttpRequest))
        ));
        assert!(matches!(rx.recv().await, Some(Signal::Reset)));
        drop(tx);
        let waiter = tokio::spawn(async move { rx.recv().await.is_none() });
        tokio::task::yield_now().await;
        drop(tx2);
        assert!(
            waiter.await.expect("joins"),
            "recv ends once every sender is gone"
        );
    }

    #[tokio::test]
    async fn a_send_wakes_the_waiting_stream() {
        let (tx, mut rx) = channel();
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.send(Signal::Failed).ok();
        assert!(matches!(waiter.await.expect("joins"), Some(Signal::Failed)));
    }
}
