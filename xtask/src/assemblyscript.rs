//! Builds the AssemblyScript guests of `spec-tests/as-guests` (filters
//! written with the AssemblyScript proxy-wasm SDK, `@solo-io/proxy-runtime`).
//!
//! * `npm ci` installs the pinned packages of `package-lock.json` into
//!   `spec-tests/as-guests/node_modules` (git-ignored), when they are
//!   missing or older than the lock file.
//! * Each `assembly/<name>.ts` is compiled the way the SDK's README says:
//!   `asc assembly/<name>.ts -b build/<name>.wasm --use abort=abort_proc_exit
//!   --optimize`, into `spec-tests/as-guests/build/` (git-ignored).
//!
//! `assemblyscript` stays on 0.17.x: the SDK imports `rt/index-full`, which
//! newer compilers dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where the AssemblyScript guests live, relative to the repository root.
const DIR: &str = "spec-tests/as-guests";

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn run_in(dir: &Path, cmd: &mut Command) -> Result<()> {
    eprintln!("==> (in {}) {}", dir.display(), describe(cmd));
    let status = cmd
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed with {status}", describe(cmd));
    }
    Ok(())
}

/// Fails with install instructions unless `tool --version` runs.
fn require(tool: &str) -> Result<()> {
    if crate::runs(tool, "--version") {
        return Ok(());
    }
    bail!(
        "`{tool}` is needed to build the AssemblyScript guests in {DIR} but was not found. \
         Install Node.js and npm, e.g. `apt-get install nodejs npm` (Debian/Ubuntu), then \
         run `cargo xtask guests` again."
    )
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// True when `out` exists and is newer than every path in `inputs`.
fn up_to_date(out: &Path, inputs: &[PathBuf]) -> bool {
    let Some(built) = modified(out) else {
        return false;
    };
    inputs
        .iter()
        .all(|i| modified(i).is_some_and(|t| t <= built))
}

/// The guest sources: `assembly/*.ts`, sorted.
fn sources(dir: &Path) -> Result<Vec<PathBuf>> {
    let assembly = dir.join("assembly");
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(&assembly).with_context(|| format!("reading {}", assembly.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "ts") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Installs the npm packages if needed and compiles every guest into
/// `spec-tests/as-guests/build/<name>.wasm`.
pub(crate) fn build(root: &Path) -> Result<()> {
    let dir = root.join(DIR);
    require("node")?;
    require("npm")?;

    let lock = dir.join("package-lock.json");
    let installed = dir.join("node_modules/.package-lock.json");
    let asc = dir.join("node_modules/assemblyscript/bin/asc");
    if !asc.exists() || !up_to_date(&installed, &[lock.clone(), dir.join("package.json")]) {
        run_in(
            &dir,
            Command::new("npm").args(["ci", "--no-audit", "--no-fund"]),
        )?;
    }
    if !asc.exists() {
        bail!(
            "npm ci did not install the AssemblyScript compiler ({} is missing)",
            asc.display()
        );
    }

    std::fs::create_dir_all(dir.join("build"))?;
    for src in sources(&dir)? {
        let name = src
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("guest source without a name")?;
        let rel_src = format!("assembly/{name}.ts");
        let rel_out = format!("build/{name}.wasm");
        if up_to_date(&dir.join(&rel_out), &[src.clone(), installed.clone()]) {
            continue;
        }
        run_in(
            &dir,
            Command::new("node").arg(&asc).args([
                rel_src.as_str(),
                "-b",
                rel_out.as_str(),
                "--use",
                "abort=abort_proc_exit",
                "--optimize",
            ]),
        )?;
    }
    Ok(())
}
