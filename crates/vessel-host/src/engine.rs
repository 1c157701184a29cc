//! [`Engine`]: the wasmtime engine and its configuration. One engine serves
//! many plugins; compiled modules share it.
//!
//! With [`EngineConfig::epoch_interruption`] (the default) the engine runs
//! one epoch ticker thread ([`crate::epoch`]), stopped when the last clone
//! of the engine is dropped. Per-plugin limits are in [`crate::Limits`].
//!
//! Start-up speed (see `docs/operations.md`, "Module cache"): by default the engine uses
//! wasmtime's pooling instance allocator and copy-on-write memory images, so
//! a new [`Vm`](crate::Vm) for an already-compiled plugin reuses a
//! preallocated slot and maps the module's data segments instead of copying
//! them. Compiled modules can be cached on disk ([`CacheConfig`]), which is
//! off by default in the crate.

use std::sync::Arc;
use std::time::Duration;

pub use crate::cache::CacheConfig;
use crate::epoch::EpochTicker;
use crate::error::EngineError;

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
    /// The pooling instance allocator, or `None` for wasmtime's on-demand
    /// allocator (an `mmap` per VM). Default: `Some(PoolingConfig::default())`.
    /// The pool's memory slots are [`max_memory_bytes`](Self::max_memory_bytes)
    /// large, so a per-VM memory cap must not exceed that.
    pub pooling: Option<PoolingConfig>,
    /// Initialise linear memory from a copy-on-write image of the module's
    /// data segments (wasmtime `memory_init_cow`) rather than copying them
    /// into each VM. Default true.
    pub memory_init_cow: bool,
    /// The on-disk compiled-module cache. Default: disabled.
    pub cache: CacheConfig,
    /// Tiered compilation: a module that is not in the module cache is
    /// compiled first with wasmtime's baseline compiler, Winch (fast to
    /// compile, slower code), and [`Plugin::optimized`](crate::Plugin::optimized)
    /// compiles the Cranelift build later, off the request path, and stores
    /// it in the cache. The engine then holds a second wasmtime engine
    /// (Winch, with the same stack, memory, pooling and epoch settings; its
    /// own pool of [`PoolingConfig::max_vms`] slots). Ignored (plain
    /// Cranelift, logged) with [`consume_fuel`](Self::consume_fuel), which
    /// Winch does not support, or where wasmtime cannot build a Winch
    /// engine. A module Winch refuses (a feature it lacks: tail calls,
    /// exceptions, GC, relaxed SIMD) is compiled with Cranelift at once.
    /// Default false: a library embedder must drive the background compile;
    /// `vessel run` turns it on (`docs/operations.md`, "Tiered compilation").
    pub tiered: bool,
}

/// Which compiler built a [`Plugin`](crate::Plugin)'s code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Winch, wasmtime's baseline compiler: compiled in a fraction of
    /// Cranelift's time, runs slower. Only with [`EngineConfig::tiered`].
    Baseline,
    /// Cranelift, the optimizing compiler (or a module cache hit).
    Optimized,
}

impl Tier {
    /// `"baseline"` or `"optimized"` (admin, metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Optimized => "optimized",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings of wasmtime's pooling instance allocator: a fixed number of VM
/// slots (memory, table and instance) reserved when the engine is built and
/// reused by every [`Vm`](crate::Vm) of every plugin on the engine.
///
/// Reservation is virtual address space, not resident memory: each memory
/// slot reserves wasmtime's default 4 GiB plus guard pages (or
/// [`EngineConfig::max_memory_bytes`] if larger), so the default 1000 slots
/// take about 4 TiB of address space per engine. Lower
/// [`max_vms`](Self::max_vms) when the address space is limited
/// (`ulimit -v`), or set [`EngineConfig::pooling`] to `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolingConfig {
    /// How many VMs may be alive at once on this engine. One more fails
    /// [`Vm::new`](crate::Vm::new) with [`VmError::Instantiate`](crate::VmError::Instantiate)
    /// and [`InstantiateError::PoolFull`](crate::InstantiateError::PoolFull).
    /// Default: [`PoolingConfig::DEFAULT_MAX_VMS`].
    pub max_vms: u32,
    /// Largest table a module may define, in elements. Default:
    /// [`PoolingConfig::DEFAULT_TABLE_ELEMENTS`], the same cap the store
    /// limits apply.
    pub table_elements: usize,
}

impl PoolingConfig {
    /// 1000 VMs, wasmtime's default pool size on 64-bit hosts.
    pub const DEFAULT_MAX_VMS: u32 = 1000;
    /// 100 000 table elements.
    pub const DEFAULT_TABLE_ELEMENTS: usize = 100_000;
    /// Tables per module (the store limits allow 4).
    const MAX_TABLES_PER_MODULE: u32 = 4;
}

impl Default for PoolingConfig {
    fn default() -> Self {
        Self {
            max_vms: Self::DEFAULT_MAX_VMS,
            table_elements: Self::DEFAULT_TABLE_ELEMENTS,
        }
    }
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
            pooling: Some(PoolingConfig::default()),
            memory_init_cow: true,
            cache: CacheConfig::default(),
            tiered: false,
        }
    }
}

