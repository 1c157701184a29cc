//! The `bad_imports` oracle: [`Plugin::load`] on modules with wrong imports and exports
//! (ABI reference §1.1, §3, §4, §7; the checks of `crates/vessel-host/src/plugin.rs`).
//!
//! [`ModuleSpec`] describes a module: its ABI marker exports, callback exports (with the
//! ABI's signature or a mutated one), its memory and allocator exports, and its imports —
//! names from vessel's import table or near them (another module, a changed name, a random
//! name), with the table's signature or a mutated one (a parameter or result added, dropped
//! or retyped), or memory, table and global imports. [`ModuleSpec::encode`] builds it with
//! `wasm-encoder`.
//!
//! The oracle loads the module and compares the result with [`ModuleSpec::expected`], an
//! independent model of the load checks in their order: the ABI marker, then validation
//! (duplicate export names), then every export, then the memory and allocator exports, then
//! every import in order. The error must be exactly the predicted typed [`LoadError`], with
//! the names and signatures it reports. In the other two modes the bytes are the encoding
//! with random edits, or the input itself (binary or WAT text): then any typed result is
//! fine, but nothing may panic. A module that loads is also instantiated, and a stream is
//! run through it; that too may fail only with a typed error.

use std::sync::OnceLock;

use arbitrary::{Result as ArbResult, Unstructured};
use vessel_abi::{AbiVersion, DetectError};
use vessel_host::hostcalls::import_table;
use vessel_host::{Engine, EngineConfig, HostEnv, LoadError, Plugin, PluginConfig, Vm};
use wasm_encoder::{
    CodeSection, EntityType, ExportKind, ExportSection, Function, FunctionSection, GlobalType,
    ImportSection, MemorySection, MemoryType, RefType, TableType, TypeSection, ValType,
};

/// A value type the generator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `f32`
    F32,
    /// `f64`
    F64,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::F32 => "f32",
            Self::F64 => "f64",
        }
    }

    fn encoder(self) -> ValType {
        match self {
            Self::I32 => ValType::I32,
            Self::I64 => ValType::I64,
            Self::F32 => ValType::F32,
            Self::F64 => ValType::F64,
        }
    }

    fn from_wasmtime(t: &wasmtime::ValType) -> Self {
        match t {
            wasmtime::ValType::I64 => Self::I64,
            wasmtime::ValType::F32 => Self::F32,
            wasmtime::ValType::F64 => Self::F64,
            _ => Self::I32,
        }
    }

    fn pick(u: &mut Unstructured<'_>) -> ArbResult<Self> {
        Ok(*u.choose(&[Self::I32, Self::I64, Self::F32, Self::F64])?)
    }
}

/// A function signature.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sig {
    /// Parameters.
    pub params: Vec<Ty>,
    /// Results.
    pub results: Vec<Ty>,
}

impl Sig {
    fn new(params: &[Ty], results: &[Ty]) -> Self {
        Self {
            params: params.to_vec(),
            results: results.to_vec(),
        }
    }

    /// The text vessel uses in its errors: `(i32, i64) -> i32`.
    pub fn text(&self) -> String {
        let list = |tys: &[Ty]| tys.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ");
        match self.results.as_slice() {
            [] => format!("({}) -> ()", list(&self.params)),
            [one] => format!("({}) -> {}", list(&self.params), one.name()),
            many => format!("({}) -> ({})", list(&self.params), list(many)),
        }
    }

    /// One random change (it may happen to give the same signature back).
    fn mutate(&mut self, u: &mut Unstructured<'_>) -> ArbResult<()> {
        let list = if u.arbitrary()? {
            &mut self.params
        } else {
            &mut self.results
        };
        match u.int_in_range(0..=2u8)? {
            0 => {
                let at = u.int_in_range(0..=list.len())?;
                list.insert(at, Ty::pick(u)?);
            }
            1 if !list.is_empty() => {
                let at = u.int_in_range(0..=list.len() - 1)?;
                list.remove(at);
            }
            _ if !list.is_empty() => {
                let at = u.int_in_range(0..=list.len() - 1)?;
                list[at] = Ty::pick(u)?;
            }
            _ => list.push(Ty::pick(u)?),
        }
        Ok(())
    }
}

