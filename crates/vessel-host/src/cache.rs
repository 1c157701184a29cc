//! The on-disk compiled-module cache (`docs/operations.md`, "Module cache").
//!
//! Compiling a module with Cranelift takes from milliseconds (a small
//! Rust-SDK filter) to many seconds (a 10 MB Go plugin). The cache stores
//! wasmtime's serialized compiled code ([`Module::serialize`]) so that the
//! next process with the same engine settings loads it instead of compiling.
//!
//! This is the one place where `vessel-host` touches the file system, and
//! only when [`CacheConfig::dir`] is set. The crate default is disabled; the
//! default meant for the `vessel` CLI is [`CacheConfig::user_default`].
//!
//! # Keys and entries
//!
//! An entry's key is the sha256 of: a domain tag, vessel's version, the
//! engine's [`precompile_compatibility_hash`](wasmtime::Engine::precompile_compatibility_hash)
//! (wasmtime's version, target and every setting that changes the
//! compiled code), and the sha256 of the module's bytes. The entry is the
//! file `<dir>/<hex key>.vmc`:
//!
//! | bytes | field |
//! |-------|-------|
//! | 8     | magic `VESSELMC` |
//! | 4     | format version (little endian), [`FORMAT_VERSION`] |
//! | 32    | the key |
//! | 8     | payload length (little endian) |
//! | 32    | sha256 of the payload |
//! | n     | payload: the bytes of [`Module::serialize`] |
//!
//! A reader checks every field before it hands the payload to wasmtime. An
//! entry that fails a check (wrong magic or key, truncated, bad checksum, or
//! rejected by wasmtime) is logged at `warn`, ignored, and rebuilt: the module
//! is compiled and the entry rewritten.
//!
//! Writers never modify a file in place: each writes a uniquely named
//! temporary file in the same directory and renames it over the entry, which
//! is atomic on POSIX file systems. Concurrent writers of one key therefore
//! all succeed, readers see either no entry or a complete one, and the last
//! rename wins (every writer wrote the same code). A process killed between
//! the write and the rename leaves a `*.tmp` file behind; it is never read.
//! Nothing is evicted: remove the directory to clear the cache.
//!
//! # Unsafe code
//!
//! The crate denies `unsafe_code` rather than forbidding it only so that this
//! module can allow it for one call, [`Module::deserialize`]. wasmtime marks
//! it `unsafe` because it maps the bytes as executable machine code without
//! validating them; the caller must pass only what `Module::serialize`
//! produced. The `// SAFETY:` comment at the call says why that holds here.
//! Every other module of the crate still rejects `unsafe`, and none may
//! allow it.

#![allow(unsafe_code)]

use std::fmt;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Module;

use crate::engine::Tier;
use crate::error::WasmtimeError;

/// Where compiled modules are cached. `dir: None` (the default) disables
/// the cache: nothing is read or written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheConfig {
    /// The cache directory, created (mode 0700 on Unix) on the first write.
    /// It must be writable only by the user running vessel: an entry is
    /// loaded as machine code.
    pub dir: Option<PathBuf>,
}

impl CacheConfig {
    /// No cache.
    pub fn disabled() -> Self {
        Self { dir: None }
    }

    /// A cache in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
        }
    }

    /// The directory the `vessel` CLI uses: `$XDG_CACHE_HOME/vessel/modules`,
    /// else `$HOME/.cache/vessel/modules`; disabled if neither variable is
    /// set to an absolute path. It does not depend on any cargo `target/`.
    pub fn user_default() -> Self {
        let absolute = |var: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        let base =
            absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|h| h.join(".cache")));
        Self {
            dir: base.map(|b| b.join("vessel").join("modules")),
        }
    }
}

/// What loading a module found in the cache.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The cache is disabled; the module was compiled.
    Disabled,
    /// A valid entry was loaded; nothing was compiled.
    Hit,
    /// There was no entry; the module was compiled and (unless writing
    /// failed, which is logged) stored.
    Miss,
    /// The entry was unusable (logged); the module was compiled and the
    /// entry rewritten.
    Rebuilt,
}

