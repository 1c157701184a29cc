//! A strict walker over the YAML tree ([`crate::yaml::Value`]) that follows Envoy's protobuf-JSON
//! reading rules closely enough for the supported subset, and names every
//! problem by its YAML path.
//!
//! Rules (protobuf JSON mapping, as Envoy applies it to YAML):
//! * a field may be spelled `snake_case` or `lowerCamelCase` (`vm_config` or
//!   `vmConfig`); giving both is an error;
//! * `null` means "not set";
//! * a repeated field given a single value is read as a one-element list
//!   (the proxy-wasm SDK examples write `listeners:` as one mapping);
//! * integers may be quoted; enums are matched case-insensitively
//!   (`codec_type: auto` works in Envoy);
//! * durations are protobuf `Duration` JSON strings (`"0.25s"`);
//! * bytes are base64 (standard or URL-safe alphabet, padding optional).
//!
//! Every key of every mapping is checked against the keys supported at that
//! place; nothing is silently ignored.

use std::time::Duration;

use crate::yaml::Value;

use super::error::{ConfigError, ErrorKind};

/// A path into the YAML document, e.g. `static_resources.listeners[0].name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct YamlPath(String);

impl YamlPath {
    /// The document root.
    pub(crate) fn root() -> Self {
        Self(String::new())
    }

    /// A root with a name: a resource a control plane delivered
    /// (`lds[main]`, `rds[routes]`).
    pub(crate) fn named(name: String) -> Self {
        Self(name)
    }

    /// The child `key` of this mapping.
    pub(crate) fn key(&self, key: &str) -> Self {
        if self.0.is_empty() {
            Self(key.to_owned())
        } else {
            Self(format!("{}.{key}", self.0))
        }
    }

    /// Element `i` of this list.
    pub(crate) fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// The path as text (`<root>` for the root).
    pub(crate) fn display(&self) -> String {
        if self.0.is_empty() {
            "<root>".to_owned()
        } else {
            self.0.clone()
        }
    }

    /// An error at this path.
    pub(crate) fn err(&self, kind: ErrorKind, message: impl Into<String>) -> ConfigError {
        ConfigError::Field {
            kind,
            path: self.display(),
            message: message.into(),
        }
    }
}

/// Result alias for the walker.
pub(crate) type Res<T> = Result<T, ConfigError>;

/// A YAML value together with its path.
#[derive(Debug, Clone)]
pub(crate) struct Node<'a> {
    pub(crate) v: &'a Value,
    pub(crate) path: YamlPath,
}

/// Describes a YAML value's type for error messages.
pub(crate) fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::UInt(_) | Value::Int(_) | Value::Float(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
    }
}

