//! The canned side of a scenario: answers to HTTP callouts and gRPC calls
//! from its `clusters`, and the conversions between the script's header
//! lists and vessel's maps.

use vessel_host::{HeaderMap, HttpCallOutcome, HttpCallResponse, Token, Vm, VmError};

use super::scenario::{CannedResponse, Headers};

/// The body of Envoy's 503 for a call to an endpoint that refuses the
/// connection.
const UNREACHABLE_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";

pub(super) fn to_map(h: &Headers) -> HeaderMap {
    HeaderMap::from_pairs(h.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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