/// One import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSpec {
    /// A function.
    Func {
        /// Module.
        module: String,
        /// Name.
        name: String,
        /// Signature.
        sig: Sig,
    },
    /// A memory, table or global (`kind` is vessel's word for it).
    Other {
        /// Module.
        module: String,
        /// Name.
        name: String,
        /// `memory`, `table` or `global`.
        kind: &'static str,
    },
}

/// One export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportSpec {
    /// A function with this signature (its body returns zeros).
    Func {
        /// Export name.
        name: String,
        /// Signature.
        sig: Sig,
    },
    /// The module's memory, under this name.
    Memory {
        /// Export name.
        name: String,
    },
}

impl ExportSpec {
    fn name(&self) -> &str {
        match self {
            Self::Func { name, .. } | Self::Memory { name } => name,
        }
    }
}

/// A module to load.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModuleSpec {
    /// Imports, in order.
    pub imports: Vec<ImportSpec>,
    /// Exports, in order.
    pub exports: Vec<ExportSpec>,
}

const MODULES: [&str; 3] = ["env", "wasi_snapshot_preview1", "wasi_unstable"];
const ODD_MODULES: [&str; 5] = ["ENV", "wasi", "", "env ", "wasi_snapshot_preview2"];
const MARKERS: [&str; 6] = [
    "proxy_abi_version_0_1_0",
    "proxy_abi_version_0_2_0",
    "proxy_abi_version_0_2_1",
    "proxy_abi_version_0_2_100",
    "proxy_abi_version_9_9_9",
    "proxy_abi_version_",
];

/// The callbacks with their ABI signatures (ABI reference §3; `None`-param entries depend on
/// the version and are filled in by [`callback_sig`]).
const CALLBACK_NAMES: [&str; 28] = [
    "proxy_on_memory_allocate",
    "malloc",
    "_initialize",
    "_start",
    "proxy_on_context_create",
    "proxy_on_queue_ready",
    "proxy_on_vm_start",
    "proxy_validate_configuration",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_log",
    "proxy_on_delete",
    "proxy_on_done",
    "proxy_on_new_connection",
    "proxy_on_foreign_function",
    "proxy_on_downstream_data",
    "proxy_on_upstream_data",
    "proxy_on_downstream_connection_close",
    "proxy_on_upstream_connection_close",
    "proxy_on_request_headers",
    "proxy_on_response_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_request_metadata",
    "proxy_on_http_call_response",
    "proxy_on_grpc_receive",
    "proxy_on_grpc_close",
    "proxy_on_redis_call_response",
];

/// The signature the ABI gives callback `name` (ABI reference §3), or `None` if it is not a
/// callback.
pub fn callback_sig(name: &str, v0_1: bool) -> Option<Sig> {
    use Ty::I32;
    let (p, r): (usize, usize) = match name {
        "proxy_on_memory_allocate" | "malloc" => (1, 1),
        "_initialize" | "_start" => (0, 0),
        "proxy_on_context_create" | "proxy_on_queue_ready" => (2, 0),
        "proxy_on_vm_start" | "proxy_validate_configuration" | "proxy_on_configure" => (2, 1),
        "proxy_on_tick" | "proxy_on_log" | "proxy_on_delete" => (1, 0),
        "proxy_on_done" | "proxy_on_new_connection" => (1, 1),
        "proxy_on_foreign_function" => (3, 0),
        "proxy_on_downstream_data" | "proxy_on_upstream_data" => (3, 1),
        "proxy_on_downstream_connection_close" | "proxy_on_upstream_connection_close" => (2, 0),
        "proxy_on_request_headers" | "proxy_on_response_headers" => (if v0_1 { 2 } else { 3 }, 1),
        "proxy_on_request_body" | "proxy_on_response_body" => (3, 1),
        "proxy_on_request_trailers"
        | "proxy_on_response_trailers"
        | "proxy_on_request_metadata"
        | "proxy_on_response_metadata" => (2, 1),
        "proxy_on_http_call_response" => (5, 0),
        "proxy_on_grpc_receive_initial_metadata"
        | "proxy_on_grpc_receive"
        | "proxy_on_grpc_receive_trailing_metadata"
        | "proxy_on_grpc_close" => (3, 0),
        "proxy_on_redis_call_response" => (4, 0),
        _ => return None,
    };
    Some(Sig::new(&vec![I32; p], &vec![I32; r]))
}

