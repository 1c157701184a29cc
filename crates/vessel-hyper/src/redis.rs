//! Carries out Higress's Redis calls (`Effect::RedisCall`, ABI 0.2.100; see
//! `vessel_host::hostcalls::redis`) the way Envoy-Higress's Redis async
//! client does: the guest's RESP-encoded command goes as is over TCP to an
//! endpoint of the named cluster, and exactly one RESP reply comes back,
//! raw. A new connection first sends `AUTH [username] password` (when a
//! password is set) and `SELECT db` (when the database is not 0); like
//! Envoy, their replies are read and dropped, so a failed `AUTH` shows up
//! as `-NOAUTH` on the guest's own command.
//!
//! Bounds: the whole call (connecting included) is limited by the
//! options' timeout; a reply larger than [`MAX_REPLY_BYTES`] or malformed
//! fails the call. A failure of any kind is [`RedisCallOutcome::Failed`]
//! (status 1 for the guest) and drops the connection. Connections that
//! answered cleanly are kept for reuse, per endpoint and options, up to
//! [`MAX_IDLE_CONNECTIONS`] per cluster.

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vessel_host::{RedisCallOutcome, RedisCallRequest, RedisOptions};

use crate::cluster::Clusters;

/// Largest reply accepted, in bytes.
pub const MAX_REPLY_BYTES: usize = 16 << 20;

/// Largest number of idle connections kept per cluster.
pub const MAX_IDLE_CONNECTIONS: usize = 16;

/// Longest header line (`$123\r\n`, `+OK\r\n`, `-ERR ...\r\n`) accepted.
const MAX_LINE_BYTES: usize = 64 << 10;

/// Why bytes are not a RESP reply.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// A value starts with a byte that is no RESP type.
    #[error("RESP: unknown type byte 0x{0:02x}")]
    UnknownType(u8),
    /// A length or integer line is not a number, or a length is negative.
    #[error("RESP: bad length or integer line")]
    BadNumber,
    /// A bulk string is not followed by CRLF.
    #[error("RESP: bulk string without its CRLF")]
    MissingCrlf,
    /// A header line is longer than the limit.
    #[error("RESP: line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    /// The reply is larger than the limit.
    #[error("RESP: reply larger than {0} bytes")]
    TooLarge(usize),
}

/// Finds the CRLF ending the line that starts at `from`. `Ok(None)` if
/// the line is not complete yet.
fn line_end(buf: &[u8], from: usize) -> Result<Option<usize>, RespError> {
    let rest = buf.get(from..).unwrap_or_default();
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i > MAX_LINE_BYTES => Err(RespError::LineTooLong),
        Some(i) => Ok(Some(from + i)),
        None if rest.len() > MAX_LINE_BYTES => Err(RespError::LineTooLong),
        None => Ok(None),
    }
}

fn number(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(RespError::BadNumber)
}

