//! The serialized pair map (ABI reference §5.1).
//!
//! Headers, trailers, gRPC metadata, the headers of `proxy_send_local_response` and
//! `proxy_http_call`, and map-typed properties all cross the ABI in this layout
//! (spec §Serialization; cpp-host `src/pairs_util.cc`):
//!
//! ```text
//! u32 N                                  (little-endian)
//! N × { u32 key_len, u32 value_len }     (little-endian; all sizes first)
//! N × { key bytes, 0x00, value bytes, 0x00 }
//! ```
//!
//! Lengths exclude the NUL terminators. The total size is `4 + Σ(8 + klen + 1 + vlen + 1)`.
//!
//! An **empty map encodes to no bytes at all** (the host hands the guest pointer 0 / size 0).
//! The spec also allows a single `0x00` byte, but the Rust and Go SDKs panic on that form, so
//! it is never emitted; [`decode`] accepts it, together with the explicit `N = 0` form.
//!
//! Two decoders are offered: [`decode`] / [`Pairs::parse`] report what is wrong with a
//! payload, and [`decode_lenient`] does what Envoy does (cpp-host `PairsUtil::toPairs`):
//! any malformed payload becomes an empty map.

use core::fmt;
use core::iter::FusedIterator;

/// The largest pair-map payload a guest may hand the host, in bytes
/// (cpp-host `PROXY_WASM_HOST_PAIRS_MAX_BYTES`, 1 MiB).
pub const MAX_PAIRS_BYTES: usize = 1 << 20;

/// The largest number of pairs a guest may hand the host
/// (cpp-host `PROXY_WASM_HOST_PAIRS_MAX_COUNT`).
pub const MAX_PAIRS_COUNT: usize = 1024;

/// One decoded `(key, value)` pair, borrowed from the payload.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Size of the pair count at the start of a payload.
const COUNT_SIZE: usize = 4;
/// Size of one `{key_len, value_len}` entry.
const SIZES_ENTRY: usize = 8;

/// Why a pair-map payload could not be decoded or encoded.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PairsError {
    /// The payload ends before the count, the size table or a key/value it announces.
    #[error("pair map is truncated")]
    Truncated,
    /// The payload announces more pairs than [`MAX_PAIRS_COUNT`] (decoding), or there are
    /// more pairs than a `u32` can count (encoding).
    #[error("pair map has {count} pairs (at most {MAX_PAIRS_COUNT} are accepted)")]
    TooManyPairs {
        /// The announced (or actual) number of pairs.
        count: usize,
    },
    /// The payload is larger than [`MAX_PAIRS_BYTES`].
    #[error("pair map is {len} bytes long (at most {MAX_PAIRS_BYTES} are accepted)")]
    TooLarge {
        /// The payload's length.
        len: usize,
    },
    /// The key or the value of pair `index` (counting from 0) is not followed by a NUL byte.
    #[error("pair {index} of the pair map is missing its NUL terminator")]
    MissingNul {
        /// The index of the offending pair.
        index: usize,
    },
    /// Bytes are left over after the last pair.
    #[error("pair map has {extra} bytes after its last pair")]
    TrailingBytes {
        /// How many bytes are left over.
        extra: usize,
    },
    /// [`encode_into`] was given a destination whose length is not [`encoded_len`].
    #[error("pair map destination is {actual} bytes long, but the encoding takes {expected}")]
    DstSize {
        /// The encoded length of the pairs.
        expected: usize,
        /// The length of the destination.
        actual: usize,
    },
    /// A key or value is longer than a `u32` length field can describe (encoding only).
    #[error("key or value of pair {index} is {len} bytes long, more than a u32 length allows")]
    EntryTooLong {
        /// The index of the offending pair.
        index: usize,
        /// The length of the key or value.
        len: usize,
    },
}

/// The encoded size of `pairs`; 0 for an empty map.
///
/// Saturates at `usize::MAX` instead of overflowing.
pub fn encoded_len<'a, I>(pairs: I) -> usize
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut total = 0usize;
    let mut any = false;
    for (key, value) in pairs {
        any = true;
        total = total
            .saturating_add(SIZES_ENTRY + 2)
            .saturating_add(key.len())
            .saturating_add(value.len());
    }
    if any {
        total.saturating_add(COUNT_SIZE)
    } else {
        0
    }
}

