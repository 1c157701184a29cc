//! Remote wasm code (`vm_config.code.remote`, Envoy's `RemoteDataSource`):
//! the module is fetched with `GET <http_uri.uri>` through
//! `http_uri.cluster`, checked against `sha256` before anything compiles
//! it, and kept in an on-disk cache by digest.
//!
//! What happens, per filter whose code is [`WasmCode::Remote`]:
//!
//! 1. A digest this `Resolver` already holds (the filter is unchanged
//!    since the last start-up or reload, or another filter of the same
//!    config has the same digest) is used as it is: no fetch
//!    (`wasm_remote.reused`).
//! 2. Otherwise the module is fetched: an endpoint of the cluster (its
//!    balancer's pick; TLS and ALPN from its `UpstreamTlsContext`), `Host`
//!    from the URI's authority, the whole answer within `http_uri.timeout`.
//!    Anything but a 200 with a non-empty body whose sha256 is the
//!    configured one is a failed attempt, as in Envoy's
//!    `RemoteDataFetcher`; a failed attempt is tried again up to
//!    `retry_policy.num_retries` times, after a full-jitter backoff
//!    (`retry_back_off`), as Envoy's `RemoteAsyncDataProvider`. A success
//!    counts `wasm_remote.fetch_success` and writes the bytes to
//!    `<module cache>/remote/<sha256>.wasm` (a temporary file renamed into
//!    place).
//! 3. When every attempt failed (`wasm_remote.fetch_failure`), a cached
//!    copy whose bytes still have the digest is used, with a warning
//!    (`wasm_remote.cache_hit`).
//! 4. Without one, the filter cannot be built: [`RemoteError`] (a wrong
//!    digest names the expected and the actual one). A fail-open filter
//!    (`fail_open: true` / `failure_policy: FAIL_OPEN`) is left out of its
//!    chain instead, with an error logged (`wasm_remote.left_out`): its
//!    traffic passes, as Envoy's `createFilter` skips a fail-open filter
//!    whose VM could not be made.
//!
//! A resolved filter's code becomes [`WasmCode::Fetched`], which the filter
//! builders read like inline bytes. `vessel run` calls
//! `Resolver::resolve_all` on the bootstrap in `Reloader::apply`, through the
//! clusters of the config being built and before it builds filters, at
//! start-up and on every reload (a [`RemoteError`] refuses the reload);
//! `Resolver::resolve_filter` does one filter (an xDS update).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use vessel_host::{CacheConfig, FailurePolicy};
use vessel_hyper::tls::Connector;

use super::lb::Balancer;
use super::router::{Upstream, Upstreams};
use crate::config::{Bootstrap, RemoteCode, Terminal, WasmCode, WasmFilter};

/// The largest module a fetch accepts; a longer body fails the attempt.
pub const MAX_REMOTE_CODE_BYTES: usize = 128 << 20;

/// The subdirectory of the module cache that holds fetched modules.
pub const CACHE_SUBDIR: &str = "remote";

/// The `wasm_remote.*` counters of `/stats`.
#[derive(Debug, Default)]
pub(crate) struct RemoteStats {
    fetch_success: AtomicU64,
    fetch_failure: AtomicU64,
    cache_hit: AtomicU64,
    reused: AtomicU64,
    left_out: AtomicU64,
}

impl RemoteStats {
    /// `(name, value)` for `/stats`.
    pub(crate) fn counters(&self) -> [(&'static str, u64); 5] {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("wasm_remote.cache_hit", v(&self.cache_hit)),
            ("wasm_remote.fetch_failure", v(&self.fetch_failure)),
            ("wasm_remote.fetch_success", v(&self.fetch_success)),
            ("wasm_remote.left_out", v(&self.left_out)),
            ("wasm_remote.reused", v(&self.reused)),
        ]
    }
}

/// Why one fetch attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFailure {
    /// `http_uri.cluster` is not a cluster of `vessel run`.
    UnknownCluster,
    /// The cluster has no endpoint.
    NoEndpoint,
    /// No connection, or it broke before the answer was complete.
    Connection(String),
    /// The answer did not complete within `http_uri.timeout`.
    Timeout(Duration),
    /// The status was not 200.
    Status(u16),
    /// A 200 with an empty body (Envoy counts it as a failure too).
    EmptyBody,
    /// The body is longer than [`MAX_REMOTE_CODE_BYTES`].
    TooLarge,
    /// The body's sha256 is not the configured one.
    Digest {
        /// The digest of what was fetched (lowercase hex).
        actual: String,
    },
}

