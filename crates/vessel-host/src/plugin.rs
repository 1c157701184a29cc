//! [`Plugin`]: a compiled, checked module plus its [`PluginConfig`]
//! (ABI reference §1.1, §3, §9).
//!
//! Loading detects the ABI version from the export section, compiles the
//! module, checks the required exports (`memory`, an allocator) and the
//! signature of every known callback (the one table of callbacks, in
//! `vm/callbacks.rs`), and checks every import against what vessel provides,
//! so that a bad module fails here with an error that names the import, its
//! module and its signature.

use std::fmt;
use std::sync::Arc;

use vessel_abi::{AbiVersion, LogLevel};
use wasmtime::{ExternType, FuncType, InstancePre, Module, ValType};

use crate::cache::CacheOutcome;
use crate::engine::Engine;
use crate::error::LoadError;
use crate::hostcalls::{self, ImportTable, capabilities};
use crate::limits::Limits;
use crate::properties::PropertyMap;
use crate::state::HostState;
use crate::vm::callbacks;

/// A plugin's configuration: Envoy's `PluginConfig` and `VmConfig` fields
/// that matter to the host (ABI reference §9).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// `plugin_name`; prefixes guest logs.
    pub name: String,
    /// `plugin_root_id`: selects the guest's root context.
    pub root_id: String,
    /// `plugin_vm_id`: namespace of shared data and queues.
    pub vm_id: String,
    /// VM configuration bytes (`VM_CONFIGURATION`, `on_vm_start` size).
    pub vm_configuration: Vec<u8>,
    /// Plugin configuration bytes (`PLUGIN_CONFIGURATION`, `on_configure` size).
    pub configuration: Vec<u8>,
    /// Guest log lines below this level are dropped; `proxy_get_log_level` returns it.
    pub log_level: LogLevel,
    /// Pass `StopIteration` from header callbacks through unchanged instead of
    /// Envoy's default translation to `StopAllIterationAndWatermark`
    /// (Envoy's `allow_on_headers_stop_iteration`; ABI reference §11.1).
    pub allow_on_headers_stop_iteration: bool,
    /// WASI environment variables (`KEY=VALUE`), as granted by the config.
    pub environment: Vec<(String, String)>,
    /// Properties readable from every context of this plugin (e.g. `node.id`).
    pub properties: PropertyMap,
    /// Per-VM resource limits (memory, CPU per callback, contexts, log
    /// volume, callouts). Default: [`Limits::default`].
    pub limits: Limits,
    /// Envoy's `capability_restriction_config.allowed_capabilities`: the
    /// hostcalls, WASI functions and callbacks the plugin may use. `None`
    /// (the default) or an empty list allows everything, as in Envoy. See
    /// [`hostcalls::capabilities`] for what a name that is not allowed does.
    pub allowed_capabilities: Option<Vec<String>>,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            root_id: String::new(),
            vm_id: String::new(),
            vm_configuration: Vec::new(),
            configuration: Vec::new(),
            log_level: LogLevel::Info,
            allow_on_headers_stop_iteration: false,
            environment: Vec::new(),
            properties: PropertyMap::new(),
            limits: Limits::default(),
            allowed_capabilities: None,
        }
    }
}

impl PluginConfig {
    /// A configuration with a name and the defaults.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

/// What the VMs of a plugin share.
#[derive(Debug)]
pub(crate) struct PluginShared {
    pub(crate) config: PluginConfig,
    pub(crate) abi: AbiVersion,
}

/// A compiled plugin. Cheap to clone; every [`Vm`](crate::Vm) of the plugin
/// shares the compiled code.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) shared: Arc<PluginShared>,
    pub(crate) engine: Engine,
    pub(crate) module: Module,
    /// The module linked for this configuration's capabilities. An `Err`
    /// only if re-linking in [`Plugin::with_config`] failed; `Vm::new`
    /// reports it.
    pub(crate) pre: Result<InstancePre<HostState>, LoadError>,
    pub(crate) cache: CacheOutcome,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.shared.config.name)
            .field("abi", &self.shared.abi)
            .finish_non_exhaustive()
    }
}

/// Formats a function type as `(i32, i32) -> i32`.
pub(crate) fn signature(params: &[ValType], results: &[ValType]) -> String {
    fn list(tys: &[ValType]) -> String {
        tys.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
    match results {
        [] => format!("({}) -> ()", list(params)),
        [one] => format!("({}) -> {one}", list(params)),
        many => format!("({}) -> ({})", list(params), list(many)),
    }
}

fn func_signature(ty: &FuncType) -> String {
    let p: Vec<ValType> = ty.params().collect();
    let r: Vec<ValType> = ty.results().collect();
    signature(&p, &r)
}

fn same_types(a: impl Iterator<Item = ValType>, b: &[ValType]) -> bool {
    let a: Vec<ValType> = a.collect();
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| ValType::eq(x, y))
}

impl Plugin {
    /// Loads `wasm` (binary or, for tests, text format) as a plugin.
    pub fn load(engine: &Engine, wasm: &[u8], config: PluginConfig) -> Result<Self, LoadError> {
        let abi = vessel_abi::detect_abi_version(wasm).or_else(|e| {
            // Text format: compile first, then detect from the binary.
            if wasm.starts_with(b"\0asm") {
                Err(e)
            } else {
                match wat_to_binary(wasm) {
                    Some(bin) => vessel_abi::detect_abi_version(&bin),
                    None => Err(e),
                }
            }
        })?;
        let (module, cache) = crate::cache::load_module(engine, wasm)?;
        Self::check_exports(&module, abi)?;
        let table = hostcalls::import_table();
        Self::check_imports(&module, table)?;
        check_limits(engine, &config).map_err(|message| LoadError::UnsupportedLimit {
            plugin: config.name.clone(),
            message,
        })?;
        let pre = link(engine, &module, &config)?;
        Ok(Self {
            shared: Arc::new(PluginShared { config, abi }),
            engine: engine.clone(),
            module,
            pre: Ok(pre),
            cache,
        })
    }

