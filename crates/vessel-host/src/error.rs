//! Typed errors: building an engine ([`EngineError`]), loading a module
//! ([`LoadError`]) and running a VM ([`VmError`]).
//!
//! Every error is `Clone` (a VM hands the same failure to every later
//! call), so the errors it keeps from wasmtime and the OS are shared:
//! [`WasmtimeError`] and `Arc<std::io::Error>`. Each message names what
//! failed (the plugin, the callback, the limit or the knob) and includes its
//! cause's message; the cause itself is the error's
//! [`source`](std::error::Error::source).

use std::fmt;
use std::sync::Arc;

use vessel_abi::DetectError;

use crate::ids::{ContextId, Token};
use crate::limits::LimitExceeded;

/// An error from wasmtime, kept whole (shared, so that the errors holding it
/// stay `Clone`).
///
/// `Display` shows wasmtime's full message, every context layer included
/// (wasmtime's `{:#}`), so this error has no further
/// [`source`](std::error::Error::source): reach the typed causes through
/// [`WasmtimeError::get`] (`downcast_ref`, `root_cause`, `chain`).
#[derive(Clone)]
pub struct WasmtimeError(Arc<wasmtime::Error>);

impl WasmtimeError {
    /// The wasmtime error.
    pub fn get(&self) -> &wasmtime::Error {
        &self.0
    }
}

impl From<wasmtime::Error> for WasmtimeError {
    fn from(e: wasmtime::Error) -> Self {
        Self(Arc::new(e))
    }
}

impl fmt::Debug for WasmtimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for WasmtimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for WasmtimeError {}

/// Why an [`Engine`](crate::Engine) could not be built.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the configuration, or does not support this platform.
    #[error("cannot build the wasm engine: {0}")]
    Wasmtime(#[source] WasmtimeError),
    /// The pooling allocator could not be set up: its slots did not fit in
    /// the process's address space (`ulimit -v`), or wasmtime refused the
    /// pool's sizes. The same settings build without the pool.
    #[error(
        "cannot set up the pooling allocator for {max_vms} VMs (EngineConfig::pooling): {source}; \
         each VM slot reserves about 4 GiB of address space: lower PoolingConfig::max_vms \
         or set EngineConfig::pooling to None"
    )]
    Pool {
        /// [`PoolingConfig::max_vms`](crate::PoolingConfig::max_vms).
        max_vms: u32,
        /// wasmtime's error.
        source: WasmtimeError,
    },
    /// [`EngineConfig::epoch_period`](crate::EngineConfig::epoch_period) is zero.
    #[error("EngineConfig::epoch_period must not be zero")]
    ZeroEpochPeriod,
    /// The epoch ticker thread could not be spawned.
    #[error("cannot start the epoch ticker thread: {0}")]
    EpochTicker(#[source] Arc<std::io::Error>),
}

/// WebAssembly text that does not assemble (with the `wat` feature).
/// `Display` shows the assembler's message, with the line and column; the
/// assembler's error is the [`source`](std::error::Error::source).
#[derive(Clone)]
pub struct TextError(pub(crate) Arc<dyn std::error::Error + Send + Sync>);

impl fmt::Debug for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for TextError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A plugin limit that the engine was not built to enforce.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnenforceableLimit {
    /// [`Limits::callback_timeout`](crate::Limits::callback_timeout) or
    /// [`Limits::startup_timeout`](crate::Limits::startup_timeout) without
    /// [`EngineConfig::epoch_interruption`](crate::EngineConfig::epoch_interruption).
    #[error(
        "Limits::callback_timeout and Limits::startup_timeout need an engine \
         built with EngineConfig::epoch_interruption; set both to None or enable epochs"
    )]
    TimeoutWithoutEpochs,
    /// [`Limits::fuel_per_callback`](crate::Limits::fuel_per_callback)
    /// without [`EngineConfig::consume_fuel`](crate::EngineConfig::consume_fuel).
    #[error("Limits::fuel_per_callback needs an engine built with EngineConfig::consume_fuel")]
    FuelWithoutMetering,
}