impl fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCluster => f.write_str("no such cluster"),
            Self::NoEndpoint => f.write_str("the cluster has no endpoint"),
            Self::Connection(e) => write!(f, "connection failed: {e}"),
            Self::Timeout(t) => write!(f, "no complete answer within {t:?}"),
            Self::Status(s) => write!(f, "status {s} (200 expected)"),
            Self::EmptyBody => f.write_str("the body is empty"),
            Self::TooLarge => write!(f, "the body exceeds {MAX_REMOTE_CODE_BYTES} bytes"),
            Self::Digest { actual } => write!(f, "the body's sha256 is {actual}"),
        }
    }
}

/// Why a filter's remote code cannot be had: a start-up error, a refused
/// reload (or, for xDS, a NACK).
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// What was fetched does not have the configured sha256, and no cached
    /// copy with that digest exists.
    #[error(
        "{filter}: sha256 mismatch for {uri}: expected {expected}, got {actual} \
         ({attempts} attempt(s); {cache})"
    )]
    Digest {
        /// `listener/filter`.
        filter: String,
        /// `http_uri.uri`.
        uri: String,
        /// The configured `sha256`.
        expected: String,
        /// The sha256 of the fetched bytes.
        actual: String,
        /// Attempts made.
        attempts: u32,
        /// What the cache had to say (`no cached copy in …`).
        cache: String,
    },
    /// Every attempt failed otherwise, and no cached copy exists.
    #[error(
        "{filter}: cannot fetch {uri} through cluster `{cluster}`: {reason} \
         ({attempts} attempt(s); {cache})"
    )]
    Fetch {
        /// `listener/filter`.
        filter: String,
        /// `http_uri.uri`.
        uri: String,
        /// `http_uri.cluster`.
        cluster: String,
        /// Why the last attempt failed.
        reason: FetchFailure,
        /// Attempts made.
        attempts: u32,
        /// What the cache had to say.
        cache: String,
    },
}

/// Fetches, verifies and caches remote code; keeps the modules of the last
/// resolved configs by digest so an unchanged filter is not fetched again.
pub(crate) struct Resolver {
    /// `<module cache>/remote`, if there is a module cache.
    cache_dir: Option<PathBuf>,
    stats: Arc<RemoteStats>,
    held: Mutex<Held>,
}

/// The modules a `Resolver` holds, by sha256.
#[derive(Default)]
struct Held {
    code: HashMap<String, Arc<Vec<u8>>>,
    /// The digests the previous successful `resolve_all` used (kept even if
    /// the newest config is refused after resolving).
    previous: HashSet<String>,
}

impl Resolver {
    /// A resolver caching in `<module_cache.dir>/remote`; each call
    /// fetches through the clusters it is given (those of the config being
    /// built).
    pub(crate) fn new(module_cache: &CacheConfig) -> Self {
        Self {
            cache_dir: module_cache.dir.as_ref().map(|d| d.join(CACHE_SUBDIR)),
            stats: Arc::default(),
            held: Mutex::default(),
        }
    }

    /// The `wasm_remote.*` counters.
    pub(crate) fn stats(&self) -> Arc<RemoteStats> {
        self.stats.clone()
    }

    /// Resolves the remote code of every wasm filter of `boot` (network
    /// and HTTP), leaving out the fail-open filters whose code cannot be
    /// had. On error `boot` is half resolved and must not be served.
    pub(crate) async fn resolve_all(
        &self,
        boot: &mut Bootstrap,
        upstreams: &Upstreams,
    ) -> Result<(), RemoteError> {
        let mut used = HashSet::new();
        for l in &mut boot.listeners {
            let name = l.name.clone();
            let chains = l
                .filter_chains
                .iter_mut()
                .chain(l.default_filter_chain.as_mut());
            for (ci, chain) in chains.enumerate() {
                let label = |kind: &str, fi: usize, f: &WasmFilter| {
                    format!(
                        "listener `{name}` filter chain #{ci} {kind} #{fi} `{}`",
                        f.name
                    )
                };
                self.resolve_list(&mut chain.network_filters, upstreams, &mut used, |fi, f| {
                    label("network wasm filter", fi, f)
                })
                .await?;
                if let Terminal::Http(h) = &mut chain.terminal {
                    self.resolve_list(&mut h.wasm_filters, upstreams, &mut used, |fi, f| {
                        label("wasm filter", fi, f)
                    })
                    .await?;
                }
            }
        }
        let mut held = self.lock();
        let keep: HashSet<String> = held.previous.union(&used).cloned().collect();
        held.code.retain(|sha, _| keep.contains(sha));
        held.previous = used;
        Ok(())
    }