    fn check_exports(module: &Module, abi: AbiVersion) -> Result<(), LoadError> {
        let mut has_memory = false;
        let mut has_alloc = false;
        for export in module.exports() {
            match export.ty() {
                ExternType::Memory(_) if export.name() == "memory" => has_memory = true,
                ExternType::Func(ty) => {
                    if let Some(spec) = callbacks::expected_export(export.name(), abi) {
                        let (p, r) = (spec.param_types(), spec.result_types());
                        if !same_types(ty.params(), &p) || !same_types(ty.results(), &r) {
                            return Err(LoadError::ExportSignature {
                                name: export.name().to_owned(),
                                expected: signature(&p, &r),
                                found: func_signature(&ty),
                            });
                        }
                        if matches!(export.name(), "malloc" | "proxy_on_memory_allocate") {
                            has_alloc = true;
                        }
                    }
                }
                _ => {}
            }
        }
        if !has_memory {
            return Err(LoadError::MissingExport("memory"));
        }
        if !has_alloc {
            return Err(LoadError::MissingAllocator);
        }
        Ok(())
    }

    fn check_imports(module: &Module, table: &ImportTable) -> Result<(), LoadError> {
        for import in module.imports() {
            let (m, n) = (import.module(), import.name());
            let ty = match import.ty() {
                ExternType::Func(ty) => ty,
                ExternType::Memory(_) => return Err(unsupported(m, n, "memory")),
                ExternType::Table(_) => return Err(unsupported(m, n, "table")),
                ExternType::Global(_) => return Err(unsupported(m, n, "global")),
                ExternType::Tag(_) => return Err(unsupported(m, n, "tag")),
            };
            match table.get(m, n) {
                None => {
                    return Err(LoadError::UnknownImport {
                        module: m.to_owned(),
                        name: n.to_owned(),
                        signature: func_signature(&ty),
                    });
                }
                Some(sig) => {
                    if !same_types(ty.params(), &sig.params)
                        || !same_types(ty.results(), &sig.results)
                    {
                        return Err(LoadError::ImportSignature {
                            module: m.to_owned(),
                            name: n.to_owned(),
                            expected: signature(&sig.params, &sig.results),
                            found: func_signature(&ty),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The plugin's configuration.
    pub fn config(&self) -> &PluginConfig {
        &self.shared.config
    }

    /// The detected ABI version.
    pub fn abi_version(&self) -> AbiVersion {
        self.shared.abi
    }

    /// The compiled module.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Whether the compiled code came from the module cache
    /// ([`EngineConfig::cache`](crate::EngineConfig::cache)).
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }

    /// The engine the plugin was compiled with.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A copy of this plugin with another configuration, sharing the
    /// compiled code. If the allowed capabilities differ, the module is
    /// linked again (cheap: no compilation). Limits the engine cannot
    /// enforce are reported by [`Vm::new`](crate::Vm::new).
    pub fn with_config(&self, config: PluginConfig) -> Self {
        let same_caps = capabilities::restriction(config.allowed_capabilities.as_ref())
            == capabilities::restriction(self.shared.config.allowed_capabilities.as_ref());
        let pre = if same_caps {
            self.pre.clone()
        } else {
            link(&self.engine, &self.module, &config)
        };
        Self {
            shared: Arc::new(PluginShared {
                config,
                abi: self.shared.abi,
            }),
            engine: self.engine.clone(),
            module: self.module.clone(),
            pre,
            cache: self.cache,
        }
    }
}

/// Checks that `engine` can enforce `config.limits`; the message names the knobs.
pub(crate) fn check_limits(engine: &Engine, config: &PluginConfig) -> Result<(), String> {
    let e = engine.config();
    let timeouts =
        config.limits.callback_timeout.is_some() || config.limits.startup_timeout.is_some();
    if timeouts && !e.epoch_interruption {
        return Err(
            "Limits::callback_timeout and Limits::startup_timeout need an engine \
             built with EngineConfig::epoch_interruption; set both to None or enable epochs"
                .to_owned(),
        );
    }
    if config.limits.fuel_per_callback.is_some() && !e.consume_fuel {
        return Err("Limits::fuel_per_callback needs an engine built with \
             EngineConfig::consume_fuel"
            .to_owned());
    }
    Ok(())
}

/// Links `module` with every hostcall, the ones `config` does not allow
/// replaced by their stubs.
fn link(
    engine: &Engine,
    module: &Module,
    config: &PluginConfig,
) -> Result<InstancePre<HostState>, LoadError> {
    let mut linker = hostcalls::linker(&engine.inner)?;
    if let Some(allowed) = capabilities::restriction(config.allowed_capabilities.as_ref()) {
        capabilities::restrict(
            &mut linker,
            &engine.inner,
            hostcalls::import_table(),
            allowed,
        )
        .map_err(|e| LoadError::Link(format!("{e:#}")))?;
    }
    linker
        .instantiate_pre(module)
        .map_err(|e| LoadError::Link(format!("{e:#}")))
}

fn unsupported(module: &str, name: &str, kind: &'static str) -> LoadError {
    LoadError::UnsupportedImport {
        module: module.to_owned(),
        name: name.to_owned(),
        kind,
    }
}

fn wat_to_binary(text: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?;
    wat::parse_str(text).ok()
}
