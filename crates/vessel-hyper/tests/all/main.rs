//! vessel-hyper's integration tests, one binary (`tests/all`, one module per
//! area) so that cranelift and wasmtime are linked once, not once per file:
//! real hyper servers and clients on loopback around real SDK guests (built
//! by `cargo xtask guests`). The load tests are `#[ignore]`d; `cargo xtask
//! test` and `cargo xtask load` run them. Run one area with a filter:
//! `cargo test -p vessel-hyper --test all -- reload::`.

#[path = "../../../vessel-host/tests/all/alone.rs"]
mod alone;
mod common;

mod aborts;
mod body_end;
mod e2e;
mod failures;
mod flow;
mod grpc;
mod policies;
mod pooled_stream;
mod reload;
mod stream_props;
mod tiered;
mod traffic;
mod upstream_props;
