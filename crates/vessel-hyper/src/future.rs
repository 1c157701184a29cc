//! [`ResponseFuture`]: the future of [`VesselService`](crate::VesselService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;

use crate::body::VesselBody;
use crate::stream::Drive;

/// Resolves to the response the client gets. Dropping it (the client went
/// away) still ends every filter context of the stream.
pub struct ResponseFuture<E> {
    inner: Inner<E>,
}

enum Inner<E> {
    /// A stream through filters, until its response head is known.
    Filtered(Option<Box<dyn Drive<E>>>),
    /// The inner service's future (no filters).
    Passed(Pin<Box<dyn Future<Output = Result<Response<VesselBody>, E>> + Send>>),
}

impl<E> ResponseFuture<E> {
    pub(crate) fn filtered(stream: Box<dyn Drive<E>>) -> Self {
        Self {
            inner: Inner::Filtered(Some(stream)),
        }
    }

    pub(crate) fn passed(
        f: impl Future<Output = Result<Response<VesselBody>, E>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Inner::Passed(Box::pin(f)),
        }
    }
}

impl<E> std::fmt::Debug for ResponseFuture<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<E> Future for ResponseFuture<E> {
    type Output = Result<Response<VesselBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().inner {
            Inner::Passed(f) => f.as_mut().poll(cx),
            Inner::Filtered(slot) => {
                let Some(stream) = slot.as_mut() else {
                    panic!("ResponseFuture polled after completion");
                };
                let head = ready!(stream.poll_head(cx));
                let Some(stream) = slot.take() else {
                    unreachable!("the stream was there above");
                };
                Poll::Ready(head.map(|head| stream.respond(head)))
            }
        }
    }
}
