//! ABI versions and their detection (ABI reference §1.1).
//!
//! A module advertises its ABI by exporting a function named
//! `proxy_abi_version_<major>_<minor>_<patch>` that is never called. Like cpp-host
//! (`BytecodeUtil::getAbiVersion`), [`detect_abi_version`] reads the raw bytes before
//! compilation, walks the export section and takes the **first** function export with a known
//! marker. Besides the three spec versions, the Higress Go SDK's `proxy_abi_version_0_2_100`
//! is accepted: it is 0.2.1 plus Higress' own hostcalls (see the peers notes).

use core::fmt;

use wasmparser::{Encoding, ExternalKind, Parser, Payload};

/// The prefix shared by all ABI version markers.
const MARKER_PREFIX: &str = "proxy_abi_version_";

/// A proxy-wasm ABI version a module can advertise.
///
/// Ordered by version number. Non-exhaustive: a later vessel may know more versions.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AbiVersion {
    /// 0.1.0: `proxy_get_configuration`, `proxy_continue_request/response`, two-argument
    /// header callbacks.
    V0_1_0,
    /// 0.2.0: `proxy_continue_stream`, `proxy_close_stream`, foreign functions, buffer types
    /// 6 to 8. Exported by the Go and TinyGo SDKs.
    V0_2_0,
    /// 0.2.1: adds `proxy_get_log_level`. Exported by the Rust and C++ SDKs.
    V0_2_1,
    /// 0.2.100: 0.2.1 plus the Higress extensions (Higress Go SDK).
    V0_2_100,
}

impl AbiVersion {
    /// Every version, oldest first.
    pub const ALL: &[Self] = &[Self::V0_1_0, Self::V0_2_0, Self::V0_2_1, Self::V0_2_100];

    /// The name of the export that advertises this version, e.g. `"proxy_abi_version_0_2_1"`.
    pub const fn marker(self) -> &'static str {
        match self {
            Self::V0_1_0 => "proxy_abi_version_0_1_0",
            Self::V0_2_0 => "proxy_abi_version_0_2_0",
            Self::V0_2_1 => "proxy_abi_version_0_2_1",
            Self::V0_2_100 => "proxy_abi_version_0_2_100",
        }
    }

    /// The version a marker export name advertises, if it is a known one.
    pub fn from_marker(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.marker() == name)
    }

    /// Whether this is 0.1.0, whose imports and callback signatures differ from 0.2.x
    /// (ABI reference §1.2).
    pub const fn is_v0_1(self) -> bool {
        matches!(self, Self::V0_1_0)
    }

    /// Whether the module may use the Higress extensions (0.2.100 only).
    pub const fn has_higress_extensions(self) -> bool {
        matches!(self, Self::V0_2_100)
    }

    /// Whether the version has `proxy_get_log_level` (0.2.1 and 0.2.100).
    pub const fn has_get_log_level(self) -> bool {
        matches!(self, Self::V0_2_1 | Self::V0_2_100)
    }

    /// The dotted version number, e.g. `"0.2.1"`.
    pub const fn display(self) -> &'static str {
        match self {
            Self::V0_1_0 => "0.1.0",
            Self::V0_2_0 => "0.2.0",
            Self::V0_2_1 => "0.2.1",
            Self::V0_2_100 => "0.2.100",
        }
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display())
    }
}

/// Why no ABI version could be read from a module.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    /// The bytes are not a WebAssembly module (or its header or export section is
    /// malformed).
    #[error("not a WebAssembly module: {0}")]
    Parse(#[source] ParseError),
    /// The bytes are a WebAssembly component, not a core module.
    #[error("not a WebAssembly module: a component, not a core module")]
    Component,
    /// The module exports no `proxy_abi_version_*` function.
    #[error("missing Proxy-Wasm ABI version: the module exports no `proxy_abi_version_*` function")]
    Missing,
    /// The module exports only `proxy_abi_version_*` functions with unknown versions; holds
    /// the suffix of the first one (e.g. `0_3_0`).
    #[error("unknown Proxy-Wasm ABI version `{0}` (supported: 0_1_0, 0_2_0, 0_2_1, 0_2_100)")]
    Unknown(String),
}

/// The binary could not be parsed: what the parser found and where.
///
/// Keeps the parser's error as its [`source`](core::error::Error::source) without making the
/// parser's types part of this crate's API. Two parse errors are equal if they have the same
/// message and offset.
#[derive(Debug, Clone)]
pub struct ParseError(wasmparser::BinaryReaderError);

