//! The numeric enums of the proxy-wasm ABI (ABI reference §2.1 and §2.2).
//!
//! Every enum is `#[repr(u32)]` (only [`GrpcStatus`] is `#[repr(i32)]`, because of
//! `InvalidCode = -1`), converts from its integer with `TryFrom` (an unknown value is an
//! [`UnknownValue`]), back with `as_u32`/`as_i32`, lists its values in `ALL`, and spells
//! itself with `name()`. Names follow the spec's `SCREAMING_SNAKE` spelling; where the spec
//! and the C++ SDK (`proxy_wasm_common.h`, `proxy_wasm_enums.h`) name a value differently,
//! the variant is named after the C++ SDK and `name()` returns the spec's spelling.
//! Enums the spec does not define (`Filter*Status`, `GrpcStatus`) use the C++ SDK's values
//! in `SCREAMING_SNAKE` form.
//!
//! The enums a later ABI version (or a host extension, as Higress's buffer type 9) may
//! extend are `#[non_exhaustive]`: [`Status`], [`BufferType`], [`MapType`], [`MetricType`],
//! [`StreamType`] and the `Filter*Status` enums. A `match` on one outside this crate needs
//! a wildcard arm. [`LogLevel`], [`PeerType`], [`Action`] and [`GrpcStatus`] are closed sets
//! and stay exhaustive.

use core::fmt;
use core::str::FromStr;

use crate::UnknownValue;

/// Defines one ABI enum with its conversions, `ALL` and `name()`.
macro_rules! abi_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $repr:ident, $as_fn:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $value:literal => $abi:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                $variant = $value,
            )+
        }

        impl $name {
            /// Every value of this enum, in declaration (numeric) order.
            pub const ALL: &[Self] = &[$(Self::$variant,)+];

            /// The integer this value has on the ABI.
            pub const fn $as_fn(self) -> $repr {
                self as $repr
            }

            /// The ABI spelling of this value, e.g. `"NOT_FOUND"`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $abi,)+
                }
            }
        }

        impl TryFrom<$repr> for $name {
            type Error = UnknownValue;

            fn try_from(value: $repr) -> Result<Self, UnknownValue> {
                match value {
                    $($value => Ok(Self::$variant),)+
                    _ => Err(UnknownValue {
                        kind: stringify!($name),
                        value: i64::from(value),
                    }),
                }
            }
        }

        impl From<$name> for $repr {
            fn from(value: $name) -> $repr {
                value.$as_fn()
            }
        }
    };
}

abi_enum! {
    /// `proxy_status_t` (C++ `WasmResult`), the result of every hostcall (ABI reference §2.1).
    ///
    /// Values 5, 9 and 11 are not in the spec but exist in the C++ SDK; the Rust SDK traps on
    /// most statuses it does not expect (ABI reference §11.20).
    #[non_exhaustive]
    pub enum Status: u32, as_u32 {
        /// Success.
        Ok = 0 => "OK",
        /// The requested item does not exist.
        NotFound = 1 => "NOT_FOUND",
        /// An argument is invalid (a bad enum value, a context that does not fit the call...).
        BadArgument = 2 => "BAD_ARGUMENT",
        /// A value could not be serialized.
        SerializationFailure = 3 => "SERIALIZATION_FAILURE",
        /// Input could not be parsed.
        ParseFailure = 4 => "PARSE_FAILURE",
        /// A bad expression (C++ SDK only).
        BadExpression = 5 => "BAD_EXPRESSION",
        /// A guest pointer/length pair lies outside guest memory, or the guest allocator failed.
        InvalidMemoryAccess = 6 => "INVALID_MEMORY_ACCESS",
        /// The item (e.g. a shared queue) is empty.
        Empty = 7 => "EMPTY",
        /// A compare-and-swap on shared data lost the race.
        CasMismatch = 8 => "CAS_MISMATCH",
        /// A result mismatch (C++ SDK only).
        ResultMismatch = 9 => "RESULT_MISMATCH",
        /// An internal host failure.
        InternalFailure = 10 => "INTERNAL_FAILURE",
        /// The connection broke (C++ SDK only; Envoy's status code after a failed HTTP call).
        BrokenConnection = 11 => "BROKEN_CONNECTION",
        /// The host does not implement this call or this variant of it.
        Unimplemented = 12 => "UNIMPLEMENTED",
    }
}

