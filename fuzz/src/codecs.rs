//! Oracles for the `vessel-abi` codecs: the pair map (ABI reference §5.1) and property
//! paths (§5.2).

use arbitrary::{Arbitrary, Unstructured};
use vessel_abi::pairs::{
    MAX_PAIRS_BYTES, MAX_PAIRS_COUNT, Pair, Pairs, PairsError, decode, decode_lenient, encode,
    encode_into, encoded_len,
};
use vessel_abi::path::{encode_path, path_from_dotted, path_to_dotted, split_path};

/// The byte strings that decode to an empty map: no bytes, the spec's single NUL, `N = 0`.
const EMPTY_FORMS: [&[u8]; 3] = [&[], &[0], &[0, 0, 0, 0]];

/// Checks the pair-map codec against `data`, read both as a payload and as the recipe for a
/// structured map.
///
/// * Decoding arbitrary bytes never panics, and [`Pairs::parse`], [`decode`] and
///   [`decode_lenient`] agree.
/// * A payload that decodes strictly re-encodes to the same bytes (the empty forms to none).
/// * A payload that fails to decode fails for a reason that fits it, and decodes leniently to
///   an empty map.
/// * A map built from `data` with `arbitrary` encodes to [`encoded_len`] bytes and decodes
///   back to itself (or to the right cap error), and breaking its encoding is detected.
pub fn pairs_oracle(data: &[u8]) {
    check_pairs_payload(data);
    let mut u = Unstructured::new(data);
    if let Ok(map) = Vec::<(Vec<u8>, Vec<u8>)>::arbitrary(&mut u) {
        check_pairs_map(&map);
    }
}

/// The decoding half of [`pairs_oracle`].
fn check_pairs_payload(data: &[u8]) {
    let strict = decode(data);
    let parsed = Pairs::parse(data);
    let lenient = decode_lenient(data);
    match &strict {
        Ok(decoded) => {
            let parsed = parsed.expect("Pairs::parse must accept what decode accepts");
            assert_eq!(parsed.len(), decoded.len());
            assert_eq!(parsed.is_empty(), decoded.is_empty());
            assert_eq!(parsed.iter().len(), decoded.len());
            assert_eq!(&parsed.iter().collect::<Vec<_>>(), decoded);
            assert_eq!(
                &lenient, decoded,
                "lenient decode differs from strict decode"
            );
            assert!(decoded.len() <= MAX_PAIRS_COUNT);

            let reencoded = encode(decoded.iter().copied());
            assert_eq!(encoded_len(decoded.iter().copied()), reencoded.len());
            if decoded.is_empty() {
                assert!(reencoded.is_empty());
                assert!(
                    EMPTY_FORMS.contains(&data),
                    "{data:?} decoded to an empty map"
                );
            } else {
                assert_eq!(reencoded, data, "re-encoding changed the payload");
            }
        }
        Err(err) => {
            assert_eq!(parsed.err(), Some(*err), "Pairs::parse and decode disagree");
            assert!(
                lenient.is_empty(),
                "lenient decode of a bad payload is not empty"
            );
            match *err {
                PairsError::TooLarge { len } => {
                    assert_eq!(len, data.len());
                    assert!(len > MAX_PAIRS_BYTES);
                }
                PairsError::TooManyPairs { count } => {
                    assert!(count > MAX_PAIRS_COUNT);
                    assert!(data.len() >= 4);
                }
                PairsError::TrailingBytes { extra } => {
                    assert!(extra > 0 && extra < data.len());
                }
                PairsError::MissingNul { index } => assert!(index < MAX_PAIRS_COUNT),
                PairsError::Truncated => assert!(!EMPTY_FORMS.contains(&data)),
                PairsError::DstSize { .. } | PairsError::EntryTooLong { .. } => {
                    panic!("decode returned an encode-only error: {err}")
                }
                other => panic!("an error this oracle does not know: {other:?}"),
            }
        }
    }
}

/// The encoding half of [`pairs_oracle`].
fn check_pairs_map(map: &[(Vec<u8>, Vec<u8>)]) {
    let refs: Vec<Pair<'_>> = map
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let len = encoded_len(refs.iter().copied());
    let bytes = encode(refs.iter().copied());
    assert_eq!(bytes.len(), len);
    assert_eq!(
        bytes.is_empty(),
        refs.is_empty(),
        "only the empty map has no bytes"
    );
    let expected_len = if refs.is_empty() {
        0
    } else {
        4 + refs
            .iter()
            .map(|(k, v)| 10 + k.len() + v.len())
            .sum::<usize>()
    };
    assert_eq!(len, expected_len);

    // encode_into agrees with encode and checks the destination size.
    let mut dst = vec![0xA5; len];
    assert_eq!(encode_into(refs.iter().copied(), &mut dst), Ok(()));
    assert_eq!(dst, bytes);
    let mut long = vec![0; len + 1];
    assert_eq!(
        encode_into(refs.iter().copied(), &mut long),
        Err(PairsError::DstSize {
            expected: len,
            actual: len + 1
        })
    );

    // Decoding gives the map back, unless it is over a cap.
    match decode(&bytes) {
        Ok(decoded) => {
            assert_eq!(decoded, refs, "decode(encode(map)) != map");
            let parsed = Pairs::parse(&bytes).expect("decode accepted it");
            if let Some(&(key, value)) = refs.first() {
                assert_eq!(parsed.get(key), Some(value), "get must find the first pair");
            }
        }
        Err(PairsError::TooLarge { len: l }) => assert!(l == len && len > MAX_PAIRS_BYTES),
        Err(PairsError::TooManyPairs { count }) => {
            assert!(count == refs.len() && count > MAX_PAIRS_COUNT && len <= MAX_PAIRS_BYTES);
        }
        Err(err) => panic!("valid encoding rejected: {err}"),
    }

    // A damaged encoding is rejected, and the lenient decoder shrugs.
    if !refs.is_empty() && refs.len() <= MAX_PAIRS_COUNT && len < MAX_PAIRS_BYTES {
        let cut = &bytes[..len - 1];
        assert_eq!(
            decode(cut),
            Err(PairsError::Truncated),
            "truncated encoding accepted"
        );
        assert!(decode_lenient(cut).is_empty());
        let mut extended = bytes.clone();
        extended.push(0);
        assert_eq!(
            decode(&extended),
            Err(PairsError::TrailingBytes { extra: 1 })
        );
        let mut bad_nul = bytes;
        if let Some(last) = bad_nul.last_mut() {
            *last = b'x';
        }
        assert_eq!(
            decode(&bad_nul),
            Err(PairsError::MissingNul {
                index: refs.len() - 1
            })
        );
    }
}