impl ParseError {
    /// The parser's message, without the offset (e.g. `"unexpected end-of-file"`).
    pub fn message(&self) -> &str {
        self.0.message()
    }

    /// The byte offset in the module where parsing failed.
    pub fn offset(&self) -> usize {
        self.0.offset()
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl core::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl PartialEq for ParseError {
    fn eq(&self, other: &Self) -> bool {
        self.message() == other.message() && self.offset() == other.offset()
    }
}

impl Eq for ParseError {}

/// Reads the ABI version a module advertises.
///
/// Walks the sections up to and including the export section and returns the first
/// *function* export named after a known [`AbiVersion::marker`]. Exports of other kinds are
/// ignored, as in cpp-host. Never panics, whatever the bytes.
///
/// # Errors
///
/// [`DetectError::Unknown`] with the suffix of the first `proxy_abi_version_*` function
/// export if none is known, [`DetectError::Missing`] if there is none at all, and
/// [`DetectError::Parse`] if the bytes are not a WebAssembly module or are malformed before
/// the end of the export section, and [`DetectError::Component`] for a component.
pub fn detect_abi_version(wasm: &[u8]) -> Result<AbiVersion, DetectError> {
    let parse_error = |err: wasmparser::BinaryReaderError| DetectError::Parse(ParseError(err));
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(parse_error)? {
            Payload::Version {
                encoding: Encoding::Component,
                ..
            } => {
                return Err(DetectError::Component);
            }
            Payload::ExportSection(reader) => {
                let mut unknown = None;
                for export in reader {
                    let export = export.map_err(parse_error)?;
                    if export.kind != ExternalKind::Func {
                        continue;
                    }
                    if let Some(version) = AbiVersion::from_marker(export.name) {
                        return Ok(version);
                    }
                    if let Some(suffix) = export.name.strip_prefix(MARKER_PREFIX) {
                        unknown.get_or_insert_with(|| suffix.to_owned());
                    }
                }
                // A module has at most one export section; nothing after it matters here.
                return Err(unknown.map_or(DetectError::Missing, DetectError::Unknown));
            }
            _ => {}
        }
    }
    Err(DetectError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module with the given function exports (each a `(func)` with no params/results).
    fn module_exporting(names: &[&str]) -> Vec<u8> {
        let mut text = String::from("(module\n");
        for name in names {
            text.push_str(&format!("  (func (export \"{name}\"))\n"));
        }
        text.push(')');
        wat::parse_str(&text).expect("test module must assemble")
    }

    #[test]
    fn markers_round_trip() {
        for &v in AbiVersion::ALL {
            assert_eq!(AbiVersion::from_marker(v.marker()), Some(v));
            assert_eq!(
                v.marker().strip_prefix(MARKER_PREFIX),
                Some(v.display().replace('.', "_").as_str())
            );
            assert_eq!(v.to_string(), v.display());
        }
        assert_eq!(AbiVersion::from_marker("proxy_abi_version_0_3_0"), None);
        assert_eq!(AbiVersion::from_marker("proxy_abi_version_0_2_1 "), None);
        assert_eq!(AbiVersion::from_marker(""), None);
    }

    #[test]
    fn version_predicates() {
        assert!(AbiVersion::V0_1_0.is_v0_1());
        assert!(!AbiVersion::V0_2_0.is_v0_1());
        assert!(AbiVersion::V0_2_100.has_higress_extensions());
        assert!(!AbiVersion::V0_2_1.has_higress_extensions());
        assert!(AbiVersion::V0_2_1.has_get_log_level());
        assert!(!AbiVersion::V0_2_0.has_get_log_level());
        assert!(AbiVersion::V0_1_0 < AbiVersion::V0_2_0);
        assert!(AbiVersion::V0_2_1 < AbiVersion::V0_2_100);
    }

    #[test]
    fn detects_each_marker() {
        for &v in AbiVersion::ALL {
            let wasm = module_exporting(&["malloc", v.marker(), "proxy_on_memory_allocate"]);
            assert_eq!(detect_abi_version(&wasm), Ok(v), "{}", v.marker());
        }
    }

    #[test]
    fn first_known_marker_wins() {
        let wasm = module_exporting(&[
            "proxy_abi_version_9_9_9",
            "proxy_abi_version_0_2_0",
            "proxy_abi_version_0_2_1",
        ]);
        assert_eq!(detect_abi_version(&wasm), Ok(AbiVersion::V0_2_0));
    }

    #[test]
    fn missing_marker() {
        let wasm = module_exporting(&["proxy_on_vm_start", "malloc"]);
        assert_eq!(detect_abi_version(&wasm), Err(DetectError::Missing));
        let empty = wat::parse_str("(module)").expect("assembles");
        assert_eq!(detect_abi_version(&empty), Err(DetectError::Missing));
    }

    #[test]
    fn non_function_marker_is_ignored() {
        let wasm = wat::parse_str(
            r#"(module (global (export "proxy_abi_version_0_2_1") i32 (i32.const 0)))"#,
        )
        .expect("assembles");
        assert_eq!(detect_abi_version(&wasm), Err(DetectError::Missing));
    }

    #[test]
    fn unknown_marker() {
        let wasm = module_exporting(&["proxy_abi_version_0_3_0", "proxy_abi_version_x"]);
        assert_eq!(
            detect_abi_version(&wasm),
            Err(DetectError::Unknown("0_3_0".to_owned()))
        );
        assert_eq!(
            DetectError::Unknown("0_3_0".to_owned()).to_string(),
            "unknown Proxy-Wasm ABI version `0_3_0` (supported: 0_1_0, 0_2_0, 0_2_1, 0_2_100)"
        );
    }

    /// A minimal module written byte by byte, independent of the `wat` assembler: one type
    /// `() -> ()`, one function, one export, one empty body.
    #[test]
    fn detects_a_hand_written_module() {
        let name = b"proxy_abi_version_0_2_1";
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]); // type section
        wasm.extend_from_slice(&[3, 2, 1, 0]); // function section
        let export_len = 1 + 1 + name.len() + 2;
        wasm.extend_from_slice(&[7, export_len as u8, 1, name.len() as u8]);
        wasm.extend_from_slice(name);
        wasm.extend_from_slice(&[0, 0]); // func index 0
        wasm.extend_from_slice(&[10, 4, 1, 2, 0, 0x0b]); // code section
        assert_eq!(detect_abi_version(&wasm), Ok(AbiVersion::V0_2_1));
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let inputs: [&[u8]; 6] = [
            b"",
            b"not wasm at all",
            b"\0asm",
            b"\0asm\x02\0\0\0",
            // A header, then an export section that claims more bytes than exist.
            b"\0asm\x01\0\0\0\x07\x7f\x01",
            // A header, then an export whose name length runs off the end.
            b"\0asm\x01\0\0\0\x07\x03\x01\x7f\x00",
        ];
        for wasm in inputs {
            assert!(
                matches!(detect_abi_version(wasm), Err(DetectError::Parse(_))),
                "{wasm:?}: {:?}",
                detect_abi_version(wasm)
            );
        }
    }

