//! # vessel-host
//!
//! A sans-IO host for the [proxy-wasm ABI] on wasmtime. It runs filters
//! built with the proxy-wasm Rust, C++, Go and AssemblyScript SDKs,
//! unmodified, inside any Rust program.
//!
//! The core does no I/O and reads no clock of its own: time comes from an
//! injected [`Clock`], and everything asynchronous (callouts, ticks, queue
//! notifications, resuming a paused stream) leaves as an [`Effect`] that the
//! embedder carries out and answers with an event.
//!
//! ```no_run
//! use vessel_host::{Engine, EngineConfig, HeaderMap, HostEnv, Plugin, PluginConfig, Vm};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Reserves the pooling allocator's address space: fails (never panics)
//! // under a tight `ulimit -v`; see `EngineConfig::pooling`.
//! let engine = Engine::new(EngineConfig::default())?;
//! let wasm = std::fs::read("filter.wasm")?;
//! let plugin = Plugin::load(&engine, &wasm, PluginConfig::named("my_filter"))?;
//! let mut vm = Vm::new(&plugin, &HostEnv::default())?;
//!
//! let stream = vm.create_http_context()?;
//! let headers = HeaderMap::from_pairs([(":method", "GET"), (":path", "/")]);
//! let status = vm.on_request_headers(stream, headers, true)?;
//! for effect in vm.drain_effects() {
//!     println!("{effect:?}");
//! }
//! vm.finish_http_stream(stream)?;
//! # let _ = status;
//! # Ok(())
//! # }
//! ```
//!
//! Every VM runs under its plugin's [`Limits`] (memory, CPU time per
//! callback, contexts, log volume, callouts, and everything a guest can
//! make the host hold: header maps, bodies, properties, queued effects,
//! metrics); a guest that hits one gets an error status its SDKs accept or
//! fails its own VM with a typed [`LimitExceeded`], and the others carry on.
//! `docs/operations.md` lists every default and knob.
//!
//! # Cargo features
//!
//! * `wat` (off by default): [`Plugin::load`] also reads WebAssembly text.
//!   Without it, text is refused with [`LoadError::TextNotSupported`].
//!
//! [proxy-wasm ABI]: https://github.com/proxy-wasm/spec

// `deny`, not `forbid`, only so that `cache` can allow `unsafe` for
// wasmtime's `Module::deserialize` (see its module docs). No other module
// may allow it.
#![deny(unsafe_code)]

pub mod cache;
pub mod effects;
pub mod embedder;
pub mod engine;
pub mod env;
pub mod epoch;
pub mod error;
pub mod headers;
pub mod hidden;
pub mod hostcalls;
pub mod ids;
pub mod limits;
mod memory;
pub mod plugin;
pub mod policy;
pub mod properties;
pub mod shared;
mod state;
pub mod stream;
pub mod tcp;
pub mod vm;
pub mod wasi;

pub use cache::{CacheConfig, CacheError, CacheOutcome};
pub use effects::{
    Effect, GrpcCallRequest, HttpCallRequest, LocalResponse, RedisCallRequest, RedisOptions,
    http_to_grpc_status, is_grpc_request,
};
pub use embedder::{
    Clock, FixedClock, ForeignFunction, LogFacade, LogRecord, LogSink, OsRandom, PropertyProvider,
    PropertyScope, Random, SystemClock,
};
pub use engine::{Engine, EngineConfig, PoolingConfig, Tier};
pub use env::{HostEnv, HostEnvBuilder};
pub use error::{
    EngineError, InstantiateError, LoadError, TextError, TrapError, TrapKind, UnenforceableLimit,
    VmError, WasmtimeError,
};
pub use headers::{
    CONNECTION_SPECIFIC_RESPONSE_HEADERS, HeaderMap, HeaderMapFull, HeaderMapLimits,
};
pub use hidden::{Hidden, HiddenError};
pub use ids::{CalloutKind, ContextId, QueueToken, Token, VmInstanceId};
pub use limits::{LimitExceeded, LimitSettingError, LimitValue, Limits};
pub use plugin::{Plugin, PluginConfig};
pub use policy::{FailurePolicy, ReloadBackoff, ReloadDecision, ReloadGate};
pub use properties::{FilterState, PropertyMap, PropertySource, PropertyValue};
pub use state::IdHasher;
pub use stream::{
    Action, DEFAULT_BUFFER_LIMIT, Direction, FilterVms, HttpStream, ResetReason, StreamConfig,
    StreamSignal,
};
pub use tcp::{CloseReason, TcpAction, TcpStream};
pub use vessel_abi;
pub use vessel_abi::{
    AbiVersion, BufferType, FilterDataStatus, FilterHeadersStatus, FilterStatus,
    FilterTrailersStatus, LogLevel, MapType, MetricType, PeerType, Status, StreamType,
};
pub use vm::{HttpCallOutcome, HttpCallResponse, RedisCallOutcome, Vm};
