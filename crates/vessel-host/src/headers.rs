//! [`HeaderMap`]: the host's representation of a header, trailer or metadata
//! map (ABI reference §4.3, §11.18).
//!
//! Keys are stored lower-cased, as Envoy stores them; lookups ignore ASCII
//! case. Values are arbitrary bytes (non-UTF-8 values are kept as they are).
//! Pseudo-headers (`:path`, `:method`, ...) are ordinary entries.
//!
//! # Size
//!
//! All keys and values live in one byte buffer addressed by `u32` offsets,
//! so a map holds at most [`HeaderMap::MAX_STORAGE_BYTES`] (4 GiB) of keys
//! and values. Every offset is computed with checked arithmetic: an entry
//! that would not fit is refused, never wrapped. What a *guest* may add is
//! bounded far lower by [`HeaderMapLimits`] (the plugin's
//! [`Limits::max_header_map_bytes`](crate::Limits::max_header_map_bytes) and
//! [`Limits::max_header_map_entries`](crate::Limits::max_header_map_entries)):
//! the `try_*` methods refuse an edit that would take the map past them with
//! [`HeaderMapFull`], and leave the map as it was.

use std::ops::Range;

use vessel_abi::pairs;

/// The connection-specific response headers a proxy removes after the
/// filters, before it sends a response downstream, as Envoy 1.40 does
/// (its connection manager's `mutateResponseHeaders`; the differential
/// scenario `local_response.yaml` shows Envoy keeping `keep-alive`). The
/// proxy frames the body itself; a filter that copies a callout's headers
/// into its reply must not change that.
pub const CONNECTION_SPECIFIC_RESPONSE_HEADERS: [&str; 4] = [
    "connection",
    "upgrade",
    "transfer-encoding",
    "proxy-connection",
];

/// An ordered multimap of byte keys to byte values.
///
/// All keys and values live in one byte buffer, so building or cloning a
/// map costs two allocations however many entries it has, and
/// [`clone_from`](Clone::clone_from) into a map that has the room costs
/// none.
#[derive(Default)]
pub struct HeaderMap {
    buf: Vec<u8>,
    entries: Vec<Entry>,
    /// Bytes in `buf` no entry refers to any more. Like `live`, at most
    /// `buf.len()`, so a `u32` (which keeps the map as small as before).
    garbage: u32,
    /// Key and value bytes of the entries (Envoy's `byteSize()`).
    live: u32,
    /// How many entries the last [`mark`](Self::mark) covered, and how
    /// many leading entries no edit has changed, moved or removed since
    /// (`kept <= marked`; appends do not lower it). Both 0 for a map
    /// never marked, and after [`clear`](Self::clear).
    marked: u32,
    kept: u32,
}

impl Clone for HeaderMap {
    fn clone(&self) -> Self {
        Self {
            buf: self.buf.clone(),
            entries: self.entries.clone(),
            garbage: self.garbage,
            live: self.live,
            marked: self.marked,
            kept: self.kept,
        }
    }

    /// Copies `source` into this map's buffers, reusing their capacity.
    fn clone_from(&mut self, source: &Self) {
        self.buf.clone_from(&source.buf);
        self.entries.clone_from(&source.entries);
        self.garbage = source.garbage;
        self.live = source.live;
        self.marked = source.marked;
        self.kept = source.kept;
    }
}

/// A byte count of the buffer as stored: at most `buf.len()`, which the
/// checked offsets keep within `u32::MAX` (saturating, never wrapping).
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Where a key or a value lives in [`HeaderMap::buf`]: start and length.
/// Built by [`span`], or by `push_entry` after `make_room`, so `start +
/// len` never exceeds `u32::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
        let start = self.start as usize;
        start..start + self.len as usize
    }

    fn len(self) -> usize {
        self.len as usize
    }
}

/// The span of `len` bytes at `start`, if its end fits in a `u32` offset
/// (checked: `start + len` never wraps).
fn span(start: usize, len: usize) -> Option<Span> {
    let end = start.checked_add(len)?;
    u32::try_from(end).ok()?;
    Some(Span {
        start: u32::try_from(start).ok()?,
        len: u32::try_from(len).ok()?,
    })
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: Span,
    value: Span,
}

