//! The small traits an embedder implements: a clock, a log sink, a property
//! provider and foreign functions. Each has a default that needs no setup.
//!
//! The core reads no clock of its own and does no I/O: time comes through
//! [`Clock`], guest logs leave through [`LogSink`], and host attributes come
//! from [`PropertyProvider`] (ABI reference §4.1, §10).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use vessel_abi::{LogLevel, Status};

use crate::ids::ContextId;

/// Wall-clock and monotonic time, in nanoseconds.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since the Unix epoch (`proxy_get_current_time_nanoseconds`,
    /// WASI `clock_time_get(REALTIME)`).
    fn wall_nanos(&self) -> u64;
    /// Monotonic nanoseconds from an arbitrary origin (WASI `clock_time_get(MONOTONIC)`).
    fn monotonic_nanos(&self) -> u64;
}

/// The default [`Clock`]: the operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall_nanos(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    fn monotonic_nanos(&self) -> u64 {
        use std::sync::OnceLock;
        use std::time::Instant;
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A fixed clock, for deterministic tests and `vessel test`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedClock {
    /// Value returned by [`Clock::wall_nanos`].
    pub wall_nanos: u64,
    /// Value returned by [`Clock::monotonic_nanos`].
    pub monotonic_nanos: u64,
}

impl Clock for FixedClock {
    fn wall_nanos(&self) -> u64 {
        self.wall_nanos
    }
    fn monotonic_nanos(&self) -> u64 {
        self.monotonic_nanos
    }
}

/// One guest log line.
#[derive(Debug, Clone, Copy)]
pub struct LogRecord<'a> {
    /// The plugin's name.
    pub plugin: &'a str,
    /// The level the guest asked for (WASI stdout is Info, stderr is Error).
    pub level: LogLevel,
    /// The context that was current when the guest logged.
    pub context: ContextId,
    /// The message bytes (not necessarily UTF-8).
    pub message: &'a [u8],
}

/// Where guest log lines go. Lines below the plugin's log level are dropped
/// before they reach the sink.
pub trait LogSink: Send + Sync + 'static {
    /// Receives one line.
    fn log(&self, record: &LogRecord<'_>);
}

/// The default [`LogSink`]: the `log` facade, target `vessel::guest`, with
/// Envoy's prefix `wasm log <plugin>: `.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFacade;

impl LogSink for LogFacade {
    fn log(&self, record: &LogRecord<'_>) {
        let level = match record.level {
            LogLevel::Trace => log::Level::Trace,
            LogLevel::Debug => log::Level::Debug,
            LogLevel::Info => log::Level::Info,
            LogLevel::Warn => log::Level::Warn,
            LogLevel::Error | LogLevel::Critical => log::Level::Error,
        };
        log::log!(
            target: "vessel::guest",
            level,
            "wasm log {}: {}",
            record.plugin,
            String::from_utf8_lossy(record.message)
        );
    }
}

/// Where a property lookup happens.
#[derive(Debug, Clone, Copy)]
pub struct PropertyScope<'a> {
    /// The plugin's name.
    pub plugin: &'a str,
    /// The context the lookup is for (a root context or a stream).
    pub context: ContextId,
    /// True if `context` is a root context (no stream information).
    pub is_root: bool,
}

/// Host attributes that the core does not know itself (`node`, `xds.*`,
/// `connection.*` ...). Values must already be in Envoy's encoding (ABI
/// reference §10.1); [`PropertyValue`](crate::PropertyValue) helps with that.
pub trait PropertyProvider: Send + Sync + 'static {
    /// Looks up a property by its path segments. `Ok(None)` means absent
    /// (the guest sees NOT_FOUND).
    fn get_property(
        &self,
        path: &[&[u8]],
        scope: PropertyScope<'_>,
    ) -> Result<Option<Vec<u8>>, Status>;
}

/// A foreign function (`proxy_call_foreign_function`) the embedder offers.
///
/// It gets the argument bytes and returns the result bytes, or a status the
/// guest sees. It runs synchronously inside the hostcall and must not block.
pub trait ForeignFunction: Send + Sync + 'static {
    /// Runs the function.
    fn call(&self, args: &[u8]) -> Result<Vec<u8>, Status>;
}

impl<F> ForeignFunction for F
where
    F: Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync + 'static,
{
    fn call(&self, args: &[u8]) -> Result<Vec<u8>, Status> {
        self(args)
    }
}

/// Shared handle to a foreign function.
pub type ForeignFn = Arc<dyn ForeignFunction>;

/// Randomness for WASI `random_get`.
pub trait Random: Send + Sync + 'static {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]) -> Result<(), Status>;
}

/// The default [`Random`]: the operating system's generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), Status> {
        getrandom::fill(buf).map_err(|_| Status::InternalFailure)
    }
}
