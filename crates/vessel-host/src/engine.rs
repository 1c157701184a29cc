//! [`Engine`]: the wasmtime engine and its configuration. One engine serves
//! many plugins; compiled modules share it.

use std::sync::Arc;

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

impl Default for Engine {
    /// An engine with [`EngineConfig::default`].
    ///
    /// # Panics
    /// If wasmtime cannot build an engine for this platform.
    fn default() -> Self {
        Self::new(EngineConfig::default()).expect("wasmtime supports this platform")
    }
}