impl Entry {
    fn bytes(self) -> usize {
        self.key.len() + self.value.len()
    }
}

/// The most a guest may grow one map to (see the module docs). Built from
/// the plugin's [`Limits`](crate::Limits) by the map hostcalls; an embedder
/// may use it with the `try_*` methods too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderMapLimits {
    /// Largest sum of key and value bytes (Envoy's `byteSize()`, what
    /// `proxy_get_header_map_size` returns).
    pub max_bytes: usize,
    /// Largest number of entries (a repeated key counts once per value).
    pub max_entries: usize,
}

impl HeaderMapLimits {
    /// No limit but the map's own 4 GiB of storage.
    pub const UNLIMITED: Self = Self {
        max_bytes: usize::MAX,
        max_entries: usize::MAX,
    };
}

/// An edit refused because the map would grow past a limit. The map is
/// left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderMapFull {
    /// Past [`HeaderMapLimits::max_bytes`], or past the 4 GiB a map's `u32`
    /// offsets address ([`HeaderMap::MAX_STORAGE_BYTES`]).
    #[error("the map would hold {requested} bytes of keys and values; the limit is {limit}")]
    Bytes {
        /// The limit.
        limit: usize,
        /// The size the edit would give the map.
        requested: usize,
    },
    /// Past [`HeaderMapLimits::max_entries`].
    #[error("the map would hold {requested} entries; the limit is {limit}")]
    Entries {
        /// The limit.
        limit: usize,
        /// The entry count the edit would give the map.
        requested: usize,
    },
}

impl HeaderMapLimits {
    /// Checks a map of `bytes` key and value bytes in `entries` entries.
    fn check(self, bytes: usize, entries: usize) -> Result<(), HeaderMapFull> {
        if bytes > self.max_bytes {
            return Err(HeaderMapFull::Bytes {
                limit: self.max_bytes,
                requested: bytes,
            });
        }
        if entries > self.max_entries {
            return Err(HeaderMapFull::Entries {
                limit: self.max_entries,
                requested: entries,
            });
        }
        Ok(())
    }
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

/// True if `bytes` holds an ASCII upper-case letter. Eight bytes at a time:
/// a byte `b < 0x80` is in `A..=Z` if `b + 0x3f` reaches `0x80` and
/// `b + 0x25` does not; bytes from `0x80` up are masked out (they are not
/// letters), and clearing their top bit first keeps each sum in its byte.
fn has_upper(bytes: &[u8]) -> bool {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const TOP: u64 = 0x8080_8080_8080_8080;
    let upper = |w: u64| {
        let low = w & LOW7;
        (low + 0x3f3f_3f3f_3f3f_3f3f) & !(low + 0x2525_2525_2525_2525) & !w & TOP != 0
    };
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_le_bytes(w)
    };
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        if upper(word(c)) {
            return true;
        }
    }
    match bytes.len() {
        // Shorter than a word: a loop, not a copy into a word (a call to
        // memcpy for a length the compiler does not know, on every key).
        0..8 => bytes.iter().any(u8::is_ascii_uppercase),
        // The last 8 bytes as one word, overlapping the chunks above (most
        // names are 8 to 16 bytes long: "x-request-id", "content-type").
        n => n % 8 != 0 && upper(word(&bytes[n - 8..])),
    }
}

/// Whether `extra` more bytes fit after `len` bytes of storage.
fn storage_fits(len: usize, extra: usize) -> bool {
    len.checked_add(extra)
        .is_some_and(|end| end <= HeaderMap::MAX_STORAGE_BYTES)
}

impl HeaderMap {
    /// The most key and value bytes one map can store: its offsets are
    /// `u32`s (4 GiB).
    pub const MAX_STORAGE_BYTES: usize = u32::MAX as usize;