/// The length of the first complete RESP (2 or 3) reply at the start of
/// `buf`: `Ok(Some(n))` once it is complete, `Ok(None)` while more bytes
/// are needed, `Err` if the bytes cannot be a reply or it would exceed
/// `limit` bytes. Iterative (no recursion), so nesting depth cannot
/// overflow the stack; never panics.
pub fn reply_len(buf: &[u8], limit: usize) -> Result<Option<usize>, RespError> {
    let incomplete = |buf: &[u8]| {
        if buf.len() > limit {
            Err(RespError::TooLarge(limit))
        } else {
            Ok(None)
        }
    };
    let mut pos = 0usize;
    // Values still to read; each takes at least 3 bytes, so more than
    // `limit` of them cannot fit.
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        let Some(&ty) = buf.get(pos) else {
            return incomplete(buf);
        };
        let Some(end) = line_end(buf, pos + 1)? else {
            return incomplete(buf);
        };
        let line = &buf[pos + 1..end];
        pos = end + 2;
        match ty {
            b'+' | b'-' | b'_' | b',' | b'#' | b'(' => {}
            b':' => {
                number(line)?;
            }
            b'$' | b'!' | b'=' => {
                let n = number(line)?;
                if n == -1 && ty == b'$' {
                    continue; // RESP2 null bulk string
                }
                let n = usize::try_from(n).map_err(|_| RespError::BadNumber)?;
                if n > limit {
                    return Err(RespError::TooLarge(limit));
                }
                let Some(after) = pos.checked_add(n).and_then(|p| p.checked_add(2)) else {
                    return Err(RespError::TooLarge(limit));
                };
                if buf.len() < after {
                    return incomplete(buf);
                }
                if &buf[after - 2..after] != b"\r\n" {
                    return Err(RespError::MissingCrlf);
                }
                pos = after;
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = number(line)?;
                if n == -1 && ty == b'*' {
                    continue; // RESP2 null array
                }
                let n = u64::try_from(n).map_err(|_| RespError::BadNumber)?;
                let values = match ty {
                    b'%' => n.saturating_mul(2),
                    // An attribute map, then the value it annotates.
                    b'|' => n.saturating_mul(2).saturating_add(1),
                    _ => n,
                };
                pending = pending.saturating_add(values);
                if pending > limit as u64 {
                    return Err(RespError::TooLarge(limit));
                }
            }
            other => return Err(RespError::UnknownType(other)),
        }
        if pos > limit {
            return Err(RespError::TooLarge(limit));
        }
    }
    Ok(Some(pos))
}

/// Encodes a command as a RESP array of bulk strings.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One connection and what it was set up with.
struct Conn {
    endpoint: SocketAddr,
    options: RedisOptions,
    stream: TcpStream,
}

/// Idle Redis connections of one cluster, reused across calls.
#[derive(Default)]
pub struct IdleConnections {
    conns: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for IdleConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.conns.lock().map_or(0, |c| c.len());
        f.debug_struct("IdleConnections").field("idle", &n).finish()
    }
}

impl IdleConnections {
    fn take(&self, endpoint: SocketAddr, options: &RedisOptions) -> Option<TcpStream> {
        let mut conns = self.conns.lock().ok()?;
        let i = conns
            .iter()
            .position(|c| c.endpoint == endpoint && &c.options == options)?;
        Some(conns.swap_remove(i).stream)
    }

    fn put(&self, endpoint: SocketAddr, options: &RedisOptions, stream: TcpStream) {
        if let Ok(mut conns) = self.conns.lock()
            && conns.len() < MAX_IDLE_CONNECTIONS
        {
            conns.push(Conn {
                endpoint,
                options: options.clone(),
                stream,
            });
        }
    }
}

/// Reads one reply from `stream`. `None` on EOF, an I/O error, a bad reply
/// or extra bytes after it (the connection is then not reused).
async fn read_reply(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    loop {
        if stream.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
        match reply_len(&buf, MAX_REPLY_BYTES) {
            Ok(Some(n)) if n == buf.len() => return Some(buf),
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) => {}
        }
    }
}

async fn connect(endpoint: SocketAddr, options: &RedisOptions) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(endpoint).await.ok()?;
    let _ = stream.set_nodelay(true);
    if !options.password.is_empty() {
        let auth = if options.username.is_empty() {
            command(&[b"AUTH", options.password.as_bytes()])
        } else {
            command(&[
                b"AUTH",
                options.username.as_bytes(),
                options.password.as_bytes(),
            ])
        };
        stream.write_all(&auth).await.ok()?;
        read_reply(&mut stream).await?;
    }
    if options.database != 0 {
        let db = options.database.to_string();
        stream
            .write_all(&command(&[b"SELECT", db.as_bytes()]))
            .await
            .ok()?;
        read_reply(&mut stream).await?;
    }
    Some(stream)
}

