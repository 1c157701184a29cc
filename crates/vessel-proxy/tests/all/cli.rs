//! The real `vessel` binary: `vessel test` exit codes, PASS/FAIL output,
//! errors for bad input (naming the file and the key, never a panic), and
//! `--record` round trips. Format: `spec-tests/SCENARIOS.md`.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{TempDir, guest, hello_scenario, scenarios_dir, wat};
use vessel_proxy::harness::Scenario;

/// Runs `vessel test` (with `args` before the files) and returns its output.
fn vessel(args: &[&str], files: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("test")
        .args(args)
        .args(files)
        .output()
        .expect("the vessel binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that no Rust panic reached the output.
fn no_panic(o: &Output) {
    for text in [stdout(o), stderr(o)] {
        assert!(
            !text.contains("panicked at") && !text.contains("RUST_BACKTRACE"),
            "vessel panicked:\n{text}"
        );
    }
}

#[test]
fn passing_scenario_exits_zero_with_pass_lines() {
    let dir = TempDir::new("pass");
    let file = dir.write("hello.yaml", hello_scenario());
    let out = vessel(&[], &[&file]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    let shown = file.display();
    assert!(
        text.contains(&format!("PASS {shown} [1] GET /hello\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("PASS {shown} [2] GET /other\n")),
        "{text}"
    );
    assert!(text.ends_with("2 passed, 0 failed\n"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    no_panic(&out);
}

#[test]
fn failing_expectation_exits_nonzero_with_a_diff() {
    let dir = TempDir::new("fail");
    let scenario = hello_scenario()
        .replace("body: \"Hello, World!\\n\"", "body: \"Goodbye\"")
        .replace(
            "status: 200\n        headers_include",
            "status: 201\n        headers_include",
        )
        .replace("[[\"x-hello\", \"seen\"]]", "[[\"x-hello\", \"unseen\"]]");
    let file = dir.write("fail.yaml", scenario);
    let out = vessel(&[], &[&file]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let shown = file.display();
    assert!(
        text.contains(&format!("FAIL {shown} [1] GET /hello\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("FAIL {shown} [2] GET /other\n")),
        "{text}"
    );
    // Each difference says what was expected and what was observed.
    assert!(
        text.contains("- response.status: expected 201, got 200"),
        "{text}"
    );
    assert!(text.contains("- response.body:"), "{text}");
    assert!(text.contains("expected: \"Goodbye\""), "{text}");
    assert!(text.contains("got:      \"Hello, World!\\n\""), "{text}");
    assert!(
        text.contains(
            "- upstream_request.headers_include: expected `x-hello: unseen`, got [\"seen\"]"
        ),
        "{text}"
    );
    assert!(text.ends_with("0 passed, 2 failed\n"), "{text}");
    no_panic(&out);
}

#[test]
fn failing_log_expectation_lists_the_lines() {
    let dir = TempDir::new("logs");
    let scenario = format!(
        r#"plugin:
  wasm: "{}"
streams:
  - request:
      headers: [[":method", "GET"], [":path", "/hello"]]
    expect:
      logs_include: ["no such line"]
      logs_exclude: ["answering"]
"#,
        guest("hello")
    );
    let file = dir.write("logs.yaml", scenario);
    let out = vessel(&[], &[&file]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("- logs_include: no log line contains \"no such line\""),
        "{text}"
    );
    assert!(text.contains("| hello: answering GET /hello"), "{text}");
    assert!(
        text.contains("- logs_exclude: a log line contains \"answering\""),
        "{text}"
    );
    assert!(text.ends_with("0 passed, 1 failed\n"), "{text}");
}

/// Runs one bad scenario file: exit code 1, no stream results, an `error:`
/// line on stderr naming the file and containing every `needle`.
fn assert_bad_input(file: &Path, needles: &[&str]) {
    let out = vessel(&[], &[file]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {err}",
        stdout(&out)
    );
    assert!(
        err.contains(&format!("error: {}: ", file.display())),
        "the error does not name {}: {err}",
        file.display()
    );
    for needle in needles {
        assert!(err.contains(needle), "missing `{needle}` in: {err}");
    }
    assert!(err.contains("1 scenario file(s) could not run"), "{err}");
    assert!(
        stdout(&out).contains("0 passed, 0 failed"),
        "{}",
        stdout(&out)
    );
    no_panic(&out);
}

#[test]
fn missing_scenario_file_is_an_error() {
    let dir = TempDir::new("missing");
    let file = dir.path().join("does-not-exist.yaml");
    assert_bad_input(&file, &["No such file"]);
}

#[test]
fn malformed_yaml_is_an_error_with_a_position() {
    let dir = TempDir::new("yaml");
    let file = dir.write("bad.yaml", "plugin:\n  wasm: x.wasm\nstreams: [\n");
    // The position of the bracket that is never closed.
    assert_bad_input(&file, &["line 3 column 10", "unclosed bracket"]);
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let dir = TempDir::new("unknown");
    let scenario = format!(
        "plugin:\n  wasm: \"{}\"\nstreams:\n  - request:\n      headers: []\n    expct: {{}}\n",
        guest("noop")
    );
    let file = dir.write("unknown.yaml", scenario);
    assert_bad_input(&file, &["streams[0]", "unknown field `expct`"]);

    let scenario = format!(
        "plugin:\n  wasm: \"{}\"\n  rootid: x\nstreams: []\n",
        guest("noop")
    );
    let file = dir.write("unknown-plugin.yaml", scenario);
    assert_bad_input(&file, &["plugin", "unknown field `rootid`"]);
}

#[test]
fn wrong_type_is_an_error_naming_the_key() {
    let dir = TempDir::new("type");
    let scenario = format!(
        "plugin:\n  wasm: \"{}\"\nstreams:\n  - request:\n      headers: []\n    expect:\n      response:\n        status: ok\n",
        guest("noop")
    );
    let file = dir.write("type.yaml", scenario);
    assert_bad_input(
        &file,
        &[
            "line 8 column 17",
            "streams[0].expect.response.status",
            "expected u16, found `ok`",
        ],
    );

    let scenario = format!(
        "plugin:\n  wasm: \"{}\"\nstreams:\n  - request:\n      headers: [[\"only-a-name\"]]\n",
        guest("noop")
    );
    let file = dir.write("pair.yaml", scenario);
    assert_bad_input(
        &file,
        &[
            "streams[0].request.headers[0]",
            "expected a tuple of size 2",
        ],
    );
}

#[test]
fn missing_required_key_is_an_error() {
    let dir = TempDir::new("required");
    let file = dir.write(
        "nostreams.yaml",
        format!("plugin:\n  wasm: \"{}\"\n", guest("noop")),
    );
    assert_bad_input(&file, &["missing field `streams`"]);
}

#[test]
fn invalid_value_is_an_error_naming_the_key() {
    let dir = TempDir::new("invalid");
    let scenario = format!(
        "plugin:\n  wasm: \"{}\"\n  log_level: loud\nstreams: []\n",
        guest("noop")
    );
    let file = dir.write("level.yaml", scenario);
    assert_bad_input(&file, &["plugin.log_level", "`loud`"]);
}

#[test]
fn missing_wasm_is_an_error_naming_the_scenario_and_the_key() {
    let dir = TempDir::new("nowasm");
    let file = dir.write(
        "nowasm.yaml",
        "plugin:\n  wasm: nothere.wasm\nstreams: []\n",
    );
    assert_bad_input(&file, &["plugin.wasm", "nothere.wasm", "No such file"]);
}

#[test]
fn non_wasm_bytes_are_an_error() {
    let dir = TempDir::new("notwasm");
    dir.write("text.wasm", "this is not a wasm module\n");
    let file = dir.write("notwasm.yaml", "plugin:\n  wasm: text.wasm\nstreams: []\n");
    assert_bad_input(&file, &["plugin.wasm", "text.wasm", "WebAssembly"]);
}

#[test]
fn module_without_abi_marker_is_an_error() {
    let dir = TempDir::new("noabi");
    let scenario = format!(
        "plugin:\n  wasm: \"{}\"\nstreams:\n  - request:\n      headers: [[\":path\", \"/\"]]\n",
        wat("no_abi_marker")
    );
    let file = dir.write("noabi.yaml", scenario);
    assert_bad_input(&file, &["plugin.wasm", "no_abi_marker.wat", "ABI version"]);
}

#[test]
fn a_broken_file_does_not_stop_the_others() {
    let dir = TempDir::new("mixed");
    let good = dir.write("good.yaml", hello_scenario());
    let bad = dir.write("bad.yaml", "plugin: [\n");
    let out = vessel(&[], &[&bad, &good]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("PASS {} [1] GET /hello", good.display())),
        "{text}"
    );
    assert!(text.ends_with("2 passed, 0 failed\n"), "{text}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("error: {}: ", bad.display())),
        "{err}"
    );
    assert!(err.contains("1 scenario file(s) could not run"), "{err}");
}

#[test]
fn no_files_is_a_usage_error() {
    let out = vessel(&[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Usage"), "{}", stderr(&out));
}

fn trap_scenario(expect: &str) -> String {
    format!(
        r#"plugin:
  wasm: "{}"
streams:
  - request:
      headers: [[":method", "GET"], [":path", "/boom"], ["x-trap-in", "request_headers"]]
{expect}  - request:
      headers: [[":method", "GET"], [":path", "/after"]]
{expect}"#,
        guest("trap")
    )
}

#[test]
fn unexpected_trap_fails_the_streams_without_a_panic() {
    let dir = TempDir::new("trap");
    let file = dir.write(
        "trap.yaml",
        trap_scenario("    expect:\n      response:\n        status: 200\n"),
    );
    let out = vessel(&[], &[&file]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("FAIL {} [1] GET /boom", file.display())),
        "{text}"
    );
    assert!(
        text.contains(
            "- the VM failed unexpectedly: plugin `guest_trap`: `proxy_on_request_headers` trapped"
        ),
        "{text}"
    );
    assert!(
        text.contains("- response.status: expected 200, got 503"),
        "{text}"
    );
    assert!(text.ends_with("0 passed, 2 failed\n"), "{text}");
    // The guest's own panic is a log line of the stream, not a host panic.
    no_panic(&out);
}

#[test]
fn expected_trap_passes_with_fail_closed_503() {
    let dir = TempDir::new("trap-ok");
    let file = dir.write(
        "trap.yaml",
        trap_scenario(
            "    expect:\n      vm_failed: \"`proxy_on_request_headers` trapped\"\n      upstream_reached: false\n      response:\n        status: 503\n        body: \"\"\n",
        ),
    );
    let out = vessel(&[], &[&file]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.ends_with("2 passed, 0 failed\n"), "{text}");
}

/// `--record` prints YAML that parses as a scenario and passes as is.
fn record_round_trip(dir: &TempDir, name: &str, scenario: &str) -> Scenario {
    let file = dir.write(name, scenario);
    let out = vessel(&["--record"], &[&file]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let recorded = stdout(&out);
    assert!(
        recorded.starts_with(&format!("---\n# {}\n", file.display())),
        "{recorded}"
    );
    let parsed = Scenario::from_yaml(&recorded).expect("--record output is a scenario");
    let original = Scenario::from_yaml(scenario).expect("the input is a scenario");
    assert_eq!(parsed.streams.len(), original.streams.len());
    for (got, input) in parsed.streams.iter().zip(&original.streams) {
        assert_eq!(got.request, input.request, "the requests are kept");
        assert!(
            got.expect.upstream_reached.is_some(),
            "every stream is recorded"
        );
    }
    let again = dir.write(&format!("recorded-{name}"), &recorded);
    let out = vessel(&[], &[&again]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.ends_with(&format!("{} passed, 0 failed\n", original.streams.len())),
        "{text}"
    );
    parsed
}

#[test]
fn record_output_parses_back_and_passes() {
    let dir = TempDir::new("record");
    // Expectations in the input are replaced, even wrong ones.
    let input = hello_scenario().replace("status: 200", "status: 599");
    let parsed = record_round_trip(&dir, "hello.yaml", &input);
    let first = &parsed.streams[0].expect;
    assert_eq!(first.upstream_reached, Some(false));
    let response = first.response.as_ref().expect("a response was recorded");
    assert_eq!(response.status, Some(200));
    assert_eq!(response.body.as_deref(), Some("Hello, World!\n"));
    assert!(
        response
            .headers_include
            .contains(&("hello".to_owned(), "World".to_owned()))
    );
    assert!(
        first
            .logs_include
            .iter()
            .any(|l| l == "hello: answering GET /hello")
    );
    let second = &parsed.streams[1].expect;
    let upstream = second.upstream_request.as_ref().expect("upstream recorded");
    assert_eq!(upstream.body.as_deref(), Some("ping"));
    assert!(
        upstream
            .headers_include
            .contains(&("x-hello".to_owned(), "seen".to_owned()))
    );
}

#[test]
fn record_of_a_trapping_filter_records_the_failure() {
    let dir = TempDir::new("record-trap");
    let parsed = record_round_trip(&dir, "trap.yaml", &trap_scenario(""));
    for stream in &parsed.streams {
        let failure = stream
            .expect
            .vm_failed
            .as_deref()
            .expect("vm_failed recorded");
        assert!(
            failure.contains("`proxy_on_request_headers` trapped"),
            "{failure}"
        );
        let status = stream.expect.response.as_ref().and_then(|r| r.status);
        assert_eq!(status, Some(503));
    }
}

#[test]
fn record_of_a_bad_file_exits_two() {
    let dir = TempDir::new("record-bad");
    let file = dir.write("bad.yaml", "plugin:\n  wasm: nothere.wasm\nstreams: []\n");
    let out = vessel(&["--record"], &[&file]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("error: {}: plugin.wasm", file.display())),
        "{err}"
    );
    no_panic(&out);
}

/// Issue 9: `spec-tests/scenarios/limits_header_bomb.yaml` runs a guest that
/// adds 1 MiB header values in an endless loop under an 8 s callback
/// deadline. The VM fails at the header-map limit, which its error names;
/// the next stream is served by a fresh VM; and the `vessel test` process
/// never holds 512 MiB. Its peak RSS is the kernel's high-water mark of the
/// reaped child (`getrusage(RUSAGE_CHILDREN)`), which covers every child
/// the process reaped: so the test runs alone in a child process of the
/// test binary (`crate::alone`), where that is the one `vessel test`.
#[test]
fn a_header_bomb_under_a_long_deadline_stays_under_512_mib() {
    if !crate::alone::alone("cli::a_header_bomb_under_a_long_deadline_stays_under_512_mib") {
        return;
    }
    // The prerequisite, loudly (the scenario names it by a relative path).
    guest("misbehave");
    let file = scenarios_dir().join("limits_header_bomb.yaml");
    let out = vessel(&[], &[&file]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.ends_with("2 passed, 0 failed\n"), "{text}");
    no_panic(&out);
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    // Linux reports ru_maxrss in KiB.
    let peak_kib = usage.max_rss();
    assert!(peak_kib > 0, "no child was measured");
    assert!(
        peak_kib < 512 * 1024,
        "vessel test peaked at {peak_kib} KiB of RSS"
    );
}
