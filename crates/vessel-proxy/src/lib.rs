//! The `vessel` binary's library: the `vessel test` scenario harness
//! ([`harness`]), usable from `cargo test`, the Envoy-config reader of
//! `vessel run` ([`config`]) and the proxy itself ([`run`]).

#![forbid(unsafe_code)]

pub mod config;
pub mod harness;
pub mod run;
mod yaml;

pub use yaml::YamlError;
