//! The `vessel` binary's library: the `vessel test` scenario harness
//! ([`harness`]), usable from `cargo test`.

#![forbid(unsafe_code)]

pub mod harness;
