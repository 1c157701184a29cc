//! One test alone in a process of its own.
//!
//! The integration tests of a crate are one binary (`tests/all`), so they
//! share one process and run on its threads side by side. A test that
//! measures the whole process (its threads, its RSS, the peak RSS of the
//! children it reaped) starts with [`alone`]: in the test process that runs
//! the same test once more, in a child process of this binary filtered to
//! that one test, and waits for it; in that child, where nothing else runs,
//! the test goes on. Shared by the `tests/all` binaries of vessel-host,
//! vessel-hyper and vessel-proxy.

#![allow(clippy::print_stderr)]

use std::process::Command;

/// Set, in the child process, to the name of the test it runs.
const VAR: &str = "VESSEL_TEST_ALONE";

/// `test` is the calling test's full name as `--list` prints it
/// (`module::function`). Returns true in the child process, where the test
/// must run its body. In the test process it runs the child and returns
/// false once that one test passed there; it panics, with the child's
/// output, when the test failed, or when no test of that name ran.
pub(crate) fn alone(test: &str) -> bool {
    if std::env::var_os(VAR).is_some_and(|v| v == test) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([
            test,
            "--exact",
            "--include-ignored",
            "--test-threads",
            "1",
            "--nocapture",
        ])
        .env(VAR, test)
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed;"),
        "{test}, alone in a child process ({}):\n{stdout}{stderr}",
        out.status
    );
    // What the test said there: shown by `--nocapture`, as it was when the
    // test ran in this process.
    eprint!("{stderr}");
    false
}
