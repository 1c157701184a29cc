//! # vessel-spec-tests
//!
//! Shared helpers of vessel's conformance suite (ABI reference §3–§5, §11).
//! The tests themselves live in `spec-tests/tests/all/*.rs`, one module per
//! ABI area of one test binary. They drive real proxy-wasm filters built
//! with the Rust SDK (`spec-tests/guests`, built by `cargo xtask guests`)
//! and hand-written WAT modules (`spec-tests/wat`, plus the modules
//! [`probe`] generates) through the public `vessel_host` API.
//!
//! This crate offers:
//!
//! * [`guest_path`], [`read_guest`], [`wat_path`], [`read_wat`]: locate and
//!   read test modules relative to this crate, without panicking;
//! * [`engine`] and [`plugin`]: one shared [`Engine`] per test binary and a
//!   per-binary cache of compiled plugins, so a module is compiled once and
//!   every test re-configures it with [`Plugin::with_config`];
//! * [`LogCapture`]: a [`LogSink`] that records guest log lines;
//! * [`Harness`]: a [`Vm`] with its [`HostEnv`] and captured logs, plus a
//!   few shortcuts for HTTP streams;
//! * [`probe`]: a generator of small WAT modules that call hostcalls and
//!   report their raw statuses and outputs through `proxy_log`.

#![forbid(unsafe_code)]

pub mod probe;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use vessel_host::{
    ContextId, Effect, Engine, EngineConfig, EngineError, FilterHeadersStatus, HeaderMap, HostEnv,
    HostEnvBuilder, LoadError, LogLevel, LogRecord, LogSink, Plugin, PluginConfig, Vm, VmError,
};

/// The wasm target the guests are built for by default.
pub const WASIP1: &str = "wasm32-wasip1";
/// The bare wasm target (`guest_hello` is also built for it).
pub const UNKNOWN_UNKNOWN: &str = "wasm32-unknown-unknown";

/// Why a helper failed.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A test module could not be read.
    #[error("cannot read {path}: {source}; build the guests with `cargo xtask guests`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The module did not load as a plugin.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The VM failed to start or a call failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The shared engine could not be built.
    #[error("cannot build the shared engine: {0}")]
    Engine(#[source] EngineError),
}

/// The `spec-tests` directory (this crate's manifest directory).
pub fn spec_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The path of guest `name` (`guest_<name>.wasm`) built for `target`.
pub fn guest_path_for(target: &str, name: &str) -> PathBuf {
    spec_dir()
        .join("guests/target")
        .join(target)
        .join("release")
        .join(format!("guest_{name}.wasm"))
}

/// The path of guest `name` built for `wasm32-wasip1`.
pub fn guest_path(name: &str) -> PathBuf {
    guest_path_for(WASIP1, name)
}

/// The path of `spec-tests/wat/<name>.wat`.
pub fn wat_path(name: &str) -> PathBuf {
    spec_dir().join("wat").join(format!("{name}.wat"))
}

fn read(path: &Path) -> Result<Vec<u8>, SpecError> {
    std::fs::read(path).map_err(|source| SpecError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads guest `name` built for `wasm32-wasip1`.
pub fn read_guest(name: &str) -> Result<Vec<u8>, SpecError> {
    read(&guest_path(name))
}

/// Reads `spec-tests/wat/<name>.wat` as text bytes (which
/// [`Plugin::load`] accepts). Never panics.
pub fn read_wat(name: &str) -> Result<Vec<u8>, SpecError> {
    read(&wat_path(name))
}

/// True if `a` and `b` are the same failure: the same trap (the same
/// `Arc`, as a failed VM hands it out again) or, for the other errors, the
/// same variant with the same fields. `VmError` is not `PartialEq`: it
/// keeps wasmtime's errors.
pub fn same_failure(a: &VmError, b: &VmError) -> bool {
    match (a, b) {
        (VmError::Trap(x), VmError::Trap(y)) => Arc::ptr_eq(x, y),
        _ => format!("{a:?}") == format!("{b:?}"),
    }
}

/// Asserts that `got` failed with `want` (see [`same_failure`]).
#[track_caller]
pub fn assert_failed<T: std::fmt::Debug>(got: Result<T, VmError>, want: &VmError) {
    match got {
        Err(e) if same_failure(&e, want) => {}
        other => panic!("expected the failure {want:?}, got {other:?}"),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The engine every test of this binary shares.
pub fn engine() -> Result<Engine, SpecError> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(e) = ENGINE.get() {
        return Ok(e.clone());
    }
    let built = Engine::new(EngineConfig::default()).map_err(SpecError::Engine)?;
    Ok(ENGINE.get_or_init(|| built).clone())
}

/// Where a test module comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source<'a> {
    /// `guest_<name>.wasm` built for `wasm32-wasip1`.
    Guest(&'a str),
    /// `guest_<name>.wasm` built for the given target.
    GuestFor(&'a str, &'a str),
    /// `spec-tests/wat/<name>.wat`.
    Wat(&'a str),
}

impl Source<'_> {
    fn key(&self) -> String {
        match self {
            Self::Guest(n) => format!("guest:{WASIP1}:{n}"),
            Self::GuestFor(t, n) => format!("guest:{t}:{n}"),
            Self::Wat(n) => format!("wat:{n}"),
        }
    }

    /// Reads the module's bytes.
    pub fn read(&self) -> Result<Vec<u8>, SpecError> {
        match self {
            Self::Guest(n) => read_guest(n),
            Self::GuestFor(t, n) => read(&guest_path_for(t, n)),
            Self::Wat(n) => read_wat(n),
        }
    }
}

/// Loads `source` with `config`. The module is compiled once per test
/// binary; later calls reuse the compiled code with another configuration.
pub fn plugin(source: Source<'_>, config: PluginConfig) -> Result<Plugin, SpecError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Plugin>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    let key = source.key();
    if let Some(p) = lock(cache).get(&key) {
        return Ok(p.with_config(config));
    }
    // Compile outside the lock: other tests may compile other modules meanwhile.
    let compiled = Plugin::load(&engine()?, &source.read()?, config.clone())?;
    lock(cache).entry(key).or_insert_with(|| compiled.clone());
    Ok(compiled)
}

/// A plugin configuration whose guest logs are all kept (level trace).
pub fn config(name: &str) -> PluginConfig {
    PluginConfig {
        log_level: LogLevel::Trace,
        ..PluginConfig::named(name)
    }
}

/// One captured guest log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The plugin's name.
    pub plugin: String,
    /// The level.
    pub level: LogLevel,
    /// The context that was current.
    pub context: ContextId,
    /// The message bytes.
    pub message: Vec<u8>,
}

impl Captured {
    /// The message as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.message).into_owned()
    }
}

/// A [`LogSink`] that records every line it gets. Clones share the record.
#[derive(Debug, Clone, Default)]
pub struct LogCapture {
    lines: Arc<Mutex<Vec<Captured>>>,
}

impl LogSink for LogCapture {
    fn log(&self, record: &LogRecord<'_>) {
        lock(&self.lines).push(Captured {
            plugin: record.plugin.to_owned(),
            level: record.level,
            context: record.context,
            message: record.message.to_vec(),
        });
    }
}

impl LogCapture {
    /// A new, empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record so far.
    pub fn records(&self) -> Vec<Captured> {
        lock(&self.lines).clone()
    }

    /// Every message so far, as text.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.lines).iter().map(Captured::text).collect()
    }

    /// The messages that start with `prefix`, with the prefix removed.
    pub fn with_prefix(&self, prefix: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter_map(|l| l.strip_prefix(prefix).map(str::to_owned))
            .collect()
    }

    /// True if some message is exactly `line`.
    pub fn contains(&self, line: &str) -> bool {
        lock(&self.lines)
            .iter()
            .any(|c| c.message == line.as_bytes())
    }

    /// The level of the first message exactly equal to `line`.
    pub fn level_of(&self, line: &str) -> Option<LogLevel> {
        lock(&self.lines)
            .iter()
            .find(|c| c.message == line.as_bytes())
            .map(|c| c.level)
    }

    /// Forgets every record.
    pub fn clear(&self) {
        lock(&self.lines).clear();
    }
}

