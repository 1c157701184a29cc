//! The `vessel` binary's library: the `vessel test` harness ([`harness`]:
//! the `vessel-test` crate with real services, and the differential runner
//! against `vessel run` and Envoy), the Envoy-config reader of `vessel run`
//! ([`config`]) and the proxy itself ([`run`]).

#![forbid(unsafe_code)]

pub mod config;
pub mod harness;
pub mod run;
pub mod xds;
use vessel_test::yaml;

pub use vessel_test::YamlError;
