//! The differential runner against real Envoy on a few scenario files:
//! each runs in-process, through `vessel run` and through Envoy, and must
//! agree with Envoy or differ only by the deviations it lists.
//!
//! Envoy is found through `VESSEL_ENVOY` (`cargo xtask test` downloads it
//! and sets the variable). Without it each test says so and does nothing
//! (under `CI=true` it fails instead);
//! the full run is `cargo xtask envoy-diff`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::path::{Path, PathBuf};

use vessel_host::{Engine, EngineConfig};
use vessel_proxy::harness::diff::{self, Options, Verdict};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn options(envoy: PathBuf) -> Options {
    let md = std::fs::read_to_string(root().join("spec-tests/DEVIATIONS.md")).unwrap();
    Options {
        vessel: PathBuf::from(env!("CARGO_BIN_EXE_vessel")),
        envoy,
        known_deviations: diff::deviation_ids(&md),
        backends: Vec::new(),
        module_cache: vessel_host::CacheConfig::user_default(),
    }
}

/// The `chain_*.yaml` files (several plugins per stream).
fn chain_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("spec-tests/scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("chain_"))
        })
        .collect();
    files.sort();
    files
}

/// Files that agree on all three backends, with no deviation: every
/// backend must pass and match Envoy.
#[test]
fn scenarios_agree_with_envoy() {
    let Some(envoy) = vessel_testkit::envoy_from_env("scenarios_agree_with_envoy") else {
        return;
    };
    let options = options(envoy);
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    for name in [
        "hello.yaml",
        "envoy_on_log_order.yaml",
        "envoy_non_utf8_headers.yaml",
        "envoy_queue_across_vms.yaml",
    ] {
        let file = root().join("spec-tests/scenarios").join(name);
        let r = diff::diff_file(&engine, &options, &file).unwrap();
        assert!(
            r.problems.is_empty(),
            "{name}: {:?}\n{:#?}",
            r.problems,
            r.details
        );
        assert_eq!(
            r.verdicts,
            [Verdict::Pass, Verdict::Pass, Verdict::Pass],
            "{name}: {:#?}",
            r.details
        );
    }
}

/// A file whose in-process run differs from Envoy on purpose (H5: a real
/// upstream adds `date` and `content-length`, which a guest that counts the
/// response headers sees; the canned one does not): the difference is
/// seen, and accepted only because the file lists it. `vessel run` matches
/// Envoy.
#[test]
fn listed_deviations_are_the_only_accepted_differences() {
    let Some(envoy) =
        vessel_testkit::envoy_from_env("listed_deviations_are_the_only_accepted_differences")
    else {
        return;
    };
    let mut options = options(envoy);
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let file = root().join("spec-tests/scenarios/v01_headers.yaml");
    let r = diff::diff_file(&engine, &options, &file).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.verdicts[1], Verdict::Pass, "{:#?}", r.details);
    assert_eq!(r.verdicts[2], Verdict::Pass, "{:#?}", r.details);
    assert_eq!(
        r.verdicts[0],
        Verdict::Differs,
        "in-process should differ (H5)"
    );
    assert!(
        r.details[0]
            .iter()
            .any(|d| d.contains("v01: response num_headers=")),
        "{:#?}",
        r.details[0]
    );
    // Without H5 in DEVIATIONS.md the same file fails the run.
    options.known_deviations.remove("H5");
    let r = diff::diff_file(&engine, &options, &file).unwrap();
    assert!(
        r.problems.iter().any(|p| p.contains("`H5`")),
        "{:?}",
        r.problems
    );
}

/// Files that pin the fixed differences of `vessel run` (the connection
/// manager's headers, the upstream authority, chunked responses, HTTP/1
/// body ends, gRPC clusters, connection failures of a callout): `vessel
/// run` must pass and equal Envoy with no deviation listed for it.
#[test]
fn vessel_run_matches_envoy_without_deviations() {
    let Some(envoy) = vessel_testkit::envoy_from_env("vessel_run_matches_envoy_without_deviations")
    else {
        return;
    };
    let options = options(envoy);
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    for name in [
        "envoy_hcm_request_headers.yaml",
        "envoy_upstream_host.yaml",
        "envoy_chunked_response.yaml",
        "envoy_http1_body_end.yaml",
        "headers.yaml",
        "headers_trailers.yaml",
        "grpc_call.yaml",
        "http_call_unreachable.yaml",
        "bodies.yaml",
    ] {
        let file = root().join("spec-tests/scenarios").join(name);
        let r = diff::diff_file(&engine, &options, &file).unwrap();
        assert!(
            r.deviations.vessel_run.is_empty(),
            "{name} lists vessel_run deviations"
        );
        assert!(
            r.problems.is_empty(),
            "{name}: {:?}\n{:#?}",
            r.problems,
            r.details
        );
        assert_eq!(r.verdicts[1], Verdict::Pass, "{name}: {:#?}", r.details[1]);
        assert_eq!(r.verdicts[2], Verdict::Pass, "{name}: {:#?}", r.details[2]);
    }
}

/// Every chain file passes on Envoy, the oracle, and `vessel run` accepts
/// its generated bootstrap (several wasm filters, each with its own name,
/// VM, configuration and failure policy) and serves its streams. Only those
/// two backends run (`Options::backends`); the in-process one reports the
/// files as not run.
#[test]
fn chain_files_pass_on_envoy_and_vessel_run_accepts_them() {
    let Some(envoy) =
        vessel_testkit::envoy_from_env("chain_files_pass_on_envoy_and_vessel_run_accepts_them")
    else {
        return;
    };
    let mut options = options(envoy);
    options.backends = vec![diff::Backend::VesselRun, diff::Backend::Envoy];
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let files = chain_files();
    assert!(files.len() >= 8, "{files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let r = diff::diff_file(&engine, &options, &file).unwrap();
        assert_eq!(r.verdicts[2], Verdict::Pass, "{name}: {:#?}", r.details[2]);
        assert!(
            matches!(r.verdicts[0], Verdict::NotRun(_)),
            "{name}: {:?}",
            r.verdicts[0]
        );
        assert!(
            !matches!(r.verdicts[1], Verdict::NotRun(_) | Verdict::Error(_)),
            "{name}: vessel run did not run the chain: {:?}",
            r.verdicts[1]
        );
    }
}
