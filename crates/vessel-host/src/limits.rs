//! Per-VM resource limits ([`Limits`], on
//! [`PluginConfig::limits`](crate::PluginConfig::limits)) and the typed
//! report of a limit that was hit ([`LimitExceeded`]). ABI reference §6.6
//! ("Resource limits"); `docs/operations.md` lists every default and knob.
//!
//! | Limit | Knob | Default | When exceeded |
//! |---|---|---|---|
//! | linear memory per VM | [`Limits::memory_bytes`] | [`Limits::DEFAULT_MEMORY_BYTES`] (1 GiB) | `memory.grow` returns -1; if the guest then traps, the VM fails with [`LimitExceeded::Memory`] |
//! | CPU time per callback | [`Limits::callback_timeout`] | [`Limits::DEFAULT_CALLBACK_TIMEOUT`] (100 ms) | the callback is interrupted within the timeout plus one [`EngineConfig::epoch_period`](crate::EngineConfig::epoch_period); the VM fails with [`LimitExceeded::CallbackTimeout`] |
//! | CPU time of start-up (`_initialize`, `_start`, `main`) | [`Limits::startup_timeout`] | [`Limits::DEFAULT_STARTUP_TIMEOUT`] (1 s) | as above; Go runtimes need more than a callback's budget to start |
//! | fuel per callback (deterministic, for `vessel test`) | [`Limits::fuel_per_callback`] | none | the VM fails with [`LimitExceeded::Fuel`] |
//! | wasm stack | [`EngineConfig::max_wasm_stack`](crate::EngineConfig::max_wasm_stack) | 1 MiB | the VM fails with [`LimitExceeded::WasmStack`] |
//! | live contexts per VM | [`Limits::max_contexts`] | [`Limits::DEFAULT_MAX_CONTEXTS`] | creating a stream fails with [`VmError::TooManyContexts`](crate::VmError::TooManyContexts); the VM carries on |
//! | guest log bytes per callback | [`Limits::max_log_bytes_per_callback`] | [`Limits::DEFAULT_MAX_LOG_BYTES_PER_CALLBACK`] (1 MiB) | lines past the budget are **dropped whole** (`proxy_log` still returns OK) and counted ([`Vm::dropped_log_lines`](crate::Vm::dropped_log_lines)) |
//! | callouts in flight per VM | [`Limits::max_callouts_in_flight`] | [`Limits::DEFAULT_MAX_CALLOUTS_IN_FLIGHT`] | `proxy_http_call` / `proxy_grpc_call` / `proxy_grpc_stream` / `proxy_redis_call` return INTERNAL_FAILURE |
//!
//! Shared data and queues are process-wide, so their caps live on the
//! [`HostEnv`](crate::HostEnv): [`SharedDataLimits`](crate::shared::data::SharedDataLimits)
//! and [`SharedQueues::DEFAULT_MAX_LEN`](crate::shared::queues::SharedQueues::DEFAULT_MAX_LEN).

use std::fmt;
use std::time::Duration;

use wasmtime::ResourceLimiter;

use crate::state::HostState;

