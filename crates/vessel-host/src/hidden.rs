//! Data a plugin must never see: [`Hidden`], on
//! [`PluginConfig::hidden`](crate::PluginConfig::hidden). A vessel
//! extension; Envoy has no equivalent (its capability restriction allows or
//! denies whole hostcalls, and its sanitization config is unimplemented).
//!
//! For the plugin that has it, a hidden header or property does not exist:
//!
//! * `proxy_get_header_map_value` answers NOT_FOUND (ABI 0.1.0: OK with an
//!   empty value, as for any missing key); `proxy_get_header_map_pairs`
//!   leaves the entries out; `proxy_get_header_map_size` does not count
//!   their bytes.
//! * `proxy_add_header_map_value`, `proxy_replace_header_map_value` and
//!   `proxy_remove_header_map_value` on a hidden name change nothing and
//!   return OK (the SDKs accept only OK from them, ABI reference §11.20);
//!   `proxy_set_header_map_pairs` keeps the hidden entries as they were and
//!   drops any entry of a hidden name the plugin gives. The first such
//!   write of a stream is logged at warn level (target `vessel::hidden`),
//!   naming the plugin and the header, never a value.
//! * `proxy_get_property` on a hidden path answers NOT_FOUND, and so do the
//!   `request.*` / `response.*` attributes derived from a hidden header
//!   (`request.headers.authorization`, `request.referer` when `referer` is
//!   hidden, ...); the whole-map forms (`request.headers`,
//!   `response.headers`, `response.trailers`) leave hidden entries out.
//!   `proxy_set_property` on a hidden path changes nothing, returns OK and
//!   is logged like a header write.
//!
//! Request header names cover the request headers and trailers (maps 0 and
//! 1), response header names the response headers and trailers (maps 2 and
//! 3). The maps of a callout's answer (4–7) are the plugin's own and are
//! not filtered. The values still reach the upstream and the client
//! unchanged, and a later plugin of the chain without the name in its own
//! [`Hidden`] sees them: the view is per plugin (per VM), applied in the
//! hostcalls, not to the stream's maps.

use std::fmt;

use vessel_abi::{MapType, path_to_dotted};

/// Headers and properties one plugin must never see (see the module docs).
/// Empty by default: the plugin sees everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hidden {
    /// Lower-cased request header (and trailer) names.
    request_headers: Vec<String>,
    /// Lower-cased response header (and trailer) names.
    response_headers: Vec<String>,
    /// Property patterns.
    properties: Vec<PropertyPattern>,
}

/// A hidden property: an exact dotted path (`source.address`) or every
/// path under a prefix (`connection.*`, which hides `connection` itself
/// too).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PropertyPattern {
    Exact(String),
    Prefix(String),
}

impl PropertyPattern {
    fn matches(&self, dotted: &str) -> bool {
        match self {
            Self::Exact(p) => dotted == p,
            Self::Prefix(p) => dotted
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.')),
        }
    }
}

impl fmt::Display for PropertyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(p) => f.write_str(p),
            Self::Prefix(p) => write!(f, "{p}.*"),
        }
    }
}

/// A name or pattern [`Hidden`] does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HiddenError {
    /// A header name that is empty or has a character no header name has
    /// (RFC 9110 `tchar`, or a leading `:` for a pseudo-header).
    #[error("`{0}` is not a header name")]
    HeaderName(String),
    /// A property pattern that is empty, has an empty segment, or a `*`
    /// anywhere but as a whole last segment (`connection.*`).
    #[error(
        "`{0}` is not a property pattern: expected a dotted path (`source.address`) or a \
         prefix ending in `.*` (`connection.*`)"
    )]
    PropertyPattern(String),
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_name(name: &str) -> Result<String, HiddenError> {
    let body = name.strip_prefix(':').unwrap_or(name);
    if body.is_empty() || !body.bytes().all(is_tchar) {
        return Err(HiddenError::HeaderName(name.to_owned()));
    }
    Ok(name.to_ascii_lowercase())
}

