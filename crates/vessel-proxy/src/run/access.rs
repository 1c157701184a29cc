//! Per-listener request counters (`http.<stat_prefix>.downstream_rq_*`, as
//! Envoy names them) and the optional access log: one line on stdout per
//! request, written when the response body is finished with.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use vessel_hyper::{BoxError, VesselBody};

/// One listener's request counters.
#[derive(Debug, Default)]
pub(crate) struct ListenerStats {
    prefix: String,
    total: AtomicU64,
    /// Index `n - 1` counts `nxx` responses.
    classes: [AtomicU64; 5],
}

impl ListenerStats {
    pub(crate) fn new(stat_prefix: &str) -> Self {
        Self {
            prefix: format!("http.{stat_prefix}."),
            ..Self::default()
        }
    }

    /// `http.<stat_prefix>.`.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Counts a response with `status`.
    pub(crate) fn record(&self, status: u16) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.classes.get(usize::from(i)))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(name, value)` of every counter.
    pub(crate) fn counters(&self) -> Vec<(String, u64)> {
        let mut out = vec![(
            format!("{}downstream_rq_total", self.prefix),
            self.total.load(Ordering::Relaxed),
        )];
        for (i, c) in self.classes.iter().enumerate() {
            out.push((
                format!("{}downstream_rq_{}xx", self.prefix, i + 1),
                c.load(Ordering::Relaxed),
            ));
        }
        out
    }
}

/// What the access log line says about a request.
pub(crate) struct Entry {
    pub(crate) start: Instant,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) protocol: &'static str,
    pub(crate) status: u16,
    pub(crate) bytes_sent: u64,
}

impl Entry {
    fn line(&self) -> String {
        format!(
            "\"{} {} {}\" {} {} {}ms\n",
            self.method,
            self.path,
            self.protocol,
            self.status,
            self.bytes_sent,
            self.start.elapsed().as_millis()
        )
    }
}

/// The protocol as Envoy's `%PROTOCOL%` prints it.
pub(crate) fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// A response body that writes the access log line when dropped.
pub(crate) struct LoggedBody {
    inner: VesselBody,
    entry: Option<Entry>,
}

impl LoggedBody {
    /// `entry: None` logs nothing.
    pub(crate) fn new(inner: VesselBody, entry: Option<Entry>) -> Self {
        Self { inner, entry }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(e) = self.entry.take() {
            let _ = std::io::stdout().lock().write_all(e.line().as_bytes());
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(e)) = (&polled, this.entry.as_mut())
            && let Some(data) = frame.data_ref()
        {
            e.bytes_sent += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Shared per-listener logging settings.
pub(crate) struct AccessLog {
    pub(crate) enabled: bool,
    pub(crate) stats: Arc<ListenerStats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_status_class() {
        let s = ListenerStats::new("ingress");
        s.record(200);
        s.record(204);
        s.record(503);
        s.record(42);
        let c = s.counters();
        let get = |n: &str| {
            c.iter()
                .find(|(name, _)| name == n)
                .map(|(_, v)| *v)
                .expect(n)
        };
        assert_eq!(get("http.ingress.downstream_rq_total"), 4);
        assert_eq!(get("http.ingress.downstream_rq_2xx"), 2);
        assert_eq!(get("http.ingress.downstream_rq_5xx"), 1);
        assert_eq!(get("http.ingress.downstream_rq_4xx"), 0);
    }
}
