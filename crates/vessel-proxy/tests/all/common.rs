//! Helpers shared by the `vessel test` integration tests: temporary
//! directories (std only) and the paths of the spec-test guests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, uniquely named directory.
    pub(crate) fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "vessel-proxy-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    pub(crate) fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The repository root.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `spec-tests/scenarios`.
pub(crate) fn scenarios_dir() -> PathBuf {
    repo_root().join("spec-tests/scenarios")
}

/// The absolute path of `guest_<name>.wasm`, which must have been built
/// (`cargo xtask guests`).
pub(crate) fn guest(name: &str) -> String {
    let p = repo_root().join(format!(
        "spec-tests/guests/target/wasm32-wasip1/release/guest_{name}.wasm"
    ));
    assert!(
        p.is_file(),
        "{} is missing: build the guests with `cargo xtask guests`",
        p.display()
    );
    p.canonicalize()
        .expect("canonical guest path")
        .display()
        .to_string()
}

/// The absolute path of `spec-tests/wat/<name>.wat`.
pub(crate) fn wat(name: &str) -> String {
    let p = repo_root().join(format!("spec-tests/wat/{name}.wat"));
    p.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .display()
        .to_string()
}

/// A scenario for `guest_hello` with its two classic streams, all passing.
pub(crate) fn hello_scenario() -> String {
    format!(
        r#"plugin:
  wasm: "{wasm}"
streams:
  - request:
      headers: [[":method", "GET"], [":path", "/hello"]]
    expect:
      upstream_reached: false
      response:
        status: 200
        headers_include: [["hello", "World"]]
        body: "Hello, World!\n"
  - request:
      headers: [[":method", "GET"], [":path", "/other"]]
      body: "ping"
    upstream:
      headers: [[":status", "200"]]
      body: "from upstream"
    expect:
      upstream_request:
        headers_include: [["x-hello", "seen"]]
        body: "ping"
      response:
        status: 200
        body: "from upstream"
"#,
        wasm = guest("hello")
    )
}

/// Held while a scenario file that uses the shared Redis server runs: the
/// tests of this binary run at the same time, and two runs of one file
/// (the suite in-process, the backends comparison) would count in the same
/// keys, or `FLUSHALL` under each other.
pub(crate) fn redis_guard(file: &Path) -> Option<std::sync::MutexGuard<'static, ()>> {
    let text = std::fs::read_to_string(file).ok()?;
    let scenario = vessel_proxy::harness::Scenario::from_yaml(&text).ok()?;
    scenario
        .clusters
        .values()
        .any(|c| c.redis.is_some())
        .then(redis_lock)
}

/// The lock of the shared Redis server: held by a test whose keys must not
/// be flushed by a scenario file's `redis_flush` meanwhile.
pub(crate) fn redis_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
