//! Carries out HTTP callouts (`Effect::HttpCall`) over a cluster's pooled
//! client and reports the outcome as Envoy's async client does (ABI
//! reference §4.5, §11.6): a timeout is a `504` response ("upstream request
//! timeout"), an unreachable or unknown upstream is a `503` response with
//! the body of Envoy's router (`... reset reason: remote connection
//! failure`), a response body over the limit is a failure with reason
//! `response_buffer_limit_exceeded`. A response from the cluster carries
//! `x-envoy-upstream-service-time`, which Envoy's router adds to the
//! answers of its async client too.

use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};

use crate::cluster::CalloutBody;
use vessel_host::{HeaderMap, HttpCallOutcome, HttpCallRequest, HttpCallResponse};

use crate::cluster::Clusters;
use crate::convert;

/// Largest callout response body accepted.
pub const MAX_CALLOUT_RESPONSE_BYTES: usize = 16 << 20;

fn local(status: u16, body: &str) -> HttpCallOutcome {
    HttpCallOutcome::Response(HttpCallResponse {
        headers: HeaderMap::from_pairs([
            (":status", status.to_string().as_str()),
            ("content-length", body.len().to_string().as_str()),
            ("content-type", "text/plain"),
        ]),
        body: body.as_bytes().to_vec(),
        trailers: HeaderMap::new(),
    })
}

pub(crate) fn full(bytes: Bytes) -> CalloutBody {
    Full::new(bytes).boxed()
}

/// Runs one HTTP callout to completion.
pub(crate) async fn http_call(clusters: &Clusters, req: HttpCallRequest) -> HttpCallOutcome {
    let Some(entry) = clusters.get(&req.upstream) else {
        return local(503, "no healthy upstream");
    };
    let Some(endpoint) = entry.next_endpoint() else {
        return local(503, "no healthy upstream");
    };
    let method = req
        .headers
        .get_str(":method")
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::GET);
    let path = req.headers.get_str(":path").unwrap_or("/");
    let Ok(uri) = format!("{}://{endpoint}{path}", entry.scheme()).parse::<Uri>() else {
        return local(503, "invalid path");
    };
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(authority) = req.headers.get_str(":authority") {
        builder = builder.header(http::header::HOST, authority);
    }
    for (k, v) in req.headers.iter() {
        if k.starts_with(b":") || k.eq_ignore_ascii_case(b"host") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(k),
            http::HeaderValue::from_bytes(v),
        ) {
            builder = builder.header(name, value);
        }
    }
    let Ok(request) = builder.body(full(Bytes::from(req.body))) else {
        return local(503, "invalid request");
    };
    let fut = async {
        let sent = Instant::now();
        let resp = match entry.client.request(request).await {
            Ok(r) => r,
            Err(e) => {
                log::debug!(target: "vessel::callout", "callout to {} failed: {e}", req.upstream);
                return local(
                    503,
                    if e.is_connect() {
                        "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
                    } else {
                        "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
                    },
                );
            }
        };
        let (parts, body) = resp.into_parts();
        let mut headers = convert::response_headers(&parts);
        headers.append(
            b"x-envoy-upstream-service-time",
            sent.elapsed().as_millis().to_string().as_bytes(),
        );
        match Limited::new(body, MAX_CALLOUT_RESPONSE_BYTES)
            .collect()
            .await
        {
            Ok(collected) => {
                let trailers = collected
                    .trailers()
                    .map(convert::trailers)
                    .unwrap_or_default();
                HttpCallOutcome::Response(HttpCallResponse {
                    headers,
                    body: collected.to_bytes().to_vec(),
                    trailers,
                })
            }
            Err(e) => {
                let reason = if e.is::<http_body_util::LengthLimitError>() {
                    "response_buffer_limit_exceeded"
                } else {
                    "reset"
                };
                HttpCallOutcome::Failed {
                    reason: reason.into(),
                }
            }
        }
    };
    match req.timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(outcome) => outcome,
            Err(_) => local(504, "upstream request timeout"),
        },
        None => fut.await,
    }
}

/// A `grpc-timeout` header value (gRPC over HTTP/2: at most 8 digits and
/// a unit), in milliseconds when it fits, as Envoy's `toGrpcTimeout`.
pub(crate) fn grpc_timeout(t: std::time::Duration) -> String {
    const MAX: u128 = 99_999_999;
    let ms = t.as_millis();
    if ms <= MAX {
        return format!("{ms}m");
    }
    let s = t.as_secs();
    if u128::from(s) <= MAX {
        return format!("{s}S");
    }
    format!("{}H", (s / 3600).min(99_999_999))
}

