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

/// The request's `:authority`: the URI's, else the first `Host` header
/// (if it is a string), else empty.
fn authority(parts: &request::Parts) -> &str {
    // Visible ASCII (and tabs) only, so always UTF-8.
    std::str::from_utf8(authority_bytes(parts)).unwrap_or_default()
}

/// [`authority`] as bytes, without converting a `Host` header to a `str`.
fn authority_bytes(parts: &request::Parts) -> &[u8] {
    match parts.uri.authority() {
        Some(a) => a.as_str().as_bytes(),
        None => parts
            .headers
            .get(http::header::HOST)
            .filter(|h| is_str(h))
            .map_or(&[][..], HeaderValue::as_bytes),
    }
}

/// True if `HeaderValue::to_str` takes `v` (visible ASCII and tabs), a
/// word at a time: the `Host` of every request is checked, twice, and the
/// byte-by-byte check costs more than the rest of the lookup.
fn is_str(v: &HeaderValue) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOP: u64 = 0x8080_8080_8080_8080;
    // A byte below 0x20 or at or above 0x7f in the word.
    let unusual = |w: u64| {
        let below = w.wrapping_sub(ONES * 0x20) & !w;
        let above = w.wrapping_add(ONES) | w;
        (below | above) & TOP != 0
    };
    let b = v.as_bytes();
    let mut chunks = b.chunks_exact(8);
    let usual = chunks
        .by_ref()
        .all(|c| c.try_into().is_ok_and(|w| !unusual(u64::from_le_bytes(w))))
        && chunks.remainder().iter().all(|c| (0x20..0x7f).contains(c));
    // A tab (which `to_str` takes) or a byte it refuses: ask it.
    usual || v.to_str().is_ok()
}

/// A request's pseudo-headers, in the order of its codec.
fn pseudo_headers(parts: &request::Parts) -> [(&'static [u8], &[u8]); 4] {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = authority_bytes(parts);
    let scheme = parts.uri.scheme_str().unwrap_or("http").as_bytes();
    let method = parts.method.as_str().as_bytes();
    if parts.version >= http::Version::HTTP_2 {
        [
            (b":method", method),
            (b":scheme", scheme),
            (b":authority", authority),
            (b":path", path.as_bytes()),
        ]
    } else {
        [
            (b":authority", authority),
            (b":path", path.as_bytes()),
            (b":method", method),
            (b":scheme", scheme),
        ]
    }
}

/// How many emptied maps [`spare_map`] keeps per thread, and the most
/// buffer capacity each may hold.
const SPARE_MAPS: usize = 8;
const SPARE_MAP_BYTES: usize = 16 * 1024;

thread_local! {
    /// Maps the pump is done with ([`recycle`]), for the next conversion.
    static SPARE: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty map with room for `entries` entries of `bytes` bytes: one the
/// pump recycled on this thread if there is one, so a stream that flows
/// allocates no map.
fn spare_map(entries: usize, bytes: usize) -> HeaderMap {
    match SPARE.with_borrow_mut(Vec::pop) {
        Some(mut map) => {
            map.reserve(entries, bytes);
            map
        }
        None => HeaderMap::with_capacity_bytes(entries, bytes),
    }
}

/// Gives a map the pump is done with back for [`spare_map`]: emptied, and
/// kept only if its buffers hold at most [`SPARE_MAP_BYTES`] and fewer than
/// [`SPARE_MAPS`] wait (a guest that grew a map does not pin the memory).
pub(crate) fn recycle(mut map: HeaderMap) {
    map.clear_retaining(SPARE_MAP_BYTES);
    if map.capacity_bytes() == 0 {
        return;
    }
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < SPARE_MAPS {
            spare.push(map);
        }
    });
}

/// Request head → header map with pseudo-headers first.
pub fn request_headers(parts: &request::Parts) -> HeaderMap {
    let pseudo = pseudo_headers(parts);
    // Sized up front from an estimate of the headers' bytes (measuring
    // them is a walk over hyper's map on every request); a map that
    // needs more grows once, and keeps the room when it is recycled.
    let bytes = pseudo.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + estimated_bytes(&parts.headers);
    let mut map = spare_map(
        parts.headers.len() + pseudo.len() + ROOM_ENTRIES,
        bytes + ROOM_BYTES,
    );
    for (k, v) in pseudo {
        map.append_lowercase(k, v);
    }
    let h2 = parts.version >= http::Version::HTTP_2;
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
                map.append_lowercase(b"cookie", &joined);
            }
            continue;
        }
        // `http` names are lower-case.
        map.append_lowercase(k.as_str().as_bytes(), v.as_bytes());
    }
    map.mark();
    map
}

