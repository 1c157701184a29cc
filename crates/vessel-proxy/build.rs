//! Finds envoy-types' descriptor set (`src/generated/types.bin`, every Envoy
//! message type; not exposed by the crate) so the xDS client can read
//! resources by reflection: `VESSEL_ENVOY_DESCRIPTORS` is its path
//! (`include_bytes!` in `src/xds/descriptors.rs`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"))
        .join("Cargo.toml");
    // Only the packages of the target being built: the others (other
    // platforms' dependencies) need not be downloaded.
    let target = std::env::var("TARGET").expect("TARGET");
    let metadata = |offline: bool| {
        let mut cmd = Command::new(&cargo);
        cmd.args(["metadata", "--format-version", "1"]);
        if offline {
            cmd.arg("--offline");
        }
        cmd.args(["--filter-platform", &target, "--manifest-path"])
            .arg(&manifest)
            .output()
            .expect("running `cargo metadata`")
    };
    // Offline first: the build has downloaded envoy-types. `cargo metadata`
    // also wants the manifests of packages this build does not compile (the
    // workspace's dev-dependencies), which a fresh machine has not
    // downloaded yet (`cargo build -p vessel-proxy` as the first command):
    // then it may download them.
    let mut out = metadata(true);
    if !out.status.success() {
        out = metadata(false);
    }
    assert!(
        out.status.success(),
        "`cargo metadata` failed (building offline? `cargo fetch` first downloads what it needs): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("`cargo metadata` printed JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let envoy = packages
        .iter()
        .find(|p| p["name"] == "envoy-types")
        .expect("envoy-types is a dependency");
    let dir = PathBuf::from(envoy["manifest_path"].as_str().expect("manifest_path"))
        .parent()
        .expect("a package directory")
        .to_path_buf();
    let bin = dir.join("src/generated/types.bin");
    assert!(bin.is_file(), "{} is missing", bin.display());
    println!("cargo:rustc-env=VESSEL_ENVOY_DESCRIPTORS={}", bin.display());
    println!("cargo:rerun-if-changed={}", bin.display());
    println!("cargo:rerun-if-changed=build.rs");
}