/// Sends one command to `endpoint` and reads its reply, reusing (and
/// returning) a connection from `idle`.
pub async fn call(
    endpoint: SocketAddr,
    call: &RedisCallRequest,
    idle: &IdleConnections,
) -> RedisCallOutcome {
    let options = &call.options;
    let run = async {
        let mut stream = match idle.take(endpoint, options) {
            Some(s) => s,
            None => connect(endpoint, options).await?,
        };
        stream.write_all(&call.query).await.ok()?;
        let reply = read_reply(&mut stream).await?;
        Some((stream, reply))
    };
    match tokio::time::timeout(options.timeout, run).await {
        Ok(Some((stream, reply))) => {
            idle.put(endpoint, options, stream);
            RedisCallOutcome::Reply(reply)
        }
        Ok(None) | Err(_) => {
            log::debug!(target: "vessel::redis", "redis call to {} ({endpoint}) failed", call.cluster);
            RedisCallOutcome::Failed
        }
    }
}

/// Carries out a call on a registered cluster (round-robin endpoint).
pub(crate) async fn cluster_call(clusters: &Clusters, req: &RedisCallRequest) -> RedisCallOutcome {
    let Some(entry) = clusters.get(&req.cluster) else {
        return RedisCallOutcome::Failed;
    };
    let Some(endpoint) = entry.next_endpoint() else {
        return RedisCallOutcome::Failed;
    };
    call(endpoint, req, &entry.redis).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLIES: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR unknown command\r\n",
        b":42\r\n",
        b"$5\r\nhello\r\n",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*2\r\n$7\r\nLIMITED\r\n$3\r\nk|x\r\n",
        b"*2\r\n*1\r\n:1\r\n$2\r\n\r\n\r\n",
        b"%1\r\n+a\r\n:1\r\n",
        b"|1\r\n+ttl\r\n:3\r\n+v\r\n",
        b"_\r\n",
    ];

    #[test]
    fn complete_replies_have_their_length_and_every_prefix_is_incomplete() {
        for r in REPLIES {
            assert_eq!(reply_len(r, 1024), Ok(Some(r.len())), "{r:?}");
            for cut in 0..r.len() {
                assert_eq!(reply_len(&r[..cut], 1024), Ok(None), "{r:?} cut at {cut}");
            }
            let mut extra = r.to_vec();
            extra.extend_from_slice(b"+next\r\n");
            assert_eq!(reply_len(&extra, 1024), Ok(Some(r.len())));
        }
    }

    #[test]
    fn malformed_and_oversized_replies_are_errors() {
        assert_eq!(reply_len(b"?x\r\n", 64), Err(RespError::UnknownType(b'?')));
        assert_eq!(reply_len(b":x\r\n", 64), Err(RespError::BadNumber));
        assert_eq!(reply_len(b"$-2\r\n", 64), Err(RespError::BadNumber));
        assert_eq!(
            reply_len(b"$2\r\nabcd\r\n", 64),
            Err(RespError::MissingCrlf)
        );
        assert_eq!(reply_len(b"$100\r\n", 64), Err(RespError::TooLarge(64)));
        assert_eq!(
            reply_len(b"*99999999999\r\n", 64),
            Err(RespError::TooLarge(64))
        );
        assert_eq!(
            reply_len(&[b'+'; 100], 64),
            Err(RespError::TooLarge(64)),
            "an endless line is cut at the limit"
        );
        let long = [b'+'; MAX_LINE_BYTES + 10];
        assert_eq!(reply_len(&long, usize::MAX), Err(RespError::LineTooLong));
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let mut deep = b"*1\r\n".repeat(100_000);
        deep.extend_from_slice(b":1\r\n");
        assert_eq!(reply_len(&deep, 1 << 20), Ok(Some(deep.len())));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet = b"+-:$*%|~>_!=#(,\r\n0123456789-a";
        for _ in 0..20_000 {
            let len = (x % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            if let Ok(Some(n)) = reply_len(&bytes, 1 << 16) {
                assert!(n <= bytes.len());
            }
        }
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            command(&[b"SELECT", b"2"]),
            b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n"
        );
    }
}
