//! [`Engine`]: the wasmtime engine and its configuration. One engine serves
//! many plugins; compiled modules share it.
//!
//! With [`EngineConfig::epoch_interruption`] (the default) the engine runs
//! one epoch ticker thread ([`crate::epoch`]), stopped when the last clone
//! of the engine is dropped. Per-plugin limits are in [`crate::Limits`].

use std::sync::Arc;
use std::time::Duration;

use crate::epoch::EpochTicker;
use crate::error::LoadError;

/// Engine settings. Each has a documented default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Largest wasm stack a guest may use, in bytes. Default:
    /// [`EngineConfig::DEFAULT_MAX_WASM_STACK`].
    pub max_wasm_stack: usize,
    /// Ceiling on the linear memory of every VM of this engine, in bytes;
    /// each plugin sets its own cap below it with
    /// [`Limits::memory_bytes`](crate::Limits::memory_bytes). Default:
    /// [`EngineConfig::DEFAULT_MAX_MEMORY_BYTES`].
    pub max_memory_bytes: usize,
    /// Use Cranelift's speed optimisations. Default true.
    pub optimize: bool,
    /// Compile guests with wasmtime epoch checks and run the epoch ticker,
    /// so that [`Limits::callback_timeout`](crate::Limits::callback_timeout)
    /// can stop a callback. Default true. Turning it off saves the checks'
    /// cost (see `benches/lifecycle.rs`) but then plugins must set
    /// `callback_timeout` and `startup_timeout` to `None`.
    pub epoch_interruption: bool,
    /// How often the ticker advances the epoch. A callback is stopped within
    /// its timeout plus one period. Default:
    /// [`EngineConfig::DEFAULT_EPOCH_PERIOD`].
    pub epoch_period: Duration,
    /// Compile guests with fuel metering, so that
    /// [`Limits::fuel_per_callback`](crate::Limits::fuel_per_callback) can
    /// stop a callback deterministically. Default false (it slows guests
    /// down); meant for `vessel test`.
    pub consume_fuel: bool,
}

impl EngineConfig {
    /// 1 MiB of wasm stack.
    pub const DEFAULT_MAX_WASM_STACK: usize = 1 << 20;
    /// 1 GiB, cpp-host's `PROXY_WASM_HOST_MAX_WASM_MEMORY_SIZE_BYTES`.
    pub const DEFAULT_MAX_MEMORY_BYTES: usize = 1 << 30;
    /// 10 ms between epoch ticks.
    pub const DEFAULT_EPOCH_PERIOD: Duration = Duration::from_millis(10);
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_wasm_stack: Self::DEFAULT_MAX_WASM_STACK,
            max_memory_bytes: Self::DEFAULT_MAX_MEMORY_BYTES,
            optimize: true,
            epoch_interruption: true,
            epoch_period: Self::DEFAULT_EPOCH_PERIOD,
            consume_fuel: false,
        }
    }
}

/// A wasmtime engine configured for proxy-wasm. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: wasmtime::Engine,
    pub(crate) config: Arc<EngineConfig>,
    /// The epoch ticker, shared by every clone; `None` without epochs.
    ticker: Option<Arc<EpochTicker>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish()
    }
}

impl Engine {
    /// Builds an engine.
    pub fn new(config: EngineConfig) -> Result<Self, LoadError> {
        let mut c = wasmtime::Config::new();
        c.max_wasm_stack(config.max_wasm_stack);
        c.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
        c.cranelift_opt_level(if config.optimize {
            wasmtime::OptLevel::Speed
        } else {
            wasmtime::OptLevel::None
        });
        c.epoch_interruption(config.epoch_interruption);
        c.consume_fuel(config.consume_fuel);
        let inner = wasmtime::Engine::new(&c).map_err(|e| LoadError::Engine(e.to_string()))?;
        let ticker = if config.epoch_interruption {
            if config.epoch_period.is_zero() {
                return Err(LoadError::Engine(
                    "EngineConfig::epoch_period must not be zero".to_owned(),
                ));
            }
            let ticker = EpochTicker::start(&inner, config.epoch_period).map_err(|e| {
                LoadError::Engine(format!("cannot start the epoch ticker thread: {e}"))
            })?;
            Some(Arc::new(ticker))
        } else {
            None
        };
        Ok(Self {
            inner,
            config: Arc::new(config),
            ticker,
        })
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Epoch ticks a callback may run for to get at least `timeout` of CPU
    /// time: the first tick may come at once, so one more than
    /// `timeout / period`, rounded up. The callback is stopped within
    /// `timeout + period`.
    pub(crate) fn epoch_ticks(&self, timeout: Duration) -> u64 {
        let period = self.config.epoch_period.as_nanos().max(1);
        let ticks = timeout.as_nanos().div_ceil(period);
        u64::try_from(ticks)
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// True if this engine runs an epoch ticker thread.
    pub fn has_epoch_ticker(&self) -> bool {
        self.ticker.is_some()
    }

    /// The underlying wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }
}

impl Default for Engine {
    /// An engine with [`EngineConfig::default`].
    ///
    /// # Panics
    /// If wasmtime cannot build an engine for this platform.
    fn default() -> Self {
        Self::new(EngineConfig::default()).expect("wasmtime supports this platform")
    }
}