/// Why an entry is unusable.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum CorruptEntry {
    /// The file does not start with the magic bytes.
    #[error("not a vessel module cache entry (bad magic)")]
    BadMagic,
    /// Written by a vessel with another entry format.
    #[error("entry format {0}, expected {FORMAT_VERSION}")]
    Format(u32),
    /// The header names another key (the file was renamed or copied).
    #[error("the entry belongs to another key")]
    WrongKey,
    /// The file is shorter or longer than its header says.
    #[error("the payload is {found} bytes, the header says {expected}")]
    Length {
        /// Payload length in the header.
        expected: u64,
        /// Bytes actually present.
        found: u64,
    },
    /// The payload's sha256 does not match the header.
    #[error("the payload checksum does not match")]
    Checksum,
    /// wasmtime refused the payload.
    #[error("wasmtime rejected the compiled code: {0}")]
    Rejected(#[source] WasmtimeError),
}

/// A module cache failure. [`Plugin::load`](crate::Plugin::load) never fails
/// because of one: it logs it and compiles.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing the cache directory failed.
    #[error("module cache: cannot {op} {path}: {source}")]
    Io {
        /// What was being done (`read`, `create`, `write`, `rename`).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error (shared, so that the error stays `Clone`).
        source: Arc<io::Error>,
    },
    /// An entry exists but is unusable.
    #[error("module cache: ignoring {path}: {reason}")]
    Corrupt {
        /// The entry's file.
        path: PathBuf,
        /// Why.
        reason: CorruptEntry,
    },
    /// wasmtime could not serialize the compiled module.
    #[error("module cache: cannot serialize the compiled module: {0}")]
    Serialize(#[source] WasmtimeError),
}

impl CacheError {
    fn io(op: &'static str, path: &Path, e: io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_owned(),
            source: Arc::new(e),
        }
    }
}

/// The entry format this vessel reads and writes.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"VESSELMC";
const HEADER_LEN: usize = 8 + 4 + 32 + 8 + 32;
const ENTRY_EXT: &str = "vmc";

/// A cache key: see the module docs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key of `code` compiled by `engine`.
    pub fn new(engine: &wasmtime::Engine, code: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"vessel-module-cache\0");
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(b"\0");
        let mut compat = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut compat);
        h.update(compat.0.finalize());
        h.update(Sha256::digest(code));
        Self(h.finalize().into())
    }

    /// The key in lowercase hex.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

/// Feeds [`Hash`] output into sha256, so the engine's compatibility hash is
/// stable across processes (std's `DefaultHasher` makes no such promise).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Only `write` is used: the digest is taken from `self.0`.
        0
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// A compiled-module cache in one directory. Cheap to build; holds no
/// open files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleCache {
    dir: PathBuf,
}