/// Builds `builder` with a fresh [`LogCapture`] as its log sink.
pub fn env_with_logs(builder: HostEnvBuilder) -> (HostEnv, LogCapture) {
    let logs = LogCapture::new();
    (builder.log_sink(logs.clone()).build(), logs)
}

/// A header map from string pairs.
pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    HeaderMap::from_pairs(pairs.iter().copied())
}

/// A typical request: `GET <path>` to `example.com`, plus `extra`.
pub fn request(path: &str, extra: &[(&str, &str)]) -> HeaderMap {
    let mut map = headers(&[
        (":method", "GET"),
        (":path", path),
        (":authority", "example.com"),
        (":scheme", "http"),
    ]);
    for (k, v) in extra {
        map.append(k.as_bytes(), v.as_bytes());
    }
    map
}

/// A running VM with its environment and captured logs.
#[derive(Debug)]
pub struct Harness {
    /// The VM.
    pub vm: Vm,
    /// The environment it was started with.
    pub env: HostEnv,
    /// Its guest logs.
    pub logs: LogCapture,
}

impl Harness {
    /// Starts `plugin` in a new environment built from `builder`.
    pub fn new(plugin: &Plugin, builder: HostEnvBuilder) -> Result<Self, VmError> {
        let (env, logs) = env_with_logs(builder);
        let vm = Vm::new(plugin, &env)?;
        Ok(Self { vm, env, logs })
    }

    /// Starts `source` with `config` and the default environment.
    pub fn load(source: Source<'_>, config: PluginConfig) -> Result<Self, SpecError> {
        Self::load_with(source, config, HostEnv::builder())
    }

    /// Starts `source` with `config` in an environment built from `builder`.
    pub fn load_with(
        source: Source<'_>,
        config: PluginConfig,
        builder: HostEnvBuilder,
    ) -> Result<Self, SpecError> {
        let plugin = plugin(source, config)?;
        Ok(Self::new(&plugin, builder)?)
    }

    /// Starts another VM of `plugin` in the same environment (same shared
    /// data, queues, metrics and log capture).
    pub fn sibling(&self, plugin: &Plugin) -> Result<Vm, VmError> {
        Vm::new(plugin, &self.env)
    }

    /// Takes the queued effects.
    pub fn effects(&mut self) -> Vec<Effect> {
        self.vm.drain_effects().collect()
    }

    /// Creates a stream and runs `on_request_headers`.
    pub fn request_headers(
        &mut self,
        headers: HeaderMap,
        end_of_stream: bool,
    ) -> Result<(ContextId, FilterHeadersStatus), VmError> {
        let ctx = self.vm.create_http_context()?;
        let status = self.vm.on_request_headers(ctx, headers, end_of_stream)?;
        Ok((ctx, status))
    }
}

/// The values of `key` in `map`, as text.
pub fn values(map: &HeaderMap, key: &str) -> Vec<String> {
    map.get_all(key.as_bytes())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The first value of `key` in `map`, as text.
pub fn value(map: &HeaderMap, key: &str) -> Option<String> {
    map.get(key.as_bytes())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