/// Per-VM resource limits of a plugin. Every field has a named default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory of one VM, in bytes. A `memory.grow` past it
    /// returns -1, as the wasm spec allows; a guest that then traps fails
    /// with [`LimitExceeded::Memory`]. It is also capped by
    /// [`EngineConfig::max_memory_bytes`](crate::EngineConfig::max_memory_bytes).
    /// Default: [`Limits::DEFAULT_MEMORY_BYTES`].
    pub memory_bytes: usize,
    /// Wall-clock CPU budget of one guest callback (wasmtime epoch
    /// interruption). `None` = no limit. Needs an engine with
    /// [`EngineConfig::epoch_interruption`](crate::EngineConfig::epoch_interruption).
    /// Default: [`Limits::DEFAULT_CALLBACK_TIMEOUT`].
    pub callback_timeout: Option<Duration>,
    /// The same budget for the module's start-up functions (`_initialize`,
    /// `_start`, `main`, `__main_void`, a wasm start function), which run
    /// once per VM and, for Go, start a whole runtime. `None` = no limit.
    /// Default: [`Limits::DEFAULT_STARTUP_TIMEOUT`].
    pub startup_timeout: Option<Duration>,
    /// Fuel (roughly, wasm instructions) one callback may burn. Deterministic,
    /// unlike [`Limits::callback_timeout`]: meant for `vessel test`, where a
    /// limit must hit at the same place on every machine. Needs an engine
    /// with [`EngineConfig::consume_fuel`](crate::EngineConfig::consume_fuel).
    /// Default: `None`.
    pub fuel_per_callback: Option<u64>,
    /// Largest number of live contexts (root included) in one VM. Default:
    /// [`Limits::DEFAULT_MAX_CONTEXTS`].
    pub max_contexts: usize,
    /// Guest log bytes (`proxy_log`, WASI stdout/stderr) passed on during
    /// one callback. Default: [`Limits::DEFAULT_MAX_LOG_BYTES_PER_CALLBACK`].
    pub max_log_bytes_per_callback: usize,
    /// Largest number of HTTP and gRPC callouts in flight in one VM.
    /// Default: [`Limits::DEFAULT_MAX_CALLOUTS_IN_FLIGHT`].
    pub max_callouts_in_flight: usize,
}

impl Limits {
    /// 1 GiB, cpp-host's `PROXY_WASM_HOST_MAX_WASM_MEMORY_SIZE_BYTES`.
    pub const DEFAULT_MEMORY_BYTES: usize = 1 << 30;
    /// 100 ms per callback.
    pub const DEFAULT_CALLBACK_TIMEOUT: Duration = Duration::from_millis(100);
    /// 1 s for start-up.
    pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(1);
    /// 100,000 live contexts per VM (a context per stream in flight).
    pub const DEFAULT_MAX_CONTEXTS: usize = 100_000;
    /// 1 MiB of guest log lines per callback.
    pub const DEFAULT_MAX_LOG_BYTES_PER_CALLBACK: usize = 1 << 20;
    /// 10,000 callouts in flight per VM.
    pub const DEFAULT_MAX_CALLOUTS_IN_FLIGHT: usize = 10_000;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            callback_timeout: Some(Self::DEFAULT_CALLBACK_TIMEOUT),
            startup_timeout: Some(Self::DEFAULT_STARTUP_TIMEOUT),
            fuel_per_callback: None,
            max_contexts: Self::DEFAULT_MAX_CONTEXTS,
            max_log_bytes_per_callback: Self::DEFAULT_MAX_LOG_BYTES_PER_CALLBACK,
            max_callouts_in_flight: Self::DEFAULT_MAX_CALLOUTS_IN_FLIGHT,
        }
    }
}

/// A limit a guest hit, which failed its VM.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitExceeded {
    /// The guest asked for more linear memory than [`Limits::memory_bytes`].
    Memory {
        /// The limit in bytes.
        limit_bytes: usize,
        /// The memory size the guest asked for.
        requested_bytes: usize,
    },
    /// A callback ran past [`Limits::callback_timeout`].
    CallbackTimeout {
        /// The timeout.
        timeout: Duration,
    },
    /// A start-up function ran past [`Limits::startup_timeout`].
    StartupTimeout {
        /// The timeout.
        timeout: Duration,
    },
    /// A callback burnt all of [`Limits::fuel_per_callback`].
    Fuel {
        /// The fuel each callback gets.
        fuel: u64,
    },
    /// The guest overflowed its wasm stack
    /// ([`EngineConfig::max_wasm_stack`](crate::EngineConfig::max_wasm_stack)).
    WasmStack {
        /// The stack size in bytes.
        max_bytes: usize,
    },
}