/// `vmConfig` → `vm_config`; snake_case keys are returned unchanged.
fn snake_case(key: &str) -> String {
    if !key.bytes().any(|b| b.is_ascii_uppercase()) {
        return key.to_owned();
    }
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl<'a> Node<'a> {
    /// Wraps the document root.
    pub(crate) fn root(v: &'a Value) -> Self {
        Self {
            v,
            path: YamlPath::root(),
        }
    }

    /// An error at this node.
    pub(crate) fn err(&self, kind: ErrorKind, message: impl Into<String>) -> ConfigError {
        self.path.err(kind, message)
    }

    fn expected(&self, what: &str) -> ConfigError {
        self.err(
            ErrorKind::Invalid,
            format!("expected {what}, found {}", describe(self.v)),
        )
    }

    /// Reads a protobuf message: a mapping whose keys must all be in
    /// `allowed` (snake_case names).
    pub(crate) fn obj(&self, allowed: &[&str]) -> Res<Obj<'a>> {
        let Value::Mapping(m) = self.v else {
            return Err(self.expected("a mapping"));
        };
        let mut entries: Vec<(String, Node<'a>)> = Vec::with_capacity(m.len());
        for (k, v) in m {
            let Value::String(k) = k else {
                return Err(self.err(
                    ErrorKind::Invalid,
                    format!("keys must be strings, found {}", describe(k)),
                ));
            };
            let path = self.path.key(k);
            let name = if k.starts_with('@') {
                k.clone()
            } else {
                snake_case(k)
            };
            if !allowed.contains(&name.as_str()) {
                let message = if allowed.is_empty() {
                    "not supported; no keys are supported here".to_owned()
                } else {
                    format!("not supported; supported keys here: {}", allowed.join(", "))
                };
                return Err(path.err(ErrorKind::Unsupported, message));
            }
            if entries.iter().any(|(n, _)| *n == name) {
                return Err(path.err(
                    ErrorKind::Duplicate,
                    format!("field `{name}` is given twice (snake_case and camelCase)"),
                ));
            }
            entries.push((name, Node { v, path }));
        }
        Ok(Obj {
            path: self.path.clone(),
            entries,
        })
    }

    /// Reads a map field (`map<string, V>`): string keys, any values.
    pub(crate) fn map(&self) -> Res<Vec<(&'a str, Node<'a>)>> {
        let Value::Mapping(m) = self.v else {
            return Err(self.expected("a mapping"));
        };
        let mut out = Vec::with_capacity(m.len());
        for (k, v) in m {
            let Value::String(k) = k else {
                return Err(self.err(
                    ErrorKind::Invalid,
                    format!("keys must be strings, found {}", describe(k)),
                ));
            };
            out.push((
                k.as_str(),
                Node {
                    v,
                    path: self.path.key(k),
                },
            ));
        }
        Ok(out)
    }

    /// Reads a repeated field. A single non-list value is read as a
    /// one-element list, as protobuf's JSON parser does.
    pub(crate) fn list(&self) -> Vec<Node<'a>> {
        match self.v {
            Value::Sequence(s) => s
                .iter()
                .enumerate()
                .map(|(i, v)| Node {
                    v,
                    path: self.path.index(i),
                })
                .collect(),
            _ => vec![self.clone()],
        }
    }

    /// Reads a string field.
    pub(crate) fn str(&self) -> Res<&'a str> {
        match self.v {
            Value::String(s) => Ok(s),
            Value::UInt(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                Err(self.expected("a string (quote the value)"))
            }
            _ => Err(self.expected("a string")),
        }
    }

    /// Reads a string field that must not be empty.
    pub(crate) fn non_empty_str(&self) -> Res<&'a str> {
        let s = self.str()?;
        if s.is_empty() {
            return Err(self.err(ErrorKind::Invalid, "must not be empty"));
        }
        Ok(s)
    }

    /// Reads a bool field.
    pub(crate) fn bool(&self) -> Res<bool> {
        match self.v {
            Value::Bool(b) => Ok(*b),
            _ => Err(self.expected("true or false")),
        }
    }

    /// Reads a `google.protobuf.BoolValue`: a bare bool, or `{value: bool}`.
    pub(crate) fn bool_value(&self) -> Res<bool> {
        match self.v {
            Value::Bool(b) => Ok(*b),
            Value::Mapping(_) => {
                let o = self.obj(&["value"])?;
                o.get("value").map_or(Ok(false), |n| n.bool())
            }
            _ => Err(self.expected("true or false")),
        }
    }

    /// Reads a `uint32` field (a number, or a quoted number).
    pub(crate) fn u32(&self) -> Res<u32> {
        let n = match self.v {
            Value::UInt(_) | Value::Int(_) | Value::Float(_) => self.v.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => return Err(self.expected("a non-negative integer")),
        };
        n.and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
            self.err(
                ErrorKind::Invalid,
                "expected a non-negative integer below 2^32",
            )
        })
    }

    /// Reads a `uint64` field (a number, or a quoted number, as protobuf
    /// JSON writes 64-bit integers).
    pub(crate) fn u64(&self) -> Res<u64> {
        let n = match self.v {
            Value::UInt(_) | Value::Int(_) | Value::Float(_) => self.v.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => return Err(self.expected("a non-negative integer")),
        };
        n.ok_or_else(|| {
            self.err(
                ErrorKind::Invalid,
                "expected a non-negative integer below 2^64",
            )
        })
    }

    /// Reads a port number (0..=65535).
    pub(crate) fn port(&self) -> Res<u16> {
        let n = self.u32()?;
        u16::try_from(n).map_err(|_| {
            self.err(
                ErrorKind::Invalid,
                format!("port {n} is out of range (0..=65535)"),
            )
        })
    }

    /// Reads an enum by name, case-insensitively. Returns the canonical
    /// (upper-case) name from `supported`. Names in `unsupported` are valid
    /// in Envoy but not implemented: they give an `Unsupported` error.
    pub(crate) fn enumeration(
        &self,
        supported: &[&'static str],
        unsupported: &[&str],
    ) -> Res<&'static str> {
        let s = self.str()?;
        if let Some(found) = supported.iter().find(|c| c.eq_ignore_ascii_case(s)) {
            return Ok(found);
        }
        if unsupported.iter().any(|c| c.eq_ignore_ascii_case(s)) {
            return Err(self.err(
                ErrorKind::Unsupported,
                format!(
                    "`{s}` is not supported; supported values: {}",
                    supported.join(", ")
                ),
            ));
        }
        Err(self.err(
            ErrorKind::Invalid,
            format!(
                "unknown value `{s}`; supported values: {}",
                supported.join(", ")
            ),
        ))
    }

    /// Reads a `google.protobuf.Duration` (JSON form: `"1.5s"`). Negative
    /// durations are rejected.
    pub(crate) fn duration(&self) -> Res<Duration> {
        let s = self.str().map_err(|_| {
            self.err(
                ErrorKind::Invalid,
                format!(
                    "expected a duration string like \"0.25s\", found {}",
                    describe(self.v)
                ),
            )
        })?;
        parse_duration(s).map_err(|m| self.err(ErrorKind::Invalid, m))
    }

    /// Reads a base64 `bytes` field.
    pub(crate) fn base64(&self) -> Res<Vec<u8>> {
        let s = self.str()?;
        decode_base64(s).map_err(|m| self.err(ErrorKind::Invalid, m))
    }

    /// Converts this value (a `google.protobuf.Struct`/`Value`) to JSON.
    pub(crate) fn to_json(&self) -> Res<serde_json::Value> {
        Ok(match self.v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            n @ (Value::UInt(_) | Value::Int(_) | Value::Float(_)) => {
                // Struct numbers are doubles; integral ones print without a
                // fraction, as protobuf's JSON printer does.
                if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= 1 << 53) {
                    serde_json::Value::from(i)
                } else if let Some(f) = n.as_f64() {
                    if f.fract() == 0.0 && f.abs() <= (1u64 << 53) as f64 {
                        serde_json::Value::from(f as i64)
                    } else {
                        serde_json::Number::from_f64(f)
                            .map(serde_json::Value::Number)
                            .ok_or_else(|| {
                                self.err(ErrorKind::Invalid, "NaN and infinity are not JSON")
                            })?
                    }
                } else {
                    return Err(self.err(ErrorKind::Invalid, "number out of range"));
                }
            }
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Sequence(_) => {
                serde_json::Value::Array(self.list().iter().map(Node::to_json).collect::<Res<_>>()?)
            }
            Value::Mapping(_) => {
                let mut m = serde_json::Map::new();
                for (k, v) in self.map()? {
                    m.insert(k.to_owned(), v.to_json()?);
                }
                serde_json::Value::Object(m)
            }
        })
    }
}