impl Status {
    /// Whether this is [`Status::Ok`].
    pub const fn is_ok(self) -> bool {
        matches!(self, Self::Ok)
    }
}

abi_enum! {
    /// `proxy_log_level_t`: the level of `proxy_log` and `proxy_get_log_level`.
    ///
    /// Ordered from the most verbose ([`LogLevel::Trace`]) to the most severe. `Display`
    /// writes the lower-case name (`"warn"`), which `FromStr` reads back.
    #[derive(PartialOrd, Ord)]
    pub enum LogLevel: u32, as_u32 {
        /// Trace.
        Trace = 0 => "TRACE",
        /// Debug.
        Debug = 1 => "DEBUG",
        /// Info.
        Info = 2 => "INFO",
        /// Warning.
        Warn = 3 => "WARN",
        /// Error.
        Error = 4 => "ERROR",
        /// Critical (the C++ SDK's `Max`).
        Critical = 5 => "CRITICAL",
    }
}

impl LogLevel {
    /// The lower-case name used by `Display` and configuration files, e.g. `"warn"`.
    pub const fn lower_name(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.lower_name())
    }
}

/// Error for a string that names no [`LogLevel`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a log level (expected trace, debug, info, warn, warning, error or critical)")]
pub struct ParseLogLevelError(pub String);

impl FromStr for LogLevel {
    type Err = ParseLogLevelError;

    /// Reads `trace`, `debug`, `info`, `warn`/`warning`, `error` or `critical`, ignoring
    /// ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const NAMES: &[(&str, LogLevel)] = &[
            ("trace", LogLevel::Trace),
            ("debug", LogLevel::Debug),
            ("info", LogLevel::Info),
            ("warn", LogLevel::Warn),
            ("warning", LogLevel::Warn),
            ("error", LogLevel::Error),
            ("critical", LogLevel::Critical),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|&(_, level)| level)
            .ok_or_else(|| ParseLogLevelError(s.to_owned()))
    }
}

abi_enum! {
    /// `proxy_buffer_type_t`: which buffer `proxy_get_buffer_bytes` and friends address.
    #[non_exhaustive]
    pub enum BufferType: u32, as_u32 {
        /// The HTTP request body.
        HttpRequestBody = 0 => "HTTP_REQUEST_BODY",
        /// The HTTP response body.
        HttpResponseBody = 1 => "HTTP_RESPONSE_BODY",
        /// Data from the downstream connection (L4).
        DownstreamData = 2 => "DOWNSTREAM_DATA",
        /// Data from the upstream connection (L4).
        UpstreamData = 3 => "UPSTREAM_DATA",
        /// The body of an HTTP callout's response.
        HttpCallResponseBody = 4 => "HTTP_CALL_RESPONSE_BODY",
        /// A received gRPC message (spec `GRPC_CALL_MESSAGE`).
        GrpcReceiveBuffer = 5 => "GRPC_CALL_MESSAGE",
        /// The VM configuration (0.2.0+).
        VmConfiguration = 6 => "VM_CONFIGURATION",
        /// The plugin configuration (0.2.0+).
        PluginConfiguration = 7 => "PLUGIN_CONFIGURATION",
        /// The arguments of a foreign function call (spec `FOREIGN_FUNCTION_ARGUMENTS`).
        CallData = 8 => "FOREIGN_FUNCTION_ARGUMENTS",
        /// The reply of a Redis call (Higress 0.2.100 `BufferTypeRedisCallResponse`).
        RedisCallResponse = 9 => "REDIS_CALL_RESPONSE",
    }
}

