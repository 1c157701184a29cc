//! Per-VM resource limits ([`Limits`], on
//! [`PluginConfig::limits`](crate::PluginConfig::limits)) and the typed
//! report of a limit that was hit ([`LimitExceeded`]). ABI reference §6.6
//! ("Resource limits"); `docs/operations.md` lists every default and knob.
//!
//! | Limit | Knob | Default | When exceeded |
//! |---|---|---|---|
//! | linear memory per VM | [`Limits::memory_bytes`] | [`Limits::DEFAULT_MEMORY_BYTES`] (1 GiB) | `memory.grow` returns -1; if the guest then traps, the VM fails with [`LimitExceeded::Memory`] |
//! | CPU time per callback | [`Limits::callback_timeout`] | [`Limits::DEFAULT_CALLBACK_TIMEOUT`] (100 ms) | the callback is interrupted within the timeout plus one [`EngineConfig::epoch_period`](crate::EngineConfig::epoch_period); the VM fails with [`LimitExceeded::CallbackTimeout`] |
//! | CPU time of each start-up call (`_initialize`, `_start`, `main`, `proxy_on_vm_start`, `proxy_on_configure`) | [`Limits::startup_timeout`] | [`Limits::DEFAULT_STARTUP_TIMEOUT`] (10 s) | as above, with [`LimitExceeded::StartupTimeout`]; Go runtimes need more than a callback's budget to start, and stock plugins to configure |
//! | fuel per callback (deterministic, for `vessel test`) | [`Limits::fuel_per_callback`] | none | the VM fails with [`LimitExceeded::Fuel`] |
//! | wasm stack | [`EngineConfig::max_wasm_stack`](crate::EngineConfig::max_wasm_stack) | 1 MiB | the VM fails with [`LimitExceeded::WasmStack`] |
//! | live contexts per VM | [`Limits::max_contexts`] | [`Limits::DEFAULT_MAX_CONTEXTS`] | creating a stream fails with [`VmError::TooManyContexts`](crate::VmError::TooManyContexts); the VM carries on |
//! | guest log bytes per callback | [`Limits::max_log_bytes_per_callback`] | [`Limits::DEFAULT_MAX_LOG_BYTES_PER_CALLBACK`] (1 MiB) | lines past the budget are **dropped whole** (`proxy_log` still returns OK) and counted ([`Vm::dropped_log_lines`](crate::Vm::dropped_log_lines)) |
//! | callouts in flight per VM | [`Limits::max_callouts_in_flight`] | [`Limits::DEFAULT_MAX_CALLOUTS_IN_FLIGHT`] | `proxy_http_call` / `proxy_grpc_call` / `proxy_grpc_stream` / `proxy_redis_call` return INTERNAL_FAILURE |
//! | key and value bytes of one header map a guest edits or builds | [`Limits::max_header_map_bytes`] | [`Limits::DEFAULT_MAX_HEADER_MAP_BYTES`] (8 MiB) | the VM fails with [`LimitExceeded::HeaderMapBytes`] (add, replace, set pairs, local reply headers); a callout whose headers, trailers or metadata are over it is refused with its call's error status |
//! | entries of one header map | [`Limits::max_header_map_entries`] | [`Limits::DEFAULT_MAX_HEADER_MAP_ENTRIES`] (10,000) | the same, with [`LimitExceeded::HeaderMapEntries`] |
//! | body bytes one filter holds per stream direction | [`Limits::max_body_bytes`] | [`Limits::DEFAULT_MAX_BODY_BYTES`] (64 MiB) | `proxy_set_buffer_bytes` past it fails the VM ([`LimitExceeded::BodyBytes`]); body data the embedder delivers past it is refused with [`VmError::StreamLimit`](crate::VmError::StreamLimit), and the VM carries on |
//! | bytes of properties a guest sets on one stream | [`Limits::max_property_bytes`] | [`Limits::DEFAULT_MAX_PROPERTY_BYTES`] (8 MiB) | the VM fails with [`LimitExceeded::PropertyBytes`] |
//! | bytes queued for the embedder and held by callouts in flight | [`Limits::max_effect_bytes`] | [`Limits::DEFAULT_MAX_EFFECT_BYTES`] (256 MiB) | a callout or gRPC message is refused with its call's error status; a hostcall whose SDKs accept only OK fails the VM with [`LimitExceeded::EffectBytes`] |
//! | metrics a VM defines | [`Limits::max_metrics`] | [`Limits::DEFAULT_MAX_METRICS`] (10,000) | the VM fails with [`LimitExceeded::Metrics`] |
//! | bytes of one metric name | [`Limits::max_metric_name_bytes`] | [`Limits::DEFAULT_MAX_METRIC_NAME_BYTES`] (16 KiB) | the VM fails with [`LimitExceeded::MetricName`] |
//!
//! A guest's hostcall past a limit either returns an error status (only
//! where the SDKs accept one for that call: ABI reference §11.20) and the
//! host logs the [`LimitExceeded`] once per callback on the `log` facade
//! (target `vessel::limits`), or fails the VM with
//! [`TrapKind::Limit`](crate::TrapKind::Limit). It is never a panic of the
//! host and never unbounded host memory.
//!
//! Shared data and queues are process-wide, so their caps live on the
//! [`HostEnv`](crate::HostEnv): [`SharedDataLimits`](crate::shared::data::SharedDataLimits)
//! and [`SharedQueueLimits`](crate::shared::queues::SharedQueueLimits)
//! (items and bytes per queue, queues per vm_id, name length).

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
    /// The same budget for the start-up functions, each call on its own:
    /// the module's (`_initialize`, `_start`, `main`, `__main_void`, a wasm
    /// start function), which for Go start a whole runtime, and the
    /// plugin's `proxy_on_vm_start` and `proxy_on_configure`, where a stock
    /// plugin may parse a large configuration or load a dictionary. They
    /// run once per VM, never per request. `None` = no limit.
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
    /// Largest sum of key and value bytes (Envoy's `byteSize()`) a guest
    /// may grow one header, trailer or metadata map to: a stream's maps
    /// (add, replace, set pairs) and the maps it builds for callouts and
    /// local replies. A map the embedder handed over larger than this may
    /// shrink but not grow. Default: [`Limits::DEFAULT_MAX_HEADER_MAP_BYTES`].
    pub max_header_map_bytes: usize,
    /// Largest number of entries in such a map. Default:
    /// [`Limits::DEFAULT_MAX_HEADER_MAP_ENTRIES`].
    pub max_header_map_entries: usize,
    /// Largest request or response body one filter holds for one stream:
    /// what it buffers (body callbacks, [`Vm::append_body`](crate::Vm::append_body))
    /// and what it writes with `proxy_set_buffer_bytes`. The embedder's own
    /// buffer limit (Envoy's 413/500) usually stops a stream first. A TCP
    /// stream's `DOWNSTREAM_DATA` / `UPSTREAM_DATA` buffers count the same
    /// way ([`TcpStream`](crate::TcpStream) closes a connection over it).
    /// Default: [`Limits::DEFAULT_MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// Largest sum of path and value bytes of the properties a guest sets
    /// on one stream (`proxy_set_property`). Default:
    /// [`Limits::DEFAULT_MAX_PROPERTY_BYTES`].
    pub max_property_bytes: usize,
    /// Largest number of bytes a VM holds in the host for its embedder:
    /// the effects it queued that the embedder has not taken yet
    /// ([`Vm::drain_effects`](crate::Vm::drain_effects)): local replies,
    /// gRPC messages, stream controls), plus the requests of its callouts
    /// in flight (HTTP, gRPC, Redis), which count until the callout ends.
    /// Default: [`Limits::DEFAULT_MAX_EFFECT_BYTES`].
    pub max_effect_bytes: usize,
    /// Largest number of metrics one VM defines. Default:
    /// [`Limits::DEFAULT_MAX_METRICS`].
    pub max_metrics: usize,
    /// Largest metric name, in bytes. Default:
    /// [`Limits::DEFAULT_MAX_METRIC_NAME_BYTES`].
    pub max_metric_name_bytes: usize,
}