/// A protobuf message read from a mapping whose keys were all checked.
#[derive(Debug)]
pub(crate) struct Obj<'a> {
    pub(crate) path: YamlPath,
    entries: Vec<(String, Node<'a>)>,
}

impl<'a> Obj<'a> {
    /// The field `key` (snake_case), if present and not null.
    pub(crate) fn get(&self, key: &str) -> Option<Node<'a>> {
        self.entries
            .iter()
            .find(|(n, node)| n == key && !node.v.is_null())
            .map(|(_, node)| node.clone())
    }

    /// The field `key`, which must be present.
    pub(crate) fn req(&self, key: &str) -> Res<Node<'a>> {
        self.get(key).ok_or_else(|| {
            self.path
                .key(key)
                .err(ErrorKind::Missing, "required field is missing")
        })
    }

    /// An optional string field, default `""`.
    pub(crate) fn string_or_default(&self, key: &str) -> Res<String> {
        self.get(key)
            .map_or(Ok(String::new()), |n| n.str().map(str::to_owned))
    }

    /// An error at this message.
    pub(crate) fn err(&self, kind: ErrorKind, message: impl Into<String>) -> ConfigError {
        self.path.err(kind, message)
    }
}

/// The protobuf message name of an `Any` type URL: what follows the last `/`.
pub(crate) fn type_name(url: &str) -> Option<&str> {
    url.rsplit_once('/').map(|(_, name)| name)
}