/// Checks the property-path codec against `data`, read both as an encoded path and as the
/// recipe for structured segments and a dotted string.
///
/// * Splitting arbitrary bytes never panics and re-encodes to the same bytes; empty input has
///   no segments, other input one segment more than it has NULs.
/// * The dotted form round-trips for UTF-8 input without dots.
/// * Segments without NULs (other than a lone empty segment) survive encode then split.
pub fn path_oracle(data: &[u8]) {
    let segments: Vec<&[u8]> = split_path(data).collect();
    assert_eq!(encode_path(segments.iter().copied()), data);
    let nuls = data.iter().filter(|&&b| b == 0).count();
    let expected_segments = if data.is_empty() { 0 } else { nuls + 1 };
    assert_eq!(segments.len(), expected_segments);
    assert!(segments.iter().all(|s| !s.contains(&0)));

    let dotted = path_to_dotted(data);
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(dotted, text.replace('\0', "."));
        if !text.contains('.') {
            assert_eq!(path_from_dotted(&dotted), data);
        }
    }

    let mut u = Unstructured::new(data);
    if let Ok(text) = <&str>::arbitrary(&mut u) {
        let path = path_from_dotted(text);
        assert_eq!(path.len(), text.len());
        assert_eq!(path_to_dotted(&path), text.replace('\0', "."));
        let dots = text.bytes().filter(|&b| b == b'.').count();
        let nul_free = !text.contains('\0');
        if nul_free && !text.is_empty() {
            assert_eq!(split_path(&path).count(), dots + 1);
        }
    }
    if let Ok(raw_segments) = Vec::<Vec<u8>>::arbitrary(&mut u) {
        let clean: Vec<Vec<u8>> = raw_segments
            .into_iter()
            .map(|mut s| {
                s.retain(|&b| b != 0);
                s
            })
            .collect();
        let encoded = encode_path(clean.iter().map(Vec::as_slice));
        let back: Vec<&[u8]> = split_path(&encoded).collect();
        if clean.len() == 1 && clean[0].is_empty() {
            assert!(encoded.is_empty() && back.is_empty());
        } else {
            assert_eq!(back, clean.iter().map(Vec::as_slice).collect::<Vec<_>>());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::seeds;

    #[test]
    fn pairs_oracle_over_seeds() {
        for seed in seeds() {
            pairs_oracle(&seed);
        }
    }

    #[test]
    fn path_oracle_over_seeds() {
        for seed in seeds() {
            path_oracle(&seed);
        }
    }

    /// The seeds reach every outcome of the strict decoder, so the oracle checks each one.
    #[test]
    fn seeds_cover_every_decode_outcome() {
        let mut outcomes = HashSet::new();
        let mut non_empty_ok = false;
        for seed in seeds() {
            let outcome = match decode(&seed) {
                Ok(pairs) => {
                    non_empty_ok |= !pairs.is_empty();
                    "ok"
                }
                Err(PairsError::Truncated) => "truncated",
                Err(PairsError::TooManyPairs { .. }) => "too many",
                Err(PairsError::TooLarge { .. }) => "too large",
                Err(PairsError::MissingNul { .. }) => "missing nul",
                Err(PairsError::TrailingBytes { .. }) => "trailing",
                Err(PairsError::DstSize { .. }) => "dst size",
                Err(PairsError::EntryTooLong { .. }) => "entry too long",
                Err(other) => panic!("an error this test does not know: {other:?}"),
            };
            outcomes.insert(outcome);
        }
        assert!(non_empty_ok);
        for expected in [
            "ok",
            "truncated",
            "too many",
            "too large",
            "missing nul",
            "trailing",
        ] {
            assert!(outcomes.contains(expected), "no seed is {expected}");
        }
        assert_eq!(outcomes.len(), 6, "{outcomes:?}");
    }

    /// The structured half of the oracle sees non-trivial maps.
    #[test]
    fn seeds_build_structured_maps() {
        let mut largest = 0;
        for seed in seeds() {
            let mut u = Unstructured::new(&seed);
            if let Ok(map) = Vec::<(Vec<u8>, Vec<u8>)>::arbitrary(&mut u) {
                largest = largest.max(map.len());
            }
        }
        assert!(largest >= 3, "largest arbitrary map has {largest} pairs");
    }
}