fn table_sig(module: &str, name: &str) -> Option<Sig> {
    import_table().get(module, name).map(|s| Sig {
        params: s.params.iter().map(Ty::from_wasmtime).collect(),
        results: s.results.iter().map(Ty::from_wasmtime).collect(),
    })
}

fn known_imports() -> &'static [(&'static str, &'static str)] {
    static KNOWN: OnceLock<Vec<(&'static str, &'static str)>> = OnceLock::new();
    KNOWN.get_or_init(|| import_table().iter().map(|s| (s.module, s.name)).collect())
}

fn text(u: &mut Unstructured<'_>, max: usize) -> ArbResult<String> {
    let len = u.int_in_range(0..=max)?;
    let bytes: Vec<u8> = (0..len).map(|_| u.arbitrary()).collect::<ArbResult<_>>()?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

impl ModuleSpec {
    /// Reads a module description from `u` (see the module docs).
    pub fn arbitrary(u: &mut Unstructured<'_>) -> ArbResult<Self> {
        let mut spec = Self::default();
        // Imports.
        for _ in 0..u.int_in_range(0..=6u8)? {
            let known = *u.choose(known_imports())?;
            let mut module = known.0.to_owned();
            let mut name = known.1.to_owned();
            match u.int_in_range(0..=9u8)? {
                0 => module = (*u.choose(&MODULES)?).to_owned(),
                1 => module = (*u.choose(&ODD_MODULES)?).to_owned(),
                2 => name.push('_'),
                3 => {
                    name.pop();
                }
                4 => name = name.to_uppercase(),
                5 => name = text(u, 12)?,
                _ => {}
            }
            let import = match u.int_in_range(0..=9u8)? {
                0 => ImportSpec::Other {
                    module,
                    name,
                    kind: u.choose(&["memory", "table", "global"])?,
                },
                n => {
                    let mut sig = table_sig(known.0, known.1).unwrap_or_default();
                    if n <= 4 {
                        sig.mutate(u)?;
                    }
                    ImportSpec::Func { module, name, sig }
                }
            };
            spec.imports.push(import);
        }
        // The marker, the memory, the allocator and some callbacks.
        let v0_1 = match u.int_in_range(0..=7u8)? {
            n @ 0..=5 => {
                spec.exports.push(ExportSpec::Func {
                    name: MARKERS[n as usize].to_owned(),
                    sig: Sig::default(),
                });
                n == 0
            }
            _ => false,
        };
        match u.int_in_range(0..=5u8)? {
            0 => {}
            1 => spec.exports.push(ExportSpec::Memory { name: "mem".into() }),
            2 => spec.exports.push(ExportSpec::Func {
                name: "memory".into(),
                sig: Sig::default(),
            }),
            _ => spec.exports.push(ExportSpec::Memory {
                name: "memory".into(),
            }),
        }
        let alloc = match u.int_in_range(0..=3u8)? {
            0 => None,
            1 => Some("malloc"),
            _ => Some("proxy_on_memory_allocate"),
        };
        if let Some(name) = alloc {
            let mut sig = callback_sig(name, v0_1).unwrap_or_default();
            if u.ratio(1, 4)? {
                sig.mutate(u)?;
            }
            spec.exports.push(ExportSpec::Func {
                name: name.to_owned(),
                sig,
            });
        }
        for _ in 0..u.int_in_range(0..=6u8)? {
            let name = if u.ratio(1, 8)? {
                text(u, 10)?
            } else {
                (*u.choose(&CALLBACK_NAMES)?).to_owned()
            };
            let mut sig = callback_sig(&name, v0_1).unwrap_or_default();
            if u.ratio(1, 3)? {
                sig.mutate(u)?;
            }
            spec.exports.push(ExportSpec::Func { name, sig });
        }
        // Shuffle a little: rotate the export list.
        if !spec.exports.is_empty() {
            let by = u.int_in_range(0..=spec.exports.len() - 1)?;
            spec.exports.rotate_left(by);
        }
        Ok(spec)
    }

    /// Encodes the module.
    pub fn encode(&self) -> Vec<u8> {
        let mut sigs: Vec<Sig> = Vec::new();
        let mut type_of = |sig: &Sig| -> u32 {
            match sigs.iter().position(|s| s == sig) {
                Some(i) => i as u32,
                None => {
                    sigs.push(sig.clone());
                    (sigs.len() - 1) as u32
                }
            }
        };
        let mut imports = ImportSection::new();
        let mut imported_funcs = 0u32;
        let mut imported_memories = 0u32;
        for import in &self.imports {
            match import {
                ImportSpec::Func { module, name, sig } => {
                    imports.import(module, name, EntityType::Function(type_of(sig)));
                    imported_funcs += 1;
                }
                ImportSpec::Other { module, name, kind } => {
                    let ty = match *kind {
                        "memory" => {
                            imported_memories += 1;
                            EntityType::Memory(memory_type())
                        }
                        "table" => EntityType::Table(TableType {
                            element_type: RefType::FUNCREF,
                            table64: false,
                            minimum: 1,
                            maximum: None,
                            shared: false,
                        }),
                        _ => EntityType::Global(GlobalType {
                            val_type: ValType::I32,
                            mutable: false,
                            shared: false,
                        }),
                    };
                    imports.import(module, name, ty);
                }
            }
        }
        let mut functions = FunctionSection::new();
        let mut code = CodeSection::new();
        let mut exports = ExportSection::new();
        let mut next_func = imported_funcs;
        for export in &self.exports {
            match export {
                ExportSpec::Func { name, sig } => {
                    functions.function(type_of(sig));
                    let mut f = Function::new([]);
                    let mut body = f.instructions();
                    for r in &sig.results {
                        match r {
                            Ty::I32 => body.i32_const(0),
                            Ty::I64 => body.i64_const(0),
                            Ty::F32 => body.f32_const(0.0f32.into()),
                            Ty::F64 => body.f64_const(0.0f64.into()),
                        };
                    }
                    body.end();
                    code.function(&f);
                    exports.export(name, ExportKind::Func, next_func);
                    next_func += 1;
                }
                ExportSpec::Memory { name } => {
                    exports.export(name, ExportKind::Memory, imported_memories);
                }
            }
        }
        let mut types = TypeSection::new();
        for sig in &sigs {
            types.ty().function(
                sig.params.iter().map(|t| t.encoder()),
                sig.results.iter().map(|t| t.encoder()),
            );
        }
        let mut memories = MemorySection::new();
        memories.memory(memory_type());
        let mut module = wasm_encoder::Module::new();
        module
            .section(&types)
            .section(&imports)
            .section(&functions)
            .section(&memories)
            .section(&exports)
            .section(&code);
        module.finish()
    }

    /// What [`Plugin::load`] must give: `Ok(())`, the exact error, or `Err(None)` for "not a
    /// valid module" (the text of which is wasmtime's).
    pub fn expected(&self) -> Result<(), Option<LoadError>> {
        // 1. The ABI marker: the first known one among function exports.
        let mut unknown = None;
        let mut abi = None;
        for export in &self.exports {
            if let ExportSpec::Func { name, .. } = export {
                if let Some(v) = AbiVersion::from_marker(name) {
                    abi = Some(v);
                    break;
                }
                if let Some(suffix) = name.strip_prefix("proxy_abi_version_") {
                    unknown.get_or_insert_with(|| suffix.to_owned());
                }
            }
        }
        let Some(abi) = abi else {
            return Err(Some(LoadError::Abi(
                unknown.map_or(DetectError::Missing, DetectError::Unknown),
            )));
        };
        // 2. Validation: export names are unique.
        let mut names: Vec<&str> = self.exports.iter().map(ExportSpec::name).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(None);
        }
        // 3. Callback signatures, in export order; then memory and allocator.
        let mut has_memory = false;
        let mut has_alloc = false;
        for export in &self.exports {
            match export {
                ExportSpec::Memory { name } => has_memory |= name == "memory",
                ExportSpec::Func { name, sig } => {
                    if let Some(want) = callback_sig(name, abi.is_v0_1()) {
                        if *sig != want {
                            return Err(Some(LoadError::ExportSignature {
                                name: name.clone(),
                                expected: want.text(),
                                found: sig.text(),
                            }));
                        }
                        has_alloc |= name == "malloc" || name == "proxy_on_memory_allocate";
                    }
                }
            }
        }
        if !has_memory {
            return Err(Some(LoadError::MissingExport("memory")));
        }
        if !has_alloc {
            return Err(Some(LoadError::MissingAllocator));
        }
        // 4. Imports, in order.
        for import in &self.imports {
            match import {
                ImportSpec::Other { module, name, kind } => {
                    return Err(Some(LoadError::UnsupportedImport {
                        module: module.clone(),
                        name: name.clone(),
                        kind,
                    }));
                }
                ImportSpec::Func { module, name, sig } => match table_sig(module, name) {
                    None => {
                        return Err(Some(LoadError::UnknownImport {
                            module: module.clone(),
                            name: name.clone(),
                            signature: sig.text(),
                        }));
                    }
                    Some(want) if want != *sig => {
                        return Err(Some(LoadError::ImportSignature {
                            module: module.clone(),
                            name: name.clone(),
                            expected: want.text(),
                            found: sig.text(),
                        }));
                    }
                    Some(_) => {}
                },
            }
        }
        Ok(())
    }
}

