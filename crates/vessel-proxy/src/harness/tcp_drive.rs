//! Drives one scripted TCP connection through a real proxy: a client
//! socket to the proxy's listener and the upstream socket the proxy opens
//! to a loopback listener, each step of the script carried out on one of
//! them, with bounded waits, and what each side received recorded.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// How long a step may wait for the bytes (or the close) it expects.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the end of a connection may wait for each side's last bytes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// One step of a connection's script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The client writes these bytes.
    ClientSend(Vec<u8>),
    /// The upstream must receive exactly these next bytes.
    UpstreamReceive(Vec<u8>),
    /// The upstream writes these bytes.
    UpstreamSend(Vec<u8>),
    /// The client must receive exactly these next bytes.
    ClientReceive(Vec<u8>),
    /// The client half-closes (shuts its write side).
    ClientClose,
    /// The upstream half-closes.
    UpstreamClose,
    /// The client must see the proxy close the connection.
    ClientReceiveClose,
    /// The upstream must see the proxy close the connection.
    UpstreamReceiveClose,
    /// Nothing happens for this long (the proxy reads what was sent).
    Sleep(Duration),
}

/// What one connection showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    /// Every byte the client received.
    pub(crate) client_received: Vec<u8>,
    /// Every byte the upstream received.
    pub(crate) upstream_received: Vec<u8>,
    /// The client saw the proxy close the connection (end of stream or
    /// reset) before the script's end.
    pub(crate) client_closed_by_proxy: bool,
    /// The upstream saw the proxy close the connection before the
    /// script's end.
    pub(crate) upstream_closed_by_proxy: bool,
    /// The proxy opened a connection to the upstream.
    pub(crate) upstream_connected: bool,
    /// The steps that did not go as scripted, in order (`step 3
    /// (upstream_receive): ...`).
    pub(crate) failures: Vec<String>,
}

/// A socket of the driver: plain TCP, or TLS over it (the client with a
/// scenario's `tls`).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One side of the connection.
#[derive(Default)]
struct Side {
    stream: Option<Box<dyn Io>>,
    /// Received, not yet consumed by a `*_receive` step.
    pending: Vec<u8>,
    /// Everything received.
    all: Vec<u8>,
    /// The peer closed (or reset) the connection.
    eof: bool,
    /// This side shut its write half.
    shut: bool,
}