/// Converts a length to its `u32` field.
fn len_field(len: usize, index: usize) -> Result<[u8; 4], PairsError> {
    u32::try_from(len)
        .map(u32::to_le_bytes)
        .map_err(|_| PairsError::EntryTooLong { index, len })
}

/// Writes the encoding of `pairs` into `dst`, which must be exactly [`encoded_len`] long.
///
/// Does not allocate. An empty map writes nothing (and needs an empty `dst`). On error, `dst`
/// may be partly written.
///
/// # Errors
///
/// [`PairsError::DstSize`] if `dst` has the wrong length, [`PairsError::EntryTooLong`] if a
/// key or value does not fit a `u32` length, [`PairsError::TooManyPairs`] if the number of
/// pairs does not fit a `u32`. The decoding caps ([`MAX_PAIRS_COUNT`], [`MAX_PAIRS_BYTES`])
/// are *not* applied: they limit what a guest may send, not what the host returns.
pub fn encode_into<'a, I>(pairs: I, dst: &mut [u8]) -> Result<(), PairsError>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let expected = encoded_len(pairs.clone());
    if dst.len() != expected {
        return Err(PairsError::DstSize {
            expected,
            actual: dst.len(),
        });
    }
    if expected == 0 {
        return Ok(());
    }
    let count = pairs.clone().into_iter().count();
    let count_field = u32::try_from(count).map_err(|_| PairsError::TooManyPairs { count })?;

    // Split the destination into its three regions; the lengths were checked above, and a
    // failure here can only come from an iterator that yields different items when cloned.
    let (head, rest) = dst
        .split_at_mut_checked(COUNT_SIZE)
        .ok_or(PairsError::Truncated)?;
    let sizes_len = count
        .checked_mul(SIZES_ENTRY)
        .ok_or(PairsError::TooManyPairs { count })?;
    let (sizes, mut data) = rest
        .split_at_mut_checked(sizes_len)
        .ok_or(PairsError::Truncated)?;
    head.copy_from_slice(&count_field.to_le_bytes());

    let mut size_slots = sizes.chunks_exact_mut(SIZES_ENTRY);
    for (index, (key, value)) in pairs.into_iter().enumerate() {
        let slot = size_slots.next().ok_or(PairsError::Truncated)?;
        let (key_slot, value_slot) = slot.split_at_mut(4);
        key_slot.copy_from_slice(&len_field(key.len(), index)?);
        value_slot.copy_from_slice(&len_field(value.len(), index)?);
        for part in [key, value] {
            let (out, tail) = data
                .split_at_mut_checked(part.len() + 1)
                .ok_or(PairsError::Truncated)?;
            let (bytes, nul) = out.split_at_mut(part.len());
            bytes.copy_from_slice(part);
            nul.fill(0);
            data = tail;
        }
    }
    if size_slots.next().is_some() || !data.is_empty() {
        // The iterator yielded fewer items than its clone counted.
        return Err(PairsError::Truncated);
    }
    Ok(())
}

/// Encodes `pairs` into a new vector; an empty map gives an empty vector.
///
/// # Panics
///
/// If a key or value is 4 GiB or longer, or there are 2³² pairs or more: such a map has no
/// encoding. Use [`encode_into`] to get an error instead.
pub fn encode<'a, I>(pairs: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let mut out = vec![0; encoded_len(pairs.clone())];
    if let Err(err) = encode_into(pairs, &mut out) {
        panic!("pair map cannot be encoded: {err}");
    }
    out
}

/// Reads a little-endian `u32` at `offset`, as a `usize`.
fn read_u32(bytes: &[u8], offset: usize) -> Option<usize> {
    let field: [u8; 4] = bytes.get(offset..offset.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(field)).ok()
}