/// How a unary gRPC callout ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GrpcOutcome {
    /// Status 0 with the response message.
    Message(Vec<u8>),
    /// Any other status, with the status message.
    Closed(u32, String),
}

/// Runs one unary gRPC call over HTTP/2 to its cluster: a POST to
/// `/<service>/<method>` with `content-type: application/grpc`,
/// `grpc-timeout` when the call has a timeout, the message
/// in one length-prefixed frame, and the status from `grpc-status` in the
/// trailers (or in the headers of a trailers-only answer). Transport
/// failures close the call with 14 (UNAVAILABLE), a timeout with 4
/// (DEADLINE_EXCEEDED), as Envoy's gRPC client reports them.
pub(crate) async fn grpc_call(
    clusters: &Clusters,
    call: vessel_host::GrpcCallRequest,
) -> GrpcOutcome {
    let cluster = String::from_utf8_lossy(&call.upstream).into_owned();
    let Some(entry) = clusters.get(&cluster) else {
        return GrpcOutcome::Closed(14, "no healthy upstream".into());
    };
    let Some(endpoint) = entry.next_endpoint() else {
        return GrpcOutcome::Closed(14, "no healthy upstream".into());
    };
    let Ok(uri) = format!(
        "{}://{endpoint}/{}/{}",
        entry.scheme(),
        call.service,
        call.method
    )
    .parse::<Uri>() else {
        return GrpcOutcome::Closed(13, "invalid service or method".into());
    };
    let mut framed = Vec::with_capacity(call.message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(call.message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&call.message);
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers");
    if let Some(t) = call.timeout {
        builder = builder.header("grpc-timeout", grpc_timeout(t));
    }
    for (k, v) in call.initial_metadata.iter() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(k),
            http::HeaderValue::from_bytes(v),
        ) {
            builder = builder.header(name, value);
        }
    }
    let Ok(request) = builder.body(full(Bytes::from(framed))) else {
        return GrpcOutcome::Closed(13, "invalid metadata".into());
    };
    let fut = async {
        let resp = match entry.client.request(request).await {
            Ok(r) => r,
            Err(e) => return GrpcOutcome::Closed(14, format!("upstream connect error: {e}")),
        };
        let (parts, body) = resp.into_parts();
        let collected = match Limited::new(body, MAX_CALLOUT_RESPONSE_BYTES)
            .collect()
            .await
        {
            Ok(c) => c,
            Err(e) => return GrpcOutcome::Closed(14, format!("upstream reset: {e}")),
        };
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let bytes = collected.to_bytes();
        let status_of = |h: &http::HeaderMap| {
            h.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
        };
        let message_of = |h: &http::HeaderMap| {
            h.get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (status, message) = match (status_of(&trailers), status_of(&parts.headers)) {
            (Some(s), _) => (s, message_of(&trailers)),
            (None, Some(s)) => (s, message_of(&parts.headers)),
            (None, None) if !parts.status.is_success() => {
                return GrpcOutcome::Closed(14, format!("http status {}", parts.status.as_u16()));
            }
            (None, None) => (2, "missing grpc-status".into()),
        };
        if status != 0 {
            return GrpcOutcome::Closed(status, message);
        }
        if bytes.len() < 5 {
            return GrpcOutcome::Closed(13, "response has no message".into());
        }
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        match bytes.get(5..5 + len) {
            Some(m) if bytes[0] == 0 => GrpcOutcome::Message(m.to_vec()),
            Some(_) => GrpcOutcome::Closed(12, "compressed messages are not supported".into()),
            None => GrpcOutcome::Closed(13, "truncated response message".into()),
        }
    };
    match call.timeout {
        Some(t) => tokio::time::timeout(t, fut)
            .await
            .unwrap_or_else(|_| GrpcOutcome::Closed(4, "deadline exceeded".into())),
        None => fut.await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::grpc_timeout;

    #[test]
    fn grpc_timeout_uses_eight_digits_and_a_unit() {
        assert_eq!(grpc_timeout(Duration::from_secs(5)), "5000m");
        assert_eq!(grpc_timeout(Duration::from_millis(99_999_999)), "99999999m");
        assert_eq!(grpc_timeout(Duration::from_millis(100_000_000)), "100000S");
        assert_eq!(
            grpc_timeout(Duration::from_secs(100_000_000 * 3600)),
            "99999999H"
        );
    }
}