    /// Resolves the remote filters of one list, removing the fail-open
    /// ones that cannot be had.
    async fn resolve_list(
        &self,
        filters: &mut Vec<WasmFilter>,
        upstreams: &Upstreams,
        used: &mut HashSet<String>,
        label: impl Fn(usize, &WasmFilter) -> String,
    ) -> Result<(), RemoteError> {
        let mut kept = Vec::with_capacity(filters.len());
        for (fi, mut f) in std::mem::take(filters).into_iter().enumerate() {
            let name = label(fi, &f);
            if self.resolve_filter(&mut f, &name, upstreams).await? {
                if let Some(r) = f.code.remote() {
                    used.insert(r.sha256.clone());
                }
                kept.push(f);
            }
        }
        *filters = kept;
        Ok(())
    }

    /// Resolves `f`'s code if it is [`WasmCode::Remote`] (other code is left
    /// alone). `Ok(false)`: it cannot be had and `f` is fail-open, so it
    /// must be left out (the error is logged). `label` names the filter in
    /// logs and errors.
    pub(crate) async fn resolve_filter(
        &self,
        f: &mut WasmFilter,
        label: &str,
        upstreams: &Upstreams,
    ) -> Result<bool, RemoteError> {
        let WasmCode::Remote(r) = &f.code else {
            return Ok(true);
        };
        let r = r.clone();
        let held = self.lock().code.get(&r.sha256).cloned();
        if let Some(code) = held {
            self.stats.reused.fetch_add(1, Ordering::Relaxed);
            log::debug!("{label}: module {} already held, not fetched", r.sha256);
            f.code = WasmCode::Fetched { remote: r, code };
            return Ok(true);
        }
        let (attempts, outcome) = self.fetch(&r, label, upstreams).await;
        let code = match outcome {
            Ok(bytes) => {
                self.stats.fetch_success.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "{label}: fetched {} ({} bytes, sha256 {})",
                    r.uri,
                    bytes.len(),
                    r.sha256
                );
                self.store(&r.sha256, &bytes, label);
                Arc::new(bytes)
            }
            Err(reason) => {
                self.stats.fetch_failure.fetch_add(1, Ordering::Relaxed);
                match self.cached(&r.sha256, label) {
                    Ok(bytes) => {
                        self.stats.cache_hit.fetch_add(1, Ordering::Relaxed);
                        log::warn!(
                            "{label}: cannot fetch {} ({reason}, {attempts} attempt(s)); \
                             using the cached copy {}",
                            r.uri,
                            self.cache_path(&r.sha256)
                                .map_or_else(String::new, |p| p.display().to_string())
                        );
                        Arc::new(bytes)
                    }
                    Err(cache) => {
                        let err = match reason {
                            FetchFailure::Digest { actual } => RemoteError::Digest {
                                filter: label.to_owned(),
                                uri: r.uri.clone(),
                                expected: r.sha256.clone(),
                                actual,
                                attempts,
                                cache,
                            },
                            reason => RemoteError::Fetch {
                                filter: label.to_owned(),
                                uri: r.uri.clone(),
                                cluster: r.cluster.clone(),
                                reason,
                                attempts,
                                cache,
                            },
                        };
                        if matches!(f.failure_policy, FailurePolicy::FailOpen) {
                            self.stats.left_out.fetch_add(1, Ordering::Relaxed);
                            log::error!(
                                "{err}; the filter is fail-open: it is left out and its \
                                 traffic passes"
                            );
                            return Ok(false);
                        }
                        return Err(err);
                    }
                }
            }
        };
        self.lock().code.insert(r.sha256.clone(), code.clone());
        f.code = WasmCode::Fetched { remote: r, code };
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fetches `r` with its retries: the attempts made, and the verified
    /// bytes or why the last attempt failed.
    async fn fetch(
        &self,
        r: &RemoteCode,
        label: &str,
        upstreams: &Upstreams,
    ) -> (u32, Result<Vec<u8>, FetchFailure>) {
        let Some(upstream) = upstreams.get(&r.cluster) else {
            return (0, Err(FetchFailure::UnknownCluster));
        };
        let client = client(upstream);
        let (authority, path) = host_and_path(&r.uri);
        let mut last = FetchFailure::NoEndpoint;
        let attempts = r.retry.num_retries.saturating_add(1);
        for attempt in 0..attempts {
            if attempt > 0 {
                let wait = Balancer::backoff(r.retry.base_interval, r.retry.max_interval, attempt);
                log::debug!("{label}: retrying {} in {wait:?}", r.uri);
                tokio::time::sleep(wait).await;
            }
            let outcome = fetch_once(upstream, &client, authority, path, r.timeout)
                .await
                .and_then(|bytes| {
                    let actual = hex(&Sha256::digest(&bytes));
                    if actual == r.sha256 {
                        Ok(bytes)
                    } else {
                        Err(FetchFailure::Digest { actual })
                    }
                });
            match outcome {
                Ok(bytes) => return (attempt + 1, Ok(bytes)),
                Err(e) => {
                    log::warn!(
                        "{label}: fetching {} (attempt {} of {attempts}): {e}",
                        r.uri,
                        attempt + 1
                    );
                    last = e;
                }
            }
        }
        (attempts, Err(last))
    }