fn memory_type() -> MemoryType {
    MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    }
}

/// An engine without Cranelift's optimisations: the checks do not depend on them, and
/// every fuzz input compiles a module.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::new(EngineConfig {
            optimize: false,
            ..EngineConfig::default()
        })
        .expect("an engine without optimisations")
    })
}

/// Loads `wasm`; if it loads, runs a VM and a stream on it. Never panics on its own.
pub fn load_and_run(wasm: &[u8]) -> Result<(), LoadError> {
    let plugin = Plugin::load(engine(), wasm, PluginConfig::named("bad-imports"))?;
    // The module's callbacks return zeros: start-up may be refused, with a typed error.
    if let Ok(mut vm) = Vm::new(&plugin, &HostEnv::default()) {
        if let Ok(s) = vm.create_http_context() {
            let _ = vm.on_request_headers(s, vessel_host::HeaderMap::default(), true);
            let _ = vm.finish_http_stream(s);
        }
        let _ = vm.shutdown();
    }
    Ok(())
}

/// The fuzz entry point: the first byte picks the mode (a described module; the same with
/// random edits; the input itself).
pub fn bad_imports_oracle(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    match mode % 4 {
        0 | 1 => {
            let Ok(spec) = ModuleSpec::arbitrary(&mut u) else {
                return;
            };
            check_spec(&spec);
        }
        2 => {
            let Ok(spec) = ModuleSpec::arbitrary(&mut u) else {
                return;
            };
            let mut wasm = spec.encode();
            for _ in 0..u.int_in_range(1..=4u8).unwrap_or(1) {
                let (Ok(at), Ok(byte)) = (u.arbitrary::<u16>(), u.arbitrary::<u8>()) else {
                    break;
                };
                if wasm.is_empty() {
                    break;
                }
                let at = at as usize % wasm.len();
                match byte % 3 {
                    0 => wasm[at] = u.arbitrary().unwrap_or(0),
                    1 => wasm.truncate(at),
                    _ => wasm.insert(at, byte),
                }
            }
            let _ = load_and_run(&wasm);
        }
        _ => {
            let _ = load_and_run(rest);
        }
    }
}