impl ModuleCache {
    /// A cache in `dir` (created on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `key`'s entry.
    pub fn entry_path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.{ENTRY_EXT}", key.to_hex()))
    }

    /// Loads `key`'s entry. `Ok(None)`: there is none. An entry that fails
    /// a check is [`CacheError::Corrupt`].
    pub fn get(
        &self,
        engine: &wasmtime::Engine,
        key: &CacheKey,
    ) -> Result<Option<Module>, CacheError> {
        let path = self.entry_path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CacheError::io("read", &path, e)),
        };
        let corrupt = |reason| CacheError::Corrupt {
            path: path.clone(),
            reason,
        };
        let payload = check_entry(&bytes, key).map_err(corrupt)?;
        // SAFETY: `Module::deserialize` requires bytes that `Module::serialize`
        // produced (it loads them as machine code unchecked). `payload` is
        // exactly such bytes: `check_entry` accepted it only because the
        // header carries our magic, format and this key (the engine's
        // compatibility hash and the code's hash), the length matches, and
        // its sha256 equals the one `put` computed from `Module::serialize`'s
        // output before writing. Entries are written by `put` alone, to a
        // private temporary file renamed into place, never in place, so a
        // torn or partial write fails the length or checksum check. What is
        // left is someone with write access to the cache directory forging
        // an entry, the same trust as in the vessel binary itself: the
        // directory is created 0700 and the docs require it to be private.
        // Beyond that, wasmtime itself rejects code from another wasmtime
        // version or an incompatible engine configuration.
        let module = unsafe { Module::deserialize(engine, payload) }
            .map_err(|e| corrupt(CorruptEntry::Rejected(e.into())))?;
        Ok(Some(module))
    }

    /// Stores `module` under `key`, atomically replacing any entry.
    /// Returns the entry's path.
    pub fn put(&self, key: &CacheKey, module: &Module) -> Result<PathBuf, CacheError> {
        let payload = module
            .serialize()
            .map_err(|e| CacheError::Serialize(e.into()))?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&key.0);
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        header.extend_from_slice(&Sha256::digest(&payload));
        create_private_dir(&self.dir)?;
        let path = self.entry_path(key);
        let tmp = self
            .dir
            .join(format!("{}.{}.tmp", key.to_hex(), unique_suffix()));
        let written = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| CacheError::io("create", &tmp, e))?;
            f.write_all(&header)
                .and_then(|()| f.write_all(&payload))
                .map_err(|e| CacheError::io("write", &tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| CacheError::io("rename", &tmp, e))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map(|()| path)
    }

    /// Loads `key`'s entry, or says why there is none usable (logged):
    /// [`CacheOutcome::Miss`] or [`CacheOutcome::Rebuilt`].
    fn lookup(&self, engine: &wasmtime::Engine, key: &CacheKey) -> Result<Module, CacheOutcome> {
        match self.get(engine, key) {
            Ok(Some(module)) => {
                log::debug!("module cache hit: {}", self.entry_path(key).display());
                Ok(module)
            }
            Ok(None) => Err(CacheOutcome::Miss),
            Err(e @ CacheError::Corrupt { .. }) => {
                log::warn!("{e}; recompiling");
                Err(CacheOutcome::Rebuilt)
            }
            Err(e) => {
                log::warn!("{e}; compiling");
                Err(CacheOutcome::Miss)
            }
        }
    }

    /// Stores `module` under `key`; a failure is logged.
    fn store(&self, key: &CacheKey, module: &Module) {
        match self.put(key, module) {
            Ok(path) => log::debug!("module cache: stored {}", path.display()),
            Err(e) => log::warn!("{e}"),
        }
    }

    /// Loads `code` compiled by `engine` from the cache, or compiles it
    /// with `compile` and stores it. Cache failures are logged and never
    /// fail the load; `compile`'s error is returned as is.
    pub fn get_or_compile<E>(
        &self,
        engine: &wasmtime::Engine,
        code: &[u8],
        compile: impl FnOnce() -> Result<Module, E>,
    ) -> Result<(Module, CacheOutcome), E> {
        let key = CacheKey::new(engine, code);
        let outcome = match self.lookup(engine, &key) {
            Ok(module) => return Ok((module, CacheOutcome::Hit)),
            Err(outcome) => outcome,
        };
        let module = compile()?;
        self.store(&key, &module);
        Ok((module, outcome))
    }
}

/// A module as [`load_module`] produced it.
pub(crate) struct Loaded {
    pub(crate) module: Module,
    pub(crate) cache: CacheOutcome,
    pub(crate) tier: Tier,
}

/// Compiles `wasm` with Cranelift for `engine`, through the cache if one is
/// configured.
pub(crate) fn load_optimized(
    engine: &crate::Engine,
    wasm: &[u8],
) -> Result<(Module, CacheOutcome), crate::LoadError> {
    let compile = || {
        Module::from_binary(&engine.inner, wasm).map_err(|e| crate::LoadError::Compile(e.into()))
    };
    match &engine.config.cache.dir {
        Some(dir) => ModuleCache::new(dir).get_or_compile(&engine.inner, wasm, compile),
        None => Ok((compile()?, CacheOutcome::Disabled)),
    }
}

/// Loads `wasm` for `engine`: a cache hit (Cranelift code); else, on a
/// tiered engine, a Winch build ([`Tier::Baseline`], never cached), or a
/// Cranelift build (stored) when the engine is not tiered or Winch refuses
/// the module.
pub(crate) fn load_module(engine: &crate::Engine, wasm: &[u8]) -> Result<Loaded, crate::LoadError> {
    let optimized = |(module, cache)| Loaded {
        module,
        cache,
        tier: Tier::Optimized,
    };
    let Some(baseline) = &engine.baseline else {
        return load_optimized(engine, wasm).map(optimized);
    };
    let cache = engine.config.cache.dir.as_ref().map(ModuleCache::new);
    let outcome = match &cache {
        None => CacheOutcome::Disabled,
        Some(cache) => match cache.lookup(&engine.inner, &CacheKey::new(&engine.inner, wasm)) {
            Ok(module) => return Ok(optimized((module, CacheOutcome::Hit))),
            Err(outcome) => outcome,
        },
    };
    match Module::from_binary(baseline, wasm) {
        Ok(module) => Ok(Loaded {
            module,
            cache: outcome,
            tier: Tier::Baseline,
        }),
        Err(e) => {
            log::info!("Winch cannot compile this module ({e:#}); compiling it with Cranelift");
            let module = Module::from_binary(&engine.inner, wasm)
                .map_err(|e| crate::LoadError::Compile(e.into()))?;
            if let Some(cache) = &cache {
                cache.store(&CacheKey::new(&engine.inner, wasm), &module);
            }
            Ok(optimized((module, outcome)))
        }
    }
}