    /// Where the module with digest `sha256` is cached.
    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("{sha256}.wasm")))
    }

    /// Writes `bytes` (whose digest is `sha256`) to the cache, through a
    /// temporary file renamed into place. A failure is logged only.
    fn store(&self, sha256: &str, bytes: &[u8], label: &str) {
        let (Some(dir), Some(path)) = (self.cache_dir.as_ref(), self.cache_path(sha256)) else {
            return;
        };
        if let Err(e) = write_atomically(dir, &path, bytes) {
            log::warn!(
                "{label}: cannot cache the module in {}: {e}",
                path.display()
            );
        }
    }

    /// The cached module with digest `sha256`, its bytes checked; or what
    /// to say about the cache in an error.
    fn cached(&self, sha256: &str, label: &str) -> Result<Vec<u8>, String> {
        let Some(path) = self.cache_path(sha256) else {
            return Err("no module cache (--no-module-cache)".to_owned());
        };
        let none = || format!("no cached copy at {}", path.display());
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(none()),
            Err(e) => {
                return Err(format!(
                    "cannot read the cached copy {}: {e}",
                    path.display()
                ));
            }
        };
        let actual = hex(&Sha256::digest(&bytes));
        if actual != sha256 {
            log::warn!(
                "{label}: the cached copy {} has sha256 {actual}, not {sha256}: ignored and removed",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            return Err(format!(
                "the cached copy {} was corrupt (sha256 {actual})",
                path.display()
            ));
        }
        Ok(bytes)
    }
}

type FetchClient = Client<Connector, Empty<Bytes>>;

/// A client for `upstream`'s endpoints: its connect timeout, TLS and
/// protocol.
fn client(upstream: &Upstream) -> FetchClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(upstream.connect_timeout()));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .http2_only(upstream.http2())
        .pool_max_idle_per_host(0)
        .build(Connector::new(connector, upstream.tls().cloned()))
}

/// `(authority, path)` of an absolute URI (the reader checked its form);
/// the path is `/` when absent, as Envoy's `extractHostPathFromUri`.
fn host_and_path(uri: &str) -> (&str, &str) {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    }
}

/// One attempt: `GET path` with `Host: authority` to an endpoint of
/// `upstream`, the whole answer within `timeout` (zero: no limit).
async fn fetch_once(
    upstream: &Upstream,
    client: &FetchClient,
    authority: &str,
    path: &str,
    timeout: Duration,
) -> Result<Vec<u8>, FetchFailure> {
    let endpoint = upstream
        .balancer
        .pick(&[], 1)
        .ok_or(FetchFailure::NoEndpoint)?;
    let req = Request::get(format!("http://{}{path}", endpoint.addr))
        .header(header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchFailure::Connection(e.to_string()))?;
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| FetchFailure::Connection(error_chain(&e)))?;
        if resp.status() != http::StatusCode::OK {
            return Err(FetchFailure::Status(resp.status().as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_REMOTE_CODE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchFailure::TooLarge
                } else {
                    FetchFailure::Connection(e.to_string())
                }
            })?
            .to_bytes();
        if body.is_empty() {
            return Err(FetchFailure::EmptyBody);
        }
        Ok(body.to_vec())
    };
    if timeout.is_zero() {
        return call.await;
    }
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| FetchFailure::Timeout(timeout))?
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Writes `bytes` to `path` (in `dir`, created private) through a uniquely
/// named temporary file in `dir` renamed over `path`.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map_or_else(
        || std::ffi::OsString::from("module"),
        std::ffi::OsStr::to_os_string,
    );
    let mut tmp_name = name;
    tmp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn host_and_path_split_like_envoy() {
        assert_eq!(
            host_and_path("http://example.com/a/b.wasm?x=1"),
            ("example.com", "/a/b.wasm?x=1")
        );
        assert_eq!(host_and_path("https://h:8443"), ("h:8443", "/"));
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(
            hex(&Sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn atomic_write_leaves_only_the_file() {
        let dir = std::env::temp_dir().join(format!("vessel-remote-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("x.wasm");
        write_atomically(&dir, &path, b"one").unwrap();
        write_atomically(&dir, &path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.wasm")]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
