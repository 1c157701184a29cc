//! vessel-host's integration tests, one binary (`tests/all`, one module per
//! area) so that cranelift and wasmtime are linked once, not once per file.
//! They use the real Rust-SDK guests of `spec-tests/guests` (built by
//! `cargo xtask guests`). Run one area with a filter:
//! `cargo test -p vessel-host --test all -- cache::`.

mod alone;
mod cache;
mod epoch_ticker;
mod hidden;