/// Checks a whole payload and returns its pair count.
fn validate(bytes: &[u8]) -> Result<usize, PairsError> {
    if bytes.len() > MAX_PAIRS_BYTES {
        return Err(PairsError::TooLarge { len: bytes.len() });
    }
    // The empty forms: no bytes, or the spec's single NUL.
    if bytes.is_empty() || bytes == [0] {
        return Ok(0);
    }
    let count = read_u32(bytes, 0).ok_or(PairsError::Truncated)?;
    if count > MAX_PAIRS_COUNT {
        return Err(PairsError::TooManyPairs { count });
    }
    // count ≤ 1024, so this cannot overflow.
    let data_start = COUNT_SIZE + count * SIZES_ENTRY;
    if data_start > bytes.len() {
        return Err(PairsError::Truncated);
    }
    let mut pos = data_start;
    for index in 0..count {
        let entry = COUNT_SIZE + index * SIZES_ENTRY;
        for len_offset in [entry, entry + 4] {
            let len = read_u32(bytes, len_offset).ok_or(PairsError::Truncated)?;
            // `pos ≤ bytes.len() ≤ MAX_PAIRS_BYTES`, so `pos + len + 1` cannot overflow a
            // 64-bit usize; checked anyway for 32-bit targets.
            let nul_at = pos.checked_add(len).ok_or(PairsError::Truncated)?;
            match bytes.get(nul_at) {
                None => return Err(PairsError::Truncated),
                Some(0) => pos = nul_at + 1,
                Some(_) => return Err(PairsError::MissingNul { index }),
            }
        }
    }
    if pos != bytes.len() {
        return Err(PairsError::TrailingBytes {
            extra: bytes.len() - pos,
        });
    }
    Ok(count)
}

/// Strictly decodes a pair-map payload into borrowed `(key, value)` slices.
///
/// Accepts the empty forms (no bytes, a single `0x00`, or `N = 0`) as an empty map.
///
/// # Errors
///
/// [`PairsError::TooLarge`] above [`MAX_PAIRS_BYTES`], [`PairsError::TooManyPairs`] above
/// [`MAX_PAIRS_COUNT`], [`PairsError::Truncated`] when a size or a key/value runs past the
/// end, [`PairsError::MissingNul`] when a terminator is not `0x00`, and
/// [`PairsError::TrailingBytes`] when bytes follow the last pair.
pub fn decode(bytes: &[u8]) -> Result<Vec<Pair<'_>>, PairsError> {
    Ok(Pairs::parse(bytes)?.iter().collect())
}

/// Decodes like Envoy (cpp-host `PairsUtil::toPairs`): any malformed payload becomes an
/// empty map, without an error.
pub fn decode_lenient(bytes: &[u8]) -> Vec<Pair<'_>> {
    decode(bytes).unwrap_or_default()
}

/// A validated pair-map payload, read without allocating.
///
/// [`Pairs::parse`] checks the whole buffer once, exactly as [`decode`] does; iterating then
/// cannot fail.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pairs<'a> {
    /// The size table (`8 × count` bytes).
    sizes: &'a [u8],
    /// The NUL-terminated keys and values.
    data: &'a [u8],
    /// The whole payload, as given.
    bytes: &'a [u8],
}

impl<'a> Pairs<'a> {
    /// Validates `bytes` as a pair-map payload.
    ///
    /// # Errors
    ///
    /// The same as [`decode`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, PairsError> {
        let count = validate(bytes)?;
        let (sizes, data) = if count == 0 {
            (&[][..], &[][..])
        } else {
            let data_start = COUNT_SIZE + count * SIZES_ENTRY;
            (
                bytes.get(COUNT_SIZE..data_start).unwrap_or_default(),
                bytes.get(data_start..).unwrap_or_default(),
            )
        };
        Ok(Self { sizes, data, bytes })
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.sizes.len() / SIZES_ENTRY
    }

    /// Whether the map has no pairs.
    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// The pairs, in payload order.
    pub fn iter(&self) -> PairsIter<'a> {
        PairsIter {
            sizes: self.sizes,
            data: self.data,
        }
    }

    /// The value of the first pair whose key is `key`.
    pub fn get(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The payload this was parsed from.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl fmt::Debug for Pairs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k), String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