/// The `@type` of an `Any` (as a type name), read without checking the other
/// keys.
pub(crate) fn any_type<'a>(node: &Node<'a>) -> Res<&'a str> {
    let Value::Mapping(_) = node.v else {
        return Err(node.err(
            ErrorKind::Invalid,
            format!(
                "expected a mapping with \"@type\", found {}",
                describe(node.v)
            ),
        ));
    };
    let Some(t) = node.v.get("@type") else {
        return Err(node
            .path
            .key("@type")
            .err(ErrorKind::Missing, "required field is missing"));
    };
    let at = Node {
        v: t,
        path: node.path.key("@type"),
    };
    let url = at.str()?;
    type_name(url).filter(|n| !n.is_empty()).ok_or_else(|| {
        at.err(
            ErrorKind::Invalid,
            format!("`{url}` is not a type URL (expected type.googleapis.com/<message name>)"),
        )
    })
}

/// Parses protobuf's JSON `Duration`: `[-]seconds[.fraction]s`, up to nine
/// fractional digits.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration; expected seconds like \"5s\" or \"0.25s\"");
    let body = s.strip_suffix('s').ok_or_else(bad)?;
    if body.starts_with('-') {
        return Err(format!("`{s}`: a negative duration is not allowed here"));
    }
    let (secs, frac) = body.split_once('.').unwrap_or((body, ""));
    if secs.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !secs.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > 9 || (body.contains('.') && frac.is_empty()) {
        return Err(bad());
    }
    let secs: u64 = if secs.is_empty() {
        0
    } else {
        secs.parse().map_err(|_| bad())?
    };
    // protobuf's Duration range: ±315,576,000,000 s (10,000 years).
    if secs > 315_576_000_000 {
        return Err(format!("`{s}` is out of range"));
    }
    let mut nanos: u32 = 0;
    for (i, d) in frac.bytes().enumerate() {
        nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    Ok(Duration::new(secs, nanos))
}

/// Decodes base64 as protobuf's JSON parser does: standard or URL-safe
/// alphabet, with or without `=` padding.
pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        }))
    }
    let trimmed = s.trim_end_matches('=');
    let padding = s.len() - trimmed.len();
    let bytes = trimmed.as_bytes();
    if padding > 2 || (padding > 0 && !s.len().is_multiple_of(4)) || bytes.len() % 4 == 1 {
        return Err("invalid base64: bad length or padding".to_owned());
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc: u32 = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = sextet(c).ok_or_else(|| {
                format!("invalid base64: unexpected character {:?}", char::from(c))
            })?;
            acc |= v << (18 - 6 * i);
        }
        let [_, a, b, c] = acc.to_be_bytes();
        out.push(a);
        if chunk.len() > 2 {
            out.push(b);
        }
        if chunk.len() > 3 {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.000000001s"), Ok(Duration::new(1, 1)));
        assert_eq!(parse_duration("5000s"), Ok(Duration::from_secs(5000)));
        for bad in [
            "5",
            "100ms",
            "1.s",
            "s",
            "-1s",
            "1.0000000001s",
            "1e3s",
            " 1s",
            "1 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn base64() {
        assert_eq!(decode_base64("aGVsbG8="), Ok(b"hello".to_vec()));
        assert_eq!(decode_base64("aGVsbG8"), Ok(b"hello".to_vec()));
        assert_eq!(decode_base64("aGVsbA=="), Ok(b"hell".to_vec()));
        assert_eq!(decode_base64(""), Ok(Vec::new()));
        assert_eq!(decode_base64("_-8="), Ok(vec![0xff, 0xef]));
        assert_eq!(decode_base64("/+8="), Ok(vec![0xff, 0xef]));
        for bad in ["a", "aGVsbG8===", "aGV*", "aG=V"] {
            assert!(decode_base64(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn camel_case_keys() {
        assert_eq!(snake_case("vmConfig"), "vm_config");
        assert_eq!(snake_case("http2ProtocolOptions"), "http2_protocol_options");
        assert_eq!(snake_case("root_id"), "root_id");
    }
}
