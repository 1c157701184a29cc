//! vessel-proxy's integration tests, one binary (`tests/all`, one module per
//! area) so that cranelift and wasmtime are linked once, not once per file:
//! the Envoy config, the scenario harness as a library, and the real
//! `vessel` binary (`vessel test`, `vessel run`) over real SDK guests (built
//! by `cargo xtask guests`). The load tests are `#[ignore]`d; `cargo xtask
//! test` and `cargo xtask load` run them. Run one area with a filter:
//! `cargo test -p vessel-proxy --test all -- cli::`.

#[path = "../../../vessel-host/tests/all/alone.rs"]
mod alone;
mod common;
mod support;

mod backends;
mod cli;
mod config;
mod envoy_diff;
mod gpustack;
mod hidden;
mod lb;
mod library;
mod llm;
mod llm_stream;
mod load;
mod reload;
mod remote;
mod run;
mod tcp;
mod tls;
mod xds;
