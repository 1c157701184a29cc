//! [`Plugin`]: a compiled, checked module plus its [`PluginConfig`]
//! (ABI reference §1.1, §3, §9).
//!
//! Loading detects the ABI version from the export section, compiles the
//! module, checks the required exports (`memory`, an allocator) and the
//! signature of every known callback (the one table of callbacks, in
//! `vm/callbacks.rs`), and checks every import against what vessel provides,
//! so that a bad module fails here with an error that names the import, its
//! module and its signature.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use vessel_abi::{AbiVersion, LogLevel};
use wasmtime::{ExternType, FuncType, InstancePre, Module, ValType};

use crate::cache::CacheOutcome;
use crate::engine::{Engine, Tier};
#[cfg(feature = "wat")]
use crate::error::TextError;
use crate::error::{LoadError, UnenforceableLimit};
use crate::hidden::Hidden;
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
    /// Modules with the Higress 0.2.100 marker always get it, as in
    /// Envoy-Higress, whose Go plugins return `StopIteration` from a header
    /// callback to go on reading the body (`HeaderStopIteration`).
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
    /// Request and response headers and properties this plugin must never
    /// see (a vessel extension; see [`crate::hidden`]). Default: nothing
    /// hidden.
    pub hidden: Hidden,
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
            hidden: Hidden::new(),
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
    pub(crate) tier: Tier,
    /// The module's binary, kept by a [`Tier::Baseline`] plugin for
    /// [`Plugin::optimized`].
    pub(crate) code: Option<Arc<[u8]>>,
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
    /// Loads `wasm` as a plugin: a binary module, or WebAssembly text if
    /// vessel-host is built with its `wat` feature (off by default; text
    /// without it is [`LoadError::TextNotSupported`]).
    pub fn load(engine: &Engine, wasm: &[u8], config: PluginConfig) -> Result<Self, LoadError> {
        let binary = to_binary(wasm)?;
        let abi = vessel_abi::detect_abi_version(&binary)?;
        let loaded = crate::cache::load_module(engine, &binary)?;
        let module = loaded.module;
        Self::check_exports(&module, abi)?;
        let table = hostcalls::import_table();
        Self::check_imports(&module, table)?;
        enforceable(engine, &config).map_err(|limit| LoadError::UnsupportedLimit {
            plugin: config.name.clone(),
            limit,
        })?;
        let pre = link(&module, &config)?;
        Ok(Self {
            shared: Arc::new(PluginShared { config, abi }),
            engine: engine.clone(),
            module,
            pre: Ok(pre),
            cache: loaded.cache,
            tier: loaded.tier,
            code: (loaded.tier == Tier::Baseline).then(|| Arc::from(binary.as_ref())),
        })
    }

    /// Which compiler built this plugin's code: [`Tier::Baseline`] (Winch)
    /// only on a tiered engine ([`EngineConfig::tiered`](crate::EngineConfig::tiered))
    /// for a module that was not in the module cache.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The Cranelift build of a [`Tier::Baseline`] plugin: compiles the
    /// module with Cranelift (or loads it from the module cache, where it
    /// is then stored) and links it for the same configuration. `Ok(None)`
    /// if this plugin is already [`Tier::Optimized`].
    ///
    /// This is the slow part of tiered compilation (seconds for a large Go
    /// plugin) and blocks the calling thread: run it off the async workers
    /// (`tokio::task::spawn_blocking`, a thread of the embedder's), then
    /// build new VMs from the result and retire the baseline ones. VMs
    /// of both tiers share nothing but the plugin's configuration.
    ///
    /// # Errors
    /// [`LoadError::Compile`] if Cranelift refuses the module (Winch accepted
    /// it, so this is unexpected), [`LoadError::Link`] if linking fails.
    pub fn optimized(&self) -> Result<Option<Plugin>, LoadError> {
        let Some(code) = self.code.as_ref().filter(|_| self.tier == Tier::Baseline) else {
            return Ok(None);
        };
        let (module, cache) = crate::cache::load_optimized(&self.engine, code)?;
        Self::check_exports(&module, self.shared.abi)?;
        Self::check_imports(&module, hostcalls::import_table())?;
        let pre = link(&module, &self.shared.config)?;
        Ok(Some(Self {
            shared: self.shared.clone(),
            engine: self.engine.clone(),
            module,
            pre: Ok(pre),
            cache,
            tier: Tier::Optimized,
            code: None,
        }))
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
            link(&self.module, &config)
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
            tier: self.tier,
            code: self.code.clone(),
        }
    }
}

