//! Property values and the per-context property store (ABI reference §10).
//!
//! Lookup order for `proxy_get_property` (see `hostcalls::properties`):
//! the built-ins `plugin_name`, `plugin_root_id`, `plugin_vm_id` and
//! `plugin_vm_configuration`; then `request.*`/`response.*` attributes derived
//! from the header maps the stream still holds; then the values set on the
//! context (by the embedder or by `proxy_set_property`); then the root
//! context's values; then the embedder's [`PropertyProvider`](crate::PropertyProvider).

use std::collections::HashMap;

use vessel_abi::pairs;

/// A typed attribute value, encoded as Envoy encodes it (ABI reference §10.1).
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    /// A string or bytes: the raw bytes.
    Bytes(Vec<u8>),
    /// An int: 8 bytes little-endian.
    Int(i64),
    /// A uint: 8 bytes little-endian.
    Uint(u64),
    /// A double: 8 bytes little-endian.
    Double(f64),
    /// A bool: one byte, 0 or 1.
    Bool(bool),
    /// A duration or timestamp: int64 nanoseconds.
    Nanos(i64),
    /// A map: a serialized pair map.
    Map(Vec<(Vec<u8>, Vec<u8>)>),
    /// A list: a pair map with the elements as keys and empty values.
    List(Vec<Vec<u8>>),
}

impl PropertyValue {
    /// The bytes a guest reads.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Bytes(b) => b.clone(),
            Self::Int(i) | Self::Nanos(i) => i.to_le_bytes().to_vec(),
            Self::Uint(u) => u.to_le_bytes().to_vec(),
            Self::Double(d) => d.to_le_bytes().to_vec(),
            Self::Bool(b) => vec![u8::from(*b)],
            Self::Map(m) => pairs::encode(m.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))),
            Self::List(l) => pairs::encode(l.iter().map(|k| (k.as_slice(), &[][..]))),
        }
    }
}

impl From<&str> for PropertyValue {
    fn from(s: &str) -> Self {
        Self::Bytes(s.as_bytes().to_vec())
    }
}

impl From<String> for PropertyValue {
    fn from(s: String) -> Self {
        Self::Bytes(s.into_bytes())
    }
}

impl From<i64> for PropertyValue {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

impl From<bool> for PropertyValue {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

/// Properties keyed by their encoded path (segments joined by NUL), holding
/// encoded values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyMap {
    values: HashMap<Vec<u8>, Vec<u8>>,
}

impl PropertyMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the value at a dotted path (`"source.address"`).
    pub fn insert_dotted(&mut self, dotted: &str, value: impl Into<PropertyValue>) {
        self.values
            .insert(vessel_abi::path_from_dotted(dotted), value.into().encode());
    }

    /// Sets encoded bytes at an encoded path.
    pub fn insert_raw(&mut self, path: Vec<u8>, value: Vec<u8>) {
        self.values.insert(path, value);
    }

    /// Looks up an encoded path.
    pub fn get(&self, path: &[u8]) -> Option<&[u8]> {
        self.values.get(path).map(Vec::as_slice)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_envoy() {
        assert_eq!(
            PropertyValue::Int(258).encode(),
            vec![2, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(PropertyValue::Bool(true).encode(), vec![1]);
        assert_eq!(PropertyValue::from("ab").encode(), b"ab".to_vec());
        let list = PropertyValue::List(vec![b"a".to_vec()]).encode();
        assert_eq!(list, pairs::encode([(&b"a"[..], &b""[..])]));
        let mut m = PropertyMap::new();
        m.insert_dotted("source.port", 80i64);
        assert_eq!(m.get(b"source\0port"), Some(&80i64.to_le_bytes()[..]));
    }
}