    /// An empty map.
    pub const fn new() -> Self {
        Self {
            buf: Vec::new(),
            entries: Vec::new(),
            garbage: 0,
            live: 0,
            marked: 0,
            kept: 0,
        }
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n.saturating_mul(32)),
            entries: Vec::with_capacity(n),
            garbage: 0,
            live: 0,
            marked: 0,
            kept: 0,
        }
    }

    /// An empty map with room for `entries` entries holding `bytes` bytes of
    /// keys and values in all: an embedder that knows the size of what it
    /// converts builds the map without growing it.
    pub fn with_capacity_bytes(entries: usize, bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            entries: Vec::with_capacity(entries),
            garbage: 0,
            live: 0,
            marked: 0,
            kept: 0,
        }
    }

    /// Builds a map from pairs, lower-casing the keys and keeping duplicates.
    /// Like [`append`](Self::append), it drops (and logs) an entry that
    /// would take the map past its 4 GiB of storage.
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

    /// Builds a map from pairs as [`from_pairs`](Self::from_pairs) does, but
    /// refuses pairs that add up to more than `limits`.
    pub fn try_from_pairs<I, K, V>(pairs: I, limits: HeaderMapLimits) -> Result<Self, HeaderMapFull>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut map = Self::new();
        for (k, v) in pairs {
            map.try_append(k.as_ref(), v.as_ref(), limits)?;
        }
        Ok(map)
    }

    fn slice(&self, s: Span) -> &[u8] {
        &self.buf[s.range()]
    }

    /// Makes `extra` more bytes addressable at the end of the buffer,
    /// compacting it first if that is what it takes.
    #[inline]
    fn make_room(&mut self, extra: usize) -> Result<(), HeaderMapFull> {
        if storage_fits(self.buf.len(), extra) {
            return Ok(());
        }
        self.compact_for(extra)
    }

    /// [`make_room`](Self::make_room) past the fast case.
    #[cold]
    #[inline(never)]
    fn compact_for(&mut self, extra: usize) -> Result<(), HeaderMapFull> {
        if self.garbage > 0 {
            self.compact();
            if storage_fits(self.buf.len(), extra) {
                return Ok(());
            }
        }
        Err(HeaderMapFull::Bytes {
            limit: Self::MAX_STORAGE_BYTES,
            requested: (self.live as usize).saturating_add(extra),
        })
    }

    /// Stores a key (lower-cased) and a value; the entry is not linked in.
    #[inline(always)]
    fn push_entry(&mut self, key: &[u8], value: &[u8]) -> Result<Entry, HeaderMapFull> {
        self.push_entry_as(key, value, true)
    }

    /// [`push_entry`](Self::push_entry); the key is lower-cased only if
    /// `lower` (else it is lower-case already).
    #[inline(always)]
    fn push_entry_as(
        &mut self,
        key: &[u8],
        value: &[u8],
        lower: bool,
    ) -> Result<Entry, HeaderMapFull> {
        let extra = key.len().saturating_add(value.len());
        self.make_room(extra)?;
        let start = self.buf.len();
        // Checked once for the whole entry: `make_room` leaves `start +
        // extra` within a `u32`, so both spans fit, and each conversion
        // below (a compare, no branch) cannot saturate.
        let offset = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let (at, key_len, value_len) = (offset(start), offset(key.len()), offset(value.len()));
        let key_span = Span {
            start: at,
            len: key_len,
        };
        let value_span = Span {
            start: at.saturating_add(key_len),
            len: value_len,
        };
        self.buf.reserve(extra);
        // Copied whole, and lower-cased in place only if it has to be: most
        // keys are lower-case already, and a byte-by-byte copy costs
        // several times more.
        self.buf.extend_from_slice(key);
        if lower && has_upper(key) {
            self.buf[start..].make_ascii_lowercase();
        }
        self.buf.extend_from_slice(value);
        Ok(Entry {
            key: key_span,
            value: value_span,
        })
    }

    /// Stores a value for an existing entry.
    fn push_value(&mut self, value: &[u8]) -> Result<Span, HeaderMapFull> {
        self.make_room(value.len())?;
        let s = span(self.buf.len(), value.len()).ok_or(HeaderMapFull::Bytes {
            limit: Self::MAX_STORAGE_BYTES,
            requested: (self.live as usize).saturating_add(value.len()),
        })?;
        self.buf.extend_from_slice(value);
        Ok(s)
    }

    /// The limits an edit of this map must keep to: `limits`, or the map's
    /// present size if it is already larger (an embedder's map may be), so
    /// an edit that does not grow the map is never refused.
    fn allowance(&self, limits: HeaderMapLimits) -> HeaderMapLimits {
        HeaderMapLimits {
            max_bytes: limits.max_bytes.max(self.live as usize),
            max_entries: limits.max_entries.max(self.entries.len()),
        }
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

    /// The entries from the one at `index` on, in order (none if `index` is
    /// past the end).
    pub fn iter_from(&self, index: usize) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + Clone {
        self.entries
            .get(index..)
            .unwrap_or_default()
            .iter()
            .map(|e| (self.slice(e.key), self.slice(e.value)))
    }

    /// The index of the first entry of `key` (ASCII case-insensitive).
    pub fn position(&self, key: &[u8]) -> Option<usize> {
        // The length first: most keys differ in it, and it needs no slice.
        // Stored keys are lower-case, so a lower-case `key` (the usual
        // spelling) compares exactly, which is cheaper than ignoring case
        // byte by byte.
        if has_upper(key) {
            self.entries.iter().position(|e| {
                e.key.len() == key.len() && self.slice(e.key).eq_ignore_ascii_case(key)
            })
        } else {
            // The first byte before the rest: a key of the same length
            // seldom shares it, and comparing the rest is a call.
            let first = key.first().copied();
            self.entries.iter().position(|e| {
                e.key.len() == key.len()
                    && (first.is_none() || self.buf.get(e.key.start as usize).copied() == first)
                    && self.slice(e.key) == key
            })
        }
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

    /// Adds another entry (Envoy `addCopy`). An entry that would take the
    /// map past its 4 GiB of storage ([`MAX_STORAGE_BYTES`](Self::MAX_STORAGE_BYTES))
    /// is dropped and logged (target `vessel::headers`); use
    /// [`try_append`](Self::try_append) where that must be seen.
    #[inline(always)]
    pub fn append(&mut self, key: &[u8], value: &[u8]) {
        self.append_as(key, value, true);
    }

    /// [`append`](Self::append) for a key that is lower-case already (the
    /// name of an `http::HeaderName`, a pseudo-header), which is then not
    /// checked: an embedder converting its own map saves a look at every
    /// key. The key must have no ASCII upper-case letter (checked in debug
    /// builds only): the map keeps its keys lower-case, and a lookup may
    /// miss a key stored otherwise.
    #[inline(always)]
    pub fn append_lowercase(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(!has_upper(key), "append_lowercase with an upper-case key");
        self.append_as(key, value, false);
    }

    #[inline(always)]
    fn append_as(&mut self, key: &[u8], value: &[u8], lower: bool) {
        // `try_append` with no limit but the storage's, inlined: embedders
        // build their maps with it, an entry at a time.
        match self.push_entry_as(key, value, lower) {
            Ok(entry) => {
                self.entries.push(entry);
                // Both lengths are within the storage's `u32` now.
                self.live = self
                    .live
                    .saturating_add(entry.key.len)
                    .saturating_add(entry.value.len);
            }
            Err(e) => dropped(key, &e),
        }
    }

    /// Adds another entry (Envoy `addCopy`), unless the map would then hold
    /// more than `limits` allow; a refused edit leaves the map as it was.
    #[inline]
    pub fn try_append(
        &mut self,
        key: &[u8],
        value: &[u8],
        limits: HeaderMapLimits,
    ) -> Result<(), HeaderMapFull> {
        let bytes = (self.live as usize)
            .saturating_add(key.len())
            .saturating_add(value.len());
        self.allowance(limits)
            .check(bytes, self.entries.len().saturating_add(1))?;
        let entry = self.push_entry(key, value)?;
        self.entries.push(entry);
        self.live = count(bytes);
        Ok(())
    }

    /// Sets `key` to one value (Envoy `setCopy`): the first entry is updated in
    /// place and later duplicates are removed; an absent key is appended. As
    /// with [`append`](Self::append), an edit past 4 GiB of storage is
    /// dropped and logged.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        if let Err(e) = self.try_insert(key, value, HeaderMapLimits::UNLIMITED) {
            dropped(key, &e);
        }
    }

    /// [`insert`](Self::insert), unless the map would then hold more than
    /// `limits` allow; a refused edit leaves the map as it was.
    pub fn try_insert(
        &mut self,
        key: &[u8],
        value: &[u8],
        limits: HeaderMapLimits,
    ) -> Result<(), HeaderMapFull> {
        let Some(first) = self.position(key) else {
            return self.try_append(key, value, limits);
        };
        // The first entry keeps its key and takes `value`; later ones go.
        let (mut dup_bytes, mut dups) = (0usize, 0usize);
        for e in &self.entries[first + 1..] {
            if self.slice(e.key).eq_ignore_ascii_case(key) {
                dup_bytes += e.bytes();
                dups += 1;
            }
        }
        let old_len = self.entries[first].value.len();
        let bytes = (self.live as usize)
            .saturating_sub(dup_bytes)
            .saturating_sub(old_len)
            .saturating_add(value.len());
        self.allowance(limits)
            .check(bytes, self.entries.len() - dups)?;
        self.touch(first);
        if value.len() <= old_len {
            let old = self.entries[first].value;
            let new = span(old.start as usize, value.len()).ok_or(HeaderMapFull::Bytes {
                limit: Self::MAX_STORAGE_BYTES,
                requested: bytes,
            })?;
            self.buf[new.range()].copy_from_slice(value);
            self.garbage = count(self.garbage as usize + (old_len - value.len()));
            self.entries[first].value = new;
        } else {
            // May compact, which moves every entry but keeps their order.
            let new = self.push_value(value)?;
            self.garbage = count(self.garbage as usize + old_len);
            self.entries[first].value = new;
        }
        if dups > 0 {
            let mut i = first + 1;
            while i < self.entries.len() {
                if self.slice(self.entries[i].key).eq_ignore_ascii_case(key) {
                    let e = self.entries.remove(i);
                    self.garbage = count(self.garbage as usize + e.bytes());
                } else {
                    i += 1;
                }
            }
        }
        self.live = count(bytes);
        self.maybe_compact();
        Ok(())
    }

    /// Removes every entry of `key`; returns how many were removed.
    pub fn remove(&mut self, key: &[u8]) -> usize {
        let before = self.entries.len();
        let Some(first) = self.position(key) else {
            return 0;
        };
        self.touch(first);
        let mut freed = 0;
        let buf = &self.buf;
        // The entries before `first` were compared by `position` already.
        let mut index = 0;
        self.entries.retain(|e| {
            let keep = index < first || !buf[e.key.range()].eq_ignore_ascii_case(key);
            index += 1;
            if !keep {
                freed += e.bytes();
            }
            keep
        });
        self.garbage = count(self.garbage as usize + freed);
        self.live = count((self.live as usize).saturating_sub(freed));
        self.maybe_compact();
        before - self.entries.len()
    }

    fn maybe_compact(&mut self) {
        let garbage = self.garbage as usize;
        if garbage < 1024 || garbage * 2 < self.buf.len() {
            return;
        }
        self.compact();
    }

    /// Copies the live entries into a fresh buffer. Their bytes fit: they
    /// are part of the present buffer.
    fn compact(&mut self) {
        let mut buf = Vec::with_capacity(self.live as usize);
        let mut entries = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let start = buf.len();
            let spans = span(start, e.key.len()).zip(
                start
                    .checked_add(e.key.len())
                    .and_then(|at| span(at, e.value.len())),
            );
            let Some((key, value)) = spans else {
                // Unreachable (the live bytes fit in the old buffer); keep it.
                return;
            };
            buf.extend_from_slice(&self.buf[e.key.range()]);
            buf.extend_from_slice(&self.buf[e.value.range()]);
            entries.push(Entry { key, value });
        }
        self.buf = buf;
        self.entries = entries;
        self.garbage = 0;
    }

    /// Makes room for `entries` more entries and `bytes` more key and value
    /// bytes.
    pub fn reserve(&mut self, entries: usize, bytes: usize) {
        self.entries.reserve(entries);
        self.buf.reserve(bytes);
    }

    /// Bytes of buffer capacity the map holds (keys, values and entries).
    pub fn capacity_bytes(&self) -> usize {
        self.buf
            .capacity()
            .saturating_add(self.entries.capacity() * std::mem::size_of::<Entry>())
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.buf.clear();
        self.garbage = 0;
        self.live = 0;
        self.marked = 0;
        self.kept = 0;
    }

    /// Marks the entries the map holds now, for
    /// [`unchanged_since_mark`](Self::unchanged_since_mark): an embedder
    /// that converted its own header type into the map marks it, and after
    /// the filters learns without comparing whether they only appended.
    pub fn mark(&mut self) {
        self.marked = count(self.entries.len());
        self.kept = self.marked;
    }

    /// The number of entries the last [`mark`](Self::mark) covered, if no
    /// edit since changed, moved or removed any of them: the entries from
    /// that index on are the ones appended since. `None` if an edit touched
    /// a marked entry (even to set it to the value it had), or if the map
    /// was never marked or was cleared or replaced since.
    pub fn unchanged_since_mark(&self) -> Option<usize> {
        (self.marked > 0 && self.kept == self.marked).then_some(self.marked as usize)
    }

    /// An edit changes the entry at `index` or removes it (moving the ones
    /// after it).
    fn touch(&mut self, index: usize) {
        self.kept = self.kept.min(count(index));
    }

    /// Removes every entry, keeping the buffers for reuse unless they hold
    /// more than `max_bytes` (then they are freed: a map a guest once grew
    /// large does not pin that memory).
    pub fn clear_retaining(&mut self, max_bytes: usize) {
        if self.capacity_bytes() > max_bytes {
            *self = Self::new();
        } else {
            self.clear();
        }
    }

    /// Sum of key and value bytes: Envoy's `HeaderMap::byteSize()`, which is
    /// what Envoy's `proxy_get_header_map_size` returns (ABI reference §4.3).
    pub fn byte_size(&self) -> usize {
        self.live as usize
    }

    /// The host memory the map's entries account for: key and value bytes
    /// plus the bookkeeping of each entry (used to bound what a guest
    /// queues for the embedder).
    pub(crate) fn footprint(&self) -> usize {
        (self.live as usize).saturating_add(self.entries.len() * std::mem::size_of::<Entry>())
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

    /// [`replace_with`](Self::replace_with), unless the new map would hold
    /// more than `limits` allow (or more than the map holds now, if that is
    /// larger); a refused edit leaves the map as it was.
    pub fn try_replace_with<'a, I>(
        &mut self,
        pairs: I,
        limits: HeaderMapLimits,
    ) -> Result<(), HeaderMapFull>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        *self = Self::try_from_pairs(pairs, self.allowance(limits))?;
        Ok(())
    }

    /// The entries as owned `(key, value)` pairs.
    pub fn to_pairs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }
}

