//! Property paths (ABI reference §5.2).
//!
//! `proxy_get_property` and `proxy_set_property` name a property by a list of segments
//! joined by `0x00`, **with no trailing NUL**: `["request", "headers", "x-foo"]` is
//! `request\0headers\0x-foo` (Rust SDK `serialize_property_path`, Go SDK
//! `SerializePropertyPath`). Envoy splits the path on `\0`.
//!
//! The codec here is byte-exact: [`encode_path`] of [`split_path`] gives back the input for
//! every byte string. The other direction holds for segments that contain no NUL, except that
//! a path made of a single empty segment encodes to no bytes, which splits to no segments.
//!
//! The dotted form (`source.address`) is vessel's own notation for scenario files and logs;
//! it cannot express a segment that contains a `.`.

/// The byte that separates segments.
const SEPARATOR: u8 = 0;

/// Joins `segments` with `0x00`, without a trailing NUL.
///
/// Segments are copied as they are: a segment that contains a NUL reads back as two.
pub fn encode_path<'a, I>(segments: I) -> Vec<u8>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut out = Vec::new();
    for (i, segment) in segments.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        out.extend_from_slice(segment);
    }
    out
}

/// Splits an encoded path into its segments: `a\0b` gives `a`, `b`.
///
/// Empty input yields **no** segments. Otherwise there is one segment more than there are
/// NUL bytes, so `a\0` gives `a` and an empty segment.
pub fn split_path(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    // `split` on an empty slice yields one empty segment; skip it.
    let skip = usize::from(bytes.is_empty());
    bytes.split(|&b| b == SEPARATOR).skip(skip)
}

/// Converts the dotted form to an encoded path: `source.address` gives `source\0address`.
///
/// The empty string gives an empty path.
pub fn path_from_dotted(dotted: &str) -> Vec<u8> {
    dotted
        .bytes()
        .map(|b| if b == b'.' { SEPARATOR } else { b })
        .collect()
}

/// Converts an encoded path to the dotted form, for logs and lookups:
/// `source\0address` gives `source.address`. Invalid UTF-8 is replaced (lossy).
pub fn path_to_dotted(bytes: &[u8]) -> String {
    let dotted: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == SEPARATOR { b'.' } else { b })
        .collect();
    match String::from_utf8(dotted) {
        Ok(s) => s,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_without_trailing_nul() {
        let segments: [&[u8]; 3] = [b"request", b"headers", b"x-foo"];
        assert_eq!(encode_path(segments), b"request\0headers\0x-foo");
        assert_eq!(encode_path([&b"plugin_name"[..]]), b"plugin_name");
        assert_eq!(encode_path(Vec::<&[u8]>::new()), b"");
    }

    #[test]
    fn splits_on_nul() {
        let split: Vec<&[u8]> = split_path(b"request\0headers\0x-foo").collect();
        assert_eq!(split, [&b"request"[..], b"headers", b"x-foo"]);
        assert_eq!(split_path(b"").count(), 0);
        let split: Vec<&[u8]> = split_path(b"a\0").collect();
        assert_eq!(split, [&b"a"[..], b""]);
        let split: Vec<&[u8]> = split_path(b"\0").collect();
        assert_eq!(split, [&b""[..], b""]);
    }

    #[test]
    fn split_then_encode_is_identity() {
        let inputs: [&[u8]; 7] = [
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"a\0b",
            b"\0a\0\0b\0",
            b"\xff\xfe\0\x01",
        ];
        for input in inputs {
            assert_eq!(encode_path(split_path(input)), input, "{input:?}");
        }
    }

    #[test]
    fn encode_then_split_is_identity() {
        let cases: [&[&[u8]]; 4] = [
            &[b"source", b"address"],
            &[b"", b""],
            &[b"a", b"", b"c"],
            &[b"x"],
        ];
        for segments in cases {
            let encoded = encode_path(segments.iter().copied());
            let back: Vec<&[u8]> = split_path(&encoded).collect();
            assert_eq!(back, segments);
        }
        // The one exception: a single empty segment has no bytes.
        assert_eq!(encode_path([&b""[..]]), b"");
    }

    #[test]
    fn dotted_form() {
        assert_eq!(path_from_dotted("source.address"), b"source\0address");
        assert_eq!(path_from_dotted("plugin_root_id"), b"plugin_root_id");
        assert_eq!(path_from_dotted(""), b"");
        assert_eq!(path_to_dotted(b"source\0address"), "source.address");
        assert_eq!(path_to_dotted(b""), "");
        assert_eq!(path_to_dotted(b"a\0\xffb"), "a.\u{fffd}b");
        for dotted in ["request.headers.x-foo", "a..b", ".", "ünïcode.ok"] {
            assert_eq!(path_to_dotted(&path_from_dotted(dotted)), dotted);
        }
    }
}
