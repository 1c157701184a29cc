//! Fuzz generators and oracles for vessel.
//!
//! The cargo-fuzz targets in `fuzz_targets/` are one-line wrappers around the oracles here,
//! so that the same checks run on stable Rust: `cargo test -p vessel-fuzz` feeds every
//! oracle the deterministic inputs of [`seeds`].
//!
//! An oracle takes arbitrary bytes and panics if, and only if, it finds a bug.

#![forbid(unsafe_code)]

pub mod codecs;
pub mod generate;

pub use generate::{XorShift, seeds};
