//! Scenario tests for proxy-wasm filters, for a filter author's `cargo
//! test`: the scenario format ([`Scenario`], `spec-tests/SCENARIOS.md`), its
//! checker ([`check`]) and vessel's in-process runner ([`Loaded`],
//! [`run_files`]), which drives vessel-host's filter manager
//! (`vessel_host::stream::HttpStream`, and `vessel_host::tcp::TcpStream` for
//! the TCP form's `connections`) over the script, on a scenario clock.
//!
//! ```no_run
//! let report = vessel_test::run_files(&["tests/hello.yaml"]).expect("loads");
//! assert!(report.passed(), "{}", report.render());
//! ```
//!
//! No proxy runs and nothing is opened on the network: HTTP and gRPC
//! callouts get the canned answers of the scenario's `clusters`. A scenario
//! that names a real Redis server (`clusters.<name>.redis`) needs
//! [`Services`] that carry the calls out; without them (the default,
//! [`NoServices`]) loading it is an [`Error::Invalid`] naming the key.
//! `vessel test`, the CLI, passes real ones.
//!
//! This crate depends on vessel-abi, vessel-host, serde and the YAML reader
//! only: no tokio, hyper, clap or notify (`cargo tree -p vessel-test`).

mod canned;
mod compare;
mod load;
mod runner;
pub mod scenario;
pub mod yaml;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vessel_host::{Engine, EngineConfig, RedisCallOutcome, RedisCallRequest};

pub use compare::{check, check_connection};
pub use runner::Loaded;
pub use scenario::Scenario;
pub use yaml::YamlError;

/// The real services a scenario may name, for the in-process runner. The
/// runner is synchronous: each call blocks until it has its answer, and
/// should bound its own time.
pub trait Services: Send + Sync {
    /// Carries out a Higress `proxy_redis_call` against the Redis server at
    /// `addr`.
    fn redis_call(&self, addr: SocketAddr, call: &RedisCallRequest) -> RedisCallOutcome;

    /// Empties the Redis server at `addr` before a scenario
    /// (`redis_flush: true`).
    fn redis_flush(&self, addr: SocketAddr) -> Result<(), String>;

    /// False for [`NoServices`]: a scenario that needs a service is then
    /// refused when it loads.
    fn provided(&self) -> bool {
        true
    }
}

/// No real services: the in-process runner opens no connection. A scenario
/// with a Redis cluster is refused when it loads.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoServices;

impl Services for NoServices {
    fn redis_call(&self, _: SocketAddr, _: &RedisCallRequest) -> RedisCallOutcome {
        RedisCallOutcome::Failed
    }

    fn redis_flush(&self, addr: SocketAddr) -> Result<(), String> {
        Err(format!(
            "the in-process runner opens no connection to {addr} without Services"
        ))
    }

    fn provided(&self) -> bool {
        false
    }
}

/// Why a scenario could not run at all.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The YAML is malformed, has an unknown key or a value of the wrong
    /// type.
    #[error("{path}: {error}")]
    Yaml {
        /// The scenario file.
        path: PathBuf,
        /// What is wrong, with the key path, line and column.
        error: YamlError,
    },
    /// A value is invalid.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The scenario file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The wasm is not a loadable filter.
    #[error("{path}: {key} `{wasm}`: {message}")]
    Plugin {
        /// The scenario file.
        path: PathBuf,
        /// The key that names the wasm (`plugin.wasm`, `plugins[1].wasm`).
        key: String,
        /// The wasm file.
        wasm: PathBuf,
        /// The load error.
        message: String,
    },
    /// The wasm engine cannot be built.
    #[error(transparent)]
    Engine(#[from] vessel_host::EngineError),
}

/// A request or response as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedMessage {
    /// The status code (responses).
    pub status: Option<u16>,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body (lossy UTF-8).
    pub body: String,
    /// Trailers.
    pub trailers: Vec<(String, String)>,
}

/// What happened to one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// What reached the upstream, if anything.
    pub upstream_request: Option<ObservedMessage>,
    /// What the client got, if anything.
    pub response: Option<ObservedMessage>,
    /// Guest log lines of this stream.
    pub logs: Vec<String>,
    /// The VM's failure, if it failed during or before this stream.
    pub vm_failure: Option<String>,
    /// The filter reset the stream.
    pub reset: bool,
    /// The stream never finished, and why.
    pub stalled: Option<String>,
    /// What the in-process runner could not carry out for this stream (an
    /// effect it has no canned answer for, say). Each one fails the stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// For a connection of the TCP form: what each side got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ObservedConnection>,
}