impl Limits {
    /// 1 GiB, cpp-host's `PROXY_WASM_HOST_MAX_WASM_MEMORY_SIZE_BYTES`.
    pub const DEFAULT_MEMORY_BYTES: usize = 1 << 30;
    /// 100 ms per callback.
    pub const DEFAULT_CALLBACK_TIMEOUT: Duration = Duration::from_millis(100);
    /// 10 s for each start-up call. The budget is wall-clock time: a stock
    /// plugin that loads a dictionary in `on_configure` in half a second
    /// (Higress `ai-data-masking`) takes over a second on a loaded 2-core
    /// machine, and Envoy gives start-up no deadline at all; 10 s still
    /// stops a guest that loops there.
    pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
    /// 100,000 live contexts per VM (a context per stream in flight).
    pub const DEFAULT_MAX_CONTEXTS: usize = 100_000;
    /// 1 MiB of guest log lines per callback.
    pub const DEFAULT_MAX_LOG_BYTES_PER_CALLBACK: usize = 1 << 20;
    /// 10,000 callouts in flight per VM.
    pub const DEFAULT_MAX_CALLOUTS_IN_FLIGHT: usize = 10_000;
    /// 8 MiB: Envoy's largest `max_request_headers_kb` (8192 KiB). No
    /// peer of an Envoy accepts a larger map, so no filter needs one.
    pub const DEFAULT_MAX_HEADER_MAP_BYTES: usize = 8 << 20;
    /// 10,000 entries: 100 times Envoy's default `max_headers_count`.
    pub const DEFAULT_MAX_HEADER_MAP_ENTRIES: usize = 10_000;
    /// 64 MiB: twice the largest request body the big LLM APIs accept
    /// (about 32 MB), and far above Envoy's default HTTP/1 buffer limit
    /// (1 MiB).
    pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;
    /// 8 MiB of guest-set properties per stream.
    pub const DEFAULT_MAX_PROPERTY_BYTES: usize = 8 << 20;
    /// 256 MiB: room for a few callouts that each carry a whole buffered
    /// body ([`Limits::DEFAULT_MAX_BODY_BYTES`]).
    pub const DEFAULT_MAX_EFFECT_BYTES: usize = 256 << 20;
    /// 10,000 metrics per VM.
    pub const DEFAULT_MAX_METRICS: usize = 10_000;
    /// 16 KiB per metric name (Istio-style names that carry their tags
    /// stay below 1 KiB).
    pub const DEFAULT_MAX_METRIC_NAME_BYTES: usize = 16 << 10;

