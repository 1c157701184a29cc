//! vessel-host's integration tests, one binary (`tests/all`, one module per
//! area) so that cranelift and wasmtime are linked once, not once per file.
//! They use the real Rust-SDK guests of `spec-tests/guests` (built by
//! `cargo xtask guests`). Run one area with a filter:
//! `cargo test -p vessel-host --test all -- cache::`.

mod alone;
mod cache;
mod epoch_ticker;
mod hidden;
mod tcp;
mod tiered;

/// The bytes of `spec-tests/guests`' `guest_<name>.wasm`.
pub(crate) fn guest(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec-tests/guests/target/wasm32-wasip1/release")
        .join(format!("guest_{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests with `cargo xtask guests`",
            path.display()
        )
    })
}