abi_enum! {
    /// `proxy_map_type_t`: which header/trailer/metadata map a map hostcall addresses.
    #[non_exhaustive]
    pub enum MapType: u32, as_u32 {
        /// HTTP request headers.
        HttpRequestHeaders = 0 => "HTTP_REQUEST_HEADERS",
        /// HTTP request trailers.
        HttpRequestTrailers = 1 => "HTTP_REQUEST_TRAILERS",
        /// HTTP response headers.
        HttpResponseHeaders = 2 => "HTTP_RESPONSE_HEADERS",
        /// HTTP response trailers.
        HttpResponseTrailers = 3 => "HTTP_RESPONSE_TRAILERS",
        /// Initial metadata of a gRPC callout (spec `GRPC_CALL_INITIAL_METADATA`).
        GrpcReceiveInitialMetadata = 4 => "GRPC_CALL_INITIAL_METADATA",
        /// Trailing metadata of a gRPC callout (spec `GRPC_CALL_TRAILING_METADATA`).
        GrpcReceiveTrailingMetadata = 5 => "GRPC_CALL_TRAILING_METADATA",
        /// Headers of an HTTP callout's response.
        HttpCallResponseHeaders = 6 => "HTTP_CALL_RESPONSE_HEADERS",
        /// Trailers of an HTTP callout's response.
        HttpCallResponseTrailers = 7 => "HTTP_CALL_RESPONSE_TRAILERS",
    }
}

abi_enum! {
    /// `proxy_metric_type_t`: the kind of a metric defined with `proxy_define_metric`.
    #[non_exhaustive]
    pub enum MetricType: u32, as_u32 {
        /// A monotonically increasing counter.
        Counter = 0 => "COUNTER",
        /// A gauge.
        Gauge = 1 => "GAUGE",
        /// A histogram.
        Histogram = 2 => "HISTOGRAM",
    }
}

abi_enum! {
    /// `proxy_peer_type_t` (C++ `CloseType`): which side closed a connection.
    pub enum PeerType: u32, as_u32 {
        /// Unknown.
        Unknown = 0 => "UNKNOWN",
        /// This side (the proxy).
        Local = 1 => "LOCAL",
        /// The peer.
        Remote = 2 => "REMOTE",
    }
}

abi_enum! {
    /// `proxy_stream_type_t` (0.2.0+): the argument of `proxy_continue_stream` and
    /// `proxy_close_stream`.
    #[non_exhaustive]
    pub enum StreamType: u32, as_u32 {
        /// The HTTP request.
        HttpRequest = 0 => "HTTP_REQUEST",
        /// The HTTP response.
        HttpResponse = 1 => "HTTP_RESPONSE",
        /// The downstream connection (L4).
        Downstream = 2 => "DOWNSTREAM",
        /// The upstream connection (L4).
        Upstream = 3 => "UPSTREAM",
    }
}

abi_enum! {
    /// `proxy_action_t`: what the spec says HTTP and L4 callbacks return.
    ///
    /// C++-SDK guests return the wider `Filter*Status` ranges instead (ABI reference §11.1).
    pub enum Action: u32, as_u32 {
        /// Continue processing.
        Continue = 0 => "CONTINUE",
        /// Pause processing.
        Pause = 1 => "PAUSE",
    }
}

abi_enum! {
    /// C++ SDK `FilterStatus`: the return value of the L4 callbacks.
    #[non_exhaustive]
    pub enum FilterStatus: u32, as_u32 {
        /// Continue.
        Continue = 0 => "CONTINUE",
        /// Stop iteration.
        StopIteration = 1 => "STOP_ITERATION",
    }
}

abi_enum! {
    /// C++ SDK `FilterHeadersStatus`: the return value of the header callbacks.
    #[non_exhaustive]
    pub enum FilterHeadersStatus: u32, as_u32 {
        /// Continue.
        Continue = 0 => "CONTINUE",
        /// Stop iteration (the spec's PAUSE).
        StopIteration = 1 => "STOP_ITERATION",
        /// Continue and end the stream.
        ContinueAndEndStream = 2 => "CONTINUE_AND_END_STREAM",
        /// Stop all iteration and buffer.
        StopAllIterationAndBuffer = 3 => "STOP_ALL_ITERATION_AND_BUFFER",
        /// Stop all iteration and apply the watermark.
        StopAllIterationAndWatermark = 4 => "STOP_ALL_ITERATION_AND_WATERMARK",
    }
}

