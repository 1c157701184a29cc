//! The differential runner against real Envoy on a few scenario files:
//! each runs in-process, through `vessel run` and through Envoy, and must
//! agree with Envoy or differ only by the deviations it lists.
//!
//! Envoy is found through `VESSEL_ENVOY` (`cargo xtask test` downloads it
//! and sets the variable). Without it the test says so and does nothing;
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

fn envoy() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("VESSEL_ENVOY")?);
    assert!(p.is_file(), "VESSEL_ENVOY={} is not a file", p.display());
    Some(p)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn options(envoy: PathBuf) -> Options {
    let md = std::fs::read_to_string(root().join("spec-tests/DEVIATIONS.md")).unwrap();
    Options {
        vessel: PathBuf::from(env!("CARGO_BIN_EXE_vessel")),
        envoy,
        known_deviations: diff::deviation_ids(&md),
    }
}

/// Files that agree on all three backends, with no deviation: every
/// backend must pass and match Envoy.
#[test]
fn scenarios_agree_with_envoy() {
    let Some(envoy) = envoy() else {
        eprintln!("SKIPPED: VESSEL_ENVOY is not set (cargo xtask test sets it)");
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

/// A file whose in-process run differs from Envoy on purpose (H4: over
/// HTTP/1.1 Envoy reports the end of a body in a callback of its own; the
/// in-process driver's last chunk carries it): the difference is seen, and
/// accepted only because the file lists it. `vessel run` matches Envoy.
#[test]
fn listed_deviations_are_the_only_accepted_differences() {
    let Some(envoy) = envoy() else {
        eprintln!("SKIPPED: VESSEL_ENVOY is not set (cargo xtask test sets it)");
        return;
    };
    let mut options = options(envoy);
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let file = root().join("spec-tests/scenarios/envoy_http1_body_end.yaml");
    let r = diff::diff_file(&engine, &options, &file).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.verdicts[1], Verdict::Pass, "{:#?}", r.details);
    assert_eq!(r.verdicts[2], Verdict::Pass, "{:#?}", r.details);
    assert_eq!(
        r.verdicts[0],
        Verdict::Differs,
        "in-process should differ (H4)"
    );
    assert!(
        r.details[0]
            .iter()
            .any(|d| d.contains("request-body chunk size=0 eos=true")),
        "{:#?}",
        r.details[0]
    );
    // Without H4 in DEVIATIONS.md the same file fails the run.
    options.known_deviations.remove("H4");
    let r = diff::diff_file(&engine, &options, &file).unwrap();
    assert!(
        r.problems.iter().any(|p| p.contains("`H4`")),
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
    let Some(envoy) = envoy() else {
        eprintln!("SKIPPED: VESSEL_ENVOY is not set (cargo xtask test sets it)");
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
        assert!(r.problems.is_empty(), "{name}: {:?}", r.problems);
        assert_eq!(r.verdicts[1], Verdict::Pass, "{name}: {:#?}", r.details[1]);
        assert_eq!(r.verdicts[2], Verdict::Pass, "{name}: {:#?}", r.details[2]);
    }
}