impl Side {
    /// Reads once, until `deadline`. False on timeout.
    async fn read_some(&mut self, deadline: Instant) -> bool {
        let Some(s) = self.stream.as_mut() else {
            self.eof = true;
            return true;
        };
        let mut buf = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => false,
            Ok(Ok(0) | Err(_)) => {
                self.eof = true;
                true
            }
            Ok(Ok(n)) => {
                self.pending.extend_from_slice(&buf[..n]);
                self.all.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// Waits for `n` pending bytes, the end of stream, or the deadline.
    async fn fill(&mut self, n: usize, deadline: Instant) {
        while self.pending.len() < n && !self.eof {
            if !self.read_some(deadline).await {
                return;
            }
        }
    }

    /// Reads until the end of stream or the deadline; true at the end of
    /// stream.
    async fn until_eof(&mut self, deadline: Instant) -> bool {
        while !self.eof {
            if !self.read_some(deadline).await {
                return false;
            }
        }
        true
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let Some(s) = self.stream.as_mut() else {
            return Err("no connection".into());
        };
        s.write_all(bytes).await.map_err(|e| e.to_string())
    }

    async fn shutdown(&mut self) {
        if let Some(s) = self.stream.as_mut()
            && !self.shut
        {
            let _ = s.shutdown().await;
        }
        self.shut = true;
    }
}

/// Bytes as text for messages: UTF-8 lossily, at most 200 characters.
pub(crate) fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out: String = s.chars().take(200).collect();
    if s.chars().count() > 200 {
        out.push_str("...");
    }
    format!("{out:?}")
}

/// Accepts the proxy's connection to the upstream, if it comes by
/// `deadline`.
async fn accept(upstream: &TcpListener, side: &mut Side, deadline: Instant) {
    if side.stream.is_some() || side.eof {
        return;
    }
    if let Ok(Ok((s, _))) = tokio::time::timeout_at(deadline, upstream.accept()).await {
        let _ = s.set_nodelay(true);
        side.stream = Some(Box::new(s));
    }
}

/// Runs `steps` on a new connection to `front`; the proxy's upstream
/// connection is accepted on `upstream`.
pub(crate) async fn drive(
    front: SocketAddr,
    upstream: &TcpListener,
    steps: &[Step],
    tls: Option<&super::tls::RunTls>,
) -> Observed {
    let mut out = Observed::default();
    let mut client = Side::default();
    let connect = async {
        Ok::<Box<dyn Io>, std::io::Error>(match tls {
            Some(t) => Box::new(t.connect_stream(front).await?),
            None => {
                let s = TcpStream::connect(front).await?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
        })
    };
    match tokio::time::timeout(STEP_TIMEOUT, connect).await {
        Ok(Ok(s)) => client.stream = Some(s),
        Ok(Err(e)) => {
            out.failures.push(format!("connecting to the proxy: {e}"));
            return out;
        }
        Err(_) => {
            out.failures
                .push("connecting to the proxy timed out".into());
            return out;
        }
    }
    let mut up = Side::default();
    for (i, step) in steps.iter().enumerate() {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let label = |name: &str, what: String| format!("step {} ({name}): {what}", i + 1);
        match step {
            Step::ClientSend(b) => {
                if let Err(e) = client.send(b).await {
                    out.failures.push(label("client_send", e));
                }
            }
            Step::UpstreamSend(b) => {
                accept(upstream, &mut up, deadline).await;
                if let Err(e) = up.send(b).await {
                    out.failures.push(label("upstream_send", e));
                }
            }
            Step::ClientReceive(want) | Step::UpstreamReceive(want) => {
                let (side, name) = if matches!(step, Step::ClientReceive(_)) {
                    (&mut client, "client_receive")
                } else {
                    accept(upstream, &mut up, deadline).await;
                    (&mut up, "upstream_receive")
                };
                side.fill(want.len(), deadline).await;
                let n = want.len().min(side.pending.len());
                let got: Vec<u8> = side.pending.drain(..n).collect();
                if got != *want {
                    let why = if side.eof {
                        "the connection closed"
                    } else {
                        "nothing more came"
                    };
                    out.failures.push(label(
                        name,
                        format!("expected {}, got {} ({why})", show(want), show(&got)),
                    ));
                }
            }
            Step::Sleep(d) => tokio::time::sleep(*d).await,
            Step::ClientClose => client.shutdown().await,
            Step::UpstreamClose => {
                accept(upstream, &mut up, deadline).await;
                up.shutdown().await;
            }
            Step::ClientReceiveClose | Step::UpstreamReceiveClose => {
                let (side, name) = if matches!(step, Step::ClientReceiveClose) {
                    (&mut client, "client_receive_close")
                } else {
                    accept(upstream, &mut up, deadline).await;
                    (&mut up, "upstream_receive_close")
                };
                let closed = side.until_eof(deadline).await;
                let extra = std::mem::take(&mut side.pending);
                if !closed {
                    out.failures
                        .push(label(name, "the connection stayed open".into()));
                } else if !extra.is_empty() {
                    out.failures.push(label(
                        name,
                        format!("bytes came before the close: {}", show(&extra)),
                    ));
                }
            }
        }
    }
    out.client_closed_by_proxy = client.eof;
    out.upstream_closed_by_proxy = up.eof;
    // The end: both sides close and read what is left.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    client.shutdown().await;
    accept(
        upstream,
        &mut up,
        Instant::now() + Duration::from_millis(200),
    )
    .await;
    up.until_eof(deadline).await;
    up.shutdown().await;
    client.until_eof(deadline).await;
    out.upstream_connected = up.stream.is_some();
    out.client_received = client.all;
    out.upstream_received = up.all;
    out
}