abi_enum! {
    /// C++ SDK `FilterDataStatus`: the return value of the body callbacks.
    #[non_exhaustive]
    pub enum FilterDataStatus: u32, as_u32 {
        /// Continue.
        Continue = 0 => "CONTINUE",
        /// Stop iteration and buffer (the spec's PAUSE).
        StopIterationAndBuffer = 1 => "STOP_ITERATION_AND_BUFFER",
        /// Stop iteration and apply the watermark.
        StopIterationAndWatermark = 2 => "STOP_ITERATION_AND_WATERMARK",
        /// Stop iteration without buffering.
        StopIterationNoBuffer = 3 => "STOP_ITERATION_NO_BUFFER",
    }
}

abi_enum! {
    /// C++ SDK `FilterTrailersStatus`: the return value of the trailer callbacks.
    #[non_exhaustive]
    pub enum FilterTrailersStatus: u32, as_u32 {
        /// Continue.
        Continue = 0 => "CONTINUE",
        /// Stop iteration (the spec's PAUSE).
        StopIteration = 1 => "STOP_ITERATION",
    }
}

abi_enum! {
    /// C++ SDK `GrpcStatus`: gRPC status codes, plus `InvalidCode = -1`.
    ///
    /// Names follow gRPC's canonical spelling (`"CANCELLED"` for [`GrpcStatus::Canceled`]).
    pub enum GrpcStatus: i32, as_i32 {
        /// OK.
        Ok = 0 => "OK",
        /// Cancelled.
        Canceled = 1 => "CANCELLED",
        /// Unknown error.
        Unknown = 2 => "UNKNOWN",
        /// Invalid argument.
        InvalidArgument = 3 => "INVALID_ARGUMENT",
        /// Deadline exceeded.
        DeadlineExceeded = 4 => "DEADLINE_EXCEEDED",
        /// Not found.
        NotFound = 5 => "NOT_FOUND",
        /// Already exists.
        AlreadyExists = 6 => "ALREADY_EXISTS",
        /// Permission denied.
        PermissionDenied = 7 => "PERMISSION_DENIED",
        /// Resource exhausted.
        ResourceExhausted = 8 => "RESOURCE_EXHAUSTED",
        /// Failed precondition.
        FailedPrecondition = 9 => "FAILED_PRECONDITION",
        /// Aborted.
        Aborted = 10 => "ABORTED",
        /// Out of range.
        OutOfRange = 11 => "OUT_OF_RANGE",
        /// Unimplemented.
        Unimplemented = 12 => "UNIMPLEMENTED",
        /// Internal error.
        Internal = 13 => "INTERNAL",
        /// Unavailable.
        Unavailable = 14 => "UNAVAILABLE",
        /// Data loss.
        DataLoss = 15 => "DATA_LOSS",
        /// Unauthenticated.
        Unauthenticated = 16 => "UNAUTHENTICATED",
        /// Not a valid gRPC code (C++ SDK `InvalidCode`).
        InvalidCode = -1 => "INVALID_CODE",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Checks one `u32` enum: round trips, distinct names, and rejection of the first value
    /// past the largest one and of `u32::MAX`.
    macro_rules! check_u32_enum {
        ($ty:ty) => {{
            let all: &[$ty] = <$ty>::ALL;
            assert!(!all.is_empty());
            let mut names = HashSet::new();
            let mut values = HashSet::new();
            for &v in all {
                let n = v.as_u32();
                assert_eq!(<$ty>::try_from(n), Ok(v), "{v:?} round trip");
                assert_eq!(u32::from(v), n);
                assert!(names.insert(v.name()), "duplicate name {}", v.name());
                assert!(values.insert(n), "duplicate value {n}");
                assert!(
                    v.name()
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b == b'_'),
                    "{} is not SCREAMING_SNAKE",
                    v.name()
                );
            }
            let max = all.iter().map(|v| v.as_u32()).max().unwrap_or(0);
            for bad in [max + 1, max + 100, u32::MAX] {
                let err = <$ty>::try_from(bad).expect_err("out of range value accepted");
                assert_eq!(err.value, i64::from(bad));
                assert_eq!(err.kind, stringify!($ty));
            }
            // Values are contiguous from 0, as in the ABI.
            assert_eq!(values.len() as u32, max + 1);
        }};
    }

    #[test]
    fn u32_enums_round_trip_and_reject_unknown_values() {
        check_u32_enum!(Status);
        check_u32_enum!(LogLevel);
        check_u32_enum!(BufferType);
        check_u32_enum!(MapType);
        check_u32_enum!(MetricType);
        check_u32_enum!(PeerType);
        check_u32_enum!(StreamType);
        check_u32_enum!(Action);
        check_u32_enum!(FilterStatus);
        check_u32_enum!(FilterHeadersStatus);
        check_u32_enum!(FilterDataStatus);
        check_u32_enum!(FilterTrailersStatus);
    }

    #[test]
    fn enum_sizes_match_the_abi() {
        assert_eq!(Status::ALL.len(), 13);
        assert_eq!(LogLevel::ALL.len(), 6);
        assert_eq!(BufferType::ALL.len(), 10);
        assert_eq!(MapType::ALL.len(), 8);
        assert_eq!(MetricType::ALL.len(), 3);
        assert_eq!(PeerType::ALL.len(), 3);
        assert_eq!(StreamType::ALL.len(), 4);
        assert_eq!(FilterHeadersStatus::ALL.len(), 5);
        assert_eq!(FilterDataStatus::ALL.len(), 4);
        assert_eq!(GrpcStatus::ALL.len(), 18);
    }

    #[test]
    fn spot_check_values_and_spellings() {
        assert_eq!(Status::InvalidMemoryAccess.as_u32(), 6);
        assert_eq!(Status::Unimplemented.name(), "UNIMPLEMENTED");
        assert_eq!(Status::try_from(8), Ok(Status::CasMismatch));
        assert_eq!(MapType::HttpRequestHeaders.name(), "HTTP_REQUEST_HEADERS");
        assert_eq!(BufferType::try_from(7), Ok(BufferType::PluginConfiguration));
        assert_eq!(
            FilterHeadersStatus::try_from(4),
            Ok(FilterHeadersStatus::StopAllIterationAndWatermark)
        );
        assert!(Status::Ok.is_ok());
        assert!(!Status::NotFound.is_ok());
    }

    #[test]
    fn grpc_status_round_trips_and_rejects_unknown_values() {
        let mut names = HashSet::new();
        for &s in GrpcStatus::ALL {
            assert_eq!(GrpcStatus::try_from(s.as_i32()), Ok(s));
            assert_eq!(i32::from(s), s.as_i32());
            assert!(names.insert(s.name()));
        }
        assert_eq!(GrpcStatus::try_from(-1), Ok(GrpcStatus::InvalidCode));
        assert_eq!(GrpcStatus::try_from(16), Ok(GrpcStatus::Unauthenticated));
        for bad in [17, -2, i32::MIN, i32::MAX] {
            let err = GrpcStatus::try_from(bad).expect_err("out of range value accepted");
            assert_eq!(
                err,
                UnknownValue {
                    kind: "GrpcStatus",
                    value: i64::from(bad)
                }
            );
        }
    }

    #[test]
    fn unknown_value_message() {
        let err = Status::try_from(13).expect_err("13 is not a status");
        assert_eq!(err.to_string(), "13 is not a valid Status");
    }

    #[test]
    fn log_level_parses_and_displays() {
        for &level in LogLevel::ALL {
            let shown = level.to_string();
            assert_eq!(shown.parse::<LogLevel>(), Ok(level));
            assert_eq!(shown.to_ascii_uppercase().parse::<LogLevel>(), Ok(level));
            assert_eq!(level.name().parse::<LogLevel>(), Ok(level));
        }
        assert_eq!("Warning".parse::<LogLevel>(), Ok(LogLevel::Warn));
        assert_eq!("WARN".parse::<LogLevel>(), Ok(LogLevel::Warn));
        for bad in ["", "off", "warnings", "inf", " info"] {
            assert_eq!(
                bad.parse::<LogLevel>(),
                Err(ParseLogLevelError(bad.to_owned()))
            );
        }
        assert!(LogLevel::Trace < LogLevel::Critical);
    }
}
