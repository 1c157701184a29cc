//! A benchmark-only crate: see `benches/wasi.rs` and `docs/wasi.md`.
//!
//! It compares vessel's own WASI preview1 (`vessel_host::wasi`) with
//! wasmtime-wasi's (`wasmtime_wasi::p1::add_to_linker_sync`) on the same
//! wasmtime engine and the same compiled modules. It has no library code.
