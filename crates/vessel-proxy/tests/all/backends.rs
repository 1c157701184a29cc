//! One scenario runner, two backends: every scenario file that `vessel run`
//! can express runs both in-process and through a real `vessel run`
//! process. Every file must meet all its expectations through `vessel run`
//! too, and for every stream both must agree on the response status and
//! body (only the status for [`VARYING_BODIES`]), except where the file
//! lists the in-process buffer-limit deviation
//! (`spec-tests/DEVIATIONS.md` H7: `vessel run` speaks HTTP/2 to files with
//! trailers) and the two streams ended differently (a response vs a
//! reset).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::path::{Path, PathBuf};

use vessel_host::{CacheConfig, Engine, EngineConfig};
use vessel_proxy::harness::{check, run_file, via_run};

fn files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = Vec::new();
    for dir in ["spec-tests/scenarios", "examples/scenarios"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Files whose expectations need not hold through `vessel run` (none:
/// every file that runs there meets all its expectations).
const PARTIAL: &[&str] = &[];

/// Files whose response bodies measure the run, so the two backends cannot
/// agree on them byte for byte; their statuses are compared, and their
/// bodies only through the file's own expectations (which both backends
/// must meet).
const VARYING_BODIES: &[(&str, &str)] = &[(
    "higress_gpustack_token_usage.yaml",
    "the usage chunk's timing fields (tokens_per_second, time_to_first_token_ms, \
     time_per_output_token_ms) are measured",
)];

/// Why a file cannot run on this machine: the Higress plugins are
/// downloaded by `cargo xtask test` (into target/higress), and a `redis`
/// cluster needs the server whose address `cargo xtask test` puts in
/// VESSEL_REDIS.
fn missing_prerequisite(file: &Path) -> Option<String> {
    let scenario =
        vessel_proxy::harness::Scenario::from_yaml(&std::fs::read_to_string(file).ok()?).ok()?;
    for plugin in scenario.chain().ok()? {
        let wasm = file.parent()?.join(&plugin.wasm);
        if !wasm.exists() {
            return Some(format!("{} is not downloaded", wasm.display()));
        }
    }
    scenario
        .clusters
        .values()
        .find_map(|c| c.redis_address().err())
}

#[test]
fn scenarios_agree_in_process_and_through_vessel_run() {
    let vessel = Path::new(env!("CARGO_BIN_EXE_vessel"));
    // The user's module cache, as `vessel run` uses (the Go plugins take
    // seconds each to compile).
    let engine = Engine::new(EngineConfig {
        cache: CacheConfig::user_default(),
        ..EngineConfig::default()
    })
    .expect("the default engine builds");
    let mut ran = 0;
    let mut problems = Vec::new();
    for file in files() {
        if let Some(why) = missing_prerequisite(&file) {
            eprintln!("skipped {}: {why}", file.display());
            continue;
        }
        let redis = crate::common::redis_guard(&file);
        let in_process = run_file(&engine, &file).expect("in-process run");
        let Some(via) = via_run::run_file_via_vessel_run(vessel, &file).expect("vessel run") else {
            continue;
        };
        drop(redis);
        ran += 1;
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let scenario =
            vessel_proxy::harness::Scenario::from_yaml(&std::fs::read_to_string(&file).unwrap())
                .unwrap();
        // A file whose `deviations.vessel_run` names DEVIATIONS.md entries
        // may differ through `vessel run` (the differential runner checks
        // that the entries exist).
        let listed = !scenario.deviations.vessel_run.is_empty();
        if scenario.is_tcp() {
            // The TCP form: each connection's expectations hold through
            // `vessel run`, and both sides got the same bytes.
            for (a, b) in in_process.iter().zip(&via) {
                let expect = &scenario.connections[a.index - 1].expect;
                for f in vessel_proxy::harness::check_connection(expect, b) {
                    problems.push(format!("{name} [{}] vessel run: {f}", a.index));
                }
                let bytes = |o: &vessel_proxy::harness::Observation| {
                    o.connection
                        .as_ref()
                        .map(|c| (c.upstream_received.clone(), c.client_received.clone()))
                };
                if bytes(&a.observation) != bytes(b) {
                    problems.push(format!(
                        "{name} [{}]: in-process {:?}, vessel run {:?}",
                        a.index,
                        bytes(&a.observation),
                        bytes(b)
                    ));
                }
            }
            continue;
        }
        for (a, b) in in_process.iter().zip(&via) {
            let expect = &scenario.streams[a.index - 1].expect;
            for f in check(expect, b) {
                let line = format!("{name} [{}] vessel run: {f}", a.index);
                if !PARTIAL.contains(&name.as_str()) && !listed {
                    problems.push(line);
                } else {
                    eprintln!("known difference: {line}");
                }
            }
            let status =
                |o: &vessel_proxy::harness::Observation| o.response.as_ref().and_then(|r| r.status);
            let body = |o: &vessel_proxy::harness::Observation| {
                o.response.as_ref().map(|r| r.body.clone())
            };
            // A stream the in-process driver reports stalled (a VM failed
            // under a paused stream, as in Envoy) gets its failure policy's
            // answer from vessel-hyper: DEVIATIONS.md A1.
            let stalled = a.observation.stalled.is_some();
            // Over HTTP/2 the stream window, not `buffer_limit`, limits
            // what a filter buffers (H7).
            let framing = scenario.deviations.in_process.iter().any(|d| d == "H7")
                && a.observation.reset != b.reset;
            let varying = VARYING_BODIES.iter().any(|(f, _)| *f == name);
            if !stalled
                && !framing
                && (status(&a.observation) != status(b)
                    || (!varying && body(&a.observation) != body(b)))
            {
                let problem = format!(
                    "{name} [{}]: in-process {:?} {:?}, vessel run {:?} {:?}",
                    a.index,
                    status(&a.observation),
                    body(&a.observation),
                    status(b),
                    body(b)
                );
                if listed {
                    eprintln!("listed deviation: {problem}");
                } else {
                    problems.push(problem);
                }
            }
        }
    }
    eprintln!("{ran} scenario files ran on both backends");
    assert!(ran >= 30, "only {ran} files ran on both backends");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