/// Response head → header map with `:status` first.
pub fn response_headers(parts: &response::Parts) -> HeaderMap {
    let mut map = spare_map(
        parts.headers.len() + 1 + ROOM_ENTRIES,
        10 + estimated_bytes(&parts.headers) + ROOM_BYTES,
    );
    map.append_lowercase(b":status", parts.status.as_str().as_bytes());
    for (k, v) in &parts.headers {
        map.append_lowercase(k.as_str().as_bytes(), v.as_bytes());
    }
    map.mark();
    map
}

/// Entries and bytes a converted map has room for beyond its own, so that
/// a filter that adds a few headers does not make it grow.
const ROOM_ENTRIES: usize = 4;
const ROOM_BYTES: usize = 128;

/// Key and value bytes `http` headers are estimated to hold: 48 per
/// entry (a typical name and value; a longer one makes the map grow).
fn estimated_bytes(headers: &http::HeaderMap) -> usize {
    headers.len().saturating_mul(48)
}

/// Trailers → header map.
pub fn trailers(t: &http::HeaderMap) -> HeaderMap {
    HeaderMap::from_pairs(t.iter().map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())))
}

/// How many header names [`header_name`] keeps per thread, and the longest
/// it keeps.
const NAMES_KEPT: usize = 32;
const NAME_KEPT_LEN: usize = 64;

/// `HeaderName::from_bytes`, through a small per-thread cache of the names
/// converted last: a name that is not one of `http`'s standard ones is
/// validated and copied into a new allocation each time, and filters add
/// the same few names to every request. The cache holds at most
/// [`NAMES_KEPT`] names of at most [`NAME_KEPT_LEN`] bytes (a guest's
/// names cannot grow it), replaced round-robin.
fn header_name(k: &[u8]) -> Option<HeaderName> {
    thread_local! {
        static NAMES: std::cell::RefCell<(Vec<HeaderName>, usize)> =
            const { std::cell::RefCell::new((Vec::new(), 0)) };
    }
    if k.len() > NAME_KEPT_LEN {
        return HeaderName::from_bytes(k).ok();
    }
    NAMES.with_borrow_mut(|(names, next)| {
        if let Some(name) = names.iter().find(|n| n.as_str().as_bytes() == k) {
            return Some(name.clone());
        }
        let name = HeaderName::from_bytes(k).ok()?;
        // Only the name as it is spelt (`from_bytes` lower-cases).
        if name.as_str().as_bytes() == k {
            if names.len() < NAMES_KEPT {
                names.push(name.clone());
            } else {
                names[*next] = name.clone();
                *next = (*next + 1) % NAMES_KEPT;
            }
        }
        Some(name)
    })
}

/// Header map → `http` headers, skipping pseudo-headers and invalid entries.
pub fn to_http_headers(map: &HeaderMap, out: &mut http::HeaderMap) {
    out.clear();
    for (k, v) in map.iter() {
        if k.starts_with(b":") {
            continue;
        }
        if let (Some(name), Ok(value)) = (header_name(k), HeaderValue::from_bytes(v)) {
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

/// Removes [`CONNECTION_SPECIFIC_RESPONSE_HEADERS`] from a response about
/// to be sent downstream, as Envoy does after the filters. hyper frames the
/// body itself and refuses (closing the connection) a response whose
/// `transfer-encoding` contradicts it.
///
/// [`CONNECTION_SPECIFIC_RESPONSE_HEADERS`]: vessel_host::CONNECTION_SPECIFIC_RESPONSE_HEADERS
pub fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // One look at the keys first: a response seldom has any of them, and a
    // removal by name parses and hashes the name.
    let connection_specific =
        |k: &HeaderName| vessel_host::CONNECTION_SPECIFIC_RESPONSE_HEADERS.contains(&k.as_str());
    if !headers.keys().any(connection_specific) {
        return;
    }
    for name in vessel_host::CONNECTION_SPECIFIC_RESPONSE_HEADERS {
        headers.remove(name);
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

/// Where the entries a filter appended to `input` start in `output`, if
/// `output` is `input` with entries added at the end and nothing else
/// changed (the common case of a filter that only reads or adds headers).
/// `input` is listed, not built: no copy of the map is kept for this.
fn appended<'b>(
    input: impl Iterator<Item = (&'b [u8], &'b [u8])>,
    output: &HeaderMap,
) -> Option<usize> {
    let mut out = output.iter();
    let mut n = 0;
    for entry in input {
        if out.next() != Some(entry) {
            return None;
        }
        n += 1;
    }
    Some(n)
}

/// The entries of [`request_headers`] of `parts`, without building the map;
/// `None` for the shape whose map joins values (several HTTP/2 `cookie`
/// headers), which only a rebuild gives.
fn request_entries(parts: &request::Parts) -> Option<impl Iterator<Item = (&[u8], &[u8])>> {
    if parts.version >= http::Version::HTTP_2
        && parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .nth(1)
            .is_some()
    {
        return None;
    }
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| *k != http::header::HOST)
        .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()));
    Some(pseudo_headers(parts).into_iter().chain(headers))
}