impl LimitExceeded {
    /// The knob that sets this limit, as named in the crate API.
    pub fn knob(&self) -> &'static str {
        match self {
            Self::Memory { .. } => "Limits::memory_bytes",
            Self::CallbackTimeout { .. } => "Limits::callback_timeout",
            Self::StartupTimeout { .. } => "Limits::startup_timeout",
            Self::Fuel { .. } => "Limits::fuel_per_callback",
            Self::WasmStack { .. } => "EngineConfig::max_wasm_stack",
        }
    }
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory {
                limit_bytes,
                requested_bytes,
            } => write!(
                f,
                "memory limit exceeded: the guest asked for {requested_bytes} bytes of linear memory, the limit is {limit_bytes} bytes ({})",
                self.knob()
            ),
            Self::CallbackTimeout { timeout } => write!(
                f,
                "CPU limit exceeded: the callback ran longer than its timeout of {timeout:?} ({})",
                self.knob()
            ),
            Self::StartupTimeout { timeout } => write!(
                f,
                "CPU limit exceeded: start-up ran longer than its timeout of {timeout:?} ({})",
                self.knob()
            ),
            Self::Fuel { fuel } => write!(
                f,
                "fuel limit exceeded: the callback burnt all of its {fuel} fuel ({})",
                self.knob()
            ),
            Self::WasmStack { max_bytes } => write!(
                f,
                "wasm stack limit exceeded: the guest overflowed its {max_bytes}-byte stack ({})",
                self.knob()
            ),
        }
    }
}

impl std::error::Error for LimitExceeded {}

/// The store's resource limits: one instance, one memory, a memory cap.
/// [`HostState`] is the store's `ResourceLimiter`: it asks this and records
/// a refused grow in the callback's [`Frame`](crate::state::Frame), so that
/// a following trap can name the limit.
#[derive(Debug)]
pub(crate) struct VmLimiter {
    pub(crate) memory_bytes: usize,
}

/// Largest number of table elements a VM may have (cpp-host: 10,000; Go
/// and AssemblyScript modules stay well below; generous for C++).
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl VmLimiter {
    pub(crate) fn new(memory_bytes: usize) -> Self {
        Self { memory_bytes }
    }

    /// Whether a memory may grow to `desired` bytes; `Err((limit,
    /// desired))` past the cap.
    pub(crate) fn memory_growing(
        &self,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, (usize, usize)> {
        if desired > self.memory_bytes {
            return Err((self.memory_bytes, desired));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    /// Whether a table may grow to `desired` elements.
    pub(crate) fn table_growing(&self, desired: usize, maximum: Option<usize>) -> bool {
        desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max)
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(match self.limiter.memory_growing(desired, maximum) {
            Ok(allowed) => allowed,
            Err(refused) => {
                self.frame.memory_refused = Some(refused);
                false
            }
        })
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.limiter.table_growing(desired, maximum))
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_refuses_growth_past_the_cap() {
        let l = VmLimiter::new(2 << 16);
        assert_eq!(l.memory_growing(2 << 16, None), Ok(true));
        assert_eq!(l.memory_growing(3 << 16, None), Err((2 << 16, 3 << 16)));
        // The module's own maximum still applies below the cap.
        let l = VmLimiter::new(1 << 30);
        assert_eq!(l.memory_growing(3 << 16, Some(2 << 16)), Ok(false));
        assert!(!l.table_growing(MAX_TABLE_ELEMENTS + 1, None));
        assert!(l.table_growing(10, None));
    }

    #[test]
    fn messages_name_the_knob() {
        let e = LimitExceeded::CallbackTimeout {
            timeout: Duration::from_millis(100),
        };
        assert!(e.to_string().contains("Limits::callback_timeout"));
        assert!(e.to_string().contains("100ms"));
        let e = LimitExceeded::Memory {
            limit_bytes: 10,
            requested_bytes: 20,
        };
        assert!(e.to_string().contains("Limits::memory_bytes"));
    }
}