/// Checks an entry's header against `key` and returns its payload.
fn check_entry<'a>(bytes: &'a [u8], key: &CacheKey) -> Result<&'a [u8], CorruptEntry> {
    let Some((header, payload)) = bytes.split_at_checked(HEADER_LEN) else {
        return Err(if bytes.starts_with(MAGIC) || bytes.len() < MAGIC.len() {
            CorruptEntry::Length {
                expected: 0,
                found: bytes.len() as u64,
            }
        } else {
            CorruptEntry::BadMagic
        });
    };
    let (magic, rest) = header.split_at(8);
    let (format, rest) = rest.split_at(4);
    let (entry_key, rest) = rest.split_at(32);
    let (len, checksum) = rest.split_at(8);
    if magic != MAGIC {
        return Err(CorruptEntry::BadMagic);
    }
    let format = u32::from_le_bytes(format.try_into().map_err(|_| CorruptEntry::BadMagic)?);
    if format != FORMAT_VERSION {
        return Err(CorruptEntry::Format(format));
    }
    if entry_key != key.0 {
        return Err(CorruptEntry::WrongKey);
    }
    let expected = u64::from_le_bytes(len.try_into().map_err(|_| CorruptEntry::BadMagic)?);
    if expected != payload.len() as u64 {
        return Err(CorruptEntry::Length {
            expected,
            found: payload.len() as u64,
        });
    }
    if Sha256::digest(payload).as_slice() != checksum {
        return Err(CorruptEntry::Checksum);
    }
    Ok(payload)
}

fn create_private_dir(dir: &Path) -> Result<(), CacheError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| CacheError::io("create", dir, e))
}

/// A temporary-file suffix unique across threads and processes (also
/// processes in other PID namespaces sharing the directory).
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 8];
    // Without randomness the pid and counter still separate this host's writers.
    let _ = getrandom::fill(&mut random);
    format!(
        "{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        hex(&random)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> CacheKey {
        CacheKey([byte; 32])
    }

    fn entry(k: &CacheKey, payload: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(MAGIC);
        e.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        e.extend_from_slice(&k.0);
        e.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        e.extend_from_slice(&Sha256::digest(payload));
        e.extend_from_slice(payload);
        e
    }

    #[test]
    fn a_well_formed_entry_yields_its_payload() {
        let e = entry(&key(1), b"compiled");
        assert_eq!(check_entry(&e, &key(1)).ok(), Some(&b"compiled"[..]));
    }

    #[test]
    fn every_damaged_field_is_named() {
        let good = entry(&key(1), b"compiled");
        assert!(matches!(
            check_entry(&good, &key(2)),
            Err(CorruptEntry::WrongKey)
        ));

        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(matches!(
            check_entry(&magic, &key(1)),
            Err(CorruptEntry::BadMagic)
        ));

        let mut format = good.clone();
        format[8] = 9;
        assert!(matches!(
            check_entry(&format, &key(1)),
            Err(CorruptEntry::Format(9))
        ));

        let truncated = &good[..good.len() - 1];
        assert!(matches!(
            check_entry(truncated, &key(1)),
            Err(CorruptEntry::Length {
                expected: 8,
                found: 7
            })
        ));
        assert!(matches!(
            check_entry(&good[..20], &key(1)),
            Err(CorruptEntry::Length { .. })
        ));
        assert!(matches!(
            check_entry(&[], &key(1)),
            Err(CorruptEntry::Length { .. })
        ));

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            check_entry(&flipped, &key(1)),
            Err(CorruptEntry::Checksum)
        ));
    }

    #[test]
    fn keys_differ_by_code_and_by_engine_settings() {
        let engine = wasmtime::Engine::default();
        let a = CacheKey::new(&engine, b"(module)");
        assert_eq!(a, CacheKey::new(&engine, b"(module)"));
        assert_ne!(a, CacheKey::new(&engine, b"(module (func))"));
        let mut config = wasmtime::Config::new();
        config.cranelift_opt_level(wasmtime::OptLevel::None);
        let other = wasmtime::Engine::new(&config).expect("engine");
        assert_ne!(a, CacheKey::new(&other, b"(module)"));
        assert_eq!(a.to_hex().len(), 64);
    }
}