/// What one TCP connection of the TCP form showed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedConnection {
    /// Every byte the upstream got (lossy UTF-8).
    pub upstream_received: String,
    /// Every byte the client got (lossy UTF-8).
    pub client_received: String,
    /// The proxy closed (or half-closed) the upstream connection.
    pub upstream_closed: bool,
    /// The proxy closed (or half-closed) the client connection.
    pub client_closed: bool,
    /// The steps that failed (a `*_receive` that got other bytes, say),
    /// each naming its step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_failures: Vec<String>,
}

/// The result of one stream.
#[derive(Debug, Clone)]
pub struct StreamResult {
    /// The scenario file.
    pub file: PathBuf,
    /// 1-based stream number.
    pub index: usize,
    /// `METHOD path` of the request.
    pub label: String,
    /// What happened.
    pub observation: Observation,
    /// Failed expectations; empty means PASS.
    pub failures: Vec<String>,
}

/// The results of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One entry per stream.
    pub results: Vec<StreamResult>,
}

impl Report {
    /// True if every stream passed.
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.failures.is_empty())
    }

    /// Number of passing and failing streams.
    pub fn counts(&self) -> (usize, usize) {
        let failed = self
            .results
            .iter()
            .filter(|r| !r.failures.is_empty())
            .count();
        (self.results.len() - failed, failed)
    }

    /// One line per stream (PASS/FAIL, with the differences), then the totals.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            let verdict = if r.failures.is_empty() {
                "PASS"
            } else {
                "FAIL"
            };
            let _ = writeln!(
                out,
                "{verdict} {} [{}] {}",
                r.file.display(),
                r.index,
                r.label
            );
            for f in &r.failures {
                for (i, line) in f.lines().enumerate() {
                    let _ = writeln!(out, "    {}{line}", if i == 0 { "- " } else { "  " });
                }
            }
        }
        let (p, f) = self.counts();
        let _ = writeln!(out, "{p} passed, {f} failed");
        out
    }
}

fn label(stream: &scenario::Stream) -> String {
    let get = |name: &str| {
        stream
            .request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    };
    format!("{} {}", get(":method"), get(":path"))
}

/// Runs one scenario file with no real services ([`NoServices`]).
pub fn run_file(engine: &Engine, path: &Path) -> Result<Vec<StreamResult>, Error> {
    run_file_with(engine, path, Arc::new(NoServices))
}

/// Runs one scenario file; a Redis cluster's calls go to `services`.
pub fn run_file_with(
    engine: &Engine,
    path: &Path,
    services: Arc<dyn Services>,
) -> Result<Vec<StreamResult>, Error> {
    let mut loaded = Loaded::from_file_with(engine, path, services)?;
    let observations = loaded.run();
    if loaded.scenario.is_tcp() {
        return Ok(loaded
            .scenario
            .connections
            .iter()
            .zip(observations)
            .enumerate()
            .map(|(i, (conn, observation))| StreamResult {
                file: path.to_owned(),
                index: i + 1,
                label: "TCP connection".into(),
                failures: compare::check_connection(&conn.expect, &observation),
                observation,
            })
            .collect());
    }
    Ok(loaded
        .scenario
        .streams
        .iter()
        .zip(observations)
        .enumerate()
        .map(|(i, (stream, observation))| StreamResult {
            file: path.to_owned(),
            index: i + 1,
            label: label(stream),
            failures: check(&stream.expect, &observation),
            observation,
        })
        .collect())
}

/// Runs scenario files with a default engine and no real services. Stops
/// at the first file that cannot run at all (bad YAML, missing wasm, not a
/// filter, a Redis cluster).
pub fn run_files<P: AsRef<Path>>(paths: &[P]) -> Result<Report, Error> {
    run_files_with(paths, Arc::new(NoServices))
}

/// [`run_files`] with real services.
pub fn run_files_with<P: AsRef<Path>>(
    paths: &[P],
    services: Arc<dyn Services>,
) -> Result<Report, Error> {
    let engine = Engine::new(EngineConfig::default())?;
    let mut report = Report::default();
    for p in paths {
        report
            .results
            .extend(run_file_with(&engine, p.as_ref(), services.clone())?);
    }
    Ok(report)
}

/// Runs a scenario file and returns it with every `expect` replaced by what
/// was observed, as YAML (`vessel test --record`).
pub fn record_file(
    engine: &Engine,
    path: &Path,
    services: Arc<dyn Services>,
) -> Result<String, Error> {
    let mut loaded = Loaded::from_file_with(engine, path, services)?;
    let observations = loaded.run();
    let mut scenario = loaded.scenario.clone();
    for (stream, obs) in scenario.streams.iter_mut().zip(&observations) {
        stream.expect = compare::expectation_from(obs);
    }
    for (conn, obs) in scenario.connections.iter_mut().zip(&observations) {
        conn.expect = compare::connection_expectation_from(obs);
    }
    scenario.to_yaml().map_err(|error| Error::Yaml {
        path: path.to_owned(),
        error,
    })
}
