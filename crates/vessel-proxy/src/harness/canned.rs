//! The canned side of a scenario: answers to HTTP callouts from its
//! `clusters`, Redis calls against its real server, and the conversions
//! between the script's header lists and vessel's maps.

use std::time::Duration;

use vessel_host::{
    HeaderMap, HttpCallOutcome, HttpCallResponse, RedisCallOutcome, RedisCallRequest, Token, Vm,
    VmError,
};

use super::scenario::{CannedResponse, Headers};

/// The body of Envoy's 503 for a call to an endpoint that refuses the
/// connection.
const UNREACHABLE_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";

pub(super) fn to_map(h: &Headers) -> HeaderMap {
    HeaderMap::from_pairs(h.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Sends `FLUSHALL` to the Redis server at `addr` (a scenario's
/// `redis_flush`), bounded in time.
pub(crate) fn flush_redis(addr: std::net::SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    let t = Duration::from_secs(2);
    let fail = |e: std::io::Error| format!("FLUSHALL on {addr}: {e}");
    let mut s = std::net::TcpStream::connect_timeout(&addr, t).map_err(fail)?;
    s.set_read_timeout(Some(t)).map_err(fail)?;
    s.write_all(b"*1\r\n$8\r\nFLUSHALL\r\n").map_err(fail)?;
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).map_err(fail)?;
    if reply[..n].starts_with(b"+OK") {
        Ok(())
    } else {
        Err(format!(
            "FLUSHALL on {addr}: {}",
            String::from_utf8_lossy(&reply[..n]).trim_end()
        ))
    }
}

/// Carries out a Redis call against the scenario's real server, on a
/// short-lived runtime of its own (the harness is synchronous).
pub(super) fn redis_call(addr: std::net::SocketAddr, call: &RedisCallRequest) -> RedisCallOutcome {
    let run = || match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(vessel_hyper::redis::call(
            addr,
            call,
            &vessel_hyper::redis::IdleConnections::default(),
        )),
        Err(_) => RedisCallOutcome::Failed,
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        // Inside a runtime (an async caller): block another thread instead.
        std::thread::scope(|s| s.spawn(run).join().unwrap_or(RedisCallOutcome::Failed))
    } else {
        run()
    }
}

pub(super) fn map_to_headers(map: &HeaderMap) -> Headers {
    map.iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

pub(super) fn canned_outcome(c: &CannedResponse) -> HttpCallOutcome {
    if c.reset {
        return HttpCallOutcome::Failed {
            reason: "reset".into(),
        };
    }
    if c.unreachable {
        // Envoy's router answers a call to an endpoint that refuses the
        // connection itself (the async client's `onSuccess` with a 503).
        let body = UNREACHABLE_BODY;
        return HttpCallOutcome::Response(HttpCallResponse {
            headers: HeaderMap::from_pairs([
                (":status", "503"),
                ("content-length", body.len().to_string().as_str()),
                ("content-type", "text/plain"),
            ]),
            body: body.as_bytes().to_vec(),
            trailers: HeaderMap::new(),
        });
    }
    if c.timeout {
        return HttpCallOutcome::Response(HttpCallResponse {
            headers: HeaderMap::from_pairs([(":status", "504"), ("content-type", "text/plain")]),
            body: b"upstream request timeout".to_vec(),
            trailers: HeaderMap::new(),
        });
    }
    HttpCallOutcome::Response(HttpCallResponse {
        headers: to_map(&c.headers),
        body: c.body.clone().into_bytes(),
        trailers: to_map(&c.trailers),
    })
}

/// Answers a unary gRPC call from its cluster: status 0 (the default)
/// delivers `body` as the response message, which ends the call as in
/// Envoy; another status (14 for `reset`, or no such cluster) closes it
/// with `body` as the message.
pub(super) fn grpc_answer(
    vm: &mut Vm,
    token: Token,
    cluster: Option<&CannedResponse>,
) -> Result<(), VmError> {
    match cluster {
        Some(c) if !c.reset && c.grpc_status.unwrap_or(0) == 0 => {
            vm.on_grpc_receive(token, c.body.clone().into_bytes())
        }
        Some(c) => {
            let status = if c.reset {
                14
            } else {
                c.grpc_status.unwrap_or(14)
            };
            vm.on_grpc_close(token, status, &c.body)
        }
        None => vm.on_grpc_close(token, 14, "no such cluster"),
    }
}