    /// The header-map limits a guest's edits keep to.
    pub fn header_map(&self) -> crate::HeaderMapLimits {
        crate::HeaderMapLimits {
            max_bytes: self.max_header_map_bytes,
            max_entries: self.max_header_map_entries,
        }
    }
}

/// A value for one named limit, as a configuration file gives it
/// ([`Limits::set`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitValue {
    /// A count or a number of bytes.
    Count(u64),
    /// A time budget.
    Duration(Duration),
}

/// Why [`Limits::set`] refused a value. The message names no key: the
/// caller knows where the value came from and adds its own path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitSettingError {
    /// No limit has this name ([`Limits::KEYS`] lists them).
    #[error("unknown limit `{0}`; the limits are {keys}", keys = Limits::KEYS.join(", "))]
    UnknownKey(String),
    /// The limit takes the other kind of value.
    #[error("expected {0}")]
    WrongType(&'static str),
    /// The value is out of the limit's range.
    #[error("{0}")]
    OutOfRange(String),
}

impl Limits {
    /// The names [`Limits::set`] knows: the field names of [`Limits`].
    pub const KEYS: &'static [&'static str] = &[
        "memory_bytes",
        "callback_timeout",
        "startup_timeout",
        "fuel_per_callback",
        "max_contexts",
        "max_log_bytes_per_callback",
        "max_callouts_in_flight",
        "max_header_map_bytes",
        "max_header_map_entries",
        "max_body_bytes",
        "max_property_bytes",
        "max_effect_bytes",
        "max_metrics",
        "max_metric_name_bytes",
    ];

    /// Sets the limit named `key` (a field name, [`Limits::KEYS`]) from a
    /// configuration value, checked against its range. This is the one
    /// place the ranges live: every configuration format vessel reads
    /// (`vessel run`'s `vessel_limits`, a scenario's `limits`) goes through
    /// it.
    ///
    /// * `memory_bytes`: a count from one wasm page (64 KiB) to
    ///   `max_memory_bytes` (the engine's ceiling,
    ///   [`EngineConfig::max_memory_bytes`](crate::EngineConfig::max_memory_bytes));
    /// * `callback_timeout`, `startup_timeout`: a duration above zero;
    /// * `fuel_per_callback`: a count above zero;
    /// * `max_contexts`: a count of at least 2 (the root context and one
    ///   stream);
    /// * `max_log_bytes_per_callback`, `max_callouts_in_flight`: any count;
    /// * the `max_*` limits of what a guest makes the host hold: a count of
    ///   at least 1.
    pub fn set(
        &mut self,
        key: &str,
        value: LimitValue,
        max_memory_bytes: usize,
    ) -> Result<(), LimitSettingError> {
        const WASM_PAGE: u64 = 64 * 1024;
        let count = |value: LimitValue| match value {
            LimitValue::Count(n) => usize::try_from(n)
                .map_err(|_| LimitSettingError::OutOfRange("too large for this platform".into())),
            LimitValue::Duration(_) => Err(LimitSettingError::WrongType("an integer")),
        };
        let at_least = |value: LimitValue, min: usize, what: &str| {
            let n = count(value)?;
            if n < min {
                return Err(LimitSettingError::OutOfRange(format!(
                    "must be at least {min}{what}"
                )));
            }
            Ok(n)
        };
        match key {
            "memory_bytes" => {
                let bytes = count(value)?;
                let max = max_memory_bytes as u64;
                if !(WASM_PAGE..=max).contains(&(bytes as u64)) {
                    return Err(LimitSettingError::OutOfRange(format!(
                        "{bytes} bytes is out of range: the memory cap must be at least one \
                         wasm page ({WASM_PAGE}) and at most the engine's ceiling ({max})"
                    )));
                }
                self.memory_bytes = bytes;
            }
            "callback_timeout" | "startup_timeout" => {
                let LimitValue::Duration(d) = value else {
                    return Err(LimitSettingError::WrongType("a duration"));
                };
                if d.is_zero() {
                    return Err(LimitSettingError::OutOfRange(
                        "must be greater than 0s".into(),
                    ));
                }
                if key == "callback_timeout" {
                    self.callback_timeout = Some(d);
                } else {
                    self.startup_timeout = Some(d);
                }
            }
            "fuel_per_callback" => {
                let LimitValue::Count(fuel) = value else {
                    return Err(LimitSettingError::WrongType("an integer"));
                };
                if fuel == 0 {
                    return Err(LimitSettingError::OutOfRange(
                        "must be greater than 0".into(),
                    ));
                }
                self.fuel_per_callback = Some(fuel);
            }
            "max_contexts" => {
                self.max_contexts = at_least(value, 2, " (the root context and one stream)")?;
            }
            "max_log_bytes_per_callback" => self.max_log_bytes_per_callback = count(value)?,
            "max_callouts_in_flight" => self.max_callouts_in_flight = count(value)?,
            "max_header_map_bytes" => self.max_header_map_bytes = at_least(value, 1, "")?,
            "max_header_map_entries" => self.max_header_map_entries = at_least(value, 1, "")?,
            "max_body_bytes" => self.max_body_bytes = at_least(value, 1, "")?,
            "max_property_bytes" => self.max_property_bytes = at_least(value, 1, "")?,
            "max_effect_bytes" => self.max_effect_bytes = at_least(value, 1, "")?,
            "max_metrics" => self.max_metrics = at_least(value, 1, "")?,
            "max_metric_name_bytes" => self.max_metric_name_bytes = at_least(value, 1, "")?,
            other => return Err(LimitSettingError::UnknownKey(other.to_owned())),
        }
        Ok(())
    }
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
            max_header_map_bytes: Self::DEFAULT_MAX_HEADER_MAP_BYTES,
            max_header_map_entries: Self::DEFAULT_MAX_HEADER_MAP_ENTRIES,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            max_property_bytes: Self::DEFAULT_MAX_PROPERTY_BYTES,
            max_effect_bytes: Self::DEFAULT_MAX_EFFECT_BYTES,
            max_metrics: Self::DEFAULT_MAX_METRICS,
            max_metric_name_bytes: Self::DEFAULT_MAX_METRIC_NAME_BYTES,
        }
    }
}