/// A wasmtime engine configured for proxy-wasm. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: wasmtime::Engine,
    /// The Winch engine of a tiered engine (`EngineConfig::tiered`).
    pub(crate) baseline: Option<wasmtime::Engine>,
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
    /// Builds an engine. [`EngineConfig::default`] is the usual choice:
    ///
    /// ```no_run
    /// use vessel_host::{Engine, EngineConfig};
    /// # fn main() -> Result<(), vessel_host::EngineError> {
    /// let engine = Engine::new(EngineConfig::default())?;
    /// # let _ = engine; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`EngineError::Pool`] if the pooling allocator
    /// ([`EngineConfig::pooling`]) cannot reserve its slots, for example
    /// under `ulimit -v`; [`EngineError::ZeroEpochPeriod`] and
    /// [`EngineError::EpochTicker`] for the epoch ticker;
    /// [`EngineError::Wasmtime`] if wasmtime refuses the rest of the
    /// configuration or the platform.
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        if config.epoch_interruption && config.epoch_period.is_zero() {
            return Err(EngineError::ZeroEpochPeriod);
        }
        let mut c = wasmtime::Config::new();
        c.max_wasm_stack(config.max_wasm_stack);
        c.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
        c.epoch_interruption(config.epoch_interruption);
        c.consume_fuel(config.consume_fuel);
        c.memory_init_cow(config.memory_init_cow);
        let mut winch = c.clone();
        c.cranelift_opt_level(if config.optimize {
            wasmtime::OptLevel::Speed
        } else {
            wasmtime::OptLevel::None
        });
        let inner = build_engine(c, &config)?;
        let baseline = if !config.tiered {
            None
        } else if config.consume_fuel {
            log::info!("tiered compilation is off: Winch does not support fuel metering");
            None
        } else {
            winch.strategy(wasmtime::Strategy::Winch);
            match build_engine(winch, &config) {
                Ok(engine) => Some(engine),
                Err(e) => {
                    log::warn!("tiered compilation is off: no Winch engine: {e}");
                    None
                }
            }
        };
        let ticker = if config.epoch_interruption {
            let engines: Vec<&wasmtime::Engine> =
                std::iter::once(&inner).chain(baseline.as_ref()).collect();
            let ticker = EpochTicker::start(&engines, config.epoch_period)
                .map_err(|e| EngineError::EpochTicker(Arc::new(e)))?;
            Some(Arc::new(ticker))
        } else {
            None
        };
        Ok(Self {
            inner,
            baseline,
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

    /// The underlying wasmtime engine (Cranelift).
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }

    /// True if this engine compiles new modules with Winch first
    /// ([`EngineConfig::tiered`], and Winch was available).
    pub fn is_tiered(&self) -> bool {
        self.baseline.is_some()
    }

    /// The Winch engine of a tiered engine.
    pub fn baseline_wasmtime(&self) -> Option<&wasmtime::Engine> {
        self.baseline.as_ref()
    }
}

/// Builds a wasmtime engine from `c` and the pooling settings of `config`.
fn build_engine(
    mut c: wasmtime::Config,
    config: &EngineConfig,
) -> Result<wasmtime::Engine, EngineError> {
    match &config.pooling {
        None => wasmtime::Engine::new(&c).map_err(|e| EngineError::Wasmtime(e.into())),
        Some(pool) => {
            let on_demand = c.clone();
            c.allocation_strategy(pooling_strategy(pool, config.max_memory_bytes));
            wasmtime::Engine::new(&c).map_err(|e| {
                // Name the pool only if the same settings build without it.
                if wasmtime::Engine::new(&on_demand).is_ok() {
                    EngineError::Pool {
                        max_vms: pool.max_vms,
                        source: e.into(),
                    }
                } else {
                    EngineError::Wasmtime(e.into())
                }
            })
        }
    }
}

/// wasmtime's pooling strategy for `pool`, with memory slots of `max_memory_bytes`.
fn pooling_strategy(
    pool: &PoolingConfig,
    max_memory_bytes: usize,
) -> wasmtime::InstanceAllocationStrategy {
    let mut p = wasmtime::PoolingAllocationConfig::new();
    p.total_core_instances(pool.max_vms)
        .total_memories(pool.max_vms)
        .total_tables(pool.max_vms)
        .max_memories_per_module(1)
        .max_tables_per_module(PoolingConfig::MAX_TABLES_PER_MODULE)
        .table_elements(pool.table_elements)
        .max_memory_size(max_memory_bytes);
    wasmtime::InstanceAllocationStrategy::Pooling(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_builds() {
        let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
        assert!(engine.has_epoch_ticker());
        assert_eq!(engine.config(), &EngineConfig::default());
    }

    #[test]
    fn a_pool_too_large_for_the_address_space_is_named() {
        // 2^20 slots of at least 4 GiB each: 4 PiB, past any 64-bit
        // process's address space.
        let config = EngineConfig {
            pooling: Some(PoolingConfig {
                max_vms: 1 << 20,
                ..PoolingConfig::default()
            }),
            epoch_interruption: false,
            ..EngineConfig::default()
        };
        let err = Engine::new(config).expect_err("4 PiB of slots cannot be reserved");
        assert!(
            matches!(err, EngineError::Pool { max_vms, .. } if max_vms == 1 << 20),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("PoolingConfig::max_vms"), "{message}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn a_zero_epoch_period_is_refused() {
        let config = EngineConfig {
            epoch_period: Duration::ZERO,
            ..EngineConfig::default()
        };
        assert!(matches!(
            Engine::new(config),
            Err(EngineError::ZeroEpochPeriod)
        ));
    }
}