/// Why a module could not be loaded as a plugin.
///
/// Not `PartialEq`: the wasmtime errors it keeps cannot be compared. Match
/// on the variant instead.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The ABI version marker is missing or unknown, or the bytes are not a
    /// WebAssembly module.
    #[error(transparent)]
    Abi(#[from] DetectError),
    /// The bytes are WebAssembly text that does not assemble.
    #[error("not valid WebAssembly text: {0}")]
    Text(#[source] TextError),
    /// The bytes are WebAssembly text, and this build of vessel-host has no
    /// `wat` feature to read it.
    #[error(
        "the module is WebAssembly text (WAT), which this build of vessel-host does not read: \
         load the binary (`wasm-tools parse filter.wat -o filter.wasm`) or enable the `wat` \
         feature of vessel-host"
    )]
    TextNotSupported,
    /// The bytes are not a valid module, or do not compile.
    #[error("not a valid WebAssembly module: {0}")]
    Compile(#[source] WasmtimeError),
    /// A required export is missing.
    #[error("the module does not export `{0}`, which a proxy-wasm filter must export")]
    MissingExport(&'static str),
    /// Neither allocator is exported.
    #[error(
        "the module exports neither `malloc` nor `proxy_on_memory_allocate`; the host needs one to return data to the guest"
    )]
    MissingAllocator,
    /// An exported callback has the wrong signature.
    #[error("export `{name}` has signature {found}, but the ABI expects {expected}")]
    ExportSignature {
        /// Export name.
        name: String,
        /// The signature the ABI defines.
        expected: String,
        /// The signature the module has.
        found: String,
    },
    /// The module imports a function vessel does not provide.
    #[error(
        "the module imports `{module}.{name}` with signature {signature}, which vessel does not provide"
    )]
    UnknownImport {
        /// Import module (`env`, `wasi_snapshot_preview1`, ...).
        module: String,
        /// Import name.
        name: String,
        /// The signature the module asks for.
        signature: String,
    },
    /// The module imports a known function with the wrong signature.
    #[error(
        "the module imports `{module}.{name}` with signature {found}, but vessel provides {expected}"
    )]
    ImportSignature {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
        /// The signature vessel provides.
        expected: String,
        /// The signature the module asks for.
        found: String,
    },
    /// The module imports something other than a function (memory, table, global).
    #[error(
        "the module imports `{module}.{name}` as a {kind}; only function imports are supported"
    )]
    UnsupportedImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
        /// What kind of import it is.
        kind: &'static str,
    },
    /// Linking failed for another reason.
    #[error("cannot link the module: {0}")]
    Link(#[source] WasmtimeError),
    /// The plugin's [`Limits`](crate::Limits) ask for something the engine
    /// was not built for (a callback timeout without epoch interruption,
    /// fuel without fuel metering).
    #[error("plugin `{plugin}`: {limit}")]
    UnsupportedLimit {
        /// The plugin's name.
        plugin: String,
        /// Which limit, and the knob that fixes it.
        #[source]
        limit: UnenforceableLimit,
    },
}

/// What stopped a guest.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub enum TrapKind {
    /// A wasm trap: unreachable, an out-of-bounds access, a division by
    /// zero... (a stack overflow, an interrupt or running out of fuel is a
    /// [`Limit`](Self::Limit)).
    Wasm(wasmtime::Trap),
    /// The guest called WASI `proc_exit` with this code outside start-up.
    ProcExit(i32),
    /// A hostcall refused to continue (e.g. a forbidden call from the
    /// allocator, a restricted capability); the hostcall's error. Its
    /// [`root_cause`](wasmtime::Error::root_cause) says why.
    Host(WasmtimeError),
    /// The guest hit a resource limit ([`Limits`](crate::Limits)).
    Limit(LimitExceeded),
}

/// A guest trap, with where it happened. The [`TrapKind`]'s error (the
/// wasm trap, the hostcall's error or the limit) is its
/// [`source`](std::error::Error::source).
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct TrapError {
    /// The plugin's name.
    pub plugin: String,
    /// The guest function that was running (`proxy_on_request_headers`, ...).
    pub callback: &'static str,
    /// The trap's message, with the wasm backtrace when available.
    pub message: String,
    /// What kind of trap.
    pub kind: TrapKind,
}

impl fmt::Display for TrapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin `{}`: `{}` trapped: {}",
            self.plugin, self.callback, self.message
        )
    }
}

impl std::error::Error for TrapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            TrapKind::Wasm(trap) => Some(trap),
            TrapKind::Host(e) => Some(e),
            TrapKind::Limit(limit) => Some(limit),
            TrapKind::ProcExit(_) => None,
        }
    }
}

