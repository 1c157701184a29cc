//! The examples crate's integration tests, one binary (`tests/all`, one
//! module per example): real fake workers on loopback, a real hyper client,
//! real SDK guests (built by `cargo xtask guests`). Run one area with a
//! filter: `cargo test -p vessel-examples --test all -- llm_router::`.

mod llm_router;