/// Loads the module `spec` describes and checks the result against the model.
pub fn check_spec(spec: &ModuleSpec) {
    let wasm = spec.encode();
    let got = load_and_run(&wasm);
    match (spec.expected(), &got) {
        (Ok(()), Ok(())) => {}
        (Err(None), Err(LoadError::Compile(_))) => {}
        // `LoadError` is not `PartialEq` (some variants keep wasmtime's
        // error); the model only predicts plain-data variants, whose Debug
        // shows every field.
        (Err(Some(want)), Err(e)) if format!("{want:?}") == format!("{e:?}") => {
            // The message names what is wrong.
            let text = e.to_string();
            if let LoadError::UnknownImport { name, .. }
            | LoadError::ImportSignature { name, .. }
            | LoadError::UnsupportedImport { name, .. }
            | LoadError::ExportSignature { name, .. } = e
            {
                assert!(
                    text.contains(name.as_str()),
                    "{text:?} does not name {name:?}"
                );
            }
        }
        (want, got) => panic!("{spec:#?}\nexpected {want:?}\ngot {got:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::XorShift;

    fn good() -> ModuleSpec {
        ModuleSpec {
            imports: vec![ImportSpec::Func {
                module: "env".into(),
                name: "proxy_log".into(),
                sig: Sig::new(&[Ty::I32; 3], &[Ty::I32]),
            }],
            exports: vec![
                ExportSpec::Func {
                    name: "proxy_abi_version_0_2_1".into(),
                    sig: Sig::default(),
                },
                ExportSpec::Memory {
                    name: "memory".into(),
                },
                ExportSpec::Func {
                    name: "proxy_on_memory_allocate".into(),
                    sig: Sig::new(&[Ty::I32], &[Ty::I32]),
                },
            ],
        }
    }

    #[test]
    fn a_good_module_loads() {
        assert!(good().expected().is_ok());
        check_spec(&good());
    }

    /// Each kind of mistake gives its own typed error, as the model predicts.
    #[test]
    fn each_mistake_gives_its_error() {
        let mut wrong_sig = good();
        wrong_sig.imports[0] = ImportSpec::Func {
            module: "env".into(),
            name: "proxy_log".into(),
            sig: Sig::new(&[Ty::I32, Ty::I64, Ty::I32], &[Ty::I32]),
        };
        assert!(matches!(
            wrong_sig.expected(),
            Err(Some(LoadError::ImportSignature { .. }))
        ));
        let mut unknown = good();
        unknown.imports.push(ImportSpec::Func {
            module: "wasi_snapshot_preview2".into(),
            name: "fd_write".into(),
            sig: Sig::default(),
        });
        assert!(matches!(
            unknown.expected(),
            Err(Some(LoadError::UnknownImport { .. }))
        ));
        let mut memory = good();
        memory.imports.insert(
            0,
            ImportSpec::Other {
                module: "env".into(),
                name: "memory".into(),
                kind: "memory",
            },
        );
        let mut no_alloc = good();
        no_alloc.exports.pop();
        let mut bad_callback = good();
        bad_callback.exports.push(ExportSpec::Func {
            name: "proxy_on_tick".into(),
            sig: Sig::new(&[Ty::I64], &[]),
        });
        let mut duplicate = good();
        duplicate.exports.push(ExportSpec::Memory {
            name: "proxy_on_memory_allocate".into(),
        });
        let mut no_marker = good();
        no_marker.exports.remove(0);
        for spec in [
            wrong_sig,
            unknown,
            memory,
            no_alloc,
            bad_callback,
            duplicate,
            no_marker,
        ] {
            assert!(spec.expected().is_err());
            check_spec(&spec);
        }
    }

    #[test]
    fn signatures_print_as_vessel_prints_them() {
        assert_eq!(Sig::default().text(), "() -> ()");
        assert_eq!(
            Sig::new(&[Ty::I32, Ty::I64], &[Ty::I32]).text(),
            "(i32, i64) -> i32"
        );
        assert_eq!(
            Sig::new(&[], &[Ty::F32, Ty::F64]).text(),
            "() -> (f32, f64)"
        );
    }

    #[test]
    fn oracle_over_seeds() {
        for seed in crate::seeds().step_by(4) {
            bad_imports_oracle(&seed);
        }
        let mut rng = XorShift::new(0xBAD_1A1A);
        for _ in 0..600 {
            let len = rng.below(200);
            bad_imports_oracle(&rng.bytes(len));
        }
    }

    /// The structured seeds reach every kind of outcome.
    #[test]
    fn seeds_reach_every_outcome() {
        let mut rng = XorShift::new(0xBAD_1A1A);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3000 {
            let len = rng.below(200);
            let bytes = rng.bytes(len);
            let Ok(spec) = ModuleSpec::arbitrary(&mut Unstructured::new(&bytes)) else {
                continue;
            };
            let kind = match spec.expected() {
                Ok(()) => "ok",
                Err(None) => "compile",
                Err(Some(LoadError::Abi(_))) => "abi",
                Err(Some(LoadError::ExportSignature { .. })) => "export",
                Err(Some(LoadError::MissingExport(_))) => "memory",
                Err(Some(LoadError::MissingAllocator)) => "alloc",
                Err(Some(LoadError::UnknownImport { .. })) => "unknown",
                Err(Some(LoadError::ImportSignature { .. })) => "signature",
                Err(Some(LoadError::UnsupportedImport { .. })) => "unsupported",
                Err(Some(_)) => "other",
            };
            seen.insert(kind);
        }
        for kind in [
            "ok",
            "compile",
            "abi",
            "export",
            "memory",
            "alloc",
            "unknown",
            "signature",
            "unsupported",
        ] {
            assert!(seen.contains(kind), "no seed gives {kind}: {seen:?}");
        }
    }
}