/// Why a module could not be instantiated ([`VmError::Instantiate`]).
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum InstantiateError {
    /// The engine cannot enforce the plugin's limits (a plugin re-configured
    /// with [`Plugin::with_config`](crate::Plugin::with_config)).
    #[error(transparent)]
    Limits(#[from] UnenforceableLimit),
    /// Linking the module for the plugin's capabilities failed (a plugin
    /// re-configured with [`Plugin::with_config`](crate::Plugin::with_config)).
    #[error(transparent)]
    Link(Box<LoadError>),
    /// The module's memory is larger than
    /// [`Limits::memory_bytes`](crate::Limits::memory_bytes) allows.
    #[error("{limit}: {source}")]
    Memory {
        /// The limit and what the module asked for.
        limit: LimitExceeded,
        /// wasmtime's error.
        source: WasmtimeError,
    },
    /// Every VM slot of the engine's pooling allocator is in use
    /// ([`PoolingConfig::max_vms`](crate::PoolingConfig::max_vms)); it
    /// succeeds again once a [`Vm`](crate::Vm) is dropped.
    #[error(
        "all {max_vms} VM slots of the engine's pool are in use (PoolingConfig::max_vms): {source}"
    )]
    PoolFull {
        /// The pool's size.
        max_vms: u32,
        /// wasmtime's error.
        source: WasmtimeError,
    },
    /// wasmtime refused for another reason.
    #[error("{0}")]
    Wasmtime(#[source] WasmtimeError),
}

/// Why a VM operation failed.
///
/// Not `PartialEq`: the wasmtime errors it keeps cannot be compared. Match
/// on the variant (a failed VM returns the same `Arc<TrapError>` again:
/// compare those with [`Arc::ptr_eq`]).
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum VmError {
    /// Instantiation failed (e.g. a memory larger than the limit, a full pool).
    #[error("plugin `{plugin}`: cannot instantiate the module: {source}")]
    Instantiate {
        /// The plugin's name.
        plugin: String,
        /// Why.
        source: InstantiateError,
    },
    /// The guest trapped. The VM is failed; every later call returns this
    /// same error without touching the instance.
    #[error(transparent)]
    Trap(Arc<TrapError>),
    /// `proxy_on_vm_start` returned false.
    #[error("plugin `{plugin}`: proxy_on_vm_start returned false; the plugin is refused")]
    VmStartRefused {
        /// The plugin's name.
        plugin: String,
    },
    /// `proxy_on_configure` returned false.
    #[error(
        "plugin `{plugin}`: proxy_on_configure returned false; the plugin configuration is refused"
    )]
    ConfigureRefused {
        /// The plugin's name.
        plugin: String,
    },
    /// The embedder named a context this VM does not have.
    #[error("context {0} does not exist in this VM")]
    UnknownContext(ContextId),
    /// The embedder used a root context as a stream, or the reverse.
    #[error("context {0} is not {1}")]
    WrongContextKind(ContextId, &'static str),
    /// The VM already has [`Limits::max_contexts`](crate::Limits::max_contexts)
    /// live contexts, so no stream context was created. The VM is not failed.
    #[error(
        "plugin `{plugin}`: the VM already has {max} live contexts (Limits::max_contexts); no new stream context"
    )]
    TooManyContexts {
        /// The plugin's name.
        plugin: String,
        /// The limit.
        max: usize,
    },
    /// The embedder delivered a callout result for an unknown token.
    #[error("no callout with token {0} is in flight")]
    UnknownToken(Token),
    /// Data the embedder delivered would take one stream past a per-filter
    /// limit (the body a filter holds: [`Limits::max_body_bytes`](crate::Limits::max_body_bytes)).
    /// Nothing was appended and the guest was not called. The VM is **not**
    /// failed: only this stream is over. Envoy's answer to a buffer over
    /// its limit fits it: 413 for a request, 500 for a response.
    #[error("plugin `{plugin}`: stream {context}: {limit}")]
    StreamLimit {
        /// The plugin's name.
        plugin: String,
        /// The stream.
        context: ContextId,
        /// The limit.
        limit: LimitExceeded,
    },
}

impl VmError {
    /// The trap, if this error is one.
    pub fn trap(&self) -> Option<&TrapError> {
        match self {
            Self::Trap(t) => Some(t),
            _ => None,
        }
    }

    /// The resource limit behind this error: one that failed the VM (a
    /// [`TrapKind::Limit`] trap, or a refused memory at instantiation), or
    /// one that refused a single stream's data ([`VmError::StreamLimit`],
    /// the VM carries on).
    pub fn limit(&self) -> Option<&LimitExceeded> {
        match self {
            Self::StreamLimit { limit, .. } => Some(limit),
            Self::Trap(t) => match &t.kind {
                TrapKind::Limit(l) => Some(l),
                _ => None,
            },
            Self::Instantiate {
                source: InstantiateError::Memory { limit, .. },
                ..
            } => Some(limit),
            _ => None,
        }
    }
}
