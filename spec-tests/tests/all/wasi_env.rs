//! The WASI sandbox stays locked down (ABI reference §7; ARCHITECTURE.md
//! "WASI"): a real Rust filter cannot read a host file or a host
//! environment variable it was not given, and reads exactly the variables
//! granted through `PluginConfig::environment` (Envoy's
//! `vm_config.environment_variables`: `key_values`, and `host_env_keys`
//! resolved by the embedder).

use vessel_host::PluginConfig;
use vessel_spec_tests::{Harness, Source, config, request, spec_dir};

/// Runs `guest_limits` with operation `op` and returns its `limits:` line
/// about it (`env <NAME>=...` or `file <path>=...`).
fn probe(op: &str, environment: Vec<(String, String)>) -> String {
    let cfg = PluginConfig {
        environment,
        ..config("wasi_env")
    };
    let mut h = Harness::load(Source::Guest("limits"), cfg).expect("starts");
    h.request_headers(request("/", &[("x-limits-op", op)]), true)
        .expect("no trap");
    let subject = op.replacen(':', " ", 1);
    let lines = h.logs.with_prefix(&format!("limits: {subject}="));
    assert_eq!(lines.len(), 1, "{:?}", h.logs.lines());
    lines[0].clone()
}

fn host_var() -> (String, String) {
    // A variable every test process has.
    for key in ["PATH", "HOME", "CARGO_MANIFEST_DIR"] {
        if let Ok(value) = std::env::var(key) {
            return (key.to_owned(), value);
        }
    }
    panic!("the test process has no PATH, HOME or CARGO_MANIFEST_DIR");
}

#[test]
fn host_environment_variables_are_not_visible() {
    let (key, _) = host_var();
    assert_eq!(probe(&format!("env:{key}"), Vec::new()), "None");
    // Granting another variable does not leak the rest.
    let granted = vec![("GRANTED".to_owned(), "yes".to_owned())];
    assert_eq!(probe(&format!("env:{key}"), granted), "None");
}

#[test]
fn granted_environment_variables_are_visible() {
    let env = vec![
        ("GRANTED".to_owned(), "yes".to_owned()),
        ("EMPTY".to_owned(), String::new()),
    ];
    assert_eq!(probe("env:GRANTED", env.clone()), "Some(\"yes\")");
    assert_eq!(probe("env:EMPTY", env.clone()), "Some(\"\")");
    // `host_env_keys`: the embedder copies the host's value in.
    let (key, value) = host_var();
    let mut with_host = env;
    with_host.push((key.clone(), value.clone()));
    assert_eq!(
        probe(&format!("env:{key}"), with_host),
        format!("Some({value:?})")
    );
}

#[test]
fn host_files_cannot_be_read() {
    let own = spec_dir().join("Cargo.toml");
    assert!(
        std::fs::read(&own).is_ok(),
        "the host can read {}",
        own.display()
    );
    for path in [
        own.display().to_string(),
        "Cargo.toml".to_owned(),
        "/etc/passwd".to_owned(),
        "/proc/self/environ".to_owned(),
    ] {
        let line = probe(&format!("file:{path}"), Vec::new());
        assert!(line.starts_with("err "), "{path}: {line}");
    }
}
