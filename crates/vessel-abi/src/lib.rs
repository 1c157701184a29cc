//! The proxy-wasm ABI vocabulary shared by the vessel host and its tools.
//!
//! This crate has no runtime: it holds the numeric enums of the ABI (ABI reference §2),
//! the serialized pair-map codec (§5.1), the property-path codec (§5.2) and ABI version
//! detection from a module's export section (§1.1). Every decoder here accepts arbitrary
//! bytes without panicking.
//!
//! "ABI reference" means `proxy-wasm-abi.md` in the project's shared reference notes.

#![forbid(unsafe_code)]

pub mod enums;
pub mod pairs;
pub mod path;
pub mod version;

pub use enums::{
    Action, BufferType, FilterDataStatus, FilterHeadersStatus, FilterStatus, FilterTrailersStatus,
    GrpcStatus, LogLevel, MapType, MetricType, ParseLogLevelError, PeerType, Status, StreamType,
};
pub use pairs::{
    MAX_PAIRS_BYTES, MAX_PAIRS_COUNT, Pair, Pairs, PairsError, PairsIter, decode, decode_lenient,
    encode, encode_into, encoded_len,
};
pub use path::{encode_path, path_from_dotted, path_to_dotted, split_path};
pub use version::{AbiVersion, DetectError, ParseError, detect_abi_version};

/// Error for an integer that is not a valid value of an ABI enum.
///
/// Produced by the `TryFrom` conversions in [`enums`]; the host turns it into
/// [`Status::BadArgument`] at the hostcall boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{value} is not a valid {kind}")]
pub struct UnknownValue {
    /// The name of the enum the value was meant for, e.g. `"BufferType"`.
    pub kind: &'static str,
    /// The rejected value, widened so that both `u32` and `i32` enums fit.
    pub value: i64,
}
