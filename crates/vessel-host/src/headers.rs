//! [`HeaderMap`]: the host's representation of a header, trailer or metadata
//! map (ABI reference §4.3, §11.18).
//!
//! Keys are stored lower-cased, as Envoy stores them; lookups ignore ASCII
//! case. Values are arbitrary bytes (non-UTF-8 values are kept as they are).
//! Pseudo-headers (`:path`, `:status`, ...) are ordinary entries.

use vessel_abi::pairs;

/// An ordered multimap of byte keys to byte values.
///
/// All keys and values live in one byte buffer, so building or cloning a
/// map costs two allocations however many entries it has.
#[derive(Clone, Default)]
pub struct HeaderMap {
    buf: Vec<u8>,
    entries: Vec<Entry>,
    /// Bytes in `buf` no entry refers to any more.
    garbage: usize,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: (u32, u32),
    value: (u32, u32),
}

impl std::fmt::Debug for HeaderMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k), String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

impl PartialEq for HeaderMap {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for HeaderMap {}

impl HeaderMap {
    /// An empty map.
    pub const fn new() -> Self {
        Self {
            buf: Vec::new(),
            entries: Vec::new(),
            garbage: 0,
        }
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n * 32),
            entries: Vec::with_capacity(n),
            garbage: 0,
        }
    }

    /// Builds a map from pairs, lower-casing the keys and keeping duplicates.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut map = Self::new();
        for (k, v) in pairs {
            map.append(k.as_ref(), v.as_ref());
        }
        map
    }

    fn slice(&self, (start, len): (u32, u32)) -> &[u8] {
        &self.buf[start as usize..(start + len) as usize]
    }

    fn push_bytes(&mut self, bytes: &[u8], lowercase: bool) -> (u32, u32) {
        let start = self.buf.len();
        if lowercase {
            self.buf.extend(bytes.iter().map(u8::to_ascii_lowercase));
        } else {
            self.buf.extend_from_slice(bytes);
        }
        // Maps are bounded far below 4 GiB by the callers' limits.
        (start as u32, bytes.len() as u32)
    }

    /// Number of entries (a repeated key counts once per value).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + Clone {
        self.entries
            .iter()
            .map(|e| (self.slice(e.key), self.slice(e.value)))
    }

    /// The index of the first entry of `key` (ASCII case-insensitive).
    pub fn position(&self, key: &[u8]) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| self.slice(e.key).eq_ignore_ascii_case(key))
    }

    /// The value of the entry at `index`.
    pub fn value_at(&self, index: usize) -> Option<&[u8]> {
        self.entries.get(index).map(|e| self.slice(e.value))
    }

    /// The first value of `key` (ASCII case-insensitive), as Envoy's
    /// `proxy_get_header_map_value` returns it.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.position(key).and_then(|i| self.value_at(i))
    }

    /// The first value of `key` as UTF-8 text, if it is valid UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key.as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// True if `key` is present.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.position(key).is_some()
    }

    /// Adds another entry (Envoy `addCopy`).
    pub fn append(&mut self, key: &[u8], value: &[u8]) {
        let key = self.push_bytes(key, true);
        let value = self.push_bytes(value, false);
        self.entries.push(Entry { key, value });
    }

    /// Sets `key` to one value (Envoy `setCopy`): the first entry is updated in
    /// place and later duplicates are removed; an absent key is appended.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        let Some(first) = self.position(key) else {
            self.append(key, value);
            return;
        };
        let old = self.entries[first].value;
        if value.len() <= old.1 as usize {
            let start = old.0 as usize;
            self.buf[start..start + value.len()].copy_from_slice(value);
            self.garbage += old.1 as usize - value.len();
            self.entries[first].value = (old.0, value.len() as u32);
        } else {
            self.garbage += old.1 as usize;
            self.entries[first].value = self.push_bytes(value, false);
        }
        let mut i = first + 1;
        while i < self.entries.len() {
            if self.slice(self.entries[i].key).eq_ignore_ascii_case(key) {
                let e = self.entries.remove(i);
                self.garbage += (e.key.1 + e.value.1) as usize;
            } else {
                i += 1;
            }
        }
        self.maybe_compact();
    }

    /// Removes every entry of `key`; returns how many were removed.
    pub fn remove(&mut self, key: &[u8]) -> usize {
        let before = self.entries.len();
        let mut freed = 0;
        let buf = &self.buf;
        self.entries.retain(|e| {
            let k = &buf[e.key.0 as usize..(e.key.0 + e.key.1) as usize];
            let keep = !k.eq_ignore_ascii_case(key);
            if !keep {
                freed += (e.key.1 + e.value.1) as usize;
            }
            keep
        });
        self.garbage += freed;
        self.maybe_compact();
        before - self.entries.len()
    }

    fn maybe_compact(&mut self) {
        if self.garbage < 1024 || self.garbage * 2 < self.buf.len() {
            return;
        }
        let mut fresh = Self::with_capacity(self.entries.len());
        for (k, v) in self.iter() {
            let key = fresh.push_bytes(k, false);
            let value = fresh.push_bytes(v, false);
            fresh.entries.push(Entry { key, value });
        }
        *self = fresh;
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.buf.clear();
        self.garbage = 0;
    }

    /// Sum of key and value bytes: Envoy's `HeaderMap::byteSize()`, which is
    /// what Envoy's `proxy_get_header_map_size` returns (ABI reference §4.3).
    pub fn byte_size(&self) -> usize {
        self.entries
            .iter()
            .map(|e| (e.key.1 + e.value.1) as usize)
            .sum()
    }

    /// The size of the serialized pair map (0 for an empty map).
    pub fn encoded_len(&self) -> usize {
        pairs::encoded_len(self.iter())
    }

    /// Serializes into `dst`, which must be exactly [`encoded_len`](Self::encoded_len) long.
    pub fn encode_into(&self, dst: &mut [u8]) -> Result<(), pairs::PairsError> {
        pairs::encode_into(self.iter(), dst)
    }

    /// Serializes into a new vector.
    pub fn encode(&self) -> Vec<u8> {
        pairs::encode(self.iter())
    }

    /// Replaces the whole map with decoded pairs, lower-casing the keys.
    pub fn replace_with<'a, I>(&mut self, pairs: I)
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        self.clear();
        for (k, v) in pairs {
            self.append(k, v);
        }
    }

    /// The entries as owned `(key, value)` pairs.
    pub fn to_pairs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for HeaderMap {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Self::from_pairs(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> HeaderMap {
        HeaderMap::from_pairs([
            (":path", "/a"),
            ("Set-Cookie", "a=1"),
            ("x", "1"),
            ("set-cookie", "b=2"),
        ])
    }

    #[test]
    fn keys_are_lowercased_and_lookup_ignores_case() {
        let m = map();
        assert_eq!(m.get(b"SET-COOKIE"), Some(&b"a=1"[..]));
        assert_eq!(m.iter().nth(1).map(|(k, _)| k), Some(&b"set-cookie"[..]));
        assert_eq!(m.get_all(b"set-cookie").count(), 2);
        assert_eq!(m.get(b"missing"), None);
    }

    #[test]
    fn insert_replaces_all_values_in_place() {
        let mut m = map();
        m.insert(b"set-cookie", b"c=3");
        assert_eq!(
            m.get_all(b"set-cookie").collect::<Vec<_>>(),
            vec![&b"c=3"[..]]
        );
        assert_eq!(m.iter().nth(1).map(|(_, v)| v), Some(&b"c=3"[..]));
        m.insert(b"New", b"v");
        assert_eq!(m.iter().last(), Some((&b"new"[..], &b"v"[..])));
    }

    #[test]
    fn many_edits_compact_and_keep_contents() {
        let mut m = HeaderMap::new();
        for i in 0..2000u32 {
            m.insert(
                b"k",
                format!("value-{i}-{}", "x".repeat((i % 7) as usize)).as_bytes(),
            );
            m.append(b"tmp", b"12345678");
            m.remove(b"tmp");
        }
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(b"k"), Some(&b"value-1999-xxxx"[..]));
        assert!(m.buf.len() < 4096, "garbage is compacted: {}", m.buf.len());
    }

    #[test]
    fn remove_and_sizes() {
        let mut m = map();
        assert_eq!(m.byte_size(), 5 + 2 + 10 + 3 + 1 + 1 + 10 + 3);
        assert_eq!(m.remove(b"SET-cookie"), 2);
        assert_eq!(m.remove(b"absent"), 0);
        assert_eq!(m.len(), 2);
        let encoded = m.encode();
        assert_eq!(encoded.len(), m.encoded_len());
        assert_eq!(HeaderMap::new().encoded_len(), 0);
    }
}
