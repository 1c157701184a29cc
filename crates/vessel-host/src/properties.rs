//! Property values and the per-context property store (ABI reference §10).
//!
//! Lookup order for `proxy_get_property` (see `hostcalls::properties`):
//! the built-ins `plugin_name`, `plugin_root_id`, `plugin_vm_id` and
//! `plugin_vm_configuration`; then `request.*`/`response.*` attributes derived
//! from the header maps the stream still holds; then the values set on the
//! context (by the embedder or by `proxy_set_property`), then the stream's
//! lazy source if the embedder gave one ([`PropertyMap::with_source`]); then the root
//! context's values; then the embedder's [`PropertyProvider`](crate::PropertyProvider).
//! A stream context that finds no `response.flags` there reads 0, as Envoy's
//! stream info always has response flags (none yet).

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

    /// [`encode`](Self::encode), reusing a string's or bytes' own buffer.
    pub fn into_encoded(self) -> Vec<u8> {
        match self {
            Self::Bytes(b) => b,
            other => other.encode(),
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
/// or `None`. See [`PropertyMap::with_source`] and
/// [`PropertyMap::add_late_source`].
pub type PropertySource = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// Properties keyed by their encoded path (segments joined by NUL), holding
/// encoded values; optionally backed by a source (see
/// [`with_source`](Self::with_source)) that computes the others when a
/// guest first asks (so a stream whose filters never read
/// `source.address` does not format it).
#[derive(Clone, Default)]
pub struct PropertyMap {
    values: HashMap<Vec<u8>, Vec<u8>>,
    source: Option<PropertySource>,
    /// Facts the embedder learns mid-stream (the upstream's, the
    /// response's), computed when asked; they win over every other value.
    late_source: Option<PropertySource>,
    filter_state: Option<FilterState>,
    /// What the inserted values account for ([`entry_bytes`]).
    bytes: usize,
}

/// Bookkeeping each stored property counts besides its path and value (a
/// map entry and two vectors), so that many tiny properties are bounded
/// too ([`Limits::max_property_bytes`](crate::Limits::max_property_bytes)).
pub const PROPERTY_ENTRY_OVERHEAD: usize = 64;

/// What one stored property accounts for.
fn entry_bytes(path_len: usize, value_len: usize) -> usize {
    path_len
        .saturating_add(value_len)
        .saturating_add(PROPERTY_ENTRY_OVERHEAD)
}

/// `bytes` after `path` is set to a value of `value_len` bytes in `values`.
fn bytes_after(
    values: &HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
    path: &[u8],
    value_len: usize,
) -> usize {
    let old = values
        .get(path)
        .map_or(0, |v| entry_bytes(path.len(), v.len()));
    bytes
        .saturating_sub(old)
        .saturating_add(entry_bytes(path.len(), value_len))
}

/// Per-stream filter state, shared by the filters of one stream (each in
/// its own VM), as Envoy's `StreamInfo::FilterState`: what a filter sets
/// with `proxy_set_property` on a stream, later filters of the same stream
/// read with `proxy_get_property` (ABI reference §10). Cheap to clone (one
/// `Arc`). The [`HttpStream`](crate::stream::HttpStream) gives every filter
/// context of a stream the same one.
#[derive(Clone, Default)]
pub struct FilterState {
    inner: Arc<std::sync::Mutex<StateInner>>,
}

#[derive(Default)]
struct StateInner {
    values: HashMap<Vec<u8>, Vec<u8>>,
    /// What the values account for ([`entry_bytes`]).
    bytes: usize,
}

impl std::fmt::Debug for FilterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterState")
            .field("entries", &self.lock().values.len())
            .finish()
    }
}

impl FilterState {
    /// An empty filter state.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StateInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value at an encoded path (segments joined by NUL).
    pub fn get(&self, path: &[u8]) -> Option<Vec<u8>> {
        self.lock().values.get(path).cloned()
    }

