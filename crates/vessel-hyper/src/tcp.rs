//! TCP proxying on tokio: moves a downstream connection's bytes to an
//! upstream connection and back, with an idle timeout, the half-closes of
//! each side passed on, and the byte counts an embedder needs for its stats
//! (Envoy's `tcp_proxy`).

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How a proxied connection is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    /// Close both sides when no byte moved either way for this long
    /// (`None`: never). Envoy's `tcp_proxy.idle_timeout` (default 1 h).
    pub idle_timeout: Option<Duration>,
    /// Bytes read from one side per read.
    pub read_chunk: usize,
}

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(3600)),
            read_chunk: 64 * 1024,
        }
    }
}

/// How a proxied connection ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpOutcome {
    /// Bytes read from the downstream (client).
    pub downstream_rx: u64,
    /// Bytes written to the downstream.
    pub downstream_tx: u64,
    /// The idle timeout closed the connection.
    pub idle_timeout: bool,
}

/// Proxies `downstream` to `upstream` until both directions ended (each
/// side's end of stream is passed on to the other as a half-close), an I/O
/// error, or the idle timeout. Both connections are closed when it returns.
pub async fn proxy<D, U>(downstream: D, upstream: U, options: TcpOptions) -> io::Result<TcpOutcome>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut dr, mut dw) = tokio::io::split(downstream);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let mut dbuf = vec![0u8; options.read_chunk.max(1)];
    let mut ubuf = vec![0u8; options.read_chunk.max(1)];
    let mut out = TcpOutcome::default();
    let (mut down_open, mut up_open) = (true, true);
    let far = Duration::from_secs(86_400 * 365);
    let idle = options.idle_timeout.unwrap_or(far);
    let mut idle_timer = IdleTimer::new(idle);
    while down_open || up_open {
        tokio::select! {
            r = dr.read(&mut dbuf), if down_open => {
                let n = r?;
                if n == 0 {
                    down_open = false;
                    uw.shutdown().await?;
                } else {
                    out.downstream_rx += n as u64;
                    uw.write_all(&dbuf[..n]).await?;
                }
            }
            r = ur.read(&mut ubuf), if up_open => {
                let n = r?;
                if n == 0 {
                    up_open = false;
                    dw.shutdown().await?;
                } else {
                    dw.write_all(&ubuf[..n]).await?;
                    out.downstream_tx += n as u64;
                }
            }
            expired = idle_timer.wait() => {
                if expired {
                    out.idle_timeout = true;
                    break;
                }
                continue;
            }
        }
        idle_timer.touch();
    }
    Ok(out)
}

/// The idle timeout of a connection: one timer, moved only when it fires
/// early (re-arming a timer for every chunk costs more than the chunk).
struct IdleTimer {
    idle: Duration,
    last: Instant,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    fn new(idle: Duration) -> Self {
        let last = Instant::now();
        Self {
            idle,
            last,
            sleep: Box::pin(tokio::time::sleep_until(last + idle)),
        }
    }

    /// Something moved: the timeout counts from now.
    fn touch(&mut self) {
        self.last = Instant::now();
    }

    /// Resolves when the timer fires: true if nothing moved for `idle`
    /// (false: it fired early and was moved; the caller loops).
    async fn wait(&mut self) -> bool {
        self.sleep.as_mut().await;
        let due = self.last + self.idle;
        if Instant::now() >= due {
            return true;
        }
        self.sleep.as_mut().reset(due);
        false
    }
}

/// Why a filtered connection ended ([`proxy_filtered`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilteredOutcome {
    /// Bytes and the idle timeout, as for [`proxy`].
    pub bytes: TcpOutcome,
    /// The upstream could not be reached.
    pub connect_failed: bool,
    /// A filter closed the connection, failed, or outgrew its buffer
    /// ([`vessel_host::CloseReason`]).
    pub close_reason: Option<vessel_host::CloseReason>,
}

/// One side of a filtered connection: its halves, while open.
struct Half<R, W> {
    read: Option<R>,
    write: Option<W>,
    /// Its end of stream was read.
    eof: bool,
}

impl<R, W: AsyncWrite + Unpin> Half<R, W> {
    fn open(read: R, write: W) -> Self {
        Self {
            read: Some(read),
            write: Some(write),
            eof: false,
        }
    }

    fn closed() -> Self {
        Self {
            read: None,
            write: None,
            eof: true,
        }
    }

    /// Writes `data`, then half-closes if `end`. An error closes the side.
    async fn send(&mut self, data: &[u8], end: bool) -> io::Result<()> {
        let Some(w) = self.write.as_mut() else {
            return Ok(());
        };
        let r = async {
            if !data.is_empty() {
                w.write_all(data).await?;
            }
            if end {
                w.shutdown().await?;
            }
            Ok(())
        }
        .await;
        if r.is_err() || end {
            self.write = None;
        }
        r
    }

    /// Flushes and closes both halves.
    async fn close(&mut self) {
        if let Some(mut w) = self.write.take() {
            let _ = w.shutdown().await;
        }
        self.read = None;
        self.eof = true;
    }
}