    #[test]
    fn a_component_is_named_and_a_parse_error_keeps_its_offset() {
        let component = b"\0asm\x0d\0\x01\0";
        assert_eq!(detect_abi_version(component), Err(DetectError::Component));
        let Err(DetectError::Parse(e)) = detect_abi_version(b"\0asm\x01\0\0\0\x07\x7f\x01") else {
            panic!("a truncated export section is a parse error");
        };
        assert_eq!(e.offset(), 10);
        assert!(!e.message().is_empty());
        assert!(core::error::Error::source(&e).is_some());
        let shown = DetectError::Parse(e.clone()).to_string();
        assert!(shown.starts_with("not a WebAssembly module: "), "{shown}");
        assert!(shown.ends_with("(at offset 0xa)"), "{shown}");
    }

    #[test]
    fn truncations_and_bit_flips_never_panic() {
        let wasm = module_exporting(&["malloc", "proxy_abi_version_0_2_1"]);
        for cut in 0..wasm.len() {
            let _ = detect_abi_version(&wasm[..cut]);
        }
        for i in 0..wasm.len() {
            for bit in 0..8 {
                let mut flipped = wasm.clone();
                flipped[i] ^= 1 << bit;
                let _ = detect_abi_version(&flipped);
            }
        }
        assert_eq!(detect_abi_version(&wasm), Ok(AbiVersion::V0_2_1));
    }
}
