//! Conversions between `http` types and the host's [`HeaderMap`] with
//! pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`, `:status`).
//!
//! A request's map is ordered as Envoy's codecs build it, so a filter that
//! walks the map sees the same order (ABI reference §11.18): over HTTP/1
//! `:authority`, `:path`, `:method`, `:scheme`; over HTTP/2 the order
//! clients send them, `:method`, `:scheme`, `:authority`, `:path`. Over
//! HTTP/2, several `cookie` headers are joined into one with `"; "`, as
//! Envoy's HTTP/2 codec does (RFC 9113 §8.2.3).

use http::{HeaderName, HeaderValue, StatusCode, request, response};
use vessel_host::HeaderMap;

/// Request head → header map with pseudo-headers first.
pub fn request_headers(parts: &request::Parts) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(parts.headers.len() + 4);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let scheme = parts.uri.scheme_str().unwrap_or("http");
    let h2 = parts.version >= http::Version::HTTP_2;
    if h2 {
        map.append(b":method", parts.method.as_str().as_bytes());
        map.append(b":scheme", scheme.as_bytes());
        map.append(b":authority", authority.as_bytes());
        map.append(b":path", path.as_bytes());
    } else {
        map.append(b":authority", authority.as_bytes());
        map.append(b":path", path.as_bytes());
        map.append(b":method", parts.method.as_str().as_bytes());
        map.append(b":scheme", scheme.as_bytes());
    }
    let mut cookies_seen = false;
    for (k, v) in &parts.headers {
        if k == http::header::HOST {
            continue;
        }
        if h2 && k == http::header::COOKIE {
            if !cookies_seen {
                cookies_seen = true;
                let all = parts.headers.get_all(http::header::COOKIE);
                let joined = all
                    .iter()
                    .map(HeaderValue::as_bytes)
                    .collect::<Vec<_>>()
                    .join(&b"; "[..]);
                map.append(b"cookie", &joined);
            }
            continue;
        }
        map.append(k.as_str().as_bytes(), v.as_bytes());
    }
    map
}

/// Response head → header map with `:status` first.
pub fn response_headers(parts: &response::Parts) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(parts.headers.len() + 1);
    map.append(b":status", parts.status.as_str().as_bytes());
    for (k, v) in &parts.headers {
        map.append(k.as_str().as_bytes(), v.as_bytes());
    }
    map
}

/// Trailers → header map.
pub fn trailers(t: &http::HeaderMap) -> HeaderMap {
    HeaderMap::from_pairs(t.iter().map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())))
}

/// Header map → `http` headers, skipping pseudo-headers and invalid entries.
pub fn to_http_headers(map: &HeaderMap, out: &mut http::HeaderMap) {
    out.clear();
    for (k, v) in map.iter() {
        if k.starts_with(b":") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k), HeaderValue::from_bytes(v)) {
            out.append(name, value);
        }
    }
}

/// Applies a filtered request header map back onto request parts.
pub fn apply_request(map: &HeaderMap, parts: &mut request::Parts) {
    if let Some(m) = map
        .get(b":method")
        .and_then(|m| http::Method::from_bytes(m).ok())
    {
        parts.method = m;
    }
    let path = map.get_str(":path").unwrap_or("/");
    let authority = map.get_str(":authority").unwrap_or("");
    let mut uri = http::Uri::builder();
    if let (Some(scheme), false) = (parts.uri.scheme(), authority.is_empty()) {
        uri = uri.scheme(scheme.clone()).authority(authority);
    }
    if let Ok(u) = uri.path_and_query(path).build() {
        parts.uri = u;
    }
    to_http_headers(map, &mut parts.headers);
    if !authority.is_empty()
        && let Ok(v) = HeaderValue::from_str(authority)
    {
        parts.headers.insert(http::header::HOST, v);
    }
}

/// Applies a filtered response header map back onto response parts.
pub fn apply_response(map: &HeaderMap, parts: &mut response::Parts) {
    if let Some(s) = map
        .get_str(":status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
    {
        parts.status = s;
    }
    to_http_headers(map, &mut parts.headers);
}

/// Header map → `http` trailers.
pub fn to_trailers(map: &HeaderMap) -> http::HeaderMap {
    let mut out = http::HeaderMap::new();
    to_http_headers(map, &mut out);
    out
}
