//! [`Engine`]: the wasmtime engine and its configuration. One engine serves
//! many plugins; compiled modules share it.
//!
//! Start-up speed (see `docs/module-cache.md`): by default the engine uses
//! wasmtime's pooling instance allocator and copy-on-write memory images, so
//! a new [`Vm`](crate::Vm) for an already-compiled plugin reuses a
//! preallocated slot and maps the module's data segments instead of copying
//! them. Compiled modules can be cached on disk ([`CacheConfig`]), which is
//! off by default in the crate.

use std::sync::Arc;

pub use crate::cache::CacheConfig;
use crate::error::LoadError;

/// Engine settings. Each has a documented default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Largest wasm stack a guest may use, in bytes. Default:
    /// [`EngineConfig::DEFAULT_MAX_WASM_STACK`].
    pub max_wasm_stack: usize,
    /// Largest linear memory per VM, in bytes. Growing past it fails the
    /// `memory.grow` (most guests then trap). Default:
    /// [`EngineConfig::DEFAULT_MAX_MEMORY_BYTES`].
    pub max_memory_bytes: usize,
    /// Use Cranelift's speed optimisations. Default true.
    pub optimize: bool,
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
    /// [`Vm::new`](crate::Vm::new) with [`VmError::Instantiate`](crate::VmError::Instantiate).
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_wasm_stack: Self::DEFAULT_MAX_WASM_STACK,
            max_memory_bytes: Self::DEFAULT_MAX_MEMORY_BYTES,
            optimize: true,
            pooling: Some(PoolingConfig::default()),
            memory_init_cow: true,
            cache: CacheConfig::default(),
        }
    }
}

/// A wasmtime engine configured for proxy-wasm. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: wasmtime::Engine,
    pub(crate) config: Arc<EngineConfig>,
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
        c.memory_init_cow(config.memory_init_cow);
        if let Some(pool) = &config.pooling {
            c.allocation_strategy(pooling_strategy(pool, config.max_memory_bytes));
        }
        let inner = wasmtime::Engine::new(&c).map_err(|e| LoadError::Engine(e.to_string()))?;
        Ok(Self {
            inner,
            config: Arc::new(config),
        })
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The underlying wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
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

impl Default for Engine {
    /// An engine with [`EngineConfig::default`].
    ///
    /// # Panics
    /// If wasmtime cannot build an engine for this platform.
    fn default() -> Self {
        Self::new(EngineConfig::default()).expect("wasmtime supports this platform")
    }
}