/// Reports an entry an infallible edit could not store.
#[cold]
#[inline(never)]
fn dropped(key: &[u8], e: &HeaderMapFull) {
    let shown = String::from_utf8_lossy(&key[..key.len().min(64)]);
    log::error!(target: "vessel::headers", "header `{shown}` dropped: {e}");
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for HeaderMap {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Self::from_pairs(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_lowercase_builds_the_map_append_builds() {
        let pairs: [(&[u8], &[u8]); 4] = [
            (b":authority", b"a.test"),
            (b"x-long-lower-case-name", b"1"),
            (b"x-a", b""),
            (b"x-a", b"2"),
        ];
        let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
        for (k, v) in pairs {
            a.append(k, v);
            b.append_lowercase(k, v);
        }
        assert_eq!(a, b);
        assert_eq!(a.byte_size(), b.byte_size());
        assert_eq!(b.get(b"X-A"), Some(&b""[..]));
        assert_eq!(b.get(b"x-a"), Some(&b""[..]));
        assert_eq!(b.position(b"X-Long-Lower-Case-Name"), Some(1));
        // An empty name is found too (its "first byte" is the value's).
        b.append_lowercase(b"", b"v");
        assert_eq!(b.get(b""), Some(&b"v"[..]));
    }

    #[test]
    fn has_upper_finds_exactly_the_ascii_upper_case_letters() {
        for b in 0..=255u8 {
            for len in 1..=17 {
                for at in 0..len {
                    let mut key = vec![b'a'; len];
                    key[at] = b;
                    assert_eq!(
                        has_upper(&key),
                        b.is_ascii_uppercase(),
                        "{b:#x} at {at} of {len}"
                    );
                }
            }
        }
        assert!(!has_upper(b""));
        assert!(!has_upper("x-\u{e9}t\u{c9}\u{ff}".as_bytes()));
    }

    #[test]
    fn the_mark_holds_until_an_edit_touches_a_marked_entry() {
        let marked = || {
            let mut m = HeaderMap::from_pairs([("a", "1"), ("b", "2"), ("a", "3")]);
            m.mark();
            m
        };
        let mut m = HeaderMap::from_pairs([("a", "1")]);
        assert_eq!(m.unchanged_since_mark(), None, "never marked");
        m.mark();
        assert_eq!(m.unchanged_since_mark(), Some(1));

        // Appends, and edits of appended entries only, keep it.
        let mut m = marked();
        m.append(b"c", b"4");
        m.insert(b"c", b"5");
        m.insert(b"d", b"6");
        m.remove(b"d");
        assert_eq!(m.remove(b"absent"), 0);
        assert_eq!(m.unchanged_since_mark(), Some(3));
        assert_eq!(m.clone().unchanged_since_mark(), Some(3));
        let mut copy = HeaderMap::new();
        copy.clone_from(&m);
        assert_eq!(copy.unchanged_since_mark(), Some(3));

        // Every edit of a marked entry ends it, even one to the same value.
        let edits: [fn(&mut HeaderMap); 7] = [
            |m| m.insert(b"b", b"2"),
            |m| m.insert(b"B", b"other"),
            |m| {
                m.remove(b"a");
            },
            |m| m.insert(b"a", b"1"),
            |m| m.clear(),
            |m| m.replace_with([(&b"a"[..], &b"1"[..])]),
            |m| {
                let replaced =
                    m.try_replace_with([(&b"a"[..], &b"1"[..])], HeaderMapLimits::UNLIMITED);
                assert_eq!(replaced, Ok(()));
            },
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut m = marked();
            edit(&mut m);
            assert_eq!(m.unchanged_since_mark(), None, "edit #{i}");
        }
        // A map emptied for reuse starts unmarked.
        let mut m = marked();
        m.clear_retaining(1 << 20);
        m.append(b"a", b"1");
        assert_eq!(m.unchanged_since_mark(), None);
    }

    #[test]
    fn keys_are_stored_lower_case() {
        let mut m = HeaderMap::new();
        m.append(b"X-Mixed-CASE-Key-Longer-Than-8", b"V");
        m.append(b"lower", b"v");
        m.append(b"\xc3\x89A", b"v");
        let keys: Vec<&[u8]> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                &b"x-mixed-case-key-longer-than-8"[..],
                b"lower",
                b"\xc3\x89a"
            ]
        );
        assert_eq!(m.get(b"x-mixed-case-key-longer-than-8"), Some(&b"V"[..]));
    }

    fn map() -> HeaderMap {
        HeaderMap::from_pairs([
            (":path", "/a"),
            ("Set-Cookie", "a=1"),
            ("x", "1"),
            ("set-cookie", "b=2"),
        ])
    }

    /// The size kept up to date equals the sum over the entries.
    fn recount(m: &HeaderMap) -> usize {
        m.iter().map(|(k, v)| k.len() + v.len()).sum()
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
        assert_eq!(m.byte_size(), recount(&m));
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
            assert_eq!(m.byte_size(), recount(&m));
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
        assert_eq!(m.byte_size(), recount(&m));
        let encoded = m.encode();
        assert_eq!(encoded.len(), m.encoded_len());
        assert_eq!(HeaderMap::new().encoded_len(), 0);
        m.clear();
        assert_eq!(m.byte_size(), 0);
    }

    /// Regression (issue 9): offsets were truncated with `as u32`, so a map
    /// past 4 GiB wrapped its offsets and read the wrong bytes. Every span
    /// is now checked; this tests the arithmetic without allocating 4 GiB.
    #[test]
    fn offsets_past_4_gib_are_refused_not_wrapped() {
        let max = u32::MAX as usize;
        assert_eq!(span(0, 5), Some(Span { start: 0, len: 5 }));
        assert_eq!(
            span(max - 5, 5),
            Some(Span {
                start: u32::MAX - 5,
                len: 5
            })
        );
        // One byte past the last addressable offset.
        assert_eq!(span(max - 5, 6), None);
        // The old code turned start 4 GiB into offset 0.
        assert_eq!(span(max + 1, 5), None);
        assert_eq!(span(0, max + 1), None);
        assert_eq!(span(usize::MAX, 1), None, "start + len overflows usize");
        assert_eq!(span(1, usize::MAX), None);
        assert!(storage_fits(max - 10, 10));
        assert!(!storage_fits(max - 10, 11));
        assert!(!storage_fits(usize::MAX, 1));
        let s = Span {
            start: u32::MAX - 5,
            len: 5,
        };
        assert_eq!(s.range(), max - 5..max);
    }

    #[test]
    fn limits_refuse_growth_and_leave_the_map_unchanged() {
        let limits = HeaderMapLimits {
            max_bytes: 20,
            max_entries: 3,
        };
        let mut m = HeaderMap::new();
        m.try_append(b"a", b"123456789", limits).expect("10 bytes");
        m.try_append(b"b", b"123456789", limits).expect("20 bytes");
        let before = m.clone();
        assert_eq!(
            m.try_append(b"c", b"", limits),
            Err(HeaderMapFull::Bytes {
                limit: 20,
                requested: 21
            })
        );
        assert_eq!(m, before);
        assert_eq!(
            m.try_insert(b"a", b"1234567890", limits),
            Err(HeaderMapFull::Bytes {
                limit: 20,
                requested: 21
            })
        );
        assert_eq!(m, before);
        // Shrinking and same-size edits pass.
        m.try_insert(b"a", b"1", limits).expect("smaller");
        m.try_append(b"", b"", limits)
            .expect("a third, empty entry");
        assert_eq!(
            m.try_append(b"", b"", limits),
            Err(HeaderMapFull::Entries {
                limit: 3,
                requested: 4
            })
        );
        assert_eq!(m.byte_size(), recount(&m));
        // A whole new map over the limit is refused, the old one kept.
        let big = [(&b"k"[..], &[b'v'; 40][..])];
        let kept = m.clone();
        assert!(m.try_replace_with(big, limits).is_err());
        assert_eq!(m, kept);
        assert!(HeaderMap::try_from_pairs(big, limits).is_err());
        assert!(HeaderMap::try_from_pairs(big, HeaderMapLimits::UNLIMITED).is_ok());
    }

    #[test]
    fn a_map_already_past_the_limit_may_shrink_but_not_grow() {
        // An embedder's map may be larger than what a guest may build.
        let mut m = HeaderMap::from_pairs([("big", "x".repeat(100)), ("y", "1".into())]);
        let limits = HeaderMapLimits {
            max_bytes: 10,
            max_entries: 1,
        };
        assert!(m.try_append(b"z", b"", limits).is_err());
        assert!(m.try_insert(b"y", b"12", limits).is_err());
        m.try_insert(b"y", b"", limits).expect("no growth");
        // Writing the same pairs back (get_pairs, then set_pairs) passes.
        let same = m.to_pairs();
        m.try_replace_with(
            same.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
            limits,
        )
        .expect("same size");
        assert_eq!(m.len(), 2);
    }
}
