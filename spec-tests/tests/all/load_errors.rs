//! Loading (ABI reference §1.1, §3, §4): modules that must not load fail
//! with the right `LoadError` variant, and the message names the module,
//! the import or export, and the signatures involved.

use vessel_abi::version::DetectError;
use vessel_host::{LoadError, Plugin};
use vessel_spec_tests::{Source, config, engine, plugin};

fn load_wat(name: &str) -> Result<Plugin, LoadError> {
    match plugin(Source::Wat(name), config(name)) {
        Ok(p) => Ok(p),
        Err(vessel_spec_tests::SpecError::Load(e)) => Err(e),
        Err(other) => panic!("{name}: {other}"),
    }
}

fn load_text(text: &str) -> Result<Plugin, LoadError> {
    Plugin::load(
        &engine().expect("engine"),
        text.as_bytes(),
        config("inline"),
    )
}

#[test]
fn missing_abi_marker() {
    let err = load_wat("no_abi_marker").expect_err("refused");
    assert!(
        matches!(err, LoadError::Abi(DetectError::Missing)),
        "{err:?}"
    );
    assert!(err.to_string().contains("proxy_abi_version_"), "{err}");
}

#[test]
fn unknown_abi_marker() {
    let err = load_wat("unknown_abi_marker").expect_err("refused");
    assert!(
        matches!(&err, LoadError::Abi(DetectError::Unknown(v)) if v == "9_9_9"),
        "{err:?}"
    );
    assert!(err.to_string().contains("9_9_9"), "{err}");
}

#[test]
fn missing_memory_export() {
    let err = load_wat("missing_memory").expect_err("refused");
    assert!(matches!(err, LoadError::MissingExport("memory")), "{err:?}");
    assert!(err.to_string().contains("`memory`"), "{err}");
}

#[test]
fn missing_allocator() {
    let err = load_wat("missing_allocator").expect_err("refused");
    assert!(matches!(err, LoadError::MissingAllocator), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("malloc") && msg.contains("proxy_on_memory_allocate"),
        "{msg}"
    );
}

#[test]
fn bad_import_signature() {
    let err = load_wat("bad_import_signature").expect_err("refused");
    let LoadError::ImportSignature {
        module,
        name,
        expected,
        found,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(
        [module, name, expected, found],
        [
            "env",
            "proxy_log",
            "(i32, i32, i32) -> i32",
            "(i32, i32) -> i32"
        ]
    );
    let msg = err.to_string();
    for part in [
        "env.proxy_log",
        "(i32, i32, i32) -> i32",
        "(i32, i32) -> i32",
    ] {
        assert!(msg.contains(part), "`{part}` not in {msg}");
    }
}

#[test]
fn unknown_import() {
    let err = load_wat("unknown_import").expect_err("refused");
    let LoadError::UnknownImport {
        module,
        name,
        signature,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(
        [module, name, signature],
        ["env", "proxy_does_not_exist", "(i32) -> i32"]
    );
    let msg = err.to_string();
    for part in ["env.proxy_does_not_exist", "(i32) -> i32"] {
        assert!(msg.contains(part), "`{part}` not in {msg}");
    }
}

const MINIMAL_TAIL: &str = r#"
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
"#;

#[test]
fn unknown_import_in_another_module() {
    let text = format!(
        r#"(module
  (import "wasi_snapshot_preview2" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (func (export "proxy_abi_version_0_2_1"))
  {MINIMAL_TAIL})"#
    );
    let err = load_text(&text).expect_err("refused");
    let LoadError::UnknownImport {
        module,
        name,
        signature,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(
        [module, name, signature],
        [
            "wasi_snapshot_preview2",
            "fd_write",
            "(i32, i32, i32, i32) -> i32"
        ]
    );
}

#[test]
fn export_with_a_wrong_signature() {
    // A 0.2.x header callback takes three parameters.
    let text = format!(
        r#"(module
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i32) (result i32) (i32.const 0))
  {MINIMAL_TAIL})"#
    );
    let err = load_text(&text).expect_err("refused");
    let LoadError::ExportSignature {
        name,
        expected,
        found,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(
        [name, expected, found],
        [
            "proxy_on_request_headers",
            "(i32, i32, i32) -> i32",
            "(i32, i32) -> i32"
        ]
    );
    // The same export is right for 0.1.0.
    let v01 = text.replace("proxy_abi_version_0_2_1", "proxy_abi_version_0_1_0");
    assert!(load_text(&v01).is_ok());
}

#[test]
fn imported_memory_is_unsupported() {
    let text = r#"(module
  (import "env" "memory" (memory 1))
  (export "memory" (memory 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024)))"#;
    let err = load_text(text).expect_err("refused");
    assert!(
        matches!(
            &err,
            LoadError::UnsupportedImport { module, name, kind: "memory" }
                if module == "env" && name == "memory"
        ),
        "{err:?}"
    );
}

#[test]
fn not_a_module() {
    let err = Plugin::load(
        &engine().expect("engine"),
        b"\0asm\x02garbage",
        config("junk"),
    )
    .expect_err("refused");
    assert!(
        matches!(err, LoadError::Abi(DetectError::Parse(_))),
        "{err:?}"
    );
    // Text that does not assemble names the line and column.
    let err = load_text("(module (func").expect_err("refused");
    assert!(matches!(err, LoadError::Text(_)), "{err:?}");
    assert!(err.to_string().contains("1:"), "{err}");
}

#[test]
fn abi_0_2_0_module_may_import_a_0_2_1_function() {
    // DEVIATIONS.md #1: every import links whatever the marker.
    let text = format!(
        r#"(module
  (import "env" "proxy_get_log_level" (func (param i32) (result i32)))
  (func (export "proxy_abi_version_0_2_0"))
  {MINIMAL_TAIL})"#
    );
    let p = load_text(&text).expect("loads");
    assert_eq!(p.abi_version(), vessel_host::AbiVersion::V0_2_0);
}
