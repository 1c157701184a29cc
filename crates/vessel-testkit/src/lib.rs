//! vessel's test support, for its own tests only (`publish = false`; no
//! product crate depends on it):
//!
//! * [`servers`]: real hyper upstreams on 127.0.0.1 port 0 (HTTP/1.1 and
//!   h2c) that report their address: a recording one, a fixed reply, one
//!   that never answers, one held by a gate, one that resets mid-body, and
//!   a port that refuses connections;
//! * [`bootstrap`]: a typed builder for the Envoy bootstrap subset vessel
//!   reads (listeners with an HTTP connection manager, routes, clusters,
//!   the wasm filter's plugin and VM config, `vessel_limits`, admin),
//!   written as YAML through `vessel_test::yaml`; its listeners and admin
//!   default to `port_value: 0`, and both `vessel run` and Envoy 1.40 read
//!   what it writes;
//! * [`llm_worker`]: a fake OpenAI-compatible model server (chat
//!   completions, streamed or not, vLLM/SGLang `/metrics`, `/health`)
//!   whose latency, failures, health, load and a stream gate the test
//!   controls; also the binary `fake-llm-worker`;
//! * [`certs`]: test certificates made at test time (a CA, server and
//!   client certificates, PEM), so no key is committed;
//! * [`eventually`] and friends: poll a condition until a deadline, with a
//!   panic naming what was awaited;
//! * with the `proxy` feature, `VesselProcess`: a `vessel run` child on
//!   such a config, which learns its listeners' ports from the admin
//!   (`--admin-address-path`, `GET /listeners?format=json`), so no test
//!   picks a "free" port that someone may take before the proxy binds it;
//! * with the `proxy` feature, `ads`: a small ADS (xDS) server serving
//!   scripted snapshots and recording each client's ACK/NACK.

#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod certs;
pub mod llm_worker;
pub mod servers;
mod wait;

#[cfg(feature = "proxy")]
pub mod ads;
#[cfg(feature = "proxy")]
mod process;

#[cfg(feature = "proxy")]
pub use process::{VesselProcess, admin_get, envoy_from_env, replace_file};
pub use wait::{
    WAIT, eventually, eventually_async, eventually_blocking, eventually_some,
    eventually_some_within,
};