impl<'a> IntoIterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = PairsIter<'a>;

    fn into_iter(self) -> PairsIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = PairsIter<'a>;

    fn into_iter(self) -> PairsIter<'a> {
        self.iter()
    }
}

/// Iterator over the pairs of a [`Pairs`].
#[derive(Debug, Clone)]
pub struct PairsIter<'a> {
    /// Size entries not yet read.
    sizes: &'a [u8],
    /// Keys and values not yet read.
    data: &'a [u8],
}

impl<'a> PairsIter<'a> {
    /// Takes `len` bytes plus their NUL off the front of `data`.
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let part = self.data.get(..len)?;
        self.data = self.data.get(len.checked_add(1)?..)?;
        Some(part)
    }

    /// Reads the next pair; `None` at the end (or on a payload that was not validated,
    /// which [`Pairs`] rules out).
    fn read_next(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let key_len = read_u32(self.sizes, 0)?;
        let value_len = read_u32(self.sizes, 4)?;
        self.sizes = self.sizes.get(SIZES_ENTRY..)?;
        let key = self.take(key_len)?;
        let value = self.take(value_len)?;
        Some((key, value))
    }
}

impl<'a> Iterator for PairsIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.read_next();
        if next.is_none() {
            self.sizes = &[];
            self.data = &[];
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.sizes.len() / SIZES_ENTRY;
        (n, Some(n))
    }
}

impl ExactSizeIterator for PairsIter<'_> {}

