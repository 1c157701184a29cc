//! Deterministic input generation: a small PRNG and the seed corpus shared by all oracles.

use vessel_abi::pairs;

/// A xorshift64* pseudo-random generator: tiny, deterministic and good enough to make inputs.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator started from `seed` (0 is replaced by a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: usize) -> usize {
        if bound == 0 {
            return 0;
        }
        // The modulo bias is irrelevant for test inputs.
        (self.next_u64() % bound as u64) as usize
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    /// A short byte string, biased towards header-like text, NULs and dots.
    pub fn token(&mut self, max_len: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b"abcxyz-:._\0\xff0123";
        let len = self.below(max_len + 1);
        (0..len)
            .map(|_| {
                if self.below(4) == 0 {
                    self.byte()
                } else {
                    ALPHABET[self.below(ALPHABET.len())]
                }
            })
            .collect()
    }

    /// A random pair map with at most `max_pairs` pairs.
    pub fn pair_map(&mut self, max_pairs: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let count = self.below(max_pairs + 1);
        (0..count)
            .map(|_| (self.token(12), self.token(24)))
            .collect()
    }

    /// `bytes` with one random change: a flipped bit, a cut, an inserted or a removed byte.
    pub fn mutate(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        if out.is_empty() {
            out.push(self.byte());
            return out;
        }
        let at = self.below(out.len());
        match self.below(4) {
            0 => out[at] ^= 1 << self.below(8),
            1 => out.truncate(at),
            2 => out.insert(at, self.byte()),
            _ => {
                out.remove(at);
            }
        }
        out
    }
}

/// Encodes an owned pair map.
fn encode_owned(map: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    pairs::encode(map.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
}

/// Hand-written edge cases for the pair-map and property-path codecs.
fn edge_cases() -> Vec<Vec<u8>> {
    // ABI reference §5.1 worked example: {"a":"1"}, {"b":"22"}.
    let worked: &[u8] = b"\x02\0\0\0\x01\0\0\0\x01\0\0\0\x01\0\0\0\x02\0\0\0a\x001\0b\x0022\0";
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0, 0],
        vec![0, 0, 0],
        vec![0, 0, 0, 0],
        vec![0, 0, 0, 0, 0],
        vec![1, 0, 0, 0],
        vec![0xff; 4],
        worked.to_vec(),
        b"request\0headers\0x-foo".to_vec(),
        b"source.address".to_vec(),
        b"\0\0".to_vec(),
        b"a\0".to_vec(),
        b"\xff\xfe\0.\0".to_vec(),
    ];
    // Every prefix of the worked example, and the example with each byte flipped.
    for cut in 0..worked.len() {
        cases.push(worked[..cut].to_vec());
    }
    for i in 0..worked.len() {
        let mut flipped = worked.to_vec();
        flipped[i] ^= 0x80;
        cases.push(flipped);
    }
    let mut trailing = worked.to_vec();
    trailing.push(0);
    cases.push(trailing);
    // Counts just over the cap, and huge lengths that must not overflow.
    cases.push((pairs::MAX_PAIRS_COUNT as u32 + 1).to_le_bytes().to_vec());
    let mut huge = 1u32.to_le_bytes().to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(b"k\0v\0");
    cases.push(huge);
    // Exactly MAX_PAIRS_COUNT empty pairs, then one more.
    let full: Vec<(Vec<u8>, Vec<u8>)> = vec![(Vec::new(), Vec::new()); pairs::MAX_PAIRS_COUNT];
    cases.push(encode_owned(&full));
    let mut over = full;
    over.push((b"k".to_vec(), b"v".to_vec()));
    cases.push(encode_owned(&over));
    // Just over the byte cap.
    let big = vec![(b"k".to_vec(), vec![b'v'; pairs::MAX_PAIRS_BYTES])];
    cases.push(encode_owned(&big));
    cases
}

/// A deterministic corpus of a few thousand inputs: the edge cases above, valid pair-map
/// encodings, mutations of them, property paths and random bytes.
///
/// The same sequence comes out on every call and every platform.
pub fn seeds() -> impl Iterator<Item = Vec<u8>> {
    let mut rng = XorShift::new(0x5EED_0F7E_55E1);
    let mut out = edge_cases();
    for _ in 0..1000 {
        let map = rng.pair_map(6);
        let encoded = encode_owned(&map);
        out.push(rng.mutate(&encoded));
        out.push(encoded);
    }
    for _ in 0..500 {
        let segments: Vec<Vec<u8>> = (0..rng.below(5)).map(|_| rng.token(10)).collect();
        out.push(vessel_abi::path::encode_path(
            segments.iter().map(Vec::as_slice),
        ));
    }
    for _ in 0..1500 {
        let len = if rng.below(8) == 0 {
            rng.below(1024)
        } else {
            rng.below(64)
        };
        out.push(rng.bytes(len));
    }
    out.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_deterministic_and_varied() {
        let first: Vec<Vec<u8>> = seeds().collect();
        let second: Vec<Vec<u8>> = seeds().collect();
        assert_eq!(first, second);
        assert!(first.len() > 3000, "{} seeds", first.len());
        let distinct: std::collections::HashSet<&Vec<u8>> = first.iter().collect();
        assert!(distinct.len() > 2500, "{} distinct seeds", distinct.len());
    }

    #[test]
    fn xorshift_is_not_stuck() {
        let mut rng = XorShift::new(0);
        let values: std::collections::HashSet<u64> = (0..1000).map(|_| rng.next_u64()).collect();
        assert_eq!(values.len(), 1000);
        assert!((0..1000).all(|_| rng.below(7) < 7));
        assert_eq!(rng.below(0), 0);
    }
}
