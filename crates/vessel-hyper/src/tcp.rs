//! TCP proxying on tokio: moves a downstream connection's bytes to an
//! upstream connection and back, with an idle timeout, the half-closes of
//! each side passed on, and the byte counts an embedder needs for its stats
//! (Envoy's `tcp_proxy`).

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
            read_chunk: 16 * 1024,
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
    let mut deadline = Instant::now() + idle;
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
            () = tokio::time::sleep_until(deadline) => {
                out.idle_timeout = true;
                break;
            }
        }
        deadline = Instant::now() + idle;
    }
    Ok(out)
}
