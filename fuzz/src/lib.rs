//! Fuzz generators and oracles for vessel.
//!
//! The cargo-fuzz targets in `fuzz_targets/` are one-line wrappers around the oracles here,
//! so that the same checks run on stable Rust: `cargo test -p vessel-fuzz` feeds every
//! oracle the deterministic inputs of [`seeds`] (and structured inputs from [`XorShift`]).
//!
//! An oracle takes arbitrary bytes and panics if, and only if, it finds a bug.
//!
//! | target | oracle |
//! |---|---|
//! | `pairs_codec` | [`codecs::pairs_oracle`] |
//! | `property_path` | [`codecs::path_oracle`] |
//! | `hostcalls` | [`hostcalls::hostcalls_oracle`] |
//! | `stream_events` | [`stream_events::stream_events_oracle`] |
//! | `bad_imports` | [`bad_imports::bad_imports_oracle`] |

#![forbid(unsafe_code)]

pub mod bad_imports;
pub mod codecs;
pub mod documented;
pub mod generate;
pub mod hostcalls;
pub mod stream_events;

pub use generate::{XorShift, seeds};