/// The entries of [`response_headers`] of `parts`, without building the map.
fn response_entries(parts: &response::Parts) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::once((&b":status"[..], parts.status.as_str().as_bytes())).chain(
        parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
    )
}

/// Appends entries as [`to_http_headers`] would: pseudo-headers and invalid
/// entries are skipped.
fn append_http<'a>(entries: impl Iterator<Item = (&'a [u8], &'a [u8])>, out: &mut http::HeaderMap) {
    for (k, v) in entries {
        if k.starts_with(b":") {
            continue;
        }
        if let (Some(name), Ok(value)) = (header_name(k), HeaderValue::from_bytes(v)) {
            out.append(name, value);
        }
    }
}

/// Puts request parts in the shape [`apply_request`] gives them when the
/// map is the unchanged [`request_headers`] of the parts, without
/// rebuilding them: `Host` becomes the `:authority` (or goes away if that
/// is empty). Returns false (and changes nothing) for the rare URIs whose
/// shape a rebuild would change; the caller then applies the map.
fn normalize_request(parts: &mut request::Parts) -> bool {
    let uri = &parts.uri;
    if uri.path_and_query().is_none() || uri.scheme().is_some() != uri.authority().is_some() {
        return false;
    }
    // Several HTTP/2 `cookie` headers are joined in the map (and so
    // upstream): only a rebuild does that.
    if parts.version >= http::Version::HTTP_2
        && parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .nth(1)
            .is_some()
    {
        return false;
    }
    if parts.uri.authority().is_none() {
        // The `:authority` came from the first `Host` (the common
        // origin-form request): one lookup, and the headers stay unless
        // there are several `Host`s (the first wins) or the first is not a
        // string (the authority is then empty, and `Host` goes).
        let mut hosts = parts.headers.get_all(http::header::HOST).iter();
        let Some(first) = hosts.next() else {
            return true;
        };
        if first.is_empty() || !is_str(first) {
            parts.headers.remove(http::header::HOST);
        } else if hosts.next().is_some() {
            let first = first.clone();
            parts.headers.insert(http::header::HOST, first);
        }
        return true;
    }
    let authority = authority(parts);
    // None: leave `Host` as it is; Some(None): remove it; Some(Some(v)): set it.
    let host = if authority.is_empty() {
        Some(None)
    } else {
        let mut hosts = parts.headers.get_all(http::header::HOST).iter();
        let unchanged = hosts
            .next()
            .is_some_and(|h| h.as_bytes() == authority.as_bytes())
            && hosts.next().is_none();
        (!unchanged).then(|| HeaderValue::from_str(authority).ok())
    };
    match host {
        None => {}
        Some(Some(v)) => {
            parts.headers.insert(http::header::HOST, v);
        }
        Some(None) => {
            parts.headers.remove(http::header::HOST);
        }
    }
    true
}

/// Applies the request map a chain returned onto the parts its input was
/// built from ([`request_headers`] of `parts`). Same result as
/// [`apply_request`], but when the filters only added headers (or changed
/// nothing) the parts are kept and the new headers appended.
pub(crate) fn update_request(output: &HeaderMap, parts: &mut request::Parts) {
    // The map marks what the conversion put in; unless a filter edited
    // one of those entries, no comparison is needed.
    let from = output
        .unchanged_since_mark()
        .or_else(|| request_entries(parts).and_then(|input| appended(input, output)));
    match from {
        Some(from)
            if !output
                .iter_from(from)
                .any(|(k, _)| k.eq_ignore_ascii_case(b"host"))
                && normalize_request(parts) =>
        {
            append_http(output.iter_from(from), &mut parts.headers);
        }
        _ => apply_request(output, parts),
    }
}