impl FusedIterator for PairsIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a payload from its parts: count, size entries, then raw data.
    fn raw(count: u32, sizes: &[(u32, u32)], data: &[u8]) -> Vec<u8> {
        let mut out = count.to_le_bytes().to_vec();
        for (k, v) in sizes {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn as_refs(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect()
    }

    const WORKED_EXAMPLE: [u8; 29] = [
        0x02, 0x00, 0x00, 0x00, // N = 2
        0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // "a" 1, "1" 1
        0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // "b" 1, "22" 2
        0x61, 0x00, 0x31, 0x00, // a\0 1\0
        0x62, 0x00, 0x32, 0x32, 0x00, // b\0 22\0
    ];

    #[test]
    fn worked_example_of_section_5_1() {
        let pairs: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", b"22")];
        assert_eq!(encoded_len(pairs), 29);
        assert_eq!(encode(pairs), WORKED_EXAMPLE);
        assert_eq!(decode(&WORKED_EXAMPLE), Ok(pairs.to_vec()));
        assert_eq!(decode_lenient(&WORKED_EXAMPLE), pairs.to_vec());
        let parsed = Pairs::parse(&WORKED_EXAMPLE).expect("valid");
        assert_eq!(parsed.len(), 2);
        assert!(!parsed.is_empty());
        assert_eq!(parsed.iter().len(), 2);
        assert_eq!(parsed.iter().collect::<Vec<_>>(), pairs.to_vec());
        assert_eq!(parsed.get(b"b"), Some(&b"22"[..]));
        assert_eq!(parsed.get(b"c"), None);
        assert_eq!(parsed.as_bytes(), &WORKED_EXAMPLE[..]);
    }

    #[test]
    fn empty_map_encodes_to_no_bytes() {
        let none: [(&[u8], &[u8]); 0] = [];
        assert_eq!(encoded_len(none), 0);
        assert!(encode(none).is_empty());
        assert_eq!(encode_into(none, &mut []), Ok(()));
        assert_eq!(
            encode_into(none, &mut [0; 4]),
            Err(PairsError::DstSize {
                expected: 0,
                actual: 4
            })
        );
    }

    #[test]
    fn empty_forms_decode_to_an_empty_map() {
        for form in [&[][..], &[0][..], &[0, 0, 0, 0][..]] {
            assert_eq!(decode(form), Ok(vec![]), "{form:?}");
            let parsed = Pairs::parse(form).expect("empty form");
            assert!(parsed.is_empty());
            assert_eq!(parsed.len(), 0);
            assert_eq!(parsed.iter().next(), None);
        }
    }

    #[test]
    fn empty_keys_and_values_round_trip() {
        let pairs: [(&[u8], &[u8]); 3] = [(b"", b""), (b"k", b""), (b"", b"v\0x")];
        let bytes = encode(pairs);
        assert_eq!(bytes.len(), encoded_len(pairs));
        assert_eq!(bytes.len(), 4 + 3 * 10 + 1 + 3);
        assert_eq!(decode(&bytes), Ok(pairs.to_vec()));
    }

    #[test]
    fn encode_into_checks_the_destination_length() {
        let pairs: [(&[u8], &[u8]); 1] = [(b"key", b"value")];
        let len = encoded_len(pairs);
        for wrong in [0, len - 1, len + 1] {
            let mut dst = vec![0xAA; wrong];
            assert_eq!(
                encode_into(pairs, &mut dst),
                Err(PairsError::DstSize {
                    expected: len,
                    actual: wrong
                })
            );
        }
        let mut dst = vec![0xAA; len];
        assert_eq!(encode_into(pairs, &mut dst), Ok(()));
        assert_eq!(decode(&dst), Ok(pairs.to_vec()));
    }

    #[test]
    fn round_trips_many_pairs() {
        let owned: Vec<(Vec<u8>, Vec<u8>)> = (0..300u32)
            .map(|i| {
                (
                    format!("header-{i}").into_bytes(),
                    vec![(i % 256) as u8; (i % 7) as usize],
                )
            })
            .collect();
        let pairs = as_refs(&owned);
        let bytes = encode(pairs.iter().copied());
        assert_eq!(bytes.len(), encoded_len(pairs.iter().copied()));
        assert_eq!(decode(&bytes), Ok(pairs.clone()));
        assert_eq!(Pairs::parse(&bytes).map(|p| p.len()), Ok(300));
    }

    #[test]
    fn truncated_payloads() {
        // Shorter than the count (but not an empty form).
        assert_eq!(decode(&[2]), Err(PairsError::Truncated));
        assert_eq!(decode(&[0, 0]), Err(PairsError::Truncated));
        assert_eq!(decode(&[1, 0, 0]), Err(PairsError::Truncated));
        // The size table runs past the end.
        assert_eq!(decode(&raw(2, &[(1, 1)], b"")), Err(PairsError::Truncated));
        // A key runs past the end.
        assert_eq!(
            decode(&raw(1, &[(5, 0)], b"ab")),
            Err(PairsError::Truncated)
        );
        // The value's terminator is missing at the very end.
        assert_eq!(
            decode(&raw(1, &[(1, 1)], b"a\0b")),
            Err(PairsError::Truncated)
        );
        // A huge length must not overflow.
        assert_eq!(
            decode(&raw(1, &[(u32::MAX, u32::MAX)], b"a\0b\0")),
            Err(PairsError::Truncated)
        );
        // Every proper prefix of a valid payload (except the empty forms) is rejected.
        for cut in 1..WORKED_EXAMPLE.len() {
            let prefix = &WORKED_EXAMPLE[..cut];
            assert_eq!(decode(prefix), Err(PairsError::Truncated), "cut at {cut}");
        }
    }

    #[test]
    fn too_many_pairs() {
        let count = MAX_PAIRS_COUNT as u32 + 1;
        assert_eq!(
            decode(&raw(count, &[], b"")),
            Err(PairsError::TooManyPairs { count: 1025 })
        );
        assert_eq!(
            decode(&u32::MAX.to_le_bytes()),
            Err(PairsError::TooManyPairs {
                count: u32::MAX as usize
            })
        );
        // Exactly the cap is fine.
        let owned: Vec<(Vec<u8>, Vec<u8>)> = (0..MAX_PAIRS_COUNT)
            .map(|i| (i.to_string().into_bytes(), Vec::new()))
            .collect();
        let bytes = encode(as_refs(&owned));
        assert_eq!(decode(&bytes).map(|p| p.len()), Ok(MAX_PAIRS_COUNT));
        // One more is encoded (the host may return big maps) but not decoded.
        let mut owned = owned;
        owned.push((b"x".to_vec(), Vec::new()));
        let bytes = encode(as_refs(&owned));
        assert_eq!(
            decode(&bytes),
            Err(PairsError::TooManyPairs { count: 1025 })
        );
        assert!(decode_lenient(&bytes).is_empty());
    }

    #[test]
    fn too_large() {
        let big = vec![b'v'; MAX_PAIRS_BYTES];
        let pairs: [(&[u8], &[u8]); 1] = [(b"k", &big)];
        let bytes = encode(pairs);
        assert_eq!(
            decode(&bytes),
            Err(PairsError::TooLarge { len: bytes.len() })
        );
        assert!(decode_lenient(&bytes).is_empty());
        // Exactly the cap is fine.
        let fits = vec![b'v'; MAX_PAIRS_BYTES - 4 - 8 - 2 - 1];
        let pairs: [(&[u8], &[u8]); 1] = [(b"k", &fits)];
        let bytes = encode(pairs);
        assert_eq!(bytes.len(), MAX_PAIRS_BYTES);
        assert_eq!(decode(&bytes), Ok(pairs.to_vec()));
    }

    #[test]
    fn missing_nul() {
        // Key terminator of pair 0 is not NUL.
        assert_eq!(
            decode(&raw(1, &[(1, 1)], b"aXb\0")),
            Err(PairsError::MissingNul { index: 0 })
        );
        // Value terminator of pair 1 is not NUL.
        let mut bytes = WORKED_EXAMPLE.to_vec();
        *bytes.last_mut().expect("non-empty") = b'!';
        assert_eq!(decode(&bytes), Err(PairsError::MissingNul { index: 1 }));
        // A value size that is one short lands on a non-NUL byte.
        assert_eq!(
            decode(&raw(1, &[(1, 1)], b"a\0bc\0")),
            Err(PairsError::MissingNul { index: 0 })
        );
    }

    #[test]
    fn trailing_bytes() {
        let mut bytes = WORKED_EXAMPLE.to_vec();
        bytes.extend_from_slice(b"xyz");
        assert_eq!(decode(&bytes), Err(PairsError::TrailingBytes { extra: 3 }));
        assert_eq!(
            decode(&[0, 0, 0, 0, 0]),
            Err(PairsError::TrailingBytes { extra: 1 })
        );
        assert!(decode_lenient(&bytes).is_empty());
    }

    #[test]
    fn lenient_decode_returns_empty_on_garbage() {
        let garbage: [&[u8]; 5] = [
            b"\xff\xff\xff\xff",
            b"hello, world",
            &[1, 0, 0, 0, 9, 0, 0, 0, 9, 0, 0, 0],
            &[2, 0, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ];
        for bytes in garbage {
            assert!(decode(bytes).is_err(), "{bytes:?}");
            assert!(decode_lenient(bytes).is_empty(), "{bytes:?}");
            assert!(Pairs::parse(bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(
            PairsError::TooManyPairs { count: 2000 }.to_string(),
            "pair map has 2000 pairs (at most 1024 are accepted)"
        );
        assert_eq!(
            PairsError::MissingNul { index: 3 }.to_string(),
            "pair 3 of the pair map is missing its NUL terminator"
        );
    }

    /// An iterator whose clones disagree must give an error, not a panic.
    #[test]
    fn inconsistent_iterator_does_not_panic() {
        use std::cell::Cell;
        use std::rc::Rc;

        /// Yields 3 pairs on the first two passes, then `last` pairs.
        #[derive(Clone)]
        struct Fickle {
            calls: Rc<Cell<usize>>,
            last: usize,
        }
        impl IntoIterator for Fickle {
            type Item = (&'static [u8], &'static [u8]);
            type IntoIter = std::vec::IntoIter<Self::Item>;
            fn into_iter(self) -> Self::IntoIter {
                let calls = self.calls.get();
                self.calls.set(calls + 1);
                let n = if calls < 2 { 3 } else { self.last };
                vec![(&b"ab"[..], &b"c"[..]); n].into_iter()
            }
        }
        for last in [0, 2, 4] {
            let fickle = Fickle {
                calls: Rc::default(),
                last,
            };
            let mut dst = vec![0; 4 + 3 * (8 + 3 + 2)];
            assert_eq!(
                encode_into(fickle, &mut dst),
                Err(PairsError::Truncated),
                "last = {last}"
            );
        }
    }
}
