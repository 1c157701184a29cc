//! Carries out HTTP callouts (`Effect::HttpCall`) over a cluster's pooled
//! client and reports the outcome as Envoy's async client does (ABI
//! reference §4.5, §11.6): a timeout is a `504` response ("upstream request
//! timeout"), an unreachable or unknown upstream is a `503` response, a
//! response body over the limit is a failure with reason
//! `response_buffer_limit_exceeded`.

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
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
    let Ok(uri) = format!("http://{endpoint}{path}").parse::<Uri>() else {
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
    let Ok(request) = builder.body(Full::new(Bytes::from(req.body))) else {
        return local(503, "invalid request");
    };
    let fut = async {
        let resp = match entry.client.request(request).await {
            Ok(r) => r,
            Err(e) => {
                log::debug!(target: "vessel::callout", "callout to {} failed: {e}", req.upstream);
                return local(
                    503,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                );
            }
        };
        let (parts, body) = resp.into_parts();
        let headers = convert::response_headers(&parts);
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