/// [`update_request`] for a request no filter saw.
pub(crate) fn unchanged_request(parts: &mut request::Parts) {
    if !normalize_request(parts) {
        apply_request(&request_headers(parts), parts);
    }
}

/// Applies the response map a chain returned onto the parts its input was
/// built from ([`response_headers`] of `parts`). Same result as
/// [`apply_response`], but when the filters only added headers (or changed
/// nothing) the parts are kept and the new headers appended.
pub(crate) fn update_response(output: &HeaderMap, parts: &mut response::Parts) {
    let from = output
        .unchanged_since_mark()
        .or_else(|| appended(response_entries(parts), output));
    match from {
        Some(from) => append_http(output.iter_from(from), &mut parts.headers),
        None => apply_response(output, parts),
    }
}

/// Header map → `http` trailers.
pub fn to_trailers(map: &HeaderMap) -> http::HeaderMap {
    let mut out = http::HeaderMap::new();
    to_http_headers(map, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &[u8])]) -> request::Parts {
        let mut b = http::Request::builder().method("GET").uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn same(a: &request::Parts, b: &request::Parts) -> bool {
        a.method == b.method && a.uri == b.uri && a.headers == b.headers
    }

    /// Requests with every `Host` / URI shape the fast path must treat as
    /// the full rebuild does.
    fn requests() -> Vec<request::Parts> {
        vec![
            parts("/x?q=1", &[("host", b"a.test"), ("x-bench", b"1")]),
            parts("/x", &[]),
            parts("http://a.test/x", &[]),
            parts("http://a.test/x", &[("host", b"other.test")]),
            parts("/x", &[("host", b"a.test"), ("host", b"b.test")]),
            parts("/x", &[("host", b"\xffbad")]),
            parts("/x", &[("host", b"\xffbad"), ("host", b"b.test")]),
            parts("/x", &[("host", b"")]),
            parts("/x", &[("host", b""), ("host", b"b.test")]),
            parts("/x", &[("host", b"a.test\t:80")]),
            parts("/x", &[("host", b"a-long-host-name.example.test:8080")]),
            parts("a.test:443", &[("host", b"a.test:443")]),
            parts(
                "/x",
                &[
                    ("host", b"a.test"),
                    ("x-a", b"1"),
                    ("x-b", b"2"),
                    ("x-a", b"3"),
                ],
            ),
        ]
    }

    #[test]
    fn is_str_agrees_with_to_str() {
        // Every byte a header value may hold, at every place of values
        // shorter than, as long as and longer than a word or two.
        for b in 0..=255u8 {
            for len in 1..=17 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    let Ok(v) = HeaderValue::from_bytes(&bytes) else {
                        continue;
                    };
                    assert_eq!(is_str(&v), v.to_str().is_ok(), "{b:#x} at {at} of {len}");
                }
            }
        }
        assert!(is_str(&HeaderValue::from_static("")));
    }

    /// [`requests`] over HTTP/2, with one and with two `cookie` headers.
    fn h2_requests() -> Vec<request::Parts> {
        let mut all = Vec::new();
        for cookies in [&[][..], &[&b"a=1"[..]], &[&b"a=1"[..], &b"b=2"[..]]] {
            for mut p in requests() {
                p.version = http::Version::HTTP_2;
                for c in cookies {
                    p.headers.append(
                        http::header::COOKIE,
                        HeaderValue::from_bytes(c).expect("value"),
                    );
                }
                all.push(p);
            }
        }
        all
    }

    #[test]
    fn cached_header_names_are_the_parsed_ones() {
        let names: Vec<Vec<u8>> = (0..NAMES_KEPT * 2)
            .map(|i| format!("x-name-{i}").into_bytes())
            .chain([
                b"content-type".to_vec(),
                b"X-Upper".to_vec(),
                b"bad name".to_vec(),
                vec![b'x'; NAME_KEPT_LEN + 1],
            ])
            .collect();
        // Twice: the second round finds some in the cache.
        for _ in 0..2 {
            for k in &names {
                assert_eq!(header_name(k), HeaderName::from_bytes(k).ok(), "{k:?}");
            }
        }
        assert_eq!(
            header_name(b"X-Upper").map(|n| n.as_str().to_owned()),
            Some("x-upper".to_owned())
        );
    }

    #[test]
    fn listed_entries_are_the_built_map() {
        for original in requests().into_iter().chain(h2_requests()) {
            let built = request_headers(&original);
            let two_cookies = original.headers.get_all("cookie").iter().count() > 1;
            match request_entries(&original) {
                Some(listed) => assert!(listed.eq(built.iter()), "{original:?}"),
                None => assert!(two_cookies, "{original:?}"),
            }
        }
    }

    #[test]
    fn unchanged_request_matches_the_full_apply() {
        for original in requests() {
            let mut full = original.clone();
            apply_request(&request_headers(&original), &mut full);
            let mut fast = original.clone();
            unchanged_request(&mut fast);
            assert!(same(&full, &fast), "{original:?}: {full:?} vs {fast:?}");
        }
    }

    #[test]
    fn update_request_matches_the_full_apply() {
        // Appends, and edits of the converted entries (which the map's
        // mark must catch: a missed one would keep the parts unchanged).
        let edits: [fn(&mut HeaderMap); 12] = [
            |_| {},
            |m| m.append(b"x-added", b"1"),
            |m| m.append(b"x-a", b"4"),
            |m| m.append(b"host", b"filter.test"),
            |m| m.append(b":pseudo", b"skipped"),
            |m| {
                m.append(b"x-added", b"1");
                m.append(b"x-bad", b"\n");
            },
            |m| m.insert(b":path", b"/rewritten"),
            |m| m.insert(b"x-a", b"replaced"),
            |m| {
                m.remove(b"x-a");
                m.remove(b"x-bench");
            },
            |m| {
                m.remove(b"cookie");
                m.append(b"cookie", b"a=1");
            },
            |m| {
                m.append(b"x-added", b"1");
                m.insert(b"x-added", b"2");
                m.remove(b"x-added");
            },
            |m| m.replace_with([(&b":path"[..], &b"/only"[..]), (b":method", b"POST")]),
        ];
        for original in requests().into_iter().chain(h2_requests()) {
            for edit in edits {
                let mut output = request_headers(&original);
                edit(&mut output);
                let mut full = original.clone();
                apply_request(&output, &mut full);
                let mut fast = original.clone();
                update_request(&output, &mut fast);
                assert!(same(&full, &fast), "{output:?}: {full:?} vs {fast:?}");
            }
        }
    }

    #[test]
    fn update_request_applies_changes_that_are_not_appends() {
        let original = parts("/x", &[("host", b"a.test"), ("x-bench", b"1")]);
        let input = request_headers(&original);
        let mut output = HeaderMap::new();
        for (k, v) in input.iter() {
            match k {
                b":path" => output.append(k, b"/rewritten"),
                b"x-bench" => {}
                _ => output.append(k, v),
            }
        }
        let mut fast = original.clone();
        update_request(&output, &mut fast);
        assert_eq!(fast.uri, "/rewritten");
        assert!(!fast.headers.contains_key("x-bench"));
        assert_eq!(fast.headers["host"], "a.test");
    }

    #[test]
    fn update_response_matches_the_full_apply() {
        let mut original = http::Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .header("content-length", "18")
            .body(())
            .expect("response")
            .into_parts()
            .0;
        let input = response_headers(&original);
        let mut output = input.clone();
        output.append(b"x-bench-response", b"1");
        let mut full = original.clone();
        apply_response(&output, &mut full);
        update_response(&output, &mut original);
        assert_eq!(full.status, original.status);
        assert_eq!(full.headers, original.headers);
        assert_eq!(original.headers["x-bench-response"], "1");

        output.insert(b":status", b"503");
        let mut changed = full.clone();
        update_response(&output, &mut changed);
        assert_eq!(changed.status, 503);
    }

    #[test]
    fn connection_specific_response_headers_are_stripped_and_others_kept() {
        let mut h = http::HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let untouched = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, untouched);
        for name in vessel_host::CONNECTION_SPECIFIC_RESPONSE_HEADERS {
            h.append(name, HeaderValue::from_static("x"));
            h.append(name, HeaderValue::from_static("y"));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h, untouched);
    }
}