    /// Sets the value at an encoded path.
    pub fn set(&self, path: Vec<u8>, value: Vec<u8>) {
        let mut inner = self.lock();
        inner.bytes = bytes_after(&inner.values, inner.bytes, &path, value.len());
        inner.values.insert(path, value);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().values.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.lock().values.is_empty()
    }

    /// What the values account for: paths, values and
    /// [`PROPERTY_ENTRY_OVERHEAD`] per entry.
    pub fn byte_size(&self) -> usize {
        self.lock().bytes
    }

    /// True if both handles share one state.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl std::fmt::Debug for PropertyMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PropertyMap")
            .field("values", &self.values)
            .field("source", &self.source.is_some())
            .field("late_source", &self.late_source.is_some())
            .finish()
    }
}

impl PartialEq for PropertyMap {
    fn eq(&self, other: &Self) -> bool {
        let same_source = |a: &Option<PropertySource>, b: &Option<PropertySource>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.values == other.values
            && same_source(&self.source, &other.source)
            && same_source(&self.late_source, &other.late_source)
            && match (&self.filter_state, &other.filter_state) {
                (None, None) => true,
                (Some(a), Some(b)) => a.same(b),
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
        self.insert_raw(vessel_abi::path_from_dotted(dotted), value.into().encode());
    }

    /// Sets encoded bytes at an encoded path.
    pub fn insert_raw(&mut self, path: Vec<u8>, value: Vec<u8>) {
        self.bytes = bytes_after(&self.values, self.bytes, &path, value.len());
        self.values.insert(path, value);
    }

    /// What the inserted values account for: paths, values and
    /// [`PROPERTY_ENTRY_OVERHEAD`] per entry (the source's are not counted).
    pub fn byte_size(&self) -> usize {
        self.bytes
    }

    /// Where [`set_by_guest`](Self::set_by_guest) of a value of `value_len`
    /// bytes at `path` would store it, as `(bytes before, bytes after)`
    /// of that store: the filter state if one is attached, else this map.
    pub fn guest_set_bytes(&self, path: &[u8], value_len: usize) -> (usize, usize) {
        match &self.filter_state {
            Some(state) => {
                let inner = state.lock();
                (
                    inner.bytes,
                    bytes_after(&inner.values, inner.bytes, path, value_len),
                )
            }
            None => (
                self.bytes,
                bytes_after(&self.values, self.bytes, path, value_len),
            ),
        }
    }

    /// Attaches a stream's shared [`FilterState`]: from then on
    /// [`set_by_guest`](Self::set_by_guest) writes there, and
    /// [`lookup`](Self::lookup) reads it after the inserted values.
    pub fn set_filter_state(&mut self, state: FilterState) {
        self.filter_state = Some(state);
    }

    /// The attached filter state, if any.
    pub fn filter_state(&self) -> Option<&FilterState> {
        self.filter_state.as_ref()
    }

    /// What `proxy_set_property` stores: into the stream's filter state if
    /// one is attached (so the stream's other filters see it), else into
    /// this map.
    pub fn set_by_guest(&mut self, path: Vec<u8>, value: Vec<u8>) {
        match &self.filter_state {
            Some(state) => {
                // A later local value would shadow the shared one.
                if let Some(old) = self.values.remove(&path) {
                    self.bytes = self
                        .bytes
                        .saturating_sub(entry_bytes(path.len(), old.len()));
                }
                state.set(path, value);
            }
            None => self.insert_raw(path, value),
        }
    }

    /// A map whose values come from `source` when first asked for (values
    /// inserted later take precedence).
    pub fn with_source(source: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        Self {
            values: HashMap::new(),
            source: Some(Arc::new(source)),
            late_source: None,
            filter_state: None,
            bytes: 0,
        }
    }

    /// Adds facts learnt mid-stream (the upstream's address, the
    /// response's details): [`lookup`](Self::lookup) asks `source` first,
    /// before the inserted values, as an embedder's later
    /// [`insert_raw`](Self::insert_raw) of each would have replaced them; a
    /// second late source is asked before the first. Nothing is computed or
    /// stored until a guest asks, so a stream whose filters never read
    /// `upstream.address` does not format it.
    pub fn add_late_source(&mut self, source: PropertySource) {
        self.late_source = Some(match self.late_source.take() {
            None => source,
            Some(earlier) => Arc::new(move |path: &[u8]| source(path).or_else(|| earlier(path))),
        });
    }

    /// Looks up an encoded path among the inserted values (not the source).
    pub fn get(&self, path: &[u8]) -> Option<&[u8]> {
        self.values.get(path).map(Vec::as_slice)
    }

    /// Looks up an encoded path: the late source, the inserted values, the
    /// filter state, then the source.
    pub fn lookup(&self, path: &[u8]) -> Option<Cow<'_, [u8]>> {
        if let Some(v) = self.late_source.as_ref().and_then(|s| s(path)) {
            return Some(Cow::Owned(v));
        }
        if let Some(v) = self.get(path) {
            return Some(Cow::Borrowed(v));
        }
        if let Some(v) = self.filter_state.as_ref().and_then(|s| s.get(path)) {
            return Some(Cow::Owned(v));
        }
        self.source.as_ref().and_then(|s| s(path)).map(Cow::Owned)
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
    fn a_late_source_wins_and_the_latest_is_asked_first() {
        let mut m = PropertyMap::with_source(|p| (p == b"a").then(|| b"from source".to_vec()));
        m.insert_raw(b"b".to_vec(), b"inserted".to_vec());
        m.insert_raw(b"c".to_vec(), b"inserted".to_vec());
        m.add_late_source(Arc::new(|p: &[u8]| {
            matches!(p, b"b" | b"d").then(|| b"first late".to_vec())
        }));
        m.add_late_source(Arc::new(|p: &[u8]| {
            (p == b"d").then(|| b"second late".to_vec())
        }));
        let get = |p: &[u8]| m.lookup(p).map(|v| v.into_owned());
        assert_eq!(get(b"a").as_deref(), Some(&b"from source"[..]));
        assert_eq!(get(b"b").as_deref(), Some(&b"first late"[..]));
        assert_eq!(get(b"c").as_deref(), Some(&b"inserted"[..]));
        assert_eq!(get(b"d").as_deref(), Some(&b"second late"[..]));
        assert_eq!(get(b"e"), None);
        // A clone (a context created later) shares the sources.
        assert_eq!(m.clone(), m);
        assert_eq!(m.clone().lookup(b"d").as_deref(), Some(&b"second late"[..]));
    }

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
    fn byte_size_counts_each_property_once_with_its_overhead() {
        let e = |path: usize, value: usize| path + value + PROPERTY_ENTRY_OVERHEAD;
        let mut m = PropertyMap::new();
        m.insert_raw(b"a\0b".to_vec(), b"12345".to_vec());
        assert_eq!(m.byte_size(), e(3, 5));
        assert_eq!(m.guest_set_bytes(b"a\0b", 1), (e(3, 5), e(3, 1)));
        assert_eq!(m.guest_set_bytes(b"c", 1), (e(3, 5), e(3, 5) + e(1, 1)));
        m.set_by_guest(b"a\0b".to_vec(), b"1".to_vec());
        assert_eq!(m.byte_size(), e(3, 1));
        m.insert_dotted("c", "xy");
        assert_eq!(m.byte_size(), e(3, 1) + e(1, 2));
        // With a filter state attached, guest values count there.
        let state = FilterState::new();
        m.set_filter_state(state.clone());
        assert_eq!(m.guest_set_bytes(b"c", 4), (0, e(1, 4)));
        m.set_by_guest(b"c".to_vec(), b"wxyz".to_vec());
        assert_eq!(state.byte_size(), e(1, 4));
        assert_eq!(m.byte_size(), e(3, 1), "the shadowing local value went");
        state.set(b"c".to_vec(), b"".to_vec());
        assert_eq!(state.byte_size(), e(1, 0));
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
