//! [`HeaderMap`]: the host's representation of a header, trailer or metadata
//! map (ABI reference §4.3, §11.18).
//!
//! Keys are stored lower-cased, as Envoy stores them; lookups ignore ASCII
//! case. Values are arbitrary bytes (non-UTF-8 values are kept as they are).
//! Pseudo-headers (`:path`, `:status`, ...) are ordinary entries.

use vessel_abi::pairs;

/// An ordered multimap of byte keys to byte values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

fn lower(key: &[u8]) -> Vec<u8> {
    key.to_ascii_lowercase()
}

impl HeaderMap {
    /// An empty map.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
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
        self.entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// The first value of `key` (ASCII case-insensitive), as Envoy's
    /// `proxy_get_header_map_value` returns it.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `key` as UTF-8 text, if it is valid UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key.as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_slice())
    }

    /// The index of the first entry of `key`.
    pub fn position(&self, key: &[u8]) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k.eq_ignore_ascii_case(key))
    }

    /// The value of the entry at `index`.
    pub fn value_at(&self, index: usize) -> Option<&[u8]> {
        self.entries.get(index).map(|(_, v)| v.as_slice())
    }

    /// True if `key` is present.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Adds another entry (Envoy `addCopy`).
    pub fn append(&mut self, key: &[u8], value: &[u8]) {
        self.entries.push((lower(key), value.to_vec()));
    }

    /// Sets `key` to one value (Envoy `setCopy`): the first entry is updated in
    /// place and later duplicates are removed; an absent key is appended.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        match self.entries.iter().position(|(k, _)| k.eq_ignore_ascii_case(key)) {
            Some(first) => {
                let slot = &mut self.entries[first].1;
                slot.clear();
                slot.extend_from_slice(value);
                let mut i = first + 1;
                while i < self.entries.len() {
                    if self.entries[i].0.eq_ignore_ascii_case(key) {
                        self.entries.remove(i);
                    } else {
                        i += 1;
                    }
                }
            }
            None => self.append(key, value),
        }
    }

    /// Removes every entry of `key`; returns how many were removed.
    pub fn remove(&mut self, key: &[u8]) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        before - self.entries.len()
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Sum of key and value bytes: Envoy's `HeaderMap::byteSize()`, which is
    /// what Envoy's `proxy_get_header_map_size` returns (ABI reference §4.3).
    pub fn byte_size(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
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
        self.entries.clear();
        for (k, v) in pairs {
            self.append(k, v);
        }
    }

    /// The entries as owned `(key, value)` pairs.
    pub fn into_entries(self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.entries
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
        assert_eq!(m.get_all(b"set-cookie").collect::<Vec<_>>(), vec![&b"c=3"[..]]);
        assert_eq!(m.iter().nth(1).map(|(_, v)| v), Some(&b"c=3"[..]));
        m.insert(b"New", b"v");
        assert_eq!(m.iter().last(), Some((&b"new"[..], &b"v"[..])));
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
