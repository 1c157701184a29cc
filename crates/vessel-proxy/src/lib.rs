//! The `vessel` binary's library: the `vessel test` scenario harness
//! ([`harness`]), usable from `cargo test`, and the Envoy-config reader of
//! `vessel run` ([`config`]).

#![forbid(unsafe_code)]

pub mod config;
pub mod harness;