/// Checks that `engine` can enforce `config.limits`.
pub(crate) fn enforceable(
    engine: &Engine,
    config: &PluginConfig,
) -> Result<(), UnenforceableLimit> {
    let e = engine.config();
    let timeouts =
        config.limits.callback_timeout.is_some() || config.limits.startup_timeout.is_some();
    if timeouts && !e.epoch_interruption {
        return Err(UnenforceableLimit::TimeoutWithoutEpochs);
    }
    if config.limits.fuel_per_callback.is_some() && !e.consume_fuel {
        return Err(UnenforceableLimit::FuelWithoutMetering);
    }
    Ok(())
}

/// Links `module` with every hostcall, the ones `config` does not allow
/// replaced by their stubs, on the wasmtime engine that compiled it (Winch
/// or Cranelift).
fn link(module: &Module, config: &PluginConfig) -> Result<InstancePre<HostState>, LoadError> {
    let engine = module.engine();
    let mut linker = hostcalls::linker(engine)?;
    if let Some(allowed) = capabilities::restriction(config.allowed_capabilities.as_ref()) {
        capabilities::restrict(&mut linker, engine, hostcalls::import_table(), allowed)
            .map_err(|e| LoadError::Link(e.into()))?;
    }
    linker
        .instantiate_pre(module)
        .map_err(|e| LoadError::Link(e.into()))
}

fn unsupported(module: &str, name: &str, kind: &'static str) -> LoadError {
    LoadError::UnsupportedImport {
        module: module.to_owned(),
        name: name.to_owned(),
        kind,
    }
}

/// The module's binary: `wasm` itself, or its text assembled (`wat`
/// feature). Bytes that do not look like text are returned as they are, so
/// that garbage gets the binary parser's error.
fn to_binary(wasm: &[u8]) -> Result<Cow<'_, [u8]>, LoadError> {
    if !looks_like_text(wasm) {
        return Ok(Cow::Borrowed(wasm));
    }
    #[cfg(feature = "wat")]
    {
        wat::parse_bytes(wasm).map_err(|e| LoadError::Text(TextError(Arc::new(e))))
    }
    #[cfg(not(feature = "wat"))]
    {
        Err(LoadError::TextNotSupported)
    }
}

/// True if `bytes` look like WebAssembly text: UTF-8 whose first token is
/// `(` or a comment (`;;`, `(;`).
fn looks_like_text(bytes: &[u8]) -> bool {
    if bytes.starts_with(b"\0asm") {
        return false;
    }
    std::str::from_utf8(bytes).is_ok_and(|text| {
        let text = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        text.starts_with('(') || text.starts_with(";;")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1")))"#;

    fn engine() -> Engine {
        Engine::new(crate::EngineConfig::default()).expect("the default engine builds")
    }

    #[test]
    fn text_is_told_from_binary_and_garbage() {
        assert!(looks_like_text(TEXT.as_bytes()));
        assert!(looks_like_text(b"\n  ;; a comment\n(module)"));
        assert!(!looks_like_text(b"\0asm\x01\0\0\0"));
        assert!(!looks_like_text(b"not wasm at all"));
        assert!(!looks_like_text(b"(\xff"));
        // Garbage keeps the binary parser's error, with or without `wat`.
        let err = Plugin::load(&engine(), b"not wasm at all", PluginConfig::named("p"))
            .expect_err("garbage");
        assert!(
            matches!(err, LoadError::Abi(vessel_abi::DetectError::Parse(_))),
            "{err:?}"
        );
    }

    #[cfg(not(feature = "wat"))]
    #[test]
    fn text_without_the_wat_feature_is_a_typed_error() {
        let err = Plugin::load(&engine(), TEXT.as_bytes(), PluginConfig::named("p"))
            .expect_err("no wat feature");
        assert!(matches!(err, LoadError::TextNotSupported), "{err:?}");
        assert!(err.to_string().contains("`wat` feature"), "{err}");
    }

    #[cfg(feature = "wat")]
    #[test]
    fn text_with_the_wat_feature_loads_or_says_where_it_is_wrong() {
        let plugin = Plugin::load(&engine(), TEXT.as_bytes(), PluginConfig::named("p"))
            .expect("the text assembles and loads");
        assert_eq!(plugin.abi_version(), AbiVersion::V0_2_1);
        let err = Plugin::load(&engine(), b"(module (func", PluginConfig::named("p"))
            .expect_err("unclosed");
        assert!(matches!(err, LoadError::Text(_)), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
    }
}
