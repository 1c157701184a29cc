//! The conformance suite (ABI reference §3–§5, §11), one binary
//! (`tests/all`, one module per ABI area) so that cranelift and wasmtime are
//! linked once, not once per area. The modules share one engine and one
//! cache of compiled plugins (`vessel_spec_tests::engine`, `plugin`). Run
//! one area with a filter: `cargo test -p vessel-spec-tests --test all --
//! headers::`.

mod abi_v01;
mod bodies;
mod capabilities;
mod chain;
mod effective_context;
mod foreign;
mod go_plugins;
mod grpc_call;
mod headers;
mod http_call;
mod import_table;
mod limits;
mod load_errors;
mod local_response;
mod logging;
mod memory_safety;
mod metrics;
mod properties;
mod queues;
mod shared_data;
mod startup;
mod status_sets;
mod stream_control;
mod stream_flow;
mod ticks;
mod traps;
mod wasi;
mod wasi_env;