fn property_pattern(pattern: &str) -> Result<PropertyPattern, HiddenError> {
    let bad = || HiddenError::PropertyPattern(pattern.to_owned());
    let (path, prefix) = match pattern.strip_suffix(".*") {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    if path.is_empty() || path.split('.').any(|s| s.is_empty() || s.contains('*')) {
        return Err(bad());
    }
    Ok(if prefix {
        PropertyPattern::Prefix(path.to_owned())
    } else {
        PropertyPattern::Exact(path.to_owned())
    })
}

impl Hidden {
    /// Nothing hidden.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hides a request header and trailer name (matched without regard to
    /// ASCII case).
    pub fn hide_request_header(&mut self, name: &str) -> Result<&mut Self, HiddenError> {
        let name = header_name(name)?;
        if !self.request_headers.contains(&name) {
            self.request_headers.push(name);
        }
        Ok(self)
    }

    /// Hides a response header and trailer name (matched without regard to
    /// ASCII case).
    pub fn hide_response_header(&mut self, name: &str) -> Result<&mut Self, HiddenError> {
        let name = header_name(name)?;
        if !self.response_headers.contains(&name) {
            self.response_headers.push(name);
        }
        Ok(self)
    }

    /// Hides a property: an exact dotted path (`source.address`) or a
    /// prefix (`connection.*`: `connection` and every path under it).
    pub fn hide_property(&mut self, pattern: &str) -> Result<&mut Self, HiddenError> {
        let p = property_pattern(pattern)?;
        if !self.properties.contains(&p) {
            self.properties.push(p);
        }
        Ok(self)
    }

    /// True if nothing is hidden.
    pub fn is_empty(&self) -> bool {
        self.request_headers.is_empty()
            && self.response_headers.is_empty()
            && self.properties.is_empty()
    }

    /// The hidden request header names, lower-cased.
    pub fn request_headers(&self) -> impl Iterator<Item = &str> {
        self.request_headers.iter().map(String::as_str)
    }

    /// The hidden response header names, lower-cased.
    pub fn response_headers(&self) -> impl Iterator<Item = &str> {
        self.response_headers.iter().map(String::as_str)
    }

    /// The hidden property patterns, as given (`connection.*`).
    pub fn properties(&self) -> impl Iterator<Item = String> + '_ {
        self.properties.iter().map(ToString::to_string)
    }

    /// The names hidden in a map: request names for maps 0–1, response
    /// names for 2–3, none for a callout's maps.
    fn names(&self, ty: MapType) -> &[String] {
        match ty {
            MapType::HttpRequestHeaders | MapType::HttpRequestTrailers => &self.request_headers,
            MapType::HttpResponseHeaders | MapType::HttpResponseTrailers => &self.response_headers,
            _ => &[],
        }
    }

    /// The hidden name `key` is (its configured, lower-cased spelling), if
    /// it is hidden in map `ty`.
    pub fn header(&self, ty: MapType, key: &[u8]) -> Option<&str> {
        self.names(ty)
            .iter()
            .find(|n| n.as_bytes().eq_ignore_ascii_case(key))
            .map(String::as_str)
    }

    /// True if header `key` is hidden in map `ty`.
    pub fn hides_header(&self, ty: MapType, key: &[u8]) -> bool {
        self.header(ty, key).is_some()
    }

    /// True if map `ty` hides any name.
    pub fn hides_in(&self, ty: MapType) -> bool {
        !self.names(ty).is_empty()
    }

    /// The pattern that hides property `path` (encoded: segments joined by
    /// NUL), if one does. The path is compared in its dotted form, so a
    /// guest that passes `source.address` as one segment is refused too.
    pub fn property(&self, path: &[u8]) -> Option<String> {
        if self.properties.is_empty() {
            return None;
        }
        let dotted = path_to_dotted(path);
        self.properties
            .iter()
            .find(|p| p.matches(&dotted))
            .map(ToString::to_string)
    }

    /// True if property `path` (encoded) is hidden.
    pub fn hides_property(&self, path: &[u8]) -> bool {
        self.property(path).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_lower_cased() {
        let mut h = Hidden::new();
        h.hide_request_header("Authorization").expect("a name");
        h.hide_request_header(":authority")
            .expect("a pseudo-header");
        assert!(h.hides_header(MapType::HttpRequestHeaders, b"AUTHORIZATION"));
        assert!(h.hides_header(MapType::HttpRequestTrailers, b"authorization"));
        assert!(!h.hides_header(MapType::HttpResponseHeaders, b"authorization"));
        assert!(!h.hides_header(MapType::HttpCallResponseHeaders, b"authorization"));
        assert_eq!(
            h.request_headers().collect::<Vec<_>>(),
            ["authorization", ":authority"]
        );
        for bad in ["", ":", "a b", "x\n", "é"] {
            assert_eq!(
                h.hide_response_header(bad).err(),
                Some(HiddenError::HeaderName(bad.into()))
            );
        }
    }

    #[test]
    fn property_patterns_match_exact_paths_and_prefixes() {
        let mut h = Hidden::new();
        h.hide_property("source.address").expect("a path");
        h.hide_property("connection.*").expect("a prefix");
        assert!(h.hides_property(b"source\0address"));
        assert!(h.hides_property(b"source.address"));
        assert!(!h.hides_property(b"source\0port"));
        assert!(!h.hides_property(b"source"));
        assert!(h.hides_property(b"connection"));
        assert!(h.hides_property(b"connection\0id"));
        assert!(!h.hides_property(b"connectionx\0id"));
        assert_eq!(
            h.property(b"connection\0mtls").as_deref(),
            Some("connection.*")
        );
        for bad in ["", "*", "a.*.b", "a..b", ".a", "a.", "a*"] {
            assert_eq!(
                h.hide_property(bad).err(),
                Some(HiddenError::PropertyPattern(bad.into())),
                "{bad}"
            );
        }
    }
}