/// A limit a guest hit. Most fail its VM ([`TrapKind::Limit`](crate::TrapKind::Limit));
/// [`LimitExceeded::BodyBytes`] from data the embedder delivers fails only
/// that call ([`VmError::StreamLimit`](crate::VmError::StreamLimit)).
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
    /// A header map would hold more key and value bytes than
    /// [`Limits::max_header_map_bytes`].
    HeaderMapBytes {
        /// Which map (`request headers`, `http_call headers`, ...).
        map: &'static str,
        /// The limit in bytes.
        limit_bytes: usize,
        /// The size the edit would have given the map.
        requested_bytes: usize,
    },
    /// A header map would hold more entries than
    /// [`Limits::max_header_map_entries`].
    HeaderMapEntries {
        /// Which map.
        map: &'static str,
        /// The limit.
        limit: usize,
        /// The entry count the edit would have given the map.
        requested: usize,
    },
    /// A body would grow past [`Limits::max_body_bytes`].
    BodyBytes {
        /// Which body (`request body` or `response body`).
        body: &'static str,
        /// The limit in bytes.
        limit_bytes: usize,
        /// The size the body would have had.
        requested_bytes: usize,
    },
    /// The properties set on a stream would pass
    /// [`Limits::max_property_bytes`].
    PropertyBytes {
        /// The limit in bytes.
        limit_bytes: usize,
        /// The size they would have had.
        requested_bytes: usize,
    },
    /// What the VM holds for its embedder would pass
    /// [`Limits::max_effect_bytes`].
    EffectBytes {
        /// The limit in bytes.
        limit_bytes: usize,
        /// What the VM would have held.
        requested_bytes: usize,
    },
    /// The VM would define more than [`Limits::max_metrics`] metrics.
    Metrics {
        /// The limit.
        limit: usize,
    },
    /// A metric name is longer than [`Limits::max_metric_name_bytes`].
    MetricName {
        /// The limit in bytes.
        limit_bytes: usize,
        /// The name's length.
        requested_bytes: usize,
    },
    /// The vm_id would register more shared queues than
    /// [`SharedQueueLimits::max_queues_per_vm_id`](crate::shared::queues::SharedQueueLimits::max_queues_per_vm_id).
    SharedQueues {
        /// The limit.
        limit: usize,
    },
    /// A shared-queue name is longer than
    /// [`SharedQueueLimits::max_name_bytes`](crate::shared::queues::SharedQueueLimits::max_name_bytes).
    SharedQueueName {
        /// The limit in bytes.
        limit_bytes: usize,
        /// The name's length.
        requested_bytes: usize,
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
            Self::HeaderMapBytes { .. } => "Limits::max_header_map_bytes",
            Self::HeaderMapEntries { .. } => "Limits::max_header_map_entries",
            Self::BodyBytes { .. } => "Limits::max_body_bytes",
            Self::PropertyBytes { .. } => "Limits::max_property_bytes",
            Self::EffectBytes { .. } => "Limits::max_effect_bytes",
            Self::Metrics { .. } => "Limits::max_metrics",
            Self::MetricName { .. } => "Limits::max_metric_name_bytes",
            Self::SharedQueues { .. } => "SharedQueueLimits::max_queues_per_vm_id",
            Self::SharedQueueName { .. } => "SharedQueueLimits::max_name_bytes",
        }
    }

    /// The limit a header-map edit of `map` ran into.
    pub(crate) fn header_map(map: &'static str, full: crate::HeaderMapFull) -> Self {
        match full {
            crate::HeaderMapFull::Bytes { limit, requested } => Self::HeaderMapBytes {
                map,
                limit_bytes: limit,
                requested_bytes: requested,
            },
            crate::HeaderMapFull::Entries { limit, requested } => Self::HeaderMapEntries {
                map,
                limit,
                requested,
            },
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
            Self::HeaderMapBytes {
                map,
                limit_bytes,
                requested_bytes,
            } => write!(
                f,
                "header map limit exceeded: the {map} would hold {requested_bytes} bytes of keys and values, the limit is {limit_bytes} bytes ({})",
                self.knob()
            ),
            Self::HeaderMapEntries {
                map,
                limit,
                requested,
            } => write!(
                f,
                "header map limit exceeded: the {map} would hold {requested} entries, the limit is {limit} ({})",
                self.knob()
            ),
            Self::BodyBytes {
                body,
                limit_bytes,
                requested_bytes,
            } => write!(
                f,
                "body limit exceeded: the {body} would hold {requested_bytes} bytes, the limit is {limit_bytes} bytes ({})",
                self.knob()
            ),
            Self::PropertyBytes {
                limit_bytes,
                requested_bytes,
            } => write!(
                f,
                "property limit exceeded: the stream's properties would hold {requested_bytes} bytes, the limit is {limit_bytes} bytes ({})",
                self.knob()
            ),
            Self::EffectBytes {
                limit_bytes,
                requested_bytes,
            } => write!(
                f,
                "effect limit exceeded: the VM would hold {requested_bytes} bytes of queued effects and callouts in flight, the limit is {limit_bytes} bytes ({})",
                self.knob()
            ),
            Self::Metrics { limit } => write!(
                f,
                "metric limit exceeded: the VM would define more than {limit} metrics ({})",
                self.knob()
            ),
            Self::MetricName {
                limit_bytes,
                requested_bytes,
            } => write!(
                f,
                "metric limit exceeded: a metric name of {requested_bytes} bytes is longer than {limit_bytes} bytes ({})",
                self.knob()
            ),
            Self::SharedQueues { limit } => write!(
                f,
                "shared queue limit exceeded: the vm_id would have more than {limit} queues ({})",
                self.knob()
            ),
            Self::SharedQueueName {
                limit_bytes,
                requested_bytes,
            } => write!(
                f,
                "shared queue limit exceeded: a queue name of {requested_bytes} bytes is longer than {limit_bytes} bytes ({})",
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

    const CEILING: usize = 1 << 30;

    #[test]
    fn every_key_sets_its_field_and_checks_its_range() {
        let mut l = Limits::default();
        for key in Limits::KEYS {
            let value = if key.ends_with("timeout") {
                LimitValue::Duration(Duration::from_millis(7))
            } else {
                LimitValue::Count(70_000)
            };
            l.set(key, value, CEILING)
                .unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        assert_eq!(l.memory_bytes, 70_000);
        assert_eq!(l.callback_timeout, Some(Duration::from_millis(7)));
        assert_eq!(l.startup_timeout, Some(Duration::from_millis(7)));
        assert_eq!(l.fuel_per_callback, Some(70_000));
        assert_eq!(l.max_metric_name_bytes, 70_000);
        assert_eq!(l.max_body_bytes, 70_000);
        let mut d = Limits::default();
        let zero = LimitValue::Count(0);
        for key in [
            "max_body_bytes",
            "max_metrics",
            "fuel_per_callback",
            "max_contexts",
        ] {
            assert!(
                matches!(
                    d.set(key, zero, CEILING),
                    Err(LimitSettingError::OutOfRange(_))
                ),
                "{key}"
            );
        }
        assert_eq!(d, Limits::default(), "a refused value changes nothing");
        d.set("max_log_bytes_per_callback", zero, CEILING)
            .expect("0 drops every line");
        assert!(matches!(
            d.set("memory_bytes", LimitValue::Count(65_535), CEILING),
            Err(LimitSettingError::OutOfRange(m)) if m.contains("one wasm page")
        ));
        assert!(matches!(
            d.set("memory_bytes", LimitValue::Count(CEILING as u64 + 1), CEILING),
            Err(LimitSettingError::OutOfRange(m)) if m.contains("engine's ceiling")
        ));
        assert_eq!(
            d.set("callback_timeout", LimitValue::Count(5), CEILING),
            Err(LimitSettingError::WrongType("a duration"))
        );
        assert_eq!(
            d.set(
                "callback_timeout",
                LimitValue::Duration(Duration::ZERO),
                CEILING
            ),
            Err(LimitSettingError::OutOfRange(
                "must be greater than 0s".into()
            ))
        );
        assert!(matches!(
            d.set("memory_megabytes", zero, CEILING),
            Err(LimitSettingError::UnknownKey(k)) if k == "memory_megabytes"
        ));
    }

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
        let guest_limits = [
            LimitExceeded::header_map(
                "request headers",
                crate::HeaderMapFull::Bytes {
                    limit: 1,
                    requested: 2,
                },
            ),
            LimitExceeded::header_map(
                "request headers",
                crate::HeaderMapFull::Entries {
                    limit: 1,
                    requested: 2,
                },
            ),
            LimitExceeded::BodyBytes {
                body: "request body",
                limit_bytes: 1,
                requested_bytes: 2,
            },
            LimitExceeded::PropertyBytes {
                limit_bytes: 1,
                requested_bytes: 2,
            },
            LimitExceeded::EffectBytes {
                limit_bytes: 1,
                requested_bytes: 2,
            },
            LimitExceeded::Metrics { limit: 1 },
            LimitExceeded::MetricName {
                limit_bytes: 1,
                requested_bytes: 2,
            },
            LimitExceeded::SharedQueues { limit: 1 },
            LimitExceeded::SharedQueueName {
                limit_bytes: 1,
                requested_bytes: 2,
            },
        ];
        let mut knobs = std::collections::HashSet::new();
        for e in guest_limits {
            let text = e.to_string();
            assert!(text.contains(e.knob()), "{text}");
            assert!(knobs.insert(e.knob()), "one knob per limit: {}", e.knob());
        }
        let defaults = Limits::default();
        assert_eq!(defaults.header_map().max_bytes, 8 << 20);
        assert_eq!(defaults.header_map().max_entries, 10_000);
    }
}