/// After a read of `n` bytes into `buf`: what more the socket has right
/// now, without waiting (Envoy reads until the socket would block, so bytes
/// and an end of stream that arrived together reach the filters in one
/// callback). The total, and whether the end of stream came with it.
fn read_ready<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8], mut n: usize) -> (usize, bool) {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    while n < buf.len() {
        let mut rb = tokio::io::ReadBuf::new(&mut buf[n..]);
        match std::pin::Pin::new(&mut *r).poll_read(&mut cx, &mut rb) {
            std::task::Poll::Ready(Ok(())) if rb.filled().is_empty() => return (n, true),
            std::task::Poll::Ready(Ok(())) => n += rb.filled().len(),
            // An error shows on the next read.
            std::task::Poll::Ready(Err(_)) | std::task::Poll::Pending => break,
        }
    }
    (n, false)
}

/// Reads once from `half` if it can be read; pending forever otherwise.
/// The bytes read and whether the end of stream came with them (an end
/// alone is `(0, true)`).
async fn read_half<R: AsyncRead + Unpin, W>(
    half: &mut Half<R, W>,
    buf: &mut [u8],
    paused: bool,
) -> io::Result<(usize, bool)> {
    match half.read.as_mut() {
        Some(r) if !half.eof && !paused => {
            let n = r.read(buf).await?;
            if n == 0 {
                return Ok((0, true));
            }
            Ok(read_ready(r, buf, n))
        }
        _ => std::future::pending().await,
    }
}

/// Proxies `downstream` to the upstream `connect` gives, through the
/// network filters of `pools` (one VM of each, pinned for the connection:
/// [`PooledChain`](crate::PooledChain)), with the rules of
/// [`vessel_host::TcpStream`]: the filters see every byte and may rewrite,
/// hold, or close; callouts they make run on tokio and their answers
/// resume the connection. `properties` are the connection's
/// (`source.address`, `connection.id`, ...). The upstream is connected
/// after `proxy_on_new_connection`; a failed connect closes the client.
/// `on_done`, `on_log` and `on_delete` run for every filter when the
/// connection ends, however it ends.
pub async fn proxy_filtered<D, U, C>(
    downstream: D,
    connect: C,
    pools: &[std::sync::Arc<crate::FilterPool>],
    properties: vessel_host::PropertyMap,
    buffer_limit: usize,
    options: TcpOptions,
) -> FilteredOutcome
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    C: Future<Output = io::Result<U>>,
{
    use vessel_host::{PeerType, TcpAction, TcpStream};

    let mut chain = crate::PooledChain::new(pools);
    let mut conn = TcpStream::new(pools.len(), buffer_limit);
    let mut out = FilteredOutcome::default();
    conn.new_connection(&mut chain, properties);
    let (dr, dw) = tokio::io::split(downstream);
    let mut down = Half::open(dr, dw);
    let mut up = if conn.is_closed() {
        Half::closed()
    } else {
        match connect.await {
            Ok(u) => {
                let (ur, uw) = tokio::io::split(u);
                Half::open(ur, uw)
            }
            Err(e) => {
                log::debug!("tcp: upstream connect failed: {e}");
                out.connect_failed = true;
                conn.upstream_closed(&mut chain, PeerType::Local);
                Half::closed()
            }
        }
    };
    let mut dbuf = vec![0u8; options.read_chunk.max(1)];
    let mut ubuf = vec![0u8; options.read_chunk.max(1)];
    let far = Duration::from_secs(86_400 * 365);
    let idle = options.idle_timeout.unwrap_or(far);
    let mut idle_timer = IdleTimer::new(idle);
    loop {
        // Carry out what the filters decided.
        while let Some(action) = conn.poll_action() {
            match action {
                TcpAction::UpstreamData { data, end_stream }
                    if up.send(&data, end_stream).await.is_err() =>
                {
                    conn.upstream_closed(&mut chain, PeerType::Remote);
                }
                TcpAction::DownstreamData { data, end_stream } => {
                    match down.send(&data, end_stream).await {
                        Ok(()) => out.bytes.downstream_tx += data.len() as u64,
                        Err(_) => conn.downstream_closed(&mut chain, PeerType::Remote),
                    }
                }
                TcpAction::CloseDownstream => down.close().await,
                TcpAction::CloseUpstream => up.close().await,
                _ => {}
            }
        }
        if conn.is_closed() {
            break;
        }
        let down_paused = conn.read_paused();
        let up_paused = conn.upstream_read_paused();
        tokio::select! {
            r = read_half(&mut down, &mut dbuf, down_paused) => match r {
                Ok((n, end)) => {
                    down.eof = end;
                    out.bytes.downstream_rx += n as u64;
                    conn.downstream_data(&mut chain, &dbuf[..n], end);
                }
                Err(_) => {
                    down.eof = true;
                    conn.downstream_closed(&mut chain, PeerType::Remote);
                }
            },
            r = read_half(&mut up, &mut ubuf, up_paused) => match r {
                Ok((n, end)) => {
                    up.eof = end;
                    conn.upstream_data(&mut chain, &ubuf[..n], end);
                }
                Err(_) => {
                    up.eof = true;
                    conn.upstream_closed(&mut chain, PeerType::Remote);
                }
            },
            (i, signal) = chain.next_signal() => conn.signal(&mut chain, i, signal),
            expired = idle_timer.wait() => {
                if expired {
                    out.bytes.idle_timeout = true;
                    break;
                }
                continue;
            }
        }
        idle_timer.touch();
    }
    out.close_reason = conn.close_reason();
    conn.finish(&mut chain);
    // Actions `finish` queued (closes) need no I/O beyond dropping.
    down.close().await;
    up.close().await;
    out
}
