//! Property values and the per-context property store (ABI reference §10).
//!
//! Lookup order for `proxy_get_property` (see `hostcalls::properties`):
//! the built-ins `plugin_name`, `plugin_root_id`, `plugin_vm_id` and
//! `plugin_vm_configuration`; then `request.*`/`response.*` attributes derived
//! from the header maps the stream still holds; then the values set on the
//! context (by the embedder or by `proxy_set_property`), then the stream's
//! lazy source if the embedder gave one ([`PropertyMap::with_source`]); then the root
//! context's values; then the embedder's [`PropertyProvider`](crate::PropertyProvider).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use vessel_abi::pairs;

/// A typed attribute value, encoded as Envoy encodes it (ABI reference §10.1).
#[non_exhaustive]
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

/// Computes properties on demand: given an encoded path, the encoded value
/// or `None`. See [`PropertyMap::with_source`].
type PropertySource = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// Properties keyed by their encoded path (segments joined by NUL), holding
/// encoded values; optionally backed by a source (see
/// [`with_source`](Self::with_source)) that computes the others when a
/// guest first asks (so a stream whose filters never read
/// `source.address` does not format it).
#[derive(Clone, Default)]
pub struct PropertyMap {
    values: HashMap<Vec<u8>, Vec<u8>>,
    source: Option<PropertySource>,
}

impl std::fmt::Debug for PropertyMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PropertyMap")
            .field("values", &self.values)
            .field("source", &self.source.is_some())
            .finish()
    }
}

impl PartialEq for PropertyMap {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
            && match (&self.source, &other.source) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for PropertyMap {}

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

    /// A map whose values come from `source` when first asked for (values
    /// inserted later take precedence).
    pub fn with_source(source: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        Self {
            values: HashMap::new(),
            source: Some(Arc::new(source)),
        }
    }

    /// Looks up an encoded path among the inserted values (not the source).
    pub fn get(&self, path: &[u8]) -> Option<&[u8]> {
        self.values.get(path).map(Vec::as_slice)
    }

    /// Looks up an encoded path: the inserted values, then the source.
    pub fn lookup(&self, path: &[u8]) -> Option<Cow<'_, [u8]>> {
        match self.get(path) {
            Some(v) => Some(Cow::Borrowed(v)),
            None => self.source.as_ref().and_then(|s| s(path)).map(Cow::Owned),
        }
    }

    /// Number of inserted entries (the source's are not counted).
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

    #[test]
    fn source_is_asked_after_the_inserted_values() {
        let mut m = PropertyMap::with_source(|path| {
            (path == b"source\0address").then(|| b"10.0.0.1:5000".to_vec())
        });
        assert_eq!(
            m.lookup(b"source\0address").as_deref(),
            Some(&b"10.0.0.1:5000"[..])
        );
        assert_eq!(m.get(b"source\0address"), None);
        assert_eq!(m.lookup(b"source\0port"), None);
        m.insert_dotted("source.address", "set by the guest");
        assert_eq!(
            m.lookup(b"source\0address").as_deref(),
            Some(&b"set by the guest"[..])
        );
        assert_eq!(m.clone(), m);
        assert_ne!(m, PropertyMap::new());
    }
}
