//! `cargo xtask bench instructions`: the instructions `vessel run` executes
//! per request, without and with the benchmark header filter
//! (`examples/bench/{without,with}_filter.yaml`, one worker, a direct
//! response), counted by valgrind's callgrind.
//!
//! The wrk benchmark (`cargo xtask bench e2e`) gives the filter's cost in
//! µs, but on a shared 2-core machine its rounds spread from 5 to 25 µs.
//! An instruction count does not depend on the machine's load: it is the
//! number to compare two trees' pumps with. It leaves out what the kernel
//! does and what instructions cost (cache misses, waits), so it does not
//! replace the µs figure; Envoy is not measured (V8 under valgrind is not
//! representative).
//!
//! How: `vessel run --no-pooling --compilation cranelift` under `valgrind
//! --tool=callgrind --instr-atstart=no` (the pooling allocator reserves
//! more address space than valgrind allows); after wrk warmed it up for
//! [`WARMUP`], `callgrind_control -i on` starts the count, wrk runs for
//! [`MEASURE`] (`-t1 -c8 -H 'x-bench: 1'`), `callgrind_control -i off`
//! stops it and `-d` writes it out. Instructions per request = the dump's
//! total (every thread of the process) / the requests wrk completed.
//! Needs `valgrind` and `wrk` (Debian packages); without them it prints a
//! skip (an error under `CI=true`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::ttfb::{Kill, wait_listening_within};
use crate::{describe, release_vessel, root, tool_or_skip, wrk_failures};

/// wrk's run before the count starts (the filter's VM, the connections).
const WARMUP: &str = "5s";
/// wrk's counted run.
const MEASURE: &str = "10s";
const LISTEN: &str = "127.0.0.1:10010";
const URL: &str = "http://127.0.0.1:10010/x";

/// Runs `cmd`, returning its stdout; fails with its stderr if it fails.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            describe(cmd),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The requests wrk completed (`N requests in ...`).
fn wrk(duration: &str) -> Result<u64> {
    let text =
        output(Command::new("wrk").args(["-t1", "-c8", "-d", duration, "-H", "x-bench: 1", URL]))?;
    wrk_failures(&text, URL)?;
    text.lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in")
                .map(|(n, _)| n.to_owned())
        })
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("wrk printed no request count:\n{text}"))
}

/// The `totals:` line of a callgrind dump.
fn totals(dump: &Path) -> Result<u64> {
    let text =
        std::fs::read_to_string(dump).with_context(|| format!("reading {}", dump.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no totals in {}", dump.display()))
}

/// Instructions per request of `vessel` serving `config`.
fn per_request(vessel: &Path, config: &str) -> Result<f64> {
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let stem = Path::new(config)
        .file_stem()
        .context("a config file name")?
        .to_string_lossy()
        .into_owned();
    let out = dir.join(format!("callgrind.{stem}"));
    // The count is dumped to `<out>.1`; the process writes `<out>` (empty:
    // the count is off by then) when it is killed.
    let dump = PathBuf::from(format!("{}.1", out.display()));
    let _ = std::fs::remove_file(&dump);
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg("--instr-atstart=no")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(vessel)
        .args(["run", "-c", config, "--concurrency", "1"])
        .args(["--no-pooling", "--compilation", "cranelift"])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = Kill(
        cmd.spawn()
            .with_context(|| format!("starting {}", describe(&cmd)))?,
    );
    let pid = child.0.id().to_string();
    // Under valgrind, start-up (and a Cranelift compile on a module-cache
    // miss) takes tens of seconds.
    wait_listening_within(LISTEN, Duration::from_secs(300))?;
    wrk(WARMUP)?;
    output(Command::new("callgrind_control").args(["-i", "on", &pid]))?;
    let requests = wrk(MEASURE)?;
    output(Command::new("callgrind_control").args(["-i", "off", &pid]))?;
    output(Command::new("callgrind_control").args(["-d", &pid]))?;
    drop(child);
    if requests == 0 {
        bail!("wrk completed no request against {config}");
    }
    let n = totals(&dump)?;
    eprintln!("    {config}: {n} instructions over {requests} requests");
    Ok(n as f64 / requests as f64)
}

/// The benchmark.
pub(crate) fn instructions_bench() -> Result<()> {
    for (tool, package) in [
        ("valgrind", "valgrind"),
        ("callgrind_control", "valgrind"),
        ("wrk", "wrk"),
    ] {
        if !tool_or_skip(tool, package, "the instruction count")? {
            return Ok(());
        }
    }
    let vessel = release_vessel()?;
    let without = per_request(&vessel, "examples/bench/without_filter.yaml")?;
    let with = per_request(&vessel, "examples/bench/with_filter.yaml")?;
    eprintln!(
        "==> instructions per request (callgrind, vessel run --concurrency 1, wrk -t1 -c8 -d{MEASURE}, direct response):\n\
         \x20   without filter {without:.0}, with the header filter {with:.0}: the filter adds {:.0}",
        with - without
    );
    Ok(())
}
